//! Hypervisor backends for pvops.
//!
//! A [`Backend`] detects its hypervisor from the CPUID [`Probe`] (with a
//! priority), installs its operations into a [`pvops::patch::Patch`], and
//! describes itself. [`select`] picks the best compiled-in backend, honouring
//! a `pvops=<name>` kernel command-line override; [`init`] does the whole
//! boot sequence: probe, select, install (falling back to native if the
//! chosen backend's setup fails), and make sure the native clock and timer
//! have a TSC frequency.
//!
//! Backends are chosen at build time with Cargo features: `native` is
//! always there; `vmware`, `xen`, `hyperv` and `kvm` add the others. Features are
//! additive: any combination builds, and a kernel built without a backend
//! still boots where that hypervisor runs (it picks another, or native).
#![cfg_attr(not(test), no_std)]

/// The examples of this crate's README and of docs/using-pvops.md, compiled
/// (and run where they can) as doctests for the host.
#[cfg(doctest)]
mod doc_examples {
    #[doc = include_str!("../README.md")]
    struct BackendsReadme;
    #[doc = include_str!("../../docs/using-pvops.md")]
    struct UsingPvops;
}

mod cmdline;
#[cfg(test)]
mod fuzz_model;
#[cfg(feature = "hyperv")]
pub mod hyperv;
#[cfg(feature = "kvm")]
pub mod kvm;
pub mod native;
#[cfg(any(feature = "xen", feature = "kvm"))]
mod pvclock;
mod select;
#[cfg(test)]
mod select_fuzz;
#[cfg(test)]
mod test_support;
#[cfg(any(
    feature = "vmware",
    feature = "xen",
    feature = "hyperv",
    feature = "kvm"
))]
mod tsc;
#[cfg(feature = "vmware")]
pub mod vmware;
#[cfg(feature = "xen")]
pub mod xen;

pub use cmdline::override_from_cmdline;
pub use select::{compiled_in, select, Choice, NativeBecause, Selection, Why};

use core::ptr::NonNull;
use pvops::patch::Patch;
use pvops_probe::{CpuidSource, Probe};

/// What a backend sees of the machine when it detects and installs.
#[derive(Clone, Copy)]
pub struct Environment<'a> {
    /// The decoded CPUID probe.
    pub probe: &'a Probe,
    /// Raw CPUID, for backend-specific leaves (the same source the probe read).
    pub cpuid: &'a dyn CpuidSource,
}

/// A backend's claim that it can drive this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detection {
    /// Higher wins. By convention (as in Linux's `hypervisor.c`) the CPUID
    /// base at which the signature was found, so an interface stacked at
    /// 0x4000_0100 beats a compatibility one at 0x4000_0000; native is 0.
    pub priority: u32,
    /// Why the backend matched, for the boot log.
    pub reason: &'static str,
    /// The CPUID base of the interface used, if any.
    pub base: Option<u32>,
}

/// A setup step that failed; the backend is then not (or only partly) used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupError {
    /// The step that failed, e.g. "hypercall page".
    pub step: &'static str,
    /// What went wrong.
    pub detail: &'static str,
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.step, self.detail)
    }
}

/// A 4 KiB page the kernel lends a backend, to share with the hypervisor.
#[derive(Clone, Copy, Debug)]
pub struct SharedPage {
    /// Guest-physical address (4 KiB aligned).
    pub phys: u64,
    /// Where the kernel mapped it: readable, writable, executable (a
    /// hypervisor may overlay it with hypercall code), cacheable, zeroed.
    pub virt: NonNull<u8>,
}

/// A WRMSR the CPU (or hypervisor) refused with #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrFault;

/// Services a backend needs from the kernel during installation.
///
/// Shared pages each backend asks for (at most; it asks only for what the
/// hypervisor offers), and what it gives up when [`alloc_shared_page`]
/// returns `None` (it logs the step, and falls back per entry):
///
/// | backend | pages | without them |
/// |---|---|---|
/// | `native` | 0 | - |
/// | `vmware` | 1: steal-clock area | `time.steal_ns` stays native (0) |
/// | `xen` | 3: hypercall page, shared_info, runstate area | no hypercall page: the whole backend (native fallback); no shared_info: pvclock clock and event-channel timer stay native; no runstate: no steal time |
/// | `hyperv` | 5: hypercall page + hypercall input page, reference TSC page, VP assist page, crash message page | no hypercall pages: remote flush and IPIs native; no TSC page: clock from the reference-counter MSR (one exit per read); no assist page: EOI through the MSR (no lazy EOI); no crash page: crash notify without message |
///
/// So a kernel that lends 8 pages covers every backend of this crate.
///
/// [`alloc_shared_page`]: Platform::alloc_shared_page
pub trait Platform {
    /// A zeroed 4 KiB page that stays allocated and mapped for the rest of
    /// the kernel's life, or `None` if the kernel has none to give.
    fn alloc_shared_page(&mut self) -> Option<SharedPage>;

