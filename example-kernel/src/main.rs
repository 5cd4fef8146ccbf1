//! Example pvops kernel.
//!
//! Boots through PVH (bootkit), sets up its own GDT/IDT and page tables,
//! enables the local APIC, initialises pvops (probe, backend selection,
//! installation, TSC calibration), runs a self-test of every operation
//! group through the table and reports, for humans and as `@@` records
//! (`pvops_abi::report`), then exits QEMU through `isa-debug-exit`.
//!
//! Command line (`-append`): `pvops=<backend>`, `dispatch=table` (keep
//! the table, see [`dispatch`]), `dump=cpuid`,
//! `fault=<kind>` (see [`faults::KINDS`]), `loglevel=<level>`, `bench`
//! (micro-benchmarks after the self-tests, see [`bench`]), `hold` (wait
//! after the last record until the runner has read the hypervisor's
//! counters, see [`hold`]), `card` / `card=<iterations>` (the report card:
//! every table entry's owner, mechanism and cost per call, see [`card`]),
//! `smpbench` / `smpbench=cross` (the SMP bench, also run by `bench`: see
//! [`smp::bench`]), `smp-ghost-apic=<id>` (see [`smp`]).
#![no_std]
#![no_main]

mod arch;
mod bench;
mod bench_dispatch;
mod card;
mod counted;
mod cpuid_dump;
mod dispatch;
mod faults;
mod hold;
mod hostile;
mod hypercall;
mod interrupts;
mod paging;
mod selftest;
mod smp;
mod text;

use bootkit::start_info::StartInfo;
use bootkit::{println, record, ExitCode};
use pvops::system::ShutdownReason;
use pvops_probe::Features;

bootkit::pvh_entry!(crate::kmain);

/// Name in the `@@ boot` record.
const KERNEL_NAME: &str = "example-kernel";

