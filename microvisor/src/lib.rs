//! pvops microvisor: a small type-1 hypervisor for AMD SVM with nested
//! paging, built to run under QEMU's TCG emulation. QEMU boots it through
//! PVH (`-kernel`); it loads the guest kernel from the PVH module
//! (`-initrd`) into guest RAM behind nested page tables and enters it in
//! the same PVH state, with the persona chosen on its command line.
//!
//! The binary (`main.rs`) is only the PVH entry and the panic handler; all
//! of the microvisor is this library, so its pure parts (virtual APIC,
//! command line, counters, permission maps, personas, loader) are unit
//! tested on the host: `cargo test --lib --target x86_64-unknown-linux-gnu`.
//!
//! See docs/microvisor.md for the design and the exact QEMU command line.
#![cfg_attr(not(test), no_std)]

pub mod clock;
pub mod config;
pub mod counters;
pub mod fmtbuf;
pub mod guest;
pub mod hw;
pub mod integrity;
pub mod ipi;
pub mod once;
pub mod outcome;
pub mod personas;
pub mod report;
pub mod sched;
pub mod svm;
pub mod vapic;
pub mod vcpu;
pub mod watchdog;

use bootkit::image::Range;
use bootkit::start_info::StartInfo;
use guest::mem::GuestRam;
use outcome::{End, FaultKind};
use svm::npt::PAGE_2M;

/// Lowest host address considered for guest RAM.
const GUEST_RAM_MIN_HPA: u64 = 16 << 20;
/// The host identity map ends here.
const HOST_MAP_END: u64 = 4 << 30;

/// The microvisor, from PVH entry to the end of the run.
pub fn start(start_info_paddr: u64) -> ! {
    bootkit::serial::init();
    match boot(start_info_paddr) {
        Ok(mut vcpu) => {
            let end = vcpu.run();
            let end = report::integrity(&vcpu, end);
            report::finish(
                &end,
                Some(&vcpu.accounting().lifetime),
                Some(vcpu.persona()),
                vcpu.serial_mid_line(),
                Some(&vcpu),
            );
            report::exit(&end)
        }
        Err(end) => {
            report::finish(&end, None, None, false, None);
            report::exit(&end)
        }
    }
}

fn setup_error(args: core::fmt::Arguments<'_>) -> End {
    End::fault(FaultKind::MicrovisorError, args)
}

/// Everything up to the first VMRUN.
#[allow(clippy::result_large_err)] // See `End`: no heap to box it in.
fn boot(start_info_paddr: u64) -> Result<vcpu::Vcpu, End> {
    // SAFETY: QEMU's PVH loader passed this address in EBX; the structure,
    // command line, module list and module stay untouched (guest RAM is
    // carved around them below).
    let info = unsafe { StartInfo::from_paddr(start_info_paddr) }
        .map_err(|e| setup_error(format_args!("bad start_info: {e}")))?;
    let cfg = config::parse(info.cmdline())
        .map_err(|e| setup_error(format_args!("command line: {}: {:?}", e.what, e.token)))?;
    mvlog!("pvops microvisor; command line {:?}", info.cmdline());
    let mut persona = personas::select(cfg.persona, cfg.break_step).map_err(|e| match e {
        personas::SelectError::UnknownPersona => setup_error(format_args!(
            "unknown persona {:?} (known: {:?})",
            cfg.persona,
            personas::NAMES
        )),
        personas::SelectError::UnknownBreak => setup_error(format_args!(
            "persona {:?} has no break step {:?}",
            cfg.persona, cfg.break_step
        )),
    })?;

    // SAFETY: the GDT/IDT loaders are plain LGDT/LIDT of bootkit's static
    // tables; gdt::init runs first as idt::init requires.
    unsafe {
        bootkit::gdt::init(bootkit::gdt::lgdt);
        bootkit::idt::init(bootkit::idt::lidt);
    }
    bootkit::idt::set_handler(hw::lapic::TIMER_VECTOR, Some(vcpu::host_timer_interrupt));

    let features = svm::detect().map_err(|e| setup_error(format_args!("{e}")))?;
    svm::enable().map_err(|e| setup_error(format_args!("{e}")))?;
    hw::pic::remap_and_mask();
    hw::lapic::init();
    // 3 x 30 ms: short or single windows read up to 50% high under TCG
    // when the host is loaded.
    let clock = clock::Clock::new(hw::pit::calibrate_median(30));
    mvlog!(
        "SVM: {} ASIDs, NPT, NRIP save {}; TSC {} kHz, LAPIC timer {} kHz",
        features.asids,
        if features.nrips { "yes (unused)" } else { "no" },
        clock.tsc_khz,
        clock.lapic_khz
    );

    let image = info
        .module_bytes(0)
        .ok_or_else(|| setup_error(format_args!("no guest kernel: pass it with -initrd")))?;
    let size = cfg.guest_ram_mib << 20;
    let hpa = carve_guest_ram(&info, size).ok_or_else(|| {
        setup_error(format_args!(
            "no free 2 MiB-aligned host RAM for {} MiB of guest RAM",
            cfg.guest_ram_mib
        ))
    })?;
    // SAFETY: `carve_guest_ram` found `hpa..hpa+size` inside host RAM, below
    // the end of the identity map, clear of the microvisor image (with its
    // stack, tables and statics) and of everything the PVH loader handed
    // over (start_info, command line, module list, module).
    let mem = unsafe { GuestRam::new(hpa, size) };
    mem.zero(0, size)
        .map_err(|_| setup_error(format_args!("guest RAM")))?;
    let loaded =
        guest::loader::load_elf(&mem, image).map_err(|e| setup_error(format_args!("{e}")))?;
    guest::loader::write_boot_info(&mem, cfg.guest_cmdline, cfg.vcpus)
        .map_err(|e| setup_error(format_args!("{e}")))?;
    mvlog!(
        "guest: {} bytes of ELF, loaded at {:#x}..{:#x}, PVH entry {:#x}; RAM {} MiB at host {:#x}; watchdog {} ms",
        image.len(),
        loaded.span.0,
        loaded.span.1,
        loaded.entry,
        cfg.guest_ram_mib,
        hpa,
        cfg.watchdog_ms
    );
    mvlog!("guest command line {:?}", cfg.guest_cmdline);

    persona.get().set_clock(clock.tsc_khz, vapic::BUS_KHZ);
    if cfg.vcpus > 1 {
        persona.get().set_vcpus(cfg.vcpus);
    }
    let persona_name = persona.get().name();
    for page in persona.get().shared_pages() {
        mvlog!(
            "persona page {}: gpa {:#x}, {} page(s)",
            page.name,
            page.gpa,
            page.pages
        );
    }
    if !cfg.pit {
        mvlog!("pit=off: the guest's PIT ports and port 0x61 read all ones");
    }
    if cfg.vcpus > 1 {
        mvlog!(
            "{} vCPUs on one CPU, round robin, {} us slices; ACPI MADT at {:#x}",
            cfg.vcpus,
            cfg.slice_us,
            guest::loader::ACPI_GPA
        );
    }
    let opt = vcpu::setup::Options {
        watchdog_ms: cfg.watchdog_ms,
        pit: cfg.pit,
        vcpus: cfg.vcpus,
        slice_us: cfg.slice_us,
    };
    let mut vcpu = vcpu::setup::build(mem, loaded.entry, persona, clock, opt)
        .map_err(|e| setup_error(format_args!("{e}")))?;
    protect_guards(&info, &mut vcpu, hpa, size);
    if let Some(region) = cfg.corrupt {
        corrupt(&vcpu, region)?;
    }
    report::start(persona_name, cfg.guest_ram_mib, cfg.vcpus);
    Ok(vcpu)
}