    /// Writes `value` to MSR `index` with the kernel's #GP handler set to
    /// step over the WRMSR: `Some(Ok(()))` when written, `Some(Err(_))`
    /// when it raised #GP (nothing written), `None` (the default) when the
    /// kernel cannot recover from a #GP. A backend then writes only what
    /// CPUID promises and checks the write by reading the MSR back.
    ///
    /// # Safety
    ///
    /// As [`pvops::cpu::write_msr`]: if the write succeeds, its effects
    /// must be sound (e.g. a page the MSR registers was lent for good).
    unsafe fn write_msr_catching_gp(
        &mut self,
        _index: u32,
        _value: u64,
    ) -> Option<Result<(), MsrFault>> {
        None
    }

    /// Reads MSR `index` with the kernel's #GP handler set to step over the
    /// RDMSR: `Some(Ok(value))` when read, `Some(Err(_))` when it raised
    /// #GP, `None` (the default) when the kernel cannot recover from a #GP.
    /// A backend uses it to check that an MSR CPUID promises exists before
    /// it relies on it (a hypervisor may promise what it does not
    /// implement, see `docs/lying-hypervisors.md`).
    ///
    /// # Safety
    ///
    /// As [`pvops::cpu::read_msr`]: reading `index` must have no effect
    /// the caller has not accounted for.
    unsafe fn read_msr_catching_gp(&mut self, _index: u32) -> Option<Result<u64, MsrFault>> {
        None
    }

    /// How many CPUs the kernel will run (the boot CPU included; at most
    /// [`pvops::percpu::MAX_CPUS`] are used). Backends gate the features
    /// that need other CPUs on it, as Linux's `kvm.c` does with
    /// `num_possible_cpus()`: PV IPIs, PV TLB flush and PV spinlocks are
    /// not set up for one CPU. The default, 1, is right for a kernel that
    /// never starts an application processor.
    fn possible_cpus(&self) -> usize {
        1
    }
}

/// The CPU a backend sets up in [`Backend::init_cpu`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// Its index ([`pvops::percpu::current`]).
    pub index: usize,
    /// Its local APIC ID.
    pub apic_id: u32,
}

/// Entries that run native on one CPU because its own set-up failed,
/// each with the reason (also logged).
#[derive(Clone, Copy, Debug, Default)]
pub struct Fallbacks {
    items: [(&'static str, &'static str); Fallbacks::CAPACITY],
    len: usize,
}

impl Fallbacks {
    /// Fallbacks kept per CPU (more are logged, not kept).
    pub const CAPACITY: usize = 16;

    /// Records that `entry` runs native on this CPU, and why (logged).
    pub fn push(&mut self, cpu: usize, entry: &'static str, why: &'static str) {
        log::warn!(
            "pvops: cpu {}: {} runs native on this CPU: {}",
            cpu,
            entry,
            why
        );
        if self.len < Self::CAPACITY {
            self.items[self.len] = (entry, why);
            self.len += 1;
        }
    }

    /// The recorded (entry, reason) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.items[..self.len].iter().copied()
    }

    /// How many were recorded.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether every entry runs as on the boot CPU.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A hypervisor backend.
pub trait Backend: Sync {
    /// Short stable name, as used in `pvops=<name>` and reports.
    fn name(&self) -> &'static str;

    /// One sentence on what the backend uses.
    fn description(&self) -> &'static str;

