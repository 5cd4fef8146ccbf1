//! The hostile-guest cases of `fault=<kind>` (issue 16, docs/hostile-guests.md):
//! hypercall arguments aimed at the microvisor's own memory, garbage in
//! every hidden counter call, Hyper-V rep hypercalls with huge counts and
//! page-crossing lists, a hypercall page aliased writable and rewritten,
//! and self-IPI storms. Each returns an [`Outcome`]: the microvisor must
//! answer every call with an error code (or the documented result) and
//! keep running; the microvisor's own `mv.integrity` record shows its
//! memory was not touched.

use crate::hypercall::Microvisor;
use crate::interrupts::{self, IPI_VECTOR};
use crate::paging::{self, AddressSpace, BAD_MEMORY_PA, PAGE};
use crate::selftest::{check, fail, wait_until, Outcome};
use crate::text;
use pvops_abi::hyperv::{
    call, flush_flags, gva_range, msr, page_msr, Control, FlushVirtualAddressSpace,
    HypercallResult, Status, HYPERCALL_PAGE_SVM,
};
use pvops_abi::microvisor::{
    class, code, ExitSnapshot, CPUID_KEY, CPUID_LEAF, ERR_INVALID, ERR_UNKNOWN, SIGNATURE,
};

/// What the hostile cases need from the kernel.
pub struct Env<'a> {
    /// The kernel's page tables (the test window maps aliases).
    pub aspace: &'a AddressSpace,
    /// One past the highest guest-physical RAM byte (start_info memory map).
    pub ram_end: u64,
    /// This CPU's APIC ID (self-IPIs).
    pub apic_id: u32,
    /// A scratch frame owned by the cases (identity mapped).
    pub scratch: u64,
}

/// Where the microvisor's image is linked and loaded in host memory
/// (bootkit/link.ld: 1 MiB); its text, statics and nested page tables
/// live there.
const MICROVISOR_IMAGE_HPA: u64 = 0x10_0000;
/// The local APIC's MMIO page (Intel SDM vol. 3A, 11.4.1): no guest RAM.
const LAPIC_MMIO: u64 = 0xFEE0_0000;
/// The I/O APIC's usual MMIO page on a PC: no guest RAM under the microvisor.
const IOAPIC_MMIO: u64 = 0xFEC0_0000;
/// Size of the snapshot COUNTERS_COPY writes.
const SNAPSHOT_LEN: u64 = core::mem::size_of::<ExitSnapshot>() as u64;
/// Fill pattern of untouched scratch memory.
const CANARY: u64 = 0xC0FF_EE00_DEAD_BEEF;

