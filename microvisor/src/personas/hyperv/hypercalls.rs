//! Hypercalls (TLFS, Hypercall Interface; Hypercall Reference).
//!
//! The registers (x64): RCX = control ([`Control`]), RDX = input GPA (fast:
//! first input qword), R8 = output GPA (fast: second input qword); the
//! result goes to RAX ([`HypercallResult`]). In 32-bit mode: EDX:EAX =
//! control, EBX:ECX = input, EDI:ESI = output, EDX:EAX = result.
//!
//! Checks, in order, with the TLFS's common status codes ("Hypercall
//! Status Codes"): RsvdZ bits of the control → INVALID_HYPERCALL_INPUT;
//! unknown call code → INVALID_HYPERCALL_CODE; rep count or start wrong for
//! the call (non-zero for a simple call, zero or start ≥ count for a rep
//! call), a variable header for a call without one, or the fast form for a
//! call whose input does not fit two registers → INVALID_HYPERCALL_INPUT;
//! input GPA not 8-byte aligned, input list crossing a page, or outside
//! guest RAM → INVALID_ALIGNMENT; then each call's own parameters →
//! INVALID_PARAMETER. None of the three calls has output, so the output GPA
//! is ignored ("If the hypercall has no input or output parameters, the
//! hypervisor ignores the corresponding GPA pointer").
//!
//! Calls: HvCallFlushVirtualAddressSpace (0x0002, simple) and
//! HvCallFlushVirtualAddressList (0x0003, rep): this single VP caches no
//! translations for the guest, and QEMU TCG flushes the guest TLB on every
//! VMRUN and #VMEXIT (the hypercall's own exit included), so a flush
//! naming this VP is complete when the call returns; on real hardware it
//! would set TLB_CONTROL, which `GuestCx` does not reach. Other VPs in the
//! mask do not exist and are ignored, as Hyper-V ignores absent VPs.
//! HvCallSendSyntheticClusterIpi (0x000B, simple, fast or memory): the
//! vector is raised at this VP's APIC if the mask has bit 0; an empty mask
//! succeeds and delivers nothing.

use crate::guest::mem::GuestRam;
use crate::vapic::VApic;
use pvops_abi::hyperv::{
    call, flush_flags, input_vtl, Control, FlushVirtualAddressSpace, HypercallResult,
    SendSyntheticClusterIpi, Status, PAGE_SIZE,
};
use zerocopy::FromBytes;

/// A decoded hypercall.
#[derive(Clone, Copy, Debug)]
pub struct Input {
    /// The control value.
    pub control: Control,
    /// Input GPA or first fast input.
    pub input: u64,
    /// Output GPA or second fast input.
    pub output: u64,
}

/// What the calls did, for the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Flushes that named this VP.
    pub flushes: u64,
    /// IPIs delivered to this VP.
    pub ipis: u64,
    /// Calls that returned an error status.
    pub errors: u64,
}

/// Reads the input of `len` bytes at `gpa`.
fn read_input(mem: &GuestRam, gpa: u64, out: &mut [u8]) -> Result<(), Status> {
    let len = out.len() as u64;
    if gpa & 7 != 0 || (gpa & (PAGE_SIZE as u64 - 1)) + len > PAGE_SIZE as u64 {
        return Err(Status::INVALID_ALIGNMENT);
    }
    mem.read(gpa, out).map_err(|_| Status::INVALID_ALIGNMENT)
}

/// Checks the control fields common to simple calls.
fn simple(c: Control, fast_ok: bool) -> Result<(), Status> {
    if c.rep_count() != 0 || c.rep_start() != 0 || c.var_header_size() != 0 {
        return Err(Status::INVALID_HYPERCALL_INPUT);
    }
    if c.is_fast() && !fast_ok {
        return Err(Status::INVALID_HYPERCALL_INPUT);
    }
    Ok(())
}

const FLUSH_FLAGS_KNOWN: u64 = flush_flags::ALL_PROCESSORS
    | flush_flags::ALL_VIRTUAL_ADDRESS_SPACES
    | flush_flags::NON_GLOBAL_MAPPINGS_ONLY;

/// Whether a flush header is valid and names this VP (VP index 0).
fn flush_targets_self(h: &FlushVirtualAddressSpace, list: bool) -> Result<bool, Status> {
    let mut known = FLUSH_FLAGS_KNOWN;
    if list {
        known &= !flush_flags::NON_GLOBAL_MAPPINGS_ONLY;
    }
    if h.flags & !known != 0 {
        return Err(Status::INVALID_PARAMETER);
    }
    Ok(h.flags & flush_flags::ALL_PROCESSORS != 0 || h.processor_mask & 1 != 0)
}

/// Runs one call; returns the result for RAX.
pub fn run(i: Input, mem: &GuestRam, apic: &mut VApic, stats: &mut Stats) -> HypercallResult {
    let r = dispatch(i, mem, apic, stats);
    if !r.is_success() {
        stats.errors += 1;
    }
    r
}

