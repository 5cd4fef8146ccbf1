//! Recorded CPUID dumps in the raw text format of the `cpuid` tool.
//!
//! `cpuid -r` (Todd Allen's `cpuid` utility, packaged by Debian as `cpuid`)
//! prints one line per (leaf, subleaf), grouped under one header per CPU:
//!
//! ```text
//! CPU 0:
//!    0x00000000 0x00: eax=0x00000010 ebx=0x68747541 ecx=0x444d4163 edx=0x69746e65
//!    0x40000000 0x00: eax=0x40000001 ebx=0x4b4d564b ecx=0x564b4d56 edx=0x0000004d
//! CPU 1:
//!    ...
//! ```
//!
//! With `-1` the header is just `CPU:`. [`Dump::parse`] accepts that text,
//! keeps only the first CPU's block and answers CPUID queries from it, so a
//! dump can stand in for the real instruction wherever a [`CpuidSource`] is
//! expected.
//!
//! The parser allocates nothing: a [`Dump`] holds the borrowed text of the
//! first CPU's block and looks leaves up by scanning it on every query. A
//! probe issues a few hundred queries against a dump of about two hundred
//! lines, which is cheap enough for tests and host tools.
//!
//! Rules:
//! - blank lines and lines starting with `#` are skipped;
//! - `CPU:` or `CPU <n>:` opens a CPU block; the second header ends the
//!   first block and everything after it is ignored;
//! - a line whose first word starts with `0x` is a leaf line and must be
//!   well formed (`0xLEAF 0xSUBLEAF: eax=0x… ebx=0x… ecx=0x… edx=0x…`,
//!   the subleaf may be left out and then reads as 0); a malformed leaf line
//!   is an error, since it means the dump is damaged;
//! - any other line (tool banners, notes) is skipped;
//! - when a (leaf, subleaf) pair appears twice, the first line wins;
//! - a query for a (leaf, subleaf) pair absent from the dump reads as all
//!   zero. There is no fallback to subleaf 0: `cpuid -r` prints every
//!   subleaf it queried, so an absent pair was not recorded.

use core::fmt;

use crate::source::{CpuidResult, CpuidSource};

/// Why a dump could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpError {
    /// The first CPU block holds no leaf line at all.
    NoLeaves,
    /// A leaf line (first word starting with `0x`) is malformed.
    Malformed {
        /// 1-based line number within the whole text.
        line: usize,
    },
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DumpError::NoLeaves => f.write_str("CPUID dump has no leaf lines"),
            DumpError::Malformed { line } => {
                write!(f, "CPUID dump line {line}: malformed leaf line")
            }
        }
    }
}

impl core::error::Error for DumpError {}

/// One (leaf, subleaf) line of a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpEntry {
    /// The leaf (EAX input).
    pub leaf: u32,
    /// The subleaf (ECX input).
    pub subleaf: u32,
    /// The recorded output registers.
    pub result: CpuidResult,
}

/// A parsed `cpuid -r` dump: the first CPU's leaves, looked up lazily.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dump<'a> {
    /// The first CPU's block, every leaf line of which is known to parse.
    block: &'a str,
    /// Number of leaf lines in `block` (duplicates included).
    lines: usize,
}