/// Guest-physical pointers that alias nothing of the guest's: past the end
/// of its RAM, crossing that end, wrapping around 2^64, MMIO holes, and the
/// microvisor's own image reached by wrap-around from every 2 MiB-aligned
/// host base guest RAM can have (16 MiB..4 GiB, see microvisor/src/lib.rs)
/// — a handler computing `host base + gpa` without its bound check would
/// write into the microvisor. Every COUNTERS_COPY to them must return
/// ERR_INVALID; one to the scratch frame must succeed (the call works).
pub fn into_microvisor(env: &Env<'_>) -> Outcome {
    let Some(mv) = Microvisor::detect() else {
        return fail(text!("no microvisor"));
    };
    paging::fill_frame(env.scratch, CANARY);
    let ok = mv.call(code::COUNTERS_COPY, [env.scratch, SNAPSHOT_LEN, 0]);
    if ok != SNAPSHOT_LEN as i64 {
        return fail(text!("COUNTERS_COPY to own RAM returned {ok}"));
    }
    let (mut tried, mut wrong, mut first) = (0u64, 0u64, None);
    let mut probe = |gpa: u64, len: u64| {
        tried += 1;
        let r = mv.call(code::COUNTERS_COPY, [gpa, len, 0]);
        if r != ERR_INVALID {
            wrong += 1;
            first.get_or_insert((gpa, len, r));
        }
    };
    let end = env.ram_end;
    for (gpa, len) in [
        (end, SNAPSHOT_LEN),
        (end - 8, SNAPSHOT_LEN),
        (end - SNAPSHOT_LEN + 1, SNAPSHOT_LEN),
        (end, 4096),
        (end + (2 << 20), 4096),
        (u64::MAX - 7, SNAPSHOT_LEN),
        (u64::MAX, 4096),
        (0x1000, u64::MAX),
        (0x1000, u64::MAX - 0x0FFF),
        (LAPIC_MMIO, SNAPSHOT_LEN),
        (IOAPIC_MMIO, SNAPSHOT_LEN),
        (BAD_MEMORY_PA, SNAPSHOT_LEN),
        (1 << 52, SNAPSHOT_LEN),
        (MICROVISOR_IMAGE_HPA | (1 << 63), SNAPSHOT_LEN),
    ] {
        probe(gpa, len);
    }
    let mut base = 16u64 << 20;
    while base < 4 << 30 {
        probe(MICROVISOR_IMAGE_HPA.wrapping_sub(base), 4096);
        base += 2 << 20;
    }
    // The valid copy wrote exactly the snapshot: the rest of the frame
    // still holds the canary.
    let tail_ok =
        (SNAPSHOT_LEN as usize / 8..512).all(|i| paging::read_frame(env.scratch, i) == CANARY);
    match first {
        Some((gpa, len, r)) => fail(text!(
            "{wrong} of {tried} out-of-RAM pointers accepted; first gpa={gpa:#x} len={len:#x} returned {r}"
        )),
        None => check(
            tail_ok,
            text!(
                "{tried} COUNTERS_COPY pointers outside RAM {end:#x} (end, crossing, wrapping, MMIO, microvisor image by wrap-around) all returned {ERR_INVALID}; copy to own RAM wrote {SNAPSHOT_LEN} bytes only: {tail_ok}"
            ),
        ),
    }
}

