//! `hold` on the command line: after its last record (`@@ done`) the kernel
//! prints `@@ hold` and waits for one byte on COM1 before it shuts down.
//!
//! A guest that exits through `isa-debug-exit` ends QEMU at once, so a
//! hypervisor's own counters (KVM's per-vCPU statistics, read by the runner
//! over QMP `query-stats`) must be read while the guest still exists. The
//! runner reads them when it sees `@@ hold`, then sends a byte. The wait
//! polls the UART's line status register sparsely (one I/O exit about every
//! 2^21 TSC ticks, so it adds few exits to what is counted) and is bounded,
//! so a runner that never answers costs seconds, not the run.

use bootkit::serial::COM1;

/// The UART's line status register (16550: base + 5); bit 0 = data ready.
const LSR: u16 = COM1 + 5;
const DATA_READY: u8 = 0x01;
/// TSC ticks between two polls.
const POLL_GAP_TSC: u64 = 1 << 21;
/// Polls before giving up (about 8 s at 2.4 GHz).
const MAX_POLLS: u32 = 10_000;

/// Whether the command line asks for the hold (`hold`).
pub fn requested(cmdline: &str) -> bool {
    cmdline.split_ascii_whitespace().any(|w| w == "hold")
}

/// Prints `@@ hold` and waits (bounded) for a byte on COM1.
pub fn hold() {
    bootkit::record!("hold", max_polls = MAX_POLLS);
    for _ in 0..MAX_POLLS {
        // SAFETY: reading COM1's line status and receive registers has no
        // effect beyond taking a received byte, which nothing else reads
        // (the console only transmits).
        if unsafe { bootkit::cpu::inb(LSR) } & DATA_READY != 0 {
            // SAFETY: as above.
            let _ = unsafe { bootkit::cpu::inb(COM1) };
            return;
        }
        let t0 = pvops::cpu::read_tsc();
        while pvops::cpu::read_tsc().wrapping_sub(t0) < POLL_GAP_TSC {
            core::hint::spin_loop();
        }
    }
    bootkit::println!("hold: no byte on COM1 after {MAX_POLLS} polls; going on");
}
