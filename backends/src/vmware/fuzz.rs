//! Bounded fuzz runs (proptest; see docs/fuzzing.md) of what the VMware
//! backend decodes from memory the hypervisor writes: the STEALCLOCK area.
//! Properties: no panic (any counter, any TSC rate), steal time never goes
//! backwards.

use super::*;
use crate::fuzz_model::config;
use proptest::prelude::*;

proptest! {
    #![proptest_config(config(256))]

    /// The steal-clock area rewritten with any counter between reads (an
    /// honest hypervisor only adds; a lying one writes anything): the
    /// entry's value never goes backwards, follows the counter while it
    /// grows, and stays frozen once the counter went back.
    #[test]
    fn fuzz_vmware_steal_clock(
        writes in proptest::collection::vec(
            prop_oneof![3 => (0u64..1 << 32).prop_map(|d| (true, d)), 1 => any::<u64>().prop_map(|v| (false, v))],
            1..32),
        mult in any::<u32>(),
    ) {
        let mut area = Box::new(StealTime::default());
        let last = AtomicU64::new(0);
        let frozen = AtomicU8::new(0);
        let mut went_back = false;
        let mut high = 0;
        let ns = |ticks: u64| ((u128::from(ticks) * u128::from(mult)) >> 32) as u64;
        let mut prev = 0;
        for (add, v) in writes {
            area.clock = if add { area.clock.saturating_add(v) } else { v };
            // SAFETY: the live test area, aligned.
            let ticks = unsafe { core::ptr::read_volatile(&raw const area.clock) };
            let got = ns(steal_monotonic(ticks, &last, &frozen));
            went_back |= ticks < high;
            high = high.max(ticks);
            prop_assert!(got >= prev, "backwards: {} then {}", prev, got);
            if !went_back {
                prop_assert_eq!(got, ns(ticks));
            }
            prev = got;
        }
    }
}
