//! Host fuzzing support shared by the backends' `fuzz` test modules: the
//! case count of a bounded run, and a model hypervisor that keeps a
//! pvclock (`vcpu_time_info`) up to date the way Xen and KVM do — or lies.
//!
//! The model is driven from the reader's own hooks (the TSC read inside
//! the version window, and the wait between attempts; see
//! [`crate::pvclock::read_with`]), so an update can start after the reader
//! took the version and finish several attempts later: the torn writes the
//! version protocol exists for. See docs/fuzzing.md.
#![allow(
    dead_code,
    reason = "each backend's fuzz module uses a subset; which depends on the Cargo features"
)]

use proptest::prelude::*;
use proptest::test_runner::Config;
use pvops_abi::pvclock::{scale_delta, time_scale, VcpuTimeInfo};

/// The bounded run's case count: `default`, or `PROPTEST_CASES` when set
/// (longer runs: `PROPTEST_CASES=100000 cargo test -p pvops-backends
/// --all-features fuzz_`).
pub(crate) fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        // Failures are reported with their shrunk input; no regression
        // files are written into the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// One thing the model hypervisor does at a hook.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Act {
    /// Nothing but time passing.
    Idle,
    /// Start an update: re-anchor the clock at the current TSC (its value
    /// there kept) with a new rate of this many kHz, writing the fields
    /// over this many later hooks (0: all at once).
    Update { khz: u64, spread: u8 },
    /// Write these bytes over the structure (a lying hypervisor), version
    /// included.
    Garbage([u8; 32]),
}

/// A strategy for an honest hypervisor's acts: mostly time passing,
/// sometimes a (possibly spread-out) update with a new rate.
pub(crate) fn honest_act() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => Just(Act::Idle),
        3 => (1_000u64..20_000_000, 0u8..6).prop_map(|(khz, spread)| Act::Update { khz, spread }),
    ]
}

/// A strategy for a lying hypervisor's acts: honest ones and garbage.
pub(crate) fn lying_act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => honest_act(),
        2 => any::<[u8; 32]>().prop_map(Act::Garbage),
    ]
}

/// A model hypervisor writing one `vcpu_time_info`.
pub(crate) struct PvclockHost {
    page: Box<VcpuTimeInfo>,
    /// The TSC now.
    pub(crate) tsc: u64,
    /// The published (complete) parameters: the honest clock.
    truth: VcpuTimeInfo,
    /// Fields still to write of an update in progress, and the update.
    pending: Option<(u8, VcpuTimeInfo)>,
    script: Vec<(u32, Act)>,
    next: usize,
    /// Whether garbage was ever written (the clock may then go anywhere).
    pub(crate) lied: bool,
}

impl PvclockHost {
    /// A page published at TSC `tsc0` with system time `ns0` at `khz`,
    /// then `script`: per hook, a TSC advance and an act (the script
    /// repeats).
    pub(crate) fn new(tsc0: u64, ns0: u64, khz: u64, flags: u8, script: Vec<(u32, Act)>) -> Self {
        let (mul, shift) = time_scale(khz).expect("non-zero kHz");
        let truth = VcpuTimeInfo {
            version: 2,
            tsc_timestamp: tsc0,
            system_time: ns0,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            flags,
            ..Default::default()
        };
        PvclockHost {
            page: Box::new(truth),
            tsc: tsc0,
            truth,
            pending: None,
            script,
            next: 0,
            lied: false,
        }
    }

    /// The structure the reader reads.
    pub(crate) fn ptr(&mut self) -> *mut VcpuTimeInfo {
        &mut *self.page
    }

    /// The honest clock's value at the current TSC.
    pub(crate) fn true_ns(&self) -> u64 {
        self.truth.ns_at(self.tsc)
    }

    fn write_some(&mut self) {
        let Some((left, new)) = self.pending else {
            return;
        };
        // Fields in the order a hypervisor may store them; `left` of them
        // remain, the rest are written now (one per hook).
        let p = &mut *self.page;
        match left {
            4 => p.tsc_timestamp = new.tsc_timestamp,
            3 => p.system_time = new.system_time,
            2 => p.tsc_to_system_mul = new.tsc_to_system_mul,
            1 => p.tsc_shift = new.tsc_shift,
            _ => {}
        }
        if left <= 1 {
            *p = VcpuTimeInfo {
                version: p.version.wrapping_add(1),
                ..new
            };
            self.truth = new;
            self.pending = None;
        } else {
            self.pending = Some((left - 1, new));
        }
    }

    /// One hook: time passes, then the next act of the script.
    pub(crate) fn step(&mut self) {
        let (advance, act) = if self.script.is_empty() {
            (1, Act::Idle)
        } else {
            let s = self.script[self.next % self.script.len()];
            self.next += 1;
            s
        };
        self.tsc = self.tsc.wrapping_add(u64::from(advance));
        if self.pending.is_some() {
            self.write_some();
            return;
        }
        match act {
            Act::Idle => {}
            Act::Update { khz, spread } => {
                let (mul, shift) = time_scale(khz).expect("non-zero kHz");
                let at = self.tsc;
                let new = VcpuTimeInfo {
                    version: 0,
                    tsc_timestamp: at,
                    system_time: self.truth.system_time.wrapping_add(scale_delta(
                        at.wrapping_sub(self.truth.tsc_timestamp),
                        self.truth.tsc_to_system_mul,
                        self.truth.tsc_shift,
                    )),
                    tsc_to_system_mul: mul,
                    tsc_shift: shift,
                    flags: self.truth.flags,
                    ..Default::default()
                };
                self.page.version = self.page.version.wrapping_add(1) | 1;
                self.pending = Some((spread.min(4), new));
                if spread == 0 {
                    self.write_some();
                }
            }
            Act::Garbage(bytes) => {
                use zerocopy::FromBytes;
                *self.page = VcpuTimeInfo::read_from_bytes(&bytes).expect("32 bytes");
                self.lied = true;
            }
        }
    }

    /// The TSC hook: two steps (an update may land, and time passes after
    /// it, so that a snapshot taken before the update is stale at the TSC
    /// returned), then the TSC.
    pub(crate) fn read_tsc(&mut self) -> u64 {
        self.step();
        self.step();
        self.tsc
    }
}
