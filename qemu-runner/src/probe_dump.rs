//! `probe-dump`: what the guest's probe would see on the machine a
//! `cpuid -r` dump was recorded on, and which backend it would pick.

use pvops_backends::{select, Environment};
use pvops_probe::dump::Dump;
use pvops_probe::{probe, CpuidSource, Features, HypervisorKind, Probe, TIMING_LEAF};
use serde_json::{json, Value};

/// One hypervisor interface of the dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Base leaf.
    pub base: u32,
    /// Signature, non-printables as '.'.
    pub signature: String,
    /// Kind name.
    pub kind: &'static str,
    /// Highest leaf.
    pub max_leaf: u32,
}

/// The decoded dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpInfo {
    /// Vendor string.
    pub vendor: String,
    /// Display family, model, stepping.
    pub family_model_stepping: (u32, u32, u32),
    /// Highest basic and extended leaves.
    pub max_leaves: (u32, u32),
    /// Feature names.
    pub features: Vec<&'static str>,
    /// The hypervisor as the example kernel names it: `none` when the
    /// hypervisor bit is clear, else the first interface's kind, or
    /// `unknown` when there is none.
    pub hypervisor: &'static str,
    /// Every interface.
    pub interfaces: Vec<InterfaceInfo>,
    /// The backend `select` picks (among those compiled into the runner).
    pub backend: &'static str,
    /// Why.
    pub backend_reason: String,
    /// The TSC frequency a hypervisor advertises, in kHz, and the leaf.
    pub hypervisor_tsc: Option<(u64, &'static str)>,
    /// The TSC frequency of CPUID 0x15, in kHz.
    pub cpuid15_tsc_khz: Option<u64>,
}

/// The hypervisor name the example kernel would report for `p`.
pub fn hypervisor_name(p: &Probe) -> &'static str {
    if !p.under_hypervisor() {
        "none"
    } else {
        p.primary_interface()
            .map_or(HypervisorKind::Unknown.name(), |i| i.kind.name())
    }
}

/// The TSC frequency (kHz) some hypervisor interface advertises in CPUID:
/// the timing leaf 0x4000_0010 (VMware, QEMU's `vmware-cpuid-freq`), or
/// Xen's time leaf (base + 3, ECX = guest TSC kHz).
pub fn hypervisor_tsc<S: CpuidSource + ?Sized>(
    p: &Probe,
    cpuid: &S,
) -> Option<(u64, &'static str)> {
    for i in p.interfaces.iter() {
        if i.has_leaf(TIMING_LEAF) {
            let khz = cpuid.cpuid(TIMING_LEAF, 0).eax;
            if khz != 0 {
                return Some((u64::from(khz), "cpuid-0x40000010"));
            }
        }
        if i.kind == HypervisorKind::Xen && i.has_leaf(i.base + 3) {
            let khz = cpuid.cpuid(i.base + 3, 0).ecx;
            if khz != 0 {
                return Some((u64::from(khz), "xen-time-leaf"));
            }
        }
    }
    None
}

/// Parses and decodes a `cpuid -r` dump.
pub fn decode(text: &str) -> Result<DumpInfo, String> {
    let dump = Dump::parse(text).map_err(|e| e.to_string())?;
    let p = probe(&dump);
    let env = Environment {
        probe: &p,
        cpuid: &dump,
    };
    let sel = select(&env, "");
    Ok(DumpInfo {
        vendor: String::from_utf8_lossy(&p.vendor_string)
            .trim_end_matches('\0')
            .to_string(),
        family_model_stepping: (p.family, p.model, p.stepping),
        max_leaves: (p.max_basic_leaf, p.max_extended_leaf),
        features: Features::NAMES
            .iter()
            .filter(|(f, _)| p.features.contains(*f))
            .map(|(_, n)| *n)
            .collect(),
        hypervisor: hypervisor_name(&p),
        interfaces: p
            .interfaces
            .iter()
            .map(|i| InterfaceInfo {
                base: i.base,
                signature: i.signature_str().to_string(),
                kind: i.kind.name(),
                max_leaf: i.max_leaf,
            })
            .collect(),
        backend: sel.backend.name(),
        backend_reason: sel.why.to_string(),
        hypervisor_tsc: hypervisor_tsc(&p, &dump),
        cpuid15_tsc_khz: p.tsc_khz_from_leaf_15(),
    })
}

impl DumpInfo {
    /// One JSON object.
    pub fn to_json(&self) -> Value {
        let (family, model, stepping) = self.family_model_stepping;
        json!({
            "vendor": self.vendor,
            "family": family,
            "model": model,
            "stepping": stepping,
            "max_basic_leaf": self.max_leaves.0,
            "max_extended_leaf": self.max_leaves.1,
            "features": self.features,
            "hypervisor": self.hypervisor,
            "interfaces": self.interfaces.iter().map(|i| json!({
                "base": i.base,
                "base_hex": format!("{:#x}", i.base),
                "signature": i.signature,
                "kind": i.kind,
                "max_leaf": i.max_leaf,
                "max_leaf_hex": format!("{:#x}", i.max_leaf),
            })).collect::<Vec<_>>(),
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "hypervisor_tsc_khz": self.hypervisor_tsc.map(|t| t.0),
            "hypervisor_tsc_source": self.hypervisor_tsc.map(|t| t.1),
            "cpuid15_tsc_khz": self.cpuid15_tsc_khz,
        })
    }

