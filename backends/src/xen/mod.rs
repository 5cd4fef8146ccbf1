//! The Xen HVM backend (feature `xen`).
//!
//! Detection: "XenVMMXenVMM" at any base of the hypervisor range with at
//! least two leaves above it (Linux `xen_cpuid_base`); the priority is that
//! base, so Xen at 0x4000_0100 beats the Viridian (Hyper-V) interface Xen
//! puts at 0x4000_0000.
//!
//! Setup (each step documented in `docs/backends/xen.md`):
//! 1. hypercall page: a platform page, filled with `int3`, registered
//!    through the MSR of base+2 EBX, then checked stub by stub. Failing this
//!    fails the whole backend (native is installed).
//! 2. `xen_version`, logged. From here on `cpu.io_delay` (no-op),
//!    `system.shutdown` (`SCHEDOP_shutdown`) and `cpu.halt`
//!    (`SCHEDOP_block`) are owned.
//! 3. shared_info mapped with `XENMEM_add_to_physmap` and every event
//!    channel masked (nothing is bound yet; review finding F1); vCPU 0's
//!    pvclock must settle to an even version with a non-zero multiplier
//!    (and Xen must report `XENFEAT_hvm_safe_pvclock`, F10). Then
//!    `time.monotonic_ns`, `time.tsc_frequency` and `irq.safe_halt` are
//!    owned. Without a pvclock, `time.tsc_frequency` comes from base+3 when
//!    that leaf follows Xen's layout.
//! 4. `VIRQ_TIMER` bound to an event channel and unmasked, and a way to
//!    deliver its upcall: the per-vCPU upcall vector
//!    (`HVMOP_set_evtchn_upcall_vector`, base+4 EAX bit 6; an EOI is due),
//!    else `HVM_PARAM_CALLBACK_IRQ` of the vector type (no EOI is due: the
//!    backend's `irq.eoi` swallows the EOI after a timer upcall; review
//!    finding F3). `HVMOP_get_param` is never used (QEMU's Xen emulation
//!    answers -ENOSYS). Then the one-shot timer entries are owned
//!    (`timer_setup`, `timer_arm`, `timer_cancel`, `timer_ack`) and
//!    `irq.eoi`.
//! 5. runstate area registered: `time.steal_ns` is owned.
//!
//! 6. with more than one possible CPU: the lock group (see "Locks").
//!
//! A failing step 3–6 leaves its entries native and logs why.
//!
//! **Per vCPU** (the boot CPU in `install`, each AP in
//! [`Backend::init_cpu`], on that CPU): its vCPU id (CPUID base+4 EBX
//! when `XEN_HVM_CPUID_VCPU_ID_PRESENT`, else APIC ID / 2, Xen's HVM
//! numbering, [`abi::hvm_vcpu_from_apic_id`]); its `vcpu_info`:
//! shared_info's slot below vCPU 32, `VCPUOP_register_vcpu_info` with a
//! page of its own from 32 on (chosen: vCPUs that have a legacy slot keep
//! it, the boot CPU included, so a single-vCPU guest needs nothing more
//! than before; Linux registers everywhere when it can); its own
//! `VIRQ_TIMER` port and single-shot timer naming *its* vCPU id (Xen
//! refuses another vCPU's, review finding F4); its upcall vector
//! (`HVMOP_set_evtchn_upcall_vector` with its id, in `timer_setup` on that
//! CPU); its runstate area. A step failing on one AP leaves that AP's
//! entries native (recorded in its [`crate::Fallbacks`]).
//!
//! **Locks** (more than one possible CPU): every CPU binds an IPI event
//! channel (`EVTCHNOP_bind_ipi`) kept masked. `lock.wait` clears its
//! pending bit, re-checks the word, then `SCHEDOP_poll` on it: a kick
//! between the check and the poll leaves the port pending, so the poll
//! returns at once. The poll carries a 1 ms guard timeout (chosen; Xen
//! itself needs none) so that a wake-up an emulation loses, or a waiter
//! polling with interrupts disabled, cannot hang the CPU; Xen reads that
//! timeout as an absolute system time, KVM's Xen emulation as a duration,
//! and one probe poll at set-up tells which (`poll_timeout_is_relative`).
//! `lock.kick` is `EVTCHNOP_send` on
//! the target's port; `lock.vcpu_is_preempted` is the target's runstate
//! being `RUNSTATE_runnable`. Cross-CPU IPIs and flushes stay native
//! (through the local APIC).
mod hypercall;
mod shared;

pub use hypercall::ready as hypercalls_ready;
pub use hypercall::{
    evtchn_bind_virq, evtchn_send, evtchn_unmask, hvm_get_param, hvm_set_evtchn_upcall_vector,
    hvm_set_param, sched_block, sched_shutdown, sched_yield, vcpu_set_singleshot_timer,
    vcpu_stop_singleshot_timer, xen_get_features, xen_version,
};

use crate::{Backend, Cpu, Detection, Environment, Fallbacks, Platform, SetupError};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use pvops::patch::Patch;
use pvops::percpu::MAX_CPUS;
use pvops::slot;
use pvops::system::ShutdownReason;
use pvops::time::{TscFrequency, TscSource};
use pvops_abi::xen as abi;
use pvops_probe::{CpuidSource, HypervisorKind, Probe};

/// The Xen backend.
pub static XEN: Xen = Xen;

/// The Xen backend's type.
#[derive(Debug)]
pub struct Xen;

/// Hypercalls the backend uses; each stub is checked before the first call.
const USED_HYPERCALLS: [u32; 6] = [
    abi::hypercall::MEMORY_OP,
    abi::hypercall::XEN_VERSION,
    abi::hypercall::VCPU_OP,
    abi::hypercall::SCHED_OP,
    abi::hypercall::EVENT_CHANNEL_OP,
    abi::hypercall::HVM_OP,
];

