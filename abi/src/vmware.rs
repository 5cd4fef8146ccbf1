//! The VMware guest interface: hypervisor CPUID leaves and the "backdoor".
//!
//! VMware publishes no formal specification. The definitions here follow:
//!
//! - VMware KB 1009458 ("Mechanisms to determine if software is running in a
//!   VMware virtual machine") and the LWN 301888 "hypervisor CPUID" RFC for
//!   the leaves 0x4000_0000 and 0x4000_0010;
//! - open-vm-tools `lib/include/backdoor_def.h` for the backdoor magic, port,
//!   command numbers and hypercall flags;
//! - Linux `arch/x86/include/asm/vmware.h` and `arch/x86/kernel/cpu/vmware.c`
//!   for the register conventions, the hypercall-mode bits of 0x4000_0010.ECX,
//!   GETHZ decoding and the steal-clock area.
//!
//! A backdoor call is a register exchange: the guest loads [`Request`] into
//! EAX..EDI (with [`MAGIC`] in EAX and the command in ECX) and executes
//! `in eax, dx` on [`PORT`], or `vmcall`/`vmmcall` when 0x4000_0010.ECX
//! announces them ([`Channel`]); the hypervisor answers in the same
//! registers ([`Response`]). Both the guest backend and the microvisor's
//! VMware persona use these types, so the two sides cannot disagree.

use static_assertions::{assert_eq_size, const_assert_eq};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// CPUID leaf carrying the signature (KB 1009458; Linux `CPUID_VMWARE_INFO_LEAF`).
pub const CPUID_INFO_LEAF: u32 = 0x4000_0000;
/// EBX, ECX, EDX of [`CPUID_INFO_LEAF`] (KB 1009458).
pub const SIGNATURE: &[u8; 12] = b"VMwareVMware";
/// The timing leaf (KB 1009458; Linux `CPUID_VMWARE_FEATURES_LEAF`): EAX TSC
/// kHz, EBX local APIC bus kHz, ECX hypercall-mode bits ([`timing_ecx`]).
pub const CPUID_TIMING_LEAF: u32 = 0x4000_0010;

/// Bits of 0x4000_0010.ECX (Linux `asm/vmware.h`,
/// `CPUID_VMWARE_FEATURES_ECX_*`).
pub mod timing_ecx {
    /// The backdoor may be reached with VMMCALL (AMD).
    pub const VMMCALL: u32 = 1 << 0;
    /// The backdoor may be reached with VMCALL (Intel).
    pub const VMCALL: u32 = 1 << 1;
}

/// "VMXh": EAX of every backdoor call, and EBX of a GETVERSION answer
/// (`BDOOR_MAGIC`, backdoor_def.h).
pub const MAGIC: u32 = 0x564D_5868;
/// Low-bandwidth backdoor I/O port, in DX for `in eax, dx` (`BDOOR_PORT`).
pub const PORT: u16 = 0x5658;
/// High-bandwidth backdoor port (`rep insb/outsb`; `BDOORHB_PORT`). Not used
/// by pvops; listed so a persona can refuse it knowingly.
pub const PORT_HB: u16 = 0x5659;

/// Flags in the low word of EDX for the VMCALL/VMMCALL forms, which replace
/// the port number there (backdoor_def.h `BDOOR_FLAGS_*`; Linux
/// `VMWARE_HYPERVISOR_HB`/`_OUT`). All pvops calls are low-bandwidth reads: 0.
pub mod flags {
    /// High-bandwidth transfer (otherwise low-bandwidth).
    pub const HB: u16 = 1 << 0;
    /// Guest-to-host transfer (otherwise host-to-guest).
    pub const WRITE: u16 = 1 << 1;
}

/// Backdoor command numbers, in ECX (backdoor_def.h `BDOOR_CMD_*`; Linux
/// `VMWARE_CMD_*`). Only the low 16 bits name the command (`BDOOR_CMD(ecx)`);
/// the high 16 bits carry a sub-command for the commands that have one.
pub mod cmd {
    /// Version check: EAX = version (`u32::MAX` on failure), EBX = [`super::MAGIC`],
    /// ECX = product type.
    pub const GETVERSION: u32 = 10;
    /// TSC and APIC bus frequency in Hz; see [`super::Hz`].
    pub const GETHZ: u32 = 45;
    /// Virtual CPU capability bits in EAX; see [`super::vcpu_info`].
    pub const GETVCPU_INFO: u32 = 68;
    /// Registers or disables the steal-clock area (CPL 0 only); see
    /// [`super::StealClockStatus`].
    pub const STEALCLOCK: u32 = 91;
    /// Mask selecting the command from ECX (`BDOOR_CMD(ecx)`).
    pub const MASK: u32 = 0xFFFF;
}