impl<'a> Dump<'a> {
    /// Parses `cpuid -r` text, keeping the first CPU's block.
    ///
    /// Never panics; see the [module documentation](self) for the rules.
    pub fn parse(text: &'a str) -> Result<Dump<'a>, DumpError> {
        let mut start: Option<usize> = None;
        let mut end = text.len();
        let mut seen_header = false;
        let mut lines = 0usize;
        let mut offset = 0usize;
        for (index, raw) in text.split_inclusive('\n').enumerate() {
            let line_start = offset;
            offset += raw.len();
            let line = raw.trim();
            if is_cpu_header(line) {
                if seen_header || start.is_some() {
                    // The next CPU (or a header after headerless leaf lines)
                    // ends the first block.
                    end = line_start;
                    break;
                }
                seen_header = true;
                start = Some(offset);
                continue;
            }
            if !is_leaf_line(line) {
                continue;
            }
            if parse_leaf_line(line).is_none() {
                return Err(DumpError::Malformed { line: index + 1 });
            }
            if start.is_none() {
                // Leaf lines without any header: the block starts here.
                start = Some(line_start);
            }
            lines += 1;
        }
        if lines == 0 {
            return Err(DumpError::NoLeaves);
        }
        let start = start.unwrap_or(0).min(end);
        Ok(Dump {
            block: text.get(start..end).unwrap_or(""),
            lines,
        })
    }

    /// Number of leaf lines in the first CPU's block (duplicates included).
    pub fn len(&self) -> usize {
        self.lines
    }

    /// Whether the block holds no leaf line (never true for a parsed dump).
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The recorded leaves of the first CPU, in file order.
    pub fn entries(&self) -> impl Iterator<Item = DumpEntry> + 'a {
        self.block.lines().filter_map(|line| {
            let line = line.trim();
            if is_leaf_line(line) {
                parse_leaf_line(line)
            } else {
                None
            }
        })
    }

    /// The recorded answer for (`leaf`, `subleaf`), if the dump has it.
    pub fn get(&self, leaf: u32, subleaf: u32) -> Option<CpuidResult> {
        // Match on the inputs first; decode the registers of one line only.
        self.block.lines().find_map(|line| {
            let line = line.trim();
            if !is_leaf_line(line) {
                return None;
            }
            let (l, s, outputs) = parse_inputs(line)?;
            if l == leaf && s == subleaf {
                parse_outputs(outputs)
            } else {
                None
            }
        })
    }
}

impl CpuidSource for Dump<'_> {
    /// The recorded answer, or all zero when the pair is absent.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        self.get(leaf, subleaf).unwrap_or_default()
    }
}

/// `CPU:` or `CPU <decimal>:`.
fn is_cpu_header(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("CPU") else {
        return false;
    };
    let Some(number) = rest.strip_suffix(':') else {
        return false;
    };
    let number = number.trim();
    number.is_empty() || number.bytes().all(|b| b.is_ascii_digit())
}

/// Whether the line claims to be a leaf line (first word starts with `0x`).
fn is_leaf_line(line: &str) -> bool {
    !line.starts_with('#') && (line.starts_with("0x") || line.starts_with("0X"))
}

/// Parses `0xLEAF [0xSUB]: eax=0x… ebx=0x… ecx=0x… edx=0x…`.
fn parse_leaf_line(line: &str) -> Option<DumpEntry> {
    let (leaf, subleaf, outputs) = parse_inputs(line)?;
    Some(DumpEntry {
        leaf,
        subleaf,
        result: parse_outputs(outputs)?,
    })
}

/// Splits `0xLEAF [0xSUB]: rest` into the leaf, the subleaf and the rest.
fn parse_inputs(line: &str) -> Option<(u32, u32, &str)> {
    let (inputs, outputs) = line.split_once(':')?;
    let mut inputs = inputs.split_whitespace();
    let leaf = parse_hex(inputs.next()?)?;
    let subleaf = match inputs.next() {
        Some(word) => parse_hex(word)?,
        None => 0,
    };
    if inputs.next().is_some() {
        return None;
    }
    Some((leaf, subleaf, outputs))
}

/// Parses `eax=0x… ebx=0x… ecx=0x… edx=0x…` (any order, each exactly once).
fn parse_outputs(outputs: &str) -> Option<CpuidResult> {
    let mut regs: [Option<u32>; 4] = [None; 4];
    for word in outputs.split_whitespace() {
        let (name, value) = word.split_once('=')?;
        let slot = match name {
            "eax" | "EAX" => 0,
            "ebx" | "EBX" => 1,
            "ecx" | "ECX" => 2,
            "edx" | "EDX" => 3,
            _ => return None,
        };
        if regs[slot].is_some() {
            return None;
        }
        regs[slot] = Some(parse_hex(value)?);
    }
    Some(CpuidResult {
        eax: regs[0]?,
        ebx: regs[1]?,
        ecx: regs[2]?,
        edx: regs[3]?,
    })
}

