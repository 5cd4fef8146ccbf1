//! What the microvisor prints: human `[mv] ...` lines and `@@ mv.*`
//! records (`pvops_abi::report`), only at start, at the end and on faults,
//! each on its own line.

use crate::counters::Counters;
use crate::outcome::{Detail, End};
use crate::vcpu::exits_reason_name;
use bootkit::record;
use pvops_abi::exit::ExitCode;
use pvops_abi::report::Encoded;

/// Prints a human line.
#[macro_export]
macro_rules! mvlog {
    ($($arg:tt)*) => { $crate::report::log(format_args!($($arg)*)) };
}

/// [`mvlog!`]'s body: `[mv] ...` on the serial console. Host builds (unit
/// tests, the fuzz driver) have no COM1, and the console's CLI and port
/// I/O fault at CPL 3, so a handler that logs (e.g. Hyper-V's crash MSR)
/// would kill the test process: there the line is dropped.
pub fn log(args: core::fmt::Arguments<'_>) {
    #[cfg(target_os = "none")]
    bootkit::println!("[mv] {}", args);
    #[cfg(not(target_os = "none"))]
    let _ = args;
}

/// `@@ mv.start` (with `vcpus=` when there is more than one).
pub fn start(persona: &str, guest_ram_mib: u64, vcpus: usize) {
    if vcpus > 1 {
        record!(
            "mv.start",
            persona = persona,
            guest_ram_mib = guest_ram_mib,
            vcpus = vcpus
        );
    } else {
        record!("mv.start", persona = persona, guest_ram_mib = guest_ram_mib);
    }
}

/// The final report: the fault (if any, naming the vCPU when there are
/// several), every counter, the vCPUs and IPIs (`vcpus`), `mv.end`.
/// `mid_line`: the guest's output did not end with a newline.
pub fn finish(
    end: &End,
    counters: Option<&Counters>,
    persona: Option<&dyn crate::personas::Persona>,
    mid_line: bool,
    vcpus: Option<&crate::vcpu::Vcpu>,
) {
    if mid_line {
        bootkit::println!();
    }
    let (outcome, code) = match end {
        End::GuestExit { value, .. } => ("guest-exit", *value),
        End::Fault { kind, detail } => {
            crate::mvlog!("fault: {}: {}", kind.name(), detail);
            match vcpus.and_then(|v| v.fault_vcpu()) {
                Some(i) => bootkit::println!(
                    "@@ mv.fault kind={} vcpu={} detail={}",
                    kind.name(),
                    i,
                    Encoded(detail.as_str())
                ),
                None => bootkit::println!(
                    "@@ mv.fault kind={} detail={}",
                    kind.name(),
                    Encoded(detail.as_str())
                ),
            }
            (kind.exit_code().name(), kind.exit_code() as u32)
        }
    };
    if let Some(c) = counters {
        print_counters(c);
    }
    if let Some(v) = vcpus {
        print_vcpus(v);
    }
    if let Some(p) = persona {
        p.report();
    }
    if let End::GuestExit { value, .. } = end {
        crate::mvlog!("guest wrote {value:#x} to the debug-exit port");
    }
    record!(
        "mv.end",
        outcome = outcome,
        code = format_args!("{code:#x}")
    );
}

fn print_counters(c: &Counters) {
    for e in c.reasons.entries() {
        record!("mv.exit", reason = exits_reason_name(e.key), count = e.a);
    }
    for e in c.msrs.entries() {
        record!(
            "mv.msr",
            msr = format_args!("{:#x}", e.key),
            reads = e.a,
            writes = e.b
        );
    }
    for e in c.ports.entries() {
        record!("mv.port", port = format_args!("{:#x}", e.key), count = e.a);
    }
    for e in c.hypercalls.entries() {
        record!(
            "mv.hypercall",
            code = format_args!("{:#x}", e.key),
            count = e.a
        );
    }
    let dropped = c.reasons.overflow + c.msrs.overflow + c.ports.overflow + c.hypercalls.overflow;
    if dropped != 0 {
        crate::mvlog!("{dropped} counts did not fit the per-key tables");
    }
    record!("mv.total", count = c.total);
}

