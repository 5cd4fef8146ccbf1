//! Choosing the backend.

use crate::{native, Backend, Detection, Environment};

/// Every compiled-in backend, native last.
pub fn compiled_in() -> &'static [&'static dyn Backend] {
    BACKENDS
}

static BACKENDS: &[&dyn Backend] = &[
    // Hypervisor backends go here, each behind its Cargo feature.
    #[cfg(feature = "vmware")]
    &crate::vmware::VMWARE,
    #[cfg(feature = "xen")]
    &crate::xen::XEN,
    #[cfg(feature = "hyperv")]
    &crate::hyperv::HYPERV,
    #[cfg(feature = "kvm")]
    &crate::kvm::KVM,
    &native::NATIVE,
];

/// How the selection was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The highest-priority detected backend.
    Detected,
    /// Named by `pvops=<name>` and usable here.
    Override,
    /// `pvops=<name>` named a compiled-in backend that did not detect its
    /// hypervisor; detection decided instead.
    OverrideUnusable,
    /// `pvops=<name>` named no compiled-in backend; detection decided.
    OverrideUnknown,
}

/// The chosen backend and why.
#[derive(Clone, Copy)]
pub struct Selection {
    /// The backend to install.
    pub backend: &'static dyn Backend,
    /// Its detection result.
    pub detection: Detection,
    /// How it was chosen.
    pub choice: Choice,
    /// The `pvops=` value, when one was given.
    pub requested: Option<&'static str>,
    /// A human explanation.
    pub why: Why,
}

/// Formats the reason for a selection without allocating.
#[derive(Clone, Copy)]
pub struct Why {
    choice: Choice,
    detection: Detection,
    /// Set when detection ended at native: what was (not) seen.
    native: Option<NativeBecause>,
}

/// Why detection ended at the native backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeBecause {
    /// No CPUID hypervisor bit, no hypervisor signature.
    NoHypervisor,
    /// The hypervisor bit is set but no signature at 0x4000_0000.. names it.
    UnknownHypervisor,
    /// A hypervisor was identified, but no backend for it is compiled in.
    NotCompiledIn {
        /// Its kind name (as in `pvops_probe::HypervisorKind::name`).
        kind: &'static str,
        /// The CPUID base of its interface.
        base: u32,
    },
    /// A hypervisor was identified and its backend is compiled in, but the
    /// backend did not detect a usable interface (see its debug log).
    NotUsable {
        /// Its kind name.
        kind: &'static str,
        /// The CPUID base of its interface.
        base: u32,
    },
}

impl core::fmt::Display for NativeBecause {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            NativeBecause::NoHypervisor => f.write_str("no hypervisor interface detected"),
            NativeBecause::UnknownHypervisor => f.write_str(
                "the CPUID hypervisor bit is set but no hypervisor signature names the hypervisor",
            ),
            NativeBecause::NotCompiledIn { kind, base } => write!(
                f,
                "hypervisor '{kind}' seen at {base:#x}, but no backend for it is compiled in"
            ),
            NativeBecause::NotUsable { kind, base } => write!(
                f,
                "hypervisor '{kind}' seen at {base:#x}, but its backend found no usable interface"
            ),
        }
    }
}

impl Why {
    /// When detection ended at native: what was (not) seen.
    pub fn native_because(&self) -> Option<NativeBecause> {
        self.native
    }
}

/// What made detection end at native for `env`, given `backends`.
fn native_because(backends: &[&dyn Backend], env: &Environment<'_>) -> NativeBecause {
    let probe = env.probe;
    // The reported hypervisor; signatures without the hypervisor bit count
    // too (the first one).
    let Some(i) = probe
        .primary_interface()
        .or_else(|| probe.interfaces.iter().next())
    else {
        return if probe.under_hypervisor() {
            NativeBecause::UnknownHypervisor
        } else {
            NativeBecause::NoHypervisor
        };
    };
    let (kind, base) = (i.kind.name(), i.base);
    if backends.iter().any(|b| b.name() == kind) {
        NativeBecause::NotUsable { kind, base }
    } else {
        NativeBecause::NotCompiledIn { kind, base }
    }
}

