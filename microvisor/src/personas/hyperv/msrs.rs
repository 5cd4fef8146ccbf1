//! The synthetic MSRs (TLFS; numbers from `pvops_abi::hyperv::msr`).
//!
//! | MSR | read | write |
//! |---|---|---|
//! | GUEST_OS_ID | value | any value; 0 disables the hypercall page |
//! | HYPERCALL | value | ignored once Locked; Enable only with a non-zero guest OS ID (else stored with Enable clear); enabling writes the overlay (`VMMCALL; RET`) at the GPA; GPA outside RAM: #GP |
//! | VP_INDEX | 0 | #GP (read-only) |
//! | TIME_REF_COUNT | reference time, 100 ns | #GP |
//! | REFERENCE_TSC | value | enabling writes the page header (sequence ≠ 0, scale, offset) at the GPA; outside RAM: #GP |
//! | TSC_FREQUENCY / APIC_FREQUENCY | Hz | #GP |
//! | EOI | #GP (write-only) | EOI at the vAPIC |
//! | ICR / TPR | the x2APIC ICR / TPR | the x2APIC ICR / TPR (the vAPIC's rules) |
//! | VP_ASSIST_PAGE | value | enable/move the page; `apic_assist` zeroed; outside RAM: #GP |
//! | STIMERn_CONFIG/COUNT (n < 4) | value | see `stimer` |
//! | CRASH_P0..P4 | value | value |
//! | CRASH_CTL | Notify \| Message | Notify records the crash |
//!
//! Every other MSR in 0x4000_0000..=0x4000_01FF raises #GP: their
//! privileges are not offered.

use super::refclock::Overlay;
use super::{Break, GuestCx, HyperV};
use crate::guest::Gp;
use pvops_abi::hyperv::{
    hypercall_msr, msr as m, page_msr, HYPERCALL_PAGE_SVM, PAGE_SIZE, TSC_SEQUENCE_INVALID,
};

/// x2APIC TPR and ICR (SDM vol. 3A, table 11-6).
const X2APIC_TPR: u32 = 0x808;
const X2APIC_ICR: u32 = 0x830;

/// The synthetic timer behind MSR `msr`: (timer, is COUNT).
fn stimer_of(msr: u32) -> Option<(usize, bool)> {
    let first = m::stimer_config(0);
    let last = m::stimer_count(m::STIMER_COUNT - 1);
    (first..=last)
        .contains(&msr)
        .then(|| (((msr - first) / 2) as usize, (msr - first) % 2 == 1))
}

impl HyperV {
    pub(super) fn read(&mut self, cx: &mut GuestCx<'_>, msr: u32) -> Result<u64, Gp> {
        Ok(match msr {
            m::GUEST_OS_ID => self.guest_os_id,
            m::HYPERCALL => self.hypercall_msr,
            // Read-only; a write #GPs below (TLFS: VP index 0..n-1 in
            // creation order, here the vCPU index, which is the APIC ID).
            m::VP_INDEX => cx.vcpu as u64,
            m::TIME_REF_COUNT => self.clock.at(cx.now),
            m::REFERENCE_TSC => self.tsc_page_msr,
            m::TSC_FREQUENCY | m::APIC_FREQUENCY
                if self.knobs.no_frequencies || self.broken == Some(Break::MsrsGp) =>
            {
                return Err(Gp)
            }
            m::CRASH_CTL if self.broken == Some(Break::MsrsGp) => return Err(Gp),
            m::TSC_FREQUENCY if self.broken == Some(Break::AbsurdFrequency) => super::ABSURD_TSC_HZ,
            m::TSC_FREQUENCY if self.broken == Some(Break::MiscalibratedFrequency) => {
                self.miscalibrated_tsc_hz()
            }
            m::TSC_FREQUENCY => self.clock.tsc_hz(),
            m::APIC_FREQUENCY => self.apic_hz,
            m::ICR => cx.apic.rdmsr(X2APIC_ICR, cx.now)?,
            m::TPR => cx.apic.rdmsr(X2APIC_TPR, cx.now)?,
            m::VP_ASSIST_PAGE => self.vp(cx).vp_assist_msr,
            m::CRASH_P0..=m::CRASH_P4 => self.crash.p[(msr - m::CRASH_P0) as usize],
            m::CRASH_CTL => super::crash::CAPABILITIES,
            _ => match stimer_of(msr) {
                Some((n, true)) => self.vp(cx).stimers[n].count(),
                Some((n, false)) => self.vp(cx).stimers[n].config(),
                None => return Err(Gp),
            },
        })
    }