/// Attempts of the pvclock version-retry loop before "stuck odd".
const PVCLOCK_TRIES: u32 = 100_000;
/// Attempts on the hot path (the clock was seen settling at install): as
/// KVM's, bounded, so a hypervisor that leaves the version odd costs one
/// bounded wait per read (the last value is returned) rather than seconds.
const PVCLOCK_TRIES_HOT: u32 = 1 << 20;
/// Fill pattern of the hypercall page before registration (`int3`).
const FILL: u8 = 0xcc;
const NO_PORT: u32 = u32::MAX;

/// Each CPU's `VIRQ_TIMER` port.
static TIMER_PORT: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(NO_PORT) }; MAX_CPUS];
/// The CPU's timer entries forward to native (its set-up failed, or the
/// callback parameter could not be set in `timer_setup`).
static TIMER_NATIVE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The vector `time.timer_setup` was given (for a late switch to the
/// native timer).
static TIMER_VECTOR: AtomicU8 = AtomicU8::new(0);
/// How upcalls are delivered ([`Delivery`] as u8) on each CPU: the boot
/// CPU's choice at install, possibly downgraded by that CPU's
/// `timer_setup`.
static DELIVERY: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(Delivery::None as u8) }; MAX_CPUS];
/// The delivery chosen at install, for the APs.
static DELIVERY_CHOICE: AtomicU8 = AtomicU8::new(Delivery::None as u8);
/// The next `irq.eoi` on the CPU belongs to a callback-via upcall, which
/// has no LAPIC in-service bit: skip it.
static SKIP_EOI: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
const NO_VCPU: u32 = u32::MAX;
/// Each CPU's vCPU id for per-vCPU hypercalls.
static VCPU_ID: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(NO_VCPU) }; MAX_CPUS];
/// Each CPU's masked IPI port for the lock group.
static LOCK_PORT: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(NO_PORT) }; MAX_CPUS];
/// The CPUID base of the Xen leaves (for the APs' base+4).
static BASE: AtomicU32 = AtomicU32::new(0);
/// Which per-vCPU steps the boot CPU completed, for the APs to repeat.
static SHARED_OK: AtomicBool = AtomicBool::new(false);
static TIMER_OWNED: AtomicBool = AtomicBool::new(false);
static RUNSTATE_OWNED: AtomicBool = AtomicBool::new(false);
static LOCK_OWNED: AtomicBool = AtomicBool::new(false);

fn here() -> usize {
    pvops::percpu::current() % MAX_CPUS
}

/// The running CPU's vCPU id (0 before its set-up).
fn vcpu_id() -> u32 {
    match VCPU_ID[here()].load(Ordering::Relaxed) {
        NO_VCPU => 0,
        v => v,
    }
}

/// The vCPU id of CPU `cpu`, once set up.
pub fn vcpu_of(cpu: usize) -> Option<u32> {
    let v = VCPU_ID.get(cpu)?.load(Ordering::Relaxed);
    (v != NO_VCPU).then_some(v)
}

/// A vCPU's id from its base+4 leaf (read on that CPU) and APIC ID.
pub fn vcpu_id_from(hvm: Option<&abi::HvmLeaf>, apic_id: u32) -> u32 {
    match hvm {
        Some(h) if h.flags & abi::HVM_VCPU_ID_PRESENT != 0 => h.vcpu_id,
        _ => abi::hvm_vcpu_from_apic_id(apic_id),
    }
}
static LAST_NS: AtomicU64 = AtomicU64::new(0);
/// The pvclock was seen going backwards (logged once).
static CLOCK_WENT_BACK: AtomicBool = AtomicBool::new(false);
/// The last steal time returned (`time.steal_ns` never goes backwards).
static LAST_STEAL: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Attempts of the runstate read before the last value is kept.
const RUNSTATE_TRIES: u32 = 1 << 16;
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
/// Whether [`TSC_KHZ`] came from base+3 rather than a pvclock.
static TSC_FROM_LEAF: AtomicBool = AtomicBool::new(false);

/// How event-channel upcalls reach the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Delivery {
    /// Not set up (the timer stays native).
    None = 0,
    /// `HVMOP_set_evtchn_upcall_vector`: through the vLAPIC, EOI due.
    UpcallVector = 1,
    /// `HVM_PARAM_CALLBACK_IRQ` vector type: injected directly while
    /// `evtchn_upcall_pending` is set, no LAPIC in-service bit, no EOI.
    CallbackVia = 2,
}

impl Delivery {
    fn from_u8(v: u8) -> Delivery {
        match v {
            1 => Delivery::UpcallVector,
            2 => Delivery::CallbackVia,
            _ => Delivery::None,
        }
    }

    /// Name for logs and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Delivery::None => "none",
            Delivery::UpcallVector => "per-vCPU upcall vector (HVMOP_set_evtchn_upcall_vector)",
            Delivery::CallbackVia => "callback via vector (HVM_PARAM_CALLBACK_IRQ)",
        }
    }

    /// The preferred delivery for an HVM leaf and feature submap 0
    /// (`None` = XENVER_get_features failed; Xen has set
    /// XENFEAT_hvm_callback_vector for every HVM guest since 4.0, so an
    /// unknown submap is taken to have it).
    pub fn choose(hvm: Option<&abi::HvmLeaf>, features: Option<u32>) -> Delivery {
        if hvm.is_some_and(abi::HvmLeaf::upcall_vector) {
            Delivery::UpcallVector
        } else if features.is_none_or(|f| f & (1 << abi::XENFEAT_HVM_CALLBACK_VECTOR) != 0) {
            Delivery::CallbackVia
        } else {
            Delivery::None
        }
    }
}

/// The delivery in use on the running CPU.
pub fn delivery() -> Delivery {
    Delivery::from_u8(DELIVERY[here()].load(Ordering::Relaxed))
}

