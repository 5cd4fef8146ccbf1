//! The hypervisor CPUID range: which interfaces are present, at which base.
//!
//! A hypervisor publishes a signature at a base leaf (0x4000_0000, 0x4000_0100,
//! ...) with EAX = the highest leaf of that interface. Several may be stacked:
//! QEMU/KVM with Hyper-V enlightenments puts "Microsoft Hv" at 0x4000_0000 and
//! KVM at 0x4000_0100; Xen with Viridian does the same with Xen. So the whole
//! range is scanned and every interface reported.

use crate::source::{signature, CpuidSource};
use crate::{HYPERVISOR_LEAF_END, HYPERVISOR_LEAF_FIRST, HYPERVISOR_LEAF_STEP};

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
            b"KVMKVMKVM\0\0\0" => HypervisorKind::Kvm,
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
    /// Highest leaf of this interface, as reported in EAX of the base
    /// (clamped to the base's own block, see [`HypervisorInterface::leaf_count`]).
    pub max_leaf: u32,
    /// The signature in EBX, ECX, EDX, verbatim.
    pub signature: [u8; 12],
    /// What the signature names.
    pub kind: HypervisorKind,
}

impl HypervisorInterface {
    /// Leaves above the base that the interface claims (0 when EAX was below
    /// the base, as some old KVM versions report).
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

/// Scans 0x4000_0000..0x4001_0000 in steps of 0x100.
///
/// A base counts as an interface when its signature is not all zero and not
/// the mirror of the highest basic leaf (Intel CPUs answer leaves above the
/// maximum with that leaf's values; bhyve mirrors its base leaf across the
/// whole range). Scanning does not depend on the hypervisor bit, so the
/// result shows what is there; consumers decide whether to trust it.
pub(crate) fn scan<S: CpuidSource + ?Sized>(source: &S) -> Interfaces {
    let mut found = Interfaces::default();
    let max_basic = source.cpuid(0, 0).eax;
    let mirror = source.cpuid(max_basic, 0);
    let mut previous: Option<[u8; 12]> = None;
    let mut base = HYPERVISOR_LEAF_FIRST;
    while base < HYPERVISOR_LEAF_END {
        let r = source.cpuid(base, 0);
        let sig = signature(r.ebx, r.ecx, r.edx);
        let is_mirror = r == mirror && base != HYPERVISOR_LEAF_FIRST;
        let repeated = previous == Some(sig);
        if sig != [0; 12] && !is_mirror && !repeated {
            // EAX outside this base's 0x100 block is either an old KVM's 0 or
            // garbage; clamp so later reads stay inside the interface.
            let block_end = base + (HYPERVISOR_LEAF_STEP - 1);
            let max_leaf = if r.eax >= base && r.eax <= block_end {
                r.eax
            } else if r.eax > block_end
                && base == HYPERVISOR_LEAF_FIRST
                && r.eax < HYPERVISOR_LEAF_END
            {
                // A 0x4000_0000 interface may not claim leaves of other bases.
                block_end
            } else {
                base
            };
            let interface = (max_leaf > base).then(|| source.cpuid(base + 1, 0).eax);
            let kind = HypervisorKind::classify(&sig, interface);
            if !found.push(HypervisorInterface {
                base,
                max_leaf,
                signature: sig,
                kind,
            }) {
                break;
            }
            previous = Some(sig);
        } else if sig == [0; 12] {
            previous = None;
        }
        base += HYPERVISOR_LEAF_STEP;
    }
    found
}
