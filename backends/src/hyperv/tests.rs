//! Host tests: detection matrix, selection with stacked interfaces, and the
//! setup's per-entry fallbacks against a fake hypervisor.

use super::*;
use crate::select::select_from;
use crate::test_support::{sig, with_env, Pages, FAKE_KVM};
use pvops_probe::CpuidResult;
use std::collections::HashMap;

/// A CPUID table: Hyper-V at 0x4000_0000 (values like the spec-built
/// `probe/tests/dumps/hyperv.txt`), optionally KVM stacked at 0x4000_0100.
#[derive(Clone)]
struct Cpu {
    leaves: HashMap<u32, CpuidResult>,
}

impl Cpu {
    fn hyperv() -> Cpu {
        let mut leaves = HashMap::new();
        let r = |eax, ebx, ecx, edx| CpuidResult { eax, ebx, ecx, edx };
        let (b, c, d) = sig(b"GenuineIntel");
        leaves.insert(0, r(0xd, b, d, c));
        leaves.insert(1, r(0, 0, 1 << 31, 0));
        let (b, c, d) = sig(b"Microsoft Hv");
        leaves.insert(0x4000_0000, r(0x4000_000A, b, c, d));
        leaves.insert(0x4000_0001, r(cpuid::HV1, 0, 0, 0));
        leaves.insert(0x4000_0002, r(0x4F7C, 0x000A_0000, 0, 0));
        leaves.insert(0x4000_0003, r(0x2E7F, 0xB0, 0, 0x0008_0500));
        leaves.insert(0x4000_0004, r(0x0E2C, 0xFFF, 0, 0));
        leaves.insert(0x4000_0005, r(0x800, 0x200, 0, 0));
        Cpu { leaves }
    }

    /// QEMU/KVM with hv-* flags: KVM's own signature at 0x4000_0100
    /// (like `probe/tests/dumps/kvm-hyperv.txt`).
    fn kvm_hyperv() -> Cpu {
        let mut c = Cpu::hyperv();
        c.set(0x4000_0003, 0x0262, 0, 0, 0);
        c.set(0x4000_0004, 0x0224, 0xFFFF_FFFF, 0, 0);
        let (b, cc, d) = sig(b"KVMKVMKVM\0\0\0");
        c.set(0x4000_0100, 0x4000_0101, b, cc, d);
        c.set(0x4000_0101, 0x0100_7EFB, 0, 0, 0);
        c
    }

    fn set(&mut self, leaf: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) {
        self.leaves.insert(leaf, CpuidResult { eax, ebx, ecx, edx });
    }
}

impl pvops_probe::CpuidSource for Cpu {
    fn cpuid(&self, leaf: u32, _subleaf: u32) -> CpuidResult {
        self.leaves.get(&leaf).copied().unwrap_or_default()
    }
}

#[test]
fn detects_a_conforming_hyperv() {
    with_env(&Cpu::hyperv(), |env| {
        let d = HYPERV.detect(env).expect("detected");
        assert_eq!(d.priority, 0x4000_0000);
        assert_eq!(d.base, Some(0x4000_0000));
    });
}

