//! Building the virtual CPUs: permission maps, nested paging, the boot
//! vCPU's VMCB in the PVH entry state (Xen `docs/misc/pvh.pandoc`: 32-bit
//! protected mode, paging off, flat CS/DS/ES/SS, EBX = start_info), the
//! APs' VMCBs (they wait for INIT/SIPI), and the real-mode state a
//! Start-up IPI gives an AP.

use super::{HostSave, Parked, Vcpu};
use crate::clock::Clock;
use crate::config::MAX_VCPUS;
use crate::counters::Accounting;
use crate::guest::{loader, mem::GuestRam};
use crate::hw::cpu::EFER_SVME;
use crate::integrity::{Kind, Protected};
use crate::once::{phys, TakeOnce};
use crate::personas::Active;
use crate::sched::Sched;
use crate::svm::npt::Npt;
use crate::svm::perm::{Iopm, Msrpm};
use crate::svm::vmcb::{attr, int_ctl, misc1, misc2, Segment, Vmcb};
use crate::svm::vmrun::GuestRegs;
use crate::vapic::VApic;
use crate::watchdog::Watchdog;

static VMCBS: [TakeOnce<Vmcb>; MAX_VCPUS] = [const { TakeOnce::new(Vmcb::zeroed()) }; MAX_VCPUS];
static HOST_SAVE: TakeOnce<HostSave> = TakeOnce::new(HostSave::new());
static IOPM: TakeOnce<Iopm> = TakeOnce::new(Iopm::intercept_all());
static MSRPM: TakeOnce<Msrpm> = TakeOnce::new(Msrpm::intercept_all());
static NPT: TakeOnce<Npt> = TakeOnce::new(Npt::new());
static ACCOUNTING: TakeOnce<Accounting> = TakeOnce::new(Accounting::new());

/// MSRs the guest owns without exits. VMLOAD/VMSAVE switch all of them
/// except TSC_AUX, which the microvisor does not use (APM vol. 2, 15.5.2).
const PASS_THROUGH_MSRS: &[u32] = &[
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0xC000_0081, // STAR
    0xC000_0082, // LSTAR
    0xC000_0083, // CSTAR
    0xC000_0084, // SFMASK
    0xC000_0100, // FS.base
    0xC000_0101, // GS.base
    0xC000_0102, // KernelGSbase
    0xC000_0103, // TSC_AUX
];

/// CR0.PE | CR0.ET.
const CR0_PVH: u64 = 0x11;
/// Power-on PAT (Intel SDM vol. 3A, 13.12.4; APM vol. 2, 7.8.2).
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// CR0 after INIT: CD | NW | ET (Intel SDM vol. 3A, table 10-1).
const CR0_INIT: u64 = 0x6000_0010;

/// What [`build`] needs besides the guest.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Progress watchdog limit.
    pub watchdog_ms: u64,
    /// Whether the guest sees the PIT (see [`crate::config::Config::pit`]).
    pub pit: bool,
    /// vCPUs (1..=[`MAX_VCPUS`]).
    pub vcpus: usize,
    /// Scheduler time slice in microseconds.
    pub slice_us: u64,
}

/// Sets the control area every vCPU's VMCB shares: intercepts,
/// permission maps, nested paging; its own `asid`.
fn control(vmcb: &mut Vmcb, iopm_pa: u64, msrpm_pa: u64, n_cr3: u64, asid: u32) {
    let c = &mut vmcb.control;
    c.intercept_misc1 = misc1::INTR
        | misc1::NMI
        | misc1::CPUID
        | misc1::HLT
        | misc1::INVLPGA
        | misc1::IOIO_PROT
        | misc1::MSR_PROT
        | misc1::SHUTDOWN;
    c.intercept_misc2 = misc2::VMRUN
        | misc2::VMMCALL
        | misc2::VMLOAD
        | misc2::VMSAVE
        | misc2::STGI
        | misc2::CLGI
        | misc2::SKINIT;
    c.iopm_base_pa = iopm_pa;
    c.msrpm_base_pa = msrpm_pa;
    c.tsc_offset = 0;
    // One ASID per vCPU (1..=N): each has its own guest TLB, as each CPU
    // of a real machine has (a remote flush needs an IPI).
    c.guest_asid = asid;
    // Flush everything at the first VMRUN (TLB_CONTROL = 1).
    c.tlb_control = 1;
    c.int_ctl = int_ctl::V_INTR_MASKING;
    c.nested_ctl = 1;
    c.n_cr3 = n_cr3;
}

