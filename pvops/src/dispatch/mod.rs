//! How table operations reach their implementation: patched call sites.
//!
//! Every operation of [`crate::cpu`], [`crate::irq`], [`crate::mmu`],
//! [`crate::time`] and [`crate::system`] is an `asm!` call site (see
//! `site.rs`): by default an indirect `call [rip + slot]` through the table,
//! padded with NOPs, and recorded in the `pvops_sites` linker section. When
//! [`crate::patch::install`] seals the table it also rewrites every site
//! once, on the boot CPU with interrupts off and before any other CPU
//! runs:
//!
//! - into the native instruction sequence itself ([`Mechanism::Inline`])
//!   where the entry holds its native function and that has one (the
//!   interrupt flag operations, `sti; hlt`, `hlt`, CR0/CR2/CR3/CR4 reads,
//!   RDTSC, WBINVD, INVLPG, the port 0x80 delay);
//! - into a direct `call rel32` to the entry's function otherwise
//!   ([`Mechanism::Direct`]).
//!
//! A kernel allows this with [`allow_patching`] (its writable text);
//! without it every site keeps the indirect call ([`Mechanism::Indirect`])
//! and [`summary`] says why. A site whose record does not match the bytes
//! at its address, or lies outside the writable text, is refused (logged)
//! and keeps the indirect call; no site is ever written in part. See
//! `docs/dispatch.md` for what a kernel must provide.

pub mod indirect;
pub(crate) mod plan;
pub(crate) mod site;
mod text;

pub use plan::{Refusal, MAX_SITE_LEN};

use crate::table::{Entry, Table, ENTRY_COUNT};
use core::sync::atomic::{AtomicU16, AtomicU8, AtomicUsize, Ordering};

/// Entry number of the anchor record every link has (not a site).
pub(crate) const ANCHOR: u8 = 0xFF;

/// One call site's record in the `pvops_sites` section (8 bytes, 4-aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SiteRecord {
    /// Address of the site relative to this field.
    pub offset: i32,
    /// Index of the table entry the site calls.
    pub entry: u8,
    /// Length of the site in bytes.
    pub len: u8,
    /// Registers the site may clobber, bit n = register n in the SDM's
    /// numbering (RAX = 0 .. R15 = 15); bit 4 (RSP) means it may use the
    /// stack. The flags may always be clobbered.
    pub clobbers: u16,
}

/// How calls of one entry reach its function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// The native instruction sequence, at the call site.
    Inline,
    /// A direct `call rel32` to the owner's function.
    Direct,
    /// An indirect call through the table (before installation, when the
    /// kernel's text cannot be patched, or for a refused site).
    Indirect,
}

impl Mechanism {
    /// Stable lower-case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            Mechanism::Inline => "inline",
            Mechanism::Direct => "direct",
            Mechanism::Indirect => "indirect",
        }
    }
}

/// Which dispatch is in force for the whole kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No backend installed yet: every call goes through the table.
    NotInstalled,
    /// Sites were patched (some may have been refused, see [`Summary`]).
    Patched,
    /// Sites keep the table call, for this reason.
    Table(&'static str),
}

/// Counts of one entry's (or all) sites by mechanism.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteCounts {
    /// Sites now holding the native sequence.
    pub inline: u32,
    /// Sites now holding a direct call.
    pub direct: u32,
    /// Sites still holding the indirect call.
    pub indirect: u32,
}

impl SiteCounts {
    /// All sites.
    pub fn total(&self) -> u32 {
        self.inline + self.direct + self.indirect
    }
}

/// The dispatch state and the site counts of the whole kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Mechanism in force.
    pub state: State,
    /// Sites by mechanism (`indirect` = refused, when patched).
    pub sites: SiteCounts,
}

const NOT_INSTALLED: u8 = 0;
const PATCHED: u8 = 1;
const TABLE: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(NOT_INSTALLED);
static REASON: AtomicU8 = AtomicU8::new(0);

const REASONS: [&str; 3] = [
    "the kernel declared no writable text (pvops::dispatch::allow_patching)",
    "no call-site records in the kernel (its link dropped the pvops_sites section)",
    "not a bare-metal kernel (host build)",
];
const NO_TEXT: u8 = 0;
const NO_SITES: u8 = 1;
const HOST: u8 = 2;