#[test]
fn detection_matrix() {
    type Edit = (&'static str, fn(&mut Cpu));
    let cases: [Edit; 6] = [
        ("no hypervisor bit", |c| c.set(1, 0, 0, 0, 0)),
        ("no Hv#1", |c| c.set(0x4000_0001, 0x3023_7648, 0, 0, 0)),
        ("max leaf below 5", |c| {
            let (b, cc, d) = sig(b"Microsoft Hv");
            c.set(0x4000_0000, 0x4000_0004, b, cc, d)
        }),
        ("no hypercall privilege", |c| {
            c.set(0x4000_0003, 0x2E7F & !0x20, 0, 0, 0)
        }),
        ("no VP index privilege", |c| {
            c.set(0x4000_0003, 0x2E7F & !0x40, 0, 0, 0)
        }),
        ("other signature", |c| {
            let (b, cc, d) = sig(b"XenVMMXenVMM");
            c.set(0x4000_0000, 0x4000_0005, b, cc, d)
        }),
    ];
    for (name, edit) in cases {
        let mut cpu = Cpu::hyperv();
        edit(&mut cpu);
        with_env(&cpu, |env| assert_eq!(HYPERV.detect(env), None, "{name}"));
    }
}

#[test]
fn offer_decoding() {
    let l = with_env(&Cpu::hyperv(), |env| check(env).unwrap());
    let o = Offer::from_leaves(&l);
    assert_eq!(
        o,
        Offer {
            reference_counter: true,
            tsc_page: true,
            frequencies: true,
            stimer_direct: true,
            apic_msrs: true,
            remote_flush: true,
            cluster_ipi: true,
            crash_msrs: true,
            ex_processor_masks: true,
            spin_notify: Some(0xFFF),
        }
    );
    // KVM's hv-* defaults here: counter, TSC page, no frequencies, no timer.
    let l = with_env(&Cpu::kvm_hyperv(), |env| check(env).unwrap());
    let o = Offer::from_leaves(&l);
    assert!(o.reference_counter && o.tsc_page);
    assert!(!o.frequencies && !o.stimer_direct && !o.crash_msrs);
    assert!(!o.apic_msrs, "hint bit 3 set but no AccessIntrCtrlRegs");
    // The TSC page alone is not used without the counter to fall back on.
    let mut l2 = l;
    l2.privileges = Privileges::PARTITION_REFERENCE_TSC;
    assert!(!Offer::from_leaves(&l2).tsc_page);
}

static WITH_KVM: &[&dyn Backend] = &[&HYPERV, &FAKE_KVM, &crate::native::NATIVE];
static HYPERV_ONLY: &[&dyn Backend] = &[&HYPERV, &crate::native::NATIVE];

#[test]
fn stacked_kvm_backend_wins_by_priority() {
    with_env(&Cpu::kvm_hyperv(), |env| {
        assert!(HYPERV.detect(env).is_some(), "Hyper-V still detects");
        let s = select_from(WITH_KVM, env, None);
        assert_eq!(s.backend.name(), "kvm");
        assert_eq!(s.detection.priority, 0x4000_0100);
    });
}

#[test]
fn with_only_hyperv_compiled_in_a_kvm_hyperv_machine_uses_hyperv() {
    with_env(&Cpu::kvm_hyperv(), |env| {
        let s = select_from(HYPERV_ONLY, env, None);
        assert_eq!(s.backend.name(), "hyperv");
        // And on plain Hyper-V the fake KVM never detects.
    });
    with_env(&Cpu::hyperv(), |env| {
        assert_eq!(select_from(WITH_KVM, env, None).backend.name(), "hyperv");
    });
}

// ---- setup against a fake hypervisor ----

/// A fake hypervisor: MSR file, page overlays and hypercall answers.
struct FakeHv {
    msrs: HashMap<u32, u64>,
    overlay_hypercall: bool,
    tsc_sequence: u32,
    vp_assist_sticks: bool,
    hypercall_status: Status,
    apic_id: u32,
    hypercall_page: Option<u64>,
    writes: Vec<(u32, u64)>,
    /// What CPUID reads after the guest OS ID (None: the initial leaves).
    leaves_after_id: Option<Leaves>,
    /// Xen's Viridian gate: `leaves_after_id` only once an ID with bits
    /// 47:40 >= 4 was written.
    viridian_gate: bool,
    /// The TSC and its true rate (2.5 GHz unless a test says otherwise):
    /// the reference counter is derived from them, 100 ns units from
    /// `ref_base`; each counter read (an exit) costs 10 us of TSC.
    ref_base: u64,
    tsc: u64,
    true_hz: u64,
    /// TIME_REF_COUNT reads so far (the exits the frequency costs).
    ref_reads: u32,
    /// The reference counter stuck at `ref_base`.
    ref_frozen: bool,
}

impl FakeHv {
    fn new() -> FakeHv {
        let mut msrs = HashMap::new();
        msrs.insert(m::TSC_FREQUENCY, 2_500_000_000);
        msrs.insert(m::APIC_FREQUENCY, 1_000_000_000);
        msrs.insert(
            m::CRASH_CTL,
            crash_ctl::CRASH_NOTIFY | crash_ctl::CRASH_MESSAGE,
        );
        FakeHv {
            msrs,
            overlay_hypercall: true,
            tsc_sequence: 1,
            vp_assist_sticks: true,
            hypercall_status: Status::SUCCESS,
            apic_id: 0,
            hypercall_page: None,
            writes: Vec::new(),
            leaves_after_id: None,
            viridian_gate: false,
            ref_base: 1_000,
            tsc: 77,
            true_hz: 2_500_000_000,
            ref_reads: 0,
            ref_frozen: false,
        }
    }
}

impl Hw for FakeHv {
    fn rdmsr(&mut self, index: u32) -> u64 {
        if index == m::TIME_REF_COUNT {
            self.ref_reads += 1;
            self.tsc += self.true_hz / 100_000;
            if self.ref_frozen {
                return self.ref_base;
            }
            let units = u128::from(self.tsc) * 10_000_000 / u128::from(self.true_hz);
            return self.ref_base + units as u64;
        }
        self.msrs.get(&index).copied().unwrap_or(0)
    }
    fn wrmsr(&mut self, index: u32, value: u64) {
        self.writes.push((index, value));
        self.msrs.insert(index, value);
    }
    fn enable_page(&mut self, index: u32, page: &SharedPage) -> u64 {
        let value = msr::enable_value(index, self.rdmsr(index), page.phys);
        self.writes.push((index, value));
        let stored = match index {
            m::HYPERCALL if self.overlay_hypercall => {
                // The overlay: VMMCALL; RET.
                for (i, b) in abi::HYPERCALL_PAGE_SVM.into_iter().enumerate() {
                    // SAFETY: `page.virt` is a live 4 KiB test buffer.
                    unsafe { page.virt.as_ptr().add(i).write(b) };
                }
                value
            }
            m::REFERENCE_TSC => {
                let seq = self.tsc_sequence.to_le_bytes();
                for (i, b) in seq.into_iter().enumerate() {
                    // SAFETY: as above.
                    unsafe { page.virt.as_ptr().add(i).write(b) };
                }
                value
            }
            m::VP_ASSIST_PAGE if !self.vp_assist_sticks => value & !page_msr::ENABLE,
            _ => value,
        };
        self.msrs.insert(index, stored);
        stored
    }
    fn set_hypercall_page(&mut self, page: &SharedPage) {
        self.hypercall_page = Some(page.phys);
    }
    fn flush_probe(&mut self, _vp_mask: u64) -> HypercallResult {
        assert!(
            self.hypercall_page.is_some(),
            "hypercall before the page was verified"
        );
        HypercallResult::new(self.hypercall_status, 0)
    }
    fn apic_id(&self) -> u32 {
        self.apic_id
    }
    fn leaves(&mut self) -> Leaves {
        let id = self.rdmsr(m::GUEST_OS_ID);
        let open = !self.viridian_gate || (id != 0 && (id >> 40) as u8 >= 4);
        match self.leaves_after_id {
            Some(l) if open => l,
            _ => hyperv_leaves_of(&Cpu::hyperv_without_hints()),
        }
    }
    fn tsc(&mut self) -> u64 {
        self.tsc += 1;
        self.tsc
    }
    fn spin_tsc(&mut self, ticks: u64) {
        self.tsc += ticks;
    }
}

fn hyperv_leaves() -> Leaves {
    hyperv_leaves_of(&Cpu::hyperv())
}

fn hyperv_leaves_of(cpu: &Cpu) -> Leaves {
    with_env(cpu, |env| check(env).unwrap())
}

impl Cpu {
    /// Hyper-V whose leaf 4 is still empty (Xen's Viridian before an OS ID).
    fn hyperv_without_hints() -> Cpu {
        let mut c = Cpu::hyperv();
        c.set(0x4000_0004, 0, 0, 0, 0);
        c
    }
}

fn run(hv: &mut FakeHv, pages: usize) -> (Patch, Pages) {
    if hv.leaves_after_id.is_none() {
        hv.leaves_after_id = Some(hyperv_leaves());
    }
    let mut patch = Patch::new("hyperv");
    let mut platform = Pages::new(pages);
    setup(hv, &hyperv_leaves(), &mut patch, &mut platform);
    (patch, platform)
}

fn owned(patch: &Patch) -> Vec<&'static str> {
    patch.replaced().map(|e| e.name()).collect()
}

