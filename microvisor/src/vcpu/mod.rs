//! The guest's virtual CPUs: the current vCPU's VMCB, registers and
//! virtual APIC (the others' parked beside them), the persona, the run
//! loop, event delivery, IPIs between vCPUs (INIT, SIPI, fixed) and the
//! round-robin scheduler that shares the one physical CPU among them
//! ([`crate::sched`]).
//!
//! The current vCPU's state lives in the [`Vcpu`] fields every exit
//! handler uses (`vmcb`, `regs`, `vapic`, `pending_event`, `watchdog`);
//! a switch swaps them with the incoming vCPU's [`Parked`] set, so the
//! handlers are the same for one vCPU and for eight.

mod cpuid;
mod exits;
pub use exits::reason_name as exits_reason_name;
mod hypercall;
mod io;
mod msr;
pub mod setup;

use crate::clock::Clock;
use crate::config::MAX_VCPUS;
use crate::counters::Accounting;
use crate::guest::mem::GuestRam;
use crate::hw::{cpu, lapic};
use crate::integrity::{Check, Protected};
use crate::ipi;
use crate::once::phys;
use crate::outcome::{End, FaultKind};
use crate::personas::{Active, GuestCx, Requests};
use crate::sched::{Sched, State};
use crate::svm::vmcb::{event, exit, int_ctl, misc1, Vmcb};
use crate::svm::vmrun::{vmrun, GuestRegs};
use crate::vapic::VApic;
use crate::watchdog::Watchdog;
use core::sync::atomic::{AtomicBool, Ordering};

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// EFER.LMA: long mode active (segment bases are ignored for CS).
const EFER_LMA: u64 = 1 << 10;

/// Set by the host LAPIC timer interrupt handler.
static HOST_TIMER_FIRED: AtomicBool = AtomicBool::new(false);

/// Host LAPIC timer interrupt: acknowledge and note it; the work happens in
/// the run loop.
pub fn host_timer_interrupt(_frame: &mut bootkit::idt::InterruptFrame) {
    HOST_TIMER_FIRED.store(true, Ordering::Release);
    lapic::eoi();
}

/// A 4 KiB page for VMSAVE of the host's state.
#[repr(C, align(4096))]
pub struct HostSave([u8; 4096]);

impl Default for HostSave {
    fn default() -> Self {
        Self::new()
    }
}

impl HostSave {
    /// Zeroed.
    pub const fn new() -> Self {
        HostSave([0; 4096])
    }
}

/// The state of a vCPU while another one is on the physical CPU.
pub struct Parked {
    vmcb: &'static mut Vmcb,
    regs: GuestRegs,
    vapic: VApic,
    pending_event: Option<u64>,
    watchdog: Watchdog,
    /// Its TSC_AUX (RDTSCP/RDPID read it without an exit, and no VMCB
    /// holds it: the microvisor swaps the host MSR at a switch).
    tsc_aux: u64,
}

/// One vCPU's parts, wherever they are (current or parked).
struct Parts<'a> {
    vmcb: &'a mut Vmcb,
    regs: &'a mut GuestRegs,
    vapic: &'a mut VApic,
    pending_event: &'a mut Option<u64>,
    watchdog: &'a mut Watchdog,
}

/// IPIs that reached nobody or were not acted on, by kind, destination
/// and why, for the end-of-run report (`@@ mv.ipi`); and what was
/// delivered.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpiLog {
    /// (kind, destination, result, count); the first 16 distinct ones.
    pub dropped: [(&'static str, u32, &'static str, u64); 16],
    /// Entries used in `dropped`.
    pub len: usize,
    /// Dropped IPIs that did not fit `dropped`.
    pub overflow: u64,
    /// Fixed IPIs delivered (per target).
    pub fixed: u64,
    /// INITs delivered.
    pub init: u64,
    /// Start-up IPIs that started an AP.
    pub startup: u64,
}