fn kmain(start_info_paddr: u64) -> ! {
    bootkit::logger::init(log::LevelFilter::Info);
    // SAFETY: the PVH loader passed this address in EBX; the frame
    // allocator never hands out the frames it and its data occupy
    // (`StartInfo::reserved`).
    let si = match unsafe { StartInfo::from_paddr(start_info_paddr) } {
        Ok(si) => si,
        Err(e) => panic!("hvm_start_info at {start_info_paddr:#x}: {e}"),
    };
    let cmdline = si.cmdline();
    if let Some(level) = si
        .cmdline_value("loglevel")
        .and_then(bootkit::logger::parse_level)
    {
        log::set_max_level(level);
    }
    println!();
    println!("pvops example kernel");
    println!("  command line: \"{cmdline}\"");
    record!("boot", kernel = KERNEL_NAME, cmdline = cmdline);

    // Descriptor tables, loaded through the (still native) pvops table.
    // SAFETY: ring 0 long mode; the loaders are LGDT/LIDT behind the table.
    unsafe {
        bootkit::gdt::init(pvops::cpu::load_gdt);
        bootkit::idt::init(pvops::cpu::load_idt);
    }
    interrupts::install_handlers();
    pvops::native::system::set_shutdown_hook(shutdown_hook);

    // Own page tables from RAM above the image.
    if si.ram().next().is_none() {
        panic!(
            "start_info (version {}) has no RAM in its memory map; cannot allocate frames",
            si.raw().version
        );
    }
    let mut frames = paging::FrameAllocator::new(&si);
    let aspace = match paging::AddressSpace::build(&mut frames) {
        Ok(a) => a,
        Err(e) => panic!("building page tables: {e:?}"),
    };
    aspace.activate();
    let (ram, used) = frames.stats();
    println!(
        "  memory: {} MiB usable below 4 GiB, page tables at {:#x} ({} KiB), image {:#x}..{:#x}, {} module(s)",
        ram >> 20,
        aspace.cr3(),
        used >> 10,
        bootkit::image::image().start,
        bootkit::image::image().end,
        si.modules().len()
    );

    let apic_mode = match interrupts::enable_apic() {
        Ok(m) => m,
        Err(e) => panic!("local APIC: {e}"),
    };
    let apic_id = pvops::native::apic::id();
    println!("  local APIC: {apic_mode:?}, id {apic_id}");

    // The CPUs to start, before init: backends gate their SMP features on
    // the count (Platform::possible_cpus).
    let topology = smp::Topology::read(si.raw().rsdp_paddr);
    smp::use_gs_index_if_needed();
    frames.set_possible_cpus(topology.possible());

    // pvops: probe, select, install, calibrate (interrupts are off).
    pvops::irq::disable();
    dispatch::allow(cmdline);
    // SAFETY: boot CPU, interrupts disabled, no other CPU running.
    let init = unsafe { pvops_backends::init(&mut frames, cmdline) };
    pvops::time::timer_setup(interrupts::TIMER_VECTOR);

    report(&init);
    // Every other CPU, one at a time, each set up through pvops.
    let ghost = si
        .cmdline_value("smp-ghost-apic")
        .and_then(|v| v.parse().ok());
    smp::bring_up(&topology, &mut frames, &aspace, ghost);

    if si.cmdline_value("dump") == Some("cpuid") {
        cpuid_dump::dump();
    }

    let mut tally = selftest::Tally::default();
    if let Some(kind) = si.cmdline_value("fault") {
        let env = hostile::Env {
            aspace: &aspace,
            ram_end: si.ram().map(|r| r.end).max().unwrap_or(0),
            apic_id,
            scratch: frames
                .alloc()
                .unwrap_or_else(|| panic!("no frame for fault={kind}")),
        };
        faults::run(kind, &env, &mut tally);
    }
    let mut ctx = selftest::Context {
        aspace: &aspace,
        frames: &mut frames,
        vendor: init.probe.vendor_string,
        apic_id,
        timer_works: false,
    };
    selftest::run_all(&mut ctx, &mut tally);
    smp::run_tests(ctx.frames, &mut tally);
    if bench::requested(cmdline) {
        bench::run(apic_id, ctx.timer_works);
    }
    if let Some(set) = smp::bench::requested(cmdline) {
        smp::bench::run(set, hold::requested(cmdline));
    }
    if let Some(iterations) = card::requested(cmdline) {
        card::run(iterations, apic_id, hold::requested(cmdline));
    }

    #[cfg(feature = "kvm")]
    if let Some(k) = pvops_backends::kvm::summary() {
        // After the self-tests: how many EOI writes PV EOI saved, and
        // whether it is still on (a host that never sets the flag is
        // given up on).
        record!(
            "kvm.end",
            eoi_skipped = k.eoi_skipped,
            pv_eoi = k.pv_eoi,
            steal_ns = pvops::time::steal_ns(),
            tlb_flagged = k.tlb_flagged
        );
    }
    // An unsupported test (the machine lacks what it needs) is no failure.
    let pass = tally.passed + tally.unsupported == tally.total;
    let verdict = if pass { "pass" } else { "fail" };
    println!();
    println!(
        "Result: {}/{} self-tests passed ({} unsupported): {}",
        tally.passed,
        tally.total,
        tally.unsupported,
        verdict.to_ascii_uppercase_str()
    );
    record!(
        "done",
        passed = tally.passed,
        total = tally.total,
        unsupported = tally.unsupported,
        verdict = verdict
    );
    if hold::requested(cmdline) {
        hold::hold();
    }
    // The verdict is on the serial line; the exit device gets the code
    // before any hypervisor power-off, which would end the machine first
    // (QEMU's Xen emulation exits with status 0 at SCHEDOP_shutdown). Where
    // there is no such device the write is ignored and the hypervisor (or
    // native) shutdown follows.
    let code = if pass { ExitCode::Pass } else { ExitCode::Fail };
    bootkit::exit::signal(code);
    pvops::system::shutdown(if pass {
        ShutdownReason::PowerOff
    } else {
        ShutdownReason::Crash
    });
    // The native shutdown hook exits; a backend's shutdown might return.
    bootkit::exit::exit(code)
}

/// Upper-case view for the human verdict.
trait Upper {
    fn to_ascii_uppercase_str(&self) -> &'static str;
}

impl Upper for &str {
    fn to_ascii_uppercase_str(&self) -> &'static str {
        if *self == "pass" {
            "PASS"
        } else {
            "FAIL"
        }
    }
}

/// Natively the machine "powers off" through QEMU's isa-debug-exit.
fn shutdown_hook(reason: ShutdownReason) {
    bootkit::exit::exit(match reason {
        ShutdownReason::PowerOff => ExitCode::Pass,
        ShutdownReason::Crash => ExitCode::Fail,
    })
}

