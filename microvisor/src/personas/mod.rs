//! Personas: which hypervisor the guest believes it runs on.
//!
//! A persona is one module implementing [`Persona`]: its CPUID leaves in the
//! hypervisor range, its synthetic MSRs, its hypercalls, its I/O ports and
//! any shared pages it provides. Everything else (the architectural CPU,
//! the x2APIC, the legacy devices, the microvisor's own hidden interface) is
//! common and lives in `vcpu`. ABI structures a persona shares with the
//! guest-side backend (clock pages, hypercall layouts) come from the
//! `pvops-abi` crate, never from a private copy.
//!
//! Adding a persona: write `personas/<name>.rs`, then add one variant to
//! [`Active`] (and its arm to `each_persona!`) and one line to [`select`]
//! and [`NAMES`].
//!
//! Beyond the per-exit handlers, a persona may keep its own timers
//! ([`Persona::next_deadline`], [`Persona::poll`]) and raise interrupts
//! through [`GuestCx::apic`]; see which interrupt the guest is about to take
//! ([`Persona::on_inject`], for lazy-EOI schemes); end the run on the
//! guest's behalf ([`HypercallAction::Exit`]); and offer `break=<step>`
//! switches that make one of its setup steps fail on purpose.

pub mod bare;
pub mod hyperv;
pub mod kvm;
pub mod none;
pub mod vmware;
pub mod xen;

use crate::guest::{mem::GuestRam, walk, Gp};
use crate::svm::{vmcb::StateSave, vmrun::GuestRegs};
use crate::vapic::VApic;

/// The first hypervisor CPUID leaf; the range ends at 0x4FFF_FFFF.
pub const HV_LEAF_BASE: u32 = 0x4000_0000;
/// The last hypervisor CPUID leaf.
pub const HV_LEAF_LAST: u32 = 0x4FFF_FFFF;

/// What a persona handler may see and change of the guest.
pub struct GuestCx<'a> {
    /// Guest state in the VMCB (RAX, RSP, RIP, control registers, ...).
    pub state: &'a mut StateSave,
    /// The other general-purpose registers.
    pub regs: &'a mut GuestRegs,
    /// Guest RAM (bounds-checked access).
    pub mem: &'a GuestRam,
    /// Host TSC now (the guest's TSC: TSC_OFFSET is 0).
    pub now: u64,
    /// TSC frequency in kHz.
    pub tsc_khz: u64,
    /// The guest's virtual local APIC (raise an interrupt with
    /// [`VApic::raise`]): the current vCPU's.
    pub apic: &'a mut VApic,
    /// The vCPU the exit came from (its index, which is its APIC ID).
    pub vcpu: usize,
    /// How many vCPUs the guest has.
    pub vcpus: usize,
    /// This vCPU's stolen time so far in ns: runnable while another vCPU
    /// ran ([`crate::sched`]).
    pub steal_ns: u64,
    /// The current vCPU is halted and does not run after this call: the
    /// persona is polled while every vCPU waits for an interrupt (only
    /// [`Persona::poll`] sees `true`).
    pub idle: bool,
    /// What the handler asks of the other vCPUs (IPIs, kicks, a yield):
    /// the vCPU code carries it out before the next guest entry.
    pub requests: &'a mut Requests,
}

/// Work a persona handler asks the vCPU code to do on other vCPUs (it only
/// holds the current vCPU's state). Vectors go into the targets' virtual
/// APICs as fixed IPIs would; a kick makes a halted target runnable even
/// with interrupts off (KVM's `pv_unhalted`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Requests {
    ipis: [(u32, u8); 8],
    len: usize,
    /// IPIs that did not fit (counted, dropped).
    pub overflow: u64,
    /// vCPUs to kick (bit `i` = vCPU `i`).
    pub kicks: u32,
    /// End the current vCPU's slice now (a directed yield).
    pub yield_now: bool,
    /// Flush the current vCPU's TLB before it next runs.
    pub flush_tlb: bool,
    /// Block the current vCPU after this exit, as a HLT would but whatever
    /// RFLAGS.IF says (a hypervisor-side wait such as Xen's
    /// `SCHEDOP_poll`): a kick or a deliverable interrupt ends it (a kick
    /// that came first makes it return at once).
    pub block: bool,
}

impl Requests {
    /// Queues fixed vector `vector` to the vCPUs of `targets` (bit `i` =
    /// vCPU `i`).
    pub fn ipi(&mut self, targets: u32, vector: u8) {
        if targets == 0 {
            return;
        }
        if self.len < self.ipis.len() {
            self.ipis[self.len] = (targets, vector);
            self.len += 1;
        } else {
            self.overflow += 1;
        }
    }

    /// Takes the queued IPIs (targets, vector).
    pub fn take_ipis(&mut self) -> ([(u32, u8); 8], usize) {
        let r = (self.ipis, self.len);
        self.len = 0;
        r
    }

    /// Whether anything is queued.
    pub fn any(&self) -> bool {
        self.len != 0 || self.kicks != 0 || self.yield_now || self.flush_tlb || self.block
    }
}