/// EAX bits of a GETVCPU_INFO answer (backdoor_def.h `BDOOR_CMD_VCPU_*`,
/// given there as bit numbers).
pub mod vcpu_info {
    /// The virtual TSCs of all vCPUs are synchronised.
    pub const SYNC_VTSCS: u32 = 1 << 1;
    /// x2APIC may be used without interrupt remapping.
    pub const LEGACY_X2APIC_OK: u32 = 1 << 3;
    /// MMIO accesses honour the PAT.
    pub const MMIO_HONORS_PAT: u32 = 1 << 4;
    /// Set when the answer is not valid (Linux ignores every bit then).
    pub const RESERVED: u32 = 1 << 31;
}

/// The "unsupported" marker: EBX left at this value by GETHZ, EAX of a failed
/// GETVERSION (Linux compares both with `UINT_MAX`).
///
/// It is also what a VMware host puts in EAX for a command it does not
/// implement or that failed, leaving the other registers as the guest loaded
/// them: open-vm-tools relies on it (`Hostinfo_NestingSupported` checks
/// EAX != -1, `TimeSyncReadHost` falls back to an older command on -1), and
/// QEMU's vmport adopted it to match VMware (commit 0342ee76, "Set EAX to -1
/// on failed and unsupported commands"). See [`Registers::answer_unsupported`].
pub const UNSUPPORTED: u32 = u32::MAX;

/// EAX of a GETVERSION answer: open-vm-tools' `VERSION_MAGIC`, the value QEMU's
/// vmport also reports by default (`vmware-vmx-version`, "taken from
/// open-vm-tools code VERSION_MAGIC definition").
pub const BACKDOOR_VERSION: u32 = 6;

/// Product types in ECX of a GETVERSION answer (open-vm-tools
/// `lib/include/vm_vmx_type.h`, `VMX_TYPE_*`; QEMU's vmport reports
/// [`product::ESX`] by default).
pub mod product {
    /// `VMX_TYPE_UNSET`.
    pub const UNSET: u32 = 0;
    /// `VMX_TYPE_SCALABLE_SERVER`: VMware ESX.
    pub const ESX: u32 = 2;
    /// `VMX_TYPE_WORKSTATION`.
    pub const WORKSTATION: u32 = 4;
}

/// How the backdoor is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// `in eax, dx` with DX = [`PORT`]: always available on VMware, and on
    /// QEMU with its `vmport` device.
    IoPort,
    /// `vmcall`, with the [`flags`] in DX.
    Vmcall,
    /// `vmmcall`, with the [`flags`] in DX.
    Vmmcall,
}

impl Channel {
    /// The channel announced by 0x4000_0010.ECX. Like Linux
    /// (`vmware_hypercall_slow` switches on the exact value), exactly one
    /// bit selects its instruction; neither bit, or both, keeps the port.
    pub const fn from_timing_ecx(ecx: u32) -> Channel {
        match ecx & (timing_ecx::VMMCALL | timing_ecx::VMCALL) {
            timing_ecx::VMMCALL => Channel::Vmmcall,
            timing_ecx::VMCALL => Channel::Vmcall,
            _ => Channel::IoPort,
        }
    }

    /// The ECX bits a hypervisor announces for this channel (what a persona
    /// puts in 0x4000_0010.ECX).
    pub const fn timing_ecx(self) -> u32 {
        match self {
            Channel::IoPort => 0,
            Channel::Vmcall => timing_ecx::VMCALL,
            Channel::Vmmcall => timing_ecx::VMMCALL,
        }
    }

    /// Stable lower-case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            Channel::IoPort => "io-port",
            Channel::Vmcall => "vmcall",
            Channel::Vmmcall => "vmmcall",
        }
    }

    /// The low word of EDX for a low-bandwidth read: the port for the I/O
    /// form, the (zero) flags for the hypercall forms.
    pub const fn dx(self) -> u16 {
        match self {
            Channel::IoPort => PORT,
            Channel::Vmcall | Channel::Vmmcall => 0,
        }
    }
}