    /// Whether this backend can run here, and with which priority.
    fn detect(&self, env: &Environment<'_>) -> Option<Detection>;

    /// Why the backend does not detect although its hypervisor's signature
    /// is there (e.g. a Hyper-V without the hypercall or VP index
    /// privileges); `None` when it detects or sees no such signature.
    fn declined(&self, _env: &Environment<'_>) -> Option<&'static str> {
        None
    }

    /// Sets up the hypervisor interfaces and replaces table entries in
    /// `patch`. On error the caller discards the patch and installs native;
    /// a backend that can still offer part of its entries after a failed
    /// step reverts only the affected entries and returns `Ok`, logging why.
    fn install(
        &self,
        env: &Environment<'_>,
        patch: &mut Patch,
        platform: &mut dyn Platform,
    ) -> Result<(), SetupError>;

    /// Sets up this backend's state of one application processor (its
    /// clock area, VP index, vCPU info, timer, ...), on that CPU, after
    /// [`Backend::install`] succeeded on the boot CPU. What fails is
    /// recorded in `fallbacks`: those entries then run native on this CPU
    /// only. The default does nothing (a backend without per-CPU state).
    fn init_cpu(&self, _cpu: Cpu, _fallbacks: &mut Fallbacks, _platform: &mut dyn Platform) {}
}

/// What [`init`] did, for the boot report.
pub struct InitReport {
    /// The CPUID probe.
    pub probe: Probe,
    /// The selection and why it was made.
    pub selection: Selection,
    /// The backend actually installed (native after a failed setup).
    pub installed: &'static str,
    /// The setup error that forced a fallback to native, if any.
    pub fallback: Option<SetupError>,
    /// A compiled-in backend that saw its hypervisor's signature but did
    /// not detect, and why (the first such backend).
    pub declined: Option<(&'static str, &'static str)>,
    /// Why the table was not patched at all, if it was not: a second `init`
    /// ([`pvops::patch::InstallError::AlreadySealed`], [`installed`](Self::installed)
    /// is then the earlier init's backend) or interrupts left enabled.
    pub refused: Option<pvops::patch::InstallError>,
    /// Set-up steps the kernel skipped that pvops needs (each also logged
    /// as a warning), e.g. the local APIC not enabled.
    pub missing_steps: &'static [&'static str],
}

/// The warning [`init`] gives when the local APIC was not enabled.
pub const MISSING_APIC: &str = "the local APIC is not enabled: call pvops::apic::enable \
     (mode from pvops::apic::preferred_mode) before pvops_backends::init, or timers never \
     fire and the first irq::safe_halt sleeps forever";

/// Probes the CPU, selects a backend, installs it and makes sure the clock
/// and timer have a TSC (and, for one-shot APIC mode, APIC timer) frequency.
///
/// The kernel must have configured the local APIC through
/// [`pvops::apic::enable`] beforehand (else a warning, [`MISSING_APIC`],
/// and [`InitReport::missing_steps`] say so). Everything pvops decides is
/// logged through the `log` crate; without a logger fallbacks are silent.
///
/// A second call changes nothing: it logs an error and reports
/// [`InitReport::refused`].
///
/// # Safety
///
/// The contract of [`pvops::patch::install`]: call once, on the boot CPU,
/// with interrupts disabled, before any other CPU runs.
pub unsafe fn init(platform: &mut dyn Platform, cmdline: &str) -> InitReport {
    let missing_steps: &'static [&'static str] = if pvops::apic::mode().is_none() {
        log::warn!("pvops: {}", MISSING_APIC);
        &[MISSING_APIC]
    } else {
        &[]
    };
    let source = pvops_probe::NativeCpuid;
    let probe = pvops_probe::probe(&source);
    let env = Environment {
        probe: &probe,
        cpuid: &source,
    };
    let selection = select(&env, cmdline);
    if let Some(earlier) = pvops::patch::installed() {
        log::error!(
            "pvops: init called again: refused, the table was already patched (backend '{}')",
            earlier
        );
        return InitReport {
            probe,
            selection,
            installed: earlier,
            fallback: None,
            declined: None,
            refused: Some(pvops::patch::InstallError::AlreadySealed),
            missing_steps,
        };
    }
    let mut declined = None;
    for b in compiled_in() {
        if let Some(why) = b.declined(&env) {
            log::info!("pvops: backend '{}' not taken: {}", b.name(), why);
            declined = declined.or(Some((b.name(), why)));
        }
    }
    log::info!(
        "pvops: selected backend '{}': {}",
        selection.backend.name(),
        selection.why
    );

    #[cfg(feature = "kvm")]
    if cmdline::kvm_hypercalls_off(cmdline) {
        kvm::disable_hypercalls();
    }
    register_this_cpu(platform, "the boot CPU");
    let mut patch = Patch::new(selection.backend.name());
    let mut fallback = None;
    if let Err(e) = selection.backend.install(&env, &mut patch, platform) {
        log::warn!(
            "pvops: backend '{}' setup failed ({}); falling back to native",
            selection.backend.name(),
            e
        );
        fallback = Some(e);
        patch = Patch::new(native::NATIVE.name());
        // Native setup cannot fail.
        let _ = native::NATIVE.install(&env, &mut patch, platform);
    }
    let mut installed = patch.backend();
    for entry in patch.replaced() {
        log::debug!("pvops: {} -> {}", entry, installed);
    }
    // SAFETY: forwarded to the caller.
    let refused = unsafe { pvops::patch::install(patch) }.err();
    if let Some(e) = refused {
        installed = pvops::patch::installed().unwrap_or(native::NATIVE.name());
        log::error!(
            "pvops: table not patched ({:?}): refused; entries stay with '{}'",
            e,
            installed
        );
    }
    // `pvops=native` asks for bare hardware behaviour, the baseline that
    // paravirtualisation is measured against: no hypervisor interface at
    // all, not even the timing leaf. Native chosen by detection (a
    // hypervisor without a compiled-in backend) still uses the leaf.
    let pure_native = selection.choice == Choice::Override && installed == native::NATIVE.name();
    native::finish_time_setup(&probe, !pure_native);
    InitReport {
        probe,
        selection,
        installed,
        fallback,
        declined,
        refused,
        missing_steps,
    }
}

