//! The microvisor's command line (`-append`):
//! `persona=<name> [break=<step>] [watchdog_ms=N] [guest_ram_mib=N] [pit=on|off] [vcpus=N] [slice_us=N] [corrupt=<region>] -- <guest command line>`.

/// Default watchdog limit: no progress for this long ends the run.
pub const DEFAULT_WATCHDOG_MS: u64 = 10_000;
/// Default guest RAM.
pub const DEFAULT_GUEST_RAM_MIB: u64 = 128;
/// Most vCPUs of one guest (`vcpus=`).
pub const MAX_VCPUS: usize = 8;
/// Default scheduler time slice in microseconds (`slice_us=`): 1 ms, the
/// tick of a HZ=1000 kernel and the virtual APIC's shortest periodic
/// timer ([`crate::vapic::MIN_PERIOD_US`]). A world switch costs about
/// 20 us under TCG, so preempting every 1 ms spends a few percent on
/// switching, while a vCPU spinning on a lock held by a preempted one
/// (or waiting for a TLB-flush acknowledgement) waits at most
/// `(vcpus - 1)` ms for it to run.
pub const DEFAULT_SLICE_US: u64 = 1000;
/// Accepted `slice_us=` range: below 100 us the microvisor's own timer
/// interrupts (QEMU fires them late by more than that under load) would
/// make the slice meaningless; above 100 ms an IPI waits visibly long.
pub const SLICE_US_RANGE: core::ops::RangeInclusive<u64> = 100..=100_000;

/// Parsed options.
#[derive(Clone, Copy, Debug)]
pub struct Config<'a> {
    /// Persona name (validated later against the registry).
    pub persona: &'a str,
    /// A persona setup step to break on purpose (`break=<step>`), for the
    /// guest backends' fallback tests; validated by the persona.
    pub break_step: Option<&'a str>,
    /// Watchdog limit in milliseconds.
    pub watchdog_ms: u64,
    /// Guest RAM in MiB (2 MiB multiple, 4..=1024).
    pub guest_ram_mib: u64,
    /// Whether the guest sees the PIT (`pit=on`, the default: QEMU's 8254
    /// and port 0x61 forwarded). With `pit=off` the guest sees a machine
    /// without one (QEMU's microVM, Xen PVH): those ports read all ones and
    /// ignore writes. The microvisor's own calibration still uses the PIT.
    pub pit: bool,
    /// vCPUs of the guest (`vcpus=N`, 1..=[`MAX_VCPUS`], default 1), all
    /// run on the one physical CPU by the round-robin scheduler.
    pub vcpus: usize,
    /// The scheduler's time slice in microseconds (`slice_us=N`, in
    /// [`SLICE_US_RANGE`], default [`DEFAULT_SLICE_US`]).
    pub slice_us: u64,
    /// Debug switch `corrupt=<region>`: the microvisor itself changes one
    /// word of that protected region (`npt`, `guard-above`) after taking
    /// its integrity baseline, so the end-of-run check must report it
    /// (proves the check can fail; docs/hostile-guests.md).
    pub corrupt: Option<&'a str>,
    /// Everything after ` -- `, handed to the guest verbatim.
    pub guest_cmdline: &'a str,
}

/// A command-line error, for the report.
#[derive(Clone, Copy, Debug)]
pub struct Error<'a> {
    /// What is wrong.
    pub what: &'static str,
    /// The offending token.
    pub token: &'a str,
}