/// CPUID 0x4000_0010 as returned, undecided (KB 1009458).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimingLeaf {
    /// EAX: virtual TSC frequency in kHz; 0 means "not reported".
    pub tsc_khz: u32,
    /// EBX: local APIC timer (bus) frequency in kHz; 0 means "not reported".
    pub apic_bus_khz: u32,
    /// ECX: hypercall-mode bits, [`timing_ecx`].
    pub ecx: u32,
}

impl TimingLeaf {
    /// Decodes the leaf's EAX, EBX and ECX.
    pub const fn from_regs(eax: u32, ebx: u32, ecx: u32) -> TimingLeaf {
        TimingLeaf {
            tsc_khz: eax,
            apic_bus_khz: ebx,
            ecx,
        }
    }

    /// The TSC frequency, only when non-zero (a hypervisor may claim the
    /// leaf and leave it empty).
    pub const fn trusted_tsc_khz(&self) -> Option<u32> {
        if self.tsc_khz == 0 {
            None
        } else {
            Some(self.tsc_khz)
        }
    }

    /// The APIC bus frequency, only when non-zero.
    pub const fn trusted_apic_khz(&self) -> Option<u32> {
        if self.apic_bus_khz == 0 {
            None
        } else {
            Some(self.apic_bus_khz)
        }
    }

    /// The backdoor channel the leaf announces.
    pub const fn channel(&self) -> Channel {
        Channel::from_timing_ecx(self.ecx)
    }
}

/// The registers a guest loads for one backdoor call, besides EAX (always
/// [`MAGIC`]) and the low word of EDX (port or flags, from the [`Channel`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// ECX: the command ([`cmd`]), sub-command in the high word.
    pub command: u32,
    /// EBX: first argument.
    pub ebx: u32,
    /// High word of EDX: extra argument (0 for every pvops call).
    pub edx_high: u16,
    /// ESI: argument.
    pub esi: u32,
    /// EDI: argument.
    pub edi: u32,
}

impl Request {
    /// GETVERSION. EBX is sent as 0 (as Linux does), so an interface that
    /// leaves registers untouched cannot echo the magic back.
    pub const fn get_version() -> Request {
        Request::simple(cmd::GETVERSION, 0)
    }

    /// GETHZ. EBX is sent as [`UNSUPPORTED`]: a hypervisor that does not
    /// implement the command leaves it there (Linux `vmware_platform_setup`).
    pub const fn get_hz() -> Request {
        Request::simple(cmd::GETHZ, UNSUPPORTED)
    }

    /// GETVCPU_INFO.
    pub const fn get_vcpu_info() -> Request {
        Request::simple(cmd::GETVCPU_INFO, 0)
    }

    /// STEALCLOCK enabling the area at guest-physical `phys` (64-byte
    /// aligned): ESI = high 32 bits, EDI = low 32 bits, EBX = EDX = 0
    /// (Linux `vmware_cmd_stealclock`).
    pub const fn steal_clock_enable(phys: u64) -> Request {
        Request {
            command: cmd::STEALCLOCK,
            ebx: 0,
            edx_high: 0,
            esi: (phys >> 32) as u32,
            edi: phys as u32,
        }
    }

    /// STEALCLOCK disabling the area: the reserved address (0, 1). Also the
    /// availability probe, since it answers [`StealClockStatus::NotAvailable`]
    /// when the command is not offered (Linux
    /// `vmware_is_stealclock_available`).
    pub const fn steal_clock_disable() -> Request {
        Request::steal_clock_enable(STEALCLOCK_DISABLE_ADDRESS)
    }

    /// A request with only a command and EBX.
    const fn simple(command: u32, ebx: u32) -> Request {
        Request {
            command,
            ebx,
            edx_high: 0,
            esi: 0,
            edi: 0,
        }
    }

    /// The full register file for `channel`: what the guest loads.
    pub const fn registers(&self, channel: Channel) -> Registers {
        Registers {
            eax: MAGIC,
            ebx: self.ebx,
            ecx: self.command,
            edx: ((self.edx_high as u32) << 16) | channel.dx() as u32,
            esi: self.esi,
            edi: self.edi,
        }
    }

    /// Rebuilds the request from the registers a hypervisor saw, if EAX holds
    /// the magic (what a persona does on a backdoor exit).
    pub const fn from_registers(r: &Registers) -> Option<Request> {
        if r.eax != MAGIC {
            return None;
        }
        Some(Request {
            command: r.ecx,
            ebx: r.ebx,
            edx_high: (r.edx >> 16) as u16,
            esi: r.esi,
            edi: r.edi,
        })
    }

