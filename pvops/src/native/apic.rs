//! Local APIC register access in xAPIC (MMIO) or x2APIC (MSR) mode.
//!
//! Register offsets and the x2APIC MSR mapping (MSR = 0x800 + offset / 16)
//! are from the Intel SDM vol. 3A, 11.4 and 11.12.

use core::sync::atomic::{AtomicUsize, Ordering};

/// IA32_APIC_BASE MSR (Intel SDM vol. 4).
pub const MSR_APIC_BASE: u32 = 0x1b;
/// IA32_APIC_BASE.EN: APIC globally enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE.EXTD: x2APIC mode.
pub const APIC_BASE_X2APIC: u64 = 1 << 10;
/// IA32_TSC_DEADLINE MSR.
pub const MSR_TSC_DEADLINE: u32 = 0x6e0;

/// Local APIC registers pvops uses, by xAPIC offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Register {
    /// Local APIC ID.
    Id = 0x20,
    /// Version.
    Version = 0x30,
    /// Task priority.
    Tpr = 0x80,
    /// End of interrupt.
    Eoi = 0xb0,
    /// Spurious interrupt vector (bit 8 = software enable).
    Svr = 0xf0,
    /// Error status.
    Esr = 0x280,
    /// Interrupt command, low half (the whole 64-bit register in x2APIC).
    IcrLow = 0x300,
    /// Interrupt command, high half (xAPIC only).
    IcrHigh = 0x310,
    /// LVT timer.
    LvtTimer = 0x320,
    /// LVT LINT0.
    LvtLint0 = 0x350,
    /// LVT LINT1.
    LvtLint1 = 0x360,
    /// LVT error.
    LvtError = 0x370,
    /// Timer initial count.
    TimerInitialCount = 0x380,
    /// Timer current count.
    TimerCurrentCount = 0x390,
    /// Timer divide configuration.
    TimerDivide = 0x3e0,
}

impl Register {
    /// The register's x2APIC MSR: 0x800 + offset / 16 (Intel SDM vol. 3A,
    /// 11.12.1.2).
    const fn x2apic_msr(self) -> u32 {
        0x800 + (self as u32 >> 4)
    }
}

/// How the local APIC is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// x2APIC: registers are MSRs.
    X2Apic,
    /// xAPIC: registers are 32-bit MMIO at `base`, a virtual address the
    /// kernel has mapped uncached.
    XApic {
        /// Virtual address of the register page.
        base: usize,
    },
}

const UNSET: usize = 0;
const X2APIC: usize = 1;
static MODE: AtomicUsize = AtomicUsize::new(UNSET);

/// The configured access mode, if any.
pub fn mode() -> Option<Mode> {
    match MODE.load(Ordering::Relaxed) {
        UNSET => None,
        X2APIC => Some(Mode::X2Apic),
        base => Some(Mode::XApic { base }),
    }
}

/// The best mode this CPU offers, from CPUID: x2APIC when CPUID.1:ECX bit 21
/// reports it, else xAPIC at the register page's *physical* address (from
/// IA32_APIC_BASE), which is also its virtual address under an identity
/// map; a kernel that maps it elsewhere replaces `base`. Errors name what
/// is missing (CPUID.1:EDX bit 9, "APIC on chip").
///
/// ```no_run
/// use pvops::apic;
/// let mode = apic::preferred_mode().expect("a local APIC");
/// // SAFETY: x2APIC only when CPUID reports it (preferred_mode); the xAPIC
/// // page is identity-mapped and uncached (e.g. by pvops-boot's boot tables).
/// unsafe { apic::enable(mode, 0xff) };
/// ```
pub fn preferred_mode() -> Result<Mode, &'static str> {
    // CPUID.1 (Intel SDM vol. 2A, CPUID: EDX bit 9 APIC, ECX bit 21 x2APIC).
    let leaf1 = crate::cpu::cpuid(1, 0);
    if leaf1.edx & (1 << 9) == 0 {
        return Err("CPUID reports no local APIC");
    }
    if leaf1.ecx & (1 << 21) != 0 {
        return Ok(Mode::X2Apic);
    }
    // IA32_APIC_BASE bits 12 and up (to MAXPHYADDR, at most 51) hold the
    // xAPIC's physical base (Intel SDM vol. 3A, 11.4.4).
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (checked above).
    let base = unsafe { crate::cpu::read_msr(MSR_APIC_BASE) } & 0x000f_ffff_ffff_f000;
    usize::try_from(base)
        .map(|base| Mode::XApic { base })
        .map_err(|_| "xAPIC base does not fit a usize")
}

