//! Detection and selection over a CPUID world made from the input: never a
//! panic, selection deterministic, a backend detects only where its
//! signature (read straight from the world) is present, and only with the
//! hypervisor bit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvops_backends::{compiled_in, Environment};
use pvops_probe::{CpuidResult, CpuidSource};
use std::collections::HashMap;

const SIGNATURES: &[(&str, &[u8; 12])] = &[
    ("kvm", b"KVMKVMKVM\0\0\0"),
    ("xen", b"XenVMMXenVMM"),
    ("hyperv", b"Microsoft Hv"),
    ("vmware", b"VMwareVMware"),
];

fn words(s: &[u8; 12]) -> (u32, u32, u32) {
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    (w(0), w(4), w(8))
}

struct World(HashMap<u32, CpuidResult>);

impl CpuidSource for World {
    fn cpuid(&self, leaf: u32, _subleaf: u32) -> CpuidResult {
        self.0.get(&leaf).copied().unwrap_or_default()
    }
}

/// Records of 18 bytes: a selector, an offset byte and four words. The
/// selector picks leaf 0, leaf 1 or a leaf of one of sixteen hypervisor
/// bases; its top bits can plant a real signature in EBX..EDX.
fn world(data: &[u8]) -> World {
    let mut leaves = HashMap::new();
    for rec in data.chunks_exact(18) {
        let w = |i: usize| u32::from_le_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
        let mut r = CpuidResult {
            eax: w(2),
            ebx: w(6),
            ecx: w(10),
            edx: w(14),
        };
        let leaf = match rec[0] & 0x1F {
            0 => 0,
            1 => 1,
            k => 0x4000_0000 + u32::from(k & 0xF) * 0x100 + u32::from(rec[1] % 0x20),
        };
        if rec[0] & 0x80 != 0 {
            let (b, c, d) = words(SIGNATURES[usize::from(rec[0] >> 5) & 3].1);
            (r.ebx, r.ecx, r.edx) = (b, c, d);
        }
        leaves.insert(leaf, r);
    }
    World(leaves)
}

fn signature_present(w: &World, name: &str) -> bool {
    let Some((_, s)) = SIGNATURES.iter().find(|(n, _)| *n == name) else {
        return true;
    };
    let want = words(s);
    (0..0x100u32).any(|k| {
        let r = w.cpuid(0x4000_0000 + k * 0x100, 0);
        (r.ebx, r.ecx, r.edx) == want
    })
}

fuzz_target!(|data: &[u8]| {
    let (cmdline, rest) = match data.split_first() {
        Some((&n, rest)) => (
            [
                "",
                "pvops=kvm",
                "pvops=xen",
                "pvops=hyperv",
                "pvops=vmware",
                "pvops=native",
                "pvops=qnx",
            ][usize::from(n) % 7],
            rest,
        ),
        None => ("", data),
    };
    let w = world(rest);
    let probe = pvops_probe::probe(&w);
    let env = Environment {
        probe: &probe,
        cpuid: &w,
    };
    for b in compiled_in() {
        if b.detect(&env).is_some() {
            assert!(
                signature_present(&w, b.name()),
                "{} without its signature",
                b.name()
            );
            if b.name() != "native" {
                assert!(
                    w.cpuid(1, 0).ecx & 1 << 31 != 0,
                    "{} without the hypervisor bit",
                    b.name()
                );
            }
        }
        let _ = b.declined(&env);
    }
    let one = pvops_backends::select(&env, cmdline);
    let two = pvops_backends::select(&env, cmdline);
    assert_eq!(one.backend.name(), two.backend.name());
    assert_eq!(one.detection, two.detection);
    assert_eq!(one.choice, two.choice);
    assert_eq!(format!("{}", one.why), format!("{}", two.why));
    assert!(signature_present(&w, one.backend.name()));
});