/// A small xorshift generator (Marsaglia, "Xorshift RNGs", 2003): the
/// same garbage on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Garbage in every hidden counter call: unknown function numbers with
/// random arguments (ERR_UNKNOWN), COUNTER_READ with unknown classes
/// (ERR_INVALID) or random keys (a count), COUNTERS_COPY with short or
/// huge lengths and random pointers (ERR_INVALID, nothing written), a
/// COUNTERS_COPY with a page-sized buffer (exactly the snapshot written),
/// COUNTERS_RESET / EXITS_TOTAL with garbage arguments (ignored); then the
/// counters still count.
pub fn counter_garbage(env: &Env<'_>) -> Outcome {
    let Some(mv) = Microvisor::detect() else {
        return fail(text!("no microvisor"));
    };
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let (mut calls, mut wrong) = (0u64, 0u64);
    let mut first: Option<(u32, [u64; 3], i64)> = None;
    let mut expect = |c: u32, args: [u64; 3], good: &dyn Fn(i64) -> bool| {
        calls += 1;
        let r = mv.call(c, args);
        if !good(r) {
            wrong += 1;
            first.get_or_insert((c, args, r));
        }
    };
    // Unknown function numbers: fixed edges, then random ones.
    for c in [0, 5, 6, 0xFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF] {
        expect(c, [u64::MAX; 3], &|r| r == ERR_UNKNOWN);
    }
    for _ in 0..1000 {
        let c = rng.next() as u32;
        let args = [rng.next(), rng.next(), rng.next()];
        if (code::COUNTERS_RESET..=code::COUNTERS_COPY).contains(&c) {
            continue;
        }
        expect(c, args, &|r| r == ERR_UNKNOWN);
    }
    // COUNTER_READ: unknown classes, then known classes with random keys.
    for cls in [4, 5, 0xFF, 1 << 32, u64::MAX] {
        expect(code::COUNTER_READ, [cls, rng.next(), rng.next()], &|r| {
            r == ERR_INVALID
        });
    }
    for _ in 0..200 {
        let cls = rng.next();
        let args = [cls, rng.next(), rng.next()];
        if cls <= class::HYPERCALL {
            continue;
        }
        expect(code::COUNTER_READ, args, &|r| r == ERR_INVALID);
    }
    for cls in class::EXIT_REASON..=class::HYPERCALL {
        expect(code::COUNTER_READ, [cls, rng.next(), 0], &|r| r >= 0);
    }
    // COUNTERS_COPY: short lengths into own RAM write nothing.
    paging::fill_frame(env.scratch, CANARY);
    for len in [0, 1, 8, SNAPSHOT_LEN - 1] {
        expect(code::COUNTERS_COPY, [env.scratch, len, 0], &|r| {
            r == ERR_INVALID
        });
    }
    // Random pointers at or above the end of RAM.
    for _ in 0..200 {
        let gpa = env.ram_end.saturating_add(rng.next() >> 1);
        expect(code::COUNTERS_COPY, [gpa, SNAPSHOT_LEN, rng.next()], &|r| {
            r == ERR_INVALID
        });
    }
    let untouched = (0..512).all(|i| paging::read_frame(env.scratch, i) == CANARY);
    // A page-sized buffer 8 bytes into the frame: exactly the snapshot.
    let at = env.scratch + 8;
    expect(code::COUNTERS_COPY, [at, PAGE - 8, u64::MAX], &|r| {
        r == SNAPSHOT_LEN as i64
    });
    let words = SNAPSHOT_LEN as usize / 8;
    let exact = paging::read_frame(env.scratch, 0) == CANARY
        && (1 + words..512).all(|i| paging::read_frame(env.scratch, i) == CANARY);
    // The keyed CPUID leaf: wrong keys, and the key at the leaves around
    // it, never give the signature.
    let mut leaked = 0u32;
    {
        use pvops_probe::CpuidSource;
        let sig = |leaf: u32, sub: u32| {
            let r = pvops_probe::NativeCpuid.cpuid(leaf, sub);
            let mut b = [0u8; 12];
            b[0..4].copy_from_slice(&r.ebx.to_le_bytes());
            b[4..8].copy_from_slice(&r.ecx.to_le_bytes());
            b[8..12].copy_from_slice(&r.edx.to_le_bytes());
            &b == SIGNATURE
        };
        for _ in 0..300 {
            let key = rng.next() as u32;
            if key != CPUID_KEY && sig(CPUID_LEAF, key) {
                leaked += 1;
            }
        }
        for leaf in [
            CPUID_LEAF - 1,
            CPUID_LEAF + 1,
            CPUID_LEAF | 0xF,
            0x4000_0000 | 0xFFF0,
        ] {
            if sig(leaf, CPUID_KEY) {
                leaked += 1;
            }
        }
        if !sig(CPUID_LEAF, CPUID_KEY) {
            leaked += 1;
        }
    }
    // Reset and total ignore their arguments.
    expect(
        code::EXITS_TOTAL,
        [rng.next(), rng.next(), rng.next()],
        &|r| r > 0,
    );
    expect(
        code::COUNTERS_RESET,
        [rng.next(), rng.next(), rng.next()],
        &|r| r == 0,
    );
    // The window counts again from zero: this call's own exit, plus at
    // most a host timer interrupt or two.
    let total = mv.call(code::EXITS_TOTAL, [0; 3]);
    let counting = (1..=3).contains(&total);
    match first {
        Some((c, a, r)) => fail(text!(
            "{wrong} of {calls} garbage calls answered wrongly; first code={c:#x} args={a:#x?} returned {r}"
        )),
        None => check(
            untouched && exact && counting && leaked == 0,
            text!(
                "{calls} garbage counter calls refused or answered; keyed CPUID (300 wrong keys, 4 wrong leaves, the key) wrong answers: {leaked}/305; rejected copies wrote nothing: {untouched}; page-sized copy exact: {exact}; window after reset: {total}"
            ),
        ),
    }
}

/// A Hyper-V hypercall through the code at `entry` (the hypercall page or
/// an alias of it): RCX = control, RDX = input GPA, R8 = output GPA,
/// result in RAX (TLFS, Hypercall Interface, x64 register mapping).
///
/// # Safety
/// `entry` must be executable code that returns (the hypercall page's
/// VMMCALL; RET, or whatever the caller put there).
unsafe fn hv_call(entry: u64, control: Control, input: u64, output: u64) -> HypercallResult {
    let rax: u64;
    // SAFETY: forwarded to the caller; the call clobbers only what the C
    // ABI lets a callee clobber (declared), and the stack has no red zone
    // on this target.
    unsafe {
        core::arch::asm!(
            "call {entry}",
            entry = in(reg) entry,
            inout("rcx") control.0 => _,
            inout("rdx") input => _,
            inout("r8") output => _,
            out("rax") rax,
            clobber_abi("C"),
        )
    };
    HypercallResult(rax)
}