/// `0x` followed by 1 to 8 hex digits.
fn parse_hex(word: &str) -> Option<u32> {
    let digits = word
        .strip_prefix("0x")
        .or_else(|| word.strip_prefix("0X"))?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CPUS: &str = "\
CPU 0:
   0x00000000 0x00: eax=0x00000001 ebx=0x68747541 ecx=0x444d4163 edx=0x69746e65
   0x0000000b 0x01: eax=0x00000005 ebx=0x00000002 ecx=0x00000201 edx=0x00000001
CPU 1:
   0x00000000 0x00: eax=0x0000000d ebx=0x00000000 ecx=0x00000000 edx=0x00000000
";

    #[test]
    fn first_cpu_only() {
        let d = Dump::parse(TWO_CPUS).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.cpuid(0, 0).eax, 1);
        assert_eq!(d.cpuid(0xb, 1).ecx, 0x201);
        assert_eq!(d.cpuid(0xb, 0), CpuidResult::default());
        assert_eq!(d.cpuid(0xd, 0), CpuidResult::default());
    }

    #[test]
    fn headerless_comments_and_noise() {
        let text =
            "# recorded by hand\n\ncpuid version 20230120\n0x1: eax=0x10 ebx=0x0 ecx=0x0 edx=0x1\n";
        let d = Dump::parse(text).unwrap();
        assert_eq!(d.cpuid(1, 0).eax, 0x10);
        assert_eq!(d.cpuid(1, 0).edx, 1);
    }

    #[test]
    fn headerless_then_header_ends_block() {
        let text = "0x0 0x0: eax=0x1 ebx=0 ecx=0 edx=0\nCPU 1:\n0x0 0x0: eax=0x2 ebx=0x0 ecx=0x0 edx=0x0\n";
        // `ebx=0` lacks the 0x prefix: malformed.
        assert_eq!(Dump::parse(text), Err(DumpError::Malformed { line: 1 }));
        let text = "0x0 0x0: eax=0x1 ebx=0x0 ecx=0x0 edx=0x0\nCPU 1:\n0x0 0x0: eax=0x2 ebx=0x0 ecx=0x0 edx=0x0\n";
        assert_eq!(Dump::parse(text).unwrap().cpuid(0, 0).eax, 1);
    }

    #[test]
    fn errors() {
        assert_eq!(Dump::parse(""), Err(DumpError::NoLeaves));
        assert_eq!(Dump::parse("CPU 0:\nCPU 1:\n"), Err(DumpError::NoLeaves));
        for bad in [
            "0x1 0x0: eax=0x1 ebx=0x0 ecx=0x0",
            "0x1 0x0: eax=0x1 ebx=0x0 ecx=0x0 edx=0x0 esi=0x0",
            "0x1 0x0: eax=0x1 eax=0x0 ecx=0x0 edx=0x0",
            "0x1 0x0: eax=0x123456789 ebx=0x0 ecx=0x0 edx=0x0",
            "0x1 0x0 0x0: eax=0x1 ebx=0x0 ecx=0x0 edx=0x0",
            "0xg 0x0: eax=0x1 ebx=0x0 ecx=0x0 edx=0x0",
            "0x1 0x0 eax=0x1 ebx=0x0 ecx=0x0 edx=0x0",
            "0x1 0x0: eax=0x+1 ebx=0x0 ecx=0x0 edx=0x0",
        ] {
            let text_line = bad;
            assert_eq!(
                Dump::parse(text_line),
                Err(DumpError::Malformed { line: 1 }),
                "{bad}"
            );
        }
    }

    #[test]
    fn duplicate_first_wins() {
        let text =
            "0x1 0x0: eax=0x1 ebx=0x0 ecx=0x0 edx=0x0\n0x1 0x0: eax=0x2 ebx=0x0 ecx=0x0 edx=0x0\n";
        assert_eq!(Dump::parse(text).unwrap().cpuid(1, 0).eax, 1);
    }

    #[test]
    fn crlf_lines() {
        let text = "CPU:\r\n   0x00000001 0x00: eax=0x00000007 ebx=0x0 ecx=0x0 edx=0x0\r\n";
        assert_eq!(Dump::parse(text).unwrap().cpuid(1, 0).eax, 7);
    }
}
