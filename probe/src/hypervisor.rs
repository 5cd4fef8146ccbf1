//! The hypervisor CPUID range: which interfaces are present, at which base.
//!
//! A hypervisor publishes a signature at a base leaf (0x4000_0000, 0x4000_0100,
//! ...) with EAX = the highest leaf of that interface. Several may be stacked:
//! QEMU/KVM with Hyper-V enlightenments puts "Microsoft Hv" at 0x4000_0000 and
//! KVM at 0x4000_0100; Xen with Viridian does the same with Xen; QEMU's Xen
//! emulation with Hyper-V enlightenments stacks three (Hyper-V, Xen, KVM).
//!
//! # Which bases are read
//!
//! Under a hypervisor every CPUID is an exit, so the scan is bounded
//! ([`scan`], the rule in full in `docs/probe-cost.md`):
//!
//! - CPUID.1:ECX[31] set (a hypervisor says it is there; Intel SDM vol. 2A
//!   table 3-10 "not used, always 0" on hardware, AMD APM vol. 3 appendix E
//!   "reserved for use by hypervisor to indicate guest status"): the bases
//!   0x4000_0000, 0x4000_0100, 0x4000_0200 and 0x4000_0300 always, then
//!   each next base for as long as the base before it held an interface.
//!   That covers every base a hypervisor uses: Hyper-V only at 0x4000_0000
//!   (TLFS, "Hypervisor CPUID Leaves"); VMware at 0x4000_0000; KVM at the
//!   0x4000_0000 (KVM `Documentation/virt/kvm/x86/cpuid.rst`), which QEMU
//!   moves behind the interfaces it stacks below it (0x4000_0100 behind
//!   Hyper-V, 0x4000_0200 behind Hyper-V and its Xen emulation; QEMU
//!   `target/i386/kvm/kvm.c`); Xen "at
//!   the first otherwise unused 0x100 aligned boundary starting from
//!   0x40000000" (Xen `xen/include/public/arch-x86/cpuid.h`), i.e. right
//!   after the interfaces below it, which the chain follows at any depth.
//!   Linux scans the whole range per signature until the first match
//!   (`cpuid_base_hypervisor`, once for Xen, once for KVM, ...), which costs
//!   256 exits on every hypervisor that is not the one looked for.
//! - The whole probe stays within [`HYPERVISOR_CPUID_BUDGET`] CPUIDs there:
//!   the scan stops when the budget is spent (only a hypervisor with more
//!   than four stacked interfaces could reach it).
//! - CPUID.1:ECX[31] clear (bare metal): the whole range, 256 bases. On
//!   hardware CPUID does not exit (the range only mirrors the highest basic
//!   leaf on Intel, or reads as zero), so the full scan costs no exits; it
//!   still shows the interfaces of a hypervisor that hides the bit, which
//!   backends then do not trust.

use core::cell::{Cell, RefCell};

use crate::source::{signature, CpuidResult, CpuidSource};
use crate::{HYPERVISOR_LEAF_END, HYPERVISOR_LEAF_FIRST, HYPERVISOR_LEAF_STEP, TIMING_LEAF};

/// Most interfaces kept; a real machine shows at most two or three.
pub const MAX_INTERFACES: usize = 8;

/// Which hypervisor a signature names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HypervisorKind {
    /// "VMwareVMware".
    VMware,
    /// "XenVMMXenVMM".
    Xen,
    /// "Microsoft Hv" with interface "Hv#1" at base+1 (Hyper-V TLFS 2.4).
    HyperV,
    /// "KVMKVMKVM\0\0\0".
    Kvm,
    /// "TCGTCGTCGTCG": QEMU's software emulation.
    QemuTcg,
    /// "bhyve bhyve " (or the older "BHyVE BHyVE ").
    Bhyve,
    /// "ACRNACRNACRN".
    Acrn,
    /// "Jailhouse\0\0\0".
    Jailhouse,
    /// "VBoxVBoxVBox".
    VirtualBox,
    /// Anything else; the signature is kept verbatim.
    Unknown,
}

