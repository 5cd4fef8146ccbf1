//! Host tests: detection (plain and stacked above Hyper-V), the CPUID gates,
//! and the setup's per-entry fallbacks against a fake KVM, including the
//! Bad input cases (kvmclock never valid, TSC scale 0, steal time going
//! backwards, a PV EOI word the host never writes).

use super::*;
use crate::select::select_from;
use crate::test_support::{capture_logs, sig, with_env, Pages};
use pvops_abi::pvclock::time_scale;
use pvops_probe::CpuidResult;
use zerocopy::IntoBytes;

/// KVM features of QEMU 7.2 `-cpu host` on this machine (probe/tests/dumps/qemu-kvm.txt).
const QEMU_FEATURES: u32 = 0x0100_7afb;

fn r(eax: u32, (ebx, ecx, edx): (u32, u32, u32)) -> CpuidResult {
    CpuidResult { eax, ebx, ecx, edx }
}

/// A CPUID table: KVM at `base` with `features`, optionally Hyper-V below.
struct Cpu {
    base: u32,
    features: u32,
    hints: u32,
    hyperv: bool,
}

impl pvops_probe::CpuidSource for Cpu {
    fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
        match leaf {
            0 => r(0x10, sig(b"AuthenticAMD")),
            1 => CpuidResult {
                ecx: 1 << 31,
                ..Default::default()
            },
            0x4000_0000 if self.hyperv => r(0x4000_0006, sig(b"Microsoft Hv")),
            0x4000_0001 if self.hyperv => r(pvops_probe::HV_INTERFACE_HV1, (0, 0, 0)),
            l if l == self.base => r(self.base + 1, sig(abi::SIGNATURE)),
            l if l == self.base + 1 => CpuidResult {
                eax: self.features,
                edx: self.hints,
                ..Default::default()
            },
            _ => CpuidResult::default(),
        }
    }
}

fn plain() -> Cpu {
    Cpu {
        base: 0x4000_0000,
        features: QEMU_FEATURES,
        hints: 0,
        hyperv: false,
    }
}

#[test]
fn detects_kvm_at_any_base() {
    with_env(&plain(), |env| {
        let d = KVM.detect(env).expect("detected");
        assert_eq!((d.priority, d.base), (0x4000_0000, Some(0x4000_0000)));
    });
    let stacked = Cpu {
        base: 0x4000_0100,
        hyperv: true,
        ..plain()
    };
    with_env(&stacked, |env| {
        let d = KVM.detect(env).expect("detected");
        assert_eq!(d.base, Some(0x4000_0100));
        static BOTH: &[&dyn Backend] = &[&crate::native::NATIVE, &KVM];
        assert_eq!(select_from(BOTH, env, None).backend.name(), "kvm");
    });
}

#[test]
fn no_hypervisor_bit_no_kvm() {
    let no_hv = |leaf: u32, s: u32| {
        let mut c = plain().cpuid(leaf, s);
        if leaf == 1 {
            c.ecx = 0;
        }
        c
    };
    with_env(&no_hv, |env| assert!(KVM.detect(env).is_none()));
}

