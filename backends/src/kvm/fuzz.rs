//! Bounded fuzz runs (proptest; see docs/fuzzing.md) of what the KVM
//! backend decodes from memory the host writes: the kvmclock pvclock
//! (honest host with torn updates, and a lying one), the steal-time area
//! and the PV EOI word. Properties: no panic; `time.monotonic_ns` never
//! goes backwards (when the host lies, only without the stable bit, which
//! is trusted as Linux trusts it); steal time never goes backwards and a
//! host that breaks its protocol is logged and frozen; an unusable clock
//! page has a reason.

use super::shared::take_pv_eoi;
use super::*;
use crate::fuzz_model::{config, honest_act, lying_act, Act, PvclockHost};
use crate::test_support::capture_logs;
use core::cell::RefCell;
use proptest::prelude::*;
use pvops_abi::kvm::StealTime;

/// Read attempts per clock read in the fuzz runs (the kernel uses
/// `HOT_TRIES`; a small budget also covers the "stuck odd" path).
const TRIES: u32 = 8;

/// Reads the clock `reads` times through `state`, with the host model
/// acting from the reader's hooks and between reads; returns the values.
fn run_clock(state: &State, host: &RefCell<PvclockHost>, reads: usize) -> Vec<u64> {
    // SAFETY: the model's page outlives `state`'s use of it below (the
    // area is unpublished before returning).
    unsafe { state.clock.set(host.borrow_mut().ptr()) };
    let out = (0..reads)
        .map(|_| {
            host.borrow_mut().step();
            state.clock_ns_with(
                TRIES,
                || host.borrow_mut().read_tsc(),
                || host.borrow_mut().step(),
            )
        })
        .collect();
    // SAFETY: unpublishing is always sound.
    unsafe { state.clock.set(core::ptr::null_mut()) };
    out
}

fn script(act: impl Strategy<Value = Act>) -> impl Strategy<Value = Vec<(u32, Act)>> {
    proptest::collection::vec((0u32..1 << 20, act), 1..24)
}

proptest! {
    #![proptest_config(config(256))]

    /// An honest host, torn updates and rate changes included: the clock
    /// never goes backwards, stable bit or not, and never runs ahead of
    /// the host's own clock.
    #[test]
    fn fuzz_kvmclock_honest_host_never_goes_backwards(
        tsc0 in 0u64..1 << 60,
        ns0 in 0u64..1 << 60,
        khz in 1_000u64..20_000_000,
        stable in any::<bool>(),
        script in script(honest_act()),
    ) {
        let host = RefCell::new(PvclockHost::new(tsc0, ns0, khz, u8::from(stable), script));
        let state = State::new();
        state.stable.store(stable, Ordering::Relaxed);
        let values = run_clock(&state, &host, 32);
        for w in values.windows(2) {
            prop_assert!(w[0] <= w[1], "backwards: {} then {}", w[0], w[1]);
        }
        prop_assert!(*values.last().unwrap() <= host.borrow().true_ns());
    }

    /// A lying host (garbage over the page at any moment): no panic, and
    /// without the stable bit the clock still never goes backwards.
    #[test]
    fn fuzz_kvmclock_lying_host(
        tsc0 in any::<u64>(),
        ns0 in any::<u64>(),
        khz in 1u64..u64::from(u32::MAX),
        stable in any::<bool>(),
        script in script(lying_act()),
    ) {
        let host = RefCell::new(PvclockHost::new(tsc0, ns0, khz, 0, script));
        let state = State::new();
        state.stable.store(stable, Ordering::Relaxed);
        let values = run_clock(&state, &host, 32);
        if !stable {
            for w in values.windows(2) {
                prop_assert!(w[0] <= w[1], "backwards: {} then {}", w[0], w[1]);
            }
        }
    }

    /// Any 32 bytes as the first snapshot: `pvclock_problem` names a
    /// reason whenever the frequency would be 0, and never panics.
    #[test]
    fn fuzz_kvmclock_first_snapshot_has_a_reason(bytes in any::<[u8; 32]>()) {
        use zerocopy::FromBytes;
        let t = VcpuTimeInfo::read_from_bytes(&bytes).unwrap();
        let problem = pvclock_problem(&t);
        if t.version == 0 || t.tsc_to_system_mul == 0 || t.tsc_khz() == 0 {
            prop_assert!(problem.is_some());
        } else {
            prop_assert!(problem.is_none());
        }
    }

    /// The steal-time area rewritten with any (version, steal) between
    /// reads: `time.steal_ns` never goes backwards, and the first
    /// protocol breach (odd version, steal going back) is logged once and
    /// freezes it.
    #[test]
    fn fuzz_steal_time_never_goes_backwards(
        writes in proptest::collection::vec(
            (prop_oneof![4 => (1u32..1000).prop_map(|v| v * 2), 1 => any::<u32>()],
             any::<u64>(),
             any::<u8>()),
            1..32),
    ) {
        let mut area = Box::new(StealTime::default());
        let p: *mut StealTime = &mut *area;
        let state = State::new();
        // SAFETY: `area` outlives `state`'s use of it; unpublished below.
        unsafe { state.steal.set(p) };
        let (values, logs) = capture_logs(|| {
            writes
                .iter()
                .map(|&(version, steal, preempted)| {
                    // SAFETY: `p` is the live test area; no reference to it
                    // is held across this write.
                    unsafe {
                        (*p).version = version;
                        (*p).steal = steal;
                        (*p).preempted = preempted;
                    }
                    state.steal_ns()
                })
                .collect::<Vec<_>>()
        });
        // SAFETY: unpublishing is always sound.
        unsafe { state.steal.set(core::ptr::null_mut()) };
        for w in values.windows(2) {
            prop_assert!(w[0] <= w[1], "backwards: {} then {}", w[0], w[1]);
        }
        let frozen = state.steal_frozen.load(Ordering::Relaxed);
        prop_assert_eq!(frozen, !logs.is_empty(), "{:?}", logs);
        prop_assert!(logs.len() <= 1, "{:?}", logs);
    }

    /// The PV EOI word with any contents: taken once, then clear.
    #[test]
    fn fuzz_pv_eoi_word(word in any::<u32>()) {
        let mut w = word;
        let taken = take_pv_eoi(&mut w);
        prop_assert_eq!(taken, word & pvops_abi::kvm::PV_EOI_ENABLED != 0);
        prop_assert_eq!(w, 0);
        prop_assert!(!take_pv_eoi(&mut w));
    }
}
