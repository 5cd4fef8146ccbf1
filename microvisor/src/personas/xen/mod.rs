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
//! - Event channels as a toolstack leaves them: ports 1 (xenstore) and 2
//!   (console) are allocated before the guest runs, in word 0 with the
//!   ports the guest binds (libxl `xc_evtchn_alloc_unbound` for
//!   `store_port` and `console_port`); shared_info starts zeroed, so they
//!   are unmasked until the guest masks them.
//! - Upcall delivery, both of Xen's models: the per-vCPU upcall vector
//!   (`HVMOP_set_evtchn_upcall_vector`, advertised in base+4 EAX bit 6 as
//!   Xen 4.17+ does) goes through the virtual APIC (IRR, ISR, EOI due), raised
//!   on each 0->1 of `evtchn_upcall_pending`; the callback-via vector
//!   (`HVM_PARAM_CALLBACK_IRQ` type 2) is injected directly, as Xen's
//!   `hvm_intack_vector`: no ISR bit (an EOI after it finds nothing in
//!   service and is counted as `idle_eois`), and re-asserted at every entry
//!   while `evtchn_upcall_pending` stays set.
//!
//! `break=<word>[+<word>...]`: at most one setup step broken on purpose
//! (for the guest's fallback tests): `hypercall-page` (the MSR write is
//! accepted, the page never filled), `shared-info` (`XENMEM_add_to_physmap`
//! answers -EINVAL), `pvclock-odd` (`vcpu_time_info.version` stays odd),
//! `evtchn` (`EVTCHNOP_bind_virq` answers -ENOSPC); and behaviours of real
//! hosts ([`KNOBS`]): `noisy-ports` (the console and xenstore ports get
//! events during the boot, as xenconsoled and xenstored send them),
//! `callback-via` (no base+4 upcall-vector bit: Xen before 4.17),
//! `qemu` (QEMU's Xen emulation on KVM: version 4.10, `HVMOP_get_param`
//! -ENOSYS, base+3 sub-leaf 0 holding the TSC kHz and the pvclock
//! multiplier and shift instead of Xen's layout).
//!
//! The lying-hypervisor matrix (issue 16, `docs/lying-hypervisors.md`) adds
//! the steps `signature-only` ("XenVMMXenVMM" with max leaf base+0: no
//! version, hypercall or time leaf), `absurd-frequency` (the pvclock scale
//! says the TSC runs at 1 kHz; base+3 tells the truth) and
//! `timer-second-fails` (the first `VCPUOP_set_singleshot_timer` is
//! accepted, every later one answers -EINVAL) and `pvclock-backwards` (the
//! pvclock is republished before every guest entry, one in
//! [`BACKWARDS_EVERY`] [`BACKWARDS_LAG_NS`] behind and the next one back on
//! time: the clock steps back, then forward again).
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
/// Xen's `ECS_RESERVED`), all in the first word of the 2-level ABI (64
/// ports: a timer and an IPI port per vCPU for up to [`MAX_VCPUS`] fit).
pub const NR_PORTS: usize = 64;
/// vCPUs the persona keeps state for (the microvisor's limit).
pub const MAX_VCPUS: usize = 8;
/// The `break=` steps this persona knows.
pub const BREAKS: &[&str] = &[
    "hypercall-page",
    "shared-info",
    "pvclock-odd",
    "evtchn",
    "signature-only",
    "absurd-frequency",
    "timer-second-fails",
    "pvclock-backwards",
];

/// How far `break=pvclock-backwards` steps the clock back (5 ms: more than
/// a loaded host takes between two guest clock reads around an exit).
pub const BACKWARDS_LAG_NS: u64 = 5_000_000;
/// One publication in this many steps back.
pub const BACKWARDS_EVERY: u64 = 64;
/// The behaviour words `break=` also takes (combined with `+`).
pub const KNOBS: &[&str] = &["noisy-ports", "callback-via", "qemu"];
/// The toolstack's xenstore port (libxl `store_port`).
pub const XENSTORE_PORT: u32 = 1;
/// The toolstack's console port (libxl `console_port`).
pub const CONSOLE_PORT: u32 = 2;
/// QEMU's `xen-version=0x4000a` of the nested real-peer runs.
pub const QEMU_VERSION: abi::Version = abi::Version {
    major: 4,
    minor: 10,
};

