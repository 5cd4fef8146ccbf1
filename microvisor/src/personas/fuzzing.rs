//! Bounded fuzz run of the guest-facing handlers on the host (see
//! docs/fuzzing.md): every persona's CPUID, MSR, hypercall and port
//! handlers, its timers (`poll`, `on_inject`), the virtual APIC's MSRs and
//! the exit counters' read, driven with random registers, random guest
//! RAM (page tables included, with paging on or off) and pointers inside,
//! across the end of and far outside guest RAM.
//!
//! Guest RAM sits between two guard zones of a known pattern; after every
//! handler call the guards must be intact: no handler may write outside
//! the guest RAM model. Properties: no panic, no write outside guest RAM,
//! and bad input answered in the guest's registers (an error code, #GP,
//! #UD) rather than by the microvisor stopping.
//!
//! The driver ([`drive`]) takes its choices from a [`Source`]: in
//! `cargo test` a seeded xorshift ([`Xorshift`]; no dependency, the
//! microvisor's workspace stays as small as it is), with
//! `PVOPS_FUZZ_ITERS` handler calls per persona (default 1000) and
//! `PVOPS_FUZZ_SEED` as the seed for longer runs; in the coverage-guided
//! target `fuzz/fuzz_targets/microvisor_handlers.rs` the fuzzer's input
//! bytes ([`Bytes`]). Built with the `fuzzing` feature (host only) or in
//! tests.

extern crate std;
use super::{select, GuestCx, HV_LEAF_BASE, NAMES};
use crate::counters::Accounting;
use crate::guest::mem::GuestRam;
use crate::svm::{vmcb::StateSave, vmrun::GuestRegs};
use crate::vapic::VApic;
use std::format;
use std::string::String;
use std::vec::Vec;
use zerocopy::FromZeros;

/// Guest RAM size (16 pages: room for page tables and the personas' pages).
const RAM: usize = 64 * 1024;
/// Guard bytes on each side.
const GUARD: usize = 16 * 1024;
const PATTERN: u8 = 0xA5;
const KHZ: u64 = 2_000_000;

/// Where the driver's choices come from.
pub trait Source {
    /// The next 64 random bits; `None` when the input is used up.
    fn next(&mut self) -> Option<u64>;
}

/// xorshift64* (Marsaglia; Vigna's multiplier), endless.
pub struct Xorshift(pub u64);

impl Source for Xorshift {
    fn next(&mut self) -> Option<u64> {
        let mut x = self.0 | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        Some(x.wrapping_mul(0x2545_F491_4F6C_DD1D))
    }
}

/// A fuzzer's input, eight bytes (little-endian, zero-padded) at a time.
pub struct Bytes<'a>(pub &'a [u8]);

impl Source for Bytes<'_> {
    fn next(&mut self) -> Option<u64> {
        if self.0.is_empty() {
            return None;
        }
        let n = self.0.len().min(8);
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Some(u64::from_le_bytes(b))
    }
}

/// The choices, shaped: addresses, MSRs, leaves, ports. Once the source
/// is used up every draw is 0 and [`Rng::done`] says so.
struct Rng<'s> {
    src: &'s mut dyn Source,
    done: bool,
}

