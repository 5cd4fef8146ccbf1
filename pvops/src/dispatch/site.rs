//! The call-site macro every table wrapper expands to.
//!
//! A site is one `asm!` block emitting, at the caller:
//!
//! ```text
//! 776: call qword ptr [rip + LIVE + table offset + slot offset]   (FF 15 disp32)
//!      .fill pad, 1, 0x90        (NOPs up to the longest replacement)
//! 777:
//! ```
//!
//! plus an 8-byte [`SiteRecord`](super::SiteRecord) in the `pvops_sites`
//! section: the site's address (relative to the record), its entry, its
//! length and the registers it may clobber. Until [`super::patch_sites`]
//! rewrites it, the site is today's indirect call through the table.
//!
//! Calling convention (reviewed for every wrapper in `cpu.rs`, `irq.rs`,
//! `mmu.rs`, `time.rs`, `system.rs`): the table's functions are
//! `extern "C"` (System V x86-64 psABI on every x86-64 target pvops
//! supports), arguments go in RDI, RSI, RDX in order, results come back in
//! RAX (and RDX for 16-byte aggregates), and `clobber_abi("C")` tells the
//! compiler every caller-saved register (and the flags) is destroyed. The
//! block has no `nostack`, so the compiler keeps RSP 16-byte aligned at the
//! call and keeps nothing live in a red zone below it (the Rust reference,
//! inline assembly, `nostack`); the kernel target has no red zone anyway.
//! The direction flag is clear on entry to every `asm!` block, as the
//! psABI requires at a call.

/// Emits one patchable call site for table entry `$SLOT`, with the
/// register operands of the call (`in("rdi") x, out("rax") y,` ...).
///
/// Must be used inside `unsafe`: the caller upholds the contract of the
/// entry's function (the table holds only functions of the right type).
macro_rules! site {
    ($SLOT:ident; $($operands:tt)*) => {
        core::arch::asm!(
            "776:",
            "call qword ptr [rip + {live} + {off}]",
            ".fill {pad}, 1, 0x90",
            "777:",
            ".pushsection pvops_sites, \"aR\"",
            ".balign 4",
            ".long 776b - .",
            ".byte {entry}, 777b - 776b",
            ".short {clobbers}",
            ".popsection",
            live = sym $crate::patch::LIVE,
            off = const $crate::patch::TABLE_OFFSET
                + $crate::table::SLOT_OFFSETS[$crate::table::index::$SLOT as usize],
            pad = const $crate::dispatch::plan::site_len($crate::table::index::$SLOT)
                - $crate::dispatch::plan::INDIRECT_LEN,
            entry = const $crate::table::index::$SLOT,
            clobbers = const $crate::dispatch::plan::C_ABI_SITE,
            $($operands)*
            clobber_abi("C"),
        )
    };
}

pub(crate) use site;
