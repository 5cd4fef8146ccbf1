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
        }
    }
}

impl Hw for FakeHv {
    fn rdmsr(&mut self, index: u32) -> u64 {
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
    fn ipi_probe(&mut self) -> HypercallResult {
        assert!(
            self.hypercall_page.is_some(),
            "hypercall before the page was verified"
        );
        HypercallResult::new(self.hypercall_status, 0)
    }
    fn apic_id(&self) -> u32 {
        self.apic_id
    }
}

fn hyperv_leaves() -> Leaves {
    with_env(&Cpu::hyperv(), |env| check(env).unwrap())
}

fn run(hv: &mut FakeHv, pages: usize) -> (Patch, Pages) {
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
    assert!(!got.contains(&"irq.send_ipi_mask"));
    assert!(got.contains(&"time.monotonic_ns"));
}

#[test]
fn vp_index_other_than_apic_id_keeps_remote_entries_native() {
    let mut hv = FakeHv::new();
    hv.msrs.insert(m::VP_INDEX, 3);
    let (patch, _) = run(&mut hv, 8);
    assert!(!owned(&patch).contains(&"irq.send_ipi"));
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
