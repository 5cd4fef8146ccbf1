//! EOI assist ("lazy EOI") through the VP assist page (TLFS, Virtual
//! Interrupt Control: EOI Assist; Virtual Processor Assist Page).
//!
//! The protocol: when the hypervisor injects an edge-triggered interrupt
//! and nothing else could need the EOI, it sets bit 0 ("No EOI Required")
//! of `apic_assist`. The guest's EOI atomically clears the word; if the bit
//! was set it skips the EOI MSR write (no exit), and the hypervisor performs
//! the EOI on its behalf the next time it looks.
//!
//! Here, with one vCPU and the guest stopped while the microvisor runs:
//!
//! - [`LazyEoi::on_inject`] sets the bit only when the injected vector is
//!   the one and only vector in service and nothing is requested (IRR
//!   empty), so no other interrupt depends on this EOI, and remembers the
//!   vector. All vAPIC interrupts are edge-triggered (there is no I/O APIC
//!   whose level-triggered lines would need the EOI broadcast).
//! - [`LazyEoi::reconcile`] runs before every guest entry (and while the
//!   guest halts), before any injection: if the guest cleared the bit, the
//!   microvisor does the EOI now. If the bit is still set (the handler has
//!   not reached its EOI) but something is requested, another interrupt may
//!   be injected on top of it; then the bit is cleared and forgotten, so the
//!   guest's own EOI finds it clear and writes the EOI MSR — each nested
//!   handler retires its own vector, in order. This is the TLFS rule that a
//!   hypervisor may only promise "no EOI required" while it can take the
//!   EOI over, applied at the one point where it could stop being true.
//! - If the guest retired the vector some other way (an x2APIC EOI write
//!   that ignored the bit), the bit is cleared and forgotten too: never two
//!   EOIs for one interrupt.
//!
//! Every path leaves exactly one EOI per injected interrupt, so no interrupt
//! is lost (ISR never left set) or retired twice.
//!
//! KVM's PV EOI (msr.rst, `MSR_KVM_PV_EOI_EN`) is the same protocol on a
//! 4-byte word with the flag in bit 0 (`KVM_PV_EOI_ENABLED`), which is
//! exactly the `apic_assist` word at offset 0 of a VP assist page: the
//! `kvm` persona uses this state machine with the PV EOI word's GPA as the
//! "page".

use super::GuestCx;
use pvops_abi::hyperv::{APIC_ASSIST_NO_EOI_REQUIRED, VP_ASSIST_APIC_ASSIST_OFFSET};

/// x2APIC ISR0 (SDM vol. 3A, table 11-6); ISR1..7 follow.
const X2APIC_ISR0: u32 = 0x810;

/// Lazy-EOI state.
#[derive(Clone, Copy, Debug, Default)]
pub struct LazyEoi {
    /// GPA of the enabled VP assist page.
    page: Option<u64>,
    /// The vector whose EOI the microvisor promised to do.
    pending: Option<u8>,
    /// Interrupts injected with "No EOI Required".
    pub offered: u64,
    /// EOIs the microvisor did for the guest (exits saved).
    pub completed: u64,
    /// Promises withdrawn before the guest used them.
    pub withdrawn: u64,
}

impl LazyEoi {
    /// The VP assist page's GPA, if enabled.
    pub fn page(&self) -> Option<u64> {
        self.page
    }

    fn word(cx: &GuestCx<'_>, gpa: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        cx.mem
            .read(gpa + VP_ASSIST_APIC_ASSIST_OFFSET as u64, &mut b)
            .ok()?;
        Some(u32::from_le_bytes(b))
    }

    fn set_word(cx: &GuestCx<'_>, gpa: u64, w: u32) {
        let _ = cx
            .mem
            .write(gpa + VP_ASSIST_APIC_ASSIST_OFFSET as u64, &w.to_le_bytes());
    }

    /// The guest (re)programmed HV_X64_MSR_VP_ASSIST_PAGE: settle any
    /// promise on the old page, then use `page` (None = disabled). A newly
    /// enabled page starts with `apic_assist` = 0.
    pub fn set_page(&mut self, cx: &mut GuestCx<'_>, page: Option<u64>) {
        self.reconcile_with(cx, true);
        self.page = page;
        if let Some(gpa) = page {
            Self::set_word(cx, gpa, 0);
        }
    }

    /// Before each entry: complete or withdraw the outstanding promise.
    pub fn reconcile(&mut self, cx: &mut GuestCx<'_>) {
        self.reconcile_with(cx, false);
    }

    fn reconcile_with(&mut self, cx: &mut GuestCx<'_>, withdraw: bool) {
        let Some(v) = self.pending else { return };
        let Some(gpa) = self.page else {
            self.pending = None;
            return;
        };
        let Some(w) = Self::word(cx, gpa) else {
            self.pending = None;
            return;
        };
        if cx.apic.in_service() != Some(v) {
            // Retired already (an EOI that ignored the bit): drop the promise.
            Self::set_word(cx, gpa, w & !APIC_ASSIST_NO_EOI_REQUIRED);
            self.pending = None;
            self.withdrawn += 1;
        } else if w & APIC_ASSIST_NO_EOI_REQUIRED == 0 {
            // The guest took the promise: its EOI is ours to do.
            cx.apic.eoi();
            self.pending = None;
            self.completed += 1;
        } else if withdraw || cx.apic.requested().is_some() {
            // Another interrupt may nest on top: the guest must EOI itself.
            Self::set_word(cx, gpa, w & !APIC_ASSIST_NO_EOI_REQUIRED);
            self.pending = None;
            self.withdrawn += 1;
        }
    }

    /// The guest is about to take `vector` (already in service).
    pub fn on_inject(&mut self, cx: &mut GuestCx<'_>, vector: u8) {
        if self.pending.is_some() {
            self.reconcile_with(cx, true);
        }
        let Some(gpa) = self.page else { return };
        if cx.apic.requested().is_some() || cx.apic.in_service() != Some(vector) {
            return;
        }
        // Exactly one vector in service: count the ISR bits (x2APIC mode;
        // in xAPIC mode the registers are not readable and no promise is made).
        let mut in_service = 0;
        for i in 0..8 {
            match cx.apic.rdmsr(X2APIC_ISR0 + i, cx.now) {
                Ok(w) => in_service += w.count_ones(),
                Err(_) => return,
            }
        }
        if in_service != 1 {
            return;
        }
        let Some(w) = Self::word(cx, gpa) else { return };
        Self::set_word(cx, gpa, w | APIC_ASSIST_NO_EOI_REQUIRED);
        self.pending = Some(vector);
        self.offered += 1;
    }
}