const ALL: [&str; 11] = [
    "mmu.flush_remote",
    "irq.eoi",
    "irq.send_ipi",
    "irq.send_ipi_mask",
    "time.tsc_frequency",
    "time.apic_timer_khz",
    "time.monotonic_ns",
    "time.timer_setup",
    "time.timer_arm",
    "time.timer_cancel",
    "system.report_crash",
];

#[test]
fn full_offer_owns_every_entry_in_tlfs_order() {
    let mut hv = FakeHv::new();
    hv.leaves_after_id = Some(hyperv_leaves());
    let (patch, _) = run(&mut hv, 8);
    let mut got = owned(&patch);
    got.sort();
    let mut want = ALL.to_vec();
    want.sort();
    assert_eq!(got, want);
    // Guest OS ID first, then the hypercall page (TLFS order).
    assert_eq!(hv.writes[0], (m::GUEST_OS_ID, GUEST_OS_ID.0));
    assert_eq!(hv.writes[1].0, m::HYPERCALL);
    assert!(GUEST_OS_ID.is_open_source());
    // TSC frequency from the MSR, in kHz.
    assert_eq!(TSC_KHZ.load(Ordering::Relaxed), 2_500_000);
}

#[test]
fn hypercall_page_not_overlaid_reverts_only_hypercall_entries() {
    let mut hv = FakeHv::new();
    hv.overlay_hypercall = false;
    let (patch, _) = run(&mut hv, 8);
    let got = owned(&patch);
    for e in ["mmu.flush_remote", "irq.send_ipi", "irq.send_ipi_mask"] {
        assert!(!got.contains(&e), "{e} must stay native");
    }
    for e in [
        "time.monotonic_ns",
        "irq.eoi",
        "time.timer_arm",
        "system.report_crash",
    ] {
        assert!(got.contains(&e), "{e} needs no hypercall");
    }
    assert!(hv.hypercall_page.is_none());
}

