//! The declarative table of boot scenarios.
//!
//! A scenario is one [`Scenario`] value in [`ALL`]: how to start QEMU, what
//! to boot, and what the run must show. The runner, the table, the JSON
//! output and the integration tests all read this table; adding a scenario
//! is adding one entry (start from [`Scenario::BASE`] and override fields).

use pvops_abi::exit::ExitCode;

/// How QEMU executes the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation (`-accel tcg`), default CPU model `max`.
    Tcg,
    /// Hardware virtualisation (`-accel kvm`), default CPU model `host`.
    Kvm,
}

impl Accel {
    /// The `-accel` value.
    pub const fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }

    /// The CPU model used when a scenario does not name one.
    pub const fn default_cpu(self) -> &'static str {
        match self {
            Accel::Tcg => "max",
            Accel::Kvm => "host",
        }
    }
}

/// What QEMU loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// The example kernel directly (`-kernel example-kernel`).
    Direct,
    /// The microvisor (`-kernel microvisor`) with the example kernel as its
    /// guest (`-initrd example-kernel`).
    Microvisor {
        /// The persona the microvisor shows the guest (`persona=<name>`).
        persona: &'static str,
        /// Extra microvisor command-line words, before ` -- `.
        args: &'static str,
    },
}

/// Something the host must offer for a scenario to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `/dev/kvm` opens read-write.
    Kvm,
    /// The host CPU has AMD SVM (for KVM-accelerated microvisor runs).
    HostSvm,
}

/// What a run must show to pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The exit code QEMU must report (through `isa-debug-exit`).
    pub outcome: ExitCode,
    /// The guest's `hypervisor name=` record, when checked.
    pub hypervisor: Option<&'static str>,
    /// The guest's `backend name=` record, when checked.
    pub backend: Option<&'static str>,
    /// Whether the guest must reach its `done` record with every self-test
    /// passed (true for a normal [`ExitCode::Pass`] run).
    pub guest_completes: bool,
    /// Self-tests that must be reported and pass (on top of "all passed").
    pub selftests: &'static [&'static str],
    /// The microvisor's `mv.fault kind=` the run must end with.
    pub fault: Option<&'static str>,
    /// MSRs the microvisor must have counted at least one access to.
    pub msrs: &'static [u32],
    /// I/O ports the microvisor must have counted at least one exit for.
    pub ports: &'static [u16],
}

impl Expect {
    /// A normal run: exit code Pass, guest completes, nothing else checked.
    pub const PASS: Expect = Expect {
        outcome: ExitCode::Pass,
        hypervisor: None,
        backend: None,
        guest_completes: true,
        selftests: &[],
        fault: None,
        msrs: &[],
        ports: &[],
    };
}

/// One boot scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Unique name, as given on the command line (`cargo run -- NAME`).
    pub name: &'static str,
    /// One line for humans.
    pub description: &'static str,
    /// QEMU accelerator.
    pub accel: Accel,
    /// `-cpu` model; `None` = the accelerator's default.
    pub cpu: Option<&'static str>,
    /// Extra QEMU arguments, appended after the standard ones.
    pub qemu_args: &'static [&'static str],
    /// What QEMU boots.
    pub boot: Boot,
    /// The example kernel's command line.
    pub guest_cmdline: &'static str,
    /// Cargo features of the example kernel (empty = its defaults).
    pub kernel_features: &'static [&'static str],
    /// Whether the example kernel is built with `--no-default-features`.
    pub no_default_features: bool,
    /// What the host needs.
    pub requires: &'static [Requirement],
    /// What the run must show.
    pub expect: Expect,
    /// Whether a plain `cargo run` (no scenario named) boots it.
    pub in_default_set: bool,
    /// Per-scenario timeout in seconds.
    pub timeout_secs: u64,
}