fn set_delivery(d: Delivery) {
    DELIVERY[here()].store(d as u8, Ordering::Relaxed);
}
/// Finds the Xen interface in a probe: the first "XenVMMXenVMM" base with
/// at least [`abi::MIN_LEAVES`] leaves, when CPUID.1:ECX.HV is set.
pub fn find_base(probe: &Probe) -> Option<u32> {
    if !probe.under_hypervisor() {
        return None;
    }
    probe
        .interfaces
        .iter()
        .find(|i| i.kind == HypervisorKind::Xen && i.leaf_count() >= abi::MIN_LEAVES)
        .map(|i| i.base)
}

/// The Xen CPUID leaves, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaves {
    /// The base leaf.
    pub base: u32,
    /// base+1.
    pub version: abi::Version,
    /// base+2.
    pub hypercall: abi::HypercallLeaf,
    /// base+3 sub-leaf 0, when the interface has that leaf.
    pub time: Option<abi::TimeLeaf>,
    /// base+4, when the interface has that leaf.
    pub hvm: Option<abi::HvmLeaf>,
}

/// Reads the leaves of the interface at `base` (with `max_leaf` its highest).
pub fn read_leaves(cpuid: &dyn CpuidSource, base: u32, max_leaf: u32) -> Leaves {
    let r = |off: u32| cpuid.cpuid(base + off, 0);
    let v = r(abi::LEAF_VERSION);
    let h = r(abi::LEAF_HYPERCALL);
    let time = (max_leaf >= base + abi::LEAF_TIME).then(|| {
        let t = r(abi::LEAF_TIME);
        abi::TimeLeaf::from_regs(t.eax, t.ebx, t.ecx, t.edx)
    });
    let hvm = (max_leaf >= base + abi::LEAF_HVM).then(|| {
        let t = r(abi::LEAF_HVM);
        abi::HvmLeaf::from_regs(t.eax, t.ebx, t.ecx)
    });
    Leaves {
        base,
        version: abi::Version::from_eax(v.eax),
        hypercall: abi::HypercallLeaf::from_regs(h.eax, h.ebx, h.ecx, h.edx),
        time,
        hvm,
    }
}

