//! Machine-readable `@@` lines, per [`pvops_abi::report`].
//!
//! A record is `@@ <kind> key=value key=value...` on one line, with every
//! value percent-encoded so it contains no space, `=` or `%`.

use core::fmt::{self, Write};
use pvops_abi::report;

/// A `fmt::Write` adapter that percent-encodes everything written through it.
pub struct EncodingWriter<'a, W: Write + ?Sized>(pub &'a mut W);

impl<W: Write + ?Sized> Write for EncodingWriter<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // `report::Encoded` is the protocol's own encoder.
        write!(self.0, "{}", report::Encoded(s))
    }
}

/// Writes one record line to `out`.
pub fn write_record<W: Write + ?Sized>(
    out: &mut W,
    kind: &str,
    fields: &[(&str, &dyn fmt::Display)],
) -> fmt::Result {
    write!(out, "{} {}", report::PREFIX, kind)?;
    for (key, value) in fields {
        write!(out, " {key}=")?;
        let mut enc = EncodingWriter(out);
        write!(enc, "{value}")?;
        // An empty value would read as `key=` — valid, but make it explicit.
    }
    out.write_char('\n')
}

/// Prints one record line on the serial console, atomically with respect to
/// other console output.
pub fn emit(kind: &str, fields: &[(&str, &dyn fmt::Display)]) {
    crate::serial::with(|c| {
        let _ = write_record(c, kind, fields);
    });
}

/// Prints a structured `@@` record: a kind, then `key = value` pairs whose
/// values are anything `Display` (including `format_args!`).
///
/// ```ignore
/// bootkit::record!("selftest", name = "mmu.remap", result = "pass",
///                  detail = format_args!("read {:#x}", v));
/// ```
#[macro_export]
macro_rules! record {
    ($kind:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::record::emit(
            $kind,
            &[$( (stringify!($key), &$value as &dyn ::core::fmt::Display) ),*],
        )
    };
}
