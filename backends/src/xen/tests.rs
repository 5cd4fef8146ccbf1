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
}

/// A shared_info page for the event-channel tests, 8-byte aligned.
fn page() -> Box<[u64; 512]> {
    Box::new([0u64; 512])
}

/// Xen's `evtchn_2l_set_pending` (xen/common/event_2l.c) on `page`:
/// pending bit; if unmasked and the selector bit goes 0->1,
/// `vcpu_mark_events_pending` (upcall flag 0->1 raises the upcall).
/// Returns whether an upcall was raised.
fn xen_set_pending(page: &mut [u64; 512], port: u32) -> bool {
    let (word, bit) = abi::port_word_bit(port);
    let pend = abi::evtchn_pending_offset(word) / 8;
    let mask = abi::evtchn_mask_offset(word) / 8;
    let sel = core::mem::offset_of!(abi::VcpuInfo, evtchn_pending_sel) / 8;
    if page[pend] & (1 << bit) != 0 {
        return false;
    }
    page[pend] |= 1 << bit;
    if page[mask] & (1 << bit) != 0 || page[sel] & (1 << word) != 0 {
        return false;
    }
    page[sel] |= 1 << word;
    let up = core::mem::offset_of!(abi::VcpuInfo, evtchn_upcall_pending);
    let bytes = page.as_mut_ptr().cast::<u8>();
    // SAFETY: offset 0 of the test page.
    unsafe {
        if *bytes.add(up) != 0 {
            return false;
        }
        *bytes.add(up) = 1;
    }
    true
}

/// Review finding F1: the toolstack's console (2) and xenstore (1) ports,
/// in word 0 with the timer port, fire; every later timer event must still
/// raise an upcall. With the old acknowledgement (selector bit of word 0
/// put back while a foreign unmasked port was pending, upcall flag left
/// clear) timer events 2.. raised none.
#[test]
fn foreign_ports_in_the_timer_word_never_silence_the_timer() {
    const XENSTORE: u32 = 1;
    const CONSOLE: u32 = 2;
    const TIMER: u32 = 3;
    let mut p = page();
    let base = p.as_mut_ptr().cast::<u8>();
    let vi = base.cast::<abi::VcpuInfo>();
    // An event before the guest mapped anything: shared_info is zeroed, so
    // the console port is unmasked.
    assert!(xen_set_pending(&mut p, CONSOLE));
    // SAFETY: a live, aligned 4 KiB buffer laid out as shared_info.
    unsafe { shared::mask_all_in(base, vi) };
    for w in 0..abi::EVTCHN_2L_WORDS {
        assert_eq!(p[abi::evtchn_mask_offset(w) / 8], !0);
    }
    // Nothing live: no selector bit, no upcall flag left behind.
    assert_eq!(
        p[core::mem::offset_of!(abi::VcpuInfo, evtchn_pending_sel) / 8],
        0
    );
    // The timer port is unmasked (EVTCHNOP_unmask).
    p[abi::evtchn_mask_offset(0) / 8] &= !(1 << TIMER);
    for round in 0..6 {
        assert!(
            xen_set_pending(&mut p, TIMER),
            "timer event {round} raised no upcall"
        );
        // Foreign traffic while the timer upcall is pending: masked.
        assert!(!xen_set_pending(&mut p, XENSTORE));
        // SAFETY: as above.
        assert!(unsafe { shared::ack_port_in(base, vi, TIMER) });
        assert!(!xen_set_pending(&mut p, CONSOLE));
    }
}

#[test]
fn delivery_prefers_the_upcall_vector() {
    let with = abi::HvmLeaf::from_regs(abi::HVM_UPCALL_VECTOR, 0, 0);
    let without = abi::HvmLeaf::from_regs(abi::HVM_X2APIC_VIRT, 0, 0);
    let cb = 1 << abi::XENFEAT_HVM_CALLBACK_VECTOR;
    assert_eq!(
        Delivery::choose(Some(&with), Some(0)),
        Delivery::UpcallVector
    );
    assert_eq!(
        Delivery::choose(Some(&without), Some(cb)),
        Delivery::CallbackVia
    );
    // XENVER_get_features failed: Xen's HVM default.
    assert_eq!(Delivery::choose(None, None), Delivery::CallbackVia);
    assert_eq!(Delivery::choose(Some(&without), Some(0)), Delivery::None);
}
