//! Panic reporting: `@@ panic message=...` and an exit code of the caller's
//! choice.

use crate::record::{write_record, EncodingWriter};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use pvops_abi::exit::ExitCode;

static PANICKING: AtomicBool = AtomicBool::new(false);

/// Reports a panic and exits. Call from the binary's `#[panic_handler]`:
///
/// ```ignore
/// #[panic_handler]
/// fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
///     bootkit::panic::handle(info, pvops_abi::exit::ExitCode::Fail)
/// }
/// ```
pub fn handle(info: &core::panic::PanicInfo<'_>, code: ExitCode) -> ! {
    report(info);
    crate::exit::exit(code)
}

/// Prints the panic (`*** PANIC` and the `@@ panic message=` record) and
/// returns, for a kernel that has more to do before it stops (tell its
/// hypervisor, power off through it). Returns false, printing nothing, for
/// a panic raised while a panic was being reported: the caller should then
/// stop at once.
pub fn report(info: &core::panic::PanicInfo<'_>) -> bool {
    if PANICKING.swap(true, Ordering::SeqCst) {
        return false;
    }
    crate::serial::with_for_panic(|c| {
        let _ = writeln!(c, "\n*** PANIC: {info}");
        let message = Message(info);
        let _ = write_record(c, "panic", &[("message", &message)]);
    });
    true
}

/// "message at file:line".
struct Message<'a, 'b>(&'a core::panic::PanicInfo<'b>);

impl core::fmt::Display for Message<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0.message())?;
        if let Some(loc) = self.0.location() {
            write!(f, " at {}:{}", loc.file(), loc.line())?;
        }
        Ok(())
    }
}

/// Reports a fatal condition that is not a Rust panic (e.g. from an
/// exception handler that must not unwind through `panic!`) and exits.
pub fn fatal(message: core::fmt::Arguments<'_>, code: ExitCode) -> ! {
    crate::serial::with_for_panic(|c| {
        let _ = writeln!(c, "\n*** FATAL: {message}");
        let _ = write!(c, "{} panic message=", pvops_abi::report::PREFIX);
        let _ = EncodingWriter(c).write_fmt(message);
        let _ = c.write_str("\n");
    });
    crate::exit::exit(code)
}