impl core::fmt::Display for Why {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.choice {
            Choice::Detected => f.write_str("detected: ")?,
            Choice::Override => f.write_str("requested on the command line: ")?,
            Choice::OverrideUnusable => {
                f.write_str("requested backend not usable here, detected instead: ")?
            }
            Choice::OverrideUnknown => {
                f.write_str("requested backend not compiled in, detected instead: ")?
            }
        }
        f.write_str(self.detection.reason)?;
        if let Some(base) = self.detection.base {
            write!(f, " (base {:#x})", base)?;
        }
        if let Some(n) = self.native {
            write!(f, "; {n}")?;
        }
        Ok(())
    }
}

/// Picks the backend for `env`: the `pvops=<name>` override when that
/// backend is compiled in and detects its hypervisor (`native` always
/// does), else the highest detection priority; ties go to the earlier entry
/// of [`compiled_in`]. Logs what it chose and why.
pub fn select(env: &Environment<'_>, cmdline: &str) -> Selection {
    select_from(compiled_in(), env, crate::override_from_cmdline(cmdline))
}

pub(crate) fn select_from(
    backends: &'static [&'static dyn Backend],
    env: &Environment<'_>,
    requested: Option<&str>,
) -> Selection {
    let mut best: Option<(&'static dyn Backend, Detection)> = None;
    for &b in backends {
        if let Some(d) = b.detect(env) {
            log::debug!(
                "pvops: backend '{}' detected with priority {:#x}: {}",
                b.name(),
                d.priority,
                d.reason
            );
            if best.is_none_or(|(_, bd)| d.priority > bd.priority) {
                best = Some((b, d));
            }
        }
    }
    let (detected, detection) = best.unwrap_or((&native::NATIVE, native::DETECTION));
    let because = (detected.name() == native::NATIVE.name()).then(|| native_because(backends, env));
    let make = |backend: &'static dyn Backend, detection, choice, requested| Selection {
        backend,
        detection,
        choice,
        requested,
        why: Why {
            choice,
            detection,
            native: because.filter(|_| choice != Choice::Override),
        },
    };
    let Some(name) = requested else {
        return make(detected, detection, Choice::Detected, None);
    };
    match backends.iter().find(|b| b.name() == name) {
        // The backend's own name: `'static`, unlike the command line.
        Some(&b) => match b.detect(env) {
            Some(d) => make(b, d, Choice::Override, Some(b.name())),
            None => {
                log::warn!(
                    "pvops: pvops={} requested but its hypervisor is not here; using detection",
                    name
                );
                make(
                    detected,
                    detection,
                    Choice::OverrideUnusable,
                    Some(b.name()),
                )
            }
        },
        None => {
            log::warn!(
                "pvops: pvops={} names no compiled-in backend; using detection",
                name
            );
            make(detected, detection, Choice::OverrideUnknown, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{sig, FakeBackend, FAKE_KVM};
    use pvops_probe::{CpuidResult, HypervisorKind};

    static HYPERV: FakeBackend = FakeBackend {
        name: "hyperv",
        kind: HypervisorKind::HyperV,
    };
    static ALL: &[&dyn Backend] = &[&HYPERV, &FAKE_KVM, &native::NATIVE];
    static NO_KVM: &[&dyn Backend] = &[&HYPERV, &native::NATIVE];

    /// KVM with Hyper-V enlightenments: Hyper-V at 0x4000_0000, KVM at 0x4000_0100.
    fn stacked(leaf: u32, _sub: u32) -> CpuidResult {
        let r = |eax, (ebx, ecx, edx)| CpuidResult { eax, ebx, ecx, edx };
        match leaf {
            0 => r(0xd, sig(b"AuthenticAMD")),
            1 => CpuidResult {
                ecx: 1 << 31,
                ..Default::default()
            },
            0x4000_0000 => r(0x4000_000a, sig(b"Microsoft Hv")),
            0x4000_0001 => CpuidResult {
                eax: 0x3123_7648,
                ..Default::default()
            },
            0x4000_0100 => r(0x4000_0101, sig(b"KVMKVMKVM\0\0\0")),
            _ => CpuidResult::default(),
        }
    }

    fn with_env<R>(f: impl FnOnce(&Environment<'_>) -> R) -> R {
        crate::test_support::with_env(&stacked, f)
    }

    #[test]
    fn highest_base_wins() {
        with_env(|env| {
            let s = select_from(ALL, env, None);
            assert_eq!(s.backend.name(), "kvm");
            assert_eq!(s.choice, Choice::Detected);
            assert_eq!(s.detection.base, Some(0x4000_0100));
        });
    }

    #[test]
    fn without_the_higher_backend_the_compatible_one_is_used() {
        with_env(|env| assert_eq!(select_from(NO_KVM, env, None).backend.name(), "hyperv"));
    }

    #[test]
    fn override_to_a_usable_backend_is_honoured() {
        with_env(|env| {
            let s = select_from(ALL, env, Some("hyperv"));
            assert_eq!((s.backend.name(), s.choice), ("hyperv", Choice::Override));
            let s = select_from(ALL, env, Some("native"));
            assert_eq!((s.backend.name(), s.choice), ("native", Choice::Override));
        });
    }

    #[test]
    fn unknown_or_unusable_override_falls_back_to_detection() {
        with_env(|env| {
            let s = select_from(NO_KVM, env, Some("kvm"));
            assert_eq!(
                (s.backend.name(), s.choice),
                ("hyperv", Choice::OverrideUnknown)
            );
        });
        let bare = |leaf: u32, _: u32| match leaf {
            0 => CpuidResult {
                eax: 1,
                ..Default::default()
            },
            _ => CpuidResult::default(),
        };
        crate::test_support::with_env(&bare, |env| {
            let s = select_from(ALL, env, Some("hyperv"));
            assert_eq!(
                (s.backend.name(), s.choice),
                ("native", Choice::OverrideUnusable)
            );
            assert_eq!(s.requested, Some("hyperv"));
            assert!(format!("{}", s.why).contains("not usable"));
        });
    }

    #[test]
    fn nothing_detected_means_native() {
        let bare = |_: u32, _: u32| CpuidResult::default();
        crate::test_support::with_env(&bare, |env| {
            let s = select(env, "");
            assert_eq!(s.backend.name(), "native");
            assert_eq!(s.choice, Choice::Detected);
            assert_eq!(s.why.native_because(), Some(NativeBecause::NoHypervisor));
            assert!(format!("{}", s.why).contains("no hypervisor interface detected"));
        });
    }

    #[test]
    fn native_names_the_hypervisor_it_did_not_take() {
        static ONLY_NATIVE: &[&dyn Backend] = &[&native::NATIVE];
        with_env(|env| {
            let s = select_from(ONLY_NATIVE, env, None);
            assert_eq!(s.backend.name(), "native");
            let why = format!("{}", s.why);
            assert!(
                why.contains("hypervisor 'hyperv' seen at 0x40000000")
                    && why.contains("no backend for it is compiled in"),
                "{why}"
            );
            // Asked for by name: no excuse to give.
            let s = select_from(ONLY_NATIVE, env, Some("native"));
            assert_eq!(s.why.native_because(), None);
        });
        // A backend compiled in that does not take its hypervisor.
        static REFUSES: FakeBackend = FakeBackend {
            name: "hyperv",
            kind: HypervisorKind::Xen,
        };
        static WITH_REFUSER: &[&dyn Backend] = &[&REFUSES, &native::NATIVE];
        with_env(|env| {
            let s = select_from(WITH_REFUSER, env, None);
            assert_eq!(s.backend.name(), "native");
            assert!(format!("{}", s.why).contains("its backend found no usable interface"));
        });
    }
}