fn dispatch(i: Input, mem: &GuestRam, apic: &mut VApic, stats: &mut Stats) -> HypercallResult {
    let fail = |s: Status| HypercallResult::new(s, 0);
    let c = i.control;
    if c.has_reserved_bits() {
        return fail(Status::INVALID_HYPERCALL_INPUT);
    }
    match c.code() {
        call::FLUSH_VIRTUAL_ADDRESS_SPACE => {
            // 24 bytes of input: no fast form without XMM input.
            if let Err(s) = simple(c, false) {
                return fail(s);
            }
            let mut b = [0u8; 24];
            if let Err(s) = read_input(mem, i.input, &mut b) {
                return fail(s);
            }
            let h = FlushVirtualAddressSpace::read_from_bytes(&b).unwrap_or_default();
            match flush_targets_self(&h, false) {
                Ok(me) => {
                    stats.flushes += u64::from(me);
                    HypercallResult::new(Status::SUCCESS, 0)
                }
                Err(s) => fail(s),
            }
        }
        call::FLUSH_VIRTUAL_ADDRESS_LIST => {
            let (count, start) = (c.rep_count(), c.rep_start());
            if count == 0 || start >= count || c.var_header_size() != 0 || c.is_fast() {
                return fail(Status::INVALID_HYPERCALL_INPUT);
            }
            // Header and every element must sit in the input page.
            let len = 24 + 8 * u64::from(count);
            if i.input & 7 != 0
                || (i.input & (PAGE_SIZE as u64 - 1)) + len > PAGE_SIZE as u64
                || !mem.contains(i.input, len)
            {
                return fail(Status::INVALID_ALIGNMENT);
            }
            let mut b = [0u8; 24];
            if let Err(s) = read_input(mem, i.input, &mut b) {
                return fail(s);
            }
            let h = FlushVirtualAddressSpace::read_from_bytes(&b).unwrap_or_default();
            match flush_targets_self(&h, true) {
                Ok(me) => {
                    stats.flushes += u64::from(me);
                    // Every rep done (reps completed counts from 0).
                    HypercallResult::new(Status::SUCCESS, count)
                }
                Err(s) => fail(s),
            }
        }
        call::SEND_SYNTHETIC_CLUSTER_IPI => {
            if let Err(s) = simple(c, true) {
                return fail(s);
            }
            let ipi = if c.is_fast() {
                SendSyntheticClusterIpi::from_fast_registers(i.input, i.output)
            } else {
                let mut b = [0u8; 16];
                if let Err(s) = read_input(mem, i.input, &mut b) {
                    return fail(s);
                }
                SendSyntheticClusterIpi::read_from_bytes(&b).unwrap_or_default()
            };
            let vtl_ok = ipi.target_vtl & input_vtl::RESERVED_MASK == 0
                && (ipi.target_vtl & input_vtl::USE_TARGET_VTL == 0
                    || ipi.target_vtl & input_vtl::TARGET_VTL_MASK == 0);
            let vector_ok =
                (u32::from(SendSyntheticClusterIpi::MIN_VECTOR)..=0xFF).contains(&ipi.vector);
            if !vtl_ok || !vector_ok || ipi.reserved != [0; 3] {
                return fail(Status::INVALID_PARAMETER);
            }
            if ipi.processor_mask & 1 != 0 {
                apic.raise(ipi.vector as u8);
                stats.ipis += 1;
            }
            HypercallResult::new(Status::SUCCESS, 0)
        }
        // HvCallNotifyLongSpinWait (TLFS: simple, fast, input the spin
        // count): a hint that this VP spins on a lock; with one VP there is
        // nobody else to run, so it just succeeds (KVM: `kvm_vcpu_on_spin`).
        call::NOTIFY_LONG_SPIN_WAIT => match simple(c, true) {
            Ok(()) => HypercallResult::new(Status::SUCCESS, 0),
            Err(s) => fail(s),
        },
        _ => fail(Status::INVALID_HYPERCALL_CODE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ram(Vec<u64>);

    impl Ram {
        fn new() -> Ram {
            Ram(vec![0; 4 * PAGE_SIZE / 8])
        }
        fn mem(&mut self) -> GuestRam {
            // SAFETY: the buffer is this test's own, lives as long as the
            // returned value is used, and on the host the "host-physical"
            // address is the buffer's address.
            unsafe { GuestRam::new(self.0.as_mut_ptr() as u64, (self.0.len() * 8) as u64) }
        }
    }

    fn go(c: Control, input: u64, output: u64, mem: &GuestRam, apic: &mut VApic) -> Status {
        let mut st = Stats::default();
        run(
            Input {
                control: c,
                input,
                output,
            },
            mem,
            apic,
            &mut st,
        )
        .status()
    }

    fn flush_header(flags: u64, mask: u64) -> [u8; 24] {
        FlushVirtualAddressSpace {
            address_space: 0,
            flags,
            processor_mask: mask,
        }
        .to_bytes()
    }

    #[test]
    fn control_and_code_errors() {
        let mut ram = Ram::new();
        let mem = ram.mem();
        let mut apic = VApic::new(1_000_000);
        let flush = Control::new(call::FLUSH_VIRTUAL_ADDRESS_SPACE);
        assert_eq!(
            go(Control(flush.0 | 1 << 27), 0, 0, &mem, &mut apic),
            Status::INVALID_HYPERCALL_INPUT
        );
        assert_eq!(
            go(Control::new(0x7777), 0, 0, &mem, &mut apic),
            Status::INVALID_HYPERCALL_CODE
        );
        assert_eq!(
            go(flush.with_rep_count(1), 0, 0, &mem, &mut apic),
            Status::INVALID_HYPERCALL_INPUT
        );
        assert_eq!(
            go(flush.fast(), 0, 0, &mem, &mut apic),
            Status::INVALID_HYPERCALL_INPUT
        );
        let list = Control::new(call::FLUSH_VIRTUAL_ADDRESS_LIST);
        assert_eq!(
            go(list, 0, 0, &mem, &mut apic),
            Status::INVALID_HYPERCALL_INPUT
        );
        assert_eq!(
            go(
                list.with_rep_count(2).with_rep_start(2),
                0,
                0,
                &mem,
                &mut apic
            ),
            Status::INVALID_HYPERCALL_INPUT
        );
    }

    #[test]
    fn gpa_errors_and_flushes() {
        let mut ram = Ram::new();
        let mem = ram.mem();
        let mut apic = VApic::new(1_000_000);
        let flush = Control::new(call::FLUSH_VIRTUAL_ADDRESS_SPACE);
        mem.write(0x1000, &flush_header(6, 1)).unwrap();
        assert_eq!(go(flush, 0x1000, 0xdead, &mem, &mut apic), Status::SUCCESS);
        assert_eq!(
            go(flush, 0x1004, 0, &mem, &mut apic),
            Status::INVALID_ALIGNMENT
        );
        assert_eq!(
            go(flush, 0x1FF0, 0, &mem, &mut apic),
            Status::INVALID_ALIGNMENT
        );
        assert_eq!(
            go(flush, 1 << 40, 0, &mem, &mut apic),
            Status::INVALID_ALIGNMENT
        );
        mem.write(0x1000, &flush_header(1 << 5, 1)).unwrap();
        assert_eq!(
            go(flush, 0x1000, 0, &mem, &mut apic),
            Status::INVALID_PARAMETER
        );
        // The list form: NON_GLOBAL_MAPPINGS_ONLY is invalid; reps reported.
        let list = Control::new(call::FLUSH_VIRTUAL_ADDRESS_LIST).with_rep_count(3);
        mem.write(0x2000, &flush_header(2, 1)).unwrap();
        let mut st = Stats::default();
        let r = run(
            Input {
                control: list,
                input: 0x2000,
                output: 0,
            },
            &mem,
            &mut apic,
            &mut st,
        );
        assert!(r.is_success());
        assert_eq!(r.reps_completed(), 3);
        assert_eq!(st.flushes, 1);
        mem.write(0x2000, &flush_header(6, 1)).unwrap();
        assert_eq!(
            go(list, 0x2000, 0, &mem, &mut apic),
            Status::INVALID_PARAMETER
        );
        // A list that would run past the page.
        assert_eq!(
            go(list.with_rep_count(600), 0x2000, 0, &mem, &mut apic),
            Status::INVALID_ALIGNMENT
        );
    }

    #[test]
    fn long_spin_wait_notification() {
        let mut ram = Ram::new();
        let mem = ram.mem();
        let mut apic = VApic::new(1_000_000);
        let c = Control::new(call::NOTIFY_LONG_SPIN_WAIT).fast();
        assert_eq!(go(c, 0x1FFF, 0, &mem, &mut apic), Status::SUCCESS);
        assert_eq!(
            go(c.with_rep_count(1), 0x1FFF, 0, &mem, &mut apic),
            Status::INVALID_HYPERCALL_INPUT
        );
    }

    #[test]
    fn cluster_ipi() {
        let mut ram = Ram::new();
        let mem = ram.mem();
        let mut apic = VApic::new(1_000_000);
        let ipi = Control::new(call::SEND_SYNTHETIC_CLUSTER_IPI);
        // Empty mask: success, nothing delivered.
        assert_eq!(go(ipi.fast(), 0xF0, 0, &mem, &mut apic), Status::SUCCESS);
        assert_eq!(apic.requested(), None);
        assert_eq!(go(ipi.fast(), 0xF0, 0b11, &mem, &mut apic), Status::SUCCESS);
        assert_eq!(apic.requested(), Some(0xF0));
        assert_eq!(
            go(ipi.fast(), 0x0F, 1, &mem, &mut apic),
            Status::INVALID_PARAMETER
        );
        assert_eq!(
            go(ipi.fast(), 0x1F0, 1, &mem, &mut apic),
            Status::INVALID_PARAMETER
        );
        // Memory form.
        mem.write(0x3000, &[0x50, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
            .unwrap();
        let mut apic = VApic::new(1_000_000);
        assert_eq!(go(ipi, 0x3000, 0, &mem, &mut apic), Status::SUCCESS);
        assert_eq!(apic.requested(), Some(0x50));
        assert_eq!(
            go(ipi.with_rep_count(1).fast(), 0x50, 1, &mem, &mut apic),
            Status::INVALID_HYPERCALL_INPUT
        );
    }
}