/// The hypercall page's GPA (identity mapped), when the Hyper-V backend
/// enabled it; else the MSR's value.
fn hypercall_page() -> Result<u64, u64> {
    // SAFETY: only under the hyperv persona, which implements the MSR
    // (TLFS, HV_X64_MSR_HYPERCALL); the scenario picks the persona.
    let v = unsafe { pvops::cpu::read_msr(msr::HYPERCALL) };
    if !page_msr::is_enabled(v) {
        return Err(v);
    }
    Ok(page_msr::address(v))
}

/// The failure when the hypercall page is not enabled.
fn no_hypercall_page(msr_value: u64) -> Outcome {
    fail(text!(
        "hypercall page not enabled (HV_X64_MSR_HYPERCALL = {msr_value:#x})"
    ))
}

/// HvCallFlushVirtualAddressList (a rep call) and its simple sibling with
/// huge rep counts, lists crossing the input page, bad rep starts,
/// reserved control bits and input pointers outside RAM: each gets the
/// TLFS status the persona documents (microvisor/src/personas/hyperv/
/// hypercalls.rs), never a partial list read past the page.
pub fn hyperv_rep(env: &Env<'_>) -> Outcome {
    let page = match hypercall_page() {
        Ok(p) => p,
        Err(v) => return no_hypercall_page(v),
    };
    let header = FlushVirtualAddressSpace {
        address_space: 0,
        flags: flush_flags::ALL_PROCESSORS | flush_flags::ALL_VIRTUAL_ADDRESS_SPACES,
        processor_mask: 1,
    }
    .to_bytes();
    let f = env.scratch;
    paging::fill_frame(f, gva_range(0x40_0000, 0));
    for (i, w) in header.chunks(8).enumerate() {
        write_word(f, i, u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
    }
    let list = Control::new(call::FLUSH_VIRTUAL_ADDRESS_LIST);
    let simple = Control::new(call::FLUSH_VIRTUAL_ADDRESS_SPACE);
    // Elements that fit one page behind the 24-byte header.
    let fit = ((PAGE - 24) / 8) as u16;
    let cases: [(&str, Control, u64, Status, u16); 13] = [
        ("rep 3", list.with_rep_count(3), f, Status::SUCCESS, 3),
        (
            "rep that fills the page",
            list.with_rep_count(fit),
            f,
            Status::SUCCESS,
            fit,
        ),
        (
            "rep one past the page",
            list.with_rep_count(fit + 1),
            f,
            Status::INVALID_ALIGNMENT,
            0,
        ),
        (
            "rep 4095 (max)",
            list.with_rep_count(Control::REP_MAX),
            f,
            Status::INVALID_ALIGNMENT,
            0,
        ),
        (
            "list crossing the page",
            list.with_rep_count(2),
            f + PAGE - 32,
            Status::INVALID_ALIGNMENT,
            0,
        ),
        ("rep 0", list, f, Status::INVALID_HYPERCALL_INPUT, 0),
        (
            "start = count",
            list.with_rep_count(5).with_rep_start(5),
            f,
            Status::INVALID_HYPERCALL_INPUT,
            0,
        ),
        (
            "reserved bits 47:44",
            Control(list.with_rep_count(1).0 | 0xF << 44),
            f,
            Status::INVALID_HYPERCALL_INPUT,
            0,
        ),
        (
            "fast rep",
            list.with_rep_count(1).fast(),
            f,
            Status::INVALID_HYPERCALL_INPUT,
            0,
        ),
        (
            "simple call with reps",
            simple.with_rep_count(1),
            f,
            Status::INVALID_HYPERCALL_INPUT,
            0,
        ),
        (
            "input past RAM",
            list.with_rep_count(1),
            env.ram_end,
            Status::INVALID_ALIGNMENT,
            0,
        ),
        (
            "input wrapping 2^64",
            list.with_rep_count(1),
            0u64.wrapping_sub(PAGE),
            Status::INVALID_ALIGNMENT,
            0,
        ),
        (
            "input misaligned",
            list.with_rep_count(1),
            f + 4,
            Status::INVALID_ALIGNMENT,
            0,
        ),
    ];
    for (what, control, input, status, reps) in cases {
        // SAFETY: the hypercall page holds the persona's VMMCALL; RET.
        let r = unsafe { hv_call(page, control, input, 0) };
        if r.status() != status || r.reps_completed() != reps {
            return fail(text!(
                "{what}: control {:#x} input {input:#x} gave status {:#x} reps {}, expected {:#x} reps {reps}",
                control.0,
                r.status().0,
                r.reps_completed(),
                status.0
            ));
        }
    }
    check(
        true,
        text!("13 flush-list calls (huge and page-crossing rep counts, bad starts, bad inputs) got their TLFS status"),
    )
}

/// The test-window slot the alias uses (the self-tests use the low ones).
const ALIAS_SLOT: usize = paging::TEST_SLOTS - 1;

/// Aliases the hypercall page: maps its frame a second time, writable, in
/// the test window; calls through the alias (a VMMCALL from an address the
/// persona never wrote is still the hypercall); rewrites the page through
/// the alias (`mov rax, 42; ret`): a call through the original address now
/// runs the guest's own code and makes no exit; restores it; the original
/// works again. The microvisor treats the page as the guest's RAM (as
/// QEMU/KVM do): the guest can break only its own hypercalls.
pub fn alias_hypercall_page(env: &Env<'_>) -> Outcome {
    let page = match hypercall_page() {
        Ok(p) => p,
        Err(v) => return no_hypercall_page(v),
    };
    let Some(mv) = Microvisor::detect() else {
        return fail(text!("no microvisor"));
    };
    let alias = AddressSpace::test_va(ALIAS_SLOT);
    env.aspace.map_test(ALIAS_SLOT, page, false);
    pvops::mmu::flush_page(alias);
    let original = env.aspace.read_test(ALIAS_SLOT, 0);
    let code_ok = original.to_le_bytes()[..4] == HYPERCALL_PAGE_SVM;
    // An empty-mask cluster IPI (fast): succeeds and delivers nothing.
    let ipi = Control::new(call::SEND_SYNTHETIC_CLUSTER_IPI).fast();
    let vmmcalls = || {
        mv.call(
            code::COUNTER_READ,
            [class::EXIT_REASON, SVM_EXIT_VMMCALL, 0],
        )
    };
    mv.call(code::COUNTERS_RESET, [0; 3]);
    // SAFETY: the alias maps the hypercall page (VMMCALL; RET).
    let via_alias = unsafe { hv_call(alias, ipi, 0xF0, 0) };
    let exits_alias = vmmcalls();
    // mov rax, 42; ret (48 C7 C0 2A 00 00 00 C3).
    let own_code = u64::from_le_bytes([0x48, 0xC7, 0xC0, 0x2A, 0x00, 0x00, 0x00, 0xC3]);
    env.aspace.write_test(ALIAS_SLOT, 0, own_code);
    // Serializes before running the modified code (Intel SDM vol. 3A,
    // 8.1.3, cross-modifying code).
    let _ = pvops::cpu::cpuid(0, 0);
    mv.call(code::COUNTERS_RESET, [0; 3]);
    // SAFETY: the page now holds the guest's own `mov rax, 42; ret`.
    let rewritten = unsafe { hv_call(page, ipi, 0xF0, 0) };
    let exits_rewritten = vmmcalls();
    env.aspace.write_test(ALIAS_SLOT, 0, original);
    let _ = pvops::cpu::cpuid(0, 0);
    // SAFETY: restored: VMMCALL; RET again.
    let restored = unsafe { hv_call(page, ipi, 0xF0, 0) };
    env.aspace.unmap_test(ALIAS_SLOT);
    pvops::mmu::flush_page(alias);
    check(
        code_ok
            && via_alias.status() == Status::SUCCESS
            && exits_alias == 2
            && rewritten.0 == 42
            && exits_rewritten == 1
            && restored.status() == Status::SUCCESS,
        text!(
            "page {page:#x} aliased at {alias:#x}: code VMMCALL;RET {code_ok}; call via alias status {:#x} with {exits_alias} VMMCALL exit(s) (2 = it + the count read); rewritten page returned {} with {exits_rewritten} exit(s) (1 = the count read); restored status {:#x}",
            via_alias.status().0,
            rewritten.0,
            restored.status().0
        ),
    )
}

/// The SVM exit code of VMMCALL (AMD APM vol. 2, appendix C), the key of
/// its exit counter.
const SVM_EXIT_VMMCALL: u64 = 0x81;

/// A Xen hypercall made directly with VMMCALL (64-bit HVM convention,
/// xen.h: number in RAX, arguments in RDI, RSI; result in RAX).
///
/// # Safety
/// Only under a hypervisor that intercepts VMMCALL (the scenario boots the
/// xen persona); the call may write guest memory at `a2`.
unsafe fn xen_call(nr: u64, a1: u64, a2: u64) -> i64 {
    let mut rax = nr;
    // SAFETY: forwarded to the caller.
    unsafe {
        core::arch::asm!(
            "vmmcall",
            inout("rax") rax,
            in("rdi") a1,
            in("rsi") a2,
            options(nostack)
        )
    };
    rax as i64
}

/// `__HYPERVISOR_xen_version` and its `XENVER_get_features` (xen.h,
/// version.h): reads and writes an 8-byte `xen_feature_info` at a
/// guest-virtual pointer.
const XEN_VERSION: u64 = 17;
const XENVER_GET_FEATURES: u64 = 6;
/// -EFAULT (Xen errno.h).
const EFAULT: i64 = -14;
/// Test-window slots of the Xen pointer case.
const XEN_SLOTS: [usize; 3] = [
    paging::TEST_SLOTS - 8,
    paging::TEST_SLOTS - 7,
    paging::TEST_SLOTS - 6,
];

/// Xen's hypercall arguments are guest-virtual: the persona walks the
/// guest's page tables. The guest points `XENVER_get_features` at its own
/// page-table entries aimed outside its RAM (past its end, the LAPIC page,
/// the highest physical page), at an unmapped page, at the 12 GiB mapping,
/// across into an unmapped page, at a non-canonical alias of a valid
/// pointer and across 2^64: each must be -EFAULT with nothing written; the
/// same call on a mapped buffer succeeds.
pub fn xen_pointers(env: &Env<'_>) -> Outcome {
    let [good, bad, hole] = XEN_SLOTS;
    paging::fill_frame(env.scratch, CANARY);
    env.aspace.map_test(good, env.scratch, false);
    env.aspace.unmap_test(hole);
    let va = |slot| AddressSpace::test_va(slot);
    let call = |gva: u64| {
        // SAFETY: the xen persona intercepts VMMCALL; the only memory it
        // may write is the 8 bytes at `gva`, the guest's own scratch page
        // or nothing.
        unsafe { xen_call(XEN_VERSION, XENVER_GET_FEATURES, gva) }
    };
    // submap_idx = 0 at offset 0x100 of the good page.
    env.aspace.write_test(good, 0x100 / 8, 0);
    pvops::mmu::flush_all();
    let ok = call(va(good) + 0x100);
    let submap = env.aspace.read_test(good, 0x100 / 8) >> 32;
    env.aspace.write_test(good, 0x100 / 8, CANARY);
    let mut bad_frames = [env.ram_end, LAPIC_MMIO, 0x000F_FFFF_FFFF_F000].into_iter();
    let mut cases: [(&str, u64, i64); 9] = [("", 0, 0); 9];
    let mut n = 0;
    let mut note = |what: &'static str, gva: u64, r: i64| {
        cases[n] = (what, gva, r);
        n += 1;
    };
    for what in ["past RAM", "LAPIC page", "highest physical page"] {
        let frame = bad_frames.next().unwrap_or(0);
        env.aspace.map_test(bad, frame, false);
        pvops::mmu::flush_page(va(bad));
        note(what, va(bad), call(va(bad)));
    }
    env.aspace.unmap_test(bad);
    pvops::mmu::flush_page(va(bad));
    note("unmapped page", va(hole), call(va(hole)));
    note("12 GiB mapping", BAD_MEMORY_PA, call(BAD_MEMORY_PA));
    // Slot `good + 1` is `bad`, now unmapped: 4 bytes in, 4 out.
    note(
        "crossing into unmapped",
        va(good) + PAGE - 4,
        call(va(good) + PAGE - 4),
    );
    note(
        "non-canonical alias",
        (va(good) + 0x100) ^ (1 << 63),
        call((va(good) + 0x100) ^ (1 << 63)),
    );
    note("crossing 2^64", u64::MAX - 3, call(u64::MAX - 3));
    note(
        "kernel half, unmapped",
        0xFFFF_8000_0000_0000,
        call(0xFFFF_8000_0000_0000),
    );
    let untouched = (0..512).all(|i| paging::read_frame(env.scratch, i) == CANARY);
    env.aspace.unmap_test(good);
    pvops::mmu::flush_all();
    if ok != 0 || submap == 0 {
        return fail(text!(
            "XENVER_get_features on a mapped buffer returned {ok}, submap {submap:#x}"
        ));
    }
    if let Some((what, gva, r)) = cases.iter().find(|c| c.2 != EFAULT) {
        return fail(text!(
            "{what}: gva {gva:#x} returned {r}, expected {EFAULT}"
        ));
    }
    check(
        untouched,
        text!("mapped buffer: 0, submap {submap:#x}; {n} bad guest-virtual pointers (PTEs past RAM, LAPIC, top page; unmapped; 12 GiB; crossing; non-canonical; wrapping) all {EFAULT}; nothing written: {untouched}"),
    )
}

