//! Host tests: detection and leaf decoding from CPUID answers built from
//! arch-x86/cpuid.h, and the setup steps that fail before any hypercall.

use super::*;
use crate::test_support::{sig, with_env, Pages};
use pvops_probe::CpuidResult;

fn r(eax: u32, (ebx, ecx, edx): (u32, u32, u32)) -> CpuidResult {
    CpuidResult { eax, ebx, ecx, edx }
}

fn leaf1_hv() -> CpuidResult {
    CpuidResult {
        ecx: 1 << 31,
        ..Default::default()
    }
}

/// Xen 4.19 at `base` with leaves up to base+`top`.
fn xen_at(base: u32, top: u32, leaf: u32) -> Option<CpuidResult> {
    Some(match leaf.checked_sub(base)? {
        0 => r(base + top, sig(abi::SIGNATURE)),
        1 if top >= 1 => r(0x0004_0013, (0, 0, 0)),
        2 if top >= 2 => r(1, (0x4000_0000, 1, 0)),
        3 if top >= 3 => r(
            abi::HOST_TSC_RELIABLE,
            (abi::TSC_MODE_NEVER_EMULATE, 2_400_000, 1),
        ),
        4 if top >= 4 => r(abi::HVM_X2APIC_VIRT, (0, 0, 0)),
        _ => return None,
    })
}

fn plain_xen(leaf: u32, _: u32) -> CpuidResult {
    match leaf {
        0 => r(0xd, sig(b"GenuineIntel")),
        1 => leaf1_hv(),
        _ => xen_at(0x4000_0000, 5, leaf).unwrap_or_default(),
    }
}

/// Xen with Viridian: Hyper-V at 0x4000_0000, Xen at 0x4000_0100.
fn viridian(leaf: u32, _: u32) -> CpuidResult {
    match leaf {
        0 => r(0xd, sig(b"GenuineIntel")),
        1 => leaf1_hv(),
        0x4000_0000 => r(0x4000_0006, sig(b"Microsoft Hv")),
        0x4000_0001 => r(pvops_probe::HV_INTERFACE_HV1, (0, 0, 0)),
        0x4000_0002..=0x4000_0006 => CpuidResult::default(),
        _ => xen_at(0x4000_0100, 5, leaf).unwrap_or_default(),
    }
}

/// A Xen signature claiming only one leaf.
fn one_leaf(leaf: u32, _: u32) -> CpuidResult {
    match leaf {
        0 => r(0xd, sig(b"GenuineIntel")),
        1 => leaf1_hv(),
        _ => xen_at(0x4000_0000, 1, leaf).unwrap_or_default(),
    }
}

#[test]
fn detects_xen_at_the_first_base() {
    with_env(&plain_xen, |env| {
        let d = XEN.detect(env).expect("xen detected");
        assert_eq!(d.priority, 0x4000_0000);
        assert_eq!(d.base, Some(0x4000_0000));
    });
}

#[test]
fn xen_above_viridian_wins_with_its_base_as_priority() {
    with_env(&viridian, |env| {
        let d = XEN.detect(env).expect("xen detected");
        assert_eq!(d.priority, 0x4000_0100);
        assert!(
            d.priority > 0x4000_0000,
            "must beat a Hyper-V backend at the base"
        );
        let s = crate::select::select_from(crate::compiled_in(), env, None);
        assert_eq!(s.backend.name(), "xen");
    });
}

#[test]
fn one_leaf_is_not_enough() {
    with_env(&one_leaf, |env| assert_eq!(XEN.detect(env), None));
}

#[test]
fn no_hypervisor_bit_no_xen() {
    let src = |leaf: u32, sub: u32| match leaf {
        1 => CpuidResult::default(),
        _ => plain_xen(leaf, sub),
    };
    with_env(&src, |env| assert_eq!(XEN.detect(env), None));
}

#[test]
fn leaves_decode_from_the_header_layout() {
    let l = read_leaves(&viridian, 0x4000_0100, 0x4000_0105);
    assert_eq!(l.base, 0x4000_0100);
    assert_eq!((l.version.major, l.version.minor), (4, 19));
    assert_eq!(l.hypercall.pages, 1);
    assert_eq!(l.hypercall.msr, 0x4000_0000);
    assert_eq!(l.hypercall.features1, 1);
    let t = l.time.expect("time leaf");
    assert_eq!(t.tsc_mode, abi::TSC_MODE_NEVER_EMULATE);
    assert_eq!(t.guest_tsc_khz, 2_400_000);
    assert_eq!(t.incarnation, 1);
    // Only two leaves: no time leaf read.
    assert_eq!(read_leaves(&plain_xen, 0x4000_0000, 0x4000_0002).time, None);
}