#[test]
fn gates_follow_kvm_c() {
    let l = Leaves {
        base: 0x4000_0000,
        features: Features(QEMU_FEATURES),
        hints: Hints(0),
    };
    let one = Offer::from_leaves(&l, 1, false);
    assert_eq!(one.clock, Some(ClockMsr::New));
    assert!(one.stable_bit && one.nop_io_delay && one.steal_time && one.pv_eoi);
    // One CPU: no PV IPIs, spinlocks, TLB flush or sched yield.
    assert!(!one.pv_ipi && !one.pv_spinlocks && !one.pv_tlb_flush && !one.sched_yield);
    let smp = Offer::from_leaves(&l, 4, false);
    assert!(smp.pv_ipi && smp.pv_spinlocks && smp.pv_tlb_flush && smp.sched_yield);
    assert!(!Offer::from_leaves(&l, 4, true).pv_tlb_flush, "MWAIT");
    let rt = Offer::from_leaves(
        &Leaves {
            hints: Hints::REALTIME,
            ..l
        },
        4,
        false,
    );
    assert!(!rt.pv_spinlocks && !rt.pv_tlb_flush && !rt.sched_yield);
    // Old clocksource only; nothing at all.
    let old = Offer::from_leaves(
        &Leaves {
            features: Features::CLOCKSOURCE,
            ..l
        },
        1,
        false,
    );
    assert_eq!(old.clock, Some(ClockMsr::Old));
    assert!(!old.stable_bit);
    assert_eq!(
        Offer::from_leaves(
            &Leaves {
                features: Features(0),
                ..l
            },
            1,
            false
        ),
        Offer::default()
    );
}

/// How the fake host publishes the pvclock.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Clock {
    Good,
    StuckOdd,
    Never,
    ZeroScale,
    NotStable,
    /// A scale for a 1 kHz TSC (lying-hypervisor matrix).
    AbsurdScale,
}

/// A fake KVM: accepts or refuses MSR writes, writes the areas into the
/// lent page as KVM would, answers hypercalls.
struct Host {
    page: SharedPage,
    clock: Clock,
    steal_written: bool,
    refuse: Vec<u32>,
    hypercall_rc: i64,
    writes: Vec<(u32, u64)>,
    calls: Vec<(u64, [u64; 4])>,
}

impl Host {
    fn new(page: SharedPage) -> Host {
        Host {
            page,
            clock: Clock::Good,
            steal_written: true,
            refuse: Vec::new(),
            hypercall_rc: 0,
            writes: Vec::new(),
            calls: Vec::new(),
        }
    }

    fn write_at(&self, gpa: u64, bytes: &[u8]) {
        let off = (gpa - self.page.phys) as usize;
        assert!(off + bytes.len() <= 4096);
        // SAFETY: inside the leaked test page.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.page.virt.as_ptr().add(off),
                bytes.len(),
            )
        };
    }
}

impl Hw for Host {
    fn write_msr(&mut self, index: u32, value: u64) -> Result<(), &'static str> {
        if self.refuse.contains(&index) {
            return Err("WRMSR raised #GP");
        }
        self.writes.push((index, value));
        let gpa = value & !63 & !3;
        if value & m::ENABLED == 0 {
            return Ok(());
        }
        match index {
            m::SYSTEM_TIME_NEW | m::SYSTEM_TIME => {
                let khz = if self.clock == Clock::AbsurdScale {
                    1
                } else {
                    2_500_000
                };
                let (mul, shift) = time_scale(khz).unwrap();
                let t = VcpuTimeInfo {
                    version: match self.clock {
                        Clock::StuckOdd => 3,
                        Clock::Never => 0,
                        _ => 2,
                    },
                    tsc_timestamp: 0,
                    system_time: 0,
                    tsc_to_system_mul: if self.clock == Clock::ZeroScale {
                        0
                    } else {
                        mul
                    },
                    tsc_shift: shift,
                    flags: if self.clock == Clock::NotStable {
                        0
                    } else {
                        FLAG_TSC_STABLE
                    },
                    ..Default::default()
                };
                if self.clock != Clock::Never {
                    self.write_at(value & !3 & !1, t.as_bytes());
                }
            }
            m::STEAL_TIME if self.steal_written => {
                let st = StealTime {
                    steal: 1000,
                    version: 2,
                    ..Default::default()
                };
                self.write_at(gpa, st.as_bytes());
            }
            _ => {}
        }
        Ok(())
    }

    fn hypercall(&mut self, nr: u64, a: [u64; 4]) -> i64 {
        self.calls.push((nr, a));
        self.hypercall_rc
    }
}

/// The offer for a two-CPU kernel (so that PV IPIs are in).
fn offer() -> Offer {
    Offer::from_leaves(&leaves(), 2, false)
}