/// Self-IPIs sent in each storm.
const STORM: u64 = 20_000;

/// Interrupt storms: `STORM` self-IPIs with interrupts on (each delivered
/// and acknowledged before the next is sent), then `STORM` with interrupts
/// off (they coalesce in the IRR, Intel SDM vol. 3A, 11.8.4: exactly one
/// is delivered once interrupts are enabled).
pub fn ipi_storm(env: &Env<'_>) -> Outcome {
    let flags = pvops::irq::save_flags();
    let before = interrupts::ipi_count();
    pvops::irq::enable();
    for _ in 0..STORM {
        pvops::irq::send_ipi(env.apic_id, IPI_VECTOR);
    }
    let on_target = before + STORM;
    let _ = wait_until(2_000, || interrupts::ipi_count() >= on_target);
    let with_if = interrupts::ipi_count() - before;
    pvops::irq::disable();
    let before = interrupts::ipi_count();
    for _ in 0..STORM {
        pvops::irq::send_ipi(env.apic_id, IPI_VECTOR);
    }
    let while_off = interrupts::ipi_count() - before;
    let _ = wait_until(200, || interrupts::ipi_count() > before);
    let _ = wait_until(50, || false);
    let without_if = interrupts::ipi_count() - before;
    pvops::irq::restore_flags(flags);
    check(
        with_if == STORM && while_off == 0 && without_if == 1,
        text!(
            "{STORM} self-IPIs with IF=1: {with_if} delivered (expected all); {STORM} with IF=0: {while_off} delivered while off, {without_if} after STI (expected 1, coalesced)"
        ),
    )
}

