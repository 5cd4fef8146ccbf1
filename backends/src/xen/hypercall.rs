//! Xen hypercalls through the hypercall page: the one unsafe leaf
//! ([`raw`]) and one typed wrapper per operation the backend uses.
//!
//! Convention (xen.h, "x86_64: hypercall"; arch-x86/cpuid.h leaf 3): stub
//! `nr` of the page the guest registered sits at `page + nr * 32` and does
//! `mov $nr, %eax; vmcall|vmmcall; ret`; arguments are in RDI, RSI, RDX,
//! R10, R8 and the result (0 or `-errno`, `abi::xen::errno`) in RAX.
//! Pointer arguments are guest-linear addresses (an HVM guest's hypercall
//! buffers are translated through its own page tables).

use core::sync::atomic::{AtomicPtr, Ordering};
use pvops_abi::xen::{self as abi, errno, hypercall as nr};

/// The registered hypercall page (null until verified).
static PAGE: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());

/// Makes `page` the hypercall page used by every wrapper.
///
/// # Safety
///
/// `page` must be a mapped, executable 4 KiB page that the hypervisor has
/// filled with hypercall stubs, valid for the rest of the kernel's life.
pub(super) unsafe fn set_page(page: *mut u8) {
    PAGE.store(page, Ordering::Release);
}

/// Whether a verified hypercall page is registered.
pub fn ready() -> bool {
    !PAGE.load(Ordering::Acquire).is_null()
}

/// Calls hypercall `nr` with five arguments; returns RAX. `-ENOSYS` when no
/// page is registered.
///
/// # Safety
///
/// The arguments must be what hypercall `nr` expects; every pointer argument
/// must point to memory valid for what the hypervisor reads or writes there
/// for the duration of the call.
pub(super) unsafe fn raw(nr: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let page = PAGE.load(Ordering::Acquire);
    if page.is_null() || nr as usize >= abi::HYPERCALL_STUBS {
        return -errno::ENOSYS;
    }
    // SAFETY: `nr < HYPERCALL_STUBS`, so the stub lies inside the page.
    let entry = unsafe { page.add(nr as usize * abi::HYPERCALL_STUB_SIZE) };
    let ret: u64;
    // SAFETY: `set_page`'s contract makes `entry` a hypervisor-filled stub
    // (`mov eax, nr; vmcall; ret`), verified at install. Xen preserves all
    // registers but RAX; argument registers are marked clobbered anyway
    // (debug builds of Xen scribble on them) and so is everything the C ABI
    // lets a callee clobber. The stub uses the stack only for `ret`, and
    // x86_64-unknown-none has no red zone. Memory effects of the call are the
    // caller's contract.
    unsafe {
        core::arch::asm!(
            "call {entry}",
            entry = in(reg) entry,
            inout("rax") u64::from(nr) => ret,
            inout("rdi") a1 => _,
            inout("rsi") a2 => _,
            inout("rdx") a3 => _,
            inout("r10") a4 => _,
            inout("r8") a5 => _,
            clobber_abi("C"),
        );
    }
    ret as i64
}

fn result(rc: i64) -> Result<i64, i64> {
    if rc < 0 {
        Err(rc)
    } else {
        Ok(rc)
    }
}

/// `xen_version(XENVER_version)`: major << 16 | minor.
pub fn xen_version() -> Result<abi::Version, i64> {
    // SAFETY: XENVER_version takes no buffer (NULL second argument).
    let rc = result(unsafe { raw(nr::XEN_VERSION, u64::from(abi::XENVER_VERSION), 0, 0, 0, 0) })?;
    Ok(abi::Version::from_eax(rc as u32))
}

/// `xen_version(XENVER_get_features)`: feature submap `idx` (features.h).
pub fn xen_get_features(idx: u32) -> Result<u32, i64> {
    let mut arg = abi::FeatureInfo {
        submap_idx: idx,
        submap: 0,
    };
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` is a live `xen_feature_info`; Xen writes `submap`.
    result(unsafe {
        raw(
            nr::XEN_VERSION,
            u64::from(abi::XENVER_GET_FEATURES),
            p,
            0,
            0,
            0,
        )
    })?;
    Ok(arg.submap)
}

/// `hvm_op(HVMOP_set_evtchn_upcall_vector)`: event upcalls of `vcpu`
/// arrive as LAPIC vector `vector` (an EOI is due).
pub fn hvm_set_evtchn_upcall_vector(vcpu: u32, vector: u8) -> Result<(), i64> {
    let mut arg = abi::HvmEvtchnUpcallVector {
        vcpu,
        vector,
        pad: [0; 3],
    };
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` is a live `xen_hvm_evtchn_upcall_vector` for the call.
    result(unsafe {
        raw(
            nr::HVM_OP,
            u64::from(abi::HVMOP_SET_EVTCHN_UPCALL_VECTOR),
            p,
            0,
            0,
            0,
        )
    })
    .map(drop)
}

