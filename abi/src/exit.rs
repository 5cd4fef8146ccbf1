//! Exit codes written to QEMU's `isa-debug-exit` device.
//!
//! QEMU exits with status `(value << 1) | 1` when a value is written to the
//! device (hw/misc/debugexit.c), so no code we write can produce status 0,
//! which QEMU also returns after a triple fault with `-no-reboot`.

/// I/O port of the `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=4`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// What a run ended with, as written to the exit device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// The guest kernel finished and every self-test passed.
    Pass = 0x10,
    /// The guest kernel finished and a self-test failed, or it panicked.
    Fail = 0x11,
    /// Microvisor: the guest triple-faulted (SVM shutdown intercept).
    GuestTripleFault = 0x20,
    /// Microvisor: the guest touched guest-physical memory outside its RAM.
    GuestBadMemory = 0x21,
    /// Microvisor: the guest stopped making progress (watchdog).
    GuestWatchdog = 0x22,
    /// Microvisor: the hypervisor itself failed (setup error or panic).
    MicrovisorError = 0x23,
    /// Microvisor: the guest ran an instruction the microvisor cannot emulate.
    GuestUnsupported = 0x24,
    /// Microvisor: memory the guest must never reach (its text, rodata,
    /// page tables, nested page tables, permission maps, the guard pages
    /// around guest RAM) changed during the run (`mv.integrity`).
    MicrovisorCorrupted = 0x25,
}

impl ExitCode {
    /// Every code, for lookups.
    pub const ALL: [ExitCode; 8] = [
        ExitCode::Pass,
        ExitCode::Fail,
        ExitCode::GuestTripleFault,
        ExitCode::GuestBadMemory,
        ExitCode::GuestWatchdog,
        ExitCode::MicrovisorError,
        ExitCode::GuestUnsupported,
        ExitCode::MicrovisorCorrupted,
    ];

    /// The process exit status QEMU reports for this code.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }

    /// Decodes a QEMU process exit status back into a code.
    pub fn from_qemu_status(status: i32) -> Option<ExitCode> {
        Self::ALL.into_iter().find(|c| c.qemu_status() == status)
    }

    /// Short stable name, used in reports.
    pub const fn name(self) -> &'static str {
        match self {
            ExitCode::Pass => "pass",
            ExitCode::Fail => "fail",
            ExitCode::GuestTripleFault => "guest-triple-fault",
            ExitCode::GuestBadMemory => "guest-bad-memory",
            ExitCode::GuestWatchdog => "guest-watchdog",
            ExitCode::MicrovisorError => "microvisor-error",
            ExitCode::GuestUnsupported => "guest-unsupported",
            ExitCode::MicrovisorCorrupted => "microvisor-corrupted",
        }
    }
}
