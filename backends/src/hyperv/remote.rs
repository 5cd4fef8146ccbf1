//! Remote TLB flushes and IPIs through hypercalls (TLFS,
//! HvCallFlushVirtualAddressSpace/List, HvCallSendSyntheticClusterIpi).
//!
//! The table speaks in APIC IDs 0..64; the hypercalls in VP indexes. The
//! backend assumes VP index == APIC ID, which setup checks for the boot CPU
//! (HV_X64_MSR_VP_INDEX against its APIC ID) and which holds for Hyper-V,
//! KVM and Xen guests with APIC IDs assigned in order; HvCallGetVpIndexFromApicId
//! would be needed otherwise. Any failing call falls back to the native
//! operation for that call, logged once.

use super::hypercall;
use core::sync::atomic::{AtomicBool, Ordering};
use pvops::mmu::FlushTarget;
use pvops_abi::hyperv::{
    call, flush_flags, gva_range, Control, FlushVirtualAddressSpace, HypercallResult,
    SendSyntheticClusterIpi, Status,
};

static FLUSH_WARNED: AtomicBool = AtomicBool::new(false);
static IPI_WARNED: AtomicBool = AtomicBool::new(false);

fn warn_once(flag: &AtomicBool, what: &str, status: Status) {
    if !flag.swap(true, Ordering::Relaxed) {
        log::warn!(
            "pvops: hyperv: {} hypercall failed ({}); using the native path",
            what,
            status.name()
        );
    }
}

/// The flush header for `vp_mask`: every address space (the table's
/// operation flushes whatever the target CPUs run, not one CR3), and for a
/// full flush only non-global mappings, matching the native CR3 reload.
pub(crate) fn flush_header(vp_mask: u64, target: FlushTarget) -> FlushVirtualAddressSpace {
    let mut flags = flush_flags::ALL_VIRTUAL_ADDRESS_SPACES;
    if target == FlushTarget::All {
        flags |= flush_flags::NON_GLOBAL_MAPPINGS_ONLY;
    }
    FlushVirtualAddressSpace {
        address_space: 0,
        flags,
        processor_mask: vp_mask,
    }
}

/// Issues the flush hypercall for `vp_mask`, through the input page.
pub(crate) fn flush_hypercall(vp_mask: u64, target: FlushTarget) -> HypercallResult {
    let header = flush_header(vp_mask, target);
    let r = hypercall::with_input(|virt, gpa| {
        match target {
            FlushTarget::All => {
                hypercall::write_input(virt, &header.to_bytes());
                hypercall::call(Control::new(call::FLUSH_VIRTUAL_ADDRESS_SPACE), gpa, 0)
            }
            FlushTarget::Page(va) => {
                let entry = gva_range(va, 0);
                // The one rep element follows the 24-byte header.
                let mut bytes = [0u8; 32];
                bytes[..24].copy_from_slice(&header.to_bytes());
                bytes[24..].copy_from_slice(&entry.to_le_bytes());
                hypercall::write_input(virt, &bytes);
                let control = Control::new(call::FLUSH_VIRTUAL_ADDRESS_LIST).with_rep_count(1);
                let mut r = hypercall::call(control, gpa, 0);
                // A rep call may return early with reps left (continuation);
                // resume from where it stopped.
                while r.is_success() && r.reps_completed() < 1 {
                    r = hypercall::call(control.with_rep_start(r.reps_completed()), gpa, 0);
                }
                r
            }
        }
    });
    r.unwrap_or(hypercall::NOT_READY)
}

/// `mmu.flush_remote`.
pub(crate) extern "C" fn flush_remote(cpus: u64, target: FlushTarget) {
    if cpus == 0 {
        return;
    }
    let r = flush_hypercall(cpus, target);
    if !r.is_success() {
        warn_once(&FLUSH_WARNED, "TLB flush", r.status());
        pvops::native::mmu::flush_remote(cpus, target);
    }
}

/// Issues the fast IPI hypercall.
pub(crate) fn ipi_hypercall(vp_mask: u64, vector: u8) -> HypercallResult {
    let input = SendSyntheticClusterIpi {
        vector: u32::from(vector),
        target_vtl: 0,
        reserved: [0; 3],
        processor_mask: vp_mask,
    };
    let (rdx, r8) = input.fast_registers();
    hypercall::call_fast(Control::new(call::SEND_SYNTHETIC_CLUSTER_IPI), rdx, r8)
}

/// `irq.send_ipi_mask`.
pub(crate) extern "C" fn send_ipi_mask(cpus: u64, vector: u8) {
    if cpus == 0 {
        return;
    }
    if vector < SendSyntheticClusterIpi::MIN_VECTOR {
        pvops::native::irq::send_ipi_mask(cpus, vector);
        return;
    }
    let r = ipi_hypercall(cpus, vector);
    if !r.is_success() {
        warn_once(&IPI_WARNED, "synthetic cluster IPI", r.status());
        pvops::native::irq::send_ipi_mask(cpus, vector);
    }
}

/// `irq.send_ipi`.
pub(crate) extern "C" fn send_ipi(dest: u32, vector: u8) {
    if dest < 64 {
        send_ipi_mask(1 << dest, vector);
    } else {
        pvops::native::irq::send_ipi(dest, vector);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_headers() {
        let all = flush_header(0b11, FlushTarget::All);
        assert_eq!(all.flags, 0b110);
        assert_eq!(all.processor_mask, 0b11);
        let page = flush_header(1, FlushTarget::Page(0x1234));
        assert_eq!(page.flags, flush_flags::ALL_VIRTUAL_ADDRESS_SPACES);
    }
}
