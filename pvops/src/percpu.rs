//! Which CPU is running: a small index per CPU (0 = the boot CPU), found
//! without a VM exit, and the APIC ID of every registered CPU.
//!
//! Backends keep their per-CPU state (a clock area, a VP index, a vCPU
//! id, an event channel) in arrays of [`MAX_CPUS`] indexed by
//! [`current`], which every hot table entry calls. So `current` must cost
//! no exit: reading the APIC ID costs one under every hypervisor without
//! APIC virtualisation (an RDMSR of the x2APIC ID, or an MMIO read of the
//! xAPIC's), and CPUID always exits under hardware virtualisation.
//!
//! What `current` reads, in order of preference ([`IndexSource`]):
//!
//! 1. a kernel's own hook ([`set_index_hook`]), for a kernel that already
//!    keeps a CPU number (in GS, or in IA32_TSC_AUX itself);
//! 2. `IA32_TSC_AUX` through RDPID (CPUID.(EAX=7,ECX=0):ECX bit 22), as
//!    Linux's `raw_smp_processor_id` fallback in the vDSO does: RDPID is
//!    not intercepted by KVM, Hyper-V or Xen when they expose it;
//! 3. `IA32_TSC_AUX` through RDTSCP (CPUID.8000_0001h:EDX bit 27), which
//!    also reads the TSC (a few more cycles);
//! 4. the APIC ID, looked up in the registered IDs: always correct, one
//!    exit per call under a hypervisor.
//!
//! `IA32_TSC_AUX` (MSR 0xC000_0103; Intel SDM vol. 4, table 2-2; AMD APM
//! vol. 2, 13.2.4) is written with the index when a CPU registers, and
//! read back through the instruction: a hypervisor that refuses the write
//! or does not keep it makes every CPU use the APIC-ID lookup (logged).

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering};

/// CPUs pvops keeps state for (the cross-CPU operations take masks of APIC
/// IDs 0..64, so more could not be named anyway).
pub const MAX_CPUS: usize = 64;

/// `IA32_TSC_AUX` (Intel SDM vol. 4, table 2-2).
pub const MSR_TSC_AUX: u32 = 0xC000_0103;

/// How [`current`] finds the running CPU's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexSource {
    /// No CPU registered yet: every caller is the boot CPU (index 0).
    Unregistered,
    /// The kernel's hook ([`set_index_hook`]).
    Hook,
    /// RDPID of `IA32_TSC_AUX`.
    Rdpid,
    /// RDTSCP's `IA32_TSC_AUX`.
    Rdtscp,
    /// The APIC ID, looked up (one exit per call under a hypervisor).
    ApicId,
}

impl IndexSource {
    /// Stable lower-case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            IndexSource::Unregistered => "unregistered",
            IndexSource::Hook => "hook",
            IndexSource::Rdpid => "rdpid",
            IndexSource::Rdtscp => "rdtscp",
            IndexSource::ApicId => "apic-id",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(c: u8) -> IndexSource {
        match c {
            1 => IndexSource::Hook,
            2 => IndexSource::Rdpid,
            3 => IndexSource::Rdtscp,
            4 => IndexSource::ApicId,
            _ => IndexSource::Unregistered,
        }
    }
}

/// Why a CPU could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// [`MAX_CPUS`] are registered already.
    Full,
    /// A CPU with this APIC ID is registered already (at this index).
    Duplicate(usize),
    /// The kernel's hook returned an index of [`MAX_CPUS`] or more, or one
    /// taken by another CPU.
    BadHookIndex(usize),
}

impl core::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegisterError::Full => write!(f, "{MAX_CPUS} CPUs registered already"),
            RegisterError::Duplicate(i) => {
                write!(f, "this APIC ID is registered already (CPU {i})")
            }
            RegisterError::BadHookIndex(i) => {
                write!(
                    f,
                    "the kernel's index hook returned {i}, out of range or taken"
                )
            }
        }
    }
}

const NO_APIC: u32 = u32::MAX;

