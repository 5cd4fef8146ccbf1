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
    /// More lent pages the host may write into (a second group of CPUs).
    more: Vec<SharedPage>,
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
            more: Vec::new(),
            clock: Clock::Good,
            steal_written: true,
            refuse: Vec::new(),
            hypercall_rc: 0,
            writes: Vec::new(),
            calls: Vec::new(),
        }
    }

    fn write_at(&self, gpa: u64, bytes: &[u8]) {
        let page = core::iter::once(&self.page)
            .chain(&self.more)
            .find(|p| (p.phys..p.phys + 4096).contains(&gpa))
            .expect("a GPA of a lent page");
        let off = (gpa - page.phys) as usize;
        assert!(off + bytes.len() <= 4096);
        // SAFETY: inside the leaked test page.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), page.virt.as_ptr().add(off), bytes.len())
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

    fn boot_apic_id(&mut self) -> u32 {
        0
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

/// What a one-CPU kernel's backend owns.
const ONE_CPU_OWNED: [&str; 5] = [
    "cpu.io_delay",
    "irq.eoi",
    "time.tsc_frequency",
    "time.monotonic_ns",
    "time.steal_ns",
];

/// What a kernel of several CPUs' backend owns on QEMU's features.
const ALL_OWNED: [&str; 10] = [
    "cpu.io_delay",
    "irq.eoi",
    "irq.send_ipi_mask",
    "time.tsc_frequency",
    "time.monotonic_ns",
    "time.steal_ns",
    "mmu.flush_remote",
    "lock.wait",
    "lock.kick",
    "lock.vcpu_is_preempted",
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
            (m::SYSTEM_TIME_NEW, (gpa + 2048) | 1),
            (m::STEAL_TIME, gpa | 1),
            (m::PV_EOI_EN, (gpa + 3072) | 1),
        ]
    );
    assert_eq!(
        host.calls,
        vec![
            (hc::SEND_IPI, [0, 0, 0, 0xff]),
            (hc::KICK_CPU, [0, 0, 0, 0])
        ]
    );
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
        assert!(state.cpus[0].clock.get().is_none());
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
    state.cpus[0].last_ns.store(u64::MAX - 1, Ordering::Relaxed);
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
    assert!(state.cpus[0].steal.get().is_none());
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
    host.write_at(host.page.phys + shared::STEAL_OFFSET as u64, st.as_bytes());
    let (v, logs) = capture_logs(|| state.steal_ns());
    assert_eq!(v, 1000, "never backwards");
    assert!(logged(&logs, "steal time went backwards"), "{logs:?}");
    // Frozen from then on, even when the host moves on.
    let st = StealTime {
        steal: 5000,
        version: 6,
        ..Default::default()
    };
    host.write_at(host.page.phys + shared::STEAL_OFFSET as u64, st.as_bytes());
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
    assert!(
        logged(&logs, "never set the PV EOI flag of CPU 0"),
        "{logs:?}"
    );
    assert!(state.cpus[0].eoi_word.get().is_none());
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
    let owned: Vec<&str> = patch.replaced().map(|e| e.name()).collect();
    assert_eq!(sorted(owned), sorted(ONE_CPU_OWNED.to_vec()));
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

// ---------------------------------------------------------------------------
// Several CPUs (issue 13)
// ---------------------------------------------------------------------------

/// Sets up AP `cpu` against its own fake KVM (`tweak`ed), lending `more`
/// pages when asked; returns the fallbacks, the log and the host.
fn run_ap(
    state: &'static State,
    boot: &Host,
    cpu: usize,
    more: &mut Pages,
    tweak: impl FnOnce(&mut Host),
) -> (Fallbacks, Vec<String>, Host) {
    let mut host = Host::new(boot.page);
    tweak(&mut host);
    // A page for a new group, lent when asked (the host knows every lent
    // page, as KVM knows guest memory).
    let mut page = if state.page_of(cpu).is_none() {
        more.alloc_shared_page()
    } else {
        None
    };
    host.more.extend(more.given.iter().copied());
    let mut fb = Fallbacks::default();
    let ((), logs) =
        capture_logs(|| setup_cpu(&mut host, cpu, &mut || page.take(), &mut fb, state));
    (fb, logs, host)
}

fn set_preempted(state: &State, cpu: usize, v: u8) {
    let st = state.cpus[cpu].steal.get().expect("a steal-time area");
    // SAFETY: the leaked test page's steal-time area of `cpu`.
    unsafe { AtomicU8::from_ptr(core::ptr::addr_of_mut!((*st).preempted)) }
        .store(v, Ordering::SeqCst);
}

fn preempted_of(state: &State, cpu: usize) -> u8 {
    shared::read_preempted(&state.cpus[cpu].steal).unwrap()
}

#[test]
fn every_ap_registers_its_own_areas() {
    let (_, state, _, boot) = run(|_| {});
    let mut more = Pages::new(0);
    for cpu in 1..4 {
        let (fb, _, host) = run_ap(state, &boot, cpu, &mut more, |_| {});
        assert!(
            fb.is_empty(),
            "cpu {cpu}: {:?}",
            fb.iter().collect::<Vec<_>>()
        );
        let gpa = boot.page.phys;
        let c = cpu as u64;
        assert_eq!(
            host.writes,
            vec![
                (m::SYSTEM_TIME_NEW, (gpa + 2048 + 32 * c) | 1),
                (m::STEAL_TIME, (gpa + 64 * c) | 1),
                (m::PV_EOI_EN, (gpa + 3072 + 4 * c) | 1),
            ],
            "cpu {cpu}: its own areas in the boot CPU's page"
        );
        assert!(state.cpus[cpu].own_clock.load(Ordering::Relaxed));
        assert_ne!(state.cpus[cpu].clock.get(), state.cpus[0].clock.get());
        assert!(state.clock_ns_on(cpu, HOT_TRIES, || 5_000, || {}) > 0);
        assert_eq!(state.steal_ns_on(cpu), 1000);
    }
    let s = state.summary().unwrap();
    assert_eq!(
        (s.cpus, s.clock_cpus, s.steal_cpus, s.eoi_cpus),
        (4, 4, 4, 4)
    );
    assert!(s.pv_tlb_flush && s.pv_spinlocks && s.vcpu_is_preempted && s.offer.smp);
    // One CPU's PV EOI flag is its own: CPU 2's does not skip CPU 1's EOI.
    let w2 = state.cpus[2].eoi_word.get().unwrap();
    // SAFETY: the leaked test page's PV EOI word of CPU 2.
    unsafe { w2.write_volatile(abi::PV_EOI_ENABLED) };
    let mut native = 0;
    state.eoi_on(1, || native += 1, || {});
    assert_eq!(native, 1, "CPU 1 had no flag: EOI written");
    state.eoi_on(2, || native += 1, || panic!("not disabled"));
    assert_eq!(native, 1, "CPU 2's flag: skipped");
}

#[test]
fn an_ap_whose_setup_fails_falls_back_on_that_cpu_only() {
    let (_, state, _, boot) = run(|_| {});
    let mut more = Pages::new(0);
    let (fb, logs, host) = run_ap(state, &boot, 1, &mut more, |h| {
        h.clock = Clock::Never;
        h.refuse = vec![m::STEAL_TIME, m::PV_EOI_EN];
    });
    let entries: Vec<_> = fb.iter().collect();
    assert_eq!(
        entries,
        vec![
            (
                "time.monotonic_ns",
                "kvmclock area never written by the host (version 0)"
            ),
            ("time.steal_ns", "WRMSR raised #GP"),
            ("irq.eoi", "WRMSR raised #GP"),
        ]
    );
    assert!(
        logged(&logs, "cpu 1: irq.eoi runs native on this CPU"),
        "{logs:?}"
    );
    assert!(
        logged(
            &logs,
            "reads the boot CPU's kvmclock with its own TSC (stable: exact)"
        ),
        "{logs:?}"
    );
    // The refused clock area is switched off again.
    assert_eq!(host.writes.last(), Some(&(m::SYSTEM_TIME_NEW, 0)));
    // CPU 1 reads the boot CPU's pvclock, has no steal time and is never
    // seen preempted, and writes its EOIs; CPU 0 keeps everything.
    assert!(!state.cpus[1].own_clock.load(Ordering::Relaxed));
    assert_eq!(state.cpus[1].clock.get(), state.cpus[0].clock.get());
    let t = state.clock_ns_on(1, HOT_TRIES, || 2_500_000, || {});
    assert_eq!(t, state.clock_ns_on(0, HOT_TRIES, || 2_500_000, || {}));
    assert_eq!(state.steal_ns_on(1), 0);
    assert!(!state.is_preempted(1));
    let mut native = 0;
    state.eoi_on(1, || native += 1, || panic!("no PV EOI on CPU 1"));
    assert_eq!(native, 1);
    assert_eq!(state.steal_ns_on(0), 1000);
    let s = state.summary().unwrap();
    assert_eq!(
        (s.cpus, s.clock_cpus, s.steal_cpus, s.eoi_cpus),
        (2, 1, 1, 1)
    );
}

#[test]
fn the_second_group_of_32_cpus_gets_its_own_page() {
    let (_, state, _, boot) = run(|_| {});
    // Fake GPAs start at 0x10_0000 per `Pages`: skip the boot page's.
    let mut more = Pages::new(2);
    more.alloc_shared_page();
    more.given.clear();
    let (fb, _, host) = run_ap(state, &boot, 33, &mut more, |_| {});
    assert!(fb.is_empty(), "{:?}", fb.iter().collect::<Vec<_>>());
    let second = more.given[0].phys;
    assert_ne!(second, boot.page.phys);
    assert_eq!(
        host.writes,
        vec![
            (m::SYSTEM_TIME_NEW, (second + 2048 + 32) | 1),
            (m::STEAL_TIME, (second + 64) | 1),
            (m::PV_EOI_EN, (second + 3072 + 4) | 1),
        ]
    );
    // CPU 40 shares it; no page for a third group is asked for.
    let (fb, _, host) = run_ap(state, &boot, 40, &mut more, |_| {});
    assert!(fb.is_empty());
    assert_eq!(host.writes[1], (m::STEAL_TIME, (second + 64 * 8) | 1));
}

#[test]
fn an_ap_without_a_page_falls_back_for_every_area() {
    let (_, state, _, boot) = run(|_| {});
    let mut none = Pages::new(0);
    let (fb, _, host) = run_ap(state, &boot, 32, &mut none, |_| {});
    assert_eq!(fb.len(), 3);
    assert!(fb
        .iter()
        .all(|(_, why)| why.starts_with("no page for this CPU's")));
    assert!(
        host.writes.is_empty(),
        "no MSR names a page it does not have"
    );
    assert_eq!(state.cpus[32].clock.get(), state.cpus[0].clock.get());
}

#[test]
fn pv_tlb_flush_flags_preempted_cpus_and_interrupts_the_rest() {
    let (_, state, _, boot) = run(|_| {});
    let mut more = Pages::new(0);
    for cpu in 1..4 {
        run_ap(state, &boot, cpu, &mut more, |_| {});
    }
    set_preempted(state, 0, abi::VCPU_PREEMPTED); // the sender itself
    set_preempted(state, 1, abi::VCPU_PREEMPTED);
    set_preempted(state, 2, 0); // running
    set_preempted(state, 3, abi::VCPU_PREEMPTED);
    // APIC IDs are twice the index here; APIC ID 10 is unknown.
    let index_of = |apic: u32| (apic % 2 == 0 && apic < 8).then_some(apic as usize / 2);
    let mask = 0b100_0101_0101; // APIC IDs 0, 2, 4, 6, 10
    let rest = state.flag_preempted(mask, Some(0), index_of);
    assert_eq!(
        rest, 0b100_0001_0001,
        "self, the running CPU 2 and the unknown ID stay"
    );
    assert_eq!(
        preempted_of(state, 1),
        abi::VCPU_PREEMPTED | abi::VCPU_FLUSH_TLB
    );
    assert_eq!(
        preempted_of(state, 3),
        abi::VCPU_PREEMPTED | abi::VCPU_FLUSH_TLB
    );
    assert_eq!(preempted_of(state, 2), 0, "a running vCPU is not flagged");
    assert_eq!(
        preempted_of(state, 0),
        abi::VCPU_PREEMPTED,
        "the sender flushes itself"
    );
    // The host ran CPU 1 again (cleared the byte): interrupted next time.
    set_preempted(state, 1, 0);
    assert_eq!(state.flag_preempted(0b100, Some(0), index_of), 0b100);
    let s = state.summary().unwrap();
    assert_eq!((s.tlb_flushes, s.tlb_flagged), (2, 2));
}

#[test]
fn vcpu_is_preempted_reads_the_target_cpus_flag() {
    let (_, state, _, boot) = run(|_| {});
    let mut more = Pages::new(0);
    run_ap(state, &boot, 1, &mut more, |_| {});
    assert!(!state.is_preempted(1));
    set_preempted(state, 1, abi::VCPU_PREEMPTED);
    assert!(state.is_preempted(1) && !state.is_preempted(0));
    assert!(!state.is_preempted(2), "no area: never preempted");
    assert!(!state.is_preempted(MAX_CPUS + 3));
}

#[test]
fn the_lock_group_kicks_by_apic_id_and_is_gated() {
    assert_eq!(kick_args(7), [0, 7, 0, 0]);
    let (owned, _, _, host) = run(|_| {});
    assert!(owned.contains(&"lock.wait") && owned.contains(&"lock.kick"));
    assert!(
        host.calls.contains(&(hc::KICK_CPU, kick_args(0))),
        "the probe kick"
    );
    // A host whose KICK_CPU fails: a halted waiter would never wake.
    let (owned, _, logs, _) = run(|h| h.hypercall_rc = -abi::err::ENOSYS);
    assert!(!owned.contains(&"lock.wait") && !owned.contains(&"lock.kick"));
    assert!(
        owned.contains(&"lock.vcpu_is_preempted"),
        "steal time still works"
    );
    assert!(logged(
        &logs,
        "lock.wait and lock.kick stays native: KVM_HC_KICK_CPU failed"
    ));
    // REALTIME hint: neither PV spinlocks nor PV TLB flush.
    let l = Leaves {
        hints: Hints::REALTIME,
        ..leaves()
    };
    let o = Offer::from_leaves(&l, 4, false);
    assert!(!o.pv_spinlocks && !o.pv_tlb_flush && o.pv_ipi);
}

#[test]
fn without_steal_time_no_pv_tlb_flush_nor_preempted_flag() {
    let (owned, _, logs, _) = run(|h| h.refuse = vec![m::STEAL_TIME]);
    assert!(!owned.contains(&"mmu.flush_remote"));
    assert!(!owned.contains(&"lock.vcpu_is_preempted"));
    assert!(owned.contains(&"lock.wait"));
    assert!(
        logged(&logs, "mmu.flush_remote stays native: no steal-time area"),
        "{logs:?}"
    );
}