impl Backend for Xen {
    fn name(&self) -> &'static str {
        "xen"
    }

    fn description(&self) -> &'static str {
        "Xen HVM: hypercall page; may provide pvclock from shared_info, VIRQ_TIMER single-shot \
         timer, SCHEDOP_block idle, runstate steal time, SCHEDOP_shutdown"
    }

    fn detect(&self, env: &Environment<'_>) -> Option<Detection> {
        find_base(env.probe).map(|base| Detection {
            priority: base,
            reason: "\"XenVMMXenVMM\" CPUID signature",
            base: Some(base),
        })
    }

    fn install(
        &self,
        env: &Environment<'_>,
        patch: &mut Patch,
        platform: &mut dyn Platform,
    ) -> Result<(), SetupError> {
        let base = find_base(env.probe).ok_or(SetupError {
            step: "detect",
            detail: "no Xen interface with two leaves",
        })?;
        let max_leaf = env
            .probe
            .interfaces
            .iter()
            .find(|i| i.base == base)
            .map_or(base + abi::MIN_LEAVES, |i| i.max_leaf);
        let leaves = read_leaves(env.cpuid, base, max_leaf);
        log::info!(
            "xen: CPUID base {:#x}, version {}.{} (CPUID), {} hypercall page(s) via MSR {:#x}",
            base,
            leaves.version.major,
            leaves.version.minor,
            leaves.hypercall.pages,
            leaves.hypercall.msr
        );
        if let Some(t) = leaves.time {
            if t.follows_xen_layout() {
                log::info!(
                    "xen: TSC mode {}, flags {:#x}, guest TSC {} kHz",
                    t.tsc_mode,
                    t.flags,
                    t.guest_tsc_khz
                );
            } else {
                log::info!(
                    "xen: base+3 does not follow Xen's layout (EAX {:#x}, EBX {:#x}, ECX {:#x}: \
                     QEMU/KVM's Xen emulation?); not used",
                    t.flags,
                    t.tsc_mode,
                    t.guest_tsc_khz
                );
            }
        }
        let cpu = here();
        let vcpu = vcpu_id_from(leaves.hvm.as_ref(), pvops::native::apic::id());
        VCPU_ID[cpu].store(vcpu, Ordering::Relaxed);
        BASE.store(base, Ordering::Relaxed);
        log::info!("xen: boot CPU is vCPU {}", vcpu);

        // 1. Hypercall page.
        setup_hypercall_page(&leaves.hypercall, platform)?;
        // 2. A first hypercall.
        match hypercall::xen_version() {
            Ok(v) => log::info!("xen: xen_version says {}.{}", v.major, v.minor),
            Err(rc) => {
                return Err(SetupError {
                    step: "hypercall page",
                    detail: errno_detail(rc, "xen_version failed"),
                })
            }
        }
        patch.set(slot::CPU_IO_DELAY, io_delay);
        patch.set(slot::SYSTEM_SHUTDOWN, shutdown);
        patch.set(slot::CPU_HALT, halt);
        // Review finding F10: params.h and Linux consult the feature flags.
        let features = match hypercall::xen_get_features(0) {
            Ok(f) => {
                log::info!("xen: features submap 0 {:#x}", f);
                Some(f)
            }
            Err(rc) => {
                log::info!(
                    "xen: XENVER_get_features failed ({}); assuming an HVM guest's defaults",
                    abi::errno::name(rc)
                );
                None
            }
        };
        let leaf_khz = leaves
            .time
            .and_then(|t| t.sound_tsc_khz())
            .filter(|&k| crate::tsc::plausible_khz(u64::from(k)));

        // 3. shared_info and pvclock.
        let safe_pvclock = features.is_none_or(|f| f & (1 << abi::XENFEAT_HVM_SAFE_PVCLOCK) != 0);
        let shared = if safe_pvclock {
            setup_shared_info(platform, leaf_khz, cpu, vcpu)
        } else {
            Err(SetupError {
                step: "pvclock",
                detail: "XENFEAT_hvm_safe_pvclock not offered",
            })
        };
        if let Err(e) = shared {
            log::warn!("xen: {}; clock, timer and idle stay native", e);
            if let Some(khz) = leaf_khz {
                TSC_KHZ.store(u64::from(khz), Ordering::Relaxed);
                TSC_FROM_LEAF.store(true, Ordering::Relaxed);
                patch.set(slot::TIME_TSC_FREQUENCY, tsc_frequency);
                log::info!("xen: TSC frequency {} kHz from CPUID base+3", khz);
            }
            return Ok(());
        }
        SHARED_OK.store(true, Ordering::Relaxed);
        patch.set(slot::TIME_MONOTONIC_NS, monotonic_ns);
        patch.set(slot::TIME_TSC_FREQUENCY, tsc_frequency);
        patch.set(slot::IRQ_SAFE_HALT, safe_halt);

        // 4. Timer event channel and upcall delivery.
        let how = Delivery::choose(leaves.hvm.as_ref(), features);
        match setup_timer_channel(how, vcpu) {
            Ok(port) => {
                TIMER_PORT[cpu].store(port, Ordering::Relaxed);
                set_delivery(how);
                DELIVERY_CHOICE.store(how as u8, Ordering::Relaxed);
                TIMER_OWNED.store(true, Ordering::Relaxed);
                patch.set(slot::TIME_TIMER_SETUP, timer_setup);
                patch.set(slot::TIME_TIMER_ARM, timer_arm);
                patch.set(slot::TIME_TIMER_CANCEL, timer_cancel);
                patch.set(slot::TIME_TIMER_ACK, timer_ack);
                patch.set(slot::IRQ_EOI, eoi);
                log::info!(
                    "xen: VIRQ_TIMER bound to event channel {}; upcalls by {}",
                    port,
                    how.name()
                );
            }
            Err(e) => log::warn!("xen: {}; the one-shot timer stays native", e),
        }

        // 5. Runstate area.
        match setup_runstate(platform, cpu, vcpu) {
            Ok(()) => {
                RUNSTATE_OWNED.store(true, Ordering::Relaxed);
                patch.set(slot::TIME_STEAL_NS, steal_ns);
            }
            Err(e) => log::warn!("xen: {}; steal time stays native (0)", e),
        }

        // 6. The lock group, when other CPUs may contend.
        if platform.possible_cpus() < 2 {
            log::info!("xen: one CPU: the lock group stays native");
        } else {
            match setup_lock_port(cpu, vcpu) {
                Ok(port) => {
                    LOCK_OWNED.store(true, Ordering::Relaxed);
                    patch.set(slot::LOCK_WAIT, lock_wait);
                    patch.set(slot::LOCK_KICK, lock_kick);
                    if RUNSTATE_OWNED.load(Ordering::Relaxed) {
                        patch.set(slot::LOCK_VCPU_IS_PREEMPTED, lock_vcpu_is_preempted);
                    }
                    let relative = poll_timeout_is_relative(port);
                    POLL_RELATIVE.store(relative, Ordering::Relaxed);
                    log::info!(
                        "xen: lock group: SCHEDOP_poll on masked IPI port {} (boot CPU); its timeout is {}",
                        port,
                        if relative {
                            "relative (KVM's Xen emulation: jiffies + timeout)"
                        } else {
                            "absolute system time (Xen's do_poll)"
                        }
                    );
                }
                Err(e) => log::warn!("xen: {}; the lock group stays native", e),
            }
        }
        Ok(())
    }

    fn init_cpu(&self, cpu: Cpu, fallbacks: &mut Fallbacks, platform: &mut dyn Platform) {
        init_ap(cpu, fallbacks, platform);
    }
}

/// One application processor's set-up, on that CPU (see the module docs).
fn init_ap(cpu: Cpu, fallbacks: &mut Fallbacks, platform: &mut dyn Platform) {
    let i = cpu.index;
    if i >= MAX_CPUS || !hypercall::ready() {
        return;
    }
    let base = BASE.load(Ordering::Relaxed);
    let max = pvops::cpu::cpuid(base, 0).eax;
    let hvm = (max >= base + abi::LEAF_HVM).then(|| {
        let t = pvops::cpu::cpuid(base + abi::LEAF_HVM, 0);
        abi::HvmLeaf::from_regs(t.eax, t.ebx, t.ecx)
    });
    let vcpu = vcpu_id_from(hvm.as_ref(), cpu.apic_id);
    VCPU_ID[i].store(vcpu, Ordering::Relaxed);
    log::info!("xen: cpu {} (APIC ID {}) is vCPU {}", i, cpu.apic_id, vcpu);
    if !SHARED_OK.load(Ordering::Relaxed) {
        return;
    }
    // Without a vcpu_info this CPU has no upcalls: timer and idle native;
    // its clock reads the boot vCPU's pvclock.
    let have_info = match setup_vcpu_info(platform, i, vcpu) {
        Ok(()) => true,
        Err(e) => {
            fallbacks.push(i, "time.timer_*, irq.safe_halt", e.detail);
            false
        }
    };
    if TIMER_OWNED.load(Ordering::Relaxed) {
        let how = Delivery::from_u8(DELIVERY_CHOICE.load(Ordering::Relaxed));
        let port = if have_info {
            setup_timer_channel(how, vcpu).map_err(|e| e.detail)
        } else {
            Err("no vcpu_info")
        };
        match port {
            Ok(port) => {
                TIMER_PORT[i].store(port, Ordering::Relaxed);
                DELIVERY[i].store(how as u8, Ordering::Relaxed);
                TIMER_NATIVE[i].store(false, Ordering::Relaxed);
            }
            Err(why) => {
                TIMER_NATIVE[i].store(true, Ordering::Relaxed);
                if have_info {
                    fallbacks.push(i, "time.timer_*", why);
                }
            }
        }
    }
    if RUNSTATE_OWNED.load(Ordering::Relaxed) {
        if let Err(e) = setup_runstate(platform, i, vcpu) {
            fallbacks.push(i, "time.steal_ns", e.detail);
        }
    }
    if LOCK_OWNED.load(Ordering::Relaxed) {
        if let Err(e) = setup_lock_port(i, vcpu) {
            fallbacks.push(i, "lock.wait, lock.kick", e.detail);
        }
    }
}