impl IpiLog {
    /// Counts one dropped IPI.
    pub fn drop_one(&mut self, kind: &'static str, dest: u32, result: &'static str) {
        let used = &mut self.dropped[..self.len];
        if let Some(e) = used
            .iter_mut()
            .find(|e| e.0 == kind && e.1 == dest && e.2 == result)
        {
            e.3 += 1;
        } else if self.len < self.dropped.len() {
            self.dropped[self.len] = (kind, dest, result, 1);
            self.len += 1;
        } else {
            self.overflow += 1;
        }
    }

    /// The dropped IPIs counted.
    pub fn entries(&self) -> &[(&'static str, u32, &'static str, u64)] {
        &self.dropped[..self.len]
    }
}

/// The name of an IPI kind in reports.
fn kind_name(k: ipi::Kind) -> &'static str {
    match k {
        ipi::Kind::Fixed(_) => "fixed",
        ipi::Kind::Nmi => "nmi",
        ipi::Kind::Init | ipi::Kind::InitDeassert => "init",
        ipi::Kind::Startup(_) => "startup",
        ipi::Kind::Other => "other",
    }
}

/// The guest's vCPUs, with the current one's state at hand.
pub struct Vcpu {
    vmcb: &'static mut Vmcb,
    host_save: &'static mut HostSave,
    regs: GuestRegs,
    mem: GuestRam,
    vapic: VApic,
    persona: Active,
    acct: &'static mut Accounting,
    clock: Clock,
    watchdog: Watchdog,
    /// The guest asked for the microvisor's hidden CPUID leaf with the key.
    mv_open: bool,
    /// EVENTINJ for the next entry (an exception, or a re-injected event).
    pending_event: Option<u64>,
    /// Host TSC the host LAPIC timer is armed for.
    host_timer_target: Option<u64>,
    /// The guest's last byte to COM1 was not a newline.
    serial_mid_line: bool,
    /// The guest sees the PIT (`pit=on`); otherwise its ports are empty.
    pit: bool,
    /// Memory no guest may change, with its baselines.
    protected: Protected,
    /// The VMCB intercept settings at setup ([`Vcpu::intercepts`]).
    intercepts: Intercepts,
    /// Index (and APIC ID) of the current vCPU.
    id: usize,
    /// Every other vCPU's state (`None` at `id` and past the count).
    parked: [Option<Parked>; MAX_VCPUS],
    /// Who runs.
    sched: Sched,
    /// The configured slice, for the report.
    slice_us: u64,
    /// IPIs dropped or delivered.
    ipis: IpiLog,
    /// The vCPU the run's fault happened on, with more than one vCPU.
    fault_vcpu: Option<usize>,
    /// The host CPU has TSC_AUX (RDTSCP or RDPID), swapped per vCPU.
    has_tsc_aux: bool,
    /// What persona handlers asked of other vCPUs, until carried out.
    requests: Requests,
    /// vCPUs kicked while not halted: their next HLT returns at once
    /// (KVM's `pv_unhalted`; bit `i` = vCPU `i`).
    kicked: u32,
}

/// The VMCB control fields that confine the guest (what it may run without
/// an exit, where its nested page tables and permission maps are); the
/// microvisor never changes them after setup, except the VINTR intercept
/// it toggles for interrupt windows (masked out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intercepts([u64; 9]);

/// What the end-of-run integrity check found.
#[derive(Clone, Copy, Debug)]
pub struct Integrity {
    /// The memory regions.
    pub memory: Check,
    /// Whether the VMCB intercept settings are as set up.
    pub intercepts_unchanged: bool,
}

impl Integrity {
    /// Whether nothing changed.
    pub fn unchanged(&self) -> bool {
        self.memory.unchanged() && self.intercepts_unchanged
    }
}

/// What an exit handler wants next.
#[allow(clippy::large_enum_variant)] // See `End`: no heap to box it in.
pub enum Flow {
    /// Resume the guest.
    Continue,
    /// Stop the run.
    End(End),
}

impl Vcpu {
    /// The exit counters.
    pub fn accounting(&self) -> &Accounting {
        self.acct
    }