/// The human boot report and its `@@` records.
fn report(init: &pvops_backends::InitReport) {
    let p = &init.probe;
    let vendor = core::str::from_utf8(&p.vendor_string).unwrap_or("?");
    let mut features = text::Text::<256>::new();
    for (i, name) in Features::NAMES
        .iter()
        .filter(|(f, _)| p.features.contains(*f))
        .map(|(_, n)| n)
        .enumerate()
    {
        let _ = core::fmt::Write::write_fmt(
            &mut features,
            format_args!("{}{}", if i > 0 { "," } else { "" }, name),
        );
    }
    println!();
    println!("Probe:");
    println!(
        "  cpu: {vendor} family {:#x} model {:#x} stepping {}; max leaf {:#x}, max extended leaf {:#x}",
        p.family, p.model, p.stepping, p.max_basic_leaf, p.max_extended_leaf
    );
    println!("  features: {features}");
    println!(
        "  probe: {} CPUIDs (hypervisor bit {})",
        p.cpuids,
        if p.under_hypervisor() {
            "set: bounded scan"
        } else {
            "clear: whole range"
        }
    );
    record!(
        "probe",
        cpuids = p.cpuids,
        hypervisor_bit = p.under_hypervisor()
    );
    record!(
        "cpu",
        vendor = vendor,
        family = p.family,
        model = p.model,
        stepping = p.stepping,
        features = features
    );
    if p.interfaces.is_empty() {
        println!("  hypervisor interfaces: none");
    }
    for i in p.interfaces.iter() {
        println!(
            "  hypervisor interface at {:#x}: \"{}\" ({}), leaves up to {:#x}",
            i.base,
            i.signature_str(),
            i.kind.name(),
            i.max_leaf
        );
        record!(
            "interface",
            base = format_args!("{:#x}", i.base),
            signature = i.signature_str(),
            kind = i.kind.name(),
            max_leaf = format_args!("{:#x}", i.max_leaf)
        );
    }
    // The hypervisor bit without any signature is an unidentified hypervisor.
    let hv = match p.primary_interface() {
        Some(i) => i.kind.name(),
        None if p.under_hypervisor() => "unknown",
        None => "none",
    };
    // Every interface seen, lowest base first ("hyperv+xen" for Xen with
    // Viridian): the primary one names the hypervisor, the backend may use
    // another.
    let mut seen = text::Text::<64>::new();
    for (i, iface) in p.interfaces.iter().enumerate() {
        let _ = core::fmt::Write::write_fmt(
            &mut seen,
            format_args!("{}{}", if i > 0 { "+" } else { "" }, iface.kind.name()),
        );
    }
    if seen.as_str().is_empty() {
        let _ = core::fmt::Write::write_str(&mut seen, hv);
    }
    println!(
        "  hypervisor bit: {}; hypervisor: {hv}; interfaces seen: {}",
        p.under_hypervisor(),
        seen.as_str()
    );
    record!("hypervisor", name = hv, interfaces = seen.as_str());

    let sel = &init.selection;
    let mut reason = text::Text::<256>::new();
    let _ = core::fmt::Write::write_fmt(&mut reason, format_args!("{}", sel.why));
    if let Some((name, why)) = init.declined {
        let _ = core::fmt::Write::write_fmt(
            &mut reason,
            format_args!("; backend '{name}' not taken: {why}"),
        );
    }
    if let Some(e) = &init.fallback {
        let _ = core::fmt::Write::write_fmt(
            &mut reason,
            format_args!(
                "; backend '{}' setup failed ({e}), fell back to native",
                sel.backend.name()
            ),
        );
    }
    println!();
    println!(
        "Backend: {} ({}); hypervisor {hv}, interfaces seen {}, selected {}",
        init.installed,
        reason,
        seen.as_str(),
        init.installed
    );
    // What the backend installed here, not everything it could.
    let mut installed = text::Text::<512>::new();
    for (entry, owner) in pvops::owners() {
        if owner != "native" {
            let sep = if installed.as_str().is_empty() {
                ""
            } else {
                ", "
            };
            let _ =
                core::fmt::Write::write_fmt(&mut installed, format_args!("{sep}{}", entry.name()));
        }
    }
    if installed.as_str().is_empty() {
        println!("  installed: nothing (every entry native)");
    } else {
        println!("  installed: {}", installed.as_str());
    }
    record!("backend", name = init.installed, reason = reason);

    println!("Operations table owners:");
    for (entry, owner) in pvops::owners() {
        println!("  {:<24} {owner}", entry.name());
        record!("owner", entry = entry.name(), backend = owner);
    }

    let tsc = pvops::time::tsc_frequency();
    let timer = timer_name();
    println!(
        "TSC: {} kHz ({}); APIC timer {} kHz; timer {}",
        tsc.khz,
        tsc.source.name(),
        pvops::time::apic_timer_khz(),
        timer
    );
    record!("tsc", khz = tsc.khz, source = tsc.source.name());
    record!("timer", kind = timer);
    dispatch::report();
    #[cfg(feature = "kvm")]
    report_kvm();
    println!();
}

