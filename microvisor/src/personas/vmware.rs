//! `vmware`: a VMware-style hypervisor, from `pvops_abi::vmware` (sources:
//! VMware KB 1009458, open-vm-tools `backdoor_def.h`, Linux
//! `arch/x86/kernel/cpu/vmware.c`; see `docs/backends/vmware.md`).
//!
//! - CPUID 0x4000_0000: "VMwareVMware", max leaf 0x4000_0010.
//! - CPUID 0x4000_0010: EAX = TSC kHz and EBX = APIC bus kHz (both from
//!   [`Persona::set_clock`]: the bus is the virtual APIC timer's input),
//!   ECX = VMMCALL announced (this is SVM).
//! - The backdoor, on the I/O port 0x5658 (`in eax, dx`, and `out` as VMware
//!   and QEMU's vmport accept it) and as VMMCALL with EAX = magic: GETVERSION,
//!   GETHZ, GETVCPU_INFO and STEALCLOCK. Anything else is answered as VMware
//!   does: EAX = -1 ([`pvops_abi::vmware::UNSUPPORTED`]), the other registers
//!   untouched.
//! - The steal clock, per vCPU: each vCPU's 64-byte area gets, in TSC
//!   ticks, the time that vCPU was runnable but not running (see
//!   [`StealClock`]). With several vCPUs that is the scheduler's stolen
//!   time ([`GuestCx::steal_ns`]), which knows exactly when each vCPU
//!   waited for the physical CPU.
//!
//! `break=<step>` switches: `timing-leaf` (leaf 0x4000_0010 reports no
//! frequencies: the guest must use GETHZ), `no-frequency` (neither the leaf
//! nor GETHZ: the guest's VMware backend must refuse to install), `vmmcall`
//! (VMMCALL not announced: the backdoor goes over the port) and
//! `stealclock` (STEALCLOCK not offered). The lying-hypervisor matrix
//! (issue 16, `docs/lying-hypervisors.md`) adds: `signature-only` (max leaf
//! 0x4000_0000 and a backdoor that answers every command -1),
//! `absurd-frequency` (the timing leaf says the TSC runs at 1 kHz; GETHZ
//! tells the truth), `stealclock-refused` (the availability probe of
//! STEALCLOCK succeeds, the second call, enabling the area, answers -1) and
//! `steal-backwards` (the steal clock starts high and goes down before
//! every guest entry).

use super::{signature, GuestCx, Hypercall, HypercallAction, Persona, SelectError, HV_LEAF_BASE};
use crate::config::MAX_VCPUS;
use pvops_abi::vmware::{
    self as abi, cmd, product, vcpu_info, Channel, Registers, StealClockStatus, StealTime,
    BACKDOOR_VERSION, CPUID_TIMING_LEAF, MAGIC, STEALCLOCK_DISABLE_ADDRESS, STEAL_TIME_ALIGN,
};
use zerocopy::IntoBytes;

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// A setup step that `break=<step>` makes fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Break {
    /// `timing-leaf`: 0x4000_0010 EAX and EBX read 0.
    TimingLeaf,
    /// `no-frequency`: the leaf reads 0 and GETHZ is unsupported.
    NoFrequency,
    /// `vmmcall`: 0x4000_0010.ECX announces no hypercall instruction.
    Vmmcall,
    /// `stealclock`: STEALCLOCK is unsupported.
    StealClock,
    /// `signature-only`: the signature with max leaf 0x4000_0000 (no timing
    /// leaf) and a backdoor answering every command -1.
    SignatureOnly,
    /// `absurd-frequency`: 0x4000_0010 EAX (TSC kHz) reads
    /// [`ABSURD_TSC_KHZ`]; GETHZ answers the real frequency.
    AbsurdFrequency,
    /// `stealclock-refused`: STEALCLOCK's "disable" probe answers 0, the
    /// enable call that follows answers -1.
    StealClockRefused,
    /// `steal-backwards`: the registered steal area starts at
    /// [`BACKWARDS_START`] ticks and loses [`BACKWARDS_STEP`] before every
    /// guest entry.
    StealBackwards,
}

