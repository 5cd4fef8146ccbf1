//! The `cpuid -r` dump parser on any bytes: never a panic; an error names
//! a line that exists; a parsed dump answers every query and probes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvops_probe::{probe, CpuidSource, Dump, DumpError};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Dump::parse(&text) {
        Ok(d) => {
            assert!(!d.is_empty());
            for e in d.entries() {
                let _ = d.cpuid(e.leaf, e.subleaf);
            }
            let _ = format!("{:?}", probe(&d));
        }
        Err(DumpError::Malformed { line }) => {
            assert!(line >= 1 && line <= text.lines().count().max(1));
        }
        Err(DumpError::NoLeaves) => {}
    }
});
