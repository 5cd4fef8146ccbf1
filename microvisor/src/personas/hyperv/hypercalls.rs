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
//! INVALID_PARAMETER. None of the calls has output, so the output GPA
//! is ignored ("If the hypercall has no input or output parameters, the
//! hypervisor ignores the corresponding GPA pointer").
//!
//! Calls, each for a set of VPs of the partition (bit n / VP index n = vCPU
//! n): HvCallFlushVirtualAddressSpace (0x0002, simple) and
//! HvCallFlushVirtualAddressList (0x0003, rep) with a 64-bit processor
//! mask, their Ex forms (0x0013/0x0014) with an `HV_VP_SET` (TLFS, Data
//! Types: HV_VP_SET) whose banks are the variable header;
//! HvCallSendSyntheticClusterIpi (0x000B, simple, fast or memory) and its
//! Ex form (0x0015, memory). `HV_FLUSH_ALL_PROCESSORS` or the set format
//! HV_GENERIC_SET_ALL names every VP. The call returns what to do
//! ([`Effects`]); the persona flushes the calling VP now and the others on
//! their next entry (only one VP runs at a time), and raises IPIs.
//! Set checks: a variable header size other than the number of banks in
//! `valid_bank_mask` → INVALID_HYPERCALL_INPUT (as KVM's
//! `kvm_hv_flush_tlb`/`kvm_hv_send_ipi` check `var_cnt`), a format other
//! than SPARSE_4K or ALL → INVALID_PARAMETER (Xen's viridian
//! `hv_vpset_to_vpmask` refuses it the same way), a VP index at or past the
//! partition's VP count → INVALID_VP_INDEX (TLFS status 0x000E, "the
//! specified VP index is invalid"; KVM silently ignores such VPs, the
//! stricter answer lets a host test see it). No XMM fast input is offered
//! (CPUID 0x4000_0003 EDX bit 4 clear), so an Ex call in the fast form is
//! INVALID_HYPERCALL_INPUT. Under `break=sets-refused` a valid flush or
//! IPI whose targets include a [`Partition::refused`] VP returns
//! INVALID_PARAMETER instead (bad input for the guest: a hypervisor that
//! rejects a processor set). HvCallNotifyLongSpinWait (0x0008, simple,
//! fast): counted, and with several VPs the spinner's slice ends
//! ([`Effects::spin_wait`]).

use crate::guest::mem::GuestRam;
use pvops_abi::hyperv::{
    call, flush_flags, generic_set, input_vtl, Control, FlushVirtualAddressSpace, HypercallResult,
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

/// The partition as a call sees it.
#[derive(Clone, Copy, Debug)]
pub struct Partition {
    /// Number of VPs (VP indexes 0..vps).
    pub vps: usize,
    /// VPs (bit n = VP n) that no flush or IPI set may name: such a call
    /// returns INVALID_PARAMETER (`break=sets-refused`; 0 normally).
    pub refused: u64,
}

impl Partition {
    fn all(self) -> u64 {
        if self.vps >= 64 {
            u64::MAX
        } else {
            (1u64 << self.vps) - 1
        }
    }

    /// A processor mask of VP indexes below 64, checked against the VPs.
    fn mask(self, mask: u64) -> Result<u64, Status> {
        if mask & !self.all() != 0 {
            return Err(Status::INVALID_VP_INDEX);
        }
        Ok(mask)
    }

    /// An `HV_VP_SET` (`format`, `valid_bank_mask`, `banks` as sent),
    /// `var_qwords` the control's variable header size.
    fn vp_set(
        self,
        format: u64,
        bank_mask: u64,
        banks: &[u64],
        var_qwords: u16,
    ) -> Result<u64, Status> {
        if u32::from(var_qwords) != bank_mask.count_ones() {
            return Err(Status::INVALID_HYPERCALL_INPUT);
        }
        match format {
            generic_set::ALL => Ok(self.all()),
            generic_set::SPARSE_4K => {
                let mut out = 0;
                let mut i = 0;
                for bank in 0..64 {
                    if bank_mask & (1 << bank) == 0 {
                        continue;
                    }
                    let b = banks[i];
                    i += 1;
                    if bank == 0 {
                        out |= self.mask(b)?;
                    } else if b != 0 {
                        return Err(Status::INVALID_VP_INDEX);
                    }
                }
                Ok(out)
            }
            _ => Err(Status::INVALID_PARAMETER),
        }
    }
}

/// What a successful call asks the persona to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// VPs whose TLB is to be flushed (bit n = VP n).
    pub flush: u64,
    /// VPs to receive a fixed interrupt, and its vector.
    pub ipi: Option<(u64, u8)>,
    /// HvCallNotifyLongSpinWait: the caller spins on a lock.
    pub spin_wait: bool,
}