impl Scenario {
    /// Defaults for new entries: TCG, direct boot, expected to pass.
    pub const BASE: Scenario = Scenario {
        name: "",
        description: "",
        accel: Accel::Tcg,
        cpu: None,
        qemu_args: &[],
        boot: Boot::Direct,
        guest_cmdline: "",
        kernel_features: &[],
        no_default_features: false,
        requires: &[],
        expect: Expect::PASS,
        in_default_set: true,
        timeout_secs: 120,
    };

    /// The `-cpu` model actually used.
    pub fn cpu_model(&self) -> &'static str {
        self.cpu.unwrap_or(self.accel.default_cpu())
    }

    /// Whether the microvisor is involved.
    pub fn uses_microvisor(&self) -> bool {
        matches!(self.boot, Boot::Microvisor { .. })
    }

    /// The `-append` string: the guest command line for a direct boot, or
    /// `persona=<p> [args] -- <guest cmdline>` for the microvisor.
    /// `extra_guest` is appended to the guest's part (e.g. `dump=cpuid`).
    pub fn append(&self, extra_guest: &str) -> String {
        let guest = join_words(&[self.guest_cmdline, extra_guest]);
        match self.boot {
            Boot::Direct => guest,
            Boot::Microvisor { persona, args } => {
                let mv = join_words(&[&format!("persona={persona}"), args]);
                if guest.is_empty() {
                    format!("{mv} --")
                } else {
                    format!("{mv} -- {guest}")
                }
            }
        }
    }
}