/// CPU `cpu`'s `vcpu_info`: shared_info's slot below vCPU 32, else a page
/// registered with `VCPUOP_register_vcpu_info`.
fn setup_vcpu_info(platform: &mut dyn Platform, cpu: usize, vcpu: u32) -> Result<(), SetupError> {
    let err = |detail| SetupError {
        step: "vcpu_info",
        detail,
    };
    if let Some(slot) = shared::legacy_slot(vcpu) {
        // SAFETY: the slot lies in the live shared_info page Xen keeps
        // for good (`set_shared_info`).
        unsafe { shared::set_vcpu_info(cpu, slot) };
        return Ok(());
    }
    let page = platform
        .alloc_shared_page()
        .ok_or(err("vCPU id 32 or more and no page for its vcpu_info"))?;
    // SAFETY: the page is lent for good and used only for this vcpu_info.
    unsafe { hypercall::vcpu_register_vcpu_info(vcpu, page.phys >> 12, 0) }
        .map_err(|rc| err(errno_detail(rc, "VCPUOP_register_vcpu_info failed")))?;
    // SAFETY: Xen now keeps this vCPU's vcpu_info at the start of the page.
    unsafe { shared::set_vcpu_info(cpu, page.virt.as_ptr().cast::<abi::VcpuInfo>()) };
    Ok(())
}

/// CPU `cpu`'s masked IPI port (vCPU `vcpu`).
fn setup_lock_port(cpu: usize, vcpu: u32) -> Result<u32, SetupError> {
    let port = hypercall::evtchn_bind_ipi(vcpu).map_err(|rc| SetupError {
        step: "lock",
        detail: errno_detail(rc, "EVTCHNOP_bind_ipi failed"),
    })?;
    if port >= abi::EVTCHN_2L_NR_CHANNELS {
        return Err(SetupError {
            step: "lock",
            detail: "IPI port outside the 2-level ABI",
        });
    }
    shared::mask_port(port);
    LOCK_PORT[cpu].store(port, Ordering::Release);
    Ok(port)
}