#[test]
fn hypercall_error_reverts_that_entry() {
    let mut hv = FakeHv::new();
    hv.hypercall_status = Status::ACCESS_DENIED;
    let (patch, _) = run(&mut hv, 8);
    let got = owned(&patch);
    assert!(!got.contains(&"mmu.flush_remote"));
    // No IPI probe (review F6): the IPI entries are owned and fall back
    // per call.
    assert!(got.contains(&"irq.send_ipi_mask"));
    assert!(got.contains(&"time.monotonic_ns"));
}

/// Review finding F4: the VP index is read, never assumed equal to the
/// APIC ID; the remote entries are owned and translate through the map.
#[test]
fn vp_index_other_than_apic_id_keeps_remote_entries() {
    let mut hv = FakeHv::new();
    hv.msrs.insert(m::VP_INDEX, 3);
    let (patch, _) = run(&mut hv, 8);
    let got = owned(&patch);
    assert!(got.contains(&"irq.send_ipi") && got.contains(&"mmu.flush_remote"));
}

/// A kernel with `cpus` possible CPUs that lends `pages` pages and whose
/// `gp` MSRs raise #GP.
struct Smp {
    pages: Pages,
    gp: Vec<u32>,
    cpus: usize,
}

impl Platform for Smp {
    fn alloc_shared_page(&mut self) -> Option<SharedPage> {
        self.pages.alloc_shared_page()
    }
    unsafe fn read_msr_catching_gp(&mut self, index: u32) -> Option<Result<u64, crate::MsrFault>> {
        Some(if self.gp.contains(&index) {
            Err(crate::MsrFault)
        } else {
            Ok(0)
        })
    }
    fn possible_cpus(&self) -> usize {
        self.cpus
    }
}

fn smp(pages: usize, cpus: usize) -> Smp {
    Smp {
        pages: Pages::new(pages),
        gp: Vec::new(),
        cpus,
    }
}

#[test]
fn each_ap_reads_its_own_vp_index_and_enables_its_own_assist_page() {
    let mut hv = FakeHv::new();
    let (_, _) = run(&mut hv, 8);
    // An AP whose VP index (70) is neither its APIC ID (12) nor below 64.
    hv.msrs.insert(m::VP_INDEX, 70);
    hv.writes.clear();
    let mut fb = crate::Fallbacks::default();
    let mut platform = smp(1, 4);
    let cpu = crate::Cpu {
        index: 11,
        apic_id: 12,
    };
    setup_cpu(&mut hv, cpu, &mut fb, &mut platform);
    assert!(fb.is_empty(), "{:?}", fb.iter().collect::<Vec<_>>());
    assert_eq!(percpu::vp_index(11), Some(70));
    assert_eq!(percpu::vp_of_apic(12), Some(70));
    assert!(percpu::has_assist_page(11), "the AP's own assist page");
    assert_eq!(platform.pages.given.len(), 1);
    assert!(hv
        .writes
        .iter()
        .any(|&(i, v)| i == m::VP_ASSIST_PAGE
            && page_msr::address(v) == platform.pages.given[0].phys));
    // VP 70 needs the Ex form: the fake recommends Ex masks (hint bit 11).
    assert!(Offer::from_leaves(&hyperv_leaves()).ex_processor_masks);
}

#[test]
fn a_failing_step_on_one_ap_falls_back_on_that_ap_only() {
    let mut hv = FakeHv::new();
    let (_, _) = run(&mut hv, 8);
    let mut fb = crate::Fallbacks::default();
    let mut platform = smp(0, 4);
    platform.gp = vec![m::VP_INDEX, m::stimer_config(0)];
    let cpu = crate::Cpu {
        index: 13,
        apic_id: 14,
    };
    setup_cpu(&mut hv, cpu, &mut fb, &mut platform);
    let entries: Vec<_> = fb.iter().map(|(e, _)| e).collect();
    assert_eq!(
        entries,
        [
            "mmu.flush_remote, irq.send_ipi*",
            "irq.eoi (lazy EOI)",
            "time.timer_*"
        ]
    );
    assert_eq!(percpu::vp_index(13), None);
    assert_eq!(percpu::vp_of_apic(14), None, "IPIs naming it go native");
    assert!(!percpu::has_assist_page(13));
    // Another AP is unaffected.
    let mut fb2 = crate::Fallbacks::default();
    setup_cpu(
        &mut hv,
        crate::Cpu {
            index: 15,
            apic_id: 16,
        },
        &mut fb2,
        &mut smp(1, 4),
    );
    assert!(fb2.is_empty());
    assert!(percpu::has_assist_page(15));
}

