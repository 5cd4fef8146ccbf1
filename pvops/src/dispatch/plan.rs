//! What to write at one call site: the patcher's decisions, on plain bytes
//! (host-testable; [`super::text`] does the reading and writing).
//!
//! Encodings are from the Intel SDM Vol. 2 (instruction set reference):
//! `CALL` FF /2 (near, absolute indirect, `[rip + disp32]`) and E8 cd
//! (near, relative), the recommended multi-byte `NOP` forms (0F 1F /0,
//! Vol. 2B "NOP"), and the inline sequences' opcodes cited below.

use super::{Mechanism, SiteRecord};
use crate::table::{index, ENTRY_COUNT};

/// Bytes of the default site content, `call qword ptr [rip + disp32]`.
pub(crate) const INDIRECT_LEN: usize = 6;
/// Bytes of the direct call written at a site: `call rel32` (E8 cd) with a
/// CS segment-override prefix (2E), so it fills the 6 bytes of the
/// indirect call it replaces as one instruction, not a call plus a NOP. A
/// segment override only selects the segment of memory operands (AMD APM
/// Vol. 1, "Legacy Instruction Prefixes"), and CS's base is 0 in 64-bit
/// mode anyway (Intel SDM Vol. 1 §3.7.4.1); the near relative call has no
/// memory operand. Linux builds its retpoline call sites as this same
/// 6-byte `cs call` so that they can be rewritten in place (GCC
/// `-mindirect-branch-cs-prefix`).
pub(crate) const DIRECT_LEN: usize = 6;
/// The longest site (room for the longest inline sequence).
pub const MAX_SITE_LEN: usize = 16;

// Register bits of a site's clobber mask, by the SDM's register numbers
// (RAX = 0 .. R15 = 15). Bit 4 (RSP) means "may use the stack" (push, call).
const RAX: u16 = 1 << 0;
const RCX: u16 = 1 << 1;
const RDX: u16 = 1 << 2;
const STACK: u16 = 1 << 4;
const RSI: u16 = 1 << 6;
const RDI: u16 = 1 << 7;
const R8_R11: u16 = 0xF << 8;

/// What every site emitted by `site!` may clobber: the System V caller-saved
/// registers (RAX, RCX, RDX, RSI, RDI, R8-R11, flags) and the stack, as its
/// `clobber_abi("C")` (without `nostack`) declares.
pub(crate) const C_ABI_SITE: u16 = RAX | RCX | RDX | STACK | RSI | RDI | R8_R11;

/// A native instruction sequence that may replace a site, and what it
/// clobbers besides the flags (which every site may clobber).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InlineCode {
    pub bytes: &'static [u8],
    pub clobbers: u16,
}

const fn code(bytes: &'static [u8], clobbers: u16) -> Option<InlineCode> {
    Some(InlineCode { bytes, clobbers })
}

/// The native sequence of entry `index`, if it has one. Each does exactly
/// what the entry's native function does, with the site's registers:
/// arguments in RDI, result in RAX.
pub(crate) const fn inline_code(entry: u8) -> Option<InlineCode> {
    match entry {
        // PUSHFQ (9C); POP RAX (58).
        index::IRQ_SAVE_FLAGS => code(&[0x9C, 0x58], RAX | STACK),
        // BT EDI, 9 (0F BA /4 ib); JNC +3 (73 03); STI (FB); JMP +1 (EB 01);
        // CLI (FA): STI if the saved IF bit is set, else CLI, as the native
        // `restore_flags` (POPF would also restore TF, DF, AC... from
        // whatever the caller passed).
        index::IRQ_RESTORE_FLAGS => code(
            &[0x0F, 0xBA, 0xE7, 0x09, 0x73, 0x03, 0xFB, 0xEB, 0x01, 0xFA],
            0,
        ),
        // CLI (FA).
        index::IRQ_DISABLE => code(&[0xFA], 0),
        // STI (FB).
        index::IRQ_ENABLE => code(&[0xFB], 0),
        // STI; HLT (FB F4): the STI shadow covers the HLT.
        index::IRQ_SAFE_HALT => code(&[0xFB, 0xF4], 0),
        // HLT (F4).
        index::CPU_HALT => code(&[0xF4], 0),
        // MOV RAX, CR0 / CR4 (0F 20 /r, ModRM 11 cr 000).
        index::CPU_READ_CR0 => code(&[0x0F, 0x20, 0xC0], RAX),
        index::CPU_READ_CR4 => code(&[0x0F, 0x20, 0xE0], RAX),
        // MOV RAX, CR2 / CR3.
        index::MMU_READ_CR2 => code(&[0x0F, 0x20, 0xD0], RAX),
        index::MMU_READ_CR3 => code(&[0x0F, 0x20, 0xD8], RAX),
        // RDTSC (0F 31); SHL RDX, 32 (REX.W C1 /4 ib); OR RAX, RDX (REX.W 09 /r).
        index::CPU_READ_TSC => code(
            &[0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0],
            RAX | RDX,
        ),
        // WBINVD (0F 09).
        index::CPU_WBINVD => code(&[0x0F, 0x09], 0),
        // INVLPG [RDI] (0F 01 /7, ModRM 00 111 111).
        index::MMU_FLUSH_PAGE => code(&[0x0F, 0x01, 0x3F], 0),
        // MOV AL, 0 (B0 ib); OUT 0x80, AL (E6 ib).
        index::CPU_IO_DELAY => code(&[0xB0, 0x00, 0xE6, 0x80], RAX),
        _ => None,
    }
}