/// The timer actually armed: whoever owns `time.timer_arm` (a backend's own
/// timer) or the native local APIC mode.
fn timer_name() -> &'static str {
    let owner = pvops::owners()
        .find(|(e, _)| e.name() == "time.timer_arm")
        .map_or("native", |(_, o)| o);
    match owner {
        "native" if pvops::native::time::uses_tsc_deadline() => "lapic-tsc-deadline",
        "native" => "lapic-one-shot",
        "xen" => xen_timer(),
        "hyperv" => "hyperv-stimer0-direct",
        other => other,
    }
}

/// Xen's singleshot timer and how its upcall arrives (native when
/// `timer_setup` could not route the upcall).
#[cfg(feature = "xen")]
fn xen_timer() -> &'static str {
    use pvops_backends::xen::{delivery, Delivery};
    match delivery() {
        Delivery::UpcallVector => "xen-singleshot-upcall-vector",
        Delivery::CallbackVia => "xen-singleshot-callback-via",
        Delivery::None if pvops::native::time::uses_tsc_deadline() => "lapic-tsc-deadline",
        Delivery::None => "lapic-one-shot",
    }
}

#[cfg(not(feature = "xen"))]
fn xen_timer() -> &'static str {
    "xen-singleshot"
}

/// What the KVM backend set up (`@@ kvm`), when it was installed.
#[cfg(feature = "kvm")]
fn report_kvm() {
    let Some(k) = pvops_backends::kvm::summary() else {
        return;
    };
    println!(
        "KVM: features {:#x}, hints {:#x}, hypercalls by {}; kvmclock {} (stable {}, {} kHz), steal time {}, PV EOI {}, PV IPI {}, no-op io_delay {}",
        k.features.0,
        k.hints.0,
        k.hypercall.name(),
        k.clock,
        k.stable,
        k.pvclock_khz,
        k.steal,
        k.pv_eoi,
        k.pv_ipi,
        k.io_delay
    );
    let f = |b| k.features.contains(b);
    use pvops_abi::kvm::Features as F;
    record!(
        "kvm",
        base = format_args!("{:#x}", k.base),
        features = format_args!("{:#x}", k.features.0),
        hints = format_args!("{:#x}", k.hints.0),
        hypercall = k.hypercall.name(),
        clock = k.clock,
        stable = k.stable,
        pvclock_khz = k.pvclock_khz,
        steal = k.steal,
        pv_eoi = k.pv_eoi,
        pv_ipi = k.pv_ipi,
        io_delay = k.io_delay,
        pv_spinlocks = k.pv_spinlocks,
        pv_tlb_flush_used = k.pv_tlb_flush,
        pv_unhalt = f(F::PV_UNHALT),
        pv_tlb_flush = f(F::PV_TLB_FLUSH),
        pv_sched_yield = f(F::PV_SCHED_YIELD),
        preempted = pvops_backends::kvm::preempted().unwrap_or(0)
    );
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // Print the panic; then hand the message to the hypervisor's crash
    // channel (Hyper-V's crash MSRs; natively a no-op) and stop through the
    // table (Xen's SCHEDOP_shutdown(crash); natively the exit device). A
    // panic inside either stops at once.
    if bootkit::panic::report(info) {
        let mut msg = text::Text::<256>::new();
        let _ = core::fmt::Write::write_fmt(&mut msg, format_args!("{}", info.message()));
        pvops::system::report_crash(msg.as_str());
        // Unlike the end of `main`, the hypervisor's crash shutdown comes
        // first: it is the crash channel (Xen records the crash), and the
        // verdict — the panic record — is already on the serial line.
        pvops::system::shutdown(ShutdownReason::Crash);
    }
    bootkit::exit::exit(ExitCode::Fail)
}