#[test]
fn no_page_for_the_hypercall_page_fails_the_backend() {
    with_env(&plain_xen, |env| {
        let mut patch = Patch::new("xen");
        let e = XEN
            .install(env, &mut patch, &mut Pages::new(0))
            .unwrap_err();
        assert_eq!(e.step, "hypercall page");
        assert_eq!(patch.replaced().count(), 0);
    });
}

#[test]
fn unusable_hypercall_leaf_fails_the_backend() {
    let src = |leaf: u32, sub: u32| match leaf {
        0x4000_0002 => CpuidResult::default(),
        _ => plain_xen(leaf, sub),
    };
    with_env(&src, |env| {
        let mut patch = Patch::new("xen");
        let e = XEN
            .install(env, &mut patch, &mut Pages::new(0))
            .unwrap_err();
        assert_eq!(
            e,
            SetupError {
                step: "hypercall page",
                detail: "CPUID base+2 reports no page or no MSR",
            }
        );
    });
}

#[test]
fn hypercalls_without_a_page_are_enosys() {
    // The page is never registered on the host.
    assert!(!hypercall::ready());
    assert_eq!(xen_version(), Err(-abi::errno::ENOSYS));
    assert_eq!(sched_block(), Err(-abi::errno::ENOSYS));
    assert_eq!(hypercall::evtchn_bind_ipi(1), Err(-abi::errno::ENOSYS));
    assert_eq!(hypercall::sched_poll(5, 0), Err(-abi::errno::ENOSYS));
}

#[test]
fn vcpu_ids_from_the_leaf_else_half_the_apic_id() {
    let with = abi::HvmLeaf::from_regs(abi::HVM_VCPU_ID_PRESENT, 3, 0);
    assert_eq!(vcpu_id_from(Some(&with), 10), 3);
    let without = abi::HvmLeaf::from_regs(0, 3, 0);
    assert_eq!(
        vcpu_id_from(Some(&without), 10),
        5,
        "Xen HVM: APIC ID = 2 * vCPU"
    );
    assert_eq!(vcpu_id_from(None, 0), 0);
}

#[test]
fn poll_names_one_port_without_timeout_and_waits_only_if_unchanged() {
    use core::sync::atomic::AtomicU32;
    let ports = [17u32];
    let a = hypercall::poll_arg(&ports, 0);
    assert_eq!((a.nr_ports, a.timeout), (1, 0));
    assert_eq!(a.ports, ports.as_ptr() as u64);

    let word = AtomicU32::new(4);
    let log = std::cell::RefCell::new(Vec::new());
    super::wait_step(
        &word,
        4,
        17,
        |p| log.borrow_mut().push(("clear", p)),
        |p| {
            log.borrow_mut().push(("poll", p));
            Ok(())
        },
    );
    assert_eq!(
        *log.borrow(),
        [("clear", 17), ("poll", 17)],
        "clear, re-check, poll"
    );
    log.borrow_mut().clear();
    super::wait_step(
        &word,
        3,
        17,
        |p| log.borrow_mut().push(("clear", p)),
        |_| panic!("the word changed: no poll"),
    );
    assert_eq!(*log.borrow(), [("clear", 17)]);

    // A kick sends on the target CPU's own port; a CPU without one gets
    // nothing (it spins).
    super::LOCK_PORT[40].store(23, Ordering::Release);
    assert_eq!(super::kick_port(40), Some(23));
    assert_eq!(super::kick_port(41), None);
    assert_eq!(super::kick_port(1000), None);
}

#[test]
fn vcpus_from_32_have_no_shared_info_slot() {
    // vCPU 32 and up must register a vcpu_info (VCPUOP_register_vcpu_info).
    assert!(shared::legacy_slot(32).is_none());
    assert!(shared::legacy_slot(u32::MAX).is_none());
    assert_eq!(abi::vcpu_info_offset(31), 31 * 64);
    assert!(!shared::has_vcpu_info(50), "no AP set up on the host");
}