impl HypervisorKind {
    /// Stable lower-case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            HypervisorKind::VMware => "vmware",
            HypervisorKind::Xen => "xen",
            HypervisorKind::HyperV => "hyperv",
            HypervisorKind::Kvm => "kvm",
            HypervisorKind::QemuTcg => "qemu-tcg",
            HypervisorKind::Bhyve => "bhyve",
            HypervisorKind::Acrn => "acrn",
            HypervisorKind::Jailhouse => "jailhouse",
            HypervisorKind::VirtualBox => "virtualbox",
            HypervisorKind::Unknown => "unknown",
        }
    }

    /// Classifies a signature. `interface` is EAX of base+1, needed to tell
    /// a Hyper-V-compatible interface ("Hv#1") from a mere name.
    pub fn classify(sig: &[u8; 12], interface: Option<u32>) -> HypervisorKind {
        match sig {
            b"VMwareVMware" => HypervisorKind::VMware,
            b"XenVMMXenVMM" => HypervisorKind::Xen,
            b"Microsoft Hv" if interface == Some(HV_INTERFACE_HV1) => HypervisorKind::HyperV,
            KVM_SIGNATURE => HypervisorKind::Kvm,
            b"TCGTCGTCGTCG" => HypervisorKind::QemuTcg,
            b"bhyve bhyve " | b"BHyVE BHyVE " => HypervisorKind::Bhyve,
            b"ACRNACRNACRN" => HypervisorKind::Acrn,
            b"Jailhouse\0\0\0" => HypervisorKind::Jailhouse,
            b"VBoxVBoxVBox" => HypervisorKind::VirtualBox,
            _ => HypervisorKind::Unknown,
        }
    }
}

/// "Hv#1" in CPUID 0x4000_0001 EAX (Hyper-V TLFS, "Hypervisor Interface Identification").
pub const HV_INTERFACE_HV1: u32 = 0x3123_7648;

/// One interface found in the hypervisor range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypervisorInterface {
    /// Base leaf (0x4000_0000, 0x4000_0100, ...).
    pub base: u32,
    /// Highest leaf of this interface, from EAX of the base leaf, always in
    /// `base..=base + 0xFF`: values past the base's own 0x100 block are
    /// clamped to it, values below the base or past the hypervisor range
    /// give `base` (`base + 1` for KVM, whose old hosts report 0).
    pub max_leaf: u32,
    /// The signature in EBX, ECX, EDX, verbatim.
    pub signature: [u8; 12],
    /// What the signature names.
    pub kind: HypervisorKind,
}

impl HypervisorInterface {
    /// Leaves above the base that the interface claims (`max_leaf - base`;
    /// 0 when EAX was below the base or junk, except for KVM, whose EAX of 0
    /// from old hosts means base + 1).
    pub fn leaf_count(&self) -> u32 {
        self.max_leaf.saturating_sub(self.base)
    }

    /// Whether `leaf` (an absolute leaf number) is within this interface.
    pub fn has_leaf(&self, leaf: u32) -> bool {
        leaf >= self.base && leaf <= self.max_leaf
    }

    /// The signature as text, with NULs and non-printables replaced by '.'.
    pub fn signature_str(&self) -> SignatureStr {
        SignatureStr(self.signature)
    }
}

/// Displays a signature with NULs and non-printables as '.'.
#[derive(Clone, Copy, Debug)]
pub struct SignatureStr(pub [u8; 12]);

impl core::fmt::Display for SignatureStr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use core::fmt::Write;
        // Trailing NULs are padding (KVM, Jailhouse); drop them.
        let end = self.0.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        for &b in &self.0[..end] {
            f.write_char(if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            })?;
        }
        Ok(())
    }
}

/// A fixed-capacity list of interfaces (no allocation in `no_std`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interfaces {
    items: [Option<HypervisorInterface>; MAX_INTERFACES],
    len: usize,
}

impl Default for Interfaces {
    fn default() -> Self {
        Interfaces {
            items: [None; MAX_INTERFACES],
            len: 0,
        }
    }
}

impl Interfaces {
    /// Appends an interface; returns false when full.
    pub fn push(&mut self, i: HypervisorInterface) -> bool {
        if self.len == MAX_INTERFACES {
            return false;
        }
        self.items[self.len] = Some(i);
        self.len += 1;
        true
    }

    /// Number of interfaces.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none was found.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The interfaces as a slice-like iterator.
    pub fn iter(&self) -> impl Iterator<Item = &HypervisorInterface> {
        self.items[..self.len].iter().flatten()
    }

    /// The interfaces in base order.
    pub fn as_slice(&self) -> InterfaceSlice<'_> {
        InterfaceSlice(&self.items[..self.len])
    }
}

/// Borrowed view of [`Interfaces`].
#[derive(Clone, Copy, Debug)]
pub struct InterfaceSlice<'a>(&'a [Option<HypervisorInterface>]);

impl<'a> InterfaceSlice<'a> {
    /// First interface.
    pub fn first(&self) -> Option<&'a HypervisorInterface> {
        self.0.first().and_then(|i| i.as_ref())
    }

    /// Iterates the interfaces.
    pub fn iter(&self) -> impl Iterator<Item = &'a HypervisorInterface> {
        self.0.iter().flatten()
    }
}