static SOURCE: AtomicU8 = AtomicU8::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(NO_APIC) }; MAX_CPUS];
static HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Makes [`current`] call `hook` (the kernel's own CPU number, below
/// [`MAX_CPUS`], 0 on the boot CPU). Set it before the boot CPU registers
/// (`pvops_backends::init`); a kernel that uses `IA32_TSC_AUX` for itself
/// must, or pvops overwrites it.
pub fn set_index_hook(hook: fn() -> usize) {
    HOOK.store(hook as *mut (), Ordering::Release);
}

fn hook() -> Option<fn() -> usize> {
    let p = HOOK.load(Ordering::Acquire);
    // SAFETY: only `set_index_hook` stores here, always a `fn() -> usize`.
    (!p.is_null()).then(|| unsafe { core::mem::transmute::<*mut (), fn() -> usize>(p) })
}

/// How [`current`] finds the index.
pub fn source() -> IndexSource {
    IndexSource::from_code(SOURCE.load(Ordering::Relaxed))
}

/// The index of the running CPU: 0 on the boot CPU, then in the order the
/// CPUs registered. Costs no exit except with [`IndexSource::ApicId`], and
/// one relaxed load while only one CPU is registered.
#[inline]
pub fn current() -> usize {
    // With one CPU registered every caller is that CPU (an AP calls no
    // table entry before it registers): no instruction at all.
    if COUNT.load(Ordering::Relaxed) <= 1 {
        return 0;
    }
    match IndexSource::from_code(SOURCE.load(Ordering::Relaxed)) {
        IndexSource::Unregistered => 0,
        IndexSource::Rdpid => aux::rdpid() as usize % MAX_CPUS,
        IndexSource::Rdtscp => aux::rdtscp() as usize % MAX_CPUS,
        IndexSource::Hook => hook().map_or(0, |h| h()) % MAX_CPUS,
        IndexSource::ApicId => index_of_apic(crate::native::apic::id()).unwrap_or(0),
    }
}

/// CPUs registered so far.
pub fn count() -> usize {
    COUNT.load(Ordering::Acquire).min(MAX_CPUS)
}

/// The APIC ID of the CPU with `index`, if registered.
pub fn apic_id(index: usize) -> Option<u32> {
    let id = APIC_IDS.get(index)?.load(Ordering::Acquire);
    (id != NO_APIC).then_some(id)
}

/// The index of the CPU with APIC ID `apic_id`, if registered.
pub fn index_of_apic(apic_id: u32) -> Option<usize> {
    (0..MAX_CPUS).find(|&i| APIC_IDS[i].load(Ordering::Acquire) == apic_id)
}

/// The mask of registered CPUs' APIC IDs below 64 (the form
/// [`crate::mmu::flush_remote`] and [`crate::irq::send_ipi_mask`] take).
pub fn apic_mask() -> u64 {
    (0..count())
        .filter_map(apic_id)
        .filter(|&id| id < 64)
        .fold(0, |m, id| m | 1u64 << id)
}

/// Registers the running CPU with APIC ID `apic_id` and returns its
/// index. The first CPU to register is the boot CPU, index 0, and picks
/// the [`IndexSource`] for all. `write_tsc_aux` writes `IA32_TSC_AUX` and
/// says whether the hypervisor accepted it (a kernel with #GP recovery
/// catches a refused WRMSR; `pvops_backends` passes its platform's).
///
/// # Safety
///
/// Called once per CPU, on that CPU, before any table entry runs there
/// concurrently with another CPU's registration; CPUs register one at a
/// time. `write_tsc_aux` must write only `IA32_TSC_AUX`.
pub unsafe fn register_current(
    apic_id: u32,
    write_tsc_aux: &mut dyn FnMut(u64) -> bool,
) -> Result<usize, RegisterError> {
    if let Some(i) = index_of_apic(apic_id) {
        return Err(RegisterError::Duplicate(i));
    }
    let first = COUNT.load(Ordering::Acquire) == 0;
    let index = match hook() {
        Some(h) => {
            let i = h();
            if i >= MAX_CPUS || self::apic_id(i).is_some() {
                return Err(RegisterError::BadHookIndex(i));
            }
            i
        }
        None => {
            let i = COUNT.load(Ordering::Acquire);
            if i >= MAX_CPUS {
                return Err(RegisterError::Full);
            }
            i
        }
    };
    if first {
        let src = choose_source(write_tsc_aux);
        SOURCE.store(src.code(), Ordering::Release);
        log::info!(
            "pvops: percpu: the current CPU's index comes from {}",
            src.name()
        );
    }
    let src = source();
    if matches!(src, IndexSource::Rdpid | IndexSource::Rdtscp)
        && !(write_tsc_aux(index as u64) && read_aux(src) == index as u64)
    {
        // Every CPU must agree on the source; the APIC-ID lookup is correct
        // on all of them (the boot CPU's TSC_AUX, 0, is its index anyway).
        SOURCE.store(IndexSource::ApicId.code(), Ordering::Release);
        log::warn!(
            "pvops: percpu: IA32_TSC_AUX not kept on CPU {} (APIC ID {}); every CPU now finds its index by APIC ID (one exit per lookup)",
            index,
            apic_id
        );
    }
    APIC_IDS[index].store(apic_id, Ordering::Release);
    COUNT.fetch_add(1, Ordering::AcqRel);
    Ok(index)
}

fn read_aux(src: IndexSource) -> u64 {
    match src {
        IndexSource::Rdpid => aux::rdpid(),
        _ => aux::rdtscp(),
    }
}

/// The boot CPU's choice: the hook, else RDPID, else RDTSCP, each only if
/// a test value written to `IA32_TSC_AUX` reads back through it.
fn choose_source(write_tsc_aux: &mut dyn FnMut(u64) -> bool) -> IndexSource {
    if hook().is_some() {
        return IndexSource::Hook;
    }
    const PROBE: u64 = 0x5A;
    let (rdpid, rdtscp) = tsc_aux_readers();
    for (offered, src) in [(rdpid, IndexSource::Rdpid), (rdtscp, IndexSource::Rdtscp)] {
        if offered && write_tsc_aux(PROBE) && read_aux(src) == PROBE {
            return src;
        }
    }
    IndexSource::ApicId
}

/// Whether CPUID offers (RDPID, RDTSCP), the instructions that read
/// `IA32_TSC_AUX` (CPUID.(EAX=7,ECX=0):ECX bit 22; CPUID.8000_0001h:EDX
/// bit 27). A kernel that sees neither gives pvops its own CPU number
/// ([`set_index_hook`]), or every lookup costs an exit.
pub fn tsc_aux_readers() -> (bool, bool) {
    let leaf7 = crate::cpu::cpuid(0, 0).eax >= 7;
    let rdpid = leaf7 && crate::cpu::cpuid(7, 0).ecx & (1 << 22) != 0;
    let ext = crate::cpu::cpuid(0x8000_0000, 0).eax >= 0x8000_0001;
    let rdtscp = ext && crate::cpu::cpuid(0x8000_0001, 0).edx & (1 << 27) != 0;
    (rdpid, rdtscp)
}

/// The instructions that read `IA32_TSC_AUX`.
mod aux {
    /// RDPID (Intel SDM vol. 2B; AMD APM vol. 3).
    #[inline]
    pub(super) fn rdpid() -> u64 {
        let v: u64;
        // SAFETY: only chosen as the source after CPUID reported RDPID and
        // a value written to IA32_TSC_AUX read back through it; no memory
        // or flags are touched.
        unsafe {
            core::arch::asm!("rdpid {}", out(reg) v, options(nomem, nostack, preserves_flags))
        };
        v
    }

    /// RDTSCP's ECX (the TSC in EDX:EAX is discarded).
    #[inline]
    pub(super) fn rdtscp() -> u64 {
        let aux: u32;
        // SAFETY: only chosen after CPUID reported RDTSCP; it writes EAX,
        // EDX and ECX (declared) and nothing else.
        unsafe {
            core::arch::asm!("rdtscp", out("eax") _, out("edx") _, out("ecx") aux,
                options(nomem, nostack, preserves_flags))
        };
        u64::from(aux)
    }
}