/// The TSC frequency `break=absurd-frequency` puts in the timing leaf: 1 kHz.
pub const ABSURD_TSC_KHZ: u32 = 1;
/// Where `break=steal-backwards` starts the steal clock (ticks).
pub const BACKWARDS_START: u64 = 1 << 40;
/// What `break=steal-backwards` takes off the steal clock per guest entry.
pub const BACKWARDS_STEP: u64 = 1000;

impl Break {
    /// The step named on the command line.
    pub fn from_name(name: &str) -> Option<Break> {
        Some(match name {
            "timing-leaf" => Break::TimingLeaf,
            "no-frequency" => Break::NoFrequency,
            "vmmcall" => Break::Vmmcall,
            "stealclock" => Break::StealClock,
            "signature-only" => Break::SignatureOnly,
            "absurd-frequency" => Break::AbsurdFrequency,
            "stealclock-refused" => Break::StealClockRefused,
            "steal-backwards" => Break::StealBackwards,
            _ => return None,
        })
    }
}

/// Counters for the end-of-run report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Backdoor calls over the I/O port (with the magic).
    pub port_calls: u64,
    /// Backdoor calls over VMMCALL (with the magic).
    pub vmmcall_calls: u64,
    /// Calls answered "unsupported" (unknown command, refused STEALCLOCK,
    /// missing magic, broken step).
    pub unsupported: u64,
}

/// The steal clock: where the guest's area is and how much time was stolen.
///
/// What counts as stolen: the time from the moment the vCPU became runnable
/// (its virtual APIC timer fired while the guest could take the interrupt:
/// IF set and the vector above the processor priority) until the interrupt
/// is injected. In between the guest cannot run: the microvisor is handling
/// the exit, or the host CPU is still halted waiting for its own timer. Time
/// the guest spends halted with nothing to do, or running with interrupts
/// masked, is not stolen. The counter only grows (monotonic), costs a few
/// comparisons per guest entry, and the area is written only when it grew.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StealClock {
    /// Guest-physical address of the registered area.
    pub area: Option<u64>,
    /// Stolen time so far, in TSC ticks (the ABI's unit).
    pub ticks: u64,
    /// Interrupts whose delivery delay was counted.
    pub events: u64,
    /// The host TSC at which the vCPU became runnable, until injection.
    due: Option<u64>,
    /// The virtual APIC timer deadline seen at the last look.
    seen_deadline: Option<u64>,
    /// The virtual APIC timer's fire count at the last look.
    seen_fires: u64,
    /// Host TSC of the last look.
    last_look: u64,
}

impl StealClock {
    /// STEALCLOCK with `gpa` (ESI:EDI): disables for the reserved address
    /// (0, 1); registers a 64-byte aligned area inside guest RAM
    /// (`ram_size` bytes); refuses anything else with -1, the value Linux
    /// checks against (any answer but 1 is a refusal) and VMware's answer to
    /// a failed command ([`abi::UNSUPPORTED`]).
    pub fn command(&mut self, gpa: u64, ram_size: u64) -> StealClockStatus {
        if gpa == STEALCLOCK_DISABLE_ADDRESS {
            self.area = None;
            return StealClockStatus::Disabled;
        }
        let len = core::mem::size_of::<StealTime>() as u64;
        let inside = gpa.checked_add(len).is_some_and(|end| end <= ram_size);
        if !gpa.is_multiple_of(STEAL_TIME_ALIGN) || !inside {
            return StealClockStatus::NotAvailable;
        }
        self.area = Some(gpa);
        StealClockStatus::Enabled
    }

    /// One look at the vCPU before a guest entry or during a halt: the
    /// virtual APIC timer's `fires` count and `deadline`, whether the guest
    /// can take an interrupt now (`deliverable`), and `now`.
    pub fn look(&mut self, now: u64, fires: u64, deadline: Option<u64>, deliverable: bool) {
        if fires != self.seen_fires {
            self.seen_fires = fires;
            // The timer fired since the last look, at the deadline seen then
            // (if that deadline lies between the looks; otherwise the guest
            // re-armed it meanwhile and the moment is unknown: not counted).
            if self.due.is_none() && deliverable {
                self.due = self
                    .seen_deadline
                    .filter(|&d| d >= self.last_look && d <= now);
            }
        }
        if !deliverable {
            // Masked or below the priority: the wait is the guest's own.
            self.due = None;
        }
        self.seen_deadline = deadline;
        self.last_look = now;
    }

