//! Bounded fuzz runs (proptest; see docs/fuzzing.md) of what the Xen
//! backend decodes from memory Xen writes: vCPU 0's `vcpu_time_info` in
//! shared_info (honest Xen with torn updates, and a lying one), the
//! runstate area, and the event-channel words of shared_info / vcpu_info.
//! Properties: no panic, no hang (every retry loop is bounded), the clock
//! and steal time never go backwards, an acknowledgement consumes exactly
//! the port's pending, unmasked bit.

use super::*;
use crate::fuzz_model::{config, honest_act, lying_act, Act, PvclockHost};
use core::cell::RefCell;
use proptest::prelude::*;
use pvops_abi::xen::{VcpuRunstateInfo, XEN_RUNSTATE_UPDATE};

const TRIES: u32 = 8;

/// `time.monotonic_ns` over `reads` reads of the model's page, as the
/// entry computes it (`pvclock::read_with`, then `next_ns`).
fn run_clock(host: &RefCell<PvclockHost>, reads: usize) -> Vec<u64> {
    let last = AtomicU64::new(0);
    let t = host.borrow_mut().ptr();
    (0..reads)
        .map(|_| {
            host.borrow_mut().step();
            // SAFETY: `t` is the model's live, aligned page.
            let reading = unsafe {
                crate::pvclock::read_with(
                    t,
                    TRIES,
                    || host.borrow_mut().read_tsc(),
                    || host.borrow_mut().step(),
                )
            };
            next_ns(&last, reading)
        })
        .collect()
}

fn script(act: impl Strategy<Value = Act>) -> impl Strategy<Value = Vec<(u32, Act)>> {
    proptest::collection::vec((0u32..1 << 20, act), 1..24)
}

/// One write of the model Xen to the runstate area: the counters it adds
/// (an honest update, with `XEN_RUNSTATE_UPDATE` set around it, torn at
/// the reader's hook), or garbage.
#[derive(Clone, Copy, Debug)]
enum RunAct {
    Add {
        runnable: u32,
        offline: u32,
        torn: bool,
    },
    Garbage(VcpuRunstateInfo),
}