/// Length of entry `index`'s sites: the indirect call, or the inline
/// sequence where that is longer.
pub(crate) const fn site_len(entry: u8) -> usize {
    match inline_code(entry) {
        Some(c) if c.bytes.len() > INDIRECT_LEN => c.bytes.len(),
        _ => INDIRECT_LEN,
    }
}

/// Recommended NOP of each length 1..=9 (SDM Vol. 2B, "NOP", table 4-12).
const NOPS: [&[u8]; 9] = [
    &[0x90],
    &[0x66, 0x90],
    &[0x0F, 0x1F, 0x00],
    &[0x0F, 0x1F, 0x40, 0x00],
    &[0x0F, 0x1F, 0x44, 0x00, 0x00],
    &[0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00],
    &[0x0F, 0x1F, 0x80, 0x00, 0x00, 0x00, 0x00],
    &[0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
    &[0x66, 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];

/// Fills `out` with as few NOPs as possible.
fn fill_nops(mut out: &mut [u8]) {
    while !out.is_empty() {
        let n = out.len().min(NOPS.len());
        out[..n].copy_from_slice(NOPS[n - 1]);
        out = &mut out[n..];
    }
}

/// Bytes a site of `len` at `site` calling through `slot` holds before
/// patching: `call qword ptr [rip + disp32]`, then `0x90` padding.
pub(crate) fn original(site: usize, slot: usize, len: usize) -> Option<[u8; MAX_SITE_LEN]> {
    if !(INDIRECT_LEN..=MAX_SITE_LEN).contains(&len) {
        return None;
    }
    let disp = (slot as i64).wrapping_sub(site as i64 + INDIRECT_LEN as i64);
    let disp = i32::try_from(disp).ok()?;
    let mut b = [0x90; MAX_SITE_LEN];
    b[0] = 0xFF;
    b[1] = 0x15; // ModRM 00 010 101: /2, [rip + disp32]
    b[2..6].copy_from_slice(&disp.to_le_bytes());
    Some(b)
}

/// What [`plan`] knows of the entry a site calls.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    /// Address of the entry's slot in the live table.
    pub slot: usize,
    /// Address of the function the slot holds.
    pub function: usize,
    /// Whether that function is the entry's native one.
    pub native: bool,
}

/// New bytes for one site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub bytes: [u8; MAX_SITE_LEN],
    pub len: usize,
    pub mechanism: Mechanism,
}

/// Why a site keeps its indirect call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The record names no table entry.
    UnknownEntry(u8),
    /// The record's length is not the entry's site length.
    BadLength {
        /// Length in the record.
        found: u8,
        /// Length sites of this entry have.
        expected: u8,
    },
    /// The site is not inside the text the kernel declared writable.
    NotWritable,
    /// The bytes at the site are not the indirect call the record describes.
    BytesMismatch,
    /// The site may not clobber what the replacement clobbers.
    Clobbers,
    /// The function is more than 2 GiB away from the site (no `call rel32`).
    OutOfRange,
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refusal::UnknownEntry(e) => {
                write!(f, "record names entry {e}, the table has {ENTRY_COUNT}")
            }
            Refusal::BadLength { found, expected } => {
                write!(
                    f,
                    "record length {found}, sites of this entry are {expected} bytes"
                )
            }
            Refusal::NotWritable => {
                f.write_str("site is outside the writable text the kernel declared")
            }
            Refusal::BytesMismatch => {
                f.write_str("bytes at the site are not the indirect call its record describes")
            }
            Refusal::Clobbers => f.write_str("site may not clobber what the replacement clobbers"),
            Refusal::OutOfRange => f.write_str("function out of rel32 range of the site"),
        }
    }
}

