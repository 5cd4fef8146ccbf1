//! The microvisor's guest-facing handlers (every persona's CPUID, MSR,
//! hypercall, port and timer handlers, the virtual APIC, the counters)
//! driven by the input: never a panic, never a write outside guest RAM.
//! The driver is `microvisor::personas::fuzzing::drive`, the same as the
//! bounded run in the microvisor's `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microvisor::personas::fuzzing::{drive, drive_counters, Bytes};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which == 0xFF {
        drive_counters(&mut Bytes(rest), usize::MAX);
        return;
    }
    if let Err(e) = drive(usize::from(which), None, &mut Bytes(rest), usize::MAX) {
        panic!("{e}");
    }
});
