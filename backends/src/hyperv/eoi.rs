//! End of interrupt through the VP assist page's EOI assist ("lazy EOI"),
//! else the EOI MSR (TLFS, Virtual Interrupt Control: EOI Assist, Local
//! APIC MSR Accesses).

//!
//! The assist page is per VP: each CPU reads and clears only its own
//! ([`super::percpu::assist_page`]), so an AP never consumes the boot VP's
//! "No EOI Required" bit (review finding F4).

use super::msr;
use core::sync::atomic::{AtomicU32, Ordering};
use pvops_abi::hyperv::{msr as m, APIC_ASSIST_NO_EOI_REQUIRED, VP_ASSIST_APIC_ASSIST_OFFSET};

/// Atomically zeroes the EOI assist word at `page` and says whether "No EOI
/// Required" was set. `page` must map the (4 KiB aligned) VP assist page.
pub(crate) fn take_no_eoi_required(page: *mut u8) -> bool {
    // SAFETY: `page` is the VP assist page (or a test buffer), 4 KiB
    // aligned, so the word at offset 0 is aligned; the hypervisor updates it
    // concurrently, hence an atomic swap, as the TLFS prescribes.
    let word = unsafe { AtomicU32::from_ptr(page.add(VP_ASSIST_APIC_ASSIST_OFFSET).cast()) };
    word.swap(0, Ordering::SeqCst) & APIC_ASSIST_NO_EOI_REQUIRED != 0
}

/// `irq.eoi`: skip the EOI exit when the hypervisor said none is needed
/// (this CPU's assist page), else write HV_X64_MSR_EOI.
pub(crate) extern "C" fn eoi() {
    let page = super::percpu::assist_page();
    if !page.is_null() && take_no_eoi_required(page) {
        return;
    }
    msr::write(m::EOI, 0);
}

#[cfg(test)]
mod tests {
    use pvops_abi::hyperv::{VpAssistPage, PAGE_SIZE};

    #[test]
    fn lazy_eoi_clears_the_word() {
        let mut p = Box::new(VpAssistPage {
            apic_assist: 1,
            reserved: [0; PAGE_SIZE - 4],
        });
        let base: *mut VpAssistPage = &mut *p;
        assert!(super::take_no_eoi_required(base.cast()));
        assert_eq!(p.apic_assist, 0);
        assert!(!super::take_no_eoi_required(base.cast()));
    }
}
