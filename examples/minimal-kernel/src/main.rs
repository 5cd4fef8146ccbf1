//! A kernel of one's own on pvops: boot, initialise pvops, arm a timer,
//! sleep until it fires, read the clock, print who owns each operation, exit.
//!
//! Run: `cargo build --release`, then `qemu-system-x86_64 -accel tcg -cpu max
//! -m 128M -display none -serial stdio -no-reboot -device
//! isa-debug-exit,iobase=0xf4,iosize=4 -kernel
//! target/x86_64-unknown-none/release/minimal-kernel` (exit status 33 = pass).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use pvops::system::ShutdownReason;
use pvops_boot::{idt::InterruptFrame, println, record, ExitCode};

pvops_boot::pvh_entry!(crate::kmain);

const TIMER_VECTOR: u8 = 0x40;
const TIMER_NS: u64 = 1_000_000; // 1 ms

/// Pages the backends share with the hypervisor (8 cover every backend).
static PAGES: pvops_boot::pages::PagePool<8> = pvops_boot::pages::PagePool::new();
static TICKS: AtomicU64 = AtomicU64::new(0);

struct Platform {
    lend: bool, // false for the tests' `check=no-pages`
}

impl pvops_backends::Platform for Platform {
    fn alloc_shared_page(&mut self) -> Option<pvops_backends::SharedPage> {
        let (phys, virt) = self.lend.then(|| PAGES.take()).flatten()?;
        Some(pvops_backends::SharedPage { phys, virt })
    }
}

fn on_timer(_frame: &mut InterruptFrame) {
    pvops::time::timer_ack();
    TICKS.fetch_add(1, Ordering::SeqCst);
    pvops::irq::eoi();
}

fn kmain(start_info: u64) -> ! {
    // pvops reports its choices and every fallback through `log`.
    pvops_boot::logger::init(log::LevelFilter::Info);
    // SAFETY: the address the PVH loader passed; this kernel allocates no
    // memory outside its image.
    let si = unsafe { pvops_boot::start_info::StartInfo::from_paddr(start_info) }
        .unwrap_or_else(|e| panic!("start_info: {e}"));
    record!("boot", kernel = "minimal-kernel", cmdline = si.cmdline());

    // SAFETY: ring 0, long mode; LGDT/LIDT through pvops' (still native) table.
    unsafe {
        pvops_boot::gdt::init(pvops::cpu::load_gdt);
        pvops_boot::idt::init(pvops::cpu::load_idt);
    }
    pvops_boot::idt::set_handler(TIMER_VECTOR, Some(on_timer));
    pvops::system::set_shutdown_hook(|reason| {
        pvops_boot::exit::exit(match reason {
            ShutdownReason::PowerOff => ExitCode::Pass,
            ShutdownReason::Crash => ExitCode::Fail,
        })
    });

    // The local APIC, x2APIC when CPUID offers it; this also masks the
    // legacy PICs (whose timer would arrive as vector 8).
    let mode = pvops::apic::preferred_mode().unwrap_or_else(|e| panic!("local APIC: {e}"));
    let check = si.cmdline_value("check"); // the tests' `check=no-apic|second-init|no-pages`
    let mut platform = Platform { lend: check != Some("no-pages") };
    if check != Some("no-apic") {
        // SAFETY: x2APIC only when CPUID reports it; an xAPIC page sits at
        // 0xFEE0_0000, identity-mapped uncached by pvops-boot's boot tables.
        unsafe { pvops::apic::enable(mode, pvops_boot::idt::SPURIOUS_VECTOR) };
    }

    // SAFETY: one CPU, interrupts disabled since boot, first call.
    let init = unsafe { pvops_backends::init(&mut platform, si.cmdline()) };
    for i in init.probe.interfaces.iter() {
        let (base, kind) = (format_args!("{:#x}", i.base), i.kind.name());
        record!("interface", base = base, signature = i.signature_str(), kind = kind);
    }
    let hypervisor = init.probe.primary_interface().map_or("none", |i| i.kind.name());
    record!("hypervisor", name = hypervisor);
    record!("backend", name = init.installed, reason = init.selection.why);
    for (entry, owner) in pvops::owners() {
        record!("owner", entry = entry.name(), backend = owner);
    }
    let tsc = pvops::time::tsc_frequency();
    record!("tsc", khz = tsc.khz, source = tsc.source.name());
    if let Some(check) = check.filter(|&c| c != "no-pages") {
        // SAFETY: as above; a second call must be refused and change nothing.
        let again = (check == "second-init").then(|| unsafe { pvops_backends::init(&mut platform, "") });
        let refused = again.is_some_and(|a| a.refused.is_some() && a.installed == init.installed);
        let warned = check == "no-apic" && !init.missing_steps.is_empty();
        let detail = format_args!("{}", init.missing_steps.first().unwrap_or(&"refused"));
        finish(u32::from(selftest(check, refused || warned, detail)), 1);
    }

    // Arm, then sleep: safe_halt enables interrupts and halts atomically, so
    // a timer that fires at once still wakes us.
    pvops::time::timer_setup(TIMER_VECTOR);
    let start = pvops::time::monotonic_ns();
    pvops::time::timer_arm(TIMER_NS);
    while TICKS.load(Ordering::SeqCst) == 0 {
        pvops::irq::safe_halt();
        pvops::irq::disable();
    }
    let elapsed = pvops::time::monotonic_ns().saturating_sub(start);

    let ticks = TICKS.load(Ordering::SeqCst);
    let pages = PAGES.used();
    let passed = [
        selftest("timer", ticks == 1, format_args!("ticks={ticks}")),
        selftest("clock", elapsed >= TIMER_NS, format_args!("elapsed_ns={elapsed} armed_ns={TIMER_NS}")),
        selftest("pages", pages <= 8, format_args!("shared_pages={pages}")),
    ];
    println!("minimal-kernel: backend {} on {hypervisor}", init.installed);
    finish(passed.iter().map(|&p| u32::from(p)).sum(), 3)
}

fn selftest(name: &str, pass: bool, detail: core::fmt::Arguments<'_>) -> bool {
    let result = if pass { "pass" } else { "fail" };
    record!("selftest", name = name, result = result, detail = detail);
    pass
}

fn finish(passed: u32, total: u32) -> ! {
    let pass = passed == total;
    record!("done", passed = passed, total = total, verdict = if pass { "pass" } else { "fail" });
    let code = if pass { ExitCode::Pass } else { ExitCode::Fail };
    // The exit device first: a hypervisor's power-off would race it.
    pvops_boot::exit::signal(code);
    // Through the table: a hypervisor's power-off, natively the hook above.
    pvops::system::shutdown(if pass { ShutdownReason::PowerOff } else { ShutdownReason::Crash });
    pvops_boot::exit::exit(code)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if pvops_boot::panic::report(info) {
        pvops::system::report_crash(info.message());
        pvops::system::shutdown(ShutdownReason::Crash);
    }
    pvops_boot::exit::exit(ExitCode::Fail)
}