static TEXT_START: AtomicUsize = AtomicUsize::new(0);
static TEXT_END: AtomicUsize = AtomicUsize::new(0);

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU16 = AtomicU16::new(0);
static INLINE: [AtomicU16; ENTRY_COUNT] = [ZERO; ENTRY_COUNT];
static DIRECT: [AtomicU16; ENTRY_COUNT] = [ZERO; ENTRY_COUNT];
static INDIRECT: [AtomicU16; ENTRY_COUNT] = [ZERO; ENTRY_COUNT];
/// Mechanism an entry without sites would get (0 inline, 1 direct).
static PLANNED_DIRECT: [AtomicU8; ENTRY_COUNT] = [const { AtomicU8::new(0) }; ENTRY_COUNT];

/// Lets [`crate::patch::install`] rewrite the call sites inside `text`
/// (typically the kernel's whole `.text`). Call before installing; without
/// it every site keeps the indirect table call.
///
/// # Safety
///
/// `text` must be this kernel's code, mapped writable for supervisor
/// writes (or with CR0.WP clear) until `install` returns, and executed by
/// no other CPU before that.
pub unsafe fn allow_patching(text: core::ops::Range<usize>) {
    TEXT_START.store(text.start, Ordering::Relaxed);
    TEXT_END.store(text.end, Ordering::Release);
}

/// The dispatch in force and every site's mechanism.
pub fn summary() -> Summary {
    let mut sites = SiteCounts::default();
    for e in 0..ENTRY_COUNT {
        sites.inline += u32::from(INLINE[e].load(Ordering::Relaxed));
        sites.direct += u32::from(DIRECT[e].load(Ordering::Relaxed));
        sites.indirect += u32::from(INDIRECT[e].load(Ordering::Relaxed));
    }
    let state = match STATE.load(Ordering::Acquire) {
        PATCHED => State::Patched,
        TABLE => State::Table(REASONS[usize::from(REASON.load(Ordering::Relaxed))]),
        _ => State::NotInstalled,
    };
    Summary { state, sites }
}

/// The sites of `entry` by mechanism.
pub fn sites(entry: Entry) -> SiteCounts {
    let i = entry.index();
    SiteCounts {
        inline: u32::from(INLINE[i].load(Ordering::Relaxed)),
        direct: u32::from(DIRECT[i].load(Ordering::Relaxed)),
        indirect: u32::from(INDIRECT[i].load(Ordering::Relaxed)),
    }
}

/// How calls of `entry` reach its function now: [`Mechanism::Indirect`]
/// unless sites were patched; then the mechanism of its sites (Indirect if
/// any of them was refused), or for an entry this kernel never calls, the
/// one its sites would have had.
pub fn mechanism(entry: Entry) -> Mechanism {
    if STATE.load(Ordering::Acquire) != PATCHED {
        return Mechanism::Indirect;
    }
    let s = sites(entry);
    if s.indirect > 0 {
        Mechanism::Indirect
    } else if s.inline > 0 {
        Mechanism::Inline
    } else if s.direct > 0 || PLANNED_DIRECT[entry.index()].load(Ordering::Relaxed) == 1 {
        Mechanism::Direct
    } else {
        Mechanism::Inline
    }
}

/// Every entry with its mechanism, in table order.
pub fn mechanisms() -> impl Iterator<Item = (Entry, Mechanism)> {
    Entry::all().map(|e| (e, mechanism(e)))
}

/// Where patching reads and writes (the kernel's text, or a test buffer).
pub(crate) trait Text {
    /// Copies the bytes at `addr`.
    fn read(&self, addr: usize, out: &mut [u8]);
    /// Writes the bytes at `addr`.
    fn write(&mut self, addr: usize, bytes: &[u8]);
}

/// Per-entry outcome of one patching pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counts {
    pub inline: [u16; ENTRY_COUNT],
    pub direct: [u16; ENTRY_COUNT],
    pub indirect: [u16; ENTRY_COUNT],
}

