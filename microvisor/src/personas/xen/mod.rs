//! `xen` and `xen+viridian`: the subset of the Xen HVM interface the guest's
//! `xen` backend uses (`docs/backends/xen.md`), built on `pvops_abi::xen`
//! and `pvops_abi::pvclock` (the same definitions the backend uses).
//!
//! - CPUID ([`cpuid`]): "XenVMMXenVMM" at 0x4000_0000 with leaves up to
//!   base+4 (version 4.19, one hypercall page through MSR 0x4000_0000, TSC
//!   leaf, HVM leaf); with Viridian, a minimal "Microsoft Hv"/"Hv#1" at
//!   0x4000_0000 and Xen at 0x4000_0100 with its MSR at 0x4000_0200, as Xen
//!   does.
//! - The hypercall page: a WRMSR of its GPA fills it with 32-byte stubs
//!   `mov $nr, %eax; vmmcall; ret` and `int3` padding.
//! - Hypercalls ([`hypercalls`]): `xen_version`, `memory_op`
//!   (add_to_physmap of shared_info), `hvm_op` (get/set
//!   `HVM_PARAM_CALLBACK_IRQ`), `event_channel_op` (bind_virq, bind_ipi,
//!   send, unmask), `vcpu_op` (set/stop singleshot timer, stop periodic
//!   timer, register runstate area), `sched_op` (yield, block, shutdown).
//! - shared_info, pvclock and event channels ([`shared`]): the guest page
//!   named by add_to_physmap *is* shared_info from then on; the persona
//!   writes vCPU 0's `vcpu_time_info`, the pending/mask/selector words and
//!   `evtchn_upcall_pending` there and raises the callback vector through
//!   the virtual APIC.
//! - The singleshot timer: a deadline in host TSC ticks
//!   ([`Persona::next_deadline`]), fired from [`Persona::poll`] as
//!   `VIRQ_TIMER`.
//!
//! `break=<step>` switches (for the guest's fallback tests), each making one
//! setup step of the backend fail: `hypercall-page` (the MSR write is
//! accepted, the page never filled), `shared-info` (`XENMEM_add_to_physmap`
//! answers -EINVAL), `pvclock-odd` (`vcpu_time_info.version` stays odd),
//! `evtchn` (`EVTCHNOP_bind_virq` answers -ENOSPC).
//!
//! Design notes, limits and the counter codes are in `docs/backends/xen.md`,
//! "The microvisor persona".

mod cpuid;
mod hypercalls;
mod shared;

use super::{GuestCx, Hypercall, Persona, SelectError};
use crate::guest::Gp;
use pvops_abi::pvclock::{self, VcpuTimeInfo};
use pvops_abi::xen as abi;

pub use hypercalls::counter_code;

/// The Xen version reported by base+1 and `xen_version(XENVER_version)`.
pub const VERSION: abi::Version = abi::Version {
    major: 4,
    minor: 19,
};
/// This domain's id (base+4 ECX): an ordinary domU.
pub const DOMID: u16 = 1;
/// Event-channel ports handed out: 1..NR_PORTS (port 0 is reserved, as
/// Xen's `ECS_RESERVED`), all in the first word of the 2-level ABI.
pub const NR_PORTS: usize = 16;
/// The `break=` steps this persona knows.
pub const BREAKS: &[&str] = &["hypercall-page", "shared-info", "pvclock-odd", "evtchn"];

/// A setup step broken on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Break {
    /// The hypercall page is never filled.
    HypercallPage,
    /// `XENMEM_add_to_physmap` fails.
    SharedInfo,
    /// `vcpu_time_info.version` stays odd.
    PvclockOdd,
    /// `EVTCHNOP_bind_virq` fails.
    Evtchn,
}

impl Break {
    fn parse(step: &str) -> Option<Break> {
        Some(match step {
            "hypercall-page" => Break::HypercallPage,
            "shared-info" => Break::SharedInfo,
            "pvclock-odd" => Break::PvclockOdd,
            "evtchn" => Break::Evtchn,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Break::HypercallPage => "hypercall-page",
            Break::SharedInfo => "shared-info",
            Break::PvclockOdd => "pvclock-odd",
            Break::Evtchn => "evtchn",
        }
    }
}

/// What an event-channel port is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    /// Not allocated.
    Free,
    /// A virtual IRQ of vCPU 0 (below `NR_VIRQS`, 24).
    Virq(u8),
    /// An IPI to vCPU 0 (raised by `EVTCHNOP_send`).
    Ipi,
}

/// The registered runstate area.
#[derive(Clone, Copy, Debug)]
struct Runstate {
    /// Guest-virtual address of the `vcpu_runstate_info`.
    gva: u64,
    /// System time (ns) of the registration: the vCPU has been running
    /// since, as far as the persona can tell.
    since_ns: u64,
}

/// Event and call statistics for the end-of-run report.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    /// `VCPUOP_set_singleshot_timer` calls accepted.
    timer_set: u64,
    /// Singleshot timers that expired.
    timer_fired: u64,
    /// Ports newly set pending.
    events: u64,
    /// Callback-vector interrupts raised (0→1 of `evtchn_upcall_pending`).
    upcalls: u64,
    /// Hypercalls answered -EFAULT (bad guest pointers).
    efault: u64,
    /// pvclock publications.
    publishes: u64,
}