/// `@@ mv.ipi` per kind of dropped IPI; with more than one vCPU,
/// `@@ mv.sched` and one `@@ mv.vcpu` per vCPU (its exits by class, its
/// state at the end and its stolen time).
fn print_vcpus(v: &crate::vcpu::Vcpu) {
    let log = v.ipis();
    for &(kind, dest, result, count) in log.entries() {
        record!(
            "mv.ipi",
            kind = kind,
            dest = dest,
            result = result,
            count = count
        );
    }
    if log.overflow != 0 {
        crate::mvlog!("{} dropped IPIs did not fit the table", log.overflow);
    }
    let n = v.vcpus();
    if n <= 1 {
        return;
    }
    let s = v.sched();
    record!(
        "mv.sched",
        vcpus = n,
        slice_us = v.slice_us(),
        switches = s.switches,
        preemptions = s.preemptions,
        ipis_fixed = log.fixed,
        inits = log.init,
        startups = log.startup
    );
    for i in 0..n {
        let c = &v.accounting().vcpus[i].lifetime;
        let e = c.snapshot();
        record!(
            "mv.vcpu",
            index = i,
            state = s.state(i).name(),
            total = e.total,
            cpuid = e.cpuid,
            msr = e.msr,
            io = e.io,
            hlt = e.hlt,
            vmmcall = e.vmmcall,
            intr = e.intr,
            vintr = e.vintr,
            npf = e.npf,
            other = e.other,
            stolen_ns = v.stolen_ns(i)
        );
    }
}

/// The end-of-run integrity check ([`crate::integrity`]): prints
/// `@@ mv.integrity regions=N unchanged=true|false changed=<names|none>`
/// and, when anything changed, turns the end of the run into an
/// [`crate::outcome::FaultKind::Integrity`] fault naming what changed and
/// how the run had ended.
pub fn integrity(vcpu: &crate::vcpu::Vcpu, end: End) -> End {
    use core::fmt::Write;
    let check = vcpu.integrity();
    let mut changed = crate::fmtbuf::FmtBuf::<120>::new();
    for name in vcpu.protected().changed_names(check.memory) {
        let sep = if changed.as_str().is_empty() { "" } else { "," };
        let _ = write!(changed, "{sep}{name}");
    }
    if !check.intercepts_unchanged {
        let sep = if changed.as_str().is_empty() { "" } else { "," };
        let _ = write!(changed, "{sep}vmcb-intercepts");
    }
    let names = if check.unchanged() {
        "none"
    } else {
        changed.as_str()
    };
    let mut list = crate::fmtbuf::FmtBuf::<200>::new();
    for r in vcpu.protected().regions() {
        let _ = write!(list, " {}({:#x}+{:#x})", r.name, r.start, r.len);
    }
    crate::mvlog!(
        "integrity: {} region(s) and the VMCB intercepts checked:{}",
        check.memory.regions,
        list
    );
    record!(
        "mv.integrity",
        regions = check.memory.regions,
        unchanged = check.unchanged(),
        changed = names
    );
    if check.unchanged() {
        return end;
    }
    let was = match &end {
        End::GuestExit { value, .. } => Detail::from_fmt(format_args!("guest exit {value:#x}")),
        End::Fault { kind, .. } => Detail::from_fmt(format_args!("fault {}", kind.name())),
    };
    End::fault(
        crate::outcome::FaultKind::Integrity,
        format_args!(
            "protected memory changed during the run: {}; the run had ended with {}",
            names, was
        ),
    )
}

/// Ends QEMU: for a guest exit, the guest's own value on the debug-exit
/// port (same width); otherwise the fault's code.
pub fn exit(end: &End) -> ! {
    match *end {
        End::GuestExit { value, size } => {
            crate::hw::port::write(pvops_abi::exit::DEBUG_EXIT_PORT, size, value);
            bootkit::cpu::halt_forever()
        }
        End::Fault { kind, .. } => bootkit::exit::exit(kind.exit_code()),
    }
}

/// Reports a microvisor panic and exits with `MicrovisorError`.
pub fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write;
    bootkit::serial::with_for_panic(|c| {
        let _ = writeln!(c, "\n[mv] PANIC: {info}");
        let mut msg = crate::fmtbuf::FmtBuf::<240>::new();
        let _ = write!(msg, "{}", info.message());
        if let Some(l) = info.location() {
            let _ = write!(msg, " at {}:{}", l.file(), l.line());
        }
        let _ = writeln!(
            c,
            "@@ mv.fault kind=microvisor-panic detail={}",
            Encoded(msg.as_str())
        );
        let code = ExitCode::MicrovisorError;
        let _ = writeln!(
            c,
            "@@ mv.end outcome={} code={:#x}",
            code.name(),
            code as u32
        );
    });
    bootkit::exit::exit(ExitCode::MicrovisorError)
}