    /// An interrupt is injected at `now`: the wait since it became due is
    /// stolen. Returns true when the counter grew.
    pub fn injected(&mut self, now: u64) -> bool {
        match self.due.take() {
            Some(d) if now > d => {
                self.ticks = self.ticks.saturating_add(now - d);
                self.events += 1;
                true
            }
            _ => false,
        }
    }
}

/// The `vmware` persona.
#[derive(Debug)]
pub struct Vmware {
    tsc_khz: u64,
    apic_bus_khz: u64,
    broken: Option<Break>,
    /// Each vCPU's steal clock (STEALCLOCK registers the calling vCPU's).
    steal: [StealClock; MAX_VCPUS],
    /// vCPUs of the guest.
    vcpus: usize,
    /// What `break=steal-backwards` shows in the area now.
    backwards: u64,
    stats: Stats,
}

impl Vmware {
    /// A VMware persona with setup step `break_step` broken.
    pub fn new(break_step: Option<&str>) -> Result<Self, SelectError> {
        let broken = match break_step {
            None => None,
            Some(name) => Some(Break::from_name(name).ok_or(SelectError::UnknownBreak)?),
        };
        Ok(Vmware {
            tsc_khz: 0,
            apic_bus_khz: 0,
            broken,
            steal: [StealClock::default(); MAX_VCPUS],
            vcpus: 1,
            backwards: BACKWARDS_START,
            stats: Stats::default(),
        })
    }

    fn broken(&self, step: Break) -> bool {
        self.broken == Some(step)
    }

    fn no_frequency(&self) -> bool {
        self.broken(Break::TimingLeaf) || self.broken(Break::NoFrequency)
    }

