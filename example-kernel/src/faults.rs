//! `fault=<kind>`: deliberate misbehaviour for the microvisor's robustness
//! tests. Run right before the self-tests; the kinds that return report a
//! `fault.<kind>` self-test.

use crate::hostile;
use crate::hypercall::Microvisor;
use crate::paging::BAD_MEMORY_PA;
use crate::selftest::{Outcome, Tally};
use crate::{arch, text};
use bootkit::idt::{self, InterruptFrame};
use core::sync::atomic::{AtomicU64, Ordering};
use pvops_abi::microvisor::{code, ERR_INVALID, ERR_UNKNOWN};

/// Every kind understood, for the boot log.
pub const KINDS: [&str; 18] = [
    "triple",
    "panic",
    "bad-memory",
    "unknown-hypercall",
    "bad-hypercall-pointer",
    "bad-msr",
    "bad-port",
    "hang",
    "hypercall-into-microvisor",
    "counter-garbage",
    "hyperv-rep",
    "alias-hypercall-page",
    "ipi-storm",
    "timer-storm",
    "halt-if-off",
    "xen-pointers",
    "kvm-shared-pages",
    "none",
];

/// Runs the fault named on the command line (`fault=<kind>`).
pub fn run(kind: &str, env: &hostile::Env<'_>, tally: &mut Tally) {
    bootkit::println!("Fault injection: fault={kind}");
    log::warn!("fault={kind}: deliberately misbehaving");
    match kind {
        "triple" => triple(),
        // The crash path: the panic handler reports through the table.
        "panic" => panic!("fault=panic: deliberate kernel panic"),
        "hang" => arch::hang(),
        "halt-if-off" => hostile::halt_interrupts_off(),
        "hypercall-into-microvisor" => {
            let o = hostile::into_microvisor(env);
            tally.report("fault.hypercall-into-microvisor", &o);
        }
        "counter-garbage" => {
            let o = hostile::counter_garbage(env);
            tally.report("fault.counter-garbage", &o);
        }
        "hyperv-rep" => {
            let o = hostile::hyperv_rep(env);
            tally.report("fault.hyperv-rep", &o);
        }
        "alias-hypercall-page" => {
            let o = hostile::alias_hypercall_page(env);
            tally.report("fault.alias-hypercall-page", &o);
        }
        "kvm-shared-pages" => {
            let o = hostile::kvm_shared_pages(env);
            tally.report("fault.kvm-shared-pages", &o);
        }
        "xen-pointers" => {
            let o = hostile::xen_pointers(env);
            tally.report("fault.xen-pointers", &o);
        }
        "timer-storm" => {
            let o = hostile::timer_storm();
            tally.report("fault.timer-storm", &o);
        }
        "ipi-storm" => {
            let o = hostile::ipi_storm(env);
            tally.report("fault.ipi-storm", &o);
        }
        "bad-memory" => {
            let o = bad_memory();
            tally.report("fault.bad-memory", &o);
        }
        "unknown-hypercall" => {
            let o = unknown_hypercall();
            tally.report("fault.unknown-hypercall", &o);
        }
        "bad-hypercall-pointer" => {
            let o = bad_hypercall_pointer();
            tally.report("fault.bad-hypercall-pointer", &o);
        }
        "bad-msr" => {
            let o = bad_msr();
            tally.report("fault.bad-msr", &o);
        }
        "bad-port" => {
            let o = bad_port();
            tally.report("fault.bad-port", &o);
        }
        "none" | "" => {}
        other => {
            let o: Outcome =
                crate::selftest::fail(text!("unknown fault kind '{other}' (known: {:?})", KINDS));
            tally.report("fault.unknown-kind", &o);
        }
    }
}

/// A zero-limit IDT, then UD2: the #UD cannot be delivered, nor the #GP
/// (or #DF) that follows, so the CPU shuts down (triple fault).
fn triple() -> ! {
    let empty = x86::dtables::DescriptorTablePointer::<u64> {
        limit: 0,
        base: core::ptr::null(),
    };
    pvops::irq::disable();
    // SAFETY: deliberately invalid: the point is the triple fault. Nothing
    // runs after it (the machine resets or the hypervisor stops the guest).
    unsafe { pvops::cpu::load_idt(&empty) };
    arch::ud2();
    bootkit::println!("fault=triple: still alive after UD2 with an empty IDT");
    bootkit::exit::exit(bootkit::ExitCode::Fail)
}

