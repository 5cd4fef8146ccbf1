//! The VMware backend (Cargo feature `vmware`).
//!
//! **Detection** ([`detect::vmware_cpuid`]): the hypervisor bit and the
//! "VMwareVMware" signature at CPUID 0x4000_0000, priority 0x4000_0000 like
//! Linux. The timing leaf 0x4000_0010 is read only when the max leaf reaches
//! it, and its TSC value is trusted only when non-zero. The backdoor alone
//! never claims the machine (QEMU answers it by default); other backends may
//! use its services through [`backdoor_probe`].
//!
//! **Entries replaced** (see `docs/backends/vmware.md` for the reasons):
//! `time.tsc_frequency`, `time.monotonic_ns` (TSC at the hypervisor's
//! frequency, no calibration), `time.apic_timer_khz` (when the hypervisor
//! gives the bus frequency), `cpu.io_delay` (no-op), `cpu.halt` and
//! `irq.safe_halt` (plain HLT, VMware's recommended idle), and
//! `time.steal_ns` when STEALCLOCK enables an area. Everything else stays
//! native.
//!
//! **Per vCPU**: STEALCLOCK registers the *calling* vCPU's area (Linux
//! `vmware_cpu_online` sends it on each CPU), so the boot CPU's area is set
//! up in `install` and each AP's in [`Backend::init_cpu`], in its own page;
//! `time.steal_ns` reads the running CPU's ([`pvops::percpu::current`]).
//! An AP whose set-up fails reads 0 (native), recorded in its fallbacks.
//!
//! **Failure**: when neither the timing leaf nor GETHZ gives a TSC
//! frequency, [`Backend::install`] returns an error and the kernel falls back
//! to native (which calibrates). A failed steal-clock setup only leaves
//! `time.steal_ns` native.

mod backdoor;
pub mod detect;

pub use detect::{BackdoorInfo, TimePlan, VmwareCpuid};
pub use pvops_abi::vmware::Channel;

use crate::{Backend, Cpu, Detection, Environment, Fallbacks, Platform, SetupError};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use pvops::native::{cpu as ncpu, irq as nirq, time as ntime};
use pvops::patch::Patch;
use pvops::percpu::MAX_CPUS;
use pvops::slot;
use pvops::time::{TscFrequency, TscSource};
use pvops_abi::vmware::{Registers, Request, StealTime, CPUID_INFO_LEAF};
use pvops_probe::CpuidSource;

/// The VMware backend.
pub static VMWARE: Vmware = Vmware;

/// The VMware backend's type.
#[derive(Debug)]
pub struct Vmware;

/// Why detection matched, for the boot log.
const REASON: &str = "\"VMwareVMware\" signature with the hypervisor bit";

impl Backend for Vmware {
    fn name(&self) -> &'static str {
        "vmware"
    }

    fn description(&self) -> &'static str {
        "TSC and APIC timer frequencies from CPUID 0x40000010 or backdoor GETHZ, \
         TSC clock, no-op io_delay, HLT idle, STEALCLOCK steal time"
    }

    fn detect(&self, env: &Environment<'_>) -> Option<Detection> {
        detect::vmware_cpuid(env.probe, env.cpuid).map(|_| Detection {
            priority: CPUID_INFO_LEAF,
            reason: REASON,
            base: Some(CPUID_INFO_LEAF),
        })
    }

    fn install(
        &self,
        env: &Environment<'_>,
        patch: &mut Patch,
        platform: &mut dyn Platform,
    ) -> Result<(), SetupError> {
        let cpu = detect::vmware_cpuid(env.probe, env.cpuid).ok_or(SetupError {
            step: "detection",
            detail: "no VMware signature at 0x40000000",
        })?;
        let channel = cpu.channel;
        let mut call = |req: &Request| {
            // SAFETY: pvops runs at CPL 0; `channel` is the port unless
            // 0x4000_0010.ECX announced VMCALL/VMMCALL; `install_with` sends
            // only GETHZ and STEALCLOCK, the latter with the reserved
            // "disable" address or the address of a shared page the kernel
            // gave for the rest of its life (4 KiB, so 64-byte aligned).
            unsafe { backdoor::call(channel, req) }
        };
        install_with(cpu, patch, platform, &mut call)
    }

    fn init_cpu(&self, cpu: Cpu, fallbacks: &mut Fallbacks, platform: &mut dyn Platform) {
        let Some(channel) = channel() else {
            return;
        };
        let mut call = |req: &Request| {
            // SAFETY: as in `install`: CPL 0, the channel chosen there, and
            // only STEALCLOCK with the disable address or a page lent for
            // good.
            unsafe { backdoor::call(channel, req) }
        };
        init_cpu_with(cpu, fallbacks, platform, &mut call);
    }
}