/// What the calls did, for the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Flush calls that succeeded.
    pub flushes: u64,
    /// VP flushes they asked for (one per VP per call).
    pub vp_flushes: u64,
    /// IPI calls that succeeded.
    pub ipis: u64,
    /// Long spin-wait notifications.
    pub spin_waits: u64,
    /// Calls that returned an error status.
    pub errors: u64,
    /// Of those, calls refused for naming a [`Partition::refused`] VP.
    pub sets_refused: u64,
}

/// Checks that `len` bytes at `gpa` are 8-byte aligned, in one page and in
/// guest RAM.
fn check_input(mem: &GuestRam, gpa: u64, len: u64) -> Result<(), Status> {
    if gpa & 7 != 0
        || (gpa & (PAGE_SIZE as u64 - 1)) + len > PAGE_SIZE as u64
        || !mem.contains(gpa, len)
    {
        return Err(Status::INVALID_ALIGNMENT);
    }
    Ok(())
}

/// Reads the input of `len` bytes at `gpa`.
fn read_input(mem: &GuestRam, gpa: u64, out: &mut [u8]) -> Result<(), Status> {
    check_input(mem, gpa, out.len() as u64)?;
    mem.read(gpa, out).map_err(|_| Status::INVALID_ALIGNMENT)
}

