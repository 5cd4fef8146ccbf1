//! mv-testguest: checks the microvisor's own guest-visible interfaces.
//!
//! Run it instead of the example kernel (`-initrd`). It prints one
//! `@@ selftest` record per check and exits through isa-debug-exit with
//! `Pass` (status 33) or `Fail` (35). What it checks depends on the
//! persona, which it learns from the hypervisor CPUID bit:
//!
//! - before the keyed CPUID leaf, a microvisor-magic VMMCALL is a persona
//!   hypercall: #UD under `none`, -1 under `bare`;
//! - the hidden leaf answers only with the key;
//! - COUNTERS_RESET / EXITS_TOTAL / COUNTER_READ per class / COUNTERS_COPY
//!   (success, short buffer, buffer straddling the end of RAM), unknown code;
//! - the virtual x2APIC periodic timer: 5 ticks taken with HLT, one HLT
//!   exit per tick.
//!
//! With `smpfault=<kind>` on its command line (and the microvisor's
//! `vcpus=2`) it runs only a multi-vCPU fault case instead, see
//! [`smp_fault`]: `ap-triple` (the AP triple-faults in real mode),
//! `ap-spin` (the AP spins with interrupts off), `sipi-absent` (INIT and
//! SIPI to APIC ID 7, which does not exist, then a real AP starts).
#![no_std]
#![no_main]

use bootkit::idt::{self, InterruptFrame};
use bootkit::start_info::StartInfo;
use bootkit::{println, record, ExitCode};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use pvops_abi::microvisor::{
    class, code, ExitSnapshot, CPUID_KEY, CPUID_LEAF, ERR_INVALID, ERR_UNKNOWN, HYPERCALL_MAGIC,
    SIGNATURE,
};
use zerocopy::FromBytes;

bootkit::pvh_entry!(crate::main);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    bootkit::panic::handle(info, ExitCode::Fail)
}

static UD: AtomicU64 = AtomicU64::new(0);
static GP: AtomicU64 = AtomicU64::new(0);
static TICKS: AtomicU64 = AtomicU64::new(0);
const TIMER_VECTOR: u8 = 0x50;

fn on_ud(f: &mut InterruptFrame) {
    UD.fetch_add(1, Ordering::SeqCst);
    f.rip += 3; // VMMCALL is 0F 01 D9
}

fn on_gp(f: &mut InterruptFrame) {
    GP.fetch_add(1, Ordering::SeqCst);
    f.rip += 2; // RDMSR is 0F 32
}

fn on_timer(_f: &mut InterruptFrame) {
    TICKS.fetch_add(1, Ordering::SeqCst);
    wrmsr(0x80B, 0); // x2APIC EOI
}

fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn vmmcall(rax: u64, args: [u64; 3]) -> u64 {
    let mut rax = rax;
    // SAFETY: VMMCALL either traps to the microvisor (which only writes
    // guest memory at addresses passed here) or raises #UD, which `on_ud`
    // skips. RBX is reserved by LLVM, so it is swapped around the call.
    unsafe {
        asm!("xchg {b}, rbx", "vmmcall", "xchg {b}, rbx",
             b = inout(reg) args[0] => _, inout("rax") rax,
             inout("rcx") args[1] => _, inout("rdx") args[2] => _, options(nostack))
    };
    rax
}

fn mv(c: u32, args: [u64; 3]) -> i64 {
    vmmcall(HYPERCALL_MAGIC | c as u64, args) as i64
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: an unknown MSR raises #GP, which `on_gp` skips.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) };
    (hi as u64) << 32 | lo as u64
}

fn wrmsr(msr: u32, v: u64) {
    // SAFETY: only x2APIC registers are written, after x2APIC is enabled.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack))
    };
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: reading an unused port has no effect.
    unsafe { asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack)) };
    v
}

struct Tally {
    passed: u32,
    total: u32,
}