    /// The persona, for its end-of-run report.
    pub fn persona(&self) -> &dyn crate::personas::Persona {
        self.persona.get_ref()
    }

    /// Whether the guest left its serial output in the middle of a line.
    pub fn serial_mid_line(&self) -> bool {
        self.serial_mid_line
    }

    /// The protected regions.
    pub fn protected(&self) -> &Protected {
        &self.protected
    }

    /// Adds a protected region (e.g. the guard ranges around guest RAM).
    ///
    /// # Safety
    /// As [`Protected::add`]: the range stays readable for the run.
    pub unsafe fn protect(&mut self, name: &'static str, start: u64, len: u64) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe {
            self.protected
                .add(name, crate::integrity::Kind::Bytes, start, len)
        }
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> usize {
        self.sched.len()
    }

    /// The vCPU the run's fault happened on (only with more than one vCPU).
    pub fn fault_vcpu(&self) -> Option<usize> {
        self.fault_vcpu
    }

    /// The scheduler.
    pub fn sched(&self) -> &Sched {
        &self.sched
    }

    /// The configured time slice in microseconds.
    pub fn slice_us(&self) -> u64 {
        self.slice_us
    }

    /// The IPI log.
    pub fn ipis(&self) -> &IpiLog {
        &self.ipis
    }

    /// vCPU `i`'s stolen time (runnable, not running) in nanoseconds.
    pub fn stolen_ns(&self, i: usize) -> u64 {
        let ticks = self.sched.stolen(i, self.clock.now());
        (ticks as u128 * 1_000_000 / self.clock.tsc_khz.max(1) as u128) as u64
    }

    /// The current VMCB intercept settings (the current vCPU's).
    pub fn intercepts(&self) -> Intercepts {
        Self::intercepts_of(self.vmcb)
    }

    /// Whether every vCPU's VMCB still has the intercepts set up.
    fn all_intercepts_unchanged(&self) -> bool {
        Self::intercepts_of(self.vmcb) == self.intercepts
            && self
                .parked
                .iter()
                .flatten()
                .all(|p| Self::intercepts_of(p.vmcb) == self.intercepts)
    }

    fn intercepts_of(vmcb: &Vmcb) -> Intercepts {
        let c = &vmcb.control;
        Intercepts([
            u64::from(c.intercept_cr),
            u64::from(c.intercept_dr),
            u64::from(c.intercept_exceptions),
            u64::from(c.intercept_misc1 & !misc1::VINTR),
            u64::from(c.intercept_misc2) | u64::from(c.intercept_misc3) << 32,
            c.iopm_base_pa,
            c.msrpm_base_pa,
            c.nested_ctl,
            c.n_cr3,
        ])
    }

    /// Checks every protected region and the intercept settings against
    /// their state before the first VMRUN.
    pub fn integrity(&self) -> Integrity {
        Integrity {
            memory: self.protected.check(),
            intercepts_unchanged: self.all_intercepts_unchanged(),
        }
    }

    /// Guest RIP.
    pub fn rip(&self) -> u64 {
        self.vmcb.state.rip
    }

    /// Runs the guest until the run ends. With more than one vCPU a fault
    /// names the vCPU it happened on.
    pub fn run(&mut self) -> End {
        let end = self.run_inner();
        match end {
            End::Fault { kind, detail } if self.vcpus() > 1 => {
                self.fault_vcpu = Some(self.id);
                End::fault(kind, format_args!("vcpu {}: {}", self.id, detail))
            }
            end => end,
        }
    }