#[test]
fn lock_wait_needs_several_cpus_and_a_spin_hint() {
    let leaves = hyperv_leaves();
    assert_eq!(leaves.spin_retries, 0xFFF);
    let mut hv = FakeHv::new();
    hv.leaves_after_id = Some(leaves);
    let mut patch = Patch::new("hyperv");
    setup(&mut hv, &leaves, &mut patch, &mut smp(8, 2));
    assert!(owned(&patch).contains(&"lock.wait"));
    assert!(!owned(&patch).contains(&"lock.kick"), "waiters never sleep");

    // One CPU: no lock group.
    let (patch, _) = run(&mut FakeHv::new(), 8);
    assert!(!owned(&patch).contains(&"lock.wait"));

    // "Never notify" (KVM's default without hv-spinlocks).
    let mut never = leaves;
    never.spin_retries = 0xFFFF_FFFF;
    let mut hv = FakeHv::new();
    hv.leaves_after_id = Some(never);
    let mut patch = Patch::new("hyperv");
    setup(&mut hv, &never, &mut patch, &mut smp(8, 2));
    assert!(!owned(&patch).contains(&"lock.wait"));
}

#[test]
fn tsc_page_sequence_zero_keeps_the_msr_clock() {
    let mut hv = FakeHv::new();
    hv.tsc_sequence = 0;
    let (patch, _) = run(&mut hv, 8);
    // The clock is still Hyper-V's, through HV_X64_MSR_TIME_REF_COUNT.
    assert!(owned(&patch).contains(&"time.monotonic_ns"));
}

#[test]
fn no_pages_means_msr_only_entries() {
    let mut hv = FakeHv::new();
    let (patch, _) = run(&mut hv, 0);
    let got = owned(&patch);
    assert!(!got.contains(&"mmu.flush_remote"));
    // EOI through the MSR, clock through the counter MSR, crash notify only.
    for e in [
        "irq.eoi",
        "time.monotonic_ns",
        "system.report_crash",
        "time.tsc_frequency",
    ] {
        assert!(got.contains(&e), "{e}");
    }
}

#[test]
fn locked_hypercall_msr_is_not_moved() {
    let mut hv = FakeHv::new();
    hv.msrs
        .insert(m::HYPERCALL, 0x5000 | hypercall_msr::LOCKED | 1);
    let (patch, _) = run(&mut hv, 8);
    assert!(!owned(&patch).contains(&"mmu.flush_remote"));
    assert!(hv.writes.iter().all(|(i, _)| *i != m::HYPERCALL));
}

#[test]
fn guest_os_id_is_kept_when_already_set() {
    let mut hv = FakeHv::new();
    hv.msrs.insert(m::GUEST_OS_ID, 0x1234);
    let _ = run(&mut hv, 8);
    assert!(hv.writes.iter().all(|(i, _)| *i != m::GUEST_OS_ID));
}

#[test]
fn missing_bits_leave_entries_native() {
    let mut cpu = Cpu::hyperv();
    // Only the mandatory privileges; no hints, no features.
    cpu.set(0x4000_0003, 0x60, 0, 0, 0);
    cpu.set(0x4000_0004, 0, 0, 0, 0);
    let l = with_env(&cpu, |env| check(env).unwrap());
    let mut hv = FakeHv::new();
    let mut patch = Patch::new("hyperv");
    setup(&mut hv, &l, &mut patch, &mut Pages::new(8));
    assert_eq!(owned(&patch), Vec::<&str>::new());
    // Nothing but the guest OS ID was written.
    assert_eq!(hv.writes, vec![(m::GUEST_OS_ID, GUEST_OS_ID.0)]);
}

#[test]
fn crash_without_message_capability_uses_no_page() {
    let mut hv = FakeHv::new();
    hv.msrs.insert(m::CRASH_CTL, crash_ctl::CRASH_NOTIFY);
    let (patch, platform) = run(&mut hv, 8);
    assert!(owned(&patch).contains(&"system.report_crash"));
    // Pages: hypercall, input, TSC, VP assist; none for crash messages.
    assert_eq!(platform.given.len(), 4);
    assert!(platform.virt(0x10_0000).is_some());
}