impl Tally {
    fn check(&mut self, name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
        self.total += 1;
        if ok {
            self.passed += 1;
        }
        println!("  [{}] {name}: {detail}", if ok { " ok " } else { "FAIL" });
        record!(
            "selftest",
            name = name,
            result = if ok { "pass" } else { "fail" },
            detail = detail
        );
    }
}

#[repr(C, align(64))]
struct Buf([u8; 128]);
static mut SNAPSHOT: Buf = Buf([0; 128]);

fn main(start_info_paddr: u64) -> ! {
    // SAFETY: the address the PVH loader passed in EBX.
    let si = unsafe { StartInfo::from_paddr(start_info_paddr) }.expect("start_info");
    // SAFETY: ring 0; plain LGDT/LIDT of bootkit's static tables.
    unsafe {
        bootkit::gdt::init(bootkit::gdt::lgdt);
        bootkit::idt::init(bootkit::idt::lidt);
    }
    idt::set_handler(6, Some(on_ud));
    idt::set_handler(13, Some(on_gp));
    idt::set_handler(TIMER_VECTOR, Some(on_timer));
    if let Some(kind) = si
        .cmdline()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("smpfault="))
    {
        smp_fault(kind);
    }
    let ram_end = si.ram().map(|r| r.end).max().unwrap_or(0);
    let hv = cpuid(1, 0)[2] & (1 << 31) != 0;
    println!("mv-testguest: hypervisor bit {hv}, RAM ends at {ram_end:#x}");
    let mut t = Tally {
        passed: 0,
        total: 0,
    };

    // Persona hypercall before opening.
    let r = vmmcall(HYPERCALL_MAGIC | code::EXITS_TOTAL as u64, [0; 3]);
    let ud = UD.load(Ordering::SeqCst);
    if hv {
        t.check(
            "closed-hypercall",
            r == u64::MAX && ud == 0,
            format_args!("bare: rax={r:#x}, #UD {ud}"),
        );
    } else {
        t.check("closed-hypercall", ud == 1, format_args!("none: #UD {ud}"));
    }

    // Hidden leaf.
    let wrong = cpuid(CPUID_LEAF, 0);
    t.check(
        "leaf-without-key",
        wrong == [0; 4],
        format_args!("{wrong:x?}"),
    );
    let l = cpuid(CPUID_LEAF, CPUID_KEY);
    let mut sig = [0u8; 12];
    for (i, w) in l[1..].iter().enumerate() {
        sig[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    t.check(
        "leaf-with-key",
        &sig == SIGNATURE,
        format_args!("eax={:#x} sig={:?}", l[0], core::str::from_utf8(&sig)),
    );

    // Counting.
    let r = mv(code::COUNTERS_RESET, [0; 3]);
    for _ in 0..10 {
        cpuid(0, 0);
    }
    for _ in 0..3 {
        inb(0x1234);
    }
    let gp0 = GP.load(Ordering::SeqCst);
    rdmsr(0x4fff_0000);
    let gp = GP.load(Ordering::SeqCst) - gp0;
    let cpuids = mv(code::COUNTER_READ, [class::EXIT_REASON, 0x72, 0]);
    let ports = mv(code::COUNTER_READ, [class::PORT, 0x1234, 0]);
    let msrs = mv(code::COUNTER_READ, [class::MSR, 0x4fff_0000, 0]);
    let calls = mv(
        code::COUNTER_READ,
        [
            class::HYPERCALL,
            HYPERCALL_MAGIC | code::COUNTER_READ as u64,
            0,
        ],
    );
    let bad_class = mv(code::COUNTER_READ, [9, 0, 0]);
    // The reset cleared the window; since then: 10 CPUID, 3 IN, 1 RDMSR and
    // 6 VMMCALLs including this one. The copy right after adds one more;
    // nothing is printed in between (every serial byte is an exit).
    let total = mv(code::EXITS_TOTAL, [0; 3]);
    let buf = core::ptr::addr_of!(SNAPSHOT) as u64;
    let n = mv(code::COUNTERS_COPY, [buf, 128, 0]);
    // SAFETY: the microvisor wrote into SNAPSHOT during the VMMCALL above;
    // nothing else touches it.
    let bytes = unsafe { &(*core::ptr::addr_of!(SNAPSHOT)).0 };
    let s = ExitSnapshot::read_from_prefix(bytes)
        .map(|(s, _)| s)
        .unwrap_or_default();
    t.check(
        "counters",
        r == 0 && cpuids == 10 && ports == 3 && msrs == 1 && gp == 1 && calls == 4 && bad_class == ERR_INVALID && total == 20,
        format_args!("reset {r}, cpuid {cpuids}, port 0x1234 {ports}, msr {msrs} (#GP {gp}), COUNTER_READ calls {calls}, bad class {bad_class}, total {total}"),
    );

    t.check(
        "counters-copy",
        n == 80 && s.total == 21 && s.cpuid == 10 && s.io == 3 && s.msr == 1 && s.vmmcall == 7,
        format_args!("returned {n}; {s:?}"),
    );
    let short = mv(code::COUNTERS_COPY, [buf, 79, 0]);
    let straddle = mv(code::COUNTERS_COPY, [ram_end - 40, 80, 0]);
    let huge = mv(code::COUNTERS_COPY, [u64::MAX - 8, 80, 0]);
    let unknown = mv(0x99, [0; 3]);
    t.check(
        "hypercall-errors",
        short == ERR_INVALID
            && straddle == ERR_INVALID
            && huge == ERR_INVALID
            && unknown == ERR_UNKNOWN,
        format_args!(
            "short {short}, straddling {straddle}, wrapping {huge}, unknown code {unknown}"
        ),
    );

    // Periodic x2APIC timer, woken from HLT.
    wrmsr(0x1B, 0xFEE0_0000 | 1 << 11 | 1 << 10 | 1 << 8);
    wrmsr(0x80F, 0x1FF);
    wrmsr(0x83E, 0xB); // divide by 1
    wrmsr(0x832, 1 << 17 | TIMER_VECTOR as u64); // periodic
    let hlt0 = mv(code::COUNTER_READ, [class::EXIT_REASON, 0x78, 0]);
    wrmsr(0x838, 2_000_000); // 2 ms at the nominal 1 GHz
    let mut halts = 0;
    while TICKS.load(Ordering::SeqCst) < 5 && halts < 100 {
        // SAFETY: STI;HLT waits for the timer interrupt; IF is 1 afterwards,
        // which this test kernel tolerates (its only interrupt is the timer).
        unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        halts += 1;
    }
    wrmsr(0x838, 0);
    let hlts = mv(code::COUNTER_READ, [class::EXIT_REASON, 0x78, 0]) - hlt0;
    let ticks = TICKS.load(Ordering::SeqCst);
    t.check(
        "periodic-timer-hlt",
        // One exit per wake-up at most (a HLT the microvisor stepped over
        // because an interrupt was injected in front of it costs none), and
        // no halt without a tick to end it: an idle guest does not spin.
        ticks >= 5 && hlts <= halts && halts as u64 <= ticks,
        format_args!("{ticks} ticks in {halts} halts, {hlts} HLT exits"),
    );

    // One-shot: the current count runs down, one interrupt, then nothing.
    // 30 ms, and up to three tries: on a loaded host the vCPU can stall for
    // milliseconds between two exits, and a count that ran out before it
    // was read proves nothing either way.
    // A periodic tick already pending when the count was zeroed is still
    // delivered (stopping a timer does not clear IRR, Intel SDM vol. 3A
    // 11.5.4): let it in now, so it is not counted as the one-shot's.
    for _ in 0..2 {
        let _ = mv(code::COUNTER_READ, [class::EXIT_REASON, 0x78, 0]);
        // SAFETY: a one-instruction interrupt window; the only interrupt
        // this test kernel takes is the timer's.
        unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) };
    }
    wrmsr(0x832, TIMER_VECTOR as u64); // one-shot
    let (mut fired, mut halts, mut c1, mut c2, mut c3) = (0, 0, 0, 0, 0);
    for _ in 0..3 {
        let before = TICKS.load(Ordering::SeqCst);
        wrmsr(0x838, 30_000_000); // 30 ms
        c1 = rdmsr(0x839);
        c2 = rdmsr(0x839);
        halts = 0;
        while TICKS.load(Ordering::SeqCst) == before && halts < 100 {
            // SAFETY: as above.
            unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
            halts += 1;
        }
        fired = TICKS.load(Ordering::SeqCst) - before;
        c3 = rdmsr(0x839);
        // Retried: a count that ran out before it was read, or a tick that
        // came while the count still ran (a late periodic one).
        if c2 != 0 && c3 == 0 {
            break;
        }
    }
    t.check(
        "one-shot-timer",
        fired == 1 && c1 <= 30_000_000 && c2 < c1 && c3 == 0,
        format_args!(
            "{fired} interrupt(s) after {halts} halt(s); current count {c1} -> {c2} -> {c3}"
        ),
    );

    let pass = t.passed == t.total;
    println!("Result: {}/{} passed", t.passed, t.total);
    record!(
        "done",
        passed = t.passed,
        total = t.total,
        verdict = if pass { "pass" } else { "fail" }
    );
    bootkit::exit::exit(if pass { ExitCode::Pass } else { ExitCode::Fail })
}