/// `memory_op(XENMEM_add_to_physmap)`: maps shared_info at guest frame `gpfn`.
pub fn add_shared_info_to_physmap(gpfn: u64) -> Result<(), i64> {
    let mut arg = abi::AddToPhysmap {
        domid: abi::DOMID_SELF,
        size: 0,
        space: abi::XENMAPSPACE_SHARED_INFO,
        idx: 0,
        gpfn,
    };
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` is a live `xen_add_to_physmap` for the whole call.
    result(unsafe {
        raw(
            nr::MEMORY_OP,
            u64::from(abi::XENMEM_ADD_TO_PHYSMAP),
            p,
            0,
            0,
            0,
        )
    })
    .map(drop)
}

/// `hvm_op(HVMOP_set_param)` for this domain.
pub fn hvm_set_param(index: u32, value: u64) -> Result<(), i64> {
    let mut arg = abi::HvmParam {
        domid: abi::DOMID_SELF,
        pad: 0,
        index,
        value,
    };
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` is a live `xen_hvm_param` for the whole call.
    result(unsafe { raw(nr::HVM_OP, u64::from(abi::HVMOP_SET_PARAM), p, 0, 0, 0) }).map(drop)
}

/// `hvm_op(HVMOP_get_param)` for this domain.
pub fn hvm_get_param(index: u32) -> Result<u64, i64> {
    let mut arg = abi::HvmParam {
        domid: abi::DOMID_SELF,
        pad: 0,
        index,
        value: 0,
    };
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` is a live `xen_hvm_param`; Xen writes only `value`.
    result(unsafe { raw(nr::HVM_OP, u64::from(abi::HVMOP_GET_PARAM), p, 0, 0, 0) })?;
    Ok(arg.value)
}

/// `event_channel_op(EVTCHNOP_bind_virq)`: returns the new port.
pub fn evtchn_bind_virq(virq: u32, vcpu: u32) -> Result<u32, i64> {
    let mut arg = abi::EvtchnBindVirq {
        virq,
        vcpu,
        port: 0,
    };
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` is a live `evtchn_bind_virq`; Xen writes `port`.
    result(unsafe {
        raw(
            nr::EVENT_CHANNEL_OP,
            u64::from(abi::EVTCHNOP_BIND_VIRQ),
            p,
            0,
            0,
            0,
        )
    })?;
    Ok(arg.port)
}

fn evtchn_port_op(cmd: u32, port: u32) -> Result<(), i64> {
    let mut arg = abi::EvtchnPort { port };
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` is a live single-port argument for the whole call.
    result(unsafe { raw(nr::EVENT_CHANNEL_OP, u64::from(cmd), p, 0, 0, 0) }).map(drop)
}

/// `event_channel_op(EVTCHNOP_unmask)`.
pub fn evtchn_unmask(port: u32) -> Result<(), i64> {
    evtchn_port_op(abi::EVTCHNOP_UNMASK, port)
}

/// `event_channel_op(EVTCHNOP_send)`.
pub fn evtchn_send(port: u32) -> Result<(), i64> {
    evtchn_port_op(abi::EVTCHNOP_SEND, port)
}

/// `vcpu_op(VCPUOP_set_singleshot_timer)`: fire at absolute system time
/// `timeout_abs_ns` (pvclock time).
pub fn vcpu_set_singleshot_timer(vcpu: u32, timeout_abs_ns: u64, flags: u32) -> Result<(), i64> {
    let mut arg = abi::VcpuSetSingleshotTimer {
        timeout_abs_ns,
        flags,
        pad: 0,
    };
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` is a live `vcpu_set_singleshot_timer`.
    result(unsafe {
        raw(
            nr::VCPU_OP,
            u64::from(abi::VCPUOP_SET_SINGLESHOT_TIMER),
            u64::from(vcpu),
            p,
            0,
            0,
        )
    })
    .map(drop)
}

/// `vcpu_op(VCPUOP_stop_singleshot_timer)`.
pub fn vcpu_stop_singleshot_timer(vcpu: u32) -> Result<(), i64> {
    // SAFETY: the operation takes no buffer (NULL).
    result(unsafe {
        raw(
            nr::VCPU_OP,
            u64::from(abi::VCPUOP_STOP_SINGLESHOT_TIMER),
            u64::from(vcpu),
            0,
            0,
            0,
        )
    })
    .map(drop)
}