/// Most CPUIDs the whole [`crate::probe`] executes when `CPUID.1:ECX[31]` is
/// set: every one is an exit under hardware virtualisation.
pub const HYPERVISOR_CPUID_BUDGET: u32 = 16;

/// Bases read under a hypervisor whatever they hold (0x4000_0000 up to
/// 0x4000_0300); past them, a base is read only when the one before it held
/// an interface.
pub const FIXED_BASES: u32 = 4;

/// Scans the hypervisor range (which bases: the module documentation).
///
/// A base counts as an interface when its signature is not all zero, its
/// answer is not the mirror of the highest basic leaf (Intel CPUs answer
/// leaves above the maximum with that leaf's values, Intel SDM vol. 2A,
/// CPUID instruction reference; KVM does the same for Intel guests), and its
/// signature was not already reported at a lower base (bhyve mirrors its base
/// leaf across the range, tycho/cpuid#12).
///
/// `bounded` (the hypervisor bit is set): the fixed bases, then the chain
/// of occupied bases, and never more CPUIDs in all than `source`'s budget.
/// Otherwise the whole range. Base + 1 is read only for a "Microsoft Hv"
/// signature (the TLFS interface check), the timing leaf only for an
/// interface at 0x4000_0000 that claims it.
pub(crate) fn scan<S: CpuidSource + ?Sized>(
    source: &Counted<'_, S>,
    bounded: bool,
) -> (Interfaces, Option<CpuidResult>) {
    let mut found = Interfaces::default();
    let mut timing = None;
    let max_basic = source.cpuid(0, 0).eax;
    // Only a basic leaf can be mirrored; a "maximum" inside or above the
    // hypervisor range is junk and must not hide real interfaces.
    let mirror = (max_basic < HYPERVISOR_LEAF_FIRST).then(|| source.cpuid(max_basic, 0));
    let mut base = HYPERVISOR_LEAF_FIRST;
    let mut index = 0;
    let mut previous_held = true;
    while base < HYPERVISOR_LEAF_END {
        if bounded && ((index >= FIXED_BASES && !previous_held) || source.spent()) {
            break;
        }
        let r = source.cpuid(base, 0);
        let sig = signature(r.ebx, r.ecx, r.edx);
        let is_mirror = mirror == Some(r);
        let repeated = found.iter().any(|i| i.signature == sig);
        previous_held = sig != [0; 12] && !is_mirror && !repeated;
        if previous_held {
            let max_leaf = clamp_max_leaf(base, r.eax, &sig);
            // Only "Microsoft Hv" needs its interface leaf to be classified.
            let interface = (max_leaf > base && &sig == HV_SIGNATURE && !source.spent())
                .then(|| source.cpuid(base + 1, 0).eax);
            let kind = HypervisorKind::classify(&sig, interface);
            if base == HYPERVISOR_LEAF_FIRST && max_leaf >= TIMING_LEAF && !source.spent() {
                timing = Some(source.cpuid(TIMING_LEAF, 0));
            }
            if !found.push(HypervisorInterface {
                base,
                max_leaf,
                signature: sig,
                kind,
            }) {
                break;
            }
        }
        base += HYPERVISOR_LEAF_STEP;
        index += 1;
    }
    (found, timing)
}

/// A [`CpuidSource`] that executes each (leaf, subleaf) once and counts
/// what it executed: the probe's cost. Repeated reads (raw-cpuid and the
/// probe both read leaf 0, say) are answered from the cache.
pub(crate) struct Counted<'a, S: ?Sized> {
    source: &'a S,
    cache: RefCell<[Option<(u32, u32, CpuidResult)>; CACHE]>,
    executed: Cell<u32>,
    budget: u32,
}

/// Cached answers; the probe reads about 16 distinct leaves (more only in
/// the unbounded scan, whose bases are read once anyway).
const CACHE: usize = 24;

impl<'a, S: CpuidSource + ?Sized> Counted<'a, S> {
    /// Wraps `source`; [`Counted::spent`] once `budget` CPUIDs were executed.
    pub(crate) fn new(source: &'a S, budget: u32) -> Counted<'a, S> {
        Counted {
            source,
            cache: RefCell::new([None; CACHE]),
            executed: Cell::new(0),
            budget,
        }
    }

    /// CPUIDs executed so far.
    pub(crate) fn executed(&self) -> u32 {
        self.executed.get()
    }

    /// Whether the budget is used up.
    pub(crate) fn spent(&self) -> bool {
        self.executed.get() >= self.budget
    }

    /// Sets the budget (once the hypervisor bit is known).
    pub(crate) fn set_budget(&mut self, budget: u32) {
        self.budget = budget;
    }
}

impl<S: CpuidSource + ?Sized> CpuidSource for Counted<'_, S> {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        let mut cache = self.cache.borrow_mut();
        if let Some((_, _, r)) = cache
            .iter()
            .flatten()
            .find(|(l, s, _)| *l == leaf && *s == subleaf)
        {
            return *r;
        }
        let r = self.source.cpuid(leaf, subleaf);
        self.executed.set(self.executed.get().saturating_add(1));
        if let Some(slot) = cache.iter_mut().find(|e| e.is_none()) {
            *slot = Some((leaf, subleaf, r));
        }
        r
    }
}