/// Remaps the two legacy 8259 PICs to vectors 0x20..0x30 and masks every
/// line. Firmware (SeaBIOS before a PVH boot) leaves the master PIC at
/// vector 8 with the PIT's IRQ 0 unmasked, so the first `sti` would take
/// the PIT tick as vector 8, which looks like a double fault. [`enable`]
/// calls this; a spurious IRQ 7/15 of a masked PIC can still arrive, as
/// vector 0x27/0x2f, and needs no EOI.
pub fn mask_legacy_pic() {
    const ICW1_INIT_ICW4: u8 = 0x11;
    // Ports 0x20/0x21 (master) and 0xA0/0xA1 (slave); ICW1..ICW4 then OCW1
    // (Intel 8259A data sheet: initialization command words).
    for (cmd, data, base, cascade) in [(0x20u16, 0x21u16, 0x20u8, 4u8), (0xa0, 0xa1, 0x28, 2)] {
        for (port, value) in [
            (cmd, ICW1_INIT_ICW4),
            (data, base),
            (data, cascade),
            (data, 0x01), // ICW4: 8086 mode
            (data, 0xff), // OCW1: mask every line
        ] {
            // SAFETY: the PC's 8259 ports; the standard initialisation then
            // a full mask only reroutes and silences legacy IRQs, which
            // pvops never uses (it drives the local APIC).
            unsafe { x86::io::outb(port, value) };
        }
    }
}

/// Switches the local APIC on in `mode` and records how to reach it: masks
/// the legacy PICs ([`mask_legacy_pic`]), sets IA32_APIC_BASE.EN (and EXTD
/// for x2APIC), software-enables the APIC with `spurious_vector`, masks
/// LINT0 (the PICs' ExtINT line) and sets the task priority to 0 (accept
/// every vector). [`preferred_mode`] picks `mode` from CPUID.
///
/// # Safety
///
/// For [`Mode::XApic`], `base` must be a virtual mapping of the APIC's
/// physical register page, valid for the rest of the kernel's life. x2APIC
/// mode must only be requested when CPUID reports it.
pub unsafe fn enable(mode: Mode, spurious_vector: u8) {
    mask_legacy_pic();
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC; setting EN and,
    // when supported (caller's duty), EXTD is the documented way to enable it.
    unsafe {
        let mut base = x86::msr::rdmsr(MSR_APIC_BASE) | APIC_BASE_ENABLE;
        if mode == Mode::X2Apic {
            base |= APIC_BASE_X2APIC;
        }
        x86::msr::wrmsr(MSR_APIC_BASE, base);
    }
    MODE.store(
        match mode {
            Mode::X2Apic => X2APIC,
            Mode::XApic { base } => base.max(2),
        },
        Ordering::Relaxed,
    );
    write(Register::Svr, (1 << 8) | u32::from(spurious_vector));
    write(Register::LvtLint0, timer_mode::MASKED);
    write(Register::Tpr, 0);
}

/// Reads a register (0 when the APIC has not been configured).
pub fn read(reg: Register) -> u32 {
    match mode() {
        None => 0,
        // SAFETY: the x2APIC MSRs exist once x2APIC mode is on (`enable`).
        Some(Mode::X2Apic) => unsafe { x86::msr::rdmsr(reg.x2apic_msr()) as u32 },
        // SAFETY: `enable`'s contract makes `base` a valid mapping of the
        // register page; every `Register` offset lies inside it, 16-aligned.
        Some(Mode::XApic { base }) => unsafe {
            core::ptr::read_volatile((base + reg as usize) as *const u32)
        },
    }
}