/// Where the APs start (SIPI vector 8, Intel SDM vol. 3A 9.4.4: an AP
/// begins in real mode at `vector << 12`); free RAM below the image.
const TRAMPOLINE: u64 = 0x8000;
/// The byte the `sipi-absent` AP sets once it runs.
const AP_FLAG: u64 = TRAMPOLINE + 0x20;

/// Real-mode code for the AP. `ap-triple`: `lidt [0x8010]` (a 6-byte
/// descriptor of limit 0 there), `ud2`: #UD, then #GP and #DF find no
/// gate in a zero-limit IVT, a shutdown (SDM vol. 3A 6.15 "Interrupt 8").
/// `ap-spin`: `cli; jmp $`. Otherwise: `mov byte [0x8020], 1; cli; hlt;
/// jmp back to the hlt`.
fn ap_code(kind: &str) -> &'static [u8] {
    match kind {
        "ap-triple" => &[0x0F, 0x01, 0x1E, 0x10, 0x80, 0x0F, 0x0B, 0xEB, 0xFE],
        "ap-spin" => &[0xFA, 0xEB, 0xFE],
        _ => &[0xC6, 0x06, 0x20, 0x80, 0x01, 0xFA, 0xF4, 0xEB, 0xFD],
    }
}

/// x2APIC ICR (MSR 0x830, SDM vol. 3A 11.12.9): INIT, level assert
/// (delivery mode 101b, bit 14), then a Start-up IPI (110b) with vector 8,
/// to x2APIC ID `dest`.
fn init_sipi(dest: u32) {
    let d = u64::from(dest) << 32;
    wrmsr(0x830, d | 0x4500);
    wrmsr(0x830, d | 0x4600 | (TRAMPOLINE >> 12));
}