impl Rng<'_> {
    fn next(&mut self) -> u64 {
        match self.src.next() {
            Some(v) => v,
            None => {
                self.done = true;
                0
            }
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A guest address: inside RAM, at its end, just past it, huge, or
    /// anything.
    fn address(&mut self) -> u64 {
        let ram = RAM as u64;
        match self.below(8) {
            0 | 1 => self.below(ram),
            2 => self.below(ram) & !0xFFF,
            3 => ram - 1 - self.below(64),
            4 => ram + self.below(0x10_0000),
            5 => u64::MAX - self.below(0x1000),
            6 => 1 << self.below(64),
            _ => self.next(),
        }
    }

    /// A register value: small, an address, or anything.
    fn value(&mut self) -> u64 {
        match self.below(6) {
            0 => self.below(64),
            1 | 2 => self.address(),
            3 => self.address() | 1, // enable bits of page MSRs
            4 => self.next() as u32 as u64,
            _ => self.next(),
        }
    }

    /// An MSR: in a persona's ranges, or anything.
    fn msr(&mut self) -> u32 {
        match self.below(8) {
            0 | 1 => 0x4000_0000 + self.below(0x200) as u32,
            2 => 0x4b56_4d00 + self.below(0x20) as u32,
            3 => [0x11, 0x12, 0x1B, 0x6E0][self.below(4) as usize],
            4 => 0x800 + self.below(0x100) as u32,
            _ => self.next() as u32,
        }
    }

    /// A CPUID leaf: the hypervisor range mostly.
    fn leaf(&mut self) -> u32 {
        match self.below(4) {
            0..=2 => HV_LEAF_BASE + self.below(0x220) as u32,
            _ => self.next() as u32,
        }
    }

    /// An I/O port: VMware's backdoor ports, low ports, or anything.
    fn port(&mut self) -> u16 {
        match self.below(4) {
            0 => 0x5658 + self.below(2) as u16,
            1 => self.below(0x100) as u16,
            _ => self.next() as u16,
        }
    }
}

/// Guest RAM between guards, a register set, APIC and clock.
struct Guest {
    buf: Vec<u8>,
    mem: GuestRam,
    state: StateSave,
    regs: GuestRegs,
    apic: VApic,
    now: u64,
    requests: crate::personas::Requests,
}

impl Guest {
    fn new() -> Guest {
        let mut buf = std::vec![PATTERN; GUARD + RAM + GUARD];
        buf[GUARD..GUARD + RAM].fill(0);
        // SAFETY: the middle of `buf`, which this guest owns, lives as long
        // as it and is reached only through `mem` (host tests: addresses
        // are host pointers). `buf` is never reallocated.
        let mem = unsafe { GuestRam::new(buf.as_mut_ptr() as u64 + GUARD as u64, RAM as u64) };
        Guest {
            buf,
            mem,
            state: StateSave::new_zeroed(),
            regs: GuestRegs::default(),
            apic: VApic::new(KHZ),
            now: 1_000_000,
            requests: Default::default(),
        }
    }

    fn cx(&mut self) -> GuestCx<'_> {
        GuestCx {
            state: &mut self.state,
            regs: &mut self.regs,
            mem: &self.mem,
            now: self.now,
            tsc_khz: KHZ,
            apic: &mut self.apic,
            vcpu: 0,
            vcpus: 1,
            steal_ns: 0,
            idle: false,
            requests: &mut self.requests,
        }
    }

    fn guards_intact(&self) -> bool {
        let (a, rest) = self.buf.split_at(GUARD);
        let b = &rest[RAM..];
        a.iter().chain(b).all(|&x| x == PATTERN)
    }

    /// Random bytes over part of RAM: page tables, hypercall input pages.
    fn scribble(&mut self, rng: &mut Rng<'_>) {
        let at = rng.below(RAM as u64) as usize;
        let len = (rng.below(512) as usize).min(RAM - at);
        for i in 0..len {
            let v = match rng.below(4) {
                // A present, writable PTE pointing somewhere in RAM.
                0 => (rng.below(RAM as u64) & !0xFFF | 0x3) as u8,
                _ => rng.next() as u8,
            };
            self.buf[GUARD + at + i] = v;
        }
        // Sometimes an aligned 8-byte entry that maps inside RAM.
        let e = rng.below(RAM as u64 / 8) as usize * 8;
        let pte = rng.below(RAM as u64) & !0xFFF | 0x7 | (rng.below(2) << 7);
        self.buf[GUARD + e..GUARD + e + 8].copy_from_slice(&pte.to_le_bytes());
    }

    fn randomise_regs(&mut self, rng: &mut Rng<'_>) {
        self.state.rax = rng.value();
        let r = &mut self.regs;
        for v in [
            &mut r.rbx, &mut r.rcx, &mut r.rdx, &mut r.rsi, &mut r.rdi, &mut r.rbp, &mut r.r8,
            &mut r.r9, &mut r.r10, &mut r.r11, &mut r.r12, &mut r.r13, &mut r.r14, &mut r.r15,
        ] {
            *v = rng.value();
        }
        // Paging off (virtual = physical) or on with CR3 into RAM or out.
        if rng.below(3) == 0 {
            self.state.cr0 = 1 | 1 << 31;
            self.state.cr4 = 1 << 5;
            self.state.efer = 1 << 8 | 1 << 10;
            self.state.cr3 = rng.address() & !0xFFF;
        } else {
            self.state.cr0 = 1;
            self.state.cr3 = 0;
        }
        self.state.cpl = (rng.below(4) == 0) as u8 * 3;
    }
}