fn leaves() -> Leaves {
    Leaves {
        base: 0x4000_0000,
        features: Features(QEMU_FEATURES),
        hints: Hints(0),
    }
}

/// Runs the setup against `host` (built by `tweak`), returning the patch's
/// owned entries, the state and the log.
fn run(tweak: impl FnOnce(&mut Host)) -> (Vec<&'static str>, &'static State, Vec<String>, Host) {
    let mut pages = Pages::new(1);
    let page = pages.alloc_shared_page().unwrap();
    let mut host = Host::new(page);
    tweak(&mut host);
    let state: &'static State = Box::leak(Box::new(State::new()));
    let mut patch = Patch::new("kvm");
    let ((), logs) = capture_logs(|| {
        setup(
            &mut host,
            &leaves(),
            &offer(),
            Some(page),
            None,
            &mut patch,
            state,
        )
    });
    let owned = patch.replaced().map(|e| e.name()).collect();
    (owned, state, logs, host)
}

fn logged(logs: &[String], text: &str) -> bool {
    logs.iter().any(|l| l.contains(text))
}

const ALL_OWNED: [&str; 10] = [
    "cpu.io_delay",
    "irq.eoi",
    "irq.send_ipi_mask",
    "time.tsc_frequency",
    "time.monotonic_ns",
    "time.steal_ns",
    "lock.wait",
    "lock.kick",
    "lock.vcpu_is_preempted",
    "mmu.flush_remote",
];