/// Runs fault case `kind` on a guest with two vCPUs: starts vCPU 1 in
/// real mode on [`ap_code`] and waits on a 1 ms periodic timer with
/// `sti; hlt`, so the boot vCPU always makes progress. `ap-triple` and
/// `ap-spin` never end on their own: the microvisor must end the run
/// (triple fault, watchdog) naming vCPU 1. `sipi-absent` first starts
/// APIC ID 7, which does not exist, then vCPU 1, and passes when vCPU 1
/// ran.
fn smp_fault(kind: &str) -> ! {
    println!("mv-testguest: smpfault={kind}");
    let code = ap_code(kind);
    // SAFETY: 0x8000..0x9000 is free RAM of this guest (below its image,
    // above the boot information), identity mapped; no AP runs yet.
    unsafe {
        let page = TRAMPOLINE as *mut u8;
        core::ptr::write_bytes(page, 0, 0x40);
        core::ptr::copy_nonoverlapping(code.as_ptr(), page, code.len());
    }
    // x2APIC on, software enabled, 1 ms periodic timer (1 GHz nominal bus
    // clock, divide by 1).
    wrmsr(0x1B, 0xFEE0_0000 | 1 << 11 | 1 << 10 | 1 << 8);
    wrmsr(0x80F, 0x1FF);
    wrmsr(0x83E, 0xB);
    wrmsr(0x832, 1 << 17 | TIMER_VECTOR as u64);
    wrmsr(0x838, 1_000_000);
    if kind == "sipi-absent" {
        init_sipi(7);
    }
    init_sipi(1);
    let mut t = Tally {
        passed: 0,
        total: 0,
    };
    loop {
        // SAFETY: STI;HLT waits for the timer (the only interrupt).
        unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        let ticks = TICKS.load(Ordering::SeqCst);
        if kind != "sipi-absent" {
            continue;
        }
        // SAFETY: the AP writes this byte once; a volatile read of RAM.
        let ran = unsafe { core::ptr::read_volatile(AP_FLAG as *const u8) } == 1;
        if ran || ticks >= 2000 {
            t.check(
                "sipi-absent",
                ran,
                format_args!("vCPU 1 ran after a SIPI to absent APIC ID 7: {ran} ({ticks} ticks)"),
            );
            vcpu_counters(&mut t);
            let pass = t.passed == t.total;
            record!(
                "done",
                passed = t.passed,
                total = t.total,
                verdict = if pass { "pass" } else { "fail" }
            );
            bootkit::exit::exit(if pass { ExitCode::Pass } else { ExitCode::Fail })
        }
    }
}