/// `vcpu_op(VCPUOP_register_runstate_memory_area)`: Xen keeps the
/// `vcpu_runstate_info` at guest-linear address `area` up to date.
///
/// # Safety
///
/// `area` must map a writable `VcpuRunstateInfo` that stays valid (and
/// unused for anything else) for the rest of the kernel's life.
pub unsafe fn vcpu_register_runstate_memory_area(vcpu: u32, area: u64) -> Result<(), i64> {
    let mut arg = abi::VcpuRegisterRunstateMemoryArea { addr: area };
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` is live for the call; the area's lifetime is the
    // caller's contract.
    result(unsafe {
        raw(
            nr::VCPU_OP,
            u64::from(abi::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA),
            u64::from(vcpu),
            p,
            0,
            0,
        )
    })
    .map(drop)
}

/// `sched_op(SCHEDOP_yield)`.
pub fn sched_yield() -> Result<(), i64> {
    // SAFETY: no buffer.
    result(unsafe { raw(nr::SCHED_OP, u64::from(abi::SCHEDOP_YIELD), 0, 0, 0, 0) }).map(drop)
}

/// `sched_op(SCHEDOP_block)`: sleeps until an event is pending (returns at
/// once if one already is and interrupts are enabled).
pub fn sched_block() -> Result<(), i64> {
    // SAFETY: no buffer.
    result(unsafe { raw(nr::SCHED_OP, u64::from(abi::SCHEDOP_BLOCK), 0, 0, 0, 0) }).map(drop)
}

/// `sched_op(SCHEDOP_shutdown)`: returns only if the hypervisor refused.
pub fn sched_shutdown(reason: u32) -> Result<(), i64> {
    let mut arg = abi::SchedShutdown { reason };
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` is a live `sched_shutdown` for the whole call.
    result(unsafe { raw(nr::SCHED_OP, u64::from(abi::SCHEDOP_SHUTDOWN), p, 0, 0, 0) }).map(drop)
}

/// `event_channel_op(EVTCHNOP_bind_ipi)`: a new IPI port notifying `vcpu`.
pub fn evtchn_bind_ipi(vcpu: u32) -> Result<u32, i64> {
    let mut arg = abi::EvtchnBindIpi { vcpu, port: 0 };
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` is a live `evtchn_bind_ipi`; Xen writes `port`.
    result(unsafe {
        raw(
            nr::EVENT_CHANNEL_OP,
            u64::from(abi::EVTCHNOP_BIND_IPI),
            p,
            0,
            0,
            0,
        )
    })?;
    Ok(arg.port)
}

/// `sched_op(SCHEDOP_poll)` on the one port `port`: returns when it is
/// pending (masked or not), when an event is delivered to this vCPU, or
/// at absolute system time `timeout` (0 = none).
pub fn sched_poll(port: u32, timeout: u64) -> Result<(), i64> {
    let ports = [port];
    let mut arg = poll_arg(&ports, timeout);
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` and the one-port array it points to are live for the
    // call; Xen only reads them.
    result(unsafe { raw(nr::SCHED_OP, u64::from(abi::SCHEDOP_POLL), p, 0, 0, 0) }).map(drop)
}

/// `vcpu_op(VCPUOP_register_vcpu_info)`: `vcpu`'s `vcpu_info` at byte
/// `offset` of guest frame `gfn`.
///
/// # Safety
///
/// The 64 bytes at `offset` of frame `gfn` must be memory the kernel lent
/// for good and uses for nothing else (Xen writes it from now on).
pub unsafe fn vcpu_register_vcpu_info(vcpu: u32, gfn: u64, offset: u32) -> Result<(), i64> {
    let mut arg = abi::VcpuRegisterVcpuInfo {
        mfn: gfn,
        offset,
        rsvd: 0,
    };
    let p = core::ptr::addr_of_mut!(arg) as u64;
    // SAFETY: `arg` is live for the call; the frame is the caller's contract.
    result(unsafe {
        raw(
            nr::VCPU_OP,
            u64::from(abi::VCPUOP_REGISTER_VCPU_INFO),
            u64::from(vcpu),
            p,
            0,
            0,
        )
    })
    .map(drop)
}

/// The `sched_poll` argument for `ports`.
pub(super) fn poll_arg(ports: &[u32], timeout: u64) -> abi::SchedPoll {
    abi::SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: ports.len() as u32,
        pad: 0,
        timeout,
    }
}