    /// The channel announced in 0x4000_0010.ECX.
    pub fn channel(&self) -> Channel {
        if self.broken(Break::Vmmcall) {
            Channel::IoPort
        } else {
            Channel::Vmmcall
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The boot vCPU's steal clock.
    pub fn steal(&self) -> &StealClock {
        &self.steal[0]
    }

    /// vCPU `i`'s steal clock (the last one's for an index past them).
    pub fn steal_of(&self, i: usize) -> &StealClock {
        &self.steal[i.min(MAX_VCPUS - 1)]
    }

    /// Answers one backdoor call given the registers the guest loaded, at
    /// privilege level `cpl`, with `ram_size` bytes of guest RAM. Pure: the
    /// caller moves registers and writes a newly registered steal area.
    pub fn backdoor(&mut self, r: Registers, cpl: u8, ram_size: u64) -> Registers {
        self.backdoor_on(0, r, cpl, ram_size)
    }

    /// [`Vmware::backdoor`] from vCPU `vcpu` (STEALCLOCK registers its
    /// area).
    pub fn backdoor_on(&mut self, vcpu: usize, r: Registers, cpl: u8, ram_size: u64) -> Registers {
        let vcpu = vcpu.min(MAX_VCPUS - 1);
        let Some(req) =
            abi::Request::from_registers(&r).filter(|_| !self.broken(Break::SignatureOnly))
        else {
            // No magic: QEMU's vmport answers -1 too (x-signal-unsupported-cmd).
            self.stats.unsupported += 1;
            return r.answer_unsupported();
        };
        let answer = match req.command_number() {
            cmd::GETVERSION => Some(Registers {
                eax: BACKDOOR_VERSION,
                ebx: MAGIC,
                ecx: product::ESX,
                ..r
            }),
            cmd::GETHZ => self.gethz(r),
            cmd::GETVCPU_INFO => Some(Registers {
                // Synchronised TSCs (every vCPU runs on the one physical
                // CPU with TSC_OFFSET 0) and an x2APIC that needs no
                // interrupt remapping.
                eax: vcpu_info::SYNC_VTSCS | vcpu_info::LEGACY_X2APIC_OK,
                ..r
            }),
            // CPL 0 only (backdoor_def.h).
            cmd::STEALCLOCK if !self.broken(Break::StealClock) && cpl == 0 => {
                let gpa = (u64::from(req.esi) << 32) | u64::from(req.edi);
                if self.broken(Break::StealClockRefused) && gpa != STEALCLOCK_DISABLE_ADDRESS {
                    return self.unsupported(r);
                }
                match self.steal[vcpu].command(gpa, ram_size) {
                    StealClockStatus::NotAvailable => None,
                    s => Some(Registers { eax: s.eax(), ..r }),
                }
            }
            _ => None,
        };
        answer.unwrap_or_else(|| self.unsupported(r))
    }

    /// Counts and answers an unsupported call.
    fn unsupported(&mut self, r: Registers) -> Registers {
        self.stats.unsupported += 1;
        r.answer_unsupported()
    }

    /// The steal clock value vCPU `vcpu` is shown.
    fn shown_ticks(&self, vcpu: usize) -> u64 {
        if self.broken(Break::StealBackwards) {
            self.backwards
        } else {
            self.steal_of(vcpu).ticks
        }
    }

    /// Nanoseconds as TSC ticks (the steal clock's unit).
    fn ticks_of_ns(&self, ns: u64) -> u64 {
        (u128::from(ns) * u128::from(self.tsc_khz) / 1_000_000) as u64
    }

    /// GETHZ: TSC Hz in EBX:EAX, APIC bus Hz in ECX; unsupported without a
    /// clock (or when broken).
    fn gethz(&self, r: Registers) -> Option<Registers> {
        if self.broken(Break::NoFrequency) || self.tsc_khz == 0 {
            return None;
        }
        let tsc_hz = self.tsc_khz.saturating_mul(1000);
        let apic_hz = u32::try_from(self.apic_bus_khz.saturating_mul(1000)).unwrap_or(0);
        Some(Registers {
            eax: tsc_hz as u32,
            ebx: (tsc_hz >> 32) as u32,
            ecx: apic_hz,
            ..r
        })
    }

    /// Runs a backdoor call on the guest's registers (`rax` is where the
    /// caller keeps EAX) and writes a newly registered steal area.
    fn call(&mut self, cx: &mut GuestCx<'_>, rax: u64) -> Registers {
        let regs = Registers {
            eax: rax as u32,
            ebx: cx.regs.rbx as u32,
            ecx: cx.regs.rcx as u32,
            edx: cx.regs.rdx as u32,
            esi: cx.regs.rsi as u32,
            edi: cx.regs.rdi as u32,
        };
        // QEMU takes the CPL from SS.DPL (bits 5..6 of the packed
        // attributes), and so does hardware in long mode.
        let cpl = ((cx.state.ss.attrib >> 5) & 3) as u8;
        let vcpu = cx.vcpu.min(MAX_VCPUS - 1);
        let before = self.steal[vcpu].area;
        let out = self.backdoor_on(vcpu, regs, cpl, cx.mem.size());
        let after = self.steal[vcpu].area;
        if let Some(gpa) = after.filter(|_| after != before) {
            if self.vcpus > 1 {
                // The vCPU's steal since it started, as the scheduler
                // counted it (an AP waiting for its SIPI is not runnable).
                self.steal[vcpu].ticks = self.ticks_of_ns(cx.steal_ns);
            }
            let area = StealTime {
                clock: self.shown_ticks(vcpu),
                ..StealTime::default()
            };
            // Checked against the RAM size above, so this cannot fail.
            let _ = cx.mem.write(gpa, area.as_bytes());
        }
        // A 32-bit register write zero-extends; untouched registers keep
        // their upper halves.
        let set = |reg: &mut u64, old: u32, new: u32| {
            if old != new {
                *reg = u64::from(new);
            }
        };
        set(&mut cx.regs.rbx, regs.ebx, out.ebx);
        set(&mut cx.regs.rcx, regs.ecx, out.ecx);
        set(&mut cx.regs.rdx, regs.edx, out.edx);
        set(&mut cx.regs.rsi, regs.esi, out.esi);
        set(&mut cx.regs.rdi, regs.edi, out.edi);
        out
    }
}

impl Persona for Vmware {
    fn name(&self) -> &'static str {
        "vmware"
    }

    fn hypervisor_bit(&self) -> bool {
        true
    }

    fn set_clock(&mut self, tsc_khz: u64, apic_bus_khz: u64) {
        self.tsc_khz = tsc_khz;
        self.apic_bus_khz = apic_bus_khz;
    }

    fn cpuid(&mut self, leaf: u32, _subleaf: u32) -> [u32; 4] {
        match leaf {
            HV_LEAF_BASE => {
                let [b, c, d] = signature(abi::SIGNATURE);
                let max = if self.broken(Break::SignatureOnly) {
                    HV_LEAF_BASE
                } else {
                    CPUID_TIMING_LEAF
                };
                [max, b, c, d]
            }
            CPUID_TIMING_LEAF if self.broken(Break::SignatureOnly) => [0; 4],
            CPUID_TIMING_LEAF => {
                let ecx = self.channel().timing_ecx();
                if self.no_frequency() {
                    [0, 0, ecx, 0]
                } else {
                    let khz = |v: u64| u32::try_from(v).unwrap_or(0);
                    let tsc = if self.broken(Break::AbsurdFrequency) {
                        ABSURD_TSC_KHZ
                    } else {
                        khz(self.tsc_khz)
                    };
                    [tsc, khz(self.apic_bus_khz), ecx, 0]
                }
            }
            _ => [0; 4],
        }
    }

    fn hypercall(&mut self, cx: &mut GuestCx<'_>) -> Hypercall {
        let rax = cx.state.rax;
        // Counted by command when the magic is there, else by RAX.
        let code = if rax as u32 == MAGIC {
            self.stats.vmmcall_calls += 1;
            cx.regs.rcx & u64::from(cmd::MASK)
        } else {
            rax
        };
        let out = self.call(cx, rax);
        if out.eax != rax as u32 {
            cx.state.rax = u64::from(out.eax);
        }
        Hypercall {
            code,
            action: HypercallAction::Return,
        }
    }

    fn io_in(&mut self, cx: &mut GuestCx<'_>, port: u16, _size: u8) -> Option<u32> {
        if port != abi::PORT {
            return None;
        }
        let rax = cx.state.rax;
        if rax as u32 == MAGIC {
            self.stats.port_calls += 1;
        }
        // Any width: the access is a trigger, EAX the answer (the common
        // code merges a narrow IN into RAX as the hardware would).
        Some(self.call(cx, rax).eax)
    }

    fn io_out(&mut self, cx: &mut GuestCx<'_>, port: u16, _size: u8, _value: u32) -> bool {
        if port != abi::PORT {
            return false;
        }
        // OUT triggers the same call (VMware; QEMU's vmport does the read).
        let rax = cx.state.rax;
        if rax as u32 == MAGIC {
            self.stats.port_calls += 1;
        }
        let out = self.call(cx, rax);
        cx.state.rax = u64::from(out.eax);
        true
    }

    fn set_vcpus(&mut self, vcpus: usize) {
        self.vcpus = vcpus.clamp(1, MAX_VCPUS);
    }

    fn poll(&mut self, cx: &mut GuestCx<'_>) {
        let vcpu = cx.vcpu.min(MAX_VCPUS - 1);
        let Some(gpa) = self.steal[vcpu].area else {
            return;
        };
        if self.broken(Break::StealBackwards) {
            self.backwards = self.backwards.saturating_sub(BACKWARDS_STEP);
            // Checked to lie in guest RAM when it was registered.
            let _ = cx.mem.write(gpa, &self.backwards.to_le_bytes());
            return;
        }
        if self.vcpus > 1 {
            // The scheduler's account, which only grows.
            let stolen = self.ticks_of_ns(cx.steal_ns);
            let st = &mut self.steal[vcpu];
            if stolen > st.ticks {
                st.ticks = stolen;
                st.events += 1;
                // `clock` is at offset 0 (checked in pvops_abi); the area
                // was checked to lie in guest RAM when it was registered.
                let _ = cx.mem.write(gpa, &stolen.to_le_bytes());
            }
            return;
        }
        let deliverable = cx.state.rflags & RFLAGS_IF != 0 && cx.apic.pending().is_some();
        self.steal[0].look(
            cx.now,
            cx.apic.timer_fires,
            cx.apic.next_deadline(),
            deliverable,
        );
    }

    fn on_inject(&mut self, cx: &mut GuestCx<'_>, _vector: u8) {
        // With several vCPUs the scheduler's account is the steal clock.
        if self.vcpus > 1 {
            return;
        }
        let backwards = self.broken(Break::StealBackwards);
        let st = &mut self.steal[0];
        if !st.injected(cx.now) || backwards {
            return;
        }
        if let Some(gpa) = st.area {
            // `clock` is at offset 0 (checked in pvops_abi); the area was
            // checked to lie in guest RAM when it was registered.
            let _ = cx.mem.write(gpa, &st.ticks.to_le_bytes());
        }
    }

    fn report(&self) {
        let s = &self.stats;
        let st = &self.steal[0];
        bootkit::record!(
            "mv.vmware",
            channel = self.channel().name(),
            port_calls = s.port_calls,
            vmmcall_calls = s.vmmcall_calls,
            unsupported = s.unsupported,
            steal_area = format_args!("{:#x}", st.area.unwrap_or(0)),
            steal_ticks = st.ticks,
            steal_events = st.events,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_abi::vmware::{Request, UNSUPPORTED};

    const RAM: u64 = 128 << 20;

    fn persona(step: Option<&str>) -> Vmware {
        let mut p = Vmware::new(step).unwrap();
        p.set_clock(2_500_000, 1_000_000);
        p
    }

    fn call(p: &mut Vmware, req: Request, channel: Channel) -> Registers {
        p.backdoor(req.registers(channel), 0, RAM)
    }

    #[test]
    fn cpuid_signature_and_timing_leaf() {
        let mut p = persona(None);
        let [max, b, c, d] = p.cpuid(HV_LEAF_BASE, 0);
        assert_eq!(max, CPUID_TIMING_LEAF);
        assert_eq!([b, c, d], signature(abi::SIGNATURE));
        let [a, b, c, d] = p.cpuid(CPUID_TIMING_LEAF, 0);
        let leaf = abi::TimingLeaf::from_regs(a, b, c);
        assert_eq!(leaf.trusted_tsc_khz(), Some(2_500_000));
        assert_eq!(leaf.trusted_apic_khz(), Some(1_000_000));
        assert_eq!(leaf.channel(), Channel::Vmmcall);
        assert_eq!(d, 0);
        assert_eq!(p.cpuid(HV_LEAF_BASE + 1, 0), [0; 4]);
        assert_eq!(p.cpuid(CPUID_TIMING_LEAF + 1, 0), [0; 4]);
    }

    #[test]
    fn break_steps() {
        assert_eq!(
            Vmware::new(Some("nonsense")).err(),
            Some(SelectError::UnknownBreak)
        );
        let mut p = persona(Some("timing-leaf"));
        let [a, b, c, _] = p.cpuid(CPUID_TIMING_LEAF, 0);
        assert_eq!((a, b), (0, 0));
        assert_eq!(Channel::from_timing_ecx(c), Channel::Vmmcall);
        assert_eq!(
            call(&mut p, Request::get_hz(), Channel::Vmmcall)
                .hz()
                .unwrap()
                .tsc_khz(),
            2_500_000
        );
        let mut p = persona(Some("no-frequency"));
        assert_eq!(p.cpuid(CPUID_TIMING_LEAF, 0)[..2], [0, 0]);
        assert_eq!(call(&mut p, Request::get_hz(), Channel::Vmmcall).hz(), None);
        let mut p = persona(Some("vmmcall"));
        assert_eq!(
            Channel::from_timing_ecx(p.cpuid(CPUID_TIMING_LEAF, 0)[2]),
            Channel::IoPort
        );
        let mut p = persona(Some("stealclock"));
        assert_eq!(
            call(&mut p, Request::steal_clock_disable(), Channel::IoPort).steal_clock_status(),
            StealClockStatus::NotAvailable
        );
    }

    #[test]
    fn lying_steps() {
        let mut p = persona(Some("signature-only"));
        assert_eq!(p.cpuid(HV_LEAF_BASE, 0)[0], HV_LEAF_BASE);
        assert_eq!(p.cpuid(CPUID_TIMING_LEAF, 0), [0; 4]);
        for req in [Request::get_version(), Request::get_hz()] {
            assert_eq!(call(&mut p, req, Channel::IoPort).eax, UNSUPPORTED);
        }
        let mut p = persona(Some("absurd-frequency"));
        assert_eq!(p.cpuid(CPUID_TIMING_LEAF, 0)[0], ABSURD_TSC_KHZ);
        let hz = call(&mut p, Request::get_hz(), Channel::Vmmcall)
            .hz()
            .unwrap();
        assert_eq!(hz.tsc_khz(), 2_500_000);
        let mut p = persona(Some("stealclock-refused"));
        let st = |p: &mut Vmware, r| call(p, r, Channel::Vmmcall).steal_clock_status();
        assert_eq!(
            st(&mut p, Request::steal_clock_disable()),
            StealClockStatus::Disabled
        );
        assert_eq!(
            st(&mut p, Request::steal_clock_enable(0x5000)),
            StealClockStatus::NotAvailable
        );
        assert_eq!(p.steal().area, None);
        let mut p = persona(Some("steal-backwards"));
        assert_eq!(
            st(&mut p, Request::steal_clock_enable(0x5000)),
            StealClockStatus::Enabled
        );
        assert_eq!(p.shown_ticks(0), BACKWARDS_START);
    }

    #[test]
    fn getversion_gethz_vcpu_info_decode_like_the_guest() {
        let mut p = persona(None);
        for ch in [Channel::IoPort, Channel::Vmmcall] {
            let v = call(&mut p, Request::get_version(), ch).version().unwrap();
            assert_eq!((v.version, v.product), (6, product::ESX));
            let hz = call(&mut p, Request::get_hz(), ch).hz().unwrap();
            assert_eq!(hz.tsc_hz, 2_500_000_000);
            assert_eq!(hz.apic_khz(), Some(1_000_000));
            let info = call(&mut p, Request::get_vcpu_info(), ch)
                .vcpu_info()
                .unwrap();
            assert_ne!(info & vcpu_info::LEGACY_X2APIC_OK, 0);
        }
        // Above 4.29 GHz the TSC needs EBX.
        p.set_clock(5_000_000, 1_000_000);
        let r = call(&mut p, Request::get_hz(), Channel::IoPort);
        assert_eq!(r.ebx, 1);
        assert_eq!(r.hz().unwrap().tsc_khz(), 5_000_000);
        // No clock yet: unsupported, EBX left at the marker.
        let mut p = Vmware::new(None).unwrap();
        let r = call(&mut p, Request::get_hz(), Channel::IoPort);
        assert_eq!((r.eax, r.ebx), (UNSUPPORTED, UNSUPPORTED));
        assert_eq!(p.stats().unsupported, 1);
    }

    #[test]
    fn unknown_commands_and_missing_magic_answer_minus_one_and_keep_the_rest() {
        let mut p = persona(None);
        for command in [0, 1, 20, 44, 0xFFFF, 0x1234_0000 | 92] {
            let regs = Request {
                command,
                ebx: 0x1111,
                edx_high: 7,
                esi: 0x3333,
                edi: 0x4444,
            }
            .registers(Channel::IoPort);
            let out = p.backdoor(regs, 0, RAM);
            assert_eq!(
                out,
                Registers {
                    eax: u32::MAX,
                    ..regs
                },
                "command {command:#x}"
            );
        }
        let regs = Registers {
            eax: 0x1234,
            ecx: cmd::GETVERSION,
            ..Registers::default()
        };
        assert_eq!(
            p.backdoor(regs, 0, RAM),
            Registers {
                eax: u32::MAX,
                ..regs
            }
        );
        // The sub-command word does not change the command.
        let regs = Request {
            command: 0x0001_0000 | cmd::GETVERSION,
            ..Request::default()
        }
        .registers(Channel::Vmmcall);
        assert!(p.backdoor(regs, 0, RAM).version().is_some());
    }

    #[test]
    fn stealclock_accepts_aligned_ram_and_rejects_the_rest() {
        let mut p = persona(None);
        let st = |p: &mut Vmware, gpa| {
            call(p, Request::steal_clock_enable(gpa), Channel::Vmmcall).steal_clock_status()
        };
        assert_eq!(st(&mut p, 1), StealClockStatus::Disabled);
        for bad in [0x1008, 0x1020, RAM, RAM - 32, !63u64, (1 << 40) | 0x1000] {
            assert_eq!(st(&mut p, bad), StealClockStatus::NotAvailable, "{bad:#x}");
            assert_eq!(p.steal().area, None);
        }
        assert_eq!(st(&mut p, RAM - 64), StealClockStatus::Enabled);
        assert_eq!(st(&mut p, 0x5000), StealClockStatus::Enabled);
        assert_eq!(p.steal().area, Some(0x5000));
        // A bad address later does not drop the registered area.
        assert_eq!(st(&mut p, 0x5001), StealClockStatus::NotAvailable);
        assert_eq!(p.steal().area, Some(0x5000));
        assert_eq!(st(&mut p, 1), StealClockStatus::Disabled);
        assert_eq!(p.steal().area, None);
        // Not at CPL 0: refused.
        let regs = Request::steal_clock_enable(0x5000).registers(Channel::IoPort);
        assert_eq!(p.backdoor(regs, 3, RAM).eax, u32::MAX);
        assert_eq!(p.steal().area, None);
    }

    #[test]
    fn steal_counts_only_the_wait_of_a_deliverable_interrupt() {
        let mut s = StealClock::default();
        // Armed for 1000; looks before entries at 100 and 900.
        s.look(100, 0, Some(1000), false);
        s.look(900, 0, Some(1000), false);
        // Host woke at 1300 (the timer fired at 1000), guest interruptible.
        s.look(1300, 1, None, true);
        s.look(1350, 1, None, true);
        assert!(s.injected(1400));
        assert_eq!((s.ticks, s.events), (400, 1));
        // Nothing due: injection of something else adds nothing.
        assert!(!s.injected(5000));
        // Fired while the guest had IF = 0: its own delay, not counted.
        s.look(2000, 1, Some(2500), false);
        s.look(2600, 2, None, false);
        s.look(3000, 2, None, true);
        assert!(!s.injected(3100));
        // Re-armed between looks (seen deadline outside the interval): the
        // moment is unknown, nothing is counted.
        s.look(4000, 2, Some(100), false);
        s.look(4100, 3, None, true);
        assert!(!s.injected(4200));
        assert_eq!(s.ticks, 400);
        // Monotonic: only ever grows.
        s.look(5000, 3, Some(5100), false);
        s.look(5200, 4, Some(6100), true);
        assert!(s.injected(5300));
        assert_eq!(s.ticks, 600);
    }

    /// With several vCPUs each registers its own area, and each area shows
    /// that vCPU's stolen time as the scheduler counted it, in TSC ticks,
    /// never going back.
    #[test]
    fn steal_clock_per_vcpu_is_the_schedulers_account() {
        use crate::personas::test_guest::{Guest, KHZ};
        let mut p = persona(None);
        p.set_clock(KHZ, 1_000_000);
        p.set_vcpus(4);
        let mut g = Guest::new();
        g.vcpus = 4;
        let area = |v: usize| 0x1000 + 64 * v as u64;
        for v in 0..4 {
            g.vcpu = v;
            g.steal_ns = 1_000 * v as u64;
            let r = Request::steal_clock_enable(area(v)).registers(Channel::Vmmcall);
            g.state.rax = u64::from(r.eax);
            g.regs.rbx = u64::from(r.ebx);
            g.regs.rcx = u64::from(r.ecx);
            g.regs.rdx = u64::from(r.edx);
            g.regs.rsi = u64::from(r.esi);
            g.regs.rdi = u64::from(r.edi);
            p.hypercall(&mut g.cx());
            assert_eq!(
                g.state.rax as u32,
                StealClockStatus::Enabled.eax(),
                "vcpu {v}"
            );
            assert_eq!(p.steal_of(v).area, Some(area(v)));
        }
        // vCPU 2 was kept off the CPU for 3 ms: 6 000 000 ticks at 2 GHz.
        g.vcpu = 2;
        g.steal_ns = 3_000_000;
        p.poll(&mut g.cx());
        let shown = |g: &Guest, v: usize| g.get::<u64>(area(v));
        assert_eq!(shown(&g, 2), 6_000_000);
        assert_eq!(shown(&g, 1), 2_000, "vcpu 1 untouched");
        // An earlier reading never moves the clock back.
        g.steal_ns = 1_000;
        p.poll(&mut g.cx());
        assert_eq!(shown(&g, 2), 6_000_000);
        // The one-vCPU delay model stays out of it.
        p.on_inject(&mut g.cx(), 0x30);
        assert_eq!(shown(&g, 2), 6_000_000);
    }
}