    fn run_inner(&mut self) -> End {
        loop {
            if let Some(end) = self.prepare_entry() {
                return end;
            }
            // SAFETY: the VMCB is valid (built by `setup`), its nested page
            // tables confine the guest to its own RAM, the host save page is
            // 4 KiB aligned, SVM is enabled with VM_HSAVE_PA set, and host
            // interrupts are off.
            unsafe { vmrun(phys(self.vmcb), &mut self.regs, phys(self.host_save)) };
            let c = &mut self.vmcb.control;
            c.tlb_control = 0;
            let code = c.exit_code;
            if code as u32 == exit::INVALID_LOW32 {
                return End::fault(
                    FaultKind::MicrovisorError,
                    format_args!("VMRUN failed (VMEXIT_INVALID) rip={:#x}", self.rip()),
                );
            }
            self.acct.exit(code);
            if code != exit::INTR {
                self.watchdog.progress(self.clock.now());
            }
            // An event whose delivery the exit interrupted is delivered again
            // (APM vol. 2, 15.7.2); EXITINTINFO has the EVENTINJ format.
            let eii = c.exit_int_info;
            if eii & event::VALID != 0 {
                self.pending_event = Some(eii);
            }
            if let Flow::End(end) = exits::handle(self, code) {
                return end;
            }
        }
    }

    /// Fires due timers, checks the watchdog, chooses the event to inject
    /// (or asks for an interrupt window) and arms the host timer.
    fn prepare_entry(&mut self) -> Option<End> {
        let mut now = self.clock.now();
        self.apply_requests(now);
        self.poll_all(now);
        self.poll_persona();
        if self.vcpus() > 1 {
            let before = self.id;
            if let Some(end) = self.schedule(now) {
                return Some(end);
            }
            now = self.clock.now();
            if self.id != before {
                // The persona settles the incoming vCPU's state (lazy EOI,
                // steal time) before it runs.
                self.poll_persona();
            }
        }
        if self.watchdog.expired(now) {
            return Some(self.watchdog_fault(now));
        }
        let c = &mut self.vmcb.control;
        c.event_inj = 0;
        if let Some(ev) = self.pending_event.take() {
            c.event_inj = ev;
        } else if let Some(v) = self.vapic.pending() {
            let shadow = c.int_state & 1 != 0;
            if self.vmcb.state.rflags & RFLAGS_IF != 0 && !shadow {
                self.skip_halt_before_interrupt();
                self.vapic.accept(v);
                self.vmcb.control.event_inj = event::VALID | event::TYPE_INTR | v as u64;
                self.watchdog.progress(now);
                let (persona, mut cx) = self.persona_cx();
                persona.get().on_inject(&mut cx, v);
            }
        }
        // Still something to deliver: exit as soon as the guest can take it
        // (V_IRQ with VINTR intercept, APM vol. 2, 15.21.4).
        let c = &mut self.vmcb.control;
        if let Some(v) = self.vapic.pending() {
            c.int_ctl |= int_ctl::V_IRQ | int_ctl::V_IGN_TPR | (0xF << int_ctl::V_INTR_PRIO_SHIFT);
            c.int_vector = v as u32;
            c.intercept_misc1 |= misc1::VINTR;
        } else {
            c.int_ctl &=
                !(int_ctl::V_IRQ | int_ctl::V_IGN_TPR | (0xF << int_ctl::V_INTR_PRIO_SHIFT));
            c.intercept_misc1 &= !misc1::VINTR;
        }
        self.arm_host_timer(now);
        None
    }

    /// Arms the host LAPIC timer for the earliest of the guest timers'
    /// deadlines (every vCPU's), the watchdog's and the end of the current
    /// slice when another vCPU waits.
    fn arm_host_timer(&mut self, now: u64) {
        let mut target = self.watchdog.deadline();
        if let Some(d) = self.vapic.next_deadline() {
            target = target.min(d);
        }
        for p in self.parked.iter().flatten() {
            if let Some(d) = p.vapic.next_deadline() {
                target = target.min(d);
            }
        }
        if let Some(d) = self.sched.slice_end() {
            target = target.min(d);
        }
        if let Some(d) = self.persona.get_ref().next_deadline() {
            target = target.min(d);
        }
        if HOST_TIMER_FIRED.swap(false, Ordering::AcqRel) {
            self.host_timer_target = None;
        }
        // Re-arm only for an earlier target: a timer armed too early just
        // costs one INTR exit, after which it is re-armed; this keeps the
        // common exit (which moves the watchdog deadline) free of APIC writes.
        if self.host_timer_target.is_none_or(|armed| target < armed) {
            lapic::start(self.clock.lapic_count(target.saturating_sub(now)));
            self.host_timer_target = Some(target);
        }
    }

