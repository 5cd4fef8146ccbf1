//! Choosing the backend.

use crate::{native, Backend, Detection, Environment};

/// Every compiled-in backend, native last.
pub fn compiled_in() -> &'static [&'static dyn Backend] {
    BACKENDS
}

static BACKENDS: &[&dyn Backend] = &[
    // Hypervisor backends go here, each behind its Cargo feature.
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
    let make = |backend, detection, choice, requested| Selection {
        backend,
        detection,
        choice,
        requested,
        why: Why { choice, detection },
    };
    let Some(name) = requested else {
        return make(detected, detection, Choice::Detected, None);
    };
    let requested_static = backends.iter().find(|b| b.name() == name).map(|b| b.name());
    match backends.iter().find(|b| b.name() == name) {
        Some(&b) => match b.detect(env) {
            Some(d) => make(b, d, Choice::Override, requested_static),
            None => {
                log::warn!(
                    "pvops: pvops={} requested but its hypervisor is not here; using detection",
                    name
                );
                make(
                    detected,
                    detection,
                    Choice::OverrideUnusable,
                    requested_static,
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