fn sorted(mut v: Vec<&'static str>) -> Vec<&'static str> {
    v.sort_unstable();
    v
}

#[test]
fn everything_offered_is_owned() {
    let (owned, state, _, host) = run(|_| {});
    assert_eq!(sorted(owned), sorted(ALL_OWNED.to_vec()));
    let gpa = host.page.phys;
    assert_eq!(
        host.writes,
        vec![
            (m::SYSTEM_TIME_NEW, gpa | 1),
            (m::STEAL_TIME, (gpa + 64) | 1),
            (m::PV_EOI_EN, (gpa + 128) | 1),
        ]
    );
    assert_eq!(host.calls, vec![(hc::SEND_IPI, [0, 0, 0, 0xff])]);
    assert!(state.stable.load(Ordering::Relaxed));
    assert!(state.tsc_frequency().khz.abs_diff(2_500_000) <= 1);
    assert_eq!(state.tsc_frequency().source, TscSource::Pvclock);
    assert_eq!(state.steal_ns(), 1000);
    // The clock runs (from TSC 0 at system time 0 at 2.5 GHz).
    let a = state.clock_ns();
    let b = state.clock_ns();
    assert!(a > 0 && b >= a);
}

#[test]
fn bad_input_kvmclock_never_valid() {
    for (mode, why) in [
        (Clock::Never, "never written"),
        (Clock::StuckOdd, "stuck odd"),
        (Clock::ZeroScale, "TSC scale is 0"),
        (Clock::AbsurdScale, "implausible frequency"),
    ] {
        let (owned, state, logs, host) = run(|h| h.clock = mode);
        assert!(!owned.contains(&"time.monotonic_ns"), "{mode:?}");
        assert!(!owned.contains(&"time.tsc_frequency"), "{mode:?}");
        assert!(owned.contains(&"time.steal_ns"), "other entries kept");
        assert!(logged(&logs, why), "{mode:?}: {logs:?}");
        assert!(logged(
            &logs,
            "time.monotonic_ns and time.tsc_frequency stays native"
        ));
        // The area is switched off again.
        assert_eq!(host.writes[1], (m::SYSTEM_TIME_NEW, 0));
        assert!(state.clock.get().is_none());
    }
}

#[test]
fn unstable_pvclock_is_kept_monotonic() {
    let (owned, state, logs, _) = run(|h| h.clock = Clock::NotStable);
    assert!(owned.contains(&"time.monotonic_ns"));
    assert!(!state.stable.load(Ordering::Relaxed));
    assert!(logged(&logs, "kept monotonic in software"));
    // A reading below the last one is not returned.
    state.last_ns.store(u64::MAX - 1, Ordering::Relaxed);
    assert_eq!(state.clock_ns(), u64::MAX - 1);
}

/// Lying-hypervisor matrix: a stable-marked pvclock that goes backwards
/// loses its stable bit and is kept monotonic from then on.
#[test]
fn stable_pvclock_going_backwards_loses_the_stable_bit() {
    let (_, state, _, _) = run(|h| h.clock = Clock::Good);
    assert!(state.stable.load(Ordering::Relaxed));
    state.last_ns.store(u64::MAX - 1, Ordering::Relaxed);
    let ((), logs) = capture_logs(|| assert_eq!(state.clock_ns(), u64::MAX - 1));
    assert!(!state.stable.load(Ordering::Relaxed));
    assert!(logged(&logs, "went backwards"), "{logs:?}");
}

#[test]
fn bad_input_steal_time_never_written() {
    let (owned, state, logs, host) = run(|h| h.steal_written = false);
    assert!(!owned.contains(&"time.steal_ns"));
    assert!(logged(&logs, "steal-time area never written"), "{logs:?}");
    assert!(host.writes.contains(&(m::STEAL_TIME, 0)));
    assert!(state.steal.get().is_none());
}

#[test]
fn bad_input_steal_time_going_backwards() {
    let (owned, state, _, host) = run(|_| {});
    assert!(owned.contains(&"time.steal_ns"));
    assert_eq!(state.steal_ns(), 1000);
    let st = StealTime {
        steal: 400,
        version: 4,
        ..Default::default()
    };
    host.write_at(host.page.phys + 64, st.as_bytes());
    let (v, logs) = capture_logs(|| state.steal_ns());
    assert_eq!(v, 1000, "never backwards");
    assert!(logged(&logs, "steal time went backwards"), "{logs:?}");
    // Frozen from then on, even when the host moves on.
    let st = StealTime {
        steal: 5000,
        version: 6,
        ..Default::default()
    };
    host.write_at(host.page.phys + 64, st.as_bytes());
    assert_eq!(state.steal_ns(), 1000);
}

#[test]
fn pv_eoi_skips_the_write_only_when_the_host_set_the_flag() {
    let (_, state, _, host) = run(|_| {});
    let word = shared::at::<u32>(host.page.virt.as_ptr(), shared::PV_EOI_OFFSET);
    let mut native = 0;
    // SAFETY: the test page's PV EOI word.
    unsafe { word.write_volatile(abi::PV_EOI_ENABLED) };
    state.eoi(|| native += 1, || panic!("not disabled"));
    assert_eq!(native, 0, "flag set: no EOI write");
    // SAFETY: as above.
    assert_eq!(unsafe { word.read_volatile() }, 0, "flag cleared");
    state.eoi(|| native += 1, || panic!("not disabled"));
    assert_eq!(native, 1, "flag clear: EOI written");
    assert_eq!(state.summary().unwrap().eoi_skipped, 1);
}

#[test]
fn bad_input_pv_eoi_word_never_written() {
    let (owned, state, _, _) = run(|_| {});
    assert!(owned.contains(&"irq.eoi"));
    let mut native = 0;
    let mut disabled = 0;
    let ((), logs) = capture_logs(|| {
        for _ in 0..PV_EOI_PATIENCE + 10 {
            state.eoi(|| native += 1, || disabled += 1);
        }
    });
    assert_eq!(native, PV_EOI_PATIENCE + 10, "every EOI written");
    assert_eq!(disabled, 1);
    assert!(logged(&logs, "never set the PV EOI flag"), "{logs:?}");
    assert!(state.eoi_word.get().is_none());
}

#[test]
fn refused_msrs_fall_back_per_entry() {
    let (owned, _, logs, _) = run(|h| h.refuse = vec![m::PV_EOI_EN]);
    assert!(!owned.contains(&"irq.eoi"));
    assert!(owned.contains(&"time.monotonic_ns") && owned.contains(&"time.steal_ns"));
    assert!(
        logged(&logs, "irq.eoi stays native: WRMSR raised #GP"),
        "{logs:?}"
    );
    let (owned, _, _, _) = run(|h| h.refuse = vec![m::SYSTEM_TIME_NEW, m::STEAL_TIME]);
    assert!(!owned.contains(&"time.monotonic_ns") && !owned.contains(&"time.steal_ns"));
    assert!(owned.contains(&"irq.eoi"));
}

#[test]
fn hypercalls_answering_enosys_keep_native_ipis() {
    let (owned, _, logs, _) = run(|h| h.hypercall_rc = -abi::err::ENOSYS);
    assert!(!owned.contains(&"irq.send_ipi_mask"));
    assert!(logged(&logs, "-KVM_ENOSYS"), "{logs:?}");
}

#[test]
fn hidden_features_are_not_touched() {
    let mut pages = Pages::new(1);
    let page = pages.alloc_shared_page().unwrap();
    let mut host = Host::new(page);
    let l = Leaves {
        features: Features(0),
        ..leaves()
    };
    let state: &'static State = Box::leak(Box::new(State::new()));
    let mut patch = Patch::new("kvm");
    setup(
        &mut host,
        &l,
        &Offer::from_leaves(&l, 1, false),
        Some(page),
        None,
        &mut patch,
        state,
    );
    assert_eq!(patch.replaced().count(), 0);
    assert!(host.writes.is_empty() && host.calls.is_empty());
}

#[test]
fn one_cpu_makes_no_hypercall() {
    let mut pages = Pages::new(1);
    let page = pages.alloc_shared_page().unwrap();
    let mut host = Host::new(page);
    let state: &'static State = Box::leak(Box::new(State::new()));
    let mut patch = Patch::new("kvm");
    setup(
        &mut host,
        &leaves(),
        &Offer::from_leaves(&leaves(), 1, false),
        Some(page),
        None,
        &mut patch,
        state,
    );
    assert!(host.calls.is_empty());
    // Nothing that needs another CPU: no PV IPI, PV spinlocks, preempted
    // query or PV TLB flush (kvm.c gates them all on num_possible_cpus()).
    for smp_only in [
        "irq.send_ipi_mask",
        "lock.wait",
        "lock.kick",
        "lock.vcpu_is_preempted",
        "mmu.flush_remote",
    ] {
        assert!(
            !patch.replaced().any(|e| e.name() == smp_only),
            "{smp_only}"
        );
    }
    assert_eq!(patch.replaced().count(), ALL_OWNED.len() - 5);
}

#[test]
fn timing_leaf_wins_for_the_frequency() {
    let mut pages = Pages::new(1);
    let page = pages.alloc_shared_page().unwrap();
    let mut host = Host::new(page);
    let state: &'static State = Box::leak(Box::new(State::new()));
    let mut patch = Patch::new("kvm");
    setup(
        &mut host,
        &leaves(),
        &offer(),
        Some(page),
        Some(2_500_000),
        &mut patch,
        state,
    );
    let f = state.tsc_frequency();
    assert_eq!((f.khz, f.source), (2_500_000, TscSource::TimingLeaf));
    assert!(
        state
            .pvclock_khz
            .load(Ordering::Relaxed)
            .abs_diff(2_500_000)
            <= 1
    );
}

#[test]
fn each_ap_registers_its_own_areas_and_falls_back_alone() {
    let (_, state, _, _) = run(|_| {});
    let mut pages = Pages::new(2);
    // AP 1: its own kvmclock, steal-time area and PV EOI word, in its page.
    let p1 = pages.alloc_shared_page().unwrap();
    let mut h1 = Host::new(p1);
    let mut fb = Fallbacks::default();
    setup_cpu(
        &mut h1,
        crate::Cpu {
            index: 1,
            apic_id: 1,
        },
        Some(p1),
        &mut fb,
        state,
    );
    assert!(fb.is_empty(), "{:?}", fb.iter().collect::<Vec<_>>());
    let ap = &state.aps[1];
    assert!(ap.clock.get().is_some() && ap.steal.get().is_some() && ap.eoi_word.get().is_some());
    assert_ne!(ap.clock.get(), state.clock.get());
    let msrs: Vec<u32> = h1.writes.iter().map(|w| w.0).collect();
    assert_eq!(msrs, [m::SYSTEM_TIME_NEW, m::STEAL_TIME, m::PV_EOI_EN]);
    assert!(h1.writes.iter().all(|&(_, v)| v & !0xfff == p1.phys));
    // AP 2: the host refuses PV EOI there and never writes its steal
    // area: those two run native on AP 2 only, with the reasons.
    let p2 = pages.alloc_shared_page().unwrap();
    let mut h2 = Host::new(p2);
    h2.refuse = vec![m::PV_EOI_EN];
    h2.steal_written = false;
    let mut fb2 = Fallbacks::default();
    setup_cpu(
        &mut h2,
        crate::Cpu {
            index: 2,
            apic_id: 2,
        },
        Some(p2),
        &mut fb2,
        state,
    );
    let entries: Vec<&str> = fb2.iter().map(|(e, _)| e).collect();
    assert_eq!(entries, ["time.steal_ns", "irq.eoi"]);
    assert!(fb2.iter().all(|(_, why)| !why.is_empty()));
    let ap2 = &state.aps[2];
    assert!(ap2.clock.get().is_some() && ap2.steal.get().is_none() && ap2.eoi_word.get().is_none());
    // The boot CPU and AP 1 are untouched.
    assert!(state.eoi_word.get().is_some() && state.aps[1].eoi_word.get().is_some());
    // AP 3 without a page: every per-CPU entry falls back.
    let mut h3 = Host::new(p2);
    let mut fb3 = Fallbacks::default();
    setup_cpu(
        &mut h3,
        crate::Cpu {
            index: 3,
            apic_id: 3,
        },
        None,
        &mut fb3,
        state,
    );
    assert_eq!(fb3.len(), 3);
    assert!(h3.writes.is_empty());
}

#[test]
fn pv_tlb_flush_flags_only_preempted_vcpus() {
    let mut st = StealTime {
        preempted: abi::VCPU_PREEMPTED,
        ..Default::default()
    };
    assert!(shared::flag_flush_if_preempted(&mut st));
    assert_eq!(st.preempted, abi::VCPU_PREEMPTED | abi::VCPU_FLUSH_TLB);
    let mut running = StealTime::default();
    assert!(!shared::flag_flush_if_preempted(&mut running));
    assert_eq!(running.preempted, 0);
}

/// Several CPUs, honest stable host: a value another CPU publishes after
/// this reading's TSC was taken is not a step back (the stable bit stays,
/// nothing is logged).
#[test]
fn a_later_reading_of_another_cpu_is_not_a_lie() {
    let (_, state, _, _) = run(|h| h.clock = Clock::Good);
    assert!(state.stable.load(Ordering::Relaxed));
    let (v, logs) = capture_logs(|| {
        state.clock_ns_with(
            HOT_TRIES,
            || {
                // Another CPU reads later and publishes while this one is
                // between its TSC read and its check.
                state.last_ns.store(u64::MAX / 2, Ordering::Relaxed);
                1_000
            },
            || {},
        )
    });
    assert!(v < u64::MAX / 2);
    assert!(state.stable.load(Ordering::Relaxed), "{logs:?}");
    assert!(!logged(&logs, "went backwards"), "{logs:?}");
}