    /// Human-readable text.
    pub fn to_text(&self) -> String {
        let (family, model, stepping) = self.family_model_stepping;
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<12} {v}\n"));
        line(
            "cpu",
            format!(
                "{} family {family:#x} model {model:#x} stepping {stepping}",
                self.vendor
            ),
        );
        line(
            "max leaves",
            format!(
                "basic {:#x}, extended {:#x}",
                self.max_leaves.0, self.max_leaves.1
            ),
        );
        line("features", self.features.join(" "));
        line("hypervisor", self.hypervisor.to_string());
        if self.interfaces.is_empty() {
            line("interfaces", "none".to_string());
        }
        for i in &self.interfaces {
            line(
                "interface",
                format!(
                    "base {:#x} signature {:?} kind {} max leaf {:#x}",
                    i.base, i.signature, i.kind, i.max_leaf
                ),
            );
        }
        line(
            "backend",
            format!("{} ({})", self.backend, self.backend_reason),
        );
        line(
            "tsc",
            match self.hypervisor_tsc {
                Some((khz, src)) => format!("{khz} kHz advertised by the hypervisor ({src})"),
                None => "no hypervisor-advertised frequency".to_string(),
            },
        );
        if let Some(khz) = self.cpuid15_tsc_khz {
            line("cpuid 0x15", format!("{khz} kHz"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KVM with `vmware-cpuid-freq` on an AMD host, two CPUs.
    const KVM_DUMP: &str = "\
CPU 0:
   0x00000000 0x00: eax=0x00000010 ebx=0x68747541 ecx=0x444d4163 edx=0x69746e65
   0x00000001 0x00: eax=0x00830f10 ebx=0x00000800 ecx=0xf6f83203 edx=0x178bfbff
   0x00000010 0x00: eax=0x00000000 ebx=0x00000000 ecx=0x00000000 edx=0x00000000
   0x40000000 0x00: eax=0x40000010 ebx=0x4b4d564b ecx=0x564b4d56 edx=0x0000004d
   0x40000001 0x00: eax=0x01007afb ebx=0x00000000 ecx=0x00000000 edx=0x00000000
   0x40000010 0x00: eax=0x002dc6c0 ebx=0x000f4240 ecx=0x00000000 edx=0x00000000
   0x80000000 0x00: eax=0x80000008 ebx=0x00000000 ecx=0x00000000 edx=0x00000000
   0x80000001 0x00: eax=0x00830f10 ebx=0x00000000 ecx=0x00000004 edx=0x2fd3fbff
CPU 1:
   0x00000000 0x00: eax=0x00000001 ebx=0x756e6547 ecx=0x6c65746e edx=0x49656e69
";

    #[test]
    fn kvm_dump() {
        let d = decode(KVM_DUMP).unwrap();
        assert_eq!(d.vendor, "AuthenticAMD");
        assert_eq!(d.family_model_stepping, (0x17, 0x31, 0));
        assert_eq!(d.max_leaves, (0x10, 0x8000_0008));
        assert!(d.features.contains(&"hypervisor"));
        assert!(d.features.contains(&"svm"));
        assert_eq!(d.hypervisor, "kvm");
        assert_eq!(d.interfaces.len(), 1);
        assert_eq!(d.interfaces[0].base, 0x4000_0000);
        assert_eq!(d.interfaces[0].signature, "KVMKVMKVM");
        assert_eq!(d.interfaces[0].max_leaf, 0x4000_0010);
        // The KVM backend detects its signature (probe-dump carries it).
        assert_eq!(d.backend, "kvm");
        assert_eq!(d.hypervisor_tsc, Some((3_000_000, "cpuid-0x40000010")));
        assert_eq!(d.cpuid15_tsc_khz, None);
        let j = d.to_json();
        assert_eq!(j["interfaces"][0]["kind"], "kvm");
        assert_eq!(j["interfaces"][0]["base"], 0x4000_0000u32);
        assert_eq!(j["hypervisor_tsc_khz"], 3_000_000);
        assert_eq!(j["backend"], "kvm");
        let t = d.to_text();
        assert!(t.contains("KVMKVMKVM") && t.contains("3000000 kHz"), "{t}");
    }

    #[test]
    fn bare_metal_and_errors() {
        let bare = "0x00000000 0x00: eax=0x00000001 ebx=0x756e6547 ecx=0x6c65746e edx=0x49656e69\n";
        let d = decode(bare).unwrap();
        assert_eq!(d.vendor, "GenuineIntel");
        assert_eq!(d.hypervisor, "none");
        assert!(d.interfaces.is_empty());
        assert_eq!(d.hypervisor_tsc, None);
        assert_eq!(d.to_json()["hypervisor_tsc_khz"], Value::Null);
        assert!(decode("nothing here\n").is_err());
        assert!(decode("0x1 0x0: eax=0x1\n").unwrap_err().contains("line 1"));
    }
}