fn run_act() -> impl Strategy<Value = RunAct> {
    prop_oneof![
        4 => (any::<u32>(), any::<u32>(), any::<bool>())
            .prop_map(|(runnable, offline, torn)| RunAct::Add { runnable, offline, torn }),
        1 => (any::<i32>(), any::<u64>(), any::<[u64; 4]>()).prop_map(|(state, entry, time)| {
            RunAct::Garbage(VcpuRunstateInfo {
                state,
                pad: 0,
                state_entry_time: entry,
                time,
            })
        }),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Honest Xen, torn updates and rate changes included: the clock never
    /// goes backwards nor ahead of Xen's own.
    #[test]
    fn fuzz_xen_pvclock_honest_never_goes_backwards(
        tsc0 in 0u64..1 << 60,
        ns0 in 0u64..1 << 60,
        khz in 1_000u64..20_000_000,
        script in script(honest_act()),
    ) {
        let host = RefCell::new(PvclockHost::new(tsc0, ns0, khz, 0, script));
        let values = run_clock(&host, 32);
        for w in values.windows(2) {
            prop_assert!(w[0] <= w[1], "backwards: {} then {}", w[0], w[1]);
        }
        prop_assert!(*values.last().unwrap() <= host.borrow().true_ns());
    }

    /// Lying Xen (garbage at any moment): no panic, never backwards.
    #[test]
    fn fuzz_xen_pvclock_lying_never_goes_backwards(
        tsc0 in any::<u64>(),
        ns0 in any::<u64>(),
        khz in 1u64..u64::from(u32::MAX),
        script in script(lying_act()),
    ) {
        let host = RefCell::new(PvclockHost::new(tsc0, ns0, khz, 0, script));
        let values = run_clock(&host, 32);
        for w in values.windows(2) {
            prop_assert!(w[0] <= w[1], "backwards: {} then {}", w[0], w[1]);
        }
    }

    /// The runstate area under an honest Xen (updates flagged with
    /// `XEN_RUNSTATE_UPDATE`, some landing mid-read) and a lying one:
    /// every read ends, steal time never goes backwards, and while Xen is
    /// honest it is exact.
    #[test]
    fn fuzz_xen_runstate(acts in proptest::collection::vec(run_act(), 1..24)) {
        let mut area = Box::new(VcpuRunstateInfo::default());
        let r: *mut VcpuRunstateInfo = &mut *area;
        let last = AtomicU64::new(0);
        let (mut runnable, mut offline, mut lied) = (0u64, 0u64, false);
        let mut entry = 0u64;
        for act in acts {
            let mut mid_write: Option<VcpuRunstateInfo> = None;
            match act {
                RunAct::Add { runnable: a, offline: b, torn } => {
                    runnable = runnable.wrapping_add(u64::from(a));
                    offline = offline.wrapping_add(u64::from(b));
                    entry += 1;
                    let new = VcpuRunstateInfo {
                        state: 0,
                        pad: 0,
                        state_entry_time: entry & !XEN_RUNSTATE_UPDATE,
                        time: [0, runnable, 0, offline],
                    };
                    if torn {
                        // Xen sets the flag, starts writing; the rest lands
                        // while the guest copies.
                        // SAFETY: `r` is the live test area, no reference held.
                        unsafe {
                            (*r).state_entry_time |= XEN_RUNSTATE_UPDATE;
                            (*r).time[1] = runnable;
                        }
                        mid_write = Some(new);
                    } else {
                        // SAFETY: as above.
                        unsafe { *r = new };
                    }
                }
                RunAct::Garbage(g) => {
                    lied = true;
                    // SAFETY: as above.
                    unsafe { *r = g };
                }
            }
            let mid = || {
                if let Some(new) = mid_write.take() {
                    // SAFETY: as above.
                    unsafe { *r = new };
                }
            };
            // SAFETY: `r` is live and aligned for the whole call.
            let reading = unsafe { shared::steal_ns_at(r, TRIES, mid) };
            let before = last.load(Ordering::Relaxed);
            let got = next_steal(&last, reading);
            prop_assert!(got >= before, "backwards: {} then {}", before, got);
            if !lied {
                prop_assert_eq!(got, runnable.wrapping_add(offline).max(before));
            }
        }
    }

    /// Event-channel acknowledgement on a shared_info page with any
    /// contents, for any port: true exactly when the port is pending and
    /// unmasked, which consumes its bit and nothing else; no panic for
    /// ports outside the 2-level ABI.
    #[test]
    fn fuzz_xen_ack_port(words in proptest::collection::vec(any::<u64>(), 512), port in prop_oneof![0u32..4096, any::<u32>()]) {
        let mut p: Box<[u64; 512]> = Box::new(words.try_into().unwrap());
        let before = *p;
        let base = p.as_mut_ptr().cast::<u8>();
        let vi = base.cast::<abi::VcpuInfo>();
        // SAFETY: a live, aligned 4 KiB buffer laid out as shared_info.
        let hit = unsafe { shared::ack_port_in(base, vi, port) };
        let (word, bit) = abi::port_word_bit(port);
        if word >= abi::EVTCHN_2L_WORDS {
            prop_assert!(!hit);
            prop_assert_eq!(&before[..], &p[..]);
            return Ok(());
        }
        let pend = abi::evtchn_pending_offset(word) / 8;
        let mask = abi::evtchn_mask_offset(word) / 8;
        let expect = before[pend] & (1 << bit) != 0 && before[mask] & (1 << bit) == 0;
        prop_assert_eq!(hit, expect);
        let sel = core::mem::offset_of!(abi::VcpuInfo, evtchn_pending_sel) / 8;
        for i in 0..512 {
            if i == pend && hit {
                prop_assert_eq!(p[i], before[i] & !(1 << bit));
            } else if i == sel {
                prop_assert_eq!(p[i], 0);
            } else if i == 0 {
                // evtchn_upcall_pending (byte 0) cleared, the rest kept.
                prop_assert_eq!(p[0], before[0] & !0xFF);
            } else {
                prop_assert_eq!(p[i], before[i], "word {} changed", i);
            }
        }
    }

    /// Masking every port on any page: every mask word set, the selector
    /// and upcall flag cleared.
    #[test]
    fn fuzz_xen_mask_all(words in proptest::collection::vec(any::<u64>(), 512)) {
        let mut p: Box<[u64; 512]> = Box::new(words.try_into().unwrap());
        let base = p.as_mut_ptr().cast::<u8>();
        // SAFETY: as above.
        unsafe { shared::mask_all_in(base, base.cast()) };
        for w in 0..abi::EVTCHN_2L_WORDS {
            prop_assert_eq!(p[abi::evtchn_mask_offset(w) / 8], !0);
        }
        prop_assert_eq!(p[core::mem::offset_of!(abi::VcpuInfo, evtchn_pending_sel) / 8], 0);
        prop_assert_eq!(p[0] & 0xFF, 0);
    }
}