/// Puts an AP's VMCB in the state a Start-up IPI with `vector` gives it
/// after INIT (Intel SDM vol. 3A, 9.4.4 and table 10-1 "IA-32 Processor
/// States Following Power-up, Reset, or INIT"; 11.6.1 for the vector):
/// real mode, CS selector `vector << 8`, base `vector << 12`, IP 0, the
/// other segments 0 with 64 KiB limits, paging and protection off,
/// RFLAGS = 2, DR6/DR7 and PAT at their reset values. EFER keeps SVME
/// (hidden from the guest). With nested paging the guest runs real mode
/// directly (AMD APM vol. 2, 15.25 "Nested Paging": with guest paging off,
/// guest-physical addresses are the linear ones, translated by the
/// nested tables).
/// Returns the guest's RDX: the processor signature, CPUID.1:EAX.
pub fn real_mode_start(vmcb: &mut Vmcb, vector: u8) -> u64 {
    let s = &mut vmcb.state;
    let code = Segment {
        selector: u16::from(vector) << 8,
        attrib: attr::CODE16,
        limit: 0xFFFF,
        base: u64::from(vector) << 12,
    };
    s.cs = code;
    let data = Segment {
        selector: 0,
        attrib: attr::DATA16,
        limit: 0xFFFF,
        base: 0,
    };
    for seg in [&mut s.ds, &mut s.es, &mut s.ss, &mut s.fs, &mut s.gs] {
        *seg = data;
    }
    s.tr = Segment {
        selector: 0,
        attrib: attr::TSS_BUSY,
        limit: 0xFFFF,
        base: 0,
    };
    s.ldtr = Segment {
        selector: 0,
        attrib: attr::LDT,
        limit: 0xFFFF,
        base: 0,
    };
    let table = Segment {
        selector: 0,
        attrib: 0,
        limit: 0xFFFF,
        base: 0,
    };
    s.gdtr = table;
    s.idtr = table;
    s.cpl = 0;
    s.efer = EFER_SVME;
    s.cr0 = CR0_INIT;
    s.cr2 = 0;
    s.cr3 = 0;
    s.cr4 = 0;
    s.dr6 = 0xFFFF_0FF0;
    s.dr7 = 0x400;
    s.rflags = 2;
    s.rip = 0;
    s.rsp = 0;
    s.rax = 0;
    s.g_pat = PAT_DEFAULT;
    let c = &mut vmcb.control;
    c.event_inj = 0;
    c.int_state = 0;
    c.int_ctl = int_ctl::V_INTR_MASKING;
    c.intercept_misc1 &= !misc1::VINTR;
    // Whatever this ASID cached from an earlier life is gone.
    c.tlb_control = 1;
    u64::from(crate::hw::cpu::cpuid(1, 0).eax)
}