impl GuestCx<'_> {
    /// Translates a guest-virtual address through the guest's page tables.
    pub fn translate(&self, gva: u64) -> Option<u64> {
        walk::translate(self.mem, self.state.cr0, self.state.cr3, gva)
    }

    /// Reads `out.len()` bytes at guest-virtual `gva` (which may cross
    /// pages); `None` if any byte is unmapped or outside guest RAM.
    pub fn read_virt(&self, gva: u64, out: &mut [u8]) -> Option<()> {
        let mut done = 0;
        while done < out.len() {
            let va = gva.checked_add(done as u64)?;
            let chunk = ((0x1000 - (va & 0xFFF)) as usize).min(out.len() - done);
            let pa = self.translate(va)?;
            self.mem.read(pa, &mut out[done..done + chunk]).ok()?;
            done += chunk;
        }
        Some(())
    }

    /// Writes `data` at guest-virtual `gva`; `None` (nothing or part
    /// written) if any byte is unmapped or outside guest RAM.
    pub fn write_virt(&self, gva: u64, data: &[u8]) -> Option<()> {
        let mut done = 0;
        while done < data.len() {
            let va = gva.checked_add(done as u64)?;
            let chunk = ((0x1000 - (va & 0xFFF)) as usize).min(data.len() - done);
            let pa = self.translate(va)?;
            self.mem.write(pa, &data[done..done + chunk]).ok()?;
            done += chunk;
        }
        Some(())
    }
}

/// How a hypercall ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallAction {
    /// Results are in the registers; the guest continues after VMMCALL.
    Return,
    /// VMMCALL is undefined here: inject #UD (RIP stays on the VMMCALL).
    Undefined,
    /// The guest asked to stop (e.g. Xen's SCHEDOP_shutdown): end the run as
    /// if it had written this value to the `isa-debug-exit` port
    /// (`pvops_abi::exit::ExitCode::Pass as u32` or `Fail as u32`).
    Exit(u32),
}

/// A handled hypercall: its code (for the counters) and outcome.
#[derive(Clone, Copy, Debug)]
pub struct Hypercall {
    /// The code counted under `mv.hypercall`.
    pub code: u64,
    /// What happens next.
    pub action: HypercallAction,
}

/// A page (or run of pages) of guest-physical space a persona provides.
#[derive(Clone, Copy, Debug)]
pub struct SharedPage {
    /// What it is (for the report).
    pub name: &'static str,
    /// Guest-physical address.
    pub gpa: u64,
    /// Number of 4 KiB pages.
    pub pages: u64,
}

/// One hypervisor personality.
pub trait Persona {
    /// Name used on the command line and in reports.
    fn name(&self) -> &'static str;

    /// CPUID.1:ECX[31], the "hypervisor present" bit.
    fn hypervisor_bit(&self) -> bool;