/// [`Backend::init_cpu`] with the backdoor call injected: this vCPU's own
/// steal-clock area, if the boot CPU has one.
pub(crate) fn init_cpu_with(
    cpu: Cpu,
    fallbacks: &mut Fallbacks,
    platform: &mut dyn Platform,
    call: &mut dyn FnMut(&Request) -> Registers,
) {
    if !STEAL_OWNED.load(Ordering::Relaxed) || cpu.index >= MAX_CPUS {
        return;
    }
    let mut page = None;
    let steal = detect::setup_steal_clock(call, || {
        let p = platform.alloc_shared_page()?;
        page = Some(p);
        Some(p.phys)
    });
    match (steal, page) {
        (Ok(phys), Some(p)) => {
            set_area(cpu.index, p.virt.as_ptr().cast::<StealTime>());
            log::info!("vmware: cpu {}: steal clock at {:#x}", cpu.index, phys);
        }
        (Err(why), _) => fallbacks.push(cpu.index, "time.steal_ns", why.reason()),
        (Ok(_), None) => fallbacks.push(cpu.index, "time.steal_ns", "enabled without a page"),
    }
}

fn set_area(cpu: usize, area: *mut StealTime) {
    LAST_STEAL[cpu].store(0, Ordering::Relaxed);
    STEAL_FROZEN[cpu].store(0, Ordering::Relaxed);
    STEAL_AREA[cpu].store(area, Ordering::Release);
}

/// [`Backend::install`] with the backdoor call injected (host tests pass a
/// fake hypervisor).
pub(crate) fn install_with(
    cpu: VmwareCpuid,
    patch: &mut Patch,
    platform: &mut dyn Platform,
    call: &mut dyn FnMut(&Request) -> Registers,
) -> Result<(), SetupError> {
    if let Some(khz) = cpu
        .timing
        .and_then(|t| t.trusted_tsc_khz())
        .filter(|&k| !crate::tsc::plausible_khz(u64::from(k)))
    {
        log::warn!(
            "vmware: timing leaf 0x40000010 says the TSC runs at {} kHz: implausible, ignored",
            khz
        );
    }
    let plan = detect::plan_time(cpu.timing, || {
        let hz = call(&Request::get_hz()).hz();
        if let Some(h) = hz.filter(|h| !crate::tsc::plausible_khz(h.tsc_khz())) {
            log::warn!(
                "vmware: backdoor GETHZ says the TSC runs at {} kHz: implausible, ignored",
                h.tsc_khz()
            );
        }
        hz
    })
    .ok_or(SetupError {
        step: "tsc frequency",
        detail: "timing leaf 0x40000010 absent, zero or implausible and backdoor GETHZ unsupported or implausible",
    })?;

    CHANNEL.store(channel_code(cpu.channel), Ordering::Relaxed);
    TSC_KHZ.store(plan.tsc_khz, Ordering::Relaxed);
    FROM_LEAF.store(
        u8::from(plan.source == TscSource::TimingLeaf),
        Ordering::Relaxed,
    );
    // The native scaling (32.32 ns per tick) is reused, not duplicated.
    ntime::set_tsc_frequency(plan.tsc_khz, plan.source);
    ORIGIN.store(ncpu::read_tsc(), Ordering::Relaxed);
    patch.set(slot::TIME_TSC_FREQUENCY, tsc_frequency);
    patch.set(slot::TIME_MONOTONIC_NS, monotonic_ns);
    match plan.apic_khz {
        Some(khz) => {
            APIC_KHZ.store(khz, Ordering::Relaxed);
            patch.set(slot::TIME_APIC_TIMER_KHZ, apic_timer_khz);
        }
        None => {
            log::info!("vmware: no APIC bus frequency from the hypervisor; APIC timer stays native")
        }
    }

    // Port 0x80 delays exist for ISA devices; a virtual device needs none,
    // and each OUT is a VM exit (Linux: `pv_info.io_delay = false`).
    patch.set(slot::CPU_IO_DELAY, io_delay);
    // VMware's idle is HLT: it deschedules the vCPU cheaply and there is no
    // paravirtual idle call. Owning the entries pins that choice under VMware.
    patch.set(slot::CPU_HALT, ncpu::halt);
    patch.set(slot::IRQ_SAFE_HALT, nirq::safe_halt);

    let mut page = None;
    let steal = detect::setup_steal_clock(call, || {
        let p = platform.alloc_shared_page()?;
        page = Some(p);
        Some(p.phys)
    });
    match (steal, page) {
        (Ok(phys), Some(p)) => {
            set_area(
                pvops::percpu::current() % MAX_CPUS,
                p.virt.as_ptr().cast::<StealTime>(),
            );
            STEAL_OWNED.store(true, Ordering::Relaxed);
            patch.set(slot::TIME_STEAL_NS, steal_ns);
            log::info!("vmware: steal clock at {:#x}", phys);
        }
        (Err(why), _) => log::info!("vmware: steal time stays native: {}", why.reason()),
        (Ok(_), None) => log::warn!("vmware: steal clock enabled without a page; ignored"),
    }

    log::info!(
        "vmware: TSC {} kHz from {}, APIC timer {} kHz, backdoor over {}",
        plan.tsc_khz,
        plan.source.name(),
        plan.apic_khz.unwrap_or(0),
        cpu.channel.name()
    );
    Ok(())
}