fn bad_memory() -> Outcome {
    // SAFETY: BAD_MEMORY_PA is mapped by the kernel's tables (a 2 MiB page,
    // uncached); with no RAM or device there, the read returns whatever the
    // bus gives (zeros on QEMU's unassigned memory) or traps to the
    // hypervisor.
    let v = unsafe { arch::read_phys(BAD_MEMORY_PA) };
    crate::selftest::check(
        true,
        text!("read {BAD_MEMORY_PA:#x} (beyond RAM) = {v:#x}; not stopped"),
    )
}

fn unknown_hypercall() -> Outcome {
    let Some(mv) = Microvisor::detect() else {
        return crate::selftest::fail(text!("no microvisor"));
    };
    let r = mv.call(0xdead, [0; 3]);
    crate::selftest::check(
        r == ERR_UNKNOWN,
        text!("code 0xdead returned {r} (expected {ERR_UNKNOWN})"),
    )
}

/// Guest-physical address far outside any guest RAM.
const BAD_POINTER: u64 = 0xffff_f000_0000;

fn bad_hypercall_pointer() -> Outcome {
    let Some(mv) = Microvisor::detect() else {
        return crate::selftest::fail(text!("no microvisor"));
    };
    let r = mv.call(code::COUNTERS_COPY, [BAD_POINTER, 4096, 0]);
    crate::selftest::check(
        r == ERR_INVALID,
        text!("COUNTERS_COPY to {BAD_POINTER:#x} returned {r} (expected {ERR_INVALID})"),
    )
}

static GP_TAKEN: AtomicU64 = AtomicU64::new(0);

fn skip_rdmsr(frame: &mut InterruptFrame) {
    GP_TAKEN.fetch_add(1, Ordering::SeqCst);
    frame.rip += 2; // RDMSR is 0F 32
}

/// #GP handler for [`wrmsr_catching_gp`]: count and step over the WRMSR.
fn skip_wrmsr(frame: &mut InterruptFrame) {
    GP_TAKEN.fetch_add(1, Ordering::SeqCst);
    frame.rip += 2; // WRMSR is 0F 30
}

/// WRMSR with a #GP handler that steps over it: true when written, false
/// when the CPU (or hypervisor) refused it with #GP. Interrupts must be
/// off (the handler is swapped for the duration).
///
/// # Safety
///
/// As [`pvops::cpu::write_msr`] for a write that succeeds.
pub unsafe fn wrmsr_catching_gp(msr: u32, value: u64) -> bool {
    let before = GP_TAKEN.load(Ordering::SeqCst);
    let old = idt::set_handler(13, Some(skip_wrmsr));
    // SAFETY: forwarded to the caller; a #GP is stepped over by the
    // handler just installed.
    unsafe { arch::wrmsr_may_fault(msr, value) };
    idt::set_handler(13, old);
    GP_TAKEN.load(Ordering::SeqCst) == before
}

/// RDMSR with a #GP handler that steps over it: the value when read, `None`
/// when the CPU (or hypervisor) refused it with #GP. Interrupts must be off
/// (the handler is swapped for the duration).
///
/// # Safety
///
/// As [`pvops::cpu::read_msr`] for a read that succeeds.
pub unsafe fn rdmsr_catching_gp(msr: u32) -> Option<u64> {
    let before = GP_TAKEN.load(Ordering::SeqCst);
    let old = idt::set_handler(13, Some(skip_rdmsr));
    // SAFETY: forwarded to the caller; a #GP is stepped over by the
    // handler just installed.
    let v = unsafe { arch::rdmsr_may_fault(msr) };
    idt::set_handler(13, old);
    (GP_TAKEN.load(Ordering::SeqCst) == before).then_some(v)
}

/// An MSR index no CPU or hypervisor defines.
const BAD_MSR: u32 = 0x4fff_0000;

fn bad_msr() -> Outcome {
    let before = GP_TAKEN.load(Ordering::SeqCst);
    let old = idt::set_handler(13, Some(skip_rdmsr));
    let v = arch::rdmsr_expect_fault(BAD_MSR);
    idt::set_handler(13, old);
    let taken = GP_TAKEN.load(Ordering::SeqCst) - before;
    crate::selftest::check(
        taken == 1,
        text!("RDMSR {BAD_MSR:#x}: #GP taken {taken} time(s), value {v:#x}"),
    )
}

/// An I/O port with no device on a PC.
const BAD_PORT: u16 = 0x1234;

fn bad_port() -> Outcome {
    let v = arch::inb_unused(BAD_PORT);
    crate::selftest::check(
        v == 0xff,
        text!("IN from port {BAD_PORT:#x} read {v:#x} (expected 0xff)"),
    )
}