    pub(super) fn write(&mut self, cx: &mut GuestCx<'_>, msr: u32, value: u64) -> Result<(), Gp> {
        match msr {
            m::GUEST_OS_ID => {
                self.guest_os_id = value;
                if value == 0 {
                    // No identity, no hypercalls (TLFS, Reporting the Guest
                    // OS Identity).
                    self.hypercall_msr &= !page_msr::ENABLE;
                    if let Some(o) = self.hypercall_overlay.take() {
                        o.remove(cx.mem);
                    }
                }
            }
            m::HYPERCALL => self.write_hypercall(cx, value)?,
            m::REFERENCE_TSC => self.write_reference_tsc(cx, value)?,
            m::EOI => cx.apic.eoi(),
            m::ICR => cx.apic.wrmsr(X2APIC_ICR, value, cx.now)?,
            m::TPR => cx.apic.wrmsr(X2APIC_TPR, value, cx.now)?,
            m::VP_ASSIST_PAGE => {
                let page = if page_msr::is_enabled(value) {
                    let gpa = page_msr::address(value);
                    if !cx.mem.contains(gpa, PAGE_SIZE as u64) {
                        return Err(Gp);
                    }
                    Some(gpa)
                } else {
                    None
                };
                let vp = self.vp(cx);
                vp.lazy.set_page(cx, page);
                vp.vp_assist_msr = value;
            }
            m::CRASH_P0..=m::CRASH_P4 => self.crash.p[(msr - m::CRASH_P0) as usize] = value,
            m::CRASH_CTL => {
                if self.crash.write_ctl(value, cx.mem) {
                    let p = self.crash.p;
                    crate::mvlog!(
                        "hyperv: guest crash notify p0={:#x} p1={:#x} p2={:#x} message \"{}\"",
                        p[0],
                        p[1],
                        p[2],
                        self.crash.message()
                    );
                }
            }
            _ => match stimer_of(msr) {
                Some((n, true)) => {
                    let clock = self.clock;
                    self.vp(cx).stimers[n].write_count(value, &clock, cx.now)
                }
                Some((n, false)) => {
                    // `tsc-page-late`: the page turns valid by the time the
                    // guest configures its timer, at the latest.
                    if self.tsc_valid_at.take().is_some() {
                        self.validate_tsc_page(cx);
                    }
                    let clock = self.clock;
                    self.vp(cx).stimers[n].write_config(value, &clock, cx.now)?
                }
                // VP_INDEX, TIME_REF_COUNT and the frequencies are read-only;
                // everything else is not offered.
                None => return Err(Gp),
            },
        }
        Ok(())
    }

    fn write_hypercall(&mut self, cx: &mut GuestCx<'_>, value: u64) -> Result<(), Gp> {
        if self.hypercall_msr & hypercall_msr::LOCKED != 0 {
            // "Once locked, the MSR cannot be changed until reset."
            return Ok(());
        }
        let mut value = value;
        if self.guest_os_id == 0 {
            value &= !page_msr::ENABLE;
        }
        if page_msr::is_enabled(value) {
            let gpa = page_msr::address(value);
            if !cx.mem.contains(gpa, PAGE_SIZE as u64) {
                return Err(Gp);
            }
            let moved = self
                .hypercall_overlay
                .as_ref()
                .is_none_or(|o| o.gpa() != gpa);
            if moved {
                if let Some(o) = self.hypercall_overlay.take() {
                    o.remove(cx.mem);
                }
                if self.broken != Some(Break::HypercallPage) {
                    self.hypercall_overlay =
                        Overlay::install(cx.mem, gpa, &HYPERCALL_PAGE_SVM).ok();
                }
            }
        } else if let Some(o) = self.hypercall_overlay.take() {
            o.remove(cx.mem);
        }
        self.hypercall_msr = value;
        Ok(())
    }

    fn write_reference_tsc(&mut self, cx: &mut GuestCx<'_>, value: u64) -> Result<(), Gp> {
        if let Some(o) = self.tsc_overlay.take() {
            o.remove(cx.mem);
        }
        if page_msr::is_enabled(value) {
            let gpa = page_msr::address(value);
            if !cx.mem.contains(gpa, PAGE_SIZE as u64) {
                return Err(Gp);
            }
            let sequence = if matches!(
                self.broken,
                Some(Break::TscPage | Break::MiscalibratedFrequency)
            ) {
                TSC_SEQUENCE_INVALID
            } else if self.knobs.tsc_page_late {
                // Valid 1 s of TSC later (see `poll`) or at the first
                // synthetic timer configuration, whichever comes first:
                // after the guest's set-up either way.
                self.tsc_valid_at = Some(cx.now.saturating_add(self.clock.tsc_hz()));
                TSC_SEQUENCE_INVALID
            } else {
                self.next_sequence()
            };
            let header = self.clock.page_header(sequence);
            self.tsc_overlay = Overlay::install(cx.mem, gpa, &header).ok();
        }
        self.tsc_page_msr = value;
        Ok(())
    }

    /// HV_X64_MSR_TSC_FREQUENCY under `break=miscalibrated-frequency`.
    pub(super) fn miscalibrated_tsc_hz(&self) -> u64 {
        let hz = u128::from(self.clock.tsc_hz()) * u128::from(super::MISCALIBRATED_NUM)
            / u128::from(super::MISCALIBRATED_DEN);
        u64::try_from(hz).unwrap_or(u64::MAX)
    }

    /// Writes a valid header into the enabled TSC page (`tsc-page-late`),
    /// over the overlay installed with sequence 0.
    pub(super) fn validate_tsc_page(&mut self, cx: &mut GuestCx<'_>) {
        if let Some(gpa) = self.tsc_overlay.as_ref().map(Overlay::gpa) {
            let sequence = self.next_sequence();
            let header = self.clock.page_header(sequence);
            let _ = cx.mem.write(gpa, &header);
        }
    }

    /// The next TSC page sequence: never 0 (invalid) nor 0xFFFF_FFFF (the
    /// old TLFS's invalid marker).
    fn next_sequence(&mut self) -> u32 {
        self.tsc_sequence = match self.tsc_sequence.wrapping_add(1) {
            0 | u32::MAX => 1,
            s => s,
        };
        self.tsc_sequence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stimer_msr_numbers() {
        assert_eq!(stimer_of(0x4000_00B0), Some((0, false)));
        assert_eq!(stimer_of(0x4000_00B1), Some((0, true)));
        assert_eq!(stimer_of(0x4000_00B7), Some((3, true)));
        assert_eq!(stimer_of(0x4000_00B8), None);
        assert_eq!(stimer_of(0x4000_00AF), None);
    }
}