    /// The command number proper (low 16 bits of ECX).
    pub const fn command_number(&self) -> u32 {
        self.command & cmd::MASK
    }
}

/// The six registers a backdoor call exchanges, in and out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
    /// ESI.
    pub esi: u32,
    /// EDI.
    pub edi: u32,
}

/// A backdoor answer: the registers after the call.
pub type Response = Registers;

/// A valid GETVERSION answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    /// EAX: backdoor version.
    pub version: u32,
    /// ECX: product type (`VMX_TYPE_*` in open-vm-tools; QEMU reports its own).
    pub product: u32,
}

/// A valid GETHZ answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hz {
    /// EBX:EAX: TSC frequency in Hz.
    pub tsc_hz: u64,
    /// ECX: local APIC bus frequency in Hz; 0 when not reported.
    pub apic_hz: u32,
}

impl Hz {
    /// The TSC frequency in kHz (never 0 for a decoded answer).
    pub const fn tsc_khz(&self) -> u64 {
        self.tsc_hz / 1000
    }

    /// The APIC bus frequency in kHz, when reported.
    pub const fn apic_khz(&self) -> Option<u64> {
        let khz = self.apic_hz as u64 / 1000;
        if khz == 0 {
            None
        } else {
            Some(khz)
        }
    }
}

/// The STEALCLOCK answer in EAX (Linux `STEALCLOCK_*`; backdoor_def.h
/// `BDOOR_STEALCLOCK_STATUS_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StealClockStatus {
    /// -1: the command is not offered.
    NotAvailable,
    /// 0: the steal clock is (now) disabled.
    Disabled,
    /// 1: the area is registered and will be updated.
    Enabled,
    /// Anything else (e.g. EAX echoed back by an interface that does not
    /// know the command): treated as not offered.
    Invalid(u32),
}

impl StealClockStatus {
    /// EAX value of each status, for a persona's answer.
    pub const fn eax(self) -> u32 {
        match self {
            StealClockStatus::NotAvailable => u32::MAX,
            StealClockStatus::Disabled => 0,
            StealClockStatus::Enabled => 1,
            StealClockStatus::Invalid(v) => v,
        }
    }
}

/// The address STEALCLOCK takes to mean "disable" (hi 0, lo 1; Linux
/// `__stealclock_disable`). Not a valid area: it is not 64-byte aligned.
pub const STEALCLOCK_DISABLE_ADDRESS: u64 = 1;

impl Registers {
    /// Decodes a GETVERSION answer: valid only when EBX is the magic and EAX
    /// is not [`UNSUPPORTED`] (Linux `__vmware_platform`).
    pub const fn version(&self) -> Option<Version> {
        if self.ebx != MAGIC || self.eax == UNSUPPORTED {
            return None;
        }
        Some(Version {
            version: self.eax,
            product: self.ecx,
        })
    }

    /// Decodes a GETHZ answer: EBX still [`UNSUPPORTED`] means the command
    /// is not implemented; a TSC below 1 kHz or at/above 2^32 kHz is refused
    /// as junk (Linux warns on the latter).
    pub const fn hz(&self) -> Option<Hz> {
        if self.ebx == UNSUPPORTED {
            return None;
        }
        let tsc_hz = ((self.ebx as u64) << 32) | self.eax as u64;
        let khz = tsc_hz / 1000;
        if khz == 0 || khz > u32::MAX as u64 {
            return None;
        }
        Some(Hz {
            tsc_hz,
            apic_hz: self.ecx,
        })
    }

    /// Decodes a GETVCPU_INFO answer: the capability bits, or `None` when
    /// [`vcpu_info::RESERVED`] marks it invalid (Linux
    /// `vmware_legacy_x2apic_available`).
    pub const fn vcpu_info(&self) -> Option<u32> {
        if self.eax & vcpu_info::RESERVED != 0 {
            None
        } else {
            Some(self.eax)
        }
    }

    /// Decodes a STEALCLOCK answer.
    pub const fn steal_clock_status(&self) -> StealClockStatus {
        match self.eax {
            u32::MAX => StealClockStatus::NotAvailable,
            0 => StealClockStatus::Disabled,
            1 => StealClockStatus::Enabled,
            v => StealClockStatus::Invalid(v),
        }
    }

    /// A persona's GETVERSION answer.
    pub const fn answer_version(v: Version) -> Registers {
        Registers {
            eax: v.version,
            ebx: MAGIC,
            ecx: v.product,
            edx: PORT as u32,
            esi: 0,
            edi: 0,
        }
    }