/// Decides the new content of the site `rec` describes at address `site`,
/// whose current bytes are `current`, calling `target`; `writable` is the
/// text the kernel allows pvops to write.
pub(crate) fn plan(
    site: usize,
    rec: &SiteRecord,
    current: &[u8],
    target: Target,
    writable: core::ops::Range<usize>,
) -> Result<Plan, Refusal> {
    if usize::from(rec.entry) >= ENTRY_COUNT {
        return Err(Refusal::UnknownEntry(rec.entry));
    }
    let len = site_len(rec.entry);
    if usize::from(rec.len) != len {
        return Err(Refusal::BadLength {
            found: rec.len,
            expected: len as u8,
        });
    }
    let end = site.checked_add(len).ok_or(Refusal::NotWritable)?;
    if site < writable.start || end > writable.end {
        return Err(Refusal::NotWritable);
    }
    let original = original(site, target.slot, len).ok_or(Refusal::BytesMismatch)?;
    if current.get(..len) != Some(&original[..len]) {
        return Err(Refusal::BytesMismatch);
    }
    let mut bytes = [0x90; MAX_SITE_LEN];
    let inline =
        inline_code(rec.entry).filter(|c| target.native && c.clobbers & !rec.clobbers == 0);
    let (body, mechanism) = match inline {
        Some(c) => {
            bytes[..c.bytes.len()].copy_from_slice(c.bytes);
            (c.bytes.len(), Mechanism::Inline)
        }
        None => {
            if C_ABI_SITE & !rec.clobbers != 0 {
                return Err(Refusal::Clobbers);
            }
            let rel = (target.function as i64).wrapping_sub(site as i64 + DIRECT_LEN as i64);
            let rel = i32::try_from(rel).map_err(|_| Refusal::OutOfRange)?;
            bytes[0] = 0x2E;
            bytes[1] = 0xE8;
            bytes[2..6].copy_from_slice(&rel.to_le_bytes());
            (DIRECT_LEN, Mechanism::Direct)
        }
    };
    fill_nops(&mut bytes[body..len]);
    Ok(Plan {
        bytes,
        len,
        mechanism,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: usize = 0x10_0000;

    fn rec(entry: u8) -> SiteRecord {
        SiteRecord {
            offset: 0,
            entry,
            len: site_len(entry) as u8,
            clobbers: C_ABI_SITE,
        }
    }

    /// A text buffer with one site of `entry` at BASE + 0x10, calling
    /// through a slot at BASE + 0x1000.
    fn text(entry: u8) -> (Vec<u8>, usize, Target) {
        let site = BASE + 0x10;
        let slot = BASE + 0x1000;
        let mut t = vec![0xCC; 0x100];
        let o = original(site, slot, site_len(entry)).unwrap();
        t[0x10..0x10 + site_len(entry)].copy_from_slice(&o[..site_len(entry)]);
        (
            t,
            site,
            Target {
                slot,
                function: BASE + 0x2000,
                native: true,
            },
        )
    }

    fn run(entry: u8, target: Target) -> Result<Plan, Refusal> {
        let (t, site, _) = text(entry);
        plan(site, &rec(entry), &t[0x10..], target, BASE..BASE + 0x100)
    }

    #[test]
    fn native_entries_with_a_sequence_go_inline_padded_with_nops() {
        let (_, _, target) = text(index::IRQ_DISABLE);
        let p = run(index::IRQ_DISABLE, target).unwrap();
        assert_eq!(p.mechanism, Mechanism::Inline);
        assert_eq!(p.len, 6);
        assert_eq!(&p.bytes[..6], &[0xFA, 0x0F, 0x1F, 0x44, 0x00, 0x00]);
        let p = run(index::CPU_READ_TSC, target).unwrap();
        assert_eq!(p.len, 9);
        assert_eq!(&p.bytes[..2], &[0x0F, 0x31]);
    }

    #[test]
    fn backend_functions_get_a_direct_call() {
        let (_, site, mut target) = text(index::IRQ_DISABLE);
        target.native = false;
        let p = run(index::IRQ_DISABLE, target).unwrap();
        assert_eq!(p.mechanism, Mechanism::Direct);
        // `cs call rel32`: one 6-byte instruction, no padding NOP.
        assert_eq!(p.len, 6);
        assert_eq!(&p.bytes[..2], &[0x2E, 0xE8]);
        let rel = i32::from_le_bytes(p.bytes[2..6].try_into().unwrap());
        assert_eq!(site as i64 + 6 + i64::from(rel), target.function as i64);
        // A longer site (room for an inline RDTSC) is NOP-padded after it.
        let (_, _, mut target) = text(index::CPU_READ_TSC);
        target.native = false;
        let p = run(index::CPU_READ_TSC, target).unwrap();
        assert_eq!((p.mechanism, p.len), (Mechanism::Direct, 9));
        assert_eq!(&p.bytes[..2], &[0x2E, 0xE8]);
        assert_eq!(&p.bytes[6..9], &[0x0F, 0x1F, 0x00]);
        // A native entry without a sequence is a direct call too.
        let (_, _, target) = text(index::TIME_MONOTONIC_NS);
        assert_eq!(
            run(index::TIME_MONOTONIC_NS, target).unwrap().mechanism,
            Mechanism::Direct
        );
    }

    #[test]
    fn mismatched_bytes_are_refused() {
        let (mut t, site, target) = text(index::IRQ_ENABLE);
        t[0x12] ^= 1; // the displacement points elsewhere
        let r = plan(
            site,
            &rec(index::IRQ_ENABLE),
            &t[0x10..],
            target,
            BASE..BASE + 0x100,
        );
        assert_eq!(r, Err(Refusal::BytesMismatch));
        // A slot of another entry is also a mismatch.
        let other = Target {
            slot: target.slot + 8,
            ..target
        };
        assert_eq!(run(index::IRQ_ENABLE, other), Err(Refusal::BytesMismatch));
        // So is an already patched site (a second patch of the same text).
        let (mut t, site, target) = text(index::IRQ_ENABLE);
        let p = run(index::IRQ_ENABLE, target).unwrap();
        t[0x10..0x16].copy_from_slice(&p.bytes[..6]);
        let r = plan(
            site,
            &rec(index::IRQ_ENABLE),
            &t[0x10..],
            target,
            BASE..BASE + 0x100,
        );
        assert_eq!(r, Err(Refusal::BytesMismatch));
    }

    #[test]
    fn sites_outside_writable_text_are_refused() {
        let (t, site, target) = text(index::IRQ_DISABLE);
        let r = plan(
            site,
            &rec(index::IRQ_DISABLE),
            &t[0x10..],
            target,
            BASE..BASE + 0x12,
        );
        assert_eq!(r, Err(Refusal::NotWritable));
        let r = plan(site, &rec(index::IRQ_DISABLE), &t[0x10..], target, 0..0);
        assert_eq!(r, Err(Refusal::NotWritable));
    }

    #[test]
    fn bad_records_are_refused() {
        let (t, site, target) = text(index::IRQ_DISABLE);
        let w = BASE..BASE + 0x100;
        let mut r = rec(index::IRQ_DISABLE);
        r.entry = ENTRY_COUNT as u8;
        assert_eq!(
            plan(site, &r, &t[0x10..], target, w.clone()),
            Err(Refusal::UnknownEntry(ENTRY_COUNT as u8))
        );
        let mut r = rec(index::IRQ_DISABLE);
        r.len = 9;
        assert!(matches!(
            plan(site, &r, &t[0x10..], target, w.clone()),
            Err(Refusal::BadLength { .. })
        ));
        // A site that may not clobber RAX cannot take RDTSC or a call.
        let (t, site, mut target) = text(index::CPU_READ_TSC);
        let mut r = rec(index::CPU_READ_TSC);
        r.clobbers = 0;
        assert_eq!(
            plan(site, &r, &t[0x10..], target, w.clone()),
            Err(Refusal::Clobbers)
        );
        target.function = site + (3 << 30);
        assert_eq!(
            plan(
                site,
                &rec(index::CPU_READ_TSC),
                &t[0x10..],
                Target {
                    native: false,
                    ..target
                },
                w
            ),
            Err(Refusal::OutOfRange)
        );
    }

    #[test]
    fn every_inline_sequence_fits_its_site_and_nops_have_their_length() {
        for e in 0..ENTRY_COUNT as u8 {
            assert!(site_len(e) <= MAX_SITE_LEN);
            if let Some(c) = inline_code(e) {
                assert!(c.bytes.len() <= site_len(e));
                assert_eq!(c.clobbers & !C_ABI_SITE, 0);
            }
        }
        for (i, n) in NOPS.iter().enumerate() {
            assert_eq!(n.len(), i + 1);
        }
        let mut b = [0; 12];
        fill_nops(&mut b);
        assert_eq!(&b[..9], NOPS[8]);
        assert_eq!(&b[9..], NOPS[2]);
    }
}
