//! System operations, dispatched through patchable call sites
//! ([`crate::dispatch`]).

use crate::dispatch::site::site;

/// Why the kernel is stopping (`repr(u8)`, passed in DIL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ShutdownReason {
    /// Orderly power-off; the run succeeded.
    PowerOff,
    /// The kernel crashed or a check failed.
    Crash,
}

/// Asks the platform (a hypervisor's shutdown call, or the kernel's hook
/// natively) to power off. Returns only if nothing stopped the machine.
#[inline]
pub fn shutdown(reason: ShutdownReason) {
    // SAFETY: the site calls the table's `system.shutdown` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(SYSTEM_SHUTDOWN; in("rdi") reason as u8 as u64,) }
}

pub use crate::native::system::{set_shutdown_hook, ShutdownHook};

/// Longest crash message [`report_crash`] passes on (longer ones are cut at
/// a character boundary); Hyper-V's crash message page holds 4 KiB.
pub const CRASH_MESSAGE_MAX: usize = 1024;

/// Hands a crash message to the hypervisor, where it has a channel for one
/// (Hyper-V's crash MSRs; natively nothing). Takes anything printable: a
/// `&str`, `format_args!(...)`, or from a panic handler the
/// [`PanicInfo`](core::panic::PanicInfo) itself (message and location) or
/// `info.message()`:
///
/// ```
/// fn on_panic(info: &core::panic::PanicInfo<'_>) {
///     pvops::system::report_crash(info.message());
/// }
/// pvops::system::report_crash("disk on fire");
/// pvops::system::report_crash(format_args!("bad block {}", 7));
/// ```
///
/// The message is formatted into a stack buffer of [`CRASH_MESSAGE_MAX`]
/// bytes, so this allocates nothing and works from any context.
pub fn report_crash(message: impl core::fmt::Display) {
    let mut buf = MessageBuf {
        bytes: [0; CRASH_MESSAGE_MAX],
        len: 0,
    };
    // A full buffer stops the formatting with an error: keep what fits.
    let _ = core::fmt::write(&mut buf, format_args!("{message}"));
    let message: &str = buf.as_str();
    // The function takes `&&str` (a thin pointer, FFI-safe) to the message.
    let arg: *const &str = &message;
    // SAFETY: the site calls the table's `system.report_crash` function (`extern "C"`, type
    // checked by the table) with its arguments and result in the System V
    // registers and every caller-saved register declared clobbered
    // (dispatch/site.rs).
    unsafe { site!(SYSTEM_REPORT_CRASH; in("rdi") arg,) }
}

struct MessageBuf {
    bytes: [u8; CRASH_MESSAGE_MAX],
    len: usize,
}

impl MessageBuf {
    fn as_str(&self) -> &str {
        // Only whole `str` pieces (or their prefixes up to a char boundary)
        // are ever copied in, so the bytes are UTF-8.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Write for MessageBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = CRASH_MESSAGE_MAX - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            Err(core::fmt::Error)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn messages_are_cut_at_a_char_boundary() {
        let mut b = MessageBuf {
            bytes: [0; CRASH_MESSAGE_MAX],
            len: 0,
        };
        let long = "é".repeat(CRASH_MESSAGE_MAX);
        assert!(b.write_str(&long).is_err());
        assert_eq!(b.as_str().len(), CRASH_MESSAGE_MAX);
        assert!(b.as_str().chars().all(|c| c == 'é'));
        report_crash(format_args!("x {}", 1));
    }
}