/// Review finding F8: Xen's Viridian publishes leaf 4 only after a guest
/// OS ID whose bits 47:40 are at least 4; the backend writes its ID first
/// and reads the recommendations after it.
#[test]
fn recommendations_are_read_after_the_guest_os_id() {
    assert!((GUEST_OS_ID.0 >> 40) as u8 >= 4, "{:#x}", GUEST_OS_ID.0);
    let mut hv = FakeHv::new();
    hv.viridian_gate = true;
    hv.leaves_after_id = Some(hyperv_leaves());
    let mut patch = Patch::new("hyperv");
    // What detection saw: no recommendations yet.
    let before = hyperv_leaves_of(&Cpu::hyperv_without_hints());
    setup(&mut hv, &before, &mut patch, &mut Pages::new(8));
    let got = owned(&patch);
    for e in ["irq.eoi", "mmu.flush_remote", "irq.send_ipi"] {
        assert!(got.contains(&e), "{e}: {got:?}");
    }
    // An ID with 0 there keeps the leaf empty, as in Xen.
    let mut hv = FakeHv::new();
    hv.viridian_gate = true;
    hv.leaves_after_id = Some(hyperv_leaves());
    hv.msrs.insert(m::GUEST_OS_ID, 0x8100_0000_0000_0000);
    let mut patch = Patch::new("hyperv");
    setup(&mut hv, &before, &mut patch, &mut Pages::new(8));
    assert!(!owned(&patch).contains(&"irq.eoi"));
}

/// Without frequency MSRs the TSC frequency comes from the hypervisor's
/// references: `2^64 * 10^7 / scale` for the TSC page (exact for the
/// persona's and KVM's scale), the reference counter against the TSC
/// otherwise.
#[test]
fn tsc_frequency_from_the_page_scale_or_the_counter() {
    for hz in [
        2_500_000_000u64,
        2_459_954_000,
        1_000_000_000,
        3_700_123_000,
    ] {
        let scale = ((10_000_000u128 << 64) / u128::from(hz)) as u64;
        let got = tsc_hz_from_scale(scale).unwrap();
        assert!(got >= hz && got - hz < 1000, "{hz}: {got}");
        assert_eq!(got.div_ceil(1000), hz / 1000);
    }
    assert_eq!(tsc_hz_from_scale(0), None);
    assert_eq!(
        tsc_hz_from_counter(0, 0, 100_000, 25_000_000),
        Some(2_500_000_000)
    );
    assert_eq!(tsc_hz_from_counter(5, 0, 5, 10), None);
    let mut hv = FakeHv::new();
    let hz = calibrate(&mut hv).unwrap();
    assert!(hz.abs_diff(2_500_000_000) < 2_500_000, "{hz}");
}

#[test]
fn no_frequency_msrs_still_owns_the_tsc_frequency() {
    let mut cpu = Cpu::hyperv();
    // Privilege bit 11 and feature bit 8 off.
    cpu.set(
        0x4000_0003,
        0x2E7F & !(1 << 11),
        0xB0,
        0,
        0x0008_0500 & !(1 << 8),
    );
    let l = hyperv_leaves_of(&cpu);
    assert!(!Offer::from_leaves(&l).frequencies);
    let mut hv = FakeHv::new();
    hv.leaves_after_id = Some(l);
    let mut patch = Patch::new("hyperv");
    setup(&mut hv, &l, &mut patch, &mut Pages::new(8));
    let got = owned(&patch);
    assert!(got.contains(&"time.tsc_frequency"), "{got:?}");
    assert!(!got.contains(&"time.apic_timer_khz"));
}

/// Lying-hypervisor matrix: a frequency MSR that says 1 kHz is ignored;
/// the TSC frequency comes from the hypervisor's other references.
#[test]
fn implausible_frequency_msr_is_ignored() {
    let mut hv = FakeHv::new();
    hv.msrs.insert(m::TSC_FREQUENCY, 1000);
    let (patch, _pages) = run(&mut hv, 8);
    assert!(owned(&patch).contains(&"time.tsc_frequency"));
    let f = (patch.table().time.tsc_frequency)();
    assert_ne!(f.source, TscSource::HypervMsr);
    assert!(crate::tsc::plausible_khz(f.khz), "{f:?}");
}

/// A kernel that catches #GP, on a hypervisor whose `gp` MSRs raise it.
struct Refusing {
    pages: Pages,
    gp: Vec<u32>,
}

impl Platform for Refusing {
    fn alloc_shared_page(&mut self) -> Option<SharedPage> {
        self.pages.alloc_shared_page()
    }

    unsafe fn read_msr_catching_gp(&mut self, index: u32) -> Option<Result<u64, crate::MsrFault>> {
        Some(if self.gp.contains(&index) {
            Err(crate::MsrFault)
        } else {
            Ok(0)
        })
    }
}