    /// A persona's answer to a command it does not implement (or that
    /// failed): EAX = [`UNSUPPORTED`], every other register as the guest
    /// loaded it (see [`UNSUPPORTED`] for the sources).
    pub const fn answer_unsupported(self) -> Registers {
        Registers {
            eax: UNSUPPORTED,
            ..self
        }
    }

    /// A persona's GETHZ answer.
    pub const fn answer_hz(hz: Hz) -> Registers {
        Registers {
            eax: hz.tsc_hz as u32,
            ebx: (hz.tsc_hz >> 32) as u32,
            ecx: hz.apic_hz,
            edx: PORT as u32,
            esi: 0,
            edi: 0,
        }
    }
}

/// Required alignment of the steal-clock area (Linux declares the per-CPU
/// area `__aligned(64)`).
pub const STEAL_TIME_ALIGN: u64 = 64;

/// The steal-clock area registered with STEALCLOCK (Linux
/// `struct vmware_steal_time`): one 64-byte block per vCPU, written by the
/// hypervisor.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(64))]
pub struct StealTime {
    /// Time this vCPU was ready but not running, in virtual-TSC ticks
    /// ("stolen time counter in units of vtsc"); the guest scales it with
    /// the TSC frequency.
    pub clock: u64,
    /// Reserved; zero.
    pub reserved: [u64; 7],
}