    fn watchdog_fault(&self, now: u64) -> End {
        End::fault(
            FaultKind::Watchdog,
            format_args!(
                "no guest progress for {} ms: rip={:#x} rflags={:#x}",
                self.clock.millis(self.watchdog.idle(now)),
                self.vmcb.state.rip,
                self.vmcb.state.rflags
            ),
        )
    }

    /// HLT: the guest sleeps until an interrupt is deliverable. The
    /// microvisor halts the host CPU meanwhile, so an idle guest costs one
    /// exit per wake-up. With more than one vCPU the halted vCPU yields
    /// the physical CPU ([`Vcpu::schedule`]).
    fn halt(&mut self) -> Flow {
        if self.vcpus() > 1 {
            return self.halt_smp();
        }
        self.advance(1);
        loop {
            let now = self.clock.now();
            self.vapic.poll(now);
            self.poll_persona();
            if self.pending_event.is_some() {
                return Flow::Continue;
            }
            if self.vmcb.state.rflags & RFLAGS_IF == 0 {
                return Flow::End(End::fault(
                    FaultKind::Watchdog,
                    format_args!(
                        "guest halted with interrupts disabled at rip={:#x}: it can never wake",
                        self.vmcb.state.rip
                    ),
                ));
            }
            if self.vapic.pending().is_some() {
                return Flow::Continue;
            }
            if self.watchdog.expired(now) {
                return Flow::End(self.watchdog_fault(now));
            }
            self.arm_host_timer(now);
            cpu::wait_for_interrupt();
        }
    }

    /// HLT with several vCPUs: an AP halting with interrupts off is
    /// stopped (only INIT revives it); the boot vCPU doing so can never
    /// wake, as with one vCPU. Otherwise the vCPU is halted unless an
    /// interrupt is already deliverable, and [`Vcpu::schedule`] runs
    /// another one.
    fn halt_smp(&mut self) -> Flow {
        self.advance(1);
        let now = self.clock.now();
        self.poll_all(now);
        self.poll_persona();
        if self.pending_event.is_some() {
            return Flow::Continue;
        }
        // Kicked before it halted: the HLT returns at once.
        if self.kicked & (1 << self.id) != 0 {
            self.kicked &= !(1 << self.id);
            return Flow::Continue;
        }
        if self.vmcb.state.rflags & RFLAGS_IF == 0 {
            // Under a persona that kicks halted vCPUs (a PV spinlock's
            // `cli; hlt` wait), any vCPU may wait like this; otherwise only
            // INIT revives an AP, and nothing the boot vCPU.
            if self.id == 0 && !self.persona.get_ref().kicks_halted() {
                return Flow::End(End::fault(
                    FaultKind::Watchdog,
                    format_args!(
                        "guest halted with interrupts disabled at rip={:#x}: it can never wake",
                        self.vmcb.state.rip
                    ),
                ));
            }
            self.sched.set_state(self.id, State::Stopped, now);
            return Flow::Continue;
        }
        if self.vapic.pending().is_none() {
            self.sched.set_state(self.id, State::Halted, now);
        }
        Flow::Continue
    }

    /// Polls every vCPU's virtual APIC timer at `now` and makes a halted
    /// vCPU with a deliverable interrupt runnable. A vCPU halted by HLT
    /// has interrupts on; one blocked with them off in a hypervisor wait
    /// ([`crate::personas::Requests::block`]) is woken by kicks and new
    /// IPIs only, not by an interrupt it cannot take (else it would wake
    /// again at every entry).
    fn poll_all(&mut self, now: u64) {
        for i in 0..self.vcpus() {
            let Some(p) = self.parts(i) else { continue };
            p.vapic.poll(now);
            let deliverable = p.vapic.pending().is_some() && p.vmcb.state.rflags & RFLAGS_IF != 0;
            if deliverable && self.sched.state(i) == State::Halted {
                self.wake(i, now);
            }
        }
    }

