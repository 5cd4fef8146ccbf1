//! Remote TLB flushes and IPIs through hypercalls (TLFS,
//! HvCallFlushVirtualAddressSpace/List and their Ex forms,
//! HvCallSendSyntheticClusterIpi(Ex)).
//!
//! The table speaks in APIC IDs 0..64; the hypercalls in VP indexes. Each
//! CPU's VP index is read from HV_X64_MSR_VP_INDEX on that CPU at set-up
//! ([`super::percpu`]) and the mask is translated through that map
//! ([`vp_set`]), never assuming VP index == APIC ID (review finding F4).
//! All VP indexes below 64: the simple calls with a 64-bit processor mask;
//! one of 64 or more: the Ex calls with a sparse 4K `HV_VP_SET`, when the
//! hypervisor recommends Ex processor masks (CPUID 0x4000_0004 EAX bit 11),
//! else native. A target whose VP index is not known (its set-up did not
//! run or failed), or a call the hypervisor fails (a refused processor
//! set, say), falls back to the native operation for that call, logged
//! once.

use super::hypercall;
use core::sync::atomic::{AtomicBool, Ordering};
use pvops::mmu::FlushTarget;
use pvops_abi::hyperv::{
    call, flush_flags, gva_range, Control, FlushVirtualAddressSpace, HypercallResult,
    SendSyntheticClusterIpi, SparseVpSet, Status,
};

static FLUSH_WARNED: AtomicBool = AtomicBool::new(false);
static IPI_WARNED: AtomicBool = AtomicBool::new(false);
static UNMAPPED_WARNED: AtomicBool = AtomicBool::new(false);
/// The Ex forms may be used (CPUID 0x4000_0004 EAX bit 11).
static EX_OK: AtomicBool = AtomicBool::new(false);

/// Allows the Ex hypercalls (the hypervisor recommends Ex processor masks).
pub(crate) fn set_ex_allowed(on: bool) {
    EX_OK.store(on, Ordering::Relaxed);
}

fn warn_once(flag: &AtomicBool, what: &str, status: Status) {
    if !flag.swap(true, Ordering::Relaxed) {
        log::warn!(
            "pvops: hyperv: {} hypercall failed ({}); using the native path",
            what,
            status.name()
        );
    }
}