assert_eq_size!(StealTime, [u8; 64]);
const_assert_eq!(core::mem::offset_of!(StealTime, clock), 0);
const_assert_eq!(core::mem::offset_of!(StealTime, reserved), 8);
const_assert_eq!(core::mem::align_of::<StealTime>() as u64, STEAL_TIME_ALIGN);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn magic_and_signature_spell_what_the_sources_say() {
        assert_eq!(&MAGIC.to_be_bytes(), b"VMXh");
        assert_eq!(&PORT.to_be_bytes(), b"VX");
        assert_eq!(SIGNATURE.len(), 12);
    }

    #[test]
    fn channel_from_ecx() {
        assert_eq!(Channel::from_timing_ecx(0), Channel::IoPort);
        assert_eq!(Channel::from_timing_ecx(1), Channel::Vmmcall);
        assert_eq!(Channel::from_timing_ecx(2), Channel::Vmcall);
        assert_eq!(Channel::from_timing_ecx(3), Channel::IoPort);
        assert_eq!(Channel::from_timing_ecx(0xFFFF_FFFC), Channel::IoPort);
        assert_eq!(Channel::from_timing_ecx(0xFFFF_FFFD), Channel::Vmmcall);
        for c in [Channel::IoPort, Channel::Vmcall, Channel::Vmmcall] {
            assert_eq!(Channel::from_timing_ecx(c.timing_ecx()), c);
        }
    }

    #[test]
    fn request_registers_round_trip() {
        let r = Request::steal_clock_enable(0x1_2345_6000);
        let regs = r.registers(Channel::IoPort);
        assert_eq!(regs.eax, MAGIC);
        assert_eq!(regs.ecx, cmd::STEALCLOCK);
        assert_eq!((regs.esi, regs.edi), (1, 0x2345_6000));
        assert_eq!(regs.edx, u32::from(PORT));
        assert_eq!(r.registers(Channel::Vmcall).edx, 0);
        assert_eq!(Request::from_registers(&regs), Some(r));
        assert_eq!(Request::from_registers(&Registers { eax: 0, ..regs }), None);
        assert_eq!(
            Request::get_hz().registers(Channel::Vmmcall).ebx,
            UNSUPPORTED
        );
        assert_eq!(Request::steal_clock_disable().edi, 1);
        assert_eq!(
            Request {
                command: 0x0003_0000 | cmd::GETVCPU_INFO,
                ..Request::default()
            }
            .command_number(),
            cmd::GETVCPU_INFO
        );
    }

    #[test]
    fn gethz_decoding() {
        // 2.5 GHz TSC, 66 MHz bus.
        let hz = Registers::answer_hz(Hz {
            tsc_hz: 2_500_000_000,
            apic_hz: 66_000_000,
        });
        let d = hz.hz().unwrap();
        assert_eq!(d.tsc_khz(), 2_500_000);
        assert_eq!(d.apic_khz(), Some(66_000));
        // EBX high half is used: 5 GHz needs more than 32 bits of Hz.
        let r = Registers {
            eax: 0x2A05_F200,
            ebx: 1,
            ecx: 0,
            ..Default::default()
        };
        assert_eq!(r.hz().unwrap().tsc_khz(), 5_000_000);
        assert_eq!(r.hz().unwrap().apic_khz(), None);
        // EBX left at the marker: unsupported, whatever EAX says.
        let r = Registers {
            eax: 123_456_789,
            ebx: UNSUPPORTED,
            ..Default::default()
        };
        assert_eq!(r.hz(), None);
        // Zero or absurd frequencies are refused.
        assert_eq!(Registers::default().hz(), None);
        let r = Registers {
            eax: 0,
            ebx: 0xFFFF_FFFE,
            ..Default::default()
        };
        assert_eq!(r.hz(), None);
    }

    #[test]
    fn getversion_decoding() {
        let ok = Registers::answer_version(Version {
            version: 6,
            product: 2,
        });
        assert_eq!(
            ok.version(),
            Some(Version {
                version: 6,
                product: 2
            })
        );
        // Echo of the request (EBX = 0) is not an answer.
        let echo = Request::get_version().registers(Channel::IoPort);
        assert_eq!(echo.version(), None);
        let failed = Registers {
            eax: UNSUPPORTED,
            ebx: MAGIC,
            ..Default::default()
        };
        assert_eq!(failed.version(), None);
    }

    #[test]
    fn unsupported_answer_decodes_as_unsupported_everywhere() {
        // A hypervisor that does not know a command sets EAX to -1 and leaves
        // the rest: each decoder must then refuse the answer.
        let unsupported = |req: Request| {
            let regs = req.registers(Channel::IoPort);
            let ans = regs.answer_unsupported();
            assert_eq!(ans.eax, UNSUPPORTED);
            assert_eq!((ans.ebx, ans.ecx, ans.edx), (regs.ebx, regs.ecx, regs.edx));
            assert_eq!((ans.esi, ans.edi), (regs.esi, regs.edi));
            ans
        };
        assert_eq!(unsupported(Request::get_version()).version(), None);
        assert_eq!(unsupported(Request::get_hz()).hz(), None);
        assert_eq!(
            unsupported(Request::steal_clock_disable()).steal_clock_status(),
            StealClockStatus::NotAvailable
        );
        assert_eq!(
            Request::get_vcpu_info()
                .registers(Channel::Vmmcall)
                .answer_unsupported()
                .vcpu_info(),
            None
        );
        assert_eq!(
            Registers::answer_version(Version {
                version: BACKDOOR_VERSION,
                product: product::ESX
            })
            .version()
            .map(|v| v.version),
            Some(6)
        );
    }

    #[test]
    fn steal_clock_status_decoding() {
        let st = |eax| Registers {
            eax,
            ..Default::default()
        };
        assert_eq!(
            st(u32::MAX).steal_clock_status(),
            StealClockStatus::NotAvailable
        );
        assert_eq!(st(0).steal_clock_status(), StealClockStatus::Disabled);
        assert_eq!(st(1).steal_clock_status(), StealClockStatus::Enabled);
        assert_eq!(
            st(MAGIC).steal_clock_status(),
            StealClockStatus::Invalid(MAGIC)
        );
        for s in [
            StealClockStatus::NotAvailable,
            StealClockStatus::Disabled,
            StealClockStatus::Enabled,
        ] {
            assert_eq!(st(s.eax()).steal_clock_status(), s);
        }
    }

    #[test]
    fn steal_time_layout() {
        let st = StealTime {
            clock: 0x0102_0304_0506_0708,
            ..StealTime::default()
        };
        let bytes = st.as_bytes();
        assert_eq!(bytes.len(), 64);
        assert_eq!(&bytes[..8], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert!(bytes[8..].iter().all(|&b| b == 0));
    }

    #[test]
    fn vcpu_info_reserved_bit_invalidates() {
        let r = |eax| Registers {
            eax,
            ..Default::default()
        };
        assert_eq!(r(vcpu_info::LEGACY_X2APIC_OK).vcpu_info(), Some(8));
        assert_eq!(r(vcpu_info::RESERVED | 8).vcpu_info(), None);
    }

    #[test]
    fn timing_leaf_trust() {
        let t = TimingLeaf::from_regs(0, 1_000_000, timing_ecx::VMCALL);
        assert_eq!(t.trusted_tsc_khz(), None);
        assert_eq!(t.trusted_apic_khz(), Some(1_000_000));
        assert_eq!(t.channel(), Channel::Vmcall);
    }
}