/// Reads `out.len()` qwords at `gpa`, with `total` bytes of input that
/// must sit in the page.
fn read_qwords(mem: &GuestRam, gpa: u64, out: &mut [u64], total: u64) -> Result<(), Status> {
    check_input(mem, gpa, total)?;
    let mut b = [0u8; 8];
    for (k, w) in out.iter_mut().enumerate() {
        mem.read(gpa + 8 * k as u64, &mut b)
            .map_err(|_| Status::INVALID_ALIGNMENT)?;
        *w = u64::from_le_bytes(b);
    }
    Ok(())
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

/// Checks the control fields of a rep call (memory form only).
fn rep(c: Control, var_ok: bool) -> Result<(), Status> {
    let (count, start) = (c.rep_count(), c.rep_start());
    if count == 0 || start >= count || (c.var_header_size() != 0 && !var_ok) || c.is_fast() {
        return Err(Status::INVALID_HYPERCALL_INPUT);
    }
    Ok(())
}

const FLUSH_FLAGS_KNOWN: u64 = flush_flags::ALL_PROCESSORS
    | flush_flags::ALL_VIRTUAL_ADDRESS_SPACES
    | flush_flags::NON_GLOBAL_MAPPINGS_ONLY;

/// Checks the flush flags (NON_GLOBAL_MAPPINGS_ONLY is invalid for the
/// list forms: TLFS, HvCallFlushVirtualAddressList).
fn flush_flags_ok(flags: u64, list: bool) -> Result<(), Status> {
    let mut known = FLUSH_FLAGS_KNOWN;
    if list {
        known &= !flush_flags::NON_GLOBAL_MAPPINGS_ONLY;
    }
    if flags & !known != 0 {
        return Err(Status::INVALID_PARAMETER);
    }
    Ok(())
}

/// Runs one call; returns the result for RAX and what to do.
pub fn run(
    i: Input,
    mem: &GuestRam,
    part: Partition,
    stats: &mut Stats,
) -> (HypercallResult, Effects) {
    let refused = |e: &Effects| (e.flush | e.ipi.map_or(0, |(t, _)| t)) & part.refused != 0;
    match dispatch(i, mem, part) {
        Ok((_, e)) if refused(&e) => {
            stats.errors += 1;
            stats.sets_refused += 1;
            (
                HypercallResult::new(Status::INVALID_PARAMETER, 0),
                Effects::default(),
            )
        }
        Ok((reps, e)) => {
            if matches!(
                i.control.code(),
                call::FLUSH_VIRTUAL_ADDRESS_SPACE
                    | call::FLUSH_VIRTUAL_ADDRESS_LIST
                    | call::FLUSH_VIRTUAL_ADDRESS_SPACE_EX
                    | call::FLUSH_VIRTUAL_ADDRESS_LIST_EX
            ) {
                stats.flushes += 1;
                stats.vp_flushes += u64::from(e.flush.count_ones());
            }
            if e.ipi.is_some() {
                stats.ipis += 1;
            }
            stats.spin_waits += u64::from(e.spin_wait);
            (HypercallResult::new(Status::SUCCESS, reps), e)
        }
        Err(s) => {
            stats.errors += 1;
            (HypercallResult::new(s, 0), Effects::default())
        }
    }
}

/// The flush of a list call reports every rep done (reps completed counts
/// from 0).
fn dispatch(i: Input, mem: &GuestRam, part: Partition) -> Result<(u16, Effects), Status> {
    let c = i.control;
    if c.has_reserved_bits() {
        return Err(Status::INVALID_HYPERCALL_INPUT);
    }
    let none = Effects::default();
    match c.code() {
        call::FLUSH_VIRTUAL_ADDRESS_SPACE | call::FLUSH_VIRTUAL_ADDRESS_LIST => {
            let list = c.code() == call::FLUSH_VIRTUAL_ADDRESS_LIST;
            // 24 bytes of input: no fast form without XMM input.
            if list {
                rep(c, false)?;
            } else {
                simple(c, false)?;
            }
            let len = 24
                + if list {
                    8 * u64::from(c.rep_count())
                } else {
                    0
                };
            check_input(mem, i.input, len)?;
            let mut b = [0u8; 24];
            read_input(mem, i.input, &mut b)?;
            let h = FlushVirtualAddressSpace::read_from_bytes(&b).unwrap_or_default();
            flush_flags_ok(h.flags, list)?;
            let flush = if h.flags & flush_flags::ALL_PROCESSORS != 0 {
                part.all()
            } else {
                part.mask(h.processor_mask)?
            };
            let reps = if list { c.rep_count() } else { 0 };
            Ok((reps, Effects { flush, ..none }))
        }
        call::FLUSH_VIRTUAL_ADDRESS_SPACE_EX | call::FLUSH_VIRTUAL_ADDRESS_LIST_EX => {
            let list = c.code() == call::FLUSH_VIRTUAL_ADDRESS_LIST_EX;
            if list {
                rep(c, true)?;
            } else if c.rep_count() != 0 || c.rep_start() != 0 || c.is_fast() {
                return Err(Status::INVALID_HYPERCALL_INPUT);
            }
            let var = c.var_header_size();
            if var > 64 {
                return Err(Status::INVALID_HYPERCALL_INPUT);
            }
            // Address space, flags, format, bank mask, then the banks, then
            // the GVA ranges of the list form.
            let words = 4 + usize::from(var);
            let reps = if list { u64::from(c.rep_count()) } else { 0 };
            let mut w = [0u64; 4 + 64];
            read_qwords(mem, i.input, &mut w[..words], 8 * (words as u64 + reps))?;
            flush_flags_ok(w[1], list)?;
            let set = part.vp_set(w[2], w[3], &w[4..words], var);
            let flush = if w[1] & flush_flags::ALL_PROCESSORS != 0 {
                // The set is ignored, but its size must still be right.
                match set {
                    Err(Status::INVALID_HYPERCALL_INPUT) => {
                        return Err(Status::INVALID_HYPERCALL_INPUT)
                    }
                    _ => part.all(),
                }
            } else {
                set?
            };
            let reps = if list { c.rep_count() } else { 0 };
            Ok((reps, Effects { flush, ..none }))
        }
        call::SEND_SYNTHETIC_CLUSTER_IPI => {
            simple(c, true)?;
            let ipi = if c.is_fast() {
                SendSyntheticClusterIpi::from_fast_registers(i.input, i.output)
            } else {
                let mut b = [0u8; 16];
                read_input(mem, i.input, &mut b)?;
                SendSyntheticClusterIpi::read_from_bytes(&b).unwrap_or_default()
            };
            let vector = ipi_vector(ipi.vector, ipi.target_vtl, ipi.reserved)?;
            let targets = part.mask(ipi.processor_mask)?;
            Ok((
                0,
                Effects {
                    ipi: Some((targets, vector)),
                    ..none
                },
            ))
        }
        call::SEND_SYNTHETIC_CLUSTER_IPI_EX => {
            // Vector, VTL and reserved bytes; format; bank mask; banks.
            if c.rep_count() != 0 || c.rep_start() != 0 || c.is_fast() {
                return Err(Status::INVALID_HYPERCALL_INPUT);
            }
            let var = c.var_header_size();
            if var > 64 {
                return Err(Status::INVALID_HYPERCALL_INPUT);
            }
            let words = 3 + usize::from(var);
            let mut w = [0u64; 3 + 64];
            read_qwords(mem, i.input, &mut w[..words], 8 * words as u64)?;
            let first = w[0].to_le_bytes();
            let vector = ipi_vector(w[0] as u32, first[4], [first[5], first[6], first[7]])?;
            let targets = part.vp_set(w[1], w[2], &w[3..words], var)?;
            Ok((
                0,
                Effects {
                    ipi: Some((targets, vector)),
                    ..none
                },
            ))
        }
        // HvCallNotifyLongSpinWait (TLFS: simple, fast, input the spin
        // count): a hint that this VP spins on a lock.
        call::NOTIFY_LONG_SPIN_WAIT => {
            simple(c, true)?;
            Ok((
                0,
                Effects {
                    spin_wait: true,
                    ..none
                },
            ))
        }
        _ => Err(Status::INVALID_HYPERCALL_CODE),
    }
}

/// Checks an IPI's vector (TLFS, HvCallSendSyntheticClusterIpi: 0x10 to
/// 0xFF) and target VTL (own VTL only).
fn ipi_vector(vector: u32, target_vtl: u8, reserved: [u8; 3]) -> Result<u8, Status> {
    let vtl_ok = target_vtl & input_vtl::RESERVED_MASK == 0
        && (target_vtl & input_vtl::USE_TARGET_VTL == 0
            || target_vtl & input_vtl::TARGET_VTL_MASK == 0);
    let vector_ok = (u32::from(SendSyntheticClusterIpi::MIN_VECTOR)..=0xFF).contains(&vector);
    if !vtl_ok || !vector_ok || reserved != [0; 3] {
        return Err(Status::INVALID_PARAMETER);
    }
    Ok(vector as u8)
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

    const ONE: Partition = Partition { vps: 1, refused: 0 };
    const FOUR: Partition = Partition { vps: 4, refused: 0 };

    fn call(
        c: Control,
        input: u64,
        output: u64,
        mem: &GuestRam,
        part: Partition,
    ) -> (HypercallResult, Effects) {
        let mut st = Stats::default();
        run(
            Input {
                control: c,
                input,
                output,
            },
            mem,
            part,
            &mut st,
        )
    }

    fn go(c: Control, input: u64, output: u64, mem: &GuestRam) -> Status {
        call(c, input, output, mem, ONE).0.status()
    }

    fn flush_header(flags: u64, mask: u64) -> [u8; 24] {
        FlushVirtualAddressSpace {
            address_space: 0,
            flags,
            processor_mask: mask,
        }
        .to_bytes()
    }

    fn put(mem: &GuestRam, gpa: u64, words: &[u64]) {
        for (k, w) in words.iter().enumerate() {
            mem.write(gpa + 8 * k as u64, &w.to_le_bytes()).unwrap();
        }
    }

    #[test]
    fn control_and_code_errors() {
        let mut ram = Ram::new();
        let mem = ram.mem();
        let flush = Control::new(call::FLUSH_VIRTUAL_ADDRESS_SPACE);
        assert_eq!(
            go(Control(flush.0 | 1 << 27), 0, 0, &mem),
            Status::INVALID_HYPERCALL_INPUT
        );
        assert_eq!(
            go(Control::new(0x7777), 0, 0, &mem),
            Status::INVALID_HYPERCALL_CODE
        );
        assert_eq!(
            go(flush.with_rep_count(1), 0, 0, &mem),
            Status::INVALID_HYPERCALL_INPUT
        );
        assert_eq!(
            go(flush.fast(), 0, 0, &mem),
            Status::INVALID_HYPERCALL_INPUT
        );
        let list = Control::new(call::FLUSH_VIRTUAL_ADDRESS_LIST);
        assert_eq!(go(list, 0, 0, &mem), Status::INVALID_HYPERCALL_INPUT);
        assert_eq!(
            go(list.with_rep_count(2).with_rep_start(2), 0, 0, &mem),
            Status::INVALID_HYPERCALL_INPUT
        );
    }

    #[test]
    fn gpa_errors_and_flushes() {
        let mut ram = Ram::new();
        let mem = ram.mem();
        let flush = Control::new(call::FLUSH_VIRTUAL_ADDRESS_SPACE);
        mem.write(0x1000, &flush_header(6, 1)).unwrap();
        let (r, e) = call(flush, 0x1000, 0xdead, &mem, ONE);
        assert_eq!((r.status(), e.flush), (Status::SUCCESS, 1));
        assert_eq!(go(flush, 0x1004, 0, &mem), Status::INVALID_ALIGNMENT);
        assert_eq!(go(flush, 0x1FF0, 0, &mem), Status::INVALID_ALIGNMENT);
        assert_eq!(go(flush, 1 << 40, 0, &mem), Status::INVALID_ALIGNMENT);
        mem.write(0x1000, &flush_header(1 << 5, 1)).unwrap();
        assert_eq!(go(flush, 0x1000, 0, &mem), Status::INVALID_PARAMETER);
        // The list form: NON_GLOBAL_MAPPINGS_ONLY is invalid; reps reported.
        let list = Control::new(call::FLUSH_VIRTUAL_ADDRESS_LIST).with_rep_count(3);
        mem.write(0x2000, &flush_header(2, 1)).unwrap();
        let mut st = Stats::default();
        let (r, e) = run(
            Input {
                control: list,
                input: 0x2000,
                output: 0,
            },
            &mem,
            ONE,
            &mut st,
        );
        assert!(r.is_success());
        assert_eq!(r.reps_completed(), 3);
        assert_eq!((st.flushes, st.vp_flushes, e.flush), (1, 1, 1));
        mem.write(0x2000, &flush_header(6, 1)).unwrap();
        assert_eq!(go(list, 0x2000, 0, &mem), Status::INVALID_PARAMETER);
        // A list that would run past the page.
        assert_eq!(
            go(list.with_rep_count(600), 0x2000, 0, &mem),
            Status::INVALID_ALIGNMENT
        );
    }

    #[test]
    fn flush_masks_against_the_partition() {
        let mut ram = Ram::new();
        let mem = ram.mem();
        let flush = Control::new(call::FLUSH_VIRTUAL_ADDRESS_SPACE);
        mem.write(0x1000, &flush_header(2, 0b1010)).unwrap();
        assert_eq!(call(flush, 0x1000, 0, &mem, FOUR).1.flush, 0b1010);
        // VP 4 is past a 4-VP partition.
        mem.write(0x1000, &flush_header(2, 0b1_0001)).unwrap();
        let (r, e) = call(flush, 0x1000, 0, &mem, FOUR);
        assert_eq!((r.status(), e.flush), (Status::INVALID_VP_INDEX, 0));
        // HV_FLUSH_ALL_PROCESSORS ignores the mask.
        mem.write(0x1000, &flush_header(2 | 1, 1 << 40)).unwrap();
        assert_eq!(call(flush, 0x1000, 0, &mem, FOUR).1.flush, 0b1111);
    }

    #[test]
    fn flush_ex_sparse_sets() {
        let mut ram = Ram::new();
        let mem = ram.mem();
        let ex = Control::new(call::FLUSH_VIRTUAL_ADDRESS_SPACE_EX);
        // Sparse 4K, bank 0 = VPs 1 and 3.
        put(&mem, 0x1000, &[0, 2, generic_set::SPARSE_4K, 1, 0b1010]);
        let (r, e) = call(ex.with_var_header_size(1), 0x1000, 0, &mem, FOUR);
        assert_eq!((r.status(), e.flush), (Status::SUCCESS, 0b1010));
        // The variable header must hold exactly the valid banks.
        assert_eq!(
            call(ex, 0x1000, 0, &mem, FOUR).0.status(),
            Status::INVALID_HYPERCALL_INPUT
        );
        // An empty set flushes nobody.
        put(&mem, 0x1000, &[0, 2, generic_set::SPARSE_4K, 0]);
        let (r, e) = call(ex, 0x1000, 0, &mem, FOUR);
        assert_eq!((r.status(), e.flush), (Status::SUCCESS, 0));
        // Bank 1 (VPs 64..127) is past the partition.
        put(&mem, 0x1000, &[0, 2, generic_set::SPARSE_4K, 0b11, 1, 1]);
        assert_eq!(
            call(ex.with_var_header_size(2), 0x1000, 0, &mem, FOUR)
                .0
                .status(),
            Status::INVALID_VP_INDEX
        );
        // VP 5 in bank 0, past 4 VPs.
        put(&mem, 0x1000, &[0, 2, generic_set::SPARSE_4K, 1, 1 << 5]);
        assert_eq!(
            call(ex.with_var_header_size(1), 0x1000, 0, &mem, FOUR)
                .0
                .status(),
            Status::INVALID_VP_INDEX
        );
        // Format ALL and an unknown format.
        put(&mem, 0x1000, &[0, 2, generic_set::ALL, 0]);
        assert_eq!(call(ex, 0x1000, 0, &mem, FOUR).1.flush, 0b1111);
        put(&mem, 0x1000, &[0, 2, 7, 0]);
        assert_eq!(
            call(ex, 0x1000, 0, &mem, FOUR).0.status(),
            Status::INVALID_PARAMETER
        );
        // Reserved flag bits.
        put(&mem, 0x1000, &[0, 1 << 9, generic_set::ALL, 0]);
        assert_eq!(
            call(ex, 0x1000, 0, &mem, FOUR).0.status(),
            Status::INVALID_PARAMETER
        );
        // The list form: rep elements after the banks, all reported done.
        let list = Control::new(call::FLUSH_VIRTUAL_ADDRESS_LIST_EX)
            .with_var_header_size(1)
            .with_rep_count(2);
        put(
            &mem,
            0x2000,
            &[0, 2, generic_set::SPARSE_4K, 1, 0b0100, 0x1000, 0x2000],
        );
        let (r, e) = call(list, 0x2000, 0, &mem, FOUR);
        assert_eq!(
            (r.status(), r.reps_completed(), e.flush),
            (Status::SUCCESS, 2, 0b0100)
        );
        assert_eq!(
            call(list.fast(), 0x2000, 0, &mem, FOUR).0.status(),
            Status::INVALID_HYPERCALL_INPUT
        );
        assert_eq!(
            call(list, 0x2FF0, 0, &mem, FOUR).0.status(),
            Status::INVALID_ALIGNMENT
        );
    }

    #[test]
    fn long_spin_wait_notification() {
        let mut ram = Ram::new();
        let mem = ram.mem();
        let c = Control::new(call::NOTIFY_LONG_SPIN_WAIT).fast();
        let (r, e) = call(c, 0x1FFF, 0, &mem, FOUR);
        assert!(r.is_success() && e.spin_wait);
        assert_eq!(
            go(c.with_rep_count(1), 0x1FFF, 0, &mem),
            Status::INVALID_HYPERCALL_INPUT
        );
    }

    #[test]
    fn sets_naming_a_refused_vp_are_rejected() {
        let mut ram = Ram::new();
        let mem = ram.mem();
        let part = Partition {
            refused: 1 << 3,
            ..FOUR
        };
        let mut st = Stats::default();
        let ipi = Control::new(call::SEND_SYNTHETIC_CLUSTER_IPI).fast();
        let mut go = |c: Control, input: u64, output: u64| {
            let i = Input {
                control: c,
                input,
                output,
            };
            run(i, &mem, part, &mut st)
        };
        // VPs 1 and 2: delivered; VP 3 named: refused, nothing delivered.
        assert_eq!(go(ipi, 0xF0, 0b0110).1.ipi, Some((0b0110, 0xF0)));
        let (r, e) = go(ipi, 0xF0, 0b1010);
        assert_eq!(
            (r.status(), e),
            (Status::INVALID_PARAMETER, Effects::default())
        );
        // A flush of every processor names VP 3 as well.
        put(&mem, 0x1000, &[0, flush_flags::ALL_PROCESSORS, 0]);
        let flush = Control::new(call::FLUSH_VIRTUAL_ADDRESS_SPACE);
        assert_eq!(go(flush, 0x1000, 0).0.status(), Status::INVALID_PARAMETER);
        put(&mem, 0x1000, &[0, 0, 0b0010]);
        assert_eq!(go(flush, 0x1000, 0).1.flush, 0b0010);
        assert_eq!(
            (st.errors, st.sets_refused, st.flushes, st.ipis),
            (2, 2, 1, 1)
        );
    }

    #[test]
    fn cluster_ipi() {
        let mut ram = Ram::new();
        let mem = ram.mem();
        let ipi = Control::new(call::SEND_SYNTHETIC_CLUSTER_IPI);
        // Empty mask: success, nothing delivered.
        let (r, e) = call(ipi.fast(), 0xF0, 0, &mem, FOUR);
        assert_eq!((r.status(), e.ipi), (Status::SUCCESS, Some((0, 0xF0))));
        assert_eq!(
            call(ipi.fast(), 0xF0, 0b1011, &mem, FOUR).1.ipi,
            Some((0b1011, 0xF0))
        );
        assert_eq!(
            call(ipi.fast(), 0xF0, 0b1_0000, &mem, FOUR).0.status(),
            Status::INVALID_VP_INDEX
        );
        assert_eq!(go(ipi.fast(), 0x0F, 1, &mem), Status::INVALID_PARAMETER);
        assert_eq!(go(ipi.fast(), 0x1F0, 1, &mem), Status::INVALID_PARAMETER);
        // Memory form.
        mem.write(0x3000, &[0x50, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
            .unwrap();
        assert_eq!(call(ipi, 0x3000, 0, &mem, ONE).1.ipi, Some((1, 0x50)));
        assert_eq!(
            go(ipi.with_rep_count(1).fast(), 0x50, 1, &mem),
            Status::INVALID_HYPERCALL_INPUT
        );
    }

    #[test]
    fn cluster_ipi_ex() {
        let mut ram = Ram::new();
        let mem = ram.mem();
        let ex = Control::new(call::SEND_SYNTHETIC_CLUSTER_IPI_EX);
        put(&mem, 0x1000, &[0xE0, generic_set::SPARSE_4K, 1, 0b0110]);
        let (r, e) = call(ex.with_var_header_size(1), 0x1000, 0, &mem, FOUR);
        assert_eq!((r.status(), e.ipi), (Status::SUCCESS, Some((0b0110, 0xE0))));
        put(&mem, 0x1000, &[0xE0, generic_set::ALL, 0]);
        assert_eq!(call(ex, 0x1000, 0, &mem, FOUR).1.ipi, Some((0b1111, 0xE0)));
        put(&mem, 0x1000, &[0x08, generic_set::ALL, 0]);
        assert_eq!(
            call(ex, 0x1000, 0, &mem, FOUR).0.status(),
            Status::INVALID_PARAMETER
        );
        put(&mem, 0x1000, &[0xE0, generic_set::SPARSE_4K, 1, 1 << 4]);
        assert_eq!(
            call(ex.with_var_header_size(1), 0x1000, 0, &mem, FOUR)
                .0
                .status(),
            Status::INVALID_VP_INDEX
        );
        assert_eq!(
            call(ex.fast(), 0xE0, 0, &mem, FOUR).0.status(),
            Status::INVALID_HYPERCALL_INPUT
        );
    }
}