fn errno_detail(rc: i64, fallback: &'static str) -> &'static str {
    match -rc {
        abi::errno::ENOSYS => "hypercall not implemented (-ENOSYS)",
        abi::errno::EINVAL => "hypervisor answered -EINVAL",
        abi::errno::EFAULT => "hypervisor answered -EFAULT",
        abi::errno::EPERM => "hypervisor answered -EPERM",
        abi::errno::EEXIST => "hypervisor answered -EEXIST",
        _ => fallback,
    }
}

fn setup_hypercall_page(
    leaf: &abi::HypercallLeaf,
    platform: &mut dyn Platform,
) -> Result<(), SetupError> {
    let err = |detail| SetupError {
        step: "hypercall page",
        detail,
    };
    if !leaf.usable() {
        return Err(err("CPUID base+2 reports no page or no MSR"));
    }
    let page = platform
        .alloc_shared_page()
        .ok_or(err("the platform has no page to give"))?;
    let p = page.virt.as_ptr();
    // SAFETY: the platform lends a mapped, writable 4 KiB page for good.
    unsafe { core::ptr::write_bytes(p, FILL, 4096) };
    // Page index 0 in the low 12 bits (arch-x86/cpuid.h leaf 3; Linux
    // `xen_hvm_init_hypercall_page`).
    // SAFETY: the MSR is the one Xen names in base+2 EBX for exactly this
    // write; the page is ours for good, so Xen overlaying it is harmless.
    unsafe { pvops::cpu::write_msr(leaf.msr, page.phys) };
    let mut stub = [0u8; abi::HYPERCALL_STUB_SIZE];
    for nr in USED_HYPERCALLS {
        for (i, b) in stub.iter_mut().enumerate() {
            // SAFETY: `nr * 32 + i < 4096`: inside the page; volatile
            // because the hypervisor wrote it behind the compiler's back.
            *b = unsafe {
                p.add(nr as usize * abi::HYPERCALL_STUB_SIZE + i)
                    .read_volatile()
            };
        }
        if !abi::stub_is_filled(&stub, nr) {
            return Err(err("the hypervisor did not fill the page"));
        }
    }
    // SAFETY: a mapped, executable (platform contract) page whose stubs were
    // just checked, lent for the rest of the kernel's life.
    unsafe { hypercall::set_page(p) };
    Ok(())
}

fn setup_shared_info(
    platform: &mut dyn Platform,
    leaf_khz: Option<u32>,
    cpu: usize,
    vcpu: u32,
) -> Result<(), SetupError> {
    let err = |detail| SetupError {
        step: "shared_info",
        detail,
    };
    let page = platform
        .alloc_shared_page()
        .ok_or(err("the platform has no page to give"))?;
    hypercall::add_shared_info_to_physmap(page.phys >> 12)
        .map_err(|rc| err(errno_detail(rc, "XENMEM_add_to_physmap failed")))?;
    // SAFETY: Xen now backs this guest frame with shared_info; the page is
    // the platform's mapping of it, lent for good.
    unsafe { shared::set_shared_info(page.virt.as_ptr()) };
    setup_vcpu_info(platform, cpu, vcpu)?;
    shared::mask_all();
    let (t, _) = shared::read_time(PVCLOCK_TRIES).map_err(|_| SetupError {
        step: "pvclock",
        detail: "version stuck odd",
    })?;
    if t.tsc_to_system_mul == 0 {
        return Err(SetupError {
            step: "pvclock",
            detail: "vcpu_time_info not published (multiplier 0)",
        });
    }
    let khz = t.tsc_khz();
    if !crate::tsc::plausible_khz(khz) {
        log::warn!(
            "xen: the pvclock scale (mul {:#x}, shift {}) says the TSC runs at {} kHz: implausible",
            t.tsc_to_system_mul,
            t.tsc_shift,
            khz
        );
        return Err(SetupError {
            step: "pvclock",
            detail: "TSC scale gives an implausible frequency (below 10 MHz or above 100 GHz)",
        });
    }
    TSC_KHZ.store(khz, Ordering::Relaxed);
    log::info!(
        "xen: pvclock version {}, TSC {} kHz (mul {:#x}, shift {}), flags {:#x}",
        t.version,
        khz,
        t.tsc_to_system_mul,
        t.tsc_shift,
        t.flags
    );
    if let Some(leaf) = leaf_khz {
        // Only logged: the pvclock is the hypervisor's own scale.
        log::info!(
            "xen: base+3 says {} kHz ({})",
            leaf,
            if u64::from(leaf).abs_diff(khz) <= khz / 1000 {
                "agrees with the pvclock"
            } else {
                "differs from the pvclock, which is used"
            }
        );
    }
    Ok(())
}

fn setup_timer_channel(how: Delivery, vcpu: u32) -> Result<u32, SetupError> {
    let step = "event channel";
    if how == Delivery::None {
        return Err(SetupError {
            step: "upcall",
            detail: "neither an upcall vector nor XENFEAT_hvm_callback_vector",
        });
    }
    let port = hypercall::evtchn_bind_virq(abi::VIRQ_TIMER, vcpu).map_err(|rc| SetupError {
        step,
        detail: errno_detail(rc, "EVTCHNOP_bind_virq(VIRQ_TIMER) failed"),
    })?;
    if port >= abi::EVTCHN_2L_NR_CHANNELS {
        return Err(SetupError {
            step,
            detail: "port outside the 2-level ABI",
        });
    }
    hypercall::evtchn_unmask(port).map_err(|rc| SetupError {
        step,
        detail: errno_detail(rc, "EVTCHNOP_unmask failed"),
    })?;
    Ok(port)
}

fn setup_runstate(platform: &mut dyn Platform, cpu: usize, vcpu: u32) -> Result<(), SetupError> {
    let err = |detail| SetupError {
        step: "runstate",
        detail,
    };
    let page = platform
        .alloc_shared_page()
        .ok_or(err("the platform has no page to give"))?;
    let area = page.virt.as_ptr().cast::<abi::VcpuRunstateInfo>();
    // SAFETY: a zeroed, page-aligned page lent for good, used only for this.
    unsafe { hypercall::vcpu_register_runstate_memory_area(vcpu, area as u64) }.map_err(|rc| {
        err(errno_detail(
            rc,
            "VCPUOP_register_runstate_memory_area failed",
        ))
    })?;
    // SAFETY: registered just now; aligned and live for good.
    unsafe { shared::set_runstate(cpu, area) };
    Ok(())
}

// ---------------------------------------------------------------------------
// Table entries
// ---------------------------------------------------------------------------

/// `cpu.io_delay`: there is no legacy bus to wait for.
extern "C" fn io_delay() {}

/// `cpu.halt`: `SCHEDOP_block`, interrupt flag unchanged. With IF set this
/// is `hlt`; with IF clear it waits for the next event instead of taking
/// the vCPU down as an HVM `hlt` with IF clear does (Xen `hvm_hlt`).
extern "C" fn halt() {
    let _ = hypercall::sched_block();
}

/// `irq.safe_halt`: see `docs/backends/xen.md`, "Idle". An event already
/// pending on vCPU 0 is taken at once (no exit); otherwise `sti; hlt`,
/// which Xen's `hvm_hlt` turns into `vcpu_block_enable_events()` — the body
/// of `SCHEDOP_block` — after retiring the `hlt`, i.e. with the STI shadow
/// gone, so a pending interrupt prevents the block. A `SCHEDOP_block`
/// VMCALL cannot be made atomic with `sti`.
extern "C" fn safe_halt() {
    if shared::upcall_pending() {
        pvops::native::irq::enable();
    } else {
        pvops::native::irq::safe_halt();
    }
}

/// `time.monotonic_ns`: pvclock system time, never going backwards.
extern "C" fn monotonic_ns() -> u64 {
    next_ns(&LAST_NS, shared::read_time(PVCLOCK_TRIES_HOT).ok())
}

/// The clock value for a pvclock `reading` (snapshot and TSC), never below
/// `last`, which it advances; `last` itself when the read failed. A step
/// back is logged once.
fn next_ns(last: &AtomicU64, reading: Option<(pvops_abi::pvclock::VcpuTimeInfo, u64)>) -> u64 {
    match reading {
        Some((t, tsc)) => {
            let now = t.ns_at(tsc);
            let prev = last.fetch_max(now, Ordering::Relaxed);
            if now < prev && !CLOCK_WENT_BACK.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "xen: the pvclock went backwards ({} ns after {} ns); kept monotonic",
                    now,
                    prev
                );
            }
            now.max(prev)
        }
        None => last.load(Ordering::Relaxed),
    }
}

/// `time.tsc_frequency`: from the pvclock multiplier and shift (or, without
/// a pvclock, from base+3).
extern "C" fn tsc_frequency() -> TscFrequency {
    TscFrequency {
        khz: TSC_KHZ.load(Ordering::Relaxed),
        source: if TSC_FROM_LEAF.load(Ordering::Relaxed) {
            TscSource::XenTimeLeaf
        } else {
            TscSource::Pvclock
        },
    }
}