/// Makes up to `iters` handler calls (fewer when `src` runs dry) against
/// persona number `persona` of [`NAMES`] (taken modulo their count), with
/// setup step `break_step` broken, checking after each that nothing was
/// written outside guest RAM. Panics (a fuzzer finding) when a handler
/// panics; `Err` names the call that wrote outside guest RAM.
pub fn drive(
    persona: usize,
    break_step: Option<&str>,
    src: &mut dyn Source,
    iters: usize,
) -> Result<(), String> {
    let name = NAMES[persona % NAMES.len()];
    let mut rng = Rng { src, done: false };
    let Ok(mut active) = select(name, break_step) else {
        return Ok(());
    };
    let p = active.get();
    p.set_clock(KHZ, 1_000_000);
    let mut g = Guest::new();
    for i in 0..iters {
        g.now = g.now.wrapping_add(rng.below(1 << 24));
        if rng.below(8) == 0 {
            g.scribble(&mut rng);
        }
        g.randomise_regs(&mut rng);
        let op = rng.below(9);
        if rng.done {
            break;
        }
        match op {
            0 => {
                let (leaf, sub) = (rng.leaf(), rng.next() as u32);
                let _ = p.cpuid(leaf, sub);
                let _ = p.hypervisor_bit();
            }
            1 => {
                let msr = rng.msr();
                let _ = p.rdmsr(&mut g.cx(), msr);
            }
            2 => {
                let (msr, v) = (rng.msr(), rng.value());
                let _ = p.wrmsr(&mut g.cx(), msr, v);
            }
            3 | 4 => {
                // Small RAX values hit the personas' call numbers.
                if rng.below(2) == 0 {
                    g.state.rax = rng.below(64) | (rng.below(4) << 16) | (rng.below(2) << 32);
                }
                let _ = p.hypercall(&mut g.cx());
            }
            5 => {
                let (port, size) = (rng.port(), [1u8, 2, 4][rng.below(3) as usize]);
                if rng.below(2) == 0 {
                    g.state.rax = 0x564D_5868; // VMware's magic, random command below
                    g.regs.rcx = rng.below(64);
                }
                let _ = p.io_in(&mut g.cx(), port, size);
            }
            6 => {
                let (port, size, v) = (rng.port(), [1u8, 2, 4][rng.below(3) as usize], rng.next());
                let _ = p.io_out(&mut g.cx(), port, size, v as u32);
            }
            7 => {
                p.poll(&mut g.cx());
                let _ = p.next_deadline();
            }
            _ => {
                let v = rng.next() as u8;
                p.on_inject(&mut g.cx(), v);
                let (msr, val) = (0x800 + rng.below(0x100) as u32, rng.value());
                let now = g.now;
                if rng.below(2) == 0 {
                    let _ = g.apic.rdmsr(msr, now);
                } else {
                    let _ = g.apic.wrmsr(msr, val, now);
                }
                let _ = g.apic.poll(now);
            }
        }
        if !g.guards_intact() {
            return Err(format!(
                "persona {name} (break {break_step:?}) wrote outside guest RAM at call {i} (op {op})"
            ));
        }
    }
    let _ = p.shared_pages();
    Ok(())
}