    /// Makes vCPU `i` runnable at `now` (an interrupt for a halted one, a
    /// SIPI for one waiting): its watchdog starts afresh.
    fn wake(&mut self, i: usize, now: u64) {
        self.sched.set_state(i, State::Runnable, now);
        if let Some(p) = self.parts(i) {
            p.watchdog.progress(now);
        }
    }

    /// Makes sure a runnable vCPU is current before the next entry: the
    /// current one while its slice lasts, else the next in round robin;
    /// when none is runnable, sleeps until an interrupt makes one so (or
    /// ends the run when nothing ever can).
    fn schedule(&mut self, mut now: u64) -> Option<End> {
        loop {
            if let Some(next) = self.sched.pick(now) {
                if next != self.id {
                    self.switch_to(next, now);
                }
                return None;
            }
            if !self.sched.any(State::Halted) {
                return Some(End::fault(
                    FaultKind::Watchdog,
                    format_args!(
                        "every vCPU is stopped (HLT with interrupts off) or waits for a SIPI: nothing can wake them"
                    ),
                ));
            }
            if self.watchdog.expired(now) {
                return Some(End::fault(
                    FaultKind::Watchdog,
                    format_args!(
                        "every vCPU halted, no interrupt for {} ms",
                        self.clock.millis(self.watchdog.idle(now))
                    ),
                ));
            }
            self.arm_host_timer(now);
            cpu::wait_for_interrupt();
            now = self.clock.now();
            self.poll_all(now);
            self.poll_persona();
        }
    }

    /// Puts vCPU `next` on the physical CPU: its state into the `Vcpu`
    /// fields, the current one's into its parking slot.
    fn switch_to(&mut self, next: usize, now: u64) {
        if next == self.id || next >= self.vcpus() {
            return;
        }
        if self.parked[next].is_none() {
            return;
        }
        let preempted = self.sched.state(self.id) == State::Runnable;
        let (persona, mut cx) = self.persona_cx();
        persona.get().descheduled(&mut cx, preempted);
        self.apply_requests(now);
        let Some(mut p) = self.parked[next].take() else {
            return;
        };
        core::mem::swap(&mut self.vmcb, &mut p.vmcb);
        core::mem::swap(&mut self.regs, &mut p.regs);
        core::mem::swap(&mut self.vapic, &mut p.vapic);
        core::mem::swap(&mut self.pending_event, &mut p.pending_event);
        core::mem::swap(&mut self.watchdog, &mut p.watchdog);
        if self.has_tsc_aux {
            // SAFETY: TSC_AUX exists (CPUID says RDTSCP or RDPID, checked
            // at setup); the microvisor itself never reads it, so the
            // guest's value is all it holds.
            unsafe {
                let outgoing = cpu::rdmsr(cpu::MSR_TSC_AUX);
                cpu::wrmsr(cpu::MSR_TSC_AUX, p.tsc_aux);
                p.tsc_aux = outgoing;
            }
        }
        self.parked[self.id] = Some(p);
        self.sched.switch_to(next, now);
        self.id = next;
        self.acct.current = next;
    }