/// `time.timer_setup`: route event-channel upcalls to `vector`: the
/// per-vCPU upcall vector where offered, else (or if Xen refuses it) the
/// callback-via vector, else the native timer.
extern "C" fn timer_setup(vector: u8) {
    TIMER_VECTOR.store(vector, Ordering::Relaxed);
    let cpu = here();
    if TIMER_PORT[cpu].load(Ordering::Relaxed) == NO_PORT {
        // This CPU's set-up failed (or never ran): its local APIC timer.
        TIMER_NATIVE[cpu].store(true, Ordering::Relaxed);
        return pvops::native::time::timer_setup(vector);
    }
    if delivery() == Delivery::UpcallVector {
        match hypercall::hvm_set_evtchn_upcall_vector(vcpu_id(), vector) {
            Ok(()) => {
                TIMER_NATIVE[cpu].store(false, Ordering::Relaxed);
                return;
            }
            Err(rc) => {
                log::warn!(
                    "xen: HVMOP_set_evtchn_upcall_vector failed ({}); trying the callback via",
                    abi::errno::name(rc)
                );
                set_delivery(Delivery::CallbackVia);
            }
        }
    }
    match hypercall::hvm_set_param(
        abi::HVM_PARAM_CALLBACK_IRQ,
        abi::callback_via_vector(vector),
    ) {
        Ok(()) => TIMER_NATIVE[cpu].store(false, Ordering::Relaxed),
        Err(rc) => {
            log::error!(
                "xen: HVMOP_set_param(CALLBACK_IRQ) failed ({}); using the native timer",
                abi::errno::name(rc)
            );
            set_delivery(Delivery::None);
            TIMER_NATIVE[cpu].store(true, Ordering::Relaxed);
            pvops::native::time::timer_setup(vector);
        }
    }
}

/// `time.timer_arm`: `VCPUOP_set_singleshot_timer` at pvclock now + delta.
extern "C" fn timer_arm(delta_ns: u64) {
    let cpu = here();
    if TIMER_NATIVE[cpu].load(Ordering::Relaxed) {
        return pvops::native::time::timer_arm(delta_ns);
    }
    let now = match shared::read_time(PVCLOCK_TRIES_HOT) {
        Ok((t, tsc)) => t.ns_at(tsc),
        Err(_) => LAST_NS.load(Ordering::Relaxed),
    };
    // No VCPU_SSHOTTMR_future: a deadline already passed fires at once.
    // Xen accepts the single-shot timer ops only for the calling vCPU.
    if let Err(rc) =
        hypercall::vcpu_set_singleshot_timer(vcpu_id(), now.saturating_add(delta_ns.max(1)), 0)
    {
        // A timer that worked and now fails would never fire again: the
        // native timer takes over for good, on the vector already routed.
        log::error!(
            "xen: VCPUOP_set_singleshot_timer failed ({}); the native timer takes over",
            abi::errno::name(rc)
        );
        TIMER_NATIVE[cpu].store(true, Ordering::Relaxed);
        set_delivery(Delivery::None);
        pvops::native::time::timer_setup(TIMER_VECTOR.load(Ordering::Relaxed));
        pvops::native::time::timer_arm(delta_ns);
    }
}

/// `time.timer_cancel`: `VCPUOP_stop_singleshot_timer`.
extern "C" fn timer_cancel() {
    if TIMER_NATIVE[here()].load(Ordering::Relaxed) {
        return pvops::native::time::timer_cancel();
    }
    let _ = hypercall::vcpu_stop_singleshot_timer(vcpu_id());
}

/// Upcalls on the timer vector that found the timer port not pending.
static SPURIOUS_UPCALLS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// `time.timer_ack`: clear the upcall flag and the timer port's pending bit
/// (with the callback via, Xen re-injects the vector while
/// `evtchn_upcall_pending` is set). A callback-via upcall has no LAPIC
/// in-service bit, so the EOI the kernel sends after this is swallowed by
/// [`eoi`]; an upcall-vector upcall came through the vLAPIC and keeps it.
extern "C" fn timer_ack() {
    let cpu = here();
    if TIMER_NATIVE[cpu].load(Ordering::Relaxed) {
        return pvops::native::time::timer_ack();
    }
    let port = TIMER_PORT[cpu].load(Ordering::Relaxed);
    // An upcall with the timer port not pending is no timer expiry (the
    // vector carries every event channel); said, a few times per boot, so
    // an extra timer interrupt a kernel sees can be told apart.
    if port != NO_PORT
        && !shared::ack_port(port)
        && SPURIOUS_UPCALLS.fetch_add(1, Ordering::Relaxed) < 4
    {
        log::warn!("xen: timer upcall on CPU {cpu} without its port {port} pending");
    }
    if delivery() == Delivery::CallbackVia {
        SKIP_EOI[cpu].store(true, Ordering::Relaxed);
    }
}

/// `irq.eoi`: native, except the one right after a callback-via timer
/// upcall ([`timer_ack`]), which has nothing in service to retire — an EOI
/// there would retire whatever other vector is in service (review F3).
extern "C" fn eoi() {
    if !SKIP_EOI[here()].swap(false, Ordering::Relaxed) {
        pvops::native::irq::eoi();
    }
}

/// `time.steal_ns`: runnable + offline time from the runstate area.
extern "C" fn steal_ns() -> u64 {
    next_steal(&LAST_STEAL[here()], shared::steal_ns(RUNSTATE_TRIES))
}

/// `lock.wait`: clear this CPU's IPI port, re-check the word, then
/// `SCHEDOP_poll` on the port. A kick after the re-check leaves the port
/// pending and the poll returns at once; an interrupt for this vCPU also
/// ends the poll (Xen's `vcpu_kick` unblocks it), so it returns with
/// interrupts enabled or not. A CPU without a port spins (native).
extern "C" fn lock_wait(word: &core::sync::atomic::AtomicU32, expected: u32) {
    let port = LOCK_PORT[here()].load(Ordering::Acquire);
    if port == NO_PORT {
        return pvops::native::lock::wait(word, expected);
    }
    wait_step(word, expected, port, shared::clear_pending, |p| {
        hypercall::sched_poll(p, poll_deadline())
    });
}