/// The exit counters' read and snapshot after any counting, from `src`.
pub fn drive_counters(src: &mut dyn Source, iters: usize) {
    let mut rng = Rng { src, done: false };
    let mut acct = Accounting::default();
    for _ in 0..iters {
        match rng.below(4) {
            0 => acct.msr(rng.msr(), rng.below(2) == 0),
            1 => acct.port(rng.port()),
            2 => acct.hypercall(rng.value()),
            _ => acct.exit(rng.below(0x500)),
        }
        let _ = acct.window.read(rng.below(8), rng.value());
        let _ = acct.window.snapshot();
        if rng.done {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iterations() -> usize {
        std::env::var("PVOPS_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000)
    }

    fn seed() -> u64 {
        std::env::var("PVOPS_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5eed_f00d_cafe_b0b0)
    }

    #[test]
    fn fuzz_every_persona_handler() {
        let (iters, seed) = (iterations(), seed());
        for k in 0..NAMES.len() {
            let mut src = Xorshift(seed.wrapping_add(k as u64 * 0x9E37_79B9));
            if let Err(e) = drive(k, None, &mut src, iters) {
                panic!("{e} (seed {seed:#x})");
            }
        }
    }

    /// `break=` steps known when this was written (a step a persona does
    /// not have is skipped: `select` refuses it).
    const BREAKS: &[&str] = &[
        "timing-leaf",
        "no-frequency",
        "vmmcall",
        "stealclock",
        "hypercall-page",
        "shared-info",
        "pvclock-odd",
        "evtchn",
        "noisy-ports",
        "callback-via",
        "qemu",
        "tsc-page",
        "hypercall-error",
        "no-frequencies",
        "tsc-page-late",
        "stable-bit",
        "steal-never",
        "pv-eoi-refused",
        "hypercall-enosys",
        // The lying-hypervisor matrix (docs/lying-hypervisors.md).
        "absurd-frequency",
        "clock-gp",
        "hidden-steal",
        "hidden-stimer",
        "hypercall-second-fails",
        "msrs-gp",
        "miscalibrated-frequency",
        "no-features",
        "no-privileges",
        "pvclock-backwards",
        "signature-only",
        "steal-backwards",
        "stealclock-refused",
        "timer-second-fails",
    ];

    #[test]
    fn fuzz_broken_personas() {
        let (iters, seed) = (iterations() / 8, seed());
        let mut ran = 0;
        for (k, name) in NAMES.iter().enumerate() {
            for (j, step) in BREAKS.iter().enumerate() {
                if select(name, Some(step)).is_err() {
                    continue;
                }
                ran += 1;
                let mut src = Xorshift(seed ^ (k as u64) << 32 ^ j as u64);
                if let Err(e) = drive(k, Some(step), &mut src, iters) {
                    panic!("{e} (seed {seed:#x})");
                }
            }
        }
        std::eprintln!("{ran} broken personas, {iters} calls each");
        assert!(ran >= 30, "only {ran} broken personas");
    }

    #[test]
    fn fuzz_counters_read() {
        drive_counters(&mut Xorshift(seed()), iterations());
    }

    #[test]
    fn a_short_input_ends_the_run() {
        let mut src = Bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(drive(4, None, &mut src, usize::MAX).is_ok());
        drive_counters(&mut Bytes(&[]), usize::MAX);
    }

    #[test]
    fn guards_catch_a_write_past_the_end() {
        // The check can fail: a write that slipped past the bounds check
        // would land in the guard.
        let mut g = Guest::new();
        assert!(g.guards_intact());
        g.buf[GUARD + RAM] = 0;
        assert!(!g.guards_intact());
        // And GuestRam refuses the same write.
        assert!(g.mem.write(RAM as u64, &[0]).is_err());
        assert!(g.mem.write(RAM as u64 - 1, &[0, 0]).is_err());
        assert!(g.mem.write(u64::MAX, &[0]).is_err());
    }
}