/// Lying-hypervisor matrix: an MSR group CPUID promises but whose MSR
/// raises #GP is not used.
#[test]
fn promised_msrs_that_fault_leave_their_entries_native() {
    let mut hv = FakeHv::new();
    hv.leaves_after_id = Some(hyperv_leaves());
    let mut patch = Patch::new("hyperv");
    let mut platform = Refusing {
        pages: Pages::new(8),
        gp: vec![m::APIC_FREQUENCY, m::CRASH_CTL, m::stimer_config(0)],
    };
    setup(&mut hv, &hyperv_leaves(), &mut patch, &mut platform);
    let got = owned(&patch);
    for gone in [
        "time.apic_timer_khz",
        "system.report_crash",
        "time.timer_arm",
    ] {
        assert!(!got.contains(&gone), "{gone}: {got:?}");
    }
    assert!(got.contains(&"time.tsc_frequency") && got.contains(&"irq.eoi"));
    // Never read through the hardware either.
    assert!(hv.writes.iter().all(|&(i, _)| i != m::CRASH_CTL));
}

/// Review finding F7: KVM writes sequence 0 while it sets the page up; the
/// page is kept and every read decides.
#[test]
fn tsc_page_with_sequence_zero_at_setup_is_kept() {
    let mut hv = FakeHv::new();
    hv.tsc_sequence = 0;
    let mut pages = Pages::new(1);
    assert_eq!(tsc_page(&mut hv, &mut pages), Ok(()));
}

#[test]
fn a_refused_hyperv_says_why() {
    let mut cpu = Cpu::hyperv();
    // QEMU's hv-relaxed,hv-vapic,hv-time: no VP index privilege.
    cpu.set(0x4000_0003, 0x2E7F & !0x40, 0, 0, 0);
    with_env(&cpu, |env| {
        assert_eq!(HYPERV.detect(env), None);
        assert_eq!(
            HYPERV.declined(env),
            Some("no hypercall or VP index MSR privilege")
        );
    });
    with_env(&Cpu::hyperv(), |env| assert_eq!(HYPERV.declined(env), None));
}

/// Review finding F9: AccessTscInvariantControls → bit 0 of
/// HV_X64_MSR_TSC_INVARIANT_CONTROL, as Linux does; never without it.
#[test]
fn invariant_tsc_is_exposed_where_permitted() {
    let mut cpu = Cpu::hyperv();
    cpu.set(0x4000_0003, 0x2E7F | 1 << 15, 0xB0, 0, 0x0008_0500);
    let l = hyperv_leaves_of(&cpu);
    let mut hv = FakeHv::new();
    hv.leaves_after_id = Some(l);
    setup(&mut hv, &l, &mut Patch::new("hyperv"), &mut Pages::new(8));
    assert!(hv.writes.contains(&(m::TSC_INVARIANT_CONTROL, 1)));
    let mut hv = FakeHv::new();
    let _ = run(&mut hv, 8);
    assert!(hv
        .writes
        .iter()
        .all(|(i, _)| *i != m::TSC_INVARIANT_CONTROL));
}

// ---- HV_X64_MSR_TSC_FREQUENCY cross-check ----

fn at(reference: u64, tsc: u64) -> RefSample {
    RefSample { reference, tsc }
}

/// KVM on `nested:hyperv:smp2` (L1 Linux's TSC miscalibrated): the MSR said
/// 749 226 kHz while the TSC ran at 2 596 139 kHz against the reference
/// counter.
const KVM_MSR_HZ: u64 = 749_226_000;
const KVM_TRUE_HZ: u64 = 2_596_139_000;

#[test]
fn cross_check_decisions() {
    // 10 ms at 2.5 GHz, the MSR exact: agrees.
    let (s0, s1) = (at(1_000, 0), at(101_000, 25_000_000));
    assert_eq!(
        check_msr_frequency(2_500_000_000, s0, s1),
        MsrCheck::Agrees {
            measured_hz: 2_500_000_000
        }
    );
    // Within 2 %: agrees; beyond it: the measurement wins.
    assert!(matches!(
        check_msr_frequency(2_549_000_000, s0, s1),
        MsrCheck::Agrees { .. }
    ));
    assert!(matches!(
        check_msr_frequency(2_451_000_000, s0, s1),
        MsrCheck::Agrees { .. }
    ));
    assert_eq!(
        check_msr_frequency(2_551_000_000, s0, s1),
        MsrCheck::Disagrees {
            measured_hz: 2_500_000_000
        }
    );
    // KVM's miscalibrated MSR, 10 ms measured at the true rate.
    let s1 = at(101_000, KVM_TRUE_HZ / 100);
    assert_eq!(
        check_msr_frequency(KVM_MSR_HZ, s0, s1),
        MsrCheck::Disagrees {
            measured_hz: KVM_TRUE_HZ
        }
    );
    // The reference counter frozen, or going back: unmeasurable.
    assert_eq!(
        check_msr_frequency(KVM_MSR_HZ, s0, at(1_000, 25_000_000)),
        MsrCheck::Unmeasurable
    );
    assert_eq!(
        check_msr_frequency(KVM_MSR_HZ, s0, at(0, 25_000_000)),
        MsrCheck::Unmeasurable
    );
    // Less than 5 ms of reference time: too short to judge.
    assert_eq!(
        check_msr_frequency(2_500_000_000, s0, at(50_999, 12_500_000)),
        MsrCheck::Unmeasurable
    );
    // A measured rate outside the plausible range (1 MHz; 200 GHz).
    assert_eq!(
        check_msr_frequency(2_500_000_000, s0, at(101_000, 10_000)),
        MsrCheck::Unmeasurable
    );
    assert_eq!(
        check_msr_frequency(2_500_000_000, s0, at(101_000, 2_000_000_000)),
        MsrCheck::Unmeasurable
    );
    // The TSC going back: unmeasurable, never a wrapped huge rate.
    assert_eq!(
        check_msr_frequency(2_500_000_000, at(1_000, 50), at(101_000, 10)),
        MsrCheck::Unmeasurable
    );
}