/// Behaviours of real hosts, chosen with `break=` words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Knobs {
    /// Events on the console and xenstore ports during the boot.
    pub noisy_ports: bool,
    /// No `XEN_HVM_CPUID_UPCALL_VECTOR` in base+4.
    pub callback_via_only: bool,
    /// QEMU's Xen emulation.
    pub qemu: bool,
}

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
    /// Max leaf base+0: the signature alone.
    SignatureOnly,
    /// The pvclock scale says 1 kHz.
    AbsurdFrequency,
    /// Singleshot timers after the first answer -EINVAL.
    TimerSecondFails,
    /// The pvclock steps back every other publication.
    PvclockBackwards,
}

impl Break {
    fn parse(step: &str) -> Option<Break> {
        Some(match step {
            "hypercall-page" => Break::HypercallPage,
            "shared-info" => Break::SharedInfo,
            "pvclock-odd" => Break::PvclockOdd,
            "evtchn" => Break::Evtchn,
            "signature-only" => Break::SignatureOnly,
            "absurd-frequency" => Break::AbsurdFrequency,
            "timer-second-fails" => Break::TimerSecondFails,
            "pvclock-backwards" => Break::PvclockBackwards,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        BREAKS[self as usize]
    }
}

/// What an event-channel port is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    /// Not allocated.
    Free,
    /// A virtual IRQ (below `NR_VIRQS`, 24) of the port's vCPU.
    Virq(u8),
    /// An IPI to the port's vCPU (raised by `EVTCHNOP_send`).
    Ipi,
    /// Allocated by the toolstack for a backend in another domain
    /// (xenstore, console): unbound interdomain, as far as the guest knows.
    Toolstack,
}

/// The registered runstate area.
#[derive(Clone, Copy, Debug)]
struct Runstate {
    /// Guest-virtual address of the `vcpu_runstate_info`.
    gva: u64,
}

/// A `SCHEDOP_poll` in progress (Xen `do_poll`: the vCPU is blocked on
/// `poll_mask` until one of the ports is set pending or the timer fires).
#[derive(Clone, Copy, Debug)]
struct Poll {
    /// The polled ports (bit `p` = port `p`).
    ports: u64,
    /// Host TSC of the timeout, if any.
    deadline: Option<u64>,
}

impl PerVcpu {
    /// Starts the runstate accounting at system time `now` (running) if
    /// it has not started.
    fn start_accounting(&mut self, now: u64) {
        if self.since_ns.is_none() {
            self.since_ns = Some(now);
            self.state = abi::RUNSTATE_RUNNING;
            self.entry_ns = now;
        }
    }
}

/// One vCPU's state (Xen keeps it in `struct vcpu`).
#[derive(Clone, Copy, Debug, Default)]
struct PerVcpu {
    /// GPA of its `vcpu_info` once moved by `VCPUOP_register_vcpu_info`
    /// (else shared_info's slot, for vCPUs below `XEN_LEGACY_MAX_VCPUS`).
    vcpu_info: Option<u64>,
    /// Its upcall vector (`HVMOP_set_evtchn_upcall_vector`).
    upcall_vector: Option<u8>,
    /// Host TSC at which its singleshot timer fires.
    timer: Option<u64>,
    runstate: Option<Runstate>,
    /// System time (ns) the runstate accounting starts at (its first
    /// registration or query).
    since_ns: Option<u64>,
    /// Its `RUNSTATE_*` as the scheduler left it (several vCPUs only):
    /// running, runnable while preempted, blocked while halted or polling.
    state: usize,
    /// System time (ns) it entered `state` (`state_entry_time`).
    entry_ns: u64,
    /// Time running in finished running spans, ns.
    running_ns: u64,
    poll: Option<Poll>,
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
    /// Events raised on the toolstack's ports (`noisy-ports`).
    noise: u64,
    /// Callback-via injections (no ISR bit set).
    direct_injections: u64,
    /// EOIs the guest wrote with nothing in service (the virtual APIC's
    /// count, sampled at every poll).
    idle_eois: u64,
    /// `SCHEDOP_poll` calls that blocked.
    polls_blocked: u64,
    /// Blocked polls ended (an event on a polled port or the timeout).
    poll_wakes: u64,
    /// Events sent to another vCPU (an IPI raised).
    cross_events: u64,
}

/// The `xen` persona.
#[derive(Debug)]
pub struct Xen {
    viridian: bool,
    brk: Option<Break>,
    knobs: Knobs,
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
    /// The vCPU each port notifies (Xen `notify_vcpu_id`).
    notify: [u8; NR_PORTS],
    /// Per-vCPU state; a vCPU's upcall vector takes precedence over the
    /// callback via.
    per: [PerVcpu; MAX_VCPUS],
    /// The guest's vCPUs ([`Persona::set_vcpus`]; 1 until told).
    vcpus: usize,
    /// The vCPU that runs now (as of the last poll or handler), for CPUID
    /// base+4's vCPU id.
    current: usize,
    stats: Stats,
    /// Viridian's HV_X64_MSR_GUEST_OS_ID.
    guest_os_id: u64,
    /// Viridian's HV_X64_MSR_HYPERCALL (enabling is accepted, no page).
    viridian_hypercall: u64,
}

impl Xen {
    /// A Xen persona, with a Viridian (Hyper-V) signature below it if asked.
    pub fn new(viridian: bool, break_step: Option<&str>) -> Result<Self, SelectError> {
        let mut brk = None;
        let mut knobs = Knobs::default();
        for word in break_step.into_iter().flat_map(|s| s.split('+')) {
            match word {
                "noisy-ports" => knobs.noisy_ports = true,
                "callback-via" => knobs.callback_via_only = true,
                "qemu" => knobs.qemu = true,
                _ => match Break::parse(word) {
                    Some(b) if brk.is_none() => brk = Some(b),
                    _ => return Err(SelectError::UnknownBreak),
                },
            }
        }
        let mut ports = [Port::Free; NR_PORTS];
        ports[XENSTORE_PORT as usize] = Port::Toolstack;
        ports[CONSOLE_PORT as usize] = Port::Toolstack;
        Ok(Xen {
            viridian,
            brk,
            knobs,
            tsc_khz: 0,
            time: VcpuTimeInfo::default(),
            hypercall_page: None,
            shared_info: None,
            callback: 0,
            ports,
            notify: [0; NR_PORTS],
            per: [PerVcpu::default(); MAX_VCPUS],
            vcpus: 1,
            current: 0,
            stats: Stats::default(),
            guest_os_id: 0,
            viridian_hypercall: 0,
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
        let scale_khz = if self.brk == Some(Break::AbsurdFrequency) {
            1
        } else {
            khz
        };
        if let Some((mul, shift)) = pvclock::time_scale(scale_khz) {
            self.tsc_khz = khz;
            self.time.tsc_to_system_mul = mul;
            self.time.tsc_shift = shift;
            // One TSC for every vCPU: synchronised.
            self.time.flags = pvclock::FLAG_TSC_STABLE;
        }
    }

    /// Xen system time (ns) at host TSC `tsc`, in the published timebase.
    fn system_ns(&self, tsc: u64) -> u64 {
        self.time.ns_at(tsc)
    }

    /// The Xen version reported (base+1, `XENVER_version`).
    pub fn version(&self) -> abi::Version {
        if self.knobs.qemu {
            QEMU_VERSION
        } else {
            VERSION
        }
    }

    /// vCPU `vcpu`'s state (clamped to [`MAX_VCPUS`]).
    fn vcpu(&mut self, vcpu: usize) -> &mut PerVcpu {
        &mut self.per[vcpu.min(MAX_VCPUS - 1)]
    }

    /// vCPU `vcpu`'s state, shared.
    fn vcpu_ref(&self, vcpu: usize) -> &PerVcpu {
        &self.per[vcpu.min(MAX_VCPUS - 1)]
    }

    /// vCPU `vcpu`'s callback vector, when `HVM_PARAM_CALLBACK_IRQ`
    /// selects vector delivery and no upcall vector of its own overrides
    /// it. The vector type is delivered to every vCPU with an upcall
    /// pending (Xen `hvm_vcpu_has_pending_irq` checks it per vCPU;
    /// `hvm_assert_evtchn_irq` kicks any vCPU of such a domain): only the
    /// GSI and PCI INTx types are vCPU 0's alone (not offered here).
    fn callback_vector(&self, vcpu: usize) -> Option<u8> {
        (self.vcpu_ref(vcpu).upcall_vector.is_none()
            && self.callback >> abi::HVM_PARAM_CALLBACK_TYPE_SHIFT
                == abi::HVM_PARAM_CALLBACK_TYPE_VECTOR)
            .then_some(self.callback as u8)
    }

    /// The delivery model in use (vCPU 0's), for the report.
    fn delivery(&self) -> &'static str {
        match (self.per[0].upcall_vector, self.callback_vector(0)) {
            (Some(_), _) => "upcall-vector",
            (None, Some(_)) => "callback-via",
            (None, None) => "none",
        }
    }

    /// An event on a toolstack port, when `noisy-ports` (xenconsoled after
    /// consuming output or delivering input, xenstored on ring activity).
    fn noise(&mut self, cx: &mut GuestCx<'_>, port: u32) {
        if self.knobs.noisy_ports {
            self.stats.noise += 1;
            self.set_pending(cx, port);
        }
    }

    /// Fires vCPU `vcpu`'s singleshot timer if due (Xen `vcpu_singleshot_timer_fn`:
    /// `send_timer_event`, VIRQ_TIMER on that vCPU's port).
    fn fire_timer(&mut self, cx: &mut GuestCx<'_>, vcpu: usize) {
        let Some(due) = self.vcpu_ref(vcpu).timer else {
            return;
        };
        if cx.now < due {
            return;
        }
        self.vcpu(vcpu).timer = None;
        self.stats.timer_fired += 1;
        // Toolstack traffic in the timer's event word, just before it.
        let port = if self.stats.timer_fired.is_multiple_of(2) {
            XENSTORE_PORT
        } else {
            CONSOLE_PORT
        };
        self.noise(cx, port);
        self.send_virq(cx, abi::VIRQ_TIMER, vcpu);
        if vcpu == cx.vcpu {
            self.update_runstate(cx);
        }
    }

    /// Ends vCPU `vcpu`'s `SCHEDOP_poll` once its timeout has passed: a
    /// kick makes it runnable, the hypercall has returned 0 already.
    fn poll_timeout(&mut self, cx: &mut GuestCx<'_>, vcpu: usize) {
        let Some(p) = self.vcpu_ref(vcpu).poll else {
            return;
        };
        if p.deadline.is_some_and(|d| cx.now >= d) {
            self.wake_poller(cx, vcpu);
        }
    }

    /// Ends vCPU `vcpu`'s poll (Xen `vcpu_unblock` of a poller).
    fn wake_poller(&mut self, cx: &mut GuestCx<'_>, vcpu: usize) {
        if self.vcpu(vcpu).poll.take().is_some() {
            self.stats.poll_wakes += 1;
            if vcpu < 32 {
                cx.requests.kicks |= 1 << vcpu;
            }
        }
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

    fn rdmsr(&mut self, cx: &mut GuestCx<'_>, msr: u32) -> Option<Result<u64, Gp>> {
        use pvops_abi::hyperv::msr as hm;
        if !self.viridian {
            return None;
        }
        Some(Ok(match msr {
            hm::GUEST_OS_ID => self.guest_os_id,
            hm::HYPERCALL => self.viridian_hypercall,
            // Xen's viridian `vp_index` is the vCPU id.
            hm::VP_INDEX => cx.vcpu as u64,
            // Not enabled: Xen's "apic_assist" group is not offered.
            hm::VP_ASSIST_PAGE => 0,
            _ => return None,
        }))
    }

    fn wrmsr(&mut self, cx: &mut GuestCx<'_>, msr: u32, value: u64) -> Option<Result<(), Gp>> {
        use pvops_abi::hyperv::msr as hm;
        if msr == self.hypercall_msr() {
            return Some(self.write_hypercall_msr(cx, value));
        }
        if !self.viridian {
            return None;
        }
        match msr {
            hm::GUEST_OS_ID => self.guest_os_id = value,
            hm::HYPERCALL => self.viridian_hypercall = value,
            hm::EOI => cx.apic.eoi(),
            // Accepted, never enabled (read back 0).
            hm::VP_ASSIST_PAGE => {}
            _ => return None,
        }
        Some(Ok(()))
    }

    fn hypercall(&mut self, cx: &mut GuestCx<'_>) -> Hypercall {
        self.current = cx.vcpu;
        self.set_scale(cx.tsc_khz);
        self.dispatch(cx)
    }

    fn set_vcpus(&mut self, vcpus: usize) {
        self.vcpus = vcpus.clamp(1, MAX_VCPUS);
    }

    /// Xen updates the runstate area at every context switch
    /// (`update_runstate_area` from `context_switch`): the outgoing vCPU's
    /// shows runnable (preempted: other vCPUs' `lock.vcpu_is_preempted`
    /// reads it) or blocked (halted or polling).
    fn descheduled(&mut self, cx: &mut GuestCx<'_>, preempted: bool) {
        let state = if preempted {
            abi::RUNSTATE_RUNNABLE
        } else {
            abi::RUNSTATE_BLOCKED
        };
        self.enter_runstate(cx, state);
    }

    fn set_clock(&mut self, tsc_khz: u64, _apic_bus_khz: u64) {
        self.set_scale(tsc_khz);
    }

    fn next_deadline(&self) -> Option<u64> {
        self.per[..self.vcpus]
            .iter()
            .flat_map(|v| [v.timer, v.poll.and_then(|p| p.deadline)])
            .flatten()
            .min()
    }

    fn poll(&mut self, cx: &mut GuestCx<'_>) {
        self.current = cx.vcpu;
        // Every vCPU's timers: one due on a vCPU that does not run now
        // raises its upcall through an IPI, which wakes it.
        for vcpu in 0..self.vcpus {
            self.fire_timer(cx, vcpu);
            self.poll_timeout(cx, vcpu);
        }
        // The vCPU about to run is running again (not when polled while
        // it waits, halted, for an interrupt).
        if self.vcpus > 1 && !cx.idle && self.vcpu_ref(cx.vcpu).state != abi::RUNSTATE_RUNNING {
            self.enter_runstate(cx, abi::RUNSTATE_RUNNING);
        }
        if self.shared_info.is_some() {
            self.maybe_refresh(cx);
        }
        // The callback via is level-like: asserted while the upcall flag is
        // set, withdrawn once the guest clears it (Xen checks the flag at
        // every VM entry, `hvm_vcpu_has_pending_irq`).
        if let Some(v) = self.callback_vector(cx.vcpu) {
            if self.upcall_pending(cx, cx.vcpu) {
                cx.apic.raise(v);
            } else {
                cx.apic.withdraw(v);
            }
        }
        self.stats.idle_eois = cx.apic.idle_eois;
    }

    fn on_inject(&mut self, cx: &mut GuestCx<'_>, vector: u8) {
        // Injected as an external interrupt, not through the vLAPIC.
        if self.callback_vector(cx.vcpu) == Some(vector) {
            cx.apic.bypass(vector);
            self.stats.direct_injections += 1;
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
            upcall_vector = Opt(self.per[0].upcall_vector.map(u64::from)),
            delivery = self.delivery(),
            flavour = if self.knobs.qemu { "qemu" } else { "xen" },
            timer_port = Opt(self.port_of(abi::VIRQ_TIMER, 0).map(u64::from)),
            runstate = Opt(self.per[0].runstate.map(|r| r.gva)),
            timers_set = s.timer_set,
            timers_fired = s.timer_fired,
            events = s.events,
            upcalls = s.upcalls,
            pvclock_updates = s.publishes,
            efault = s.efault,
            noise = s.noise,
            direct_injections = s.direct_injections,
            idle_eois = s.idle_eois,
            polls_blocked = s.polls_blocked,
            poll_wakes = s.poll_wakes,
            cross_events = s.cross_events,
            broken = self.brk.map_or("none", Break::name),
            guest_os_id = format_args!("{:#x}", self.guest_os_id),
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
mod smp_tests;
#[cfg(test)]
mod tests;