/// Registers the running CPU with [`pvops::percpu`] (writing
/// `IA32_TSC_AUX` through the platform's #GP recovery where it has one)
/// and returns its index, or `None` (logged) when it cannot be.
fn register_this_cpu(platform: &mut dyn Platform, which: &str) -> Option<usize> {
    let apic_id = pvops::native::apic::id();
    let mut write_aux = |value: u64| {
        // SAFETY: IA32_TSC_AUX only, which pvops::percpu writes only after
        // CPUID reported RDPID or RDTSCP (the MSR exists then: Intel SDM
        // vol. 4, table 2-2); its value only feeds RDPID/RDTSCP.
        match unsafe { platform.write_msr_catching_gp(pvops::percpu::MSR_TSC_AUX, value) } {
            Some(r) => r.is_ok(),
            None => {
                // SAFETY: as above, without #GP recovery.
                unsafe { pvops::native::cpu::write_msr(pvops::percpu::MSR_TSC_AUX, value) };
                true
            }
        }
    };
    // SAFETY: called once per CPU, on that CPU, one CPU at a time (init's
    // and init_cpu's contracts); the closure writes only IA32_TSC_AUX.
    match unsafe { pvops::percpu::register_current(apic_id, &mut write_aux) } {
        Ok(index) => Some(index),
        Err(e) => {
            log::error!(
                "pvops: {} (APIC ID {}) not registered: {}",
                which,
                apic_id,
                e
            );
            None
        }
    }
}

/// What [`init_cpu`] did on one application processor.
#[derive(Clone, Copy, Debug)]
pub struct CpuReport {
    /// The CPU's index ([`pvops::percpu::current`]), or `None` when it
    /// could not be registered (then nothing was set up: every entry runs
    /// as the boot CPU's do, without this CPU's own state).
    pub index: Option<usize>,
    /// Its local APIC ID.
    pub apic_id: u32,
    /// The installed backend.
    pub backend: &'static str,
    /// Entries that run native on this CPU, with the reasons.
    pub fallbacks: Fallbacks,
}

/// Sets up the running application processor: registers it with
/// [`pvops::percpu`] and sets up the installed backend's state of this CPU
/// ([`Backend::init_cpu`]). Call it on each AP before it enables
/// interrupts, after its local APIC was enabled ([`pvops::apic::enable`],
/// the boot CPU's mode), then `pvops::time::timer_setup` on that CPU. See
/// `docs/smp.md`.
///
/// # Safety
///
/// Call once per AP, on that AP, with interrupts disabled, after [`init`]
/// returned on the boot CPU, and one AP at a time (the next AP starts its
/// `init_cpu` after the previous one returned).
pub unsafe fn init_cpu(platform: &mut dyn Platform) -> CpuReport {
    let apic_id = pvops::native::apic::id();
    let installed = pvops::patch::installed().unwrap_or(native::NATIVE.name());
    let mut report = CpuReport {
        index: None,
        apic_id,
        backend: installed,
        fallbacks: Fallbacks::default(),
    };
    if pvops::percpu::count() == 0 {
        log::error!(
            "pvops: init_cpu on APIC ID {} before init on the boot CPU: nothing set up",
            apic_id
        );
        return report;
    }
    let Some(index) = register_this_cpu(platform, "application processor") else {
        return report;
    };
    report.index = Some(index);
    if let Some(b) = compiled_in().iter().find(|b| b.name() == installed) {
        b.init_cpu(Cpu { index, apic_id }, &mut report.fallbacks, platform);
    }
    log::info!(
        "pvops: cpu {} (APIC ID {}) set up for backend '{}'{}",
        index,
        apic_id,
        installed,
        if report.fallbacks.is_empty() {
            ""
        } else {
            " with per-CPU fallbacks"
        }
    );
    report
}