    /// vCPU `i`'s parts, current or parked.
    fn parts(&mut self, i: usize) -> Option<Parts<'_>> {
        if i == self.id {
            return Some(Parts {
                vmcb: &mut *self.vmcb,
                regs: &mut self.regs,
                vapic: &mut self.vapic,
                pending_event: &mut self.pending_event,
                watchdog: &mut self.watchdog,
            });
        }
        self.parked.get_mut(i)?.as_mut().map(|p| Parts {
            vmcb: &mut *p.vmcb,
            regs: &mut p.regs,
            vapic: &mut p.vapic,
            pending_event: &mut p.pending_event,
            watchdog: &mut p.watchdog,
        })
    }

    /// Sends the IPI the guest just wrote to the current vCPU's ICR
    /// (`icr`, x2APIC format): fixed vectors into the targets' IRRs
    /// (waking halted ones), INIT and SIPI as the MP start-up protocol
    /// needs; a destination that names no vCPU is dropped and counted.
    fn send_ipi(&mut self, icr: u64) {
        let n = self.vcpus();
        let ipi = ipi::decode(icr, self.id, n);
        let now = self.clock.now();
        let kind = kind_name(ipi.kind);
        if let Some(dest) = ipi.absent {
            self.ipis.drop_one(kind, dest, "absent");
        }
        for i in (0..n).filter(|&i| ipi.targets & (1 << i) != 0) {
            match ipi.kind {
                ipi::Kind::Fixed(v) => {
                    self.ipis.fixed += 1;
                    if let Some(p) = self.parts(i) {
                        p.vapic.raise(v);
                    }
                    if self.sched.state(i) == State::Halted {
                        self.wake(i, now);
                    }
                }
                ipi::Kind::Init => self.init(i, now),
                ipi::Kind::Startup(v) => self.startup(i, v, now),
                ipi::Kind::InitDeassert => {}
                ipi::Kind::Nmi | ipi::Kind::Other => {
                    self.ipis.drop_one(kind, i as u32, "unsupported")
                }
            }
        }
    }

    /// INIT to vCPU `i`: an AP goes back to its power-on state and waits
    /// for a SIPI (Intel SDM vol. 3A, 9.4.2); the boot vCPU ignores it
    /// (counted), as this microvisor has no firmware to reset into.
    fn init(&mut self, i: usize, now: u64) {
        if i == 0 {
            self.ipis.drop_one("init", 0, "ignored");
            return;
        }
        let tsc_khz = self.clock.tsc_khz;
        if let Some(p) = self.parts(i) {
            *p.vapic = VApic::with_id(tsc_khz, i as u32);
            *p.pending_event = None;
        }
        self.ipis.init += 1;
        self.kicked &= !(1 << i);
        self.sched.set_state(i, State::WaitForSipi, now);
    }

    /// Start-up IPI with `vector` to vCPU `i`: starts it in real mode at
    /// `vector << 12` if it waits for one; ignored (counted) otherwise,
    /// as a CPU that already runs ignores a SIPI (SDM vol. 3A, 9.4.4).
    fn startup(&mut self, i: usize, vector: u8, now: u64) {
        if self.sched.state(i) != State::WaitForSipi {
            self.ipis.drop_one("startup", i as u32, "ignored");
            return;
        }
        if let Some(p) = self.parts(i) {
            let rdx = setup::real_mode_start(p.vmcb, vector);
            *p.regs = GuestRegs {
                rdx,
                ..GuestRegs::default()
            };
            *p.pending_event = None;
        }
        self.ipis.startup += 1;
        self.wake(i, now);
    }

    /// If the guest is about to execute HLT, steps over it before an
    /// interrupt is injected there. On hardware `sti; hlt` halts first and
    /// the interrupt then wakes it, returning after the HLT; but QEMU 7.2
    /// drops the VMCB interrupt shadow at VMRUN (docs/microvisor.md), so a
    /// virtual-interrupt window can open between the STI and the HLT, and
    /// an interrupt injected there would return to the HLT and put the
    /// guest to sleep with its wake-up already consumed. Skipping a HLT
    /// that was about to run is what the hardware would have done.
    fn skip_halt_before_interrupt(&mut self) {
        const HLT: u8 = 0xF4;
        let s = &self.vmcb.state;
        let rip = if s.efer & EFER_LMA != 0 {
            s.rip
        } else {
            s.rip.wrapping_add(s.cs.base)
        };
        let Some(gpa) = crate::guest::walk::translate(&self.mem, s.cr0, s.cr3, rip) else {
            return;
        };
        let mut byte = [0u8];
        if self.mem.read(gpa, &mut byte).is_ok() && byte[0] == HLT {
            self.vmcb.state.rip = self.vmcb.state.rip.wrapping_add(1);
        }
    }

    /// Skips the intercepted instruction (`len` bytes: no NRIP under QEMU
    /// TCG, see docs/microvisor.md) and ends any interrupt shadow.
    fn advance(&mut self, len: u64) {
        self.vmcb.state.rip = self.vmcb.state.rip.wrapping_add(len);
        self.vmcb.control.int_state &= !1;
    }

    /// Injects exception `vector` (with `error` code if given) at the next
    /// entry; RIP stays on the faulting instruction.
    fn inject_exception(&mut self, vector: u8, error: Option<u32>) {
        let mut ev = event::VALID | event::TYPE_EXCEPTION | vector as u64;
        if let Some(e) = error {
            ev |= event::ERROR_VALID | (e as u64) << 32;
        }
        self.pending_event = Some(ev);
    }

    /// Lets the persona fire its timers and raise interrupts.
    fn poll_persona(&mut self) {
        let (persona, mut cx) = self.persona_cx();
        persona.get().poll(&mut cx);
        if self.requests.any() {
            let now = self.clock.now();
            self.apply_requests(now);
        }
    }

    /// Carries out what persona handlers asked of other vCPUs: fixed IPIs
    /// (waking halted targets), kicks (waking halted or stopped targets, or
    /// making their next HLT return at once), a yield that ends the
    /// current slice, a TLB flush of the current vCPU.
    fn apply_requests(&mut self, now: u64) {
        if !self.requests.any() {
            return;
        }
        let n = self.vcpus();
        let all: u32 = if n >= 32 { u32::MAX } else { (1 << n) - 1 };
        let (ipis, len) = self.requests.take_ipis();
        for &(targets, vector) in &ipis[..len] {
            for i in (0..n).filter(|&i| targets & all & (1 << i) != 0) {
                self.ipis.fixed += 1;
                if let Some(p) = self.parts(i) {
                    p.vapic.raise(vector);
                }
                if self.sched.state(i) == State::Halted {
                    self.wake(i, now);
                }
            }
        }
        let kicks = core::mem::take(&mut self.requests.kicks) & all;
        for i in (0..n).filter(|&i| kicks & (1 << i) != 0) {
            match self.sched.state(i) {
                State::Halted | State::Stopped => self.wake(i, now),
                State::Runnable => self.kicked |= 1 << i,
                State::WaitForSipi => {}
            }
        }
        if core::mem::take(&mut self.requests.yield_now) {
            self.sched.end_slice(now);
        }
        if core::mem::take(&mut self.requests.block) {
            // Returns at once when kicked first or when an interrupt is
            // deliverable now (Xen `do_poll`: `local_events_need_delivery`,
            // which for HVM is a pending interrupt the vCPU does not
            // block, `hvm_local_events_need_delivery`).
            let deliverable =
                self.vapic.pending().is_some() && self.vmcb.state.rflags & RFLAGS_IF != 0;
            if self.kicked & (1 << self.id) != 0 {
                self.kicked &= !(1 << self.id);
            } else if !deliverable {
                self.sched.set_state(self.id, State::Halted, now);
            }
        }
        if core::mem::take(&mut self.requests.flush_tlb) {
            // Flush this guest's (ASID's) TLB entries (APM vol. 2, 15.16.1).
            self.vmcb.control.tlb_control = 1;
        }
    }

    /// A persona handler context.
    fn persona_cx(&mut self) -> (&mut Active, GuestCx<'_>) {
        let now = self.clock.now();
        let vcpus = self.vcpus();
        let steal_ns = if vcpus > 1 {
            self.stolen_ns(self.id)
        } else {
            0
        };
        let idle = vcpus > 1 && self.sched.state(self.id) != State::Runnable;
        (
            &mut self.persona,
            GuestCx {
                state: &mut self.vmcb.state,
                regs: &mut self.regs,
                mem: &self.mem,
                now,
                tsc_khz: self.clock.tsc_khz,
                apic: &mut self.vapic,
                vcpu: self.id,
                vcpus,
                steal_ns,
                idle,
                requests: &mut self.requests,
            },
        )
    }
}
