//! A fixed-size text buffer (the kernel has no allocator).

use core::fmt;

/// Up to `N` bytes of text; longer writes are truncated with "...".
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> Text<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        Text {
            buf: [0; N],
            len: 0,
            truncated: false,
        }
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 characters are ever appended.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut tmp = [0u8; 4];
            let enc = c.encode_utf8(&mut tmp).as_bytes();
            if self.len + enc.len() > N.saturating_sub(3) {
                if !self.truncated {
                    self.truncated = true;
                    let end = self.len.min(N.saturating_sub(3));
                    self.buf[end..end + 3].copy_from_slice(b"...");
                    self.len = end + 3;
                }
                return Ok(());
            }
            self.buf[self.len..self.len + enc.len()].copy_from_slice(enc);
            self.len += enc.len();
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Formats into a new [`Text`].
#[macro_export]
macro_rules! text {
    ($($arg:tt)*) => {{
        let mut t = $crate::text::Text::<256>::new();
        let _ = ::core::fmt::Write::write_fmt(&mut t, format_args!($($arg)*));
        t
    }};
}