/// Probes the VMware backdoor on the I/O port without a VMware signature,
/// for whichever backend wins (QEMU answers it by default, so it never makes
/// a machine "VMware"). Does nothing unless `CPUID.1:ECX[31]` (hypervisor) is
/// set; GETVERSION must answer with the magic before GETHZ and GETVCPU_INFO
/// are asked, and every answer is validated ([`pvops_abi::vmware`]).
///
/// Like all of pvops, must run at CPL 0.
pub fn backdoor_probe() -> Option<BackdoorInfo> {
    let hypervisor = pvops_probe::NativeCpuid.cpuid(1, 0).ecx & (1 << 31) != 0;
    detect::probe_backdoor(hypervisor, &mut |req| {
        // SAFETY: CPL 0 (pvops' contract, stated above); the port needs no
        // announcement; GETVERSION, GETHZ and GETVCPU_INFO make the
        // hypervisor write registers only. Reached only with the hypervisor
        // bit set, so the IN traps to a hypervisor.
        unsafe { backdoor::call(Channel::IoPort, req) }
    })
}

/// The backdoor channel chosen at installation, if the backend installed.
pub fn channel() -> Option<Channel> {
    match CHANNEL.load(Ordering::Relaxed) {
        1 => Some(Channel::IoPort),
        2 => Some(Channel::Vmcall),
        3 => Some(Channel::Vmmcall),
        _ => None,
    }
}

const fn channel_code(c: Channel) -> u8 {
    match c {
        Channel::IoPort => 1,
        Channel::Vmcall => 2,
        Channel::Vmmcall => 3,
    }
}

static CHANNEL: AtomicU8 = AtomicU8::new(0);
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
static FROM_LEAF: AtomicU8 = AtomicU8::new(0);
static APIC_KHZ: AtomicU64 = AtomicU64::new(0);
static ORIGIN: AtomicU64 = AtomicU64::new(0);
/// Each CPU's steal-clock area (null: none, `time.steal_ns` reads 0).
static STEAL_AREA: [AtomicPtr<StealTime>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static LAST_STEAL: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static STEAL_FROZEN: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];
/// The boot CPU's steal clock works: APs set up theirs.
static STEAL_OWNED: AtomicBool = AtomicBool::new(false);

/// `time.tsc_frequency`: the hypervisor's value and its source.
extern "C" fn tsc_frequency() -> TscFrequency {
    TscFrequency {
        khz: TSC_KHZ.load(Ordering::Relaxed),
        source: if FROM_LEAF.load(Ordering::Relaxed) != 0 {
            TscSource::TimingLeaf
        } else {
            TscSource::VmwareBackdoor
        },
    }
}

/// `time.apic_timer_khz`: the hypervisor's bus frequency.
extern "C" fn apic_timer_khz() -> u64 {
    APIC_KHZ.load(Ordering::Relaxed)
}

/// `time.monotonic_ns`: TSC ticks since installation at the hypervisor's
/// frequency (VMware keeps the virtual TSC constant-rate and synchronised;
/// Linux's `vmware_sched_clock` does the same).
extern "C" fn monotonic_ns() -> u64 {
    ntime::tsc_to_ns(ncpu::read_tsc().saturating_sub(ORIGIN.load(Ordering::Relaxed)))
}

/// `cpu.io_delay`: nothing to wait for.
extern "C" fn io_delay() {}

/// `time.steal_ns`: the running CPU's steal clock (virtual-TSC ticks) in
/// ns; 0 on a CPU without an area.
extern "C" fn steal_ns() -> u64 {
    let cpu = pvops::percpu::current() % MAX_CPUS;
    let area = STEAL_AREA[cpu].load(Ordering::Acquire);
    if area.is_null() {
        return 0;
    }
    // SAFETY: `area` is the start of a shared page the kernel lent for the
    // rest of its life (`Platform::alloc_shared_page`): mapped, 4 KiB
    // aligned (so 8-byte aligned for `clock`), and written only by the
    // hypervisor, which updates the 64-bit counter as one aligned store.
    let ticks = unsafe { core::ptr::read_volatile(&raw const (*area).clock) };
    ntime::tsc_to_ns(steal_monotonic(ticks, &LAST_STEAL[cpu], &STEAL_FROZEN[cpu]))
}

/// The steal clock never goes backwards: a reading below the last one
/// freezes it at the last good value for good, logged once (the hypervisor
/// broke its counter; Linux's `steal_account_process_time` would account a
/// huge negative delta).
fn steal_monotonic(ticks: u64, last: &AtomicU64, frozen: &AtomicU8) -> u64 {
    if frozen.load(Ordering::Relaxed) != 0 {
        return last.load(Ordering::Relaxed);
    }
    let prev = last.fetch_max(ticks, Ordering::Relaxed);
    if ticks >= prev {
        return ticks;
    }
    if frozen.swap(1, Ordering::Relaxed) == 0 {
        log::warn!(
            "vmware: steal clock went backwards ({} ticks after {}); time.steal_ns frozen at {} ticks",
            ticks,
            prev,
            prev
        );
    }
    prev
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
