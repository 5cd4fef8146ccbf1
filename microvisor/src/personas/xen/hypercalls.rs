//! Hypercall dispatch (64-bit HVM convention, xen.h: number in RAX,
//! arguments in RDI, RSI, RDX, R10, R8, result in RAX). Pointer arguments
//! are guest-virtual and go through the guest's page tables; an unmapped
//! pointer or one outside guest RAM is -EFAULT. Error values are Xen's
//! (`errno.h`), chosen as Xen's handlers choose them (cited per call).
//!
//! Counter codes (`mv.hypercall code=`): `(nr << 8) | sub-op` for the
//! multiplexed hypercalls (`xen_version`, `memory_op`, `vcpu_op`,
//! `sched_op`, `event_channel_op`, `hvm_op`; sub-ops above 0xFE count as
//! 0xFF), `nr << 8` for the others, `0xFF_FFFF_FFFF` for numbers of 2^32
//! and above. See [`counter_code`].

use super::{Break, Port, Xen, DOMID, NR_PORTS};
use crate::personas::{GuestCx, Hypercall, HypercallAction};
use pvops_abi::exit::ExitCode;
use pvops_abi::xen::{self as abi, errno, hypercall as nr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// What a handler produced.
enum Done {
    /// A result for RAX.
    Value(u64),
    /// End the run (`SCHEDOP_shutdown`).
    Exit(u32),
}

type Res = Result<Done, i64>;

const OK: Res = Ok(Done::Value(0));

/// The counter code of hypercall `rax` with first argument `rdi`.
pub fn counter_code(rax: u64, rdi: u64) -> u64 {
    let Ok(n) = u32::try_from(rax) else {
        return 0xFF_FFFF_FFFF;
    };
    let sub = match n {
        nr::MEMORY_OP => rdi & abi::MEMOP_CMD_MASK,
        nr::XEN_VERSION | nr::VCPU_OP | nr::SCHED_OP | nr::EVENT_CHANNEL_OP | nr::HVM_OP => {
            rdi.min(0xFF)
        }
        _ => 0,
    };
    (u64::from(n) << 8) | sub
}

/// Reads a `T` at guest-virtual `gva`.
fn read<T: FromBytes + IntoBytes>(x: &mut Xen, cx: &GuestCx<'_>, gva: u64) -> Result<T, i64> {
    let mut v = T::new_zeroed();
    match cx.read_virt(gva, v.as_mut_bytes()) {
        Some(()) => Ok(v),
        None => {
            x.stats.efault += 1;
            Err(-errno::EFAULT)
        }
    }
}

/// Writes `bytes` at guest-virtual `gva`.
fn write<T: IntoBytes + Immutable>(x: &mut Xen, cx: &GuestCx<'_>, gva: u64, v: &T) -> Res {
    match cx.write_virt(gva, v.as_bytes()) {
        Some(()) => OK,
        None => {
            x.stats.efault += 1;
            Err(-errno::EFAULT)
        }
    }
}

/// DOMID_SELF or this domain's own id; any other domain does not exist
/// for this guest (Xen `rcu_lock_domain_by_any_id` → -ESRCH).
fn self_domain(domid: u16) -> Result<(), i64> {
    if domid == abi::DOMID_SELF || domid == DOMID {
        Ok(())
    } else {
        Err(-errno::ESRCH)
    }
}

impl Xen {
    /// Handles one hypercall.
    pub(super) fn dispatch(&mut self, cx: &mut GuestCx<'_>) -> Hypercall {
        let rax = cx.state.rax;
        let (a1, a2, a3) = (cx.regs.rdi, cx.regs.rsi, cx.regs.rdx);
        let code = counter_code(rax, a1);
        // Xen `hvm_hypercall`: hypercalls from user mode are -EPERM.
        let res = if cx.state.cpl != 0 {
            Err(-errno::EPERM)
        } else {
            match u32::try_from(rax).unwrap_or(u32::MAX) {
                nr::XEN_VERSION => self.xen_version(cx, a1, a2),
                nr::MEMORY_OP => self.memory_op(cx, a1, a2),
                nr::HVM_OP => self.hvm_op(cx, a1, a2),
                nr::EVENT_CHANNEL_OP => self.event_channel_op(cx, a1, a2),
                nr::VCPU_OP => self.vcpu_op(cx, a1, a2, a3),
                nr::SCHED_OP => self.sched_op(cx, a1, a2),
                _ => Err(-errno::ENOSYS),
            }
        };
        let action = match res {
            Ok(Done::Exit(value)) => HypercallAction::Exit(value),
            Ok(Done::Value(v)) => {
                cx.state.rax = v;
                HypercallAction::Return
            }
            Err(e) => {
                cx.state.rax = e as u64;
                HypercallAction::Return
            }
        };
        Hypercall { code, action }
    }

    /// `xen_version`: `XENVER_version` and `XENVER_get_features` (Xen
    /// `do_xen_version` answers -ENOSYS to commands it does not know).
    fn xen_version(&mut self, cx: &mut GuestCx<'_>, cmd: u64, arg: u64) -> Res {
        match u32::try_from(cmd) {
            Ok(abi::XENVER_VERSION) => Ok(Done::Value(u64::from(self.version().to_eax()))),
            Ok(abi::XENVER_GET_FEATURES) => {
                let mut fi: abi::FeatureInfo = read(self, cx, arg)?;
                // Submap 0 of an HVM guest (xen/common/kernel.c): writable
                // page tables and auto-translated physmap (paging mode
                // translate), safe pvclock, callback vector.
                fi.submap = if fi.submap_idx == 0 {
                    1 | 1 << 2
                        | 1 << abi::XENFEAT_HVM_CALLBACK_VECTOR
                        | 1 << abi::XENFEAT_HVM_SAFE_PVCLOCK
                } else {
                    0
                };
                write(self, cx, arg, &fi)
            }
            _ => Err(-errno::ENOSYS),
        }
    }

    /// `memory_op`: only `XENMEM_add_to_physmap` of shared_info.
    fn memory_op(&mut self, cx: &mut GuestCx<'_>, cmd: u64, arg: u64) -> Res {
        if cmd & abi::MEMOP_CMD_MASK != u64::from(abi::XENMEM_ADD_TO_PHYSMAP) {
            return Err(-errno::ENOSYS);
        }
        let a: abi::AddToPhysmap = read(self, cx, arg)?;
        self_domain(a.domid)?;
        if a.space != abi::XENMAPSPACE_SHARED_INFO {
            // Other spaces (grant table, gmfn...) are not offered
            // (`xenmem_add_to_physmap_one` default: -ENOSYS).
            return Err(-errno::ENOSYS);
        }
        if a.idx != 0 || self.brk == Some(Break::SharedInfo) {
            // Xen: shared_info has only index 0, anything else -EINVAL.
            return Err(-errno::EINVAL);
        }
        self.map_shared_info(cx, a.gpfn)?;
        OK
    }

    /// `hvm_op`: `HVMOP_set_evtchn_upcall_vector` (Xen
    /// `hvmop_set_evtchn_upcall_vector`: vector below 0x10 -EINVAL, unknown
    /// vCPU -ENOENT), and get/set of `HVM_PARAM_CALLBACK_IRQ` only (other
    /// parameters -EINVAL; QEMU's emulation has no get: -ENOSYS); delivery
    /// type vector only (GSI/PCI INTx callbacks are refused with -EINVAL; 0
    /// turns delivery off).
    fn hvm_op(&mut self, cx: &mut GuestCx<'_>, op: u64, arg: u64) -> Res {
        let set = match u32::try_from(op) {
            Ok(abi::HVMOP_SET_PARAM) => true,
            Ok(abi::HVMOP_GET_PARAM) if !self.knobs.qemu => false,
            Ok(abi::HVMOP_SET_EVTCHN_UPCALL_VECTOR) => {
                let u: abi::HvmEvtchnUpcallVector = read(self, cx, arg)?;
                if u.vector < 0x10 {
                    return Err(-errno::EINVAL);
                }
                let vcpu = self.vcpu_id(cx, u.vcpu)?;
                self.vcpu(vcpu).upcall_vector = Some(u.vector);
                if self.upcall_pending(cx, vcpu) {
                    self.raise_callback(cx, vcpu);
                }
                return OK;
            }
            _ => return Err(-errno::ENOSYS),
        };
        let mut p: abi::HvmParam = read(self, cx, arg)?;
        self_domain(p.domid)?;
        if p.index != abi::HVM_PARAM_CALLBACK_IRQ {
            return Err(-errno::EINVAL);
        }
        if !set {
            p.value = self.callback;
            return write(self, cx, arg, &p);
        }
        let kind = p.value >> abi::HVM_PARAM_CALLBACK_TYPE_SHIFT;
        let vector = p.value as u8;
        let ok = p.value == 0
            || (kind == abi::HVM_PARAM_CALLBACK_TYPE_VECTOR
                && vector >= 16
                && p.value & !(0xFF | (0xFF << abi::HVM_PARAM_CALLBACK_TYPE_SHIFT)) == 0);
        if !ok {
            return Err(-errno::EINVAL);
        }
        self.callback = p.value;
        // An upcall already pending is delivered through the new vector
        // (Xen's callback-via injection looks at `evtchn_upcall_pending`).
        for vcpu in 0..self.vcpus {
            if self.upcall_pending(cx, vcpu) {
                self.raise_callback(cx, vcpu);
            }
        }
        OK
    }

    /// `event_channel_op`: bind_virq, bind_ipi, send, unmask.
    fn event_channel_op(&mut self, cx: &mut GuestCx<'_>, op: u64, arg: u64) -> Res {
        match u32::try_from(op) {
            Ok(abi::EVTCHNOP_BIND_VIRQ) => {
                let mut b: abi::EvtchnBindVirq = read(self, cx, arg)?;
                // Xen `evtchn_bind_virq`: bad VIRQ -EINVAL, no such vCPU
                // -ENOENT, already bound -EEXIST, no free port -ENOSPC.
                if b.virq >= abi::NR_VIRQS {
                    return Err(-errno::EINVAL);
                }
                let vcpu = self.vcpu_id(cx, b.vcpu)?;
                if self.port_of(b.virq, vcpu).is_some() {
                    return Err(-errno::EEXIST);
                }
                if self.brk == Some(Break::Evtchn) {
                    return Err(-errno::ENOSPC);
                }
                b.port = self
                    .alloc_port(Port::Virq(b.virq as u8), vcpu)
                    .ok_or(-errno::ENOSPC)?;
                write(self, cx, arg, &b)
            }
            Ok(abi::EVTCHNOP_BIND_IPI) => {
                // Xen `evtchn_bind_ipi`: the port notifies `vcpu` (any vCPU
                // of the domain; none such -ENOENT).
                let mut b: abi::EvtchnBindIpi = read(self, cx, arg)?;
                let vcpu = self.vcpu_id(cx, b.vcpu)?;
                b.port = self.alloc_port(Port::Ipi, vcpu).ok_or(-errno::ENOSPC)?;
                write(self, cx, arg, &b)
            }
            Ok(abi::EVTCHNOP_BIND_VCPU) => {
                // Xen `evtchn_bind_vcpu`: no such vCPU -ENOENT, invalid
                // port -EINVAL; unbound and interdomain ports (and global
                // VIRQs, none here) move, per-vCPU VIRQs and IPIs -EINVAL.
                let b: abi::EvtchnBindVcpu = read(self, cx, arg)?;
                let vcpu = self.vcpu_id(cx, b.vcpu)?;
                match self.ports.get(b.port as usize) {
                    Some(Port::Toolstack) => {
                        self.notify[b.port as usize] = vcpu as u8;
                        OK
                    }
                    _ => Err(-errno::EINVAL),
                }
            }
            Ok(abi::EVTCHNOP_SEND) => {
                let p: abi::EvtchnPort = read(self, cx, arg)?;
                // Xen `evtchn_send`: only interdomain/IPI ports can be
                // sent to; VIRQ ports and invalid ports are -EINVAL.
                match self.ports.get(p.port as usize) {
                    Some(Port::Ipi) => {
                        self.set_pending(cx, p.port);
                        OK
                    }
                    // The remote end (not modelled) is notified.
                    Some(Port::Toolstack) => OK,
                    _ => Err(-errno::EINVAL),
                }
            }
            Ok(abi::EVTCHNOP_UNMASK) => {
                let p: abi::EvtchnPort = read(self, cx, arg)?;
                // Xen: `port_is_valid` or -EINVAL.
                if p.port as usize >= NR_PORTS {
                    return Err(-errno::EINVAL);
                }
                self.unmask(cx, p.port);
                OK
            }
            _ => Err(-errno::ENOSYS),
        }
    }

    /// A vCPU id of this domain, or -ENOENT (Xen `domain_vcpu`).
    fn vcpu_id(&self, cx: &GuestCx<'_>, id: u32) -> Result<usize, i64> {
        let n = if self.vcpus > 1 {
            self.vcpus
        } else {
            cx.vcpus.max(1)
        };
        match usize::try_from(id) {
            Ok(v) if v < n && v < super::MAX_VCPUS => Ok(v),
            _ => Err(-errno::ENOENT),
        }
    }

    /// `vcpu_op(cmd, vcpu, arg)` (Xen `do_vcpu_op`: -ENOENT for a vCPU
    /// that does not exist). The singleshot timer ops act on the calling
    /// vCPU only (`v != current` → -EINVAL, common/domain.c).
    fn vcpu_op(&mut self, cx: &mut GuestCx<'_>, cmd: u64, vcpu: u64, arg: u64) -> Res {
        let vcpu = self.vcpu_id(cx, u32::try_from(vcpu).unwrap_or(u32::MAX))?;
        let own = vcpu == cx.vcpu;
        match u32::try_from(cmd) {
            Ok(abi::VCPUOP_SET_SINGLESHOT_TIMER | abi::VCPUOP_STOP_SINGLESHOT_TIMER) if !own => {
                Err(-errno::EINVAL)
            }
            Ok(abi::VCPUOP_SET_SINGLESHOT_TIMER)
                if self.brk == Some(super::Break::TimerSecondFails)
                    && self.stats.timer_set >= 1 =>
            {
                Err(-errno::EINVAL)
            }
            Ok(abi::VCPUOP_SET_SINGLESHOT_TIMER) => {
                let t: abi::VcpuSetSingleshotTimer = read(self, cx, arg)?;
                // Current Xen (and QEMU) ignore `flags`, VCPU_SSHOTTMR_future
                // included (review F11): a deadline already passed fires at
                // once.
                let due = self.tsc_at(cx.now, t.timeout_abs_ns);
                self.vcpu(vcpu).timer = Some(due);
                self.stats.timer_set += 1;
                OK
            }
            Ok(abi::VCPUOP_STOP_SINGLESHOT_TIMER) => {
                self.vcpu(vcpu).timer = None;
                OK
            }
            // There is no periodic timer (Xen's default period is 0 for
            // HVM); stopping it succeeds.
            Ok(abi::VCPUOP_STOP_PERIODIC_TIMER) => OK,
            Ok(abi::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA) => {
                let a: abi::VcpuRegisterRunstateMemoryArea = read(self, cx, arg)?;
                self.register_runstate(cx, vcpu, a.addr)?;
                OK
            }
            Ok(abi::VCPUOP_GET_RUNSTATE_INFO) if own => {
                let info = self.runstate_info(cx);
                write(self, cx, arg, &info)
            }
            // Another vCPU's: it is not running (it is descheduled while
            // this one runs); its area, if any, holds its last update.
            Ok(abi::VCPUOP_GET_RUNSTATE_INFO) => match self.vcpu_ref(vcpu).runstate {
                Some(r) => {
                    let info: abi::VcpuRunstateInfo = read(self, cx, r.gva)?;
                    write(self, cx, arg, &info)
                }
                None => write(self, cx, arg, &abi::VcpuRunstateInfo::default()),
            },
            Ok(abi::VCPUOP_REGISTER_VCPU_INFO) => {
                let r: abi::VcpuRegisterVcpuInfo = read(self, cx, arg)?;
                self.register_vcpu_info(cx, vcpu, r.mfn, r.offset)?;
                OK
            }
            _ => Err(-errno::ENOSYS),
        }
    }

    /// The host TSC at which pvclock time `ns` is reached: the first tick at
    /// which the guest's own reading of the published clock is >= `ns`
    /// (`now` if already passed).
    fn tsc_at(&self, now: u64, ns: u64) -> u64 {
        let t = &self.time;
        let base = t.system_time;
        if ns <= self.system_ns(now) {
            return now;
        }
        let delta = ns.saturating_sub(base);
        match pvops_abi::pvclock::delta_for_ns(delta, t.tsc_to_system_mul, t.tsc_shift) {
            Some(d) => t.tsc_timestamp.saturating_add(d),
            // No clock rate or beyond 64 bits of TSC: never.
            None => u64::MAX,
        }
    }

    /// `sched_op`: yield and block return 0 at once (see
    /// `docs/backends/xen.md`: the guest sleeps with `sti; hlt`, which the
    /// microvisor's HLT exit turns into a sleep until an interrupt is
    /// deliverable); shutdown ends the run: poweroff passes, crash and
    /// watchdog fail, reboot fails (the run cannot continue). Suspend is
    /// not offered (-EOPNOTSUPP); unknown reasons -EINVAL.
    fn sched_op(&mut self, cx: &mut GuestCx<'_>, cmd: u64, arg: u64) -> Res {
        match u32::try_from(cmd) {
            // SCHEDOP_yield ends the slice (Xen `vcpu_yield`); SCHEDOP_block
            // returns at once, as before (the guest sleeps with HLT).
            Ok(abi::SCHEDOP_YIELD) => {
                self.update_runstate(cx);
                if self.vcpus > 1 {
                    cx.requests.yield_now = true;
                }
                OK
            }
            Ok(abi::SCHEDOP_BLOCK) => {
                self.update_runstate(cx);
                OK
            }
            // SCHEDOP_poll (sched.h; Xen `do_poll`, common/sched/core.c):
            // the arguments are checked as Xen does (-EFAULT, -EINVAL);
            // it returns at once if a polled port is pending or the
            // timeout (an ABSOLUTE system time, armed with `set_timer`)
            // has passed; otherwise the vCPU blocks until an event on one
            // of the ports (`evtchn_check_pollers`) or the timeout, with
            // interrupts on or off. The block is the vCPU code's halt
            // (`Requests::block`), ended by a kick from `set_pending` or
            // from `poll` at the deadline (or early by a deliverable
            // interrupt, which Xen's `local_events_need_delivery` check
            // also honours). With one vCPU nothing can send to the port
            // while it sleeps and the guest re-checks its condition after
            // every poll, so it returns at once (an early wake-up), as
            // before.
            Ok(abi::SCHEDOP_POLL) => {
                let p: abi::SchedPoll = read(self, cx, arg)?;
                if p.nr_ports > 128 {
                    return Err(-errno::EINVAL);
                }
                let mut ports = 0u64;
                let mut pending = false;
                for i in 0..u64::from(p.nr_ports) {
                    let port: u32 = read(self, cx, p.ports.wrapping_add(4 * i))?;
                    if port as usize >= NR_PORTS {
                        return Err(-errno::EINVAL);
                    }
                    ports |= 1 << port;
                    pending |= self.port_pending(cx, port);
                }
                self.update_runstate(cx);
                let deadline = (p.timeout != 0).then(|| self.tsc_at(cx.now, p.timeout));
                let passed = deadline.is_some_and(|d| d <= cx.now);
                if self.vcpus > 1 && !pending && !passed && ports != 0 {
                    self.block_poll(cx, ports, deadline);
                }
                OK
            }
            Ok(abi::SCHEDOP_SHUTDOWN) => {
                let s: abi::SchedShutdown = read(self, cx, arg)?;
                self.update_runstate(cx);
                match s.reason {
                    abi::SHUTDOWN_POWEROFF => Ok(Done::Exit(ExitCode::Pass as u32)),
                    abi::SHUTDOWN_CRASH | abi::SHUTDOWN_WATCHDOG | abi::SHUTDOWN_REBOOT => {
                        Ok(Done::Exit(ExitCode::Fail as u32))
                    }
                    abi::SHUTDOWN_SUSPEND => Err(-errno::EOPNOTSUPP),
                    _ => Err(-errno::EINVAL),
                }
            }
            _ => Err(-errno::ENOSYS),
        }
    }
}