/// Writes a register (ignored when the APIC has not been configured).
pub fn write(reg: Register, value: u32) {
    match mode() {
        None => {}
        // SAFETY: as in `read`; writing these registers affects only
        // interrupt delivery, never memory safety.
        Some(Mode::X2Apic) => unsafe { x86::msr::wrmsr(reg.x2apic_msr(), u64::from(value)) },
        // SAFETY: as in `read`.
        Some(Mode::XApic { base }) => unsafe {
            core::ptr::write_volatile((base + reg as usize) as *mut u32, value)
        },
    }
}

/// This CPU's APIC ID.
pub fn id() -> u32 {
    match mode() {
        Some(Mode::X2Apic) => read(Register::Id),
        _ => read(Register::Id) >> 24,
    }
}

/// Sends a fixed, physical, edge-triggered IPI (ICR bit 14 = assert).
pub fn send_ipi(dest: u32, vector: u8) {
    write_icr(dest, u32::from(vector) | ICR_ASSERT);
}

/// ICR delivery mode INIT (Intel SDM vol. 3A, 11.6.1: bits 10:8 = 101b).
const ICR_INIT: u32 = 0b101 << 8;
/// ICR delivery mode Start-Up (bits 10:8 = 110b).
const ICR_STARTUP: u32 = 0b110 << 8;
/// ICR level: assert (bit 14).
const ICR_ASSERT: u32 = 1 << 14;
/// ICR delivery status (bit 12, xAPIC only): the previous IPI is pending.
const ICR_PENDING: u32 = 1 << 12;

/// Sends an INIT IPI (level assert) to the CPU with APIC ID `dest`: the
/// first step of starting an application processor (Intel SDM vol. 3A,
/// 9.4.4.1, "INIT-SIPI-SIPI").
pub fn send_init(dest: u32) {
    write_icr(dest, ICR_INIT | ICR_ASSERT);
}

/// Sends a Start-up IPI to the CPU with APIC ID `dest`: it starts in real
/// mode at physical address `page << 12` (a page below 1 MiB; Intel SDM
/// vol. 3A, 9.4.4.1 and 11.6.1, "vector" field of a SIPI).
pub fn send_startup(dest: u32, page: u8) {
    write_icr(dest, ICR_STARTUP | ICR_ASSERT | u32::from(page));
}

/// Writes the ICR: in xAPIC mode after the previous IPI left (delivery
/// status clear, bounded), destination first (the low write sends).
fn write_icr(dest: u32, low: u32) {
    match mode() {
        None => {}
        // SAFETY: x2APIC ICR is one 64-bit MSR (0x830), destination in 63:32.
        Some(Mode::X2Apic) => unsafe {
            x86::msr::wrmsr(
                Register::IcrLow.x2apic_msr(),
                (u64::from(dest) << 32) | u64::from(low),
            )
        },
        Some(Mode::XApic { .. }) => {
            for _ in 0..1_000_000 {
                if read(Register::IcrLow) & ICR_PENDING == 0 {
                    break;
                }
                core::hint::spin_loop();
            }
            write(Register::IcrHigh, dest << 24);
            write(Register::IcrLow, low);
        }
    }
}

/// LVT timer modes (Intel SDM vol. 3A, 11.5.4, bits 18:17).
pub mod timer_mode {
    /// One-shot using the initial-count register.
    pub const ONE_SHOT: u32 = 0b00 << 17;
    /// Periodic.
    pub const PERIODIC: u32 = 0b01 << 17;
    /// TSC-deadline: fires when the TSC reaches IA32_TSC_DEADLINE.
    pub const TSC_DEADLINE: u32 = 0b10 << 17;
    /// LVT mask bit.
    pub const MASKED: u32 = 1 << 16;
}