    /// CPUID leaves [`HV_LEAF_BASE`]..=[`HV_LEAF_LAST`] as EAX, EBX, ECX, EDX.
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4];

    /// RDMSR of an MSR the common code does not handle; `None` = unknown.
    fn rdmsr(&mut self, _cx: &mut GuestCx<'_>, _msr: u32) -> Option<Result<u64, Gp>> {
        None
    }

    /// WRMSR of an MSR the common code does not handle; `None` = unknown.
    fn wrmsr(&mut self, _cx: &mut GuestCx<'_>, _msr: u32, _value: u64) -> Option<Result<(), Gp>> {
        None
    }

    /// A VMMCALL that is not a microvisor hypercall.
    fn hypercall(&mut self, cx: &mut GuestCx<'_>) -> Hypercall;

    /// IN from a port the common code does not handle; `None` = unknown.
    fn io_in(&mut self, _cx: &mut GuestCx<'_>, _port: u16, _size: u8) -> Option<u32> {
        None
    }

    /// OUT to a port the common code does not handle; false = unknown.
    fn io_out(&mut self, _cx: &mut GuestCx<'_>, _port: u16, _size: u8, _value: u32) -> bool {
        false
    }

    /// Guest-physical pages this persona provides (none so far).
    fn shared_pages(&self) -> &[SharedPage] {
        &[]
    }

    /// Called once the microvisor knows its clock: the TSC rate and the
    /// virtual APIC timer's input rate, both in kHz.
    fn set_clock(&mut self, _tsc_khz: u64, _apic_bus_khz: u64) {}

    /// Called once at setup with more than one vCPU (never with one, so a
    /// one-vCPU guest sees exactly what it saw before vCPUs were several).
    fn set_vcpus(&mut self, _vcpus: usize) {}

    /// Whether a halted vCPU can be woken without an interrupt (KVM's
    /// `KVM_HC_KICK_CPU`): then a HLT with interrupts off is a wait, not
    /// the end, when another vCPU could kick it.
    fn kicks_halted(&self) -> bool {
        false
    }

    /// vCPU `cx.vcpu` leaves the physical CPU; `preempted`: it was still
    /// runnable (its slice ended), not halted.
    fn descheduled(&mut self, _cx: &mut GuestCx<'_>, _preempted: bool) {}

    /// Host TSC at which [`Persona::poll`] has work (a persona timer), if any.
    fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// Called before every guest entry (of the vCPU about to run, after any
    /// switch) and while the guest halts: fire due
    /// persona timers, raise interrupts with `cx.apic.raise(vector)`,
    /// complete lazy EOIs, refresh shared pages.
    fn poll(&mut self, _cx: &mut GuestCx<'_>) {}

    /// The guest is about to take interrupt `vector` from its APIC.
    fn on_inject(&mut self, _cx: &mut GuestCx<'_>, _vector: u8) {}

    /// Prints the persona's part of the end-of-run report (`@@ mv.<kind>
    /// ...` records, with `bootkit::record!`), before `mv.end`.
    fn report(&self) {}
}

/// The selected persona.
#[allow(clippy::large_enum_variant)] // One per run, in the Vcpu; no heap to box it in.
pub enum Active {
    /// [`none::NoHypervisor`].
    None(none::NoHypervisor),
    /// [`bare::Bare`].
    Bare(bare::Bare),
    /// [`vmware::Vmware`].
    Vmware(vmware::Vmware),
    /// [`xen::Xen`] (also `xen+viridian`).
    Xen(xen::Xen),
    /// [`hyperv::HyperV`] (also `kvm+hyperv`).
    HyperV(hyperv::HyperV),
    /// [`kvm::Kvm`].
    Kvm(kvm::Kvm),
}

/// Persona names accepted on the command line.
pub const NAMES: &[&str] = &[
    "none",
    "bare",
    "vmware",
    "xen",
    "xen+viridian",
    "hyperv",
    "kvm+hyperv",
    "kvm",
];

/// Why a persona could not be selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectError {
    /// No persona has this name.
    UnknownPersona,
    /// The persona has no such `break=` step.
    UnknownBreak,
}

/// The persona called `name`, with setup step `break_step` broken.
pub fn select(name: &str, break_step: Option<&str>) -> Result<Active, SelectError> {
    let plain = |p: Active| match break_step {
        None => Ok(p),
        Some(_) => Err(SelectError::UnknownBreak),
    };
    match name {
        "none" => plain(Active::None(none::NoHypervisor)),
        "bare" => plain(Active::Bare(bare::Bare)),
        "vmware" => vmware::Vmware::new(break_step).map(Active::Vmware),
        "xen" => xen::Xen::new(false, break_step).map(Active::Xen),
        "xen+viridian" => xen::Xen::new(true, break_step).map(Active::Xen),
        "hyperv" => hyperv::HyperV::new(false, break_step).map(Active::HyperV),
        "kvm+hyperv" => hyperv::HyperV::new(true, break_step).map(Active::HyperV),
        "kvm" => kvm::Kvm::new(break_step).map(Active::Kvm),
        _ => Err(SelectError::UnknownPersona),
    }
}

/// `match $active { Active::X(p) => p, ... }` over every variant: the
/// one list of variants [`Active::get`] and [`Active::get_ref`] share.
macro_rules! each_persona {
    ($active:expr) => {
        match $active {
            Active::None(p) => p,
            Active::Bare(p) => p,
            Active::Vmware(p) => p,
            Active::Xen(p) => p,
            Active::HyperV(p) => p,
            Active::Kvm(p) => p,
        }
    };
}

impl Active {
    /// The persona as a trait object.
    pub fn get(&mut self) -> &mut dyn Persona {
        each_persona!(self)
    }

    /// The persona as a shared trait object.
    pub fn get_ref(&self) -> &dyn Persona {
        each_persona!(self)
    }
}

/// Packs a 12-byte signature into EBX, ECX, EDX.
pub fn signature(sig: &[u8; 12]) -> [u32; 3] {
    let w = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
    [w(0), w(4), w(8)]
}

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(test)]
pub(crate) mod test_guest;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry() {
        for name in NAMES {
            assert_eq!(select(name, None).unwrap().get().name(), *name);
        }
        assert_eq!(select("qnx", None).err(), Some(SelectError::UnknownPersona));
    }

    #[test]
    fn none_hides_everything_and_bare_is_unknown() {
        let mut none = select("none", None).unwrap();
        assert!(!none.get().hypervisor_bit());
        assert_eq!(none.get().cpuid(HV_LEAF_BASE, 0), [0; 4]);
        let mut bare = select("bare", None).unwrap();
        assert!(bare.get().hypervisor_bit());
        let [max, b, c, d] = bare.get().cpuid(HV_LEAF_BASE, 0);
        assert_eq!(max, HV_LEAF_BASE + 1);
        let mut sig = [0u8; 12];
        for (i, w) in [b, c, d].iter().enumerate() {
            sig[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        assert_eq!(&sig, bare::SIGNATURE);
        assert_eq!(bare.get().cpuid(HV_LEAF_BASE + 1, 0), [0; 4]);
    }
}