/// Setup against KVM's behaviour: MSR 3.5 times too low, TSC page invalid,
/// reference counter right. The frequency set is the measured one, from
/// the reference counter, within 0.1 %; nine counter reads (two end
/// points, one extension of the window the low claim cut short).
#[test]
fn a_miscalibrated_msr_without_a_valid_page_is_measured() {
    let mut hv = FakeHv::new();
    hv.true_hz = KVM_TRUE_HZ;
    hv.tsc_sequence = 0;
    let (check, s0, s1) = cross_check(&mut hv, KVM_MSR_HZ);
    let MsrCheck::Disagrees { measured_hz } = check else {
        panic!("{check:?}");
    };
    assert!(
        measured_hz.abs_diff(KVM_TRUE_HZ) * 1000 < KVM_TRUE_HZ,
        "{measured_hz}"
    );
    assert!(s1.reference - s0.reference >= CROSS_CHECK_MIN_UNITS);
    assert_eq!(hv.ref_reads, 3 * CROSS_CHECK_TRIES);

    // Through the whole setup: the measured value is what the entry gives.
    let mut hv = FakeHv::new();
    hv.true_hz = KVM_TRUE_HZ;
    hv.tsc_sequence = 0;
    hv.msrs.insert(m::TSC_FREQUENCY, KVM_MSR_HZ);
    let mut patch = Patch::new("hyperv");
    let l = hyperv_leaves();
    hv.leaves_after_id = Some(l);
    let offer = Offer::from_leaves(&l);
    let mut platform = Pages::new(8);
    assert_eq!(tsc_page(&mut hv, &mut platform), Ok(()));
    let khz = msr_frequency(&mut hv, &offer, KVM_MSR_HZ / 1000, &mut patch).unwrap();
    assert!(
        khz.abs_diff(KVM_TRUE_HZ / 1000) * 1000 < KVM_TRUE_HZ / 1000,
        "{khz}"
    );
    assert!(owned(&patch).contains(&"time.tsc_frequency"));
}

/// A right MSR without a valid page: agrees after one window, six counter
/// reads, the MSR's value kept.
#[test]
fn a_right_msr_without_a_valid_page_is_kept() {
    let mut hv = FakeHv::new();
    hv.tsc_sequence = 0;
    let (check, _, _) = cross_check(&mut hv, 2_500_000_000);
    assert!(matches!(check, MsrCheck::Agrees { .. }), "{check:?}");
    assert_eq!(hv.ref_reads, 2 * CROSS_CHECK_TRIES);
    let mut hv = FakeHv::new();
    hv.tsc_sequence = 0;
    let mut platform = Pages::new(8);
    assert_eq!(tsc_page(&mut hv, &mut platform), Ok(()));
    let offer = Offer::from_leaves(&hyperv_leaves());
    let mut patch = Patch::new("hyperv");
    assert_eq!(
        msr_frequency(&mut hv, &offer, 2_500_000, &mut patch),
        Some(2_500_000)
    );
}

/// A frozen reference counter: the MSR cannot be confirmed and no
/// frequency is believed (the entry stays native), without polling the
/// counter for the calibration's 10 ms.
#[test]
fn an_unconfirmed_msr_leaves_the_frequency_native() {
    let mut hv = FakeHv::new();
    hv.tsc_sequence = 0;
    hv.ref_frozen = true;
    let mut platform = Pages::new(8);
    assert_eq!(tsc_page(&mut hv, &mut platform), Ok(()));
    let offer = Offer::from_leaves(&hyperv_leaves());
    let mut patch = Patch::new("hyperv");
    assert_eq!(msr_frequency(&mut hv, &offer, 2_500_000, &mut patch), None);
    assert!(!owned(&patch).contains(&"time.tsc_frequency"));
    assert_eq!(hv.ref_reads, 2 * CROSS_CHECK_TRIES);
}