/// KVM's shared structures registered at GPAs outside guest RAM
/// (Documentation/virt/kvm/x86/msr.rst): the wall clock 4 bytes before the
/// end of RAM (its 12 bytes cross it), kvmclock 16 bytes before the end
/// (32 bytes cross it) and at the highest physical page, steal time and
/// PV EOI just past the end. The persona must write none of them (as KVM,
/// which ignores a GPA it cannot map): the last page of guest RAM keeps
/// its canary, and the microvisor's `guard-above` range (host RAM right
/// after guest RAM) stays unchanged (`mv.integrity`). The guest's own
/// registrations are restored afterwards.
pub fn kvm_shared_pages(env: &Env<'_>) -> Outcome {
    use pvops_abi::kvm::msr as m;
    let end = env.ram_end;
    let last = end - PAGE;
    let read = |msr| {
        // SAFETY: the kvm persona implements these MSRs (the scenario
        // picks it); reads have no side effects.
        unsafe { pvops::cpu::read_msr(msr) }
    };
    let write = |msr, v| {
        // SAFETY: as above; the values point outside guest RAM on purpose
        // and the guest's own registrations are written back below.
        unsafe { crate::faults::wrmsr_catching_gp(msr, v) }
    };
    let flags = pvops::irq::save_flags();
    pvops::irq::disable();
    let saved = [
        (m::SYSTEM_TIME_NEW, read(m::SYSTEM_TIME_NEW)),
        (m::STEAL_TIME, read(m::STEAL_TIME)),
        (m::PV_EOI_EN, read(m::PV_EOI_EN)),
    ];
    paging::fill_frame(last, CANARY);
    let accepted = [
        write(m::WALL_CLOCK_NEW, end - 4),
        write(m::SYSTEM_TIME_NEW, (end - 16) | m::ENABLED),
        write(m::SYSTEM_TIME_NEW, 0x000F_FFFF_FFFF_F000 | m::ENABLED),
        write(m::STEAL_TIME, end | m::ENABLED),
        write(m::PV_EOI_EN, end | m::ENABLED),
    ];
    // A few exits for the persona's per-entry updates (steal time, PV EOI).
    for _ in 0..100 {
        let _ = pvops::cpu::cpuid(0, 0);
    }
    for (msr, v) in saved {
        write(msr, v);
    }
    let untouched = (0..512).all(|i| paging::read_frame(last, i) == CANARY);
    paging::fill_frame(last, 0);
    pvops::irq::restore_flags(flags);
    check(
        untouched && accepted.iter().all(|&a| a),
        text!(
            "wall clock, kvmclock (twice), steal time, PV EOI registered across or past the end of RAM {end:#x}: accepted {accepted:?} (KVM accepts and ignores), last RAM page untouched: {untouched}"
        ),
    )
}