/// Builds the vCPUs for a guest loaded in `mem` with PVH entry `entry`.
pub fn build(
    mem: GuestRam,
    entry: u32,
    persona: Active,
    clock: Clock,
    opt: Options,
) -> Result<Vcpu, &'static str> {
    let n = opt.vcpus.clamp(1, MAX_VCPUS);
    let vmcb = VMCBS[0].take().ok_or("vCPU already built")?;
    let host_save = HOST_SAVE.take().ok_or("vCPU already built")?;
    let iopm = IOPM.take().ok_or("vCPU already built")?;
    let msrpm = MSRPM.take().ok_or("vCPU already built")?;
    let npt = NPT.take().ok_or("vCPU already built")?;
    let acct = ACCOUNTING.take().ok_or("vCPU already built")?;

    for &m in PASS_THROUGH_MSRS {
        msrpm.pass_through(m);
    }
    let n_cr3 = npt.map_ram(mem.hpa(), mem.size())?;
    control(vmcb, phys(iopm), phys(msrpm), n_cr3, 1);

    let s = &mut vmcb.state;
    s.cs = Segment::flat(loader::SEL_CODE32, attr::CODE32);
    for seg in [&mut s.ds, &mut s.es, &mut s.ss, &mut s.fs, &mut s.gs] {
        *seg = Segment::flat(loader::SEL_DATA, attr::DATA);
    }
    s.tr = Segment {
        selector: loader::SEL_TSS,
        attrib: attr::TSS_BUSY,
        limit: 0x67,
        base: loader::TSS_GPA,
    };
    s.ldtr = Segment::ZERO;
    s.gdtr = Segment {
        selector: 0,
        attrib: 0,
        limit: loader::GDT_LEN as u32 - 1,
        base: loader::GDT_GPA,
    };
    s.idtr = Segment::ZERO;
    s.cpl = 0;
    s.efer = EFER_SVME;
    s.cr0 = CR0_PVH;
    s.cr3 = 0;
    s.cr4 = 0;
    s.dr6 = 0xFFFF_0FF0;
    s.dr7 = 0x400;
    s.rflags = 2;
    s.rip = entry as u64;
    s.rsp = 0;
    s.rax = 0;
    s.g_pat = PAT_DEFAULT;

    let regs = GuestRegs {
        rbx: loader::START_INFO_GPA,
        ..GuestRegs::default()
    };
    let mut protected = Protected::new();
    let image = bootkit::image::read_only();
    let tables = bootkit::image::boot_page_tables();
    let maps: [(&'static str, Kind, u64, u64); 5] = [
        ("text+rodata", Kind::Bytes, image.start, image.len()),
        (
            "host-page-tables",
            Kind::PageTable,
            tables.start,
            tables.len(),
        ),
        ("npt", Kind::PageTable, phys(npt), size_of::<Npt>() as u64),
        ("iopm", Kind::Bytes, phys(iopm), size_of::<Iopm>() as u64),
        ("msrpm", Kind::Bytes, phys(msrpm), size_of::<Msrpm>() as u64),
    ];
    for (name, kind, start, len) in maps {
        // SAFETY: all are parts of the microvisor's own image (linker
        // symbols, statics), identity mapped and present for the whole run.
        unsafe { protected.add(name, kind, start, len) };
    }

    let now = clock.now();
    let watchdog = Watchdog::new(clock.ms(opt.watchdog_ms), now);
    let mut parked: [Option<Parked>; MAX_VCPUS] = [const { None }; MAX_VCPUS];
    for (i, slot) in parked.iter_mut().enumerate().take(n).skip(1) {
        let ap = VMCBS[i].take().ok_or("vCPU already built")?;
        control(ap, phys(iopm), phys(msrpm), n_cr3, i as u32 + 1);
        // Until its SIPI it never runs; a valid state all the same.
        real_mode_start(ap, 0);
        *slot = Some(Parked {
            vmcb: ap,
            regs: GuestRegs::default(),
            vapic: VApic::with_id(clock.tsc_khz, i as u32),
            pending_event: None,
            watchdog,
            tsc_aux: 0,
        });
    }
    let slice = clock.tsc_khz.saturating_mul(opt.slice_us) / 1000;
    let mut vcpu = Vcpu {
        vmcb,
        host_save,
        regs,
        mem,
        vapic: VApic::new(clock.tsc_khz),
        persona,
        acct,
        clock,
        watchdog,
        mv_open: false,
        pending_event: None,
        host_timer_target: None,
        serial_mid_line: false,
        pit: opt.pit,
        protected,
        intercepts: super::Intercepts([0; 9]),
        id: 0,
        parked,
        sched: Sched::new(n, slice, now),
        slice_us: opt.slice_us,
        ipis: super::IpiLog::default(),
        fault_vcpu: None,
        has_tsc_aux: n > 1 && crate::hw::cpu::has_tsc_aux(),
        requests: Default::default(),
        kicked: 0,
    };
    vcpu.intercepts = vcpu.intercepts();
    Ok(vcpu)
}
