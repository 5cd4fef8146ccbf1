//! `cargo run`: build the pvops kernels, boot the scenarios, print a table.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use qemu_runner::{report, scenario, RunOptions, ScenarioReport, Status};

/// Builds the pvops kernels and boots them in QEMU scenarios.
///
/// With no SCENARIO, boots every scenario of the default set and prints a
/// table; scenarios the host cannot run (e.g. kvm without /dev/kvm) are
/// listed as skipped. Exits non-zero when a scenario fails.
#[derive(Debug, Parser)]
#[command(name = "qemu-runner", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Scenarios to boot (names, or a prefix ending in `*` such as
    /// `microvisor:*`); default: all of the default set.
    #[arg(value_name = "SCENARIO")]
    pub scenarios: Vec<String>,
    /// Print one JSON object per scenario per line instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Show the guest's serial console (on stderr) as it runs.
    #[arg(long)]
    pub serial: bool,
    /// Per-scenario timeout in seconds (default: the scenario's own).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Subcommands.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands besides booting scenarios.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode a CPUID dump (raw `cpuid -r` format) as the guest's probe
    /// would, and show which backend it would select.
    ProbeDump {
        /// The dump file.
        file: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Boot the paired persona scenarios (a backend scenario and its
    /// `pvops=native` pair) with the example kernel's `bench` switch, one
    /// at a time, and print per workload cycles and exits per iteration of
    /// the backend vs native, with ratios against native.
    Bench {
        /// Backend scenarios (names or `prefix*`); each brings its native
        /// pair. Default: every scenario that has a native pair.
        #[arg(value_name = "SCENARIO")]
        scenarios: Vec<String>,
        /// Print one JSON object per scenario (with `bench` and `compare`).
        #[arg(long)]
        json: bool,
        /// Show the guest's serial console (on stderr) as it runs.
        #[arg(long)]
        serial: bool,
    },
    /// Boot the example kernel with its report card (`card`) on each
    /// SCENARIO and on its `pvops=native` pair, one boot at a time, and
    /// print per table entry: owner, dispatch mechanism, TSC cycles and
    /// exits per call (microvisor, KVM and nested KVM count exits), beside
    /// the native run's. Scenarios this host cannot run are skipped with
    /// the reason.
    ReportCard {
        /// Scenarios (names or `prefix*`). Default: kvm, each microvisor
        /// persona (vmware, xen, hyperv, kvm) and nested:kvm.
        #[arg(value_name = "SCENARIO")]
        scenarios: Vec<String>,
        /// Print one JSON object per card instead of the tables.
        #[arg(long)]
        json: bool,
        /// Show the guest's serial console (on stderr) as it runs.
        #[arg(long)]
        serial: bool,
        /// Calls per entry (1 to 1,000,000; default: the kernel's 1,000).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        iterations: Option<u32>,
    },
    /// Boot SCENARIO with `dump=cpuid` and write the guest's CPUID, in
    /// `cpuid -r` format, to FILE.
    RecordCpuid {
        /// The scenario to boot.
        scenario: String,
        /// Where to write the dump.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::ProbeDump { ref file, json }) => probe_dump(file, json),
        Some(Command::RecordCpuid {
            ref scenario,
            ref file,
        }) => record_cpuid(scenario, file),
        Some(Command::Bench {
            ref scenarios,
            json,
            serial,
        }) => bench(scenarios, json, serial, cli.timeout),
        Some(Command::ReportCard {
            ref scenarios,
            json,
            serial,
            iterations,
        }) => report_card(scenarios, json, serial, iterations, cli.timeout),
        None if cli.list => {
            for s in scenario::ALL.iter() {
                println!(
                    "{:<40} {}{}",
                    s.name,
                    s.description,
                    if s.in_default_set {
                        ""
                    } else {
                        " (not in the default set)"
                    }
                );
            }
            ExitCode::SUCCESS
        }
        None => boot(&cli),
    }
}

fn probe_dump(file: &PathBuf, json: bool) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match qemu_runner::probe_dump::decode(&text) {
        Ok(info) => {
            if json {
                println!("{}", info.to_json());
            } else {
                print!("{}", info.to_text());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn record_cpuid(name: &str, file: &PathBuf) -> ExitCode {
    let Some(s) = scenario::find(name) else {
        eprintln!(
            "error: {}",
            scenario::select(&[name.to_string()]).unwrap_err()
        );
        return ExitCode::FAILURE;
    };
    eprintln!("booting {name} with dump=cpuid ...");
    match qemu_runner::record_cpuid(s).and_then(|text| {
        std::fs::write(file, &text)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))
            .map(|()| {
                text.lines()
                    .filter(|l| l.trim_start().starts_with("0x"))
                    .count()
            })
    }) {
        Ok(n) => {
            eprintln!("wrote {n} leaves to {}", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `selected` plus the native pair of every selected scenario that has
/// one (right after it), so each comparison has both runs.
fn with_pairs(selected: Vec<&'static scenario::Scenario>) -> Vec<&'static scenario::Scenario> {
    let mut out: Vec<&'static scenario::Scenario> = Vec::new();
    for s in selected {
        if !out.iter().any(|o| o.name == s.name) {
            out.push(s);
        }
        if let Some(pair) = s.native_pair.and_then(scenario::find) {
            if !out.iter().any(|o| o.name == pair.name) {
                out.push(pair);
            }
        }
    }
    out
}

/// Adds the failures of every pair whose both runs passed on their own to
/// the backend scenario's report.
fn judge_pairs(reports: &mut [ScenarioReport]) {
    let extra: Vec<(usize, Vec<String>)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let native = report::pair_of(r, reports)?;
            (r.raw.is_some() && native.raw.is_some())
                .then(|| (i, qemu_runner::verdict::judge_pair(r, native)))
        })
        .collect();
    for (i, f) in extra {
        reports[i].failures.extend(f);
    }
}

/// `selected` with its native pairs; on an unknown name, the error and
/// exit code 2.
fn selection(
    selected: Result<Vec<&'static scenario::Scenario>, String>,
) -> Result<Vec<&'static scenario::Scenario>, ExitCode> {
    selected.map(with_pairs).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn boot(cli: &Cli) -> ExitCode {
    let selected = match selection(scenario::select(&cli.scenarios)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let opts = RunOptions {
        stream_serial: cli.serial,
        timeout: cli.timeout.map(Duration::from_secs),
        extra_guest_cmdline: String::new(),
    };
    // With --serial, one at a time so the console stays readable;
    // otherwise in parallel (the runner allows one QEMU per CPU).
    run_and_report(&selected, &opts, !cli.serial, cli.json)
}

/// Finds QEMU, runs `selected`, judges the pairs and prints the JSON lines
/// or the tables (with the benchmark table when `opts` asks for `bench`).
fn run_and_report(
    selected: &[&'static scenario::Scenario],
    opts: &RunOptions,
    parallel: bool,
    json: bool,
) -> ExitCode {
    match qemu_runner::qemu() {
        Ok(q) => eprintln!("using {} ({})", q.path.display(), q.version),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut reports = run_all(selected, opts, parallel);
    judge_pairs(&mut reports);
    if json {
        print_json(&reports);
    } else {
        print!("{}", report::table(&reports));
        print!("{}", report::compare_table(&reports));
        print!("{}", qemu_runner::smp_bench::table(&reports));
        if opts.extra_guest_cmdline == "bench" {
            print!("{}", report::bench_table(&reports));
            print!("{}", qemu_runner::dispatch::bench_table(&reports));
        }
    }
    exit_code(&reports)
}

fn exit_code(reports: &[ScenarioReport]) -> ExitCode {
    if reports.iter().any(|r| r.status() == Status::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_json(reports: &[ScenarioReport]) {
    let mut out = std::io::stdout().lock();
    for j in report::to_json_all(reports) {
        let _ = writeln!(out, "{j}");
    }
}

/// Default timeout of one `bench` boot (`--timeout` overrides it).
const BENCH_TIMEOUT_SECS: u64 = 900;

fn bench(names: &[String], json: bool, serial: bool, timeout: Option<u64>) -> ExitCode {
    let selected = if names.is_empty() {
        Ok(scenario::ALL
            .iter()
            .filter(|s| s.native_pair.is_some())
            .collect())
    } else {
        scenario::select(names)
    };
    let selected = match selection(selected) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if !selected.iter().any(|s| s.native_pair.is_some()) {
        eprintln!("error: none of these scenarios has a native pair to compare with");
        return ExitCode::from(2);
    }
    // The dispatch benchmark makes 3 x 100,000 calls per operation; where
    // each traps (a software KVM) that alone takes a minute or more.
    let opts = RunOptions {
        stream_serial: serial,
        timeout: Some(Duration::from_secs(timeout.unwrap_or(BENCH_TIMEOUT_SECS))),
        extra_guest_cmdline: "bench".to_string(),
    };
    // One at a time: a second QEMU on the same CPUs would distort cycles.
    run_and_report(&selected, &opts, false, json)
}

/// The report card's default scenarios (those this host cannot run are
/// skipped with the reason).
const CARD_DEFAULT: [&str; 6] = [
    "kvm",
    "microvisor:vmware",
    "microvisor:xen",
    "microvisor:hyperv",
    "microvisor:kvm",
    "nested:kvm",
];

fn report_card(
    names: &[String],
    json: bool,
    serial: bool,
    iterations: Option<u32>,
    timeout: Option<u64>,
) -> ExitCode {
    let names: Vec<String> = if names.is_empty() {
        CARD_DEFAULT.iter().map(|s| s.to_string()).collect()
    } else {
        names.to_vec()
    };
    let selected = match scenario::select(&names) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match qemu_runner::qemu() {
        Ok(q) => eprintln!("using {} ({})", q.path.display(), q.version),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let card_word = iterations.map_or("card".to_string(), |n| format!("card={n}"));
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for s in selected {
        if let Some(why) = qemu_runner::unmet_requirement(s) {
            eprintln!("SKIP {}: {why}", s.name);
            continue;
        }
        // The native run: the scenario's own pair, else the same machine
        // with `pvops=native` (the last `pvops=` wins).
        let (native, native_extra) = match s.native_pair.and_then(scenario::find) {
            Some(pair) => (pair, card_word.clone()),
            None => (s, format!("{card_word} pvops=native")),
        };
        let mut cards = Vec::new();
        for (sc, extra) in [(s, card_word.clone()), (native, native_extra)] {
            let opts = RunOptions {
                stream_serial: serial,
                timeout: timeout.map(Duration::from_secs),
                extra_guest_cmdline: extra.clone(),
            };
            eprintln!("booting {} with `{extra}` ...", sc.name);
            let r = qemu_runner::run_scenario(sc, &opts);
            if let Some(why) = &r.skipped {
                eprintln!("SKIP {}: {why}", sc.name);
                cards.push(None);
                continue;
            }
            for f in &r.failures {
                eprintln!("  note: {}: {f}", sc.name);
            }
            let label = if sc.name == s.name && extra.contains("pvops=native") {
                format!("{} pvops=native", sc.name)
            } else {
                sc.name.to_string()
            };
            match qemu_runner::card::Card::from_boot(&label, &r.result) {
                Ok(c) => cards.push(Some(c)),
                Err(e) => {
                    eprintln!("error: {e}");
                    failed = true;
                    cards.push(None);
                }
            }
        }
        let native = cards.pop().flatten();
        let Some(Some(backend)) = cards.pop() else {
            continue;
        };
        if json {
            let _ = writeln!(
                out,
                "{}",
                qemu_runner::card::to_json(&backend, native.as_ref())
            );
        } else {
            let _ = write!(
                out,
                "{}",
                qemu_runner::card::table(&backend, native.as_ref())
            );
        }
        let _ = out.flush();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_all(
    selected: &[&'static scenario::Scenario],
    opts: &RunOptions,
    parallel: bool,
) -> Vec<ScenarioReport> {
    if !parallel {
        selected.iter().map(|s| run_one(s, opts)).collect()
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = selected
                .iter()
                .map(|s| scope.spawn(|| run_one(s, opts)))
                .collect();
            handles
                .into_iter()
                .zip(selected)
                .map(|(h, s)| {
                    h.join().unwrap_or_else(|_| {
                        let mut r = ScenarioReport::skipped(s, String::new());
                        r.skipped = None;
                        r.failures = vec!["runner thread panicked".to_string()];
                        r
                    })
                })
                .collect()
        })
    }
}

fn run_one(s: &'static scenario::Scenario, opts: &RunOptions) -> ScenarioReport {
    eprintln!("booting {} ...", s.name);
    let r = qemu_runner::run_scenario(s, opts);
    let took = r.raw.as_ref().map_or(String::new(), |raw| {
        format!(" in {:.1} s", raw.duration.as_secs_f64())
    });
    match r.status() {
        Status::Skip => eprintln!(
            "{}: skipped: {}",
            s.name,
            r.skipped.as_deref().unwrap_or("")
        ),
        st => eprintln!("{}: {}{took}", s.name, st.name()),
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parsing() {
        let c = Cli::try_parse_from(["qemu-runner"]).unwrap();
        assert!(c.scenarios.is_empty() && c.command.is_none() && !c.json);
        let c = Cli::try_parse_from(["qemu-runner", "tcg", "microvisor:*", "--json", "--serial"])
            .unwrap();
        assert_eq!(c.scenarios, ["tcg", "microvisor:*"]);
        assert!(c.json && c.serial);
        let c = Cli::try_parse_from(["qemu-runner", "probe-dump", "d.txt", "--json"]).unwrap();
        match c.command {
            Some(Command::ProbeDump { file, json }) => {
                assert_eq!(file, PathBuf::from("d.txt"));
                assert!(json);
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from(["qemu-runner", "record-cpuid", "kvm", "out.txt"]).unwrap();
        assert!(
            matches!(c.command, Some(Command::RecordCpuid { ref scenario, .. }) if scenario == "kvm")
        );
        assert!(Cli::try_parse_from(["qemu-runner", "probe-dump"]).is_err());
        assert!(Cli::try_parse_from(["qemu-runner", "--bogus"]).is_err());
        let c = Cli::try_parse_from(["qemu-runner", "--timeout", "5", "kvm"]).unwrap();
        assert_eq!(c.timeout, Some(5));
        let c = Cli::try_parse_from(["qemu-runner", "bench", "microvisor:xen", "--json"]).unwrap();
        match c.command {
            Some(Command::Bench {
                scenarios, json, ..
            }) => {
                assert_eq!(scenarios, ["microvisor:xen"]);
                assert!(json);
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from(["qemu-runner", "bench"]).unwrap();
        assert!(
            matches!(c.command, Some(Command::Bench { ref scenarios, .. }) if scenarios.is_empty())
        );
    }

    #[test]
    fn pairs_are_added_once() {
        let s = scenario::select(&["microvisor:xen".into(), "tcg".into()]).unwrap();
        let names: Vec<&str> = with_pairs(s).iter().map(|s| s.name).collect();
        assert_eq!(names, ["microvisor:xen", "microvisor:xen/native", "tcg"]);
        let s = scenario::select(&["microvisor:xen*".into()]).unwrap();
        let names: Vec<&str> = with_pairs(s).iter().map(|s| s.name).collect();
        assert_eq!(
            names
                .iter()
                .filter(|n| **n == "microvisor:xen/native")
                .count(),
            1
        );
    }

    #[test]
    fn report_card_parsing() {
        let c = Cli::try_parse_from(["qemu-runner", "report-card"]).unwrap();
        match c.command {
            Some(Command::ReportCard {
                scenarios,
                json,
                serial,
                iterations,
            }) => {
                assert!(scenarios.is_empty() && !json && !serial);
                assert_eq!(iterations, None);
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from([
            "qemu-runner",
            "report-card",
            "kvm",
            "microvisor:*",
            "--json",
            "--iterations",
            "500",
        ])
        .unwrap();
        match c.command {
            Some(Command::ReportCard {
                scenarios,
                json,
                iterations,
                ..
            }) => {
                assert_eq!(scenarios, ["kvm", "microvisor:*"]);
                assert!(json);
                assert_eq!(iterations, Some(500));
            }
            other => panic!("{other:?}"),
        }
        for bad in ["0", "1000001", "many"] {
            assert!(
                Cli::try_parse_from(["qemu-runner", "report-card", "--iterations", bad]).is_err(),
                "{bad}"
            );
        }
        // Every default scenario exists.
        for name in CARD_DEFAULT {
            assert!(scenario::find(name).is_some(), "{name}");
        }
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