/// How long one poll may sleep at most: a guard, not the wake-up path.
/// Xen wakes a poller when its port becomes pending, masked or not
/// (`evtchn_check_pollers`), so the kick alone suffices there; an
/// emulation that missed a masked-port wake-up (or a vCPU polling with
/// interrupts disabled, which no interrupt ends) then costs 1 ms rather
/// than a hang.
const POLL_GUARD_NS: u64 = 1_000_000;

/// Whether `SCHEDOP_poll`'s timeout is read as a duration
/// ([`poll_timeout_is_relative`]).
static POLL_RELATIVE: AtomicBool = AtomicBool::new(false);

/// The `timeout` [`lock_wait`] polls with: the absolute system time
/// [`POLL_GUARD_NS`] from now, as Xen's `do_poll` reads it (`set_timer`
/// takes an absolute `s_time_t`; sched.h), or the guard itself where the
/// hypervisor reads it as a duration (0 = no timeout, when the pvclock
/// cannot be read).
fn poll_deadline() -> u64 {
    if POLL_RELATIVE.load(Ordering::Relaxed) {
        return POLL_GUARD_NS;
    }
    match shared::read_time(PVCLOCK_TRIES_HOT) {
        Ok((t, tsc)) => t.ns_at(tsc).saturating_add(POLL_GUARD_NS),
        Err(_) => 0,
    }
}

/// The probe's timeout: 10 ms read as a duration; as an absolute system
/// time it lies long before any kernel's initialisation.
const POLL_PROBE_NS: u64 = 10_000_000;

/// Whether the hypervisor reads `SCHEDOP_poll`'s timeout as a duration.
/// Xen reads an absolute system time; KVM's Xen emulation (Linux
/// arch/x86/kvm/xen.c `kvm_xen_schedop_poll`) arms `jiffies +
/// nsecs_to_jiffies(timeout)`, so the absolute deadline Xen wants would
/// make its guard last as long as the guest has been up (seen on the
/// nested peer: a 1 ms guard that never fired). One poll on the masked,
/// cleared `port` with [`POLL_PROBE_NS`] tells them apart: Xen returns
/// at once (the deadline has passed), the emulation sleeps at least a
/// jiffy (>= 1 ms at HZ <= 1000). Twice, because any event ends a poll
/// early. Costs under 1 ms on Xen, one or two jiffies per poll on KVM.
fn poll_timeout_is_relative(port: u32) -> bool {
    (0..2).any(|_| {
        shared::clear_pending(port);
        let Ok((t0, tsc0)) = shared::read_time(PVCLOCK_TRIES_HOT) else {
            return false;
        };
        if hypercall::sched_poll(port, POLL_PROBE_NS).is_err() {
            return false;
        }
        let Ok((t1, tsc1)) = shared::read_time(PVCLOCK_TRIES_HOT) else {
            return false;
        };
        t1.ns_at(tsc1).saturating_sub(t0.ns_at(tsc0)) >= POLL_PROBE_NS / 10
    })
}

/// The order of [`lock_wait`]: clear `port`'s pending bit, re-check
/// `word`, poll `port` only if it still holds `expected`.
fn wait_step(
    word: &core::sync::atomic::AtomicU32,
    expected: u32,
    port: u32,
    clear: impl FnOnce(u32),
    poll: impl FnOnce(u32) -> Result<(), i64>,
) {
    clear(port);
    if word.load(Ordering::Acquire) != expected {
        return;
    }
    if poll(port).is_err() {
        core::hint::spin_loop();
    }
}

/// The port [`lock_kick`] sends on to wake CPU `cpu`.
fn kick_port(cpu: u32) -> Option<u32> {
    let port = LOCK_PORT.get(cpu as usize)?.load(Ordering::Acquire);
    (port != NO_PORT).then_some(port)
}

/// `lock.kick`: `EVTCHNOP_send` on the target CPU's IPI port.
extern "C" fn lock_kick(cpu: u32) {
    if let Some(port) = kick_port(cpu) {
        let _ = hypercall::evtchn_send(port);
    }
}

/// `lock.vcpu_is_preempted`: the target's runstate is `RUNSTATE_runnable`
/// (it wants to run but Xen runs something else).
extern "C" fn lock_vcpu_is_preempted(cpu: u32) -> bool {
    shared::runstate_state(cpu as usize) == Some(abi::RUNSTATE_RUNNABLE as i32)
}

/// The steal time for a runstate `reading`, never below `last`, which it
/// advances; `last` when the area is not registered or never settled (a
/// hypervisor that leaves `XEN_RUNSTATE_UPDATE` set, or moves the counters
/// backwards, cannot make the kernel's steal accounting go negative).
fn next_steal(last: &AtomicU64, reading: Option<u64>) -> u64 {
    match reading {
        Some(now) => now.max(last.fetch_max(now, Ordering::Relaxed)),
        None => last.load(Ordering::Relaxed),
    }
}

/// `system.shutdown`: `SCHEDOP_shutdown` with poweroff or crash.
extern "C" fn shutdown(reason: ShutdownReason) {
    let code = match reason {
        ShutdownReason::PowerOff => abi::SHUTDOWN_POWEROFF,
        ShutdownReason::Crash => abi::SHUTDOWN_CRASH,
    };
    if let Err(rc) = hypercall::sched_shutdown(code) {
        log::error!(
            "xen: SCHEDOP_shutdown failed ({}); trying native",
            abi::errno::name(rc)
        );
        pvops::native::system::shutdown(reason);
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
