//! A counted stretch of code: its TSC cycles, and its exits from whichever
//! counter this boot has (the report card and the SMP bench measure their
//! loops this way; the runner's side is `qemu_runner::card`).
//!
//! - Under the companion microvisor: its hidden counters, reset before the
//!   stretch and copied after it (the copy's own VMMCALL taken out).
//! - Under KVM (`hold` on the command line): the kernel prints `@@ hold`
//!   number `K` just before the stretch and `K + 1` just after; the runner
//!   reads KVM's statistics over QMP at each hold, and the difference is
//!   the stretch's (plus the bracket's own exits, which an empty stretch
//!   measured the same way gives).
//! - In a nested run: every stretch lies between two writes to
//!   [`MARK_PORT`]; the runner cuts L1 KVM's trace of exits there.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::hypercall::Microvisor;
use pvops_abi::microvisor::{code, ExitSnapshot};
pub use pvops_abi::report::CARD_MARK_PORT as MARK_PORT;

/// A count, or `-` when there is none.
pub struct Count(pub Option<u64>);

impl core::fmt::Display for Count {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("-"),
        }
    }
}

/// The holds printed so far through [`hold`] (the runner numbers every
/// `@@ hold` of the boot the same way).
static HOLDS: AtomicU32 = AtomicU32::new(0);
/// The marked stretches so far (the runner numbers the mark pairs of its
/// trace the same way).
static MARKED: AtomicU32 = AtomicU32::new(0);

/// Prints `@@ hold` and waits for the runner; returns its number.
pub fn hold() -> u32 {
    let k = HOLDS.fetch_add(1, Ordering::Relaxed);
    crate::hold::hold();
    k
}

fn mark(value: u8) {
    // SAFETY: no device decodes the port: the write has no effect beyond
    // the exit it causes.
    unsafe { bootkit::cpu::outb(MARK_PORT, value) };
}

/// What one stretch cost.
pub struct Stretch {
    /// TSC cycles from its start to its end, on this CPU.
    pub cycles: u64,
    /// Exits counted by the microvisor (every vCPU's); `None` elsewhere.
    pub exits: Option<u64>,
    /// The hold printed just before it (`hold` on the command line and no
    /// microvisor); the runner's reading at hold `K + 1` ends it.
    pub hold: Option<u32>,
    /// Its number among the marked stretches of the boot.
    pub mark: u32,
}

/// Runs `f` as a counted stretch (see the module documentation); `held`:
/// `hold` is on the command line.
pub fn measure<R>(mv: Option<&Microvisor>, held: bool, f: impl FnOnce() -> R) -> (Stretch, R) {
    let k = (held && mv.is_none()).then(hold);
    let m = MARKED.fetch_add(1, Ordering::Relaxed);
    mark(1);
    if let Some(mv) = mv {
        mv.call(code::COUNTERS_RESET, [0; 3]);
    }
    let t0 = pvops::cpu::read_tsc();
    let r = f();
    let cycles = pvops::cpu::read_tsc().wrapping_sub(t0);
    let exits = mv.and_then(exits_since_reset);
    mark(2);
    if k.is_some() {
        hold();
    }
    let s = Stretch {
        cycles,
        exits,
        hold: k,
        mark: m,
    };
    (s, r)
}

/// The microvisor's exits since its counters were reset, less the copy's
/// own VMMCALL.
fn exits_since_reset(mv: &Microvisor) -> Option<u64> {
    let mut snap = ExitSnapshot::default();
    // Identity mapped: the stack variable's address is its GPA.
    let gpa = &raw mut snap as u64;
    let len = core::mem::size_of::<ExitSnapshot>() as u64;
    if mv.call(code::COUNTERS_COPY, [gpa, len, 0]) < 0 {
        return None;
    }
    // SAFETY: `snap` is a live, aligned local the microvisor just filled
    // (its address went to the asm block, which may write memory); read
    // volatile so the read is not folded into the default.
    let s = unsafe { core::ptr::read_volatile(&raw const snap) };
    Some(s.total.saturating_sub(1))
}
