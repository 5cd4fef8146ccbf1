//! The structured serial-line protocol of boot tests.
//!
//! Every machine-readable line starts with [`PREFIX`], then a record kind,
//! then `key=value` fields separated by single spaces. Values are
//! percent-encoded (see [`encode_byte`]) so they never contain a space, `=`
//! or `%`. Everything else on the serial console is for humans.
//!
//! Records written by the example kernel:
//!
//! | kind | fields |
//! |---|---|
//! | `boot` | `kernel`, `cmdline` |
//! | `cpu` | `vendor`, `family`, `model`, `stepping`, `features` (comma list) |
//! | `probe` | `cpuids` (CPUIDs the probe executed: at most 16 with the hypervisor bit set), `hypervisor_bit` |
//! | `interface` | `base`, `signature`, `kind`, `max_leaf` |
//! | `hypervisor` | `name` (`none` when the hypervisor bit is clear) |
//! | `backend` | `name`, `reason` |
//! | `owner` | `entry`, `backend` |
//! | `tsc` | `khz`, `source` (`pvops::time::TscSource` names; `none`, with `khz=0`: no frequency source exists) |
//! | `selftest` | `name`, `result` (`pass`/`fail`/`unsupported`: the machine lacks what it needs), `detail` |
//! | `bench` | `name`, plus measured fields |
//! | `panic` | `message` |
//! | `done` | `passed`, `total`, `unsupported`, `verdict` (`pass`/`fail`; unsupported tests do not fail it) |
//! | `card.base` | `iterations`, `cycles`, `exits` (`-`: not counted in the guest), `hold` (`-` or the number of the `hold` before the loop): the report card's empty loop |
//! | `card` | `entry`, `owner`, `mechanism` (`inline`/`direct`/`indirect`), then `iterations`, `cycles` (all calls), `exits`, `hold` as `card.base`, or `skipped` (why the entry is not called in a loop) |
//! | `card.end` | `entries` |
//! | `hold` | `max_polls`: with `hold` on the command line, the kernel waits for a byte on COM1 before it exits (the runner reads the hypervisor's counters meanwhile) |
//!
//! Records written by the microvisor:
//!
//! | kind | fields |
//! |---|---|
//! | `mv.start` | `persona`, `guest_ram_mib` |
//! | `mv.exit` | `reason`, `count` |
//! | `mv.msr` | `msr`, `reads`, `writes` |
//! | `mv.port` | `port`, `count` |
//! | `mv.hypercall` | `code`, `count` |
//! | `mv.fault` | `kind`, `detail` |
//! | `mv.end` | `outcome`, `code` |

/// I/O port the example kernel's report card writes just before (value 1)
/// and just after (value 2) every measured loop, so that an outside counter
/// that sees each exit in order can cut them into the loops'. 0xED is
/// Linux's spare delay port (`io_delay=0xed`): no device decodes it on a PC.
pub const CARD_MARK_PORT: u16 = 0xED;

/// Marks a machine-readable line.
pub const PREFIX: &str = "@@";

/// Whether `b` can appear unescaped in a value.
pub const fn is_plain(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'=' && b != b'%'
}

/// Percent-encodes one byte into `out`, returning how many bytes were used.
pub fn encode_byte(b: u8, out: &mut [u8; 3]) -> usize {
    if is_plain(b) {
        out[0] = b;
        1
    } else {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        out[0] = b'%';
        out[1] = HEX[(b >> 4) as usize];
        out[2] = HEX[(b & 0xf) as usize];
        3
    }
}

/// Writes `value` percent-encoded into a formatter.
pub struct Encoded<'a>(pub &'a str);

impl core::fmt::Display for Encoded<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut buf = [0u8; 3];
        for b in self.0.bytes() {
            let n = encode_byte(b, &mut buf);
            // The encoder only emits ASCII.
            f.write_str(core::str::from_utf8(&buf[..n]).unwrap_or("?"))?;
        }
        Ok(())
    }
}

/// Decodes a percent-encoded value into `out`; returns `None` on a bad escape
/// or when `out` is too small.
pub fn decode_into<'a>(value: &str, out: &'a mut [u8]) -> Option<&'a [u8]> {
    let bytes = value.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < bytes.len() {
        let b = if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let s = core::str::from_utf8(hex).ok()?;
            i += 3;
            u8::from_str_radix(s, 16).ok()?
        } else {
            i += 1;
            bytes[i - 1]
        };
        *out.get_mut(n)? = b;
        n += 1;
    }
    Some(&out[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;

    #[test]
    fn encode_round_trip() {
        let s = "chose vmware: leaf 0x40000010 = 100% sure";
        let enc = format!("{}", Encoded(s));
        assert!(!enc.contains(' '));
        assert!(!enc.contains('='));
        let mut buf = [0u8; 128];
        assert_eq!(decode_into(&enc, &mut buf).unwrap(), s.as_bytes());
    }

    #[test]
    fn bad_escape_is_rejected() {
        let mut buf = [0u8; 8];
        assert!(decode_into("%G1", &mut buf).is_none());
        assert!(decode_into("%4", &mut buf).is_none());
    }
}