/// Bytes of free host RAM checksummed right above and right below guest
/// RAM ([`integrity`]).
const GUARD_LEN: u64 = 64 << 10;

/// Adds the guard ranges around guest RAM (`hpa..hpa+size`) to the
/// protected regions, where they are free host RAM (nothing of the
/// microvisor's nor the loader's, so nothing may write there).
fn protect_guards(info: &StartInfo, vcpu: &mut vcpu::Vcpu, hpa: u64, size: u64) {
    let above = Range {
        start: hpa + size,
        end: hpa + size + GUARD_LEN,
    };
    let below = Range {
        start: hpa.saturating_sub(GUARD_LEN),
        end: hpa,
    };
    for (name, r) in [("guard-above", above), ("guard-below", below)] {
        if r.end <= HOST_MAP_END && is_free(info, &r) {
            // SAFETY: `r` is host RAM inside the identity map that neither
            // the microvisor nor the loader uses; it is only read.
            unsafe { vcpu.protect(name, r.start, r.len()) };
        }
    }
}

/// The `corrupt=<region>` debug switch: changes one word of a protected
/// region on purpose, after its baseline, so the integrity check must fail.
#[allow(clippy::result_large_err)] // See `End`: no heap to box it in.
fn corrupt(vcpu: &vcpu::Vcpu, region: &str) -> Result<(), End> {
    // npt: PDPT entry 511 (the NPT's second page), never used (guest RAM
    // is at most 1 GiB, behind PDPT entry 0); bit 63 (NX) with P clear
    // keeps it not present. guard-above: free RAM nobody reads.
    let offset = match region {
        "npt" => 4096 + 511 * 8,
        "guard-above" => 0,
        _ => {
            return Err(setup_error(format_args!(
                "corrupt={region:?}: known regions are npt, guard-above"
            )))
        }
    };
    let r = vcpu.protected().find(region).ok_or_else(|| {
        setup_error(format_args!(
            "corrupt={region:?}: region not protected here"
        ))
    })?;
    let p = (r.start + offset) as *mut u64;
    // SAFETY: a deliberate change for the debug switch, inside the region:
    // an unused, not-present NPT entry stays not present, and the guard
    // range is free RAM. The guest is not running yet.
    unsafe { p.write_volatile(p.read_volatile() ^ (1 << 63)) };
    mvlog!(
        "corrupt={region}: changed the word at {:#x} on purpose",
        p as u64
    );
    Ok(())
}

/// Whether `r` is host RAM that overlaps neither the microvisor image nor
/// anything the PVH loader handed over.
fn is_free(info: &StartInfo, r: &Range) -> bool {
    let image = bootkit::image::image();
    !r.overlaps(&image)
        && info
            .reserved()
            .iter()
            .all(|t| t.is_empty() || !r.overlaps(t))
        && info
            .ram()
            .any(|ram| ram.start <= r.start && r.end <= ram.end)
}

/// Finds a 2 MiB-aligned run of `size` bytes of host RAM that overlaps
/// neither the microvisor image nor anything the PVH loader handed over.
fn carve_guest_ram(info: &StartInfo, size: u64) -> Option<u64> {
    let image = bootkit::image::image();
    let is_free = |r: &Range| is_free(info, r);
    let mut start = GUEST_RAM_MIN_HPA.max(image.end).next_multiple_of(PAGE_2M);
    while start + size <= HOST_MAP_END {
        let r = Range {
            start,
            end: start + size,
        };
        if is_free(&r) {
            return Some(start);
        }
        start += PAGE_2M;
    }
    None
}