/// The per-vCPU hidden hypercalls after vCPU 1 ran `cli; hlt`: the count,
/// vCPU 1's own exits (its HLT among them, and none of the boot vCPU's
/// VMMCALLs), its stolen time, and indices past the last vCPU refused.
fn vcpu_counters(t: &mut Tally) {
    let _ = cpuid(CPUID_LEAF, CPUID_KEY);
    let n = mv(code::VCPUS, [0; 3]);
    let buf = core::ptr::addr_of!(SNAPSHOT) as u64;
    let copied = mv(code::VCPU_COUNTERS_COPY, [1, buf, 128]);
    // SAFETY: the microvisor wrote into SNAPSHOT during the VMMCALL above;
    // nothing else touches it.
    let bytes = unsafe { &(*core::ptr::addr_of!(SNAPSHOT)).0 };
    let s = ExitSnapshot::read_from_prefix(bytes)
        .map(|(s, _)| s)
        .unwrap_or_default();
    let stolen = mv(code::VCPU_STOLEN_NS, [1, 0, 0]);
    let bad_copy = mv(code::VCPU_COUNTERS_COPY, [2, buf, 128]);
    let bad_stolen = mv(code::VCPU_STOLEN_NS, [2, 0, 0]);
    t.check(
        "vcpu-counters",
        n == 2
            && copied == 80
            && s.hlt == 1
            && s.vmmcall == 0
            && s.total >= 1
            && stolen >= 0
            && bad_copy == ERR_INVALID
            && bad_stolen == ERR_INVALID,
        format_args!(
            "vcpus {n}; vCPU 1: copied {copied}, total {}, hlt {}, vmmcall {}, stolen {stolen} ns; index 2: {bad_copy}, {bad_stolen}",
            s.total, s.hlt, s.vmmcall
        ),
    );
}
