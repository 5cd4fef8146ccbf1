//! Bounded fuzz runs (proptest; see docs/fuzzing.md) of what the Hyper-V
//! backend decodes from memory the hypervisor writes: the reference TSC
//! page (honest hypervisor re-scaling it with torn updates and invalid
//! sequences, and a lying one) with the reference counter MSR behind it,
//! the VP assist page's EOI word, and the frequency derived from a scale.
//! Properties: no panic, no hang (a sequence that keeps changing ends in
//! the MSR), the clock never goes backwards nor ahead of the hypervisor's,
//! a scale of 0 gives no frequency.

use super::clock::{next_reference, TscPage};
use super::eoi::take_no_eoi_required;
use super::*;
use crate::fuzz_model::config;
use core::cell::RefCell;
use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;
use proptest::prelude::*;
use pvops_abi::hyperv::{reference_time, ReferenceTscPage, VpAssistPage, PAGE_SIZE};

/// What the model hypervisor does at one hook.
#[derive(Clone, Copy, Debug)]
enum Act {
    Idle,
    /// Re-scale: a new scale, the offset chosen so that reference time is
    /// continuous; `invalidate` writes sequence 0 while updating (KVM's
    /// way), else the sequence changes at the end only; `spread` hooks
    /// pass between the field writes.
    Rescale {
        scale: u64,
        invalidate: bool,
        spread: u8,
    },
    /// Any sequence, scale and offset (a lying hypervisor).
    Garbage(u32, u64, i64),
}

fn act(lying: bool) -> impl Strategy<Value = Act> {
    let honest = prop_oneof![
        6 => Just(Act::Idle),
        3 => (1u64..u64::MAX, any::<bool>(), 0u8..4)
            .prop_map(|(scale, invalidate, spread)| Act::Rescale { scale, invalidate, spread }),
    ];
    let garbage = (
        prop_oneof![Just(0u32), any::<u32>()],
        any::<u64>(),
        any::<i64>(),
    )
        .prop_map(|(s, c, o)| Act::Garbage(s, c, o));
    let w = if lying { 2 } else { 0 };
    prop_oneof![4 => honest, w => garbage]
}

struct Model {
    page: Box<ReferenceTscPage>,
    tsc: u64,
    /// The parameters the hypervisor's own clock follows.
    scale: u64,
    offset: i64,
    /// Writes left of an update: (left, scale, offset, sequence to end with).
    pending: Option<(u8, u64, i64, u32)>,
    script: Vec<(u32, Act)>,
    next: usize,
}

impl Model {
    fn truth(&self) -> u64 {
        reference_time(self.tsc, self.scale, self.offset)
    }

    fn finish_some(&mut self) {
        let Some((left, scale, offset, seq)) = self.pending else {
            return;
        };
        match left {
            2 => self.page.tsc_scale = scale,
            1 => self.page.tsc_offset = offset,
            _ => {}
        }
        if left <= 1 {
            // The offset that takes effect keeps reference time continuous
            // now (the counter MSR kept counting while the page was torn).
            let offset = self
                .truth()
                .wrapping_sub(reference_time(self.tsc, scale, 0)) as i64;
            self.page.tsc_scale = scale;
            self.page.tsc_offset = offset;
            self.page.tsc_sequence = seq;
            self.scale = scale;
            self.offset = offset;
            self.pending = None;
        } else {
            self.pending = Some((left - 1, scale, offset, seq));
        }
    }

    fn step(&mut self) {
        let (advance, act) = self.script[self.next % self.script.len()];
        self.next += 1;
        self.tsc = self.tsc.wrapping_add(u64::from(advance));
        if self.pending.is_some() {
            return self.finish_some();
        }
        match act {
            Act::Idle => {}
            Act::Rescale {
                scale,
                invalidate,
                spread,
            } => {
                let now = self.truth();
                let at_new = reference_time(self.tsc, scale, 0);
                let offset = now.wrapping_sub(at_new) as i64;
                let old = self.page.tsc_sequence;
                let seq = match old.wrapping_add(1) {
                    0 => 1,
                    s => s,
                };
                // Torn writes only behind sequence 0: with the sequence
                // left valid the TLFS has the hypervisor update the page
                // while no VP runs, which the guest sees as all at once.
                let spread = if invalidate {
                    self.page.tsc_sequence = 0;
                    spread
                } else {
                    0
                };
                self.pending = Some((spread.min(2), scale, offset, seq));
                if spread == 0 {
                    self.finish_some();
                }
            }
            Act::Garbage(seq, scale, offset) => {
                self.page.tsc_sequence = seq;
                self.page.tsc_scale = scale;
                self.page.tsc_offset = offset;
                // The MSR follows whatever the page says now.
                self.scale = scale;
                self.offset = offset;
            }
        }
    }
}

