//! Bounded fuzz run (proptest; see docs/fuzzing.md) of the `cpuid -r` dump
//! parser on any bytes: arbitrary byte strings (read as UTF-8 lossily, as a
//! tool reading a file would), and every recorded dump with random bytes
//! overwritten, inserted or cut. Properties: never a panic; an error names
//! a line that exists; a parsed dump answers every query and probes to a
//! well-formed result. The case count is `PROPTEST_CASES` when set.

use proptest::prelude::*;
use proptest::test_runner::Config;
use pvops_probe::{probe, CpuidSource, Dump, DumpError};

const DUMPS: &[&str] = &[
    include_str!("dumps/acrn.txt"),
    include_str!("dumps/amd-zen2-baremetal.txt"),
    include_str!("dumps/bhyve.txt"),
    include_str!("dumps/host-cloud-vm.txt"),
    include_str!("dumps/hyperv-no-hv1.txt"),
    include_str!("dumps/hyperv.txt"),
    include_str!("dumps/intel-skylake-baremetal.txt"),
    include_str!("dumps/intel-tigerlake-baremetal.txt"),
    include_str!("dumps/kvm-hyperv.txt"),
    include_str!("dumps/qemu-kvm.txt"),
    include_str!("dumps/qemu-tcg.txt"),
    include_str!("dumps/tcg-spec.txt"),
    include_str!("dumps/unknown-nvmm.txt"),
    include_str!("dumps/vmware.txt"),
    include_str!("dumps/xen-viridian.txt"),
    include_str!("dumps/xen.txt"),
];

fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn check(text: &str) {
    match Dump::parse(text) {
        Ok(d) => {
            assert!(!d.is_empty());
            for e in d.entries() {
                let r = d.cpuid(e.leaf, e.subleaf);
                let _ = (r.eax, e.result);
            }
            let p = probe(&d);
            let _ = format!("{p:?}");
        }
        Err(DumpError::Malformed { line }) => {
            assert!(
                line >= 1 && line <= text.lines().count().max(1),
                "line {line}"
            );
        }
        Err(DumpError::NoLeaves) => {}
    }
}

/// One edit of a recorded dump.
#[derive(Clone, Debug)]
enum Edit {
    Overwrite(prop::sample::Index, Vec<u8>),
    Insert(prop::sample::Index, Vec<u8>),
    Cut(prop::sample::Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let bytes = || {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 1..8),
            prop::collection::vec(
                prop::sample::select(b"0x: =eabcdfCPU\n\t 9#".to_vec()),
                1..8
            ),
        ]
    };
    prop_oneof![
        (any::<prop::sample::Index>(), bytes()).prop_map(|(i, b)| Edit::Overwrite(i, b)),
        (any::<prop::sample::Index>(), bytes()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<prop::sample::Index>(), 0usize..64).prop_map(|(i, n)| Edit::Cut(i, n)),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fuzz_dump_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn fuzz_dump_edited_recordings(
        which in 0..DUMPS.len(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let mut b = DUMPS[which].as_bytes().to_vec();
        for e in edits {
            match e {
                Edit::Overwrite(i, new) => {
                    let at = i.index(b.len().max(1)).min(b.len());
                    for (k, v) in new.into_iter().enumerate() {
                        if let Some(slot) = b.get_mut(at + k) {
                            *slot = v;
                        }
                    }
                }
                Edit::Insert(i, new) => {
                    let at = i.index(b.len() + 1);
                    b.splice(at..at, new);
                }
                Edit::Cut(i, n) => {
                    let at = i.index(b.len() + 1);
                    let end = (at + n).min(b.len());
                    b.drain(at..end);
                }
            }
        }
        check(&String::from_utf8_lossy(&b));
    }
}
