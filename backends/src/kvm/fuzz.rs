//! Bounded fuzz runs (proptest; see docs/fuzzing.md) of what the KVM
//! backend decodes from memory the host writes: the kvmclock pvclock
//! (honest host with torn updates, and a lying one), the steal-time area
//! and the PV EOI word. Properties: no panic; `time.monotonic_ns` never
//! goes backwards, even from a host that lies with the stable bit set;
//! steal time never goes backwards and a
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
    /// the clock never goes backwards, stable bit or not.
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
        for w in values.windows(2) {
            prop_assert!(w[0] <= w[1], "backwards: {} then {}", w[0], w[1]);
        }
    }

    /// Any 32 bytes as the first snapshot: `pvclock_problem` names a
    /// reason whenever the frequency would be 0 or implausible, and never
    /// panics.
    #[test]
    fn fuzz_kvmclock_first_snapshot_has_a_reason(bytes in any::<[u8; 32]>()) {
        use zerocopy::FromBytes;
        let t = VcpuTimeInfo::read_from_bytes(&bytes).unwrap();
        let problem = pvclock_problem(&t);
        if t.version == 0
            || t.tsc_to_system_mul == 0
            || !crate::tsc::plausible_khz(t.tsc_khz())
        {
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

/// A fake KVM for the setup: on each area's MSR write it fills the area
/// with the fuzzer's bytes (a host that writes anything), refuses the MSRs
/// the fuzzer picked, answers hypercalls with the fuzzer's code.
struct LyingHost {
    page: SharedPage,
    clock: [u8; 32],
    steal: [u8; 64],
    refuse: u8,
    rc: i64,
}

impl LyingHost {
    fn fill(&self, offset: usize, bytes: &[u8]) {
        // SAFETY: inside the leaked 4 KiB test page (offsets 0 and 64).
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.page.virt.as_ptr().add(offset),
                bytes.len(),
            )
        };
    }
}

impl Hw for LyingHost {
    fn write_msr(&mut self, index: u32, value: u64) -> Result<(), &'static str> {
        let bit = match index {
            m::SYSTEM_TIME_NEW | m::SYSTEM_TIME => 1,
            m::STEAL_TIME => 2,
            m::PV_EOI_EN => 4,
            _ => 0,
        };
        if self.refuse & bit != 0 {
            return Err("WRMSR raised #GP");
        }
        if value & m::ENABLED != 0 {
            match bit {
                1 => self.fill(shared::CLOCK_OFFSET, &self.clock),
                2 => self.fill(shared::STEAL_OFFSET, &self.steal),
                _ => {}
            }
        }
        Ok(())
    }

    fn hypercall(&mut self, _nr: u64, _a: [u64; 4]) -> i64 {
        self.rc
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// The setup against a host that writes anything into the kvmclock
    /// and steal-time areas, refuses any MSR and fails any hypercall, with
    /// any features: no panic; an entry is owned only when its data could
    /// be trusted, and every entry the features offered but that stays
    /// native has a logged reason.
    #[test]
    fn fuzz_kvm_setup_against_a_lying_host(
        features in any::<u32>(),
        hints in any::<u32>(),
        cpus in 1u32..4,
        clock in any::<[u8; 32]>(),
        clock_version in prop_oneof![Just(None), Just(Some(0u32)), (1u32..100).prop_map(|v| Some(v * 2)), any::<u32>().prop_map(Some)],
        steal in any::<[u8; 64]>(),
        // Version 0 makes the setup wait for the host (100M TSC cycles):
        // rare here.
        steal_version in prop_oneof![1 => Just(0u32), 8 => (1u32..100).prop_map(|v| v * 2), 4 => any::<u32>().prop_map(|v| v | 1)],
        refuse in any::<u8>(),
        rc in prop_oneof![Just(0i64), any::<i64>()],
    ) {
        use crate::test_support::Pages;
        use crate::Platform;
        use pvops::patch::Patch;
        let mut clock = clock;
        if let Some(v) = clock_version {
            clock[..4].copy_from_slice(&v.to_le_bytes());
        }
        let mut steal = steal;
        steal[8..12].copy_from_slice(&steal_version.to_le_bytes());
        let mut pages = Pages::new(1);
        let page = pages.alloc_shared_page().unwrap();
        let mut host = LyingHost { page, clock, steal, refuse, rc };
        let leaves = Leaves {
            base: 0x4000_0000,
            features: Features(features),
            hints: Hints(hints),
        };
        let offer = Offer::from_leaves(&leaves, cpus, false);
        let state: &'static State = Box::leak(Box::new(State::new()));
        let mut patch = Patch::new("kvm");
        let ((), logs) = capture_logs(|| {
            setup(&mut host, &leaves, &offer, Some(page), None, &mut patch, state)
        });
        let owned: Vec<&str> = patch.replaced().map(|e| e.name()).collect();
        let says = |entry: &str| logs.iter().any(|l| l.contains(entry) && l.contains("stays native"));
        use zerocopy::FromBytes;
        let t = VcpuTimeInfo::read_from_bytes(&clock).unwrap();
        if owned.contains(&"time.monotonic_ns") {
            prop_assert!(offer.clock.is_some());
            prop_assert!(t.version & 1 == 0 && pvclock_problem(&t).is_none(), "{:?}", t);
            prop_assert!(owned.contains(&"time.tsc_frequency"));
        } else if offer.clock.is_some() {
            prop_assert!(says("time.monotonic_ns"), "{:?}", logs);
        }
        if owned.contains(&"time.steal_ns") {
            prop_assert!(offer.steal_time && steal_version != 0 && steal_version & 1 == 0);
        } else if offer.steal_time {
            prop_assert!(says("time.steal_ns"), "{:?}", logs);
        }
        if !owned.contains(&"irq.eoi") && offer.pv_eoi {
            prop_assert!(says("irq.eoi"), "{:?}", logs);
        }
        // Whatever was owned reads without a panic.
        if owned.contains(&"time.monotonic_ns") {
            let _ = state.clock_ns_with(TRIES, || 0x1234, || {});
        }
        if owned.contains(&"time.steal_ns") {
            let _ = state.steal_ns();
        }
    }
}

/// Regression (fuzz finding): a host that claims a stable clock and then
/// publishes an earlier system time does not move `time.monotonic_ns`
/// back.
#[test]
fn a_stable_clock_moved_back_by_the_host_does_not_go_backwards() {
    let (mul, shift) = pvops_abi::pvclock::time_scale(1_000_000).unwrap();
    let mut page = Box::new(VcpuTimeInfo {
        version: 2,
        tsc_timestamp: 0,
        system_time: 5_000_000,
        tsc_to_system_mul: mul,
        tsc_shift: shift,
        flags: FLAG_TSC_STABLE,
        ..Default::default()
    });
    let p: *mut VcpuTimeInfo = &mut *page;
    let state = State::new();
    state.stable.store(true, Ordering::Relaxed);
    // SAFETY: `page` outlives the reads; unpublished below.
    unsafe { state.clock.set(p) };
    let first = state.clock_ns_with(TRIES, || 1000, || {});
    assert_eq!(first, 5_001_000);
    // SAFETY: the live test page; no reference held across the write.
    unsafe {
        (*p).system_time = 0;
        (*p).version = 4;
    }
    assert_eq!(state.clock_ns_with(TRIES, || 2000, || {}), first);
    // SAFETY: unpublishing is always sound.
    unsafe { state.clock.set(core::ptr::null_mut()) };
}
