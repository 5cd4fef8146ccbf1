//! How a run ends.

use crate::fmtbuf::FmtBuf;
use pvops_abi::exit::ExitCode;

/// Detail text of a fault.
pub type Detail = FmtBuf<240>;

/// Kinds of `mv.fault` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The guest triple-faulted (SVM shutdown intercept).
    TripleFault,
    /// The guest touched guest-physical memory outside its RAM.
    BadMemory,
    /// The guest stopped making progress.
    Watchdog,
    /// The guest did something the microvisor cannot emulate.
    Unsupported,
    /// The microvisor failed (setup error, VMRUN refused).
    MicrovisorError,
    /// Memory no guest may change did change ([`crate::integrity`]).
    Integrity,
}

impl FaultKind {
    /// Name in the `kind` field.
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::TripleFault => "triple-fault",
            FaultKind::BadMemory => "bad-memory",
            FaultKind::Watchdog => "watchdog",
            FaultKind::Unsupported => "unsupported",
            FaultKind::MicrovisorError => "microvisor-error",
            FaultKind::Integrity => "integrity",
        }
    }

    /// Exit code the run ends with.
    pub const fn exit_code(self) -> ExitCode {
        match self {
            FaultKind::TripleFault => ExitCode::GuestTripleFault,
            FaultKind::BadMemory => ExitCode::GuestBadMemory,
            FaultKind::Watchdog => ExitCode::GuestWatchdog,
            FaultKind::Unsupported => ExitCode::GuestUnsupported,
            FaultKind::MicrovisorError => ExitCode::MicrovisorError,
            FaultKind::Integrity => ExitCode::MicrovisorCorrupted,
        }
    }
}

/// The end of a run.
// The detail text is inline: the microvisor has no heap to box it in.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug)]
pub enum End {
    /// The guest wrote `value` (`size` bytes) to the debug-exit port.
    GuestExit {
        /// Value written.
        value: u32,
        /// Access size in bytes.
        size: u8,
    },
    /// A fault ended the run.
    Fault {
        /// What happened.
        kind: FaultKind,
        /// Details for the report.
        detail: Detail,
    },
}

impl End {
    /// A fault with a formatted detail.
    pub fn fault(kind: FaultKind, args: core::fmt::Arguments<'_>) -> Self {
        End::Fault {
            kind,
            detail: Detail::from_fmt(args),
        }
    }
}