/// Timer interrupts the storm must see.
const TIMER_STORM: u64 = 500;

/// A timer storm: the LAPIC timer in periodic mode with initial count 1 and
/// divide-by-1 (a 1 ns period on the 1 GHz bus the microvisor emulates),
/// with interrupts on, while the main loop counts its own iterations until
/// `TIMER_STORM` interrupts arrived. The guest must still make progress
/// between interrupts (else it livelocks in its handler and, since every
/// delivered interrupt counts as progress, no watchdog ends the run).
pub fn timer_storm() -> Outcome {
    use pvops::native::apic::{read, timer_mode, write, Register};
    let flags = pvops::irq::save_flags();
    pvops::irq::disable();
    let (lvt, divide) = (read(Register::LvtTimer), read(Register::TimerDivide));
    let before = interrupts::timer_count();
    // Divide configuration 1011b = divide by 1 (Intel SDM vol. 3A, 11.5.4).
    write(Register::TimerDivide, 0b1011);
    write(
        Register::LvtTimer,
        u32::from(interrupts::TIMER_VECTOR) | timer_mode::PERIODIC,
    );
    write(Register::TimerInitialCount, 1);
    pvops::irq::enable();
    let mut spins = 0u64;
    while interrupts::timer_count() - before < TIMER_STORM && spins < 2_000_000_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    pvops::irq::disable();
    write(Register::TimerInitialCount, 0);
    write(Register::LvtTimer, lvt);
    write(Register::TimerDivide, divide);
    // Take a storm interrupt still pending before the self-tests count theirs.
    let _ = wait_until(10, || false);
    let got = interrupts::timer_count() - before;
    pvops::irq::restore_flags(flags);
    check(
        got >= TIMER_STORM && spins > 0,
        text!("periodic LAPIC timer, count 1, divide 1: {got} interrupts while the main loop ran {spins} iterations"),
    )
}

/// `cli; hlt` forever: a vCPU that can never wake; the microvisor must stop
/// it at once (watchdog fault), not sleep with it.
pub fn halt_interrupts_off() -> ! {
    pvops::irq::disable();
    loop {
        // SAFETY: HLT with interrupts off: deliberately never wakes.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
    }
}

/// Writes word `index` of the scratch frame `frame`.
fn write_word(frame: u64, index: usize, value: u64) {
    assert!(index < 512);
    // SAFETY: `frame` is the cases' own scratch frame (identity mapped).
    unsafe { core::ptr::write_volatile((frame as *mut u64).add(index), value) };
}