fn join_words(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

const NATIVE_NONE: Expect = Expect {
    hypervisor: Some("none"),
    backend: Some("native"),
    ..Expect::PASS
};

/// A microvisor fault case: persona `none`, guest `fault=<case>`.
const FAULT: Scenario = Scenario {
    boot: Boot::Microvisor {
        persona: "none",
        args: "",
    },
    expect: NATIVE_NONE,
    ..Scenario::BASE
};

/// Every scenario, in report order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "tcg",
        description: "QEMU software emulation, example kernel booted directly",
        expect: Expect {
            hypervisor: Some("qemu-tcg"),
            backend: Some("native"),
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "kvm",
        description: "KVM (-cpu host), example kernel booted directly",
        accel: Accel::Kvm,
        // QEMU 7.2 aborts ("failed to set MSR 0x10a") when a nested KVM host
        // (e.g. an AMD EPYC cloud VM) reports IA32_ARCH_CAPABILITIES; the
        // guest does not need that MSR, so it is left out.
        cpu: Some("host,-arch-capabilities"),
        requires: &[Requirement::Kvm],
        expect: Expect {
            hypervisor: Some("kvm"),
            backend: Some("native"),
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:none",
        description: "microvisor under TCG, persona none (hypervisor bit clear)",
        boot: Boot::Microvisor {
            persona: "none",
            args: "",
        },
        expect: NATIVE_NONE,
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:bare",
        description: "microvisor under TCG, persona bare (hypervisor bit, no signature)",
        boot: Boot::Microvisor {
            persona: "bare",
            args: "",
        },
        expect: Expect {
            hypervisor: Some("unknown"),
            backend: Some("native"),
            ..Expect::PASS
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:fault-triple",
        description: "guest triple-faults; the microvisor reports it",
        guest_cmdline: "fault=triple",
        expect: Expect {
            outcome: ExitCode::GuestTripleFault,
            hypervisor: None,
            backend: None,
            guest_completes: false,
            fault: Some("triple-fault"),
            ..Expect::PASS
        },
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-bad-memory",
        description: "guest touches memory outside its RAM; the microvisor stops it",
        guest_cmdline: "fault=bad-memory",
        expect: Expect {
            outcome: ExitCode::GuestBadMemory,
            hypervisor: None,
            backend: None,
            guest_completes: false,
            fault: Some("bad-memory"),
            ..Expect::PASS
        },
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-unknown-hypercall",
        description: "guest makes an unknown microvisor hypercall and gets an error back",
        guest_cmdline: "fault=unknown-hypercall",
        expect: Expect {
            selftests: &["fault.unknown-hypercall"],
            ..NATIVE_NONE
        },
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-bad-hypercall-pointer",
        description: "guest passes a pointer outside its RAM to a hypercall and gets an error back",
        guest_cmdline: "fault=bad-hypercall-pointer",
        expect: Expect {
            selftests: &["fault.bad-hypercall-pointer"],
            ..NATIVE_NONE
        },
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-bad-msr",
        description: "guest reads an unknown MSR and gets #GP",
        guest_cmdline: "fault=bad-msr",
        expect: Expect {
            selftests: &["fault.bad-msr"],
            msrs: &[0x4fff_0000],
            ..NATIVE_NONE
        },
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-bad-port",
        description: "guest accesses an unknown I/O port and reads all ones",
        guest_cmdline: "fault=bad-port",
        expect: Expect {
            selftests: &["fault.bad-port"],
            ports: &[0x1234],
            ..NATIVE_NONE
        },
        ..FAULT
    },
    Scenario {
        name: "microvisor:fault-hang",
        description: "guest stops making progress; the microvisor's watchdog ends the run",
        boot: Boot::Microvisor {
            persona: "none",
            args: "watchdog_ms=3000",
        },
        guest_cmdline: "fault=hang",
        expect: Expect {
            outcome: ExitCode::GuestWatchdog,
            hypervisor: None,
            backend: None,
            guest_completes: false,
            fault: Some("watchdog"),
            ..Expect::PASS
        },
        ..FAULT
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// Resolves command-line names: exact names, or patterns ending in `*`
/// (`microvisor:*`). No names = the default set. Unknown names are
/// returned as the error, listing what exists.
pub fn select(names: &[String]) -> Result<Vec<&'static Scenario>, String> {
    if names.is_empty() {
        return Ok(ALL.iter().filter(|s| s.in_default_set).collect());
    }
    let mut out: Vec<&'static Scenario> = Vec::new();
    for name in names {
        let matched: Vec<&'static Scenario> = match name.strip_suffix('*') {
            Some(prefix) => ALL.iter().filter(|s| s.name.starts_with(prefix)).collect(),
            None => find(name).into_iter().collect(),
        };
        if matched.is_empty() {
            let known: Vec<&str> = ALL.iter().map(|s| s.name).collect();
            return Err(format!(
                "unknown scenario '{name}'; known: {}",
                known.join(", ")
            ));
        }
        for s in matched {
            if !out.iter().any(|o| o.name == s.name) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_nonempty() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(!a.name.is_empty() && !a.description.is_empty());
            assert!(
                ALL[i + 1..].iter().all(|b| b.name != a.name),
                "duplicate {}",
                a.name
            );
        }
    }

    #[test]
    fn append_strings() {
        assert_eq!(find("tcg").unwrap().append(""), "");
        assert_eq!(find("tcg").unwrap().append("dump=cpuid"), "dump=cpuid");
        assert_eq!(
            find("microvisor:bare").unwrap().append(""),
            "persona=bare --"
        );
        assert_eq!(
            find("microvisor:fault-hang").unwrap().append(""),
            "persona=none watchdog_ms=3000 -- fault=hang"
        );
        assert_eq!(
            find("microvisor:fault-bad-msr")
                .unwrap()
                .append("dump=cpuid"),
            "persona=none -- fault=bad-msr dump=cpuid"
        );
    }

    #[test]
    fn selection() {
        let default = select(&[]).unwrap();
        assert!(default.iter().any(|s| s.name == "microvisor:none"));
        let mv = select(&["microvisor:*".into(), "microvisor:bare".into()]).unwrap();
        assert!(mv.iter().all(|s| s.uses_microvisor()));
        assert_eq!(mv.iter().filter(|s| s.name == "microvisor:bare").count(), 1);
        let err = select(&["nope".into()]).unwrap_err();
        assert!(err.contains("nope") && err.contains("tcg"));
        assert!(select(&["kvm".into()]).unwrap()[0]
            .cpu_model()
            .starts_with("host"));
    }
}
