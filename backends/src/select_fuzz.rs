//! Bounded fuzz run (proptest; see docs/fuzzing.md) of detection and
//! selection over random CPUID worlds: random vendors, hypervisor-present
//! bits, and up to four hypervisor interfaces at any base of the
//! 0x4000_0000 range with real, mutated or random signatures and random
//! leaves behind them, plus random `pvops=` overrides. Properties: no
//! panic; selection is deterministic; a backend detects (and so can be
//! selected) only where its CPUID signature is present; an override is
//! honoured only for a backend that detects.

use crate::fuzz_model::config;
use crate::select::{compiled_in, select_from, Choice};
use crate::test_support::sig;
use crate::Environment;
use proptest::prelude::*;
use pvops_probe::{CpuidResult, CpuidSource};
use std::collections::HashMap;

/// Signatures by backend name (leaf base+0 EBX, ECX, EDX).
const SIGNATURES: &[(&str, &[u8; 12])] = &[
    ("kvm", b"KVMKVMKVM\0\0\0"),
    ("xen", b"XenVMMXenVMM"),
    ("hyperv", b"Microsoft Hv"),
    ("vmware", b"VMwareVMware"),
];

/// A CPUID world: explicit leaves, and a junk function for the rest.
#[derive(Clone, Debug)]
struct World {
    leaves: HashMap<u32, [u32; 4]>,
    junk: u64,
}

impl CpuidSource for World {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        let [eax, ebx, ecx, edx] = self.leaves.get(&leaf).copied().unwrap_or_else(|| {
            if self.junk == 0 {
                return [0; 4];
            }
            let mut x = self.junk ^ (u64::from(leaf) << 32 | u64::from(subleaf));
            let mut w = [0u32; 4];
            for v in &mut w {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = x as u32;
            }
            w
        });
        CpuidResult { eax, ebx, ecx, edx }
    }
}

fn signature() -> impl Strategy<Value = [u8; 12]> {
    let known = proptest::sample::select(SIGNATURES.iter().map(|s| *s.1).collect::<Vec<_>>());
    prop_oneof![
        4 => known.clone(),
        1 => (known, 0usize..12, any::<u8>()).prop_map(|(mut s, i, b)| {
            s[i] = b;
            s
        }),
        1 => Just(*b"TCGTCGTCGTCG"),
        1 => any::<[u8; 12]>(),
    ]
}

/// One hypervisor interface: base index, max-leaf offset, signature, the
/// words of base+1.. (Hyper-V's "Hv#1" often).
fn interface() -> impl Strategy<Value = (u32, u32, [u8; 12], Vec<[u32; 4]>)> {
    (
        0u32..16,
        prop_oneof![0u32..0x20, any::<u32>()],
        signature(),
        proptest::collection::vec(
            prop_oneof![
                2 => any::<[u32; 4]>(),
                1 => any::<[u32; 3]>().prop_map(|[b, c, d]| [0x3123_7648, b, c, d]),
                1 => Just([0x3123_7648, 0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF]),
            ],
            0..12,
        ),
    )
}

fn world() -> impl Strategy<Value = World> {
    (
        any::<u32>(),
        prop_oneof![
            Just(*b"GenuineIntel"),
            Just(*b"AuthenticAMD"),
            any::<[u8; 12]>()
        ],
        any::<[u32; 4]>(),
        any::<bool>(),
        proptest::collection::vec(interface(), 0..4),
        prop_oneof![Just(0u64), any::<u64>()],
    )
        .prop_map(|(max, vendor, one, hv_bit, ifaces, junk)| {
            let mut leaves = HashMap::new();
            let (b, c, d) = sig(&vendor);
            leaves.insert(0, [max, b, d, c]);
            let [a, b, c, d] = one;
            let c = if hv_bit { c | 1 << 31 } else { c & !(1 << 31) };
            leaves.insert(1, [a, b, c, d]);
            for (k, top, s, words) in ifaces {
                let base = 0x4000_0000 + k * 0x100;
                let (b, c, d) = sig(&s);
                leaves.insert(base, [base.wrapping_add(top), b, c, d]);
                for (i, w) in words.into_iter().enumerate() {
                    leaves.insert(base + 1 + i as u32, w);
                }
            }
            World { leaves, junk }
        })
}

/// Whether `name`'s signature is at some base of the range in `w`, read
/// straight from CPUID (not through the probe).
fn signature_present(w: &World, name: &str) -> bool {
    let Some((_, s)) = SIGNATURES.iter().find(|(n, _)| *n == name) else {
        return true; // native, or a backend without a signature here
    };
    let want = sig(s);
    (0..0x100u32).any(|k| {
        let r = w.cpuid(0x4000_0000 + k * 0x100, 0);
        (r.ebx, r.ecx, r.edx) == want
    })
}

fn hypervisor_bit(w: &World) -> bool {
    w.cpuid(1, 0).ecx & 1 << 31 != 0
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fuzz_detection_and_selection(
        w in world(),
        request in prop_oneof![
            Just(None),
            proptest::sample::select(vec!["kvm", "xen", "hyperv", "vmware", "native", "qnx", ""]).prop_map(Some),
        ],
    ) {
        let probe = pvops_probe::probe(&w);
        let env = Environment { probe: &probe, cpuid: &w };
        for b in compiled_in() {
            if let Some(d) = b.detect(&env) {
                prop_assert!(
                    signature_present(&w, b.name()),
                    "{} detected (priority {:#x}) without its signature", b.name(), d.priority
                );
                if b.name() != "native" {
                    prop_assert!(hypervisor_bit(&w), "{} detected without the hypervisor bit", b.name());
                }
            }
            // Never a panic, whatever it says.
            let _ = b.declined(&env);
        }
        let one = select_from(compiled_in(), &env, request);
        let two = select_from(compiled_in(), &env, request);
        prop_assert_eq!(one.backend.name(), two.backend.name());
        prop_assert_eq!(one.detection, two.detection);
        prop_assert_eq!(one.choice, two.choice);
        prop_assert_eq!(one.requested, two.requested);
        prop_assert_eq!(format!("{}", one.why), format!("{}", two.why));
        prop_assert!(signature_present(&w, one.backend.name()));
        prop_assert!(one.backend.detect(&env).is_some() || one.backend.name() == "native");
        if one.choice == Choice::Override {
            prop_assert_eq!(Some(one.backend.name()), request);
        }
        if one.choice == Choice::Detected {
            // The highest priority among the detected ones.
            let best = compiled_in().iter().filter_map(|b| b.detect(&env)).map(|d| d.priority).max();
            prop_assert_eq!(Some(one.detection.priority), best.or(Some(one.detection.priority)));
        }
    }
}