/// The highest leaf an interface at `base` may be read at, from the EAX of
/// its base leaf.
///
/// - EAX inside the base's own 0x100 block is taken as is.
/// - EAX above the block but inside the hypervisor range is clamped to the
///   block: an interface may not claim the leaves of the next base (Linux
///   accepts Hyper-V maxima up to 0x4000_FFFF, so such values exist).
/// - EAX below the base: old KVM hosts report 0, which KVM's
///   `Documentation/virt/kvm/x86/cpuid.rst` says to read as 0x4000_0001
///   (base + 1); for any other signature the interface has no leaf above
///   its base.
/// - EAX at or above 0x4001_0000 is junk: no leaf above the base.
fn clamp_max_leaf(base: u32, eax: u32, sig: &[u8; 12]) -> u32 {
    let block_end = base.saturating_add(HYPERVISOR_LEAF_STEP - 1);
    if eax >= base && eax <= block_end {
        eax
    } else if eax > block_end && eax < HYPERVISOR_LEAF_END {
        block_end
    } else if eax < base && sig == KVM_SIGNATURE {
        base.saturating_add(1)
    } else {
        base
    }
}

/// KVM's signature (KVM `Documentation/virt/kvm/x86/cpuid.rst`).
const KVM_SIGNATURE: &[u8; 12] = b"KVMKVMKVM\0\0\0";

/// Hyper-V's vendor signature (TLFS, "Hypervisor Vendor Identification").
const HV_SIGNATURE: &[u8; 12] = b"Microsoft Hv";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_rules() {
        let other = b"XenVMMXenVMM";
        assert_eq!(clamp_max_leaf(0x4000_0000, 0x4000_0005, other), 0x4000_0005);
        assert_eq!(clamp_max_leaf(0x4000_0000, 0x4000_FFFF, other), 0x4000_00FF);
        assert_eq!(clamp_max_leaf(0x4000_0100, 0x4000_0200, other), 0x4000_01FF);
        assert_eq!(clamp_max_leaf(0x4000_0100, 0x4000_0000, other), 0x4000_0100);
        assert_eq!(clamp_max_leaf(0x4000_0000, 0xFFFF_FFFF, other), 0x4000_0000);
        assert_eq!(clamp_max_leaf(0x4000_0000, 0, KVM_SIGNATURE), 0x4000_0001);
        assert_eq!(clamp_max_leaf(0x4000_0100, 0, KVM_SIGNATURE), 0x4000_0101);
        assert_eq!(clamp_max_leaf(0x4000_FF00, 0x4001_0000, other), 0x4000_FF00);
        assert_eq!(clamp_max_leaf(0x4000_FF00, 0x4000_FFFF, other), 0x4000_FFFF);
    }

    #[test]
    fn classify_needs_hv1() {
        let sig = b"Microsoft Hv";
        assert_eq!(
            HypervisorKind::classify(sig, Some(HV_INTERFACE_HV1)),
            HypervisorKind::HyperV
        );
        assert_eq!(
            HypervisorKind::classify(sig, Some(0)),
            HypervisorKind::Unknown
        );
        assert_eq!(HypervisorKind::classify(sig, None), HypervisorKind::Unknown);
    }

    #[test]
    fn signature_display() {
        let s = SignatureStr(*b"KVMKVMKVM\0\0\0");
        assert_eq!(format_sig(s).as_str(), "KVMKVMKVM");
        let s = SignatureStr(*b"a\x01b\0c\xffd   \0\0");
        assert_eq!(format_sig(s).as_str(), "a.b.c.d   ");
    }

    /// Formats into a fixed buffer (no alloc in this crate's tests either).
    fn format_sig(s: SignatureStr) -> Buf {
        use core::fmt::Write;
        let mut b = Buf::default();
        write!(b, "{s}").unwrap();
        b
    }

    #[derive(Default)]
    struct Buf {
        bytes: [u8; 32],
        len: usize,
    }

    impl Buf {
        fn as_str(&self) -> &str {
            core::str::from_utf8(&self.bytes[..self.len]).unwrap()
        }
    }

    impl core::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            self.bytes
                .get_mut(self.len..end)
                .ok_or(core::fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
}