/// Splits off the guest command line and parses the microvisor's options.
pub fn parse(cmdline: &str) -> Result<Config<'_>, Error<'_>> {
    let (own, guest) = split(cmdline);
    let mut cfg = Config {
        persona: "none",
        break_step: None,
        watchdog_ms: DEFAULT_WATCHDOG_MS,
        guest_ram_mib: DEFAULT_GUEST_RAM_MIB,
        pit: true,
        vcpus: 1,
        slice_us: DEFAULT_SLICE_US,
        corrupt: None,
        guest_cmdline: guest,
    };
    for token in own.split_ascii_whitespace() {
        let (key, value) = token.split_once('=').unwrap_or((token, ""));
        let number = || {
            value.parse::<u64>().map_err(|_| Error {
                what: "expected a decimal number",
                token,
            })
        };
        match key {
            "persona" => cfg.persona = value,
            "break" => cfg.break_step = Some(value),
            "corrupt" => cfg.corrupt = Some(value),
            "watchdog_ms" => cfg.watchdog_ms = number()?.max(1),
            "pit" => {
                cfg.pit = match value {
                    "on" => true,
                    "off" => false,
                    _ => {
                        return Err(Error {
                            what: "pit must be on or off",
                            token,
                        })
                    }
                }
            }
            "vcpus" => {
                let n = number()?;
                if !(1..=MAX_VCPUS as u64).contains(&n) {
                    return Err(Error {
                        what: "vcpus must be 1..=8",
                        token,
                    });
                }
                cfg.vcpus = n as usize;
            }
            "slice_us" => {
                let n = number()?;
                if !SLICE_US_RANGE.contains(&n) {
                    return Err(Error {
                        what: "slice_us must be 100..=100000",
                        token,
                    });
                }
                cfg.slice_us = n;
            }
            "guest_ram_mib" => {
                let n = number()?;
                if !(4..=1024).contains(&n) || n % 2 != 0 {
                    return Err(Error {
                        what: "guest_ram_mib must be even and 4..=1024",
                        token,
                    });
                }
                cfg.guest_ram_mib = n;
            }
            _ => {
                return Err(Error {
                    what: "unknown option",
                    token,
                })
            }
        }
    }
    Ok(cfg)
}

/// `"a b -- c d"` → `("a b", "c d")`; no `--` means no guest command line.
fn split(cmdline: &str) -> (&str, &str) {
    let c = cmdline.trim();
    if let Some(rest) = c.strip_prefix("--") {
        if rest.is_empty() || rest.starts_with(' ') {
            return ("", rest.trim_start());
        }
    }
    if let Some(i) = c.find(" -- ") {
        return (&c[..i], c[i + 4..].trim_start());
    }
    if let Some(own) = c.strip_suffix(" --") {
        return (own, "");
    }
    (c, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_guest_command_line() {
        let c = parse("persona=bare watchdog_ms=500 -- fault=triple a=b -- c").unwrap();
        assert_eq!(c.persona, "bare");
        assert_eq!(c.watchdog_ms, 500);
        assert_eq!(c.guest_cmdline, "fault=triple a=b -- c");
        assert_eq!(c.guest_ram_mib, DEFAULT_GUEST_RAM_MIB);
    }

    #[test]
    fn defaults_and_edge_cases() {
        let c = parse("").unwrap();
        assert_eq!((c.persona, c.guest_cmdline), ("none", ""));
        assert_eq!(c.watchdog_ms, DEFAULT_WATCHDOG_MS);
        assert_eq!(parse("-- x").unwrap().guest_cmdline, "x");
        assert_eq!(parse("persona=bare --").unwrap().guest_cmdline, "");
        assert_eq!(parse("persona=bare -- ").unwrap().persona, "bare");
        assert_eq!(parse("guest_ram_mib=64").unwrap().guest_ram_mib, 64);
        assert!(parse("").unwrap().pit);
        assert!(!parse("persona=xen pit=off --").unwrap().pit);
        assert!(parse("pit=on").unwrap().pit);
        assert_eq!(parse("corrupt=npt --").unwrap().corrupt, Some("npt"));
        assert_eq!(parse("").unwrap().corrupt, None);
        assert_eq!(parse("").unwrap().vcpus, 1);
        assert_eq!(parse("").unwrap().slice_us, DEFAULT_SLICE_US);
        let c = parse("vcpus=4 slice_us=2000 -- x").unwrap();
        assert_eq!((c.vcpus, c.slice_us, c.guest_cmdline), (4, 2000, "x"));
        assert_eq!(parse("vcpus=8").unwrap().vcpus, 8);
    }

    #[test]
    fn vcpus_and_slice_errors() {
        for bad in ["vcpus=0", "vcpus=9", "vcpus=", "vcpus=two", "vcpus=-1"] {
            assert_eq!(parse(bad).unwrap_err().token, bad);
        }
        for bad in ["slice_us=99", "slice_us=100001", "slice_us=x"] {
            assert_eq!(parse(bad).unwrap_err().token, bad);
        }
        assert_eq!(parse("vcpus=9").unwrap_err().what, "vcpus must be 1..=8");
    }

    #[test]
    fn errors() {
        assert_eq!(parse("frobnicate=1").unwrap_err().token, "frobnicate=1");
        assert!(parse("watchdog_ms=ten").is_err());
        assert!(parse("guest_ram_mib=7").is_err());
        assert!(parse("guest_ram_mib=4096").is_err());
        assert_eq!(parse("pit=no").unwrap_err().token, "pit=no");
    }
}