/// `reads` clock reads through `next_reference`, the model acting from
/// the TSC hook and between reads; the MSR reads the model's own clock.
fn run(model: &RefCell<Model>, reads: usize) -> Vec<(u64, u64)> {
    let last = AtomicU64::new(0);
    let page = TscPage::new(NonNull::from(&mut *model.borrow_mut().page).cast());
    (0..reads)
        .map(|_| {
            model.borrow_mut().step();
            let got = next_reference(
                &last,
                Some(page),
                || {
                    let mut m = model.borrow_mut();
                    m.step();
                    m.step();
                    m.tsc
                },
                || model.borrow().truth(),
            );
            (got, model.borrow().truth())
        })
        .collect()
}

fn model(tsc0: u64, scale: u64, offset: i64, script: Vec<(u32, Act)>) -> RefCell<Model> {
    RefCell::new(Model {
        page: Box::new(ReferenceTscPage {
            tsc_sequence: 1,
            reserved1: 0,
            tsc_scale: scale,
            tsc_offset: offset,
            reserved2: [0; 509],
        }),
        tsc: tsc0,
        scale,
        offset,
        pending: None,
        script,
        next: 0,
    })
}

proptest! {
    #![proptest_config(config(256))]

    /// An honest hypervisor re-scaling the page (sequence 0 or changed
    /// around torn writes): the clock never goes backwards, never ahead
    /// of the hypervisor's reference counter.
    #[test]
    fn fuzz_hyperv_tsc_page_honest(
        tsc0 in 0u64..1 << 62,
        scale in 1u64 << 50..1 << 62,
        offset in -(1i64 << 40)..1 << 40,
        script in proptest::collection::vec((0u32..1 << 20, act(false)), 1..24),
    ) {
        let m = model(tsc0, scale, offset, script);
        let values = run(&m, 32);
        for w in values.windows(2) {
            prop_assert!(w[0].0 <= w[1].0, "backwards: {:?} then {:?}", w[0], w[1]);
        }
        for (got, truth) in values {
            prop_assert!(got <= truth, "{} ahead of the reference counter {}", got, truth);
        }
    }

    /// A lying hypervisor: no panic, every read ends, never backwards.
    #[test]
    fn fuzz_hyperv_tsc_page_lying(
        tsc0 in any::<u64>(),
        scale in any::<u64>(),
        offset in any::<i64>(),
        script in proptest::collection::vec((any::<u32>(), act(true)), 1..24),
    ) {
        let m = model(tsc0, scale, offset, script);
        let values = run(&m, 32);
        for w in values.windows(2) {
            prop_assert!(w[0].0 <= w[1].0, "backwards: {:?} then {:?}", w[0], w[1]);
        }
    }

    /// A sequence that changes on every read, or stays invalid: the read
    /// gives up (bounded) and the MSR is used.
    #[test]
    fn fuzz_hyperv_tsc_page_never_settles(start in any::<u32>(), scale in any::<u64>(), counter in any::<u64>(), invalid in any::<bool>()) {
        let mut p = Box::new(ReferenceTscPage {
            tsc_sequence: if invalid { 0 } else { start },
            reserved1: 0,
            tsc_scale: scale,
            tsc_offset: 0,
            reserved2: [0; 509],
        });
        let base: *mut ReferenceTscPage = &mut *p;
        let page = TscPage::new(NonNull::new(base.cast()).unwrap());
        let tsc = || {
            // SAFETY: `base` is the live test page; no reference is held
            // across this write.
            unsafe {
                if (*base).tsc_sequence != 0 {
                    (*base).tsc_sequence = (*base).tsc_sequence.wrapping_add(1).max(1);
                }
            }
            7
        };
        let last = AtomicU64::new(0);
        prop_assert_eq!(next_reference(&last, Some(page), tsc, || counter), counter);
    }

    /// The frequency from any scale: none for 0, and no panic.
    #[test]
    fn fuzz_hyperv_frequency_from_scale(scale in any::<u64>(), r0 in any::<u64>(), t0 in any::<u64>(), r1 in any::<u64>(), t1 in any::<u64>()) {
        let hz = tsc_hz_from_scale(scale);
        if scale == 0 {
            prop_assert!(hz.is_none());
        }
        if let Some(hz) = tsc_hz_from_counter(r0, t0, r1, t1) {
            prop_assert!(r1 > r0 && t1 >= t0, "{}", hz);
        }
    }

    /// The VP assist page's EOI word with any contents: "no EOI required"
    /// read from bit 0, the word cleared, nothing else of the page changed.
    #[test]
    fn fuzz_hyperv_vp_assist_eoi(word in any::<u32>(), fill in any::<u8>()) {
        let mut p = Box::new(VpAssistPage {
            apic_assist: word,
            reserved: [fill; PAGE_SIZE - 4],
        });
        let base: *mut VpAssistPage = &mut *p;
        let skipped = take_no_eoi_required(base.cast());
        prop_assert_eq!(skipped, word & pvops_abi::hyperv::APIC_ASSIST_NO_EOI_REQUIRED != 0);
        prop_assert_eq!(p.apic_assist, 0);
        prop_assert!(p.reserved.iter().all(|&b| b == fill));
    }
}