/// Plans and writes every site: each one in one piece, or not at all.
pub(crate) fn patch_with(
    text: &mut impl Text,
    sites: impl Iterator<Item = (usize, SiteRecord)>,
    target: impl Fn(u8) -> Option<plan::Target>,
    writable: core::ops::Range<usize>,
) -> Counts {
    let mut c = Counts {
        inline: [0; ENTRY_COUNT],
        direct: [0; ENTRY_COUNT],
        indirect: [0; ENTRY_COUNT],
    };
    for (addr, rec) in sites {
        if rec.entry == ANCHOR {
            continue;
        }
        let mut current = [0u8; MAX_SITE_LEN];
        let n = usize::from(rec.len).min(MAX_SITE_LEN);
        let decided = match target(rec.entry) {
            None => Err(Refusal::UnknownEntry(rec.entry)),
            // Never read outside the writable text (a wild record).
            Some(_) if addr < writable.start || addr.saturating_add(n) > writable.end => {
                Err(Refusal::NotWritable)
            }
            Some(t) => {
                text.read(addr, &mut current[..n]);
                plan::plan(addr, &rec, &current[..n], t, writable.clone())
            }
        };
        let e = usize::from(rec.entry).min(ENTRY_COUNT - 1);
        match decided {
            Ok(p) => {
                text.write(addr, &p.bytes[..p.len]);
                let slot = match p.mechanism {
                    Mechanism::Inline => &mut c.inline[e],
                    _ => &mut c.direct[e],
                };
                *slot = slot.saturating_add(1);
            }
            Err(r) => {
                let name = if usize::from(rec.entry) < ENTRY_COUNT {
                    Entry(rec.entry).name()
                } else {
                    "?"
                };
                log::warn!(
                    "pvops: call site {addr:#x} ({name}) refused: {r}; it keeps the table call"
                );
                c.indirect[e] = c.indirect[e].saturating_add(1);
            }
        }
    }
    c
}

/// The kernel's own text, through [`text`].
struct KernelText;

impl Text for KernelText {
    fn read(&self, addr: usize, out: &mut [u8]) {
        // SAFETY: `patch_with` reads only inside the text the kernel
        // declared with `allow_patching`, which is mapped.
        unsafe { text::read(addr, out) }
    }

    fn write(&mut self, addr: usize, bytes: &[u8]) {
        // SAFETY: `patch_with` writes only whole, verified sites inside the
        // declared writable text; `patch_sites`' caller (`install`) runs
        // with interrupts off and no other CPU, so nothing executes them.
        unsafe { text::write(addr, bytes) }
    }
}

/// Patches every site of the kernel for the table just installed; called
/// once by [`crate::patch::install`] (interrupts off, no other CPU).
///
/// An entry counts as native (so its sites may take the native sequence)
/// when its owner is native: function addresses cannot tell, as a small
/// native function may have a copy in each crate that names it.
pub(crate) fn patch_sites(table: &'static Table, owners: &[&'static str; ENTRY_COUNT]) {
    if STATE.load(Ordering::Acquire) != NOT_INSTALLED {
        log::error!("pvops: call sites already patched; a second patching is refused");
        return;
    }
    let is_native = |e: Entry| owners[e.index()] == crate::patch::NATIVE;
    for e in Entry::all() {
        let planned_inline = plan::inline_code(e.0).is_some() && is_native(e);
        PLANNED_DIRECT[e.index()].store(u8::from(!planned_inline), Ordering::Relaxed);
    }
    let writable = TEXT_START.load(Ordering::Relaxed)..TEXT_END.load(Ordering::Acquire);
    let records = text::records();
    let reason = if cfg!(not(target_os = "none")) {
        Some(HOST)
    } else if writable.is_empty() {
        Some(NO_TEXT)
    } else if records.iter().all(|r| r.entry == ANCHOR) {
        Some(NO_SITES)
    } else {
        None
    };
    if let Some(r) = reason {
        for rec in records.iter().filter(|r| r.entry != ANCHOR) {
            let i = usize::from(rec.entry).min(ENTRY_COUNT - 1);
            INDIRECT[i].fetch_add(1, Ordering::Relaxed);
        }
        REASON.store(r, Ordering::Relaxed);
        STATE.store(TABLE, Ordering::Release);
        log::info!(
            "pvops: dispatch through the table: {}",
            REASONS[usize::from(r)]
        );
        return;
    }
    let base = table as *const Table as usize;
    let target = |entry: u8| {
        let e = Entry::all().nth(usize::from(entry))?;
        let function = table.function_address(e)?;
        Some(plan::Target {
            slot: base + crate::table::SLOT_OFFSETS[e.index()],
            function,
            native: is_native(e),
        })
    };
    let sites = records.iter().map(|r| (text::site_address(r), *r));
    let c = patch_with(&mut KernelText, sites, target, writable);
    text::serialize();
    for e in 0..ENTRY_COUNT {
        INLINE[e].store(c.inline[e], Ordering::Relaxed);
        DIRECT[e].store(c.direct[e], Ordering::Relaxed);
        INDIRECT[e].store(c.indirect[e], Ordering::Relaxed);
    }
    STATE.store(PATCHED, Ordering::Release);
    let s = summary().sites;
    log::info!(
        "pvops: patched {} call sites: {} inline, {} direct, {} refused",
        s.total(),
        s.inline,
        s.direct,
        s.indirect
    );
}

#[cfg(test)]
mod tests;
