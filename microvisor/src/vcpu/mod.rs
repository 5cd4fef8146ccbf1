//! The guest's one virtual CPU: its VMCB, registers, virtual APIC and
//! persona, the run loop and event delivery.

mod cpuid;
mod exits;
pub use exits::reason_name as exits_reason_name;
mod hypercall;
mod io;
mod msr;
pub mod setup;

use crate::clock::Clock;
use crate::counters::Accounting;
use crate::guest::mem::GuestRam;
use crate::hw::{cpu, lapic};
use crate::integrity::{Check, Protected};
use crate::once::phys;
use crate::outcome::{End, FaultKind};
use crate::personas::{Active, GuestCx};
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

/// The virtual CPU.
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

    /// The current VMCB intercept settings.
    pub fn intercepts(&self) -> Intercepts {
        let c = &self.vmcb.control;
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
            intercepts_unchanged: self.intercepts() == self.intercepts,
        }
    }

    /// Guest RIP.
    pub fn rip(&self) -> u64 {
        self.vmcb.state.rip
    }

    /// Runs the guest until the run ends.
    pub fn run(&mut self) -> End {
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
        let now = self.clock.now();
        self.vapic.poll(now);
        self.poll_persona();
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

    /// Arms the host LAPIC timer for the earliest of the guest timer's
    /// deadline and the watchdog's.
    fn arm_host_timer(&mut self, now: u64) {
        let mut target = self.watchdog.deadline();
        if let Some(d) = self.vapic.next_deadline() {
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
    /// exit per wake-up.
    fn halt(&mut self) -> Flow {
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
    }

    /// A persona handler context.
    fn persona_cx(&mut self) -> (&mut Active, GuestCx<'_>) {
        let now = self.clock.now();
        (
            &mut self.persona,
            GuestCx {
                state: &mut self.vmcb.state,
                regs: &mut self.regs,
                mem: &self.mem,
                now,
                tsc_khz: self.clock.tsc_khz,
                apic: &mut self.vapic,
            },
        )
    }
}