/// The `xen` persona.
#[derive(Debug)]
pub struct Xen {
    viridian: bool,
    brk: Option<Break>,
    tsc_khz: u64,
    /// vCPU 0's pvclock as last published (or as it will be once
    /// shared_info is mapped): the timebase of every time the persona reads
    /// or writes (`system_time` at `tsc_timestamp`, scaled by mul/shift).
    time: VcpuTimeInfo,
    /// GPA of the hypercall page, once registered.
    hypercall_page: Option<u64>,
    /// GPA of shared_info, once mapped.
    shared_info: Option<u64>,
    /// `HVM_PARAM_CALLBACK_IRQ` as set by the guest.
    callback: u64,
    ports: [Port; NR_PORTS],
    /// Host TSC at which the singleshot timer fires.
    timer: Option<u64>,
    runstate: Option<Runstate>,
    stats: Stats,
}

impl Xen {
    /// A Xen persona, with a Viridian (Hyper-V) signature below it if asked.
    pub fn new(viridian: bool, break_step: Option<&str>) -> Result<Self, SelectError> {
        let brk = match break_step {
            None => None,
            Some(s) => Some(Break::parse(s).ok_or(SelectError::UnknownBreak)?),
        };
        Ok(Xen {
            viridian,
            brk,
            tsc_khz: 0,
            time: VcpuTimeInfo::default(),
            hypercall_page: None,
            shared_info: None,
            callback: 0,
            ports: [Port::Free; NR_PORTS],
            timer: None,
            runstate: None,
            stats: Stats::default(),
        })
    }

    /// The CPUID base of the Xen leaves.
    pub fn base(&self) -> u32 {
        if self.viridian {
            abi::VIRIDIAN_XEN_BASE
        } else {
            super::HV_LEAF_BASE
        }
    }

    /// The hypercall-page MSR (base+2 EBX).
    pub fn hypercall_msr(&self) -> u32 {
        if self.viridian {
            abi::HYPERCALL_MSR_VIRIDIAN
        } else {
            abi::HYPERCALL_MSR
        }
    }

    /// Sets the pvclock scale for a TSC of `khz` (once known).
    fn set_scale(&mut self, khz: u64) {
        if khz == 0 || self.time.tsc_to_system_mul != 0 {
            return;
        }
        if let Some((mul, shift)) = pvclock::time_scale(khz) {
            self.tsc_khz = khz;
            self.time.tsc_to_system_mul = mul;
            self.time.tsc_shift = shift;
            // One vCPU: trivially synchronised.
            self.time.flags = pvclock::FLAG_TSC_STABLE;
        }
    }

    /// Xen system time (ns) at host TSC `tsc`, in the published timebase.
    fn system_ns(&self, tsc: u64) -> u64 {
        self.time.ns_at(tsc)
    }

    /// The callback vector, when `HVM_PARAM_CALLBACK_IRQ` selects vector
    /// delivery.
    fn callback_vector(&self) -> Option<u8> {
        (self.callback >> abi::HVM_PARAM_CALLBACK_TYPE_SHIFT == abi::HVM_PARAM_CALLBACK_TYPE_VECTOR)
            .then_some(self.callback as u8)
    }

    /// Fires the singleshot timer if due.
    fn fire_timer(&mut self, cx: &mut GuestCx<'_>) {
        let Some(due) = self.timer else { return };
        if cx.now < due {
            return;
        }
        self.timer = None;
        self.stats.timer_fired += 1;
        self.send_virq(cx, abi::VIRQ_TIMER);
        self.update_runstate(cx);
    }
}

impl Persona for Xen {
    fn name(&self) -> &'static str {
        if self.viridian {
            "xen+viridian"
        } else {
            "xen"
        }
    }

    fn hypervisor_bit(&self) -> bool {
        true
    }

    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        cpuid::leaf(self, leaf, subleaf)
    }

    fn wrmsr(&mut self, cx: &mut GuestCx<'_>, msr: u32, value: u64) -> Option<Result<(), Gp>> {
        (msr == self.hypercall_msr()).then(|| self.write_hypercall_msr(cx, value))
    }

    fn hypercall(&mut self, cx: &mut GuestCx<'_>) -> Hypercall {
        self.set_scale(cx.tsc_khz);
        self.dispatch(cx)
    }

    fn set_clock(&mut self, tsc_khz: u64, _apic_bus_khz: u64) {
        self.set_scale(tsc_khz);
    }

    fn next_deadline(&self) -> Option<u64> {
        self.timer
    }

    fn poll(&mut self, cx: &mut GuestCx<'_>) {
        if self.timer.is_some() {
            self.fire_timer(cx);
        }
        if self.shared_info.is_some() {
            self.maybe_refresh(cx);
        }
    }

    fn report(&self) {
        let s = &self.stats;
        bootkit::record!(
            "mv.xen",
            base = format_args!("{:#x}", self.base()),
            hypercall_page = Opt(self.hypercall_page),
            shared_info = Opt(self.shared_info),
            callback = format_args!("{:#x}", self.callback),
            timer_port = Opt(self.port_of(abi::VIRQ_TIMER).map(u64::from)),
            runstate = Opt(self.runstate.map(|r| r.gva)),
            timers_set = s.timer_set,
            timers_fired = s.timer_fired,
            events = s.events,
            upcalls = s.upcalls,
            pvclock_updates = s.publishes,
            efault = s.efault,
            broken = self.brk.map_or("none", Break::name),
        );
    }
}

/// An optional address for a record: hex, or `none`.
struct Opt(Option<u64>);

impl core::fmt::Display for Opt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v:#x}"),
            None => f.write_str("none"),
        }
    }
}

#[cfg(test)]
mod tests;