/// The processor set of a table mask, or why the hypercall cannot name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "built on the stack per call and consumed at once; 528 bytes beat a heap the kernel may not have"
)]
pub(crate) enum Plan {
    /// Every VP index below 64: the simple call's processor mask.
    Simple(u64),
    /// A VP index of 64 or more: the Ex call's sparse set.
    Ex(SparseVpSet),
    /// Native for this call: a target's VP index is unknown, or needs the
    /// Ex form the hypervisor does not recommend.
    Native(&'static str),
}

/// Translates `apic_mask` (bit n = APIC ID n) into VP indexes with `vp_of`
/// (APIC ID -> VP index), choosing the simple or Ex form.
pub(crate) fn vp_set(apic_mask: u64, vp_of: impl Fn(u32) -> Option<u32>, ex_ok: bool) -> Plan {
    let mut set = SparseVpSet::new();
    let mut m = apic_mask;
    while m != 0 {
        let apic = m.trailing_zeros();
        m &= m - 1;
        let Some(vp) = vp_of(apic) else {
            return Plan::Native("a target CPU's VP index is not known");
        };
        if !set.insert(vp) {
            return Plan::Native("a VP index beyond the sparse set's 4096");
        }
    }
    match set.as_simple_mask() {
        Some(mask) => Plan::Simple(mask),
        None if ex_ok => Plan::Ex(set),
        None => Plan::Native("a VP index of 64 or more and no Ex processor masks"),
    }
}

fn plan(apic_mask: u64) -> Plan {
    let p = vp_set(
        apic_mask,
        super::percpu::vp_of_apic,
        EX_OK.load(Ordering::Relaxed),
    );
    if let Plan::Native(why) = p {
        if !UNMAPPED_WARNED.swap(true, Ordering::Relaxed) {
            log::warn!("pvops: hyperv: native IPI/flush for a call: {}", why);
        }
    }
    p
}

/// The flush header for `vp_mask`: every address space (the table's
/// operation flushes whatever the target CPUs run, not one CR3), and for a
/// full flush only non-global mappings, matching the native CR3 reload.
pub(crate) fn flush_header(vp_mask: u64, target: FlushTarget) -> FlushVirtualAddressSpace {
    FlushVirtualAddressSpace {
        address_space: 0,
        flags: flush_flags_for(target),
        processor_mask: vp_mask,
    }
}

fn flush_flags_for(target: FlushTarget) -> u64 {
    let mut flags = flush_flags::ALL_VIRTUAL_ADDRESS_SPACES;
    if target == FlushTarget::All {
        flags |= flush_flags::NON_GLOBAL_MAPPINGS_ONLY;
    }
    flags
}

/// Most qwords an Ex input takes: address space, flags, format, bank mask,
/// 64 banks, one GVA range.
pub(crate) const EX_MAX_WORDS: usize = 4 + 64 + 1;

/// The input of HvCallFlushVirtualAddressSpaceEx / ListEx for `set` as
/// qwords (address space, flags, `HV_VP_SET`, then for a page the one
/// GVA range), with the control word; returns the qwords used.
pub(crate) fn flush_ex_input(
    set: &SparseVpSet,
    target: FlushTarget,
    out: &mut [u64; EX_MAX_WORDS],
) -> (Control, usize) {
    out[0] = 0;
    out[1] = flush_flags_for(target);
    let n = 2 + set.write_words(&mut out[2..]).unwrap_or(0);
    let banks = set.bank_count();
    match target {
        FlushTarget::All => (
            Control::new(call::FLUSH_VIRTUAL_ADDRESS_SPACE_EX).with_var_header_size(banks),
            n,
        ),
        FlushTarget::Page(va) => {
            out[n] = gva_range(va, 0);
            (
                Control::new(call::FLUSH_VIRTUAL_ADDRESS_LIST_EX)
                    .with_var_header_size(banks)
                    .with_rep_count(1),
                n + 1,
            )
        }
    }
}

/// The input of HvCallSendSyntheticClusterIpiEx: vector (own VTL), then the
/// `HV_VP_SET`; returns the control word and the qwords used.
pub(crate) fn ipi_ex_input(
    set: &SparseVpSet,
    vector: u8,
    out: &mut [u64; EX_MAX_WORDS],
) -> (Control, usize) {
    out[0] = u64::from(vector);
    let n = 1 + set.write_words(&mut out[1..]).unwrap_or(0);
    (
        Control::new(call::SEND_SYNTHETIC_CLUSTER_IPI_EX).with_var_header_size(set.bank_count()),
        n,
    )
}

/// A memory-based call with `words` as input, resuming a rep call that
/// returns early.
fn call_words(control: Control, words: &[u64]) -> HypercallResult {
    let mut bytes = [0u8; EX_MAX_WORDS * 8];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    let r = hypercall::with_input(|virt, gpa| {
        hypercall::write_input(virt, &bytes[..words.len() * 8]);
        let mut r = hypercall::call(control, gpa, 0);
        while control.rep_count() > 0 && r.is_success() && r.reps_completed() < control.rep_count()
        {
            r = hypercall::call(control.with_rep_start(r.reps_completed()), gpa, 0);
        }
        r
    });
    r.unwrap_or(hypercall::NOT_READY)
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

/// Runs one cross-CPU operation by `plan`: the simple or Ex hypercall, and
/// `native` when the plan says so or the hypercall fails (`warned` once).
pub(crate) fn dispatch(
    plan: Plan,
    simple: impl FnOnce(u64) -> HypercallResult,
    ex: impl FnOnce(&SparseVpSet) -> HypercallResult,
    native: impl FnOnce(),
    warned: &AtomicBool,
    what: &str,
) {
    let r = match plan {
        Plan::Simple(mask) => simple(mask),
        Plan::Ex(set) => ex(&set),
        Plan::Native(_) => return native(),
    };
    if !r.is_success() {
        warn_once(warned, what, r.status());
        native();
    }
}

/// `mmu.flush_remote`.
pub(crate) extern "C" fn flush_remote(cpus: u64, target: FlushTarget) {
    if cpus == 0 {
        return;
    }
    dispatch(
        plan(cpus),
        |mask| flush_hypercall(mask, target),
        |set| {
            let mut w = [0u64; EX_MAX_WORDS];
            let (control, n) = flush_ex_input(set, target, &mut w);
            call_words(control, &w[..n])
        },
        || pvops::native::mmu::flush_remote(cpus, target),
        &FLUSH_WARNED,
        "TLB flush",
    );
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
    dispatch(
        plan(cpus),
        |mask| ipi_hypercall(mask, vector),
        |set| {
            let mut w = [0u64; EX_MAX_WORDS];
            let (control, n) = ipi_ex_input(set, vector, &mut w);
            call_words(control, &w[..n])
        },
        || pvops::native::irq::send_ipi_mask(cpus, vector),
        &IPI_WARNED,
        "synthetic cluster IPI",
    );
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
    use core::cell::Cell;

    #[test]
    fn flush_headers() {
        let all = flush_header(0b11, FlushTarget::All);
        assert_eq!(all.flags, 0b110);
        assert_eq!(all.processor_mask, 0b11);
        let page = flush_header(1, FlushTarget::Page(0x1234));
        assert_eq!(page.flags, flush_flags::ALL_VIRTUAL_ADDRESS_SPACES);
    }

    /// APIC ID n is VP index 10 - n, APIC 7 is VP 70, APIC 9 unknown.
    fn map(apic: u32) -> Option<u32> {
        match apic {
            7 => Some(70),
            9 => None,
            a => Some(10 - a),
        }
    }

    #[test]
    fn processor_sets_use_vp_indexes_not_apic_ids() {
        assert_eq!(vp_set(0b11, map, false), Plan::Simple(1 << 10 | 1 << 9));
        assert_eq!(vp_set(0, map, false), Plan::Simple(0));
        assert!(matches!(vp_set(1 << 9, map, true), Plan::Native(_)));
    }

    #[test]
    fn a_vp_index_of_64_or_more_takes_the_ex_form() {
        let Plan::Ex(set) = vp_set(1 << 7 | 1, map, true) else {
            panic!("Ex expected");
        };
        assert_eq!(set.valid_bank_mask, 0b11);
        assert!(set.contains(70) && set.contains(10));
        // Without the Ex recommendation: native.
        assert!(matches!(vp_set(1 << 7, map, false), Plan::Native(_)));

        let mut w = [0u64; EX_MAX_WORDS];
        let (c, n) = flush_ex_input(&set, FlushTarget::All, &mut w);
        assert_eq!(c.code(), call::FLUSH_VIRTUAL_ADDRESS_SPACE_EX);
        assert_eq!(c.var_header_size(), 2);
        assert_eq!(c.rep_count(), 0);
        assert_eq!(&w[..n], &[0, 0b110, 0, 0b11, 1 << 10, 1 << 6]);
        let (c, n) = flush_ex_input(&set, FlushTarget::Page(0x5000), &mut w);
        assert_eq!(c.code(), call::FLUSH_VIRTUAL_ADDRESS_LIST_EX);
        assert_eq!((c.var_header_size(), c.rep_count()), (2, 1));
        assert_eq!(&w[..n], &[0, 0b10, 0, 0b11, 1 << 10, 1 << 6, 0x5000]);
        let (c, n) = ipi_ex_input(&set, 0xF0, &mut w);
        assert_eq!(c.code(), call::SEND_SYNTHETIC_CLUSTER_IPI_EX);
        assert!(!c.is_fast());
        assert_eq!(c.var_header_size(), 2);
        assert_eq!(&w[..n], &[0xF0, 0, 0b11, 1 << 10, 1 << 6]);
    }

    #[test]
    fn a_refused_processor_set_falls_back_to_native_for_that_call() {
        let warned = AtomicBool::new(false);
        let natives = Cell::new(0);
        let refuse = |_: u64| HypercallResult::new(Status::INVALID_PARAMETER, 0);
        let ok = |_: u64| HypercallResult::new(Status::SUCCESS, 0);
        let no_ex = |_: &SparseVpSet| -> HypercallResult { panic!("no Ex call expected") };
        dispatch(
            Plan::Simple(3),
            refuse,
            no_ex,
            || natives.set(natives.get() + 1),
            &warned,
            "t",
        );
        assert_eq!(natives.get(), 1);
        assert!(warned.load(Ordering::Relaxed));
        dispatch(
            Plan::Simple(3),
            ok,
            no_ex,
            || natives.set(natives.get() + 1),
            &warned,
            "t",
        );
        assert_eq!(natives.get(), 1, "a successful call sends no native IPI");
        let ex_refused = |_: &SparseVpSet| HypercallResult::new(Status::INVALID_VP_INDEX, 0);
        dispatch(
            Plan::Ex(SparseVpSet::new()),
            |_| panic!("no simple call"),
            ex_refused,
            || natives.set(natives.get() + 1),
            &warned,
            "t",
        );
        assert_eq!(natives.get(), 2);
        dispatch(
            Plan::Native("unknown"),
            |_| panic!("no call"),
            no_ex,
            || natives.set(natives.get() + 1),
            &warned,
            "t",
        );
        assert_eq!(natives.get(), 3);
    }
}
