//! The Virtual Machine Control Block.
//!
//! Layout from the AMD64 Architecture Programmer's Manual, vol. 2 (System
//! Programming), appendix B "Layout of VMCB": table B-1 (control area,
//! offsets 0x000..0x3FF) and table B-2 (state save area, at 0x400). Every
//! offset this microvisor relies on is checked below with
//! `static_assertions`. Fields QEMU's TCG emulation does not implement (next
//! RIP, decode-assist bytes, clean bits) are present for layout fidelity but
//! never read.

use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A segment register as stored in the VMCB (APM vol. 2, table B-2).
///
/// `attrib` packs descriptor bits 40..47 (type, S, DPL, P) into bits 0..7
/// and descriptor bits 52..55 (AVL, L, D/B, G) into bits 8..11.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Packed attributes.
    pub attrib: u16,
    /// Expanded byte limit.
    pub limit: u32,
    /// Base address.
    pub base: u64,
}

impl Segment {
    /// The all-zero (unusable) segment.
    pub const ZERO: Segment = Segment {
        selector: 0,
        attrib: 0,
        limit: 0,
        base: 0,
    };

    /// A flat (base 0, 4 GiB limit) segment with the given selector and attributes.
    pub const fn flat(selector: u16, attrib: u16) -> Self {
        Segment {
            selector,
            attrib,
            limit: 0xFFFF_FFFF,
            base: 0,
        }
    }
}

/// Control area, VMCB offsets 0x000..0x3FF (APM vol. 2, table B-1).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ControlArea {
    /// 0x000: CR reads (bits 0..15) and CR writes (bits 16..31).
    pub intercept_cr: u32,
    /// 0x004: DR reads (bits 0..15) and DR writes (bits 16..31).
    pub intercept_dr: u32,
    /// 0x008: one bit per exception vector.
    pub intercept_exceptions: u32,
    /// 0x00C: INTR, NMI, ..., HLT, IOIO_PROT, MSR_PROT, SHUTDOWN (see [`misc1`]).
    pub intercept_misc1: u32,
    /// 0x010: VMRUN, VMMCALL, ... (see [`misc2`]).
    pub intercept_misc2: u32,
    /// 0x014: INVLPGB and later instruction intercepts.
    pub intercept_misc3: u32,
    /// 0x018..0x03B: reserved.
    pub _rsvd0: [u8; 0x24],
    /// 0x03C: PAUSE filter threshold.
    pub pause_filter_threshold: u16,
    /// 0x03E: PAUSE filter count.
    pub pause_filter_count: u16,
    /// 0x040: physical base of the I/O permission map.
    pub iopm_base_pa: u64,
    /// 0x048: physical base of the MSR permission map.
    pub msrpm_base_pa: u64,
    /// 0x050: added to the TSC while the guest runs.
    pub tsc_offset: u64,
    /// 0x058: guest ASID (must not be 0).
    pub guest_asid: u32,
    /// 0x05C: TLB_CONTROL in bits 0..7.
    pub tlb_control: u32,
    /// 0x060: V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING (see [`int_ctl`]).
    pub int_ctl: u32,
    /// 0x064: V_INTR_VECTOR in bits 0..7.
    pub int_vector: u32,
    /// 0x068: bit 0 interrupt shadow, bit 1 guest interrupt mask.
    pub int_state: u64,
    /// 0x070: EXITCODE (appendix C).
    pub exit_code: u64,
    /// 0x078: EXITINFO1.
    pub exit_info1: u64,
    /// 0x080: EXITINFO2.
    pub exit_info2: u64,
    /// 0x088: EXITINTINFO (event being delivered when the exit happened).
    pub exit_int_info: u64,
    /// 0x090: bit 0 NP_ENABLE.
    pub nested_ctl: u64,
    /// 0x098: AVIC APIC_BAR.
    pub avic_apic_bar: u64,
    /// 0x0A0: GHCB guest-physical address.
    pub ghcb_gpa: u64,
    /// 0x0A8: EVENTINJ (see [`event`]).
    pub event_inj: u64,
    /// 0x0B0: nested page table root (N_CR3).
    pub n_cr3: u64,
    /// 0x0B8: LBR virtualisation and VMSAVE/VMLOAD virtualisation enables.
    pub virt_ext: u64,
    /// 0x0C0: VMCB clean bits (ignored by QEMU).
    pub vmcb_clean: u32,
    /// 0x0C4: reserved.
    pub _rsvd1: u32,
    /// 0x0C8: next sequential RIP (NRIP save; always 0 under QEMU TCG).
    pub next_rip: u64,
    /// 0x0D0: number of guest instruction bytes fetched (decode assists).
    pub insn_len: u8,
    /// 0x0D1: guest instruction bytes (decode assists).
    pub insn_bytes: [u8; 15],
    /// 0x0E0..0x3FF: AVIC pointers, VMSA pointer, reserved.
    pub _rsvd2: [u8; 0x320],
}

/// State save area, VMCB offsets 0x400..0xFFF (APM vol. 2, table B-2;
/// offsets below are relative to 0x400).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StateSave {
    /// +0x000.
    pub es: Segment,
    /// +0x010.
    pub cs: Segment,
    /// +0x020.
    pub ss: Segment,
    /// +0x030.
    pub ds: Segment,
    /// +0x040 (VMLOAD/VMSAVE).
    pub fs: Segment,
    /// +0x050 (VMLOAD/VMSAVE).
    pub gs: Segment,
    /// +0x060 (selector and attributes unused).
    pub gdtr: Segment,
    /// +0x070 (VMLOAD/VMSAVE).
    pub ldtr: Segment,
    /// +0x080 (selector and attributes unused).
    pub idtr: Segment,
    /// +0x090 (VMLOAD/VMSAVE).
    pub tr: Segment,
    /// +0x0A0..+0x0CA: reserved.
    pub _rsvd0: [u8; 0x2B],
    /// +0x0CB: CPL (QEMU derives it from SS.DPL instead).
    pub cpl: u8,
    /// +0x0CC: reserved.
    pub _rsvd1: u32,
    /// +0x0D0: EFER (SVME must stay set).
    pub efer: u64,
    /// +0x0D8..+0x147: reserved.
    pub _rsvd2: [u8; 0x70],
    /// +0x148.
    pub cr4: u64,
    /// +0x150.
    pub cr3: u64,
    /// +0x158.
    pub cr0: u64,
    /// +0x160.
    pub dr7: u64,
    /// +0x168.
    pub dr6: u64,
    /// +0x170.
    pub rflags: u64,
    /// +0x178.
    pub rip: u64,
    /// +0x180..+0x1D7: reserved.
    pub _rsvd3: [u8; 0x58],
    /// +0x1D8.
    pub rsp: u64,
    /// +0x1E0: S_CET.
    pub s_cet: u64,
    /// +0x1E8: SSP.
    pub ssp: u64,
    /// +0x1F0: ISST_ADDR.
    pub isst_addr: u64,
    /// +0x1F8.
    pub rax: u64,
    /// +0x200 (VMLOAD/VMSAVE).
    pub star: u64,
    /// +0x208 (VMLOAD/VMSAVE).
    pub lstar: u64,
    /// +0x210 (VMLOAD/VMSAVE).
    pub cstar: u64,
    /// +0x218 (VMLOAD/VMSAVE).
    pub sfmask: u64,
    /// +0x220 (VMLOAD/VMSAVE).
    pub kernel_gs_base: u64,
    /// +0x228 (VMLOAD/VMSAVE).
    pub sysenter_cs: u64,
    /// +0x230 (VMLOAD/VMSAVE).
    pub sysenter_esp: u64,
    /// +0x238 (VMLOAD/VMSAVE).
    pub sysenter_eip: u64,
    /// +0x240.
    pub cr2: u64,
    /// +0x248..+0x267: reserved.
    pub _rsvd4: [u8; 0x20],
    /// +0x268: guest PAT (ignored by QEMU).
    pub g_pat: u64,
    /// +0x270..+0xBFF: debug-control/LBR fields and reserved space.
    pub _rsvd5: [u8; 0x990],
}

/// The whole 4 KiB VMCB; must be 4 KiB aligned (APM vol. 2, 15.5.1).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(4096))]
pub struct Vmcb {
    /// Control area.
    pub control: ControlArea,
    /// Guest state save area.
    pub state: StateSave,
}

const_assert_eq!(size_of::<Segment>(), 16);
const_assert_eq!(size_of::<ControlArea>(), 0x400);
const_assert_eq!(size_of::<StateSave>(), 0xC00);
const_assert_eq!(size_of::<Vmcb>(), 0x1000);
// Table B-1.
const_assert_eq!(offset_of!(ControlArea, intercept_exceptions), 0x008);
const_assert_eq!(offset_of!(ControlArea, intercept_misc1), 0x00C);
const_assert_eq!(offset_of!(ControlArea, intercept_misc2), 0x010);
const_assert_eq!(offset_of!(ControlArea, pause_filter_threshold), 0x03C);
const_assert_eq!(offset_of!(ControlArea, iopm_base_pa), 0x040);
const_assert_eq!(offset_of!(ControlArea, msrpm_base_pa), 0x048);
const_assert_eq!(offset_of!(ControlArea, tsc_offset), 0x050);
const_assert_eq!(offset_of!(ControlArea, guest_asid), 0x058);
const_assert_eq!(offset_of!(ControlArea, tlb_control), 0x05C);
const_assert_eq!(offset_of!(ControlArea, int_ctl), 0x060);
const_assert_eq!(offset_of!(ControlArea, int_vector), 0x064);
const_assert_eq!(offset_of!(ControlArea, int_state), 0x068);
const_assert_eq!(offset_of!(ControlArea, exit_code), 0x070);
const_assert_eq!(offset_of!(ControlArea, exit_info1), 0x078);
const_assert_eq!(offset_of!(ControlArea, exit_info2), 0x080);
const_assert_eq!(offset_of!(ControlArea, exit_int_info), 0x088);
const_assert_eq!(offset_of!(ControlArea, nested_ctl), 0x090);
const_assert_eq!(offset_of!(ControlArea, event_inj), 0x0A8);
const_assert_eq!(offset_of!(ControlArea, n_cr3), 0x0B0);
const_assert_eq!(offset_of!(ControlArea, vmcb_clean), 0x0C0);
const_assert_eq!(offset_of!(ControlArea, next_rip), 0x0C8);
const_assert_eq!(offset_of!(ControlArea, insn_len), 0x0D0);
// Table B-2 (relative to 0x400).
const_assert_eq!(offset_of!(StateSave, cs), 0x010);
const_assert_eq!(offset_of!(StateSave, gdtr), 0x060);
const_assert_eq!(offset_of!(StateSave, idtr), 0x080);
const_assert_eq!(offset_of!(StateSave, tr), 0x090);
const_assert_eq!(offset_of!(StateSave, cpl), 0x0CB);
const_assert_eq!(offset_of!(StateSave, efer), 0x0D0);
const_assert_eq!(offset_of!(StateSave, cr4), 0x148);
const_assert_eq!(offset_of!(StateSave, cr3), 0x150);
const_assert_eq!(offset_of!(StateSave, cr0), 0x158);
const_assert_eq!(offset_of!(StateSave, dr7), 0x160);
const_assert_eq!(offset_of!(StateSave, dr6), 0x168);
const_assert_eq!(offset_of!(StateSave, rflags), 0x170);
const_assert_eq!(offset_of!(StateSave, rip), 0x178);
const_assert_eq!(offset_of!(StateSave, rsp), 0x1D8);
const_assert_eq!(offset_of!(StateSave, rax), 0x1F8);
const_assert_eq!(offset_of!(StateSave, star), 0x200);
const_assert_eq!(offset_of!(StateSave, kernel_gs_base), 0x220);
const_assert_eq!(offset_of!(StateSave, sysenter_esp), 0x230);
const_assert_eq!(offset_of!(StateSave, cr2), 0x240);
const_assert_eq!(offset_of!(StateSave, g_pat), 0x268);
const_assert_eq!(offset_of!(Vmcb, state), 0x400);

/// Bits of [`ControlArea::intercept_misc1`] (APM vol. 2, table B-1, offset 0x00C).
pub mod misc1 {
    /// Physical maskable interrupt.
    pub const INTR: u32 = 1 << 0;
    /// Physical NMI.
    pub const NMI: u32 = 1 << 1;
    /// Virtual interrupt window (V_IRQ about to be taken).
    pub const VINTR: u32 = 1 << 4;
    /// CPUID.
    pub const CPUID: u32 = 1 << 18;
    /// HLT.
    pub const HLT: u32 = 1 << 24;
    /// INVLPGA.
    pub const INVLPGA: u32 = 1 << 26;
    /// IN/OUT through the I/O permission map.
    pub const IOIO_PROT: u32 = 1 << 27;
    /// RDMSR/WRMSR through the MSR permission map.
    pub const MSR_PROT: u32 = 1 << 28;
    /// Shutdown (triple fault).
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Bits of [`ControlArea::intercept_misc2`] (APM vol. 2, table B-1, offset 0x010).
pub mod misc2 {
    /// VMRUN (must be set, or VMRUN fails with VMEXIT_INVALID).
    pub const VMRUN: u32 = 1 << 0;
    /// VMMCALL.
    pub const VMMCALL: u32 = 1 << 1;
    /// VMLOAD.
    pub const VMLOAD: u32 = 1 << 2;
    /// VMSAVE.
    pub const VMSAVE: u32 = 1 << 3;
    /// STGI.
    pub const STGI: u32 = 1 << 4;
    /// CLGI.
    pub const CLGI: u32 = 1 << 5;
    /// SKINIT.
    pub const SKINIT: u32 = 1 << 6;
}

/// Bits of [`ControlArea::int_ctl`] (APM vol. 2, table B-1, offset 0x060).
pub mod int_ctl {
    /// V_IRQ: a virtual interrupt is pending.
    pub const V_IRQ: u32 = 1 << 8;
    /// V_INTR_PRIO field shift (bits 16..19).
    pub const V_INTR_PRIO_SHIFT: u32 = 16;
    /// V_IGN_TPR: ignore V_TPR for the pending virtual interrupt.
    pub const V_IGN_TPR: u32 = 1 << 20;
    /// V_INTR_MASKING: guest RFLAGS.IF masks only virtual interrupts.
    pub const V_INTR_MASKING: u32 = 1 << 24;
}

/// EVENTINJ / EXITINTINFO encoding (APM vol. 2, 15.20, figure 15-10).
pub mod event {
    /// Valid bit.
    pub const VALID: u64 = 1 << 31;
    /// Error code valid.
    pub const ERROR_VALID: u64 = 1 << 11;
    /// Type: external interrupt.
    pub const TYPE_INTR: u64 = 0 << 8;
    /// Type: exception.
    pub const TYPE_EXCEPTION: u64 = 3 << 8;
}

/// SVM exit codes (APM vol. 2, appendix C, table C-1).
pub mod exit {
    /// First exception intercept: 0x40 + vector.
    pub const EXCP_BASE: u64 = 0x40;
    /// Physical INTR.
    pub const INTR: u64 = 0x60;
    /// Physical NMI.
    pub const NMI: u64 = 0x61;
    /// Virtual interrupt.
    pub const VINTR: u64 = 0x64;
    /// CPUID.
    pub const CPUID: u64 = 0x72;
    /// HLT.
    pub const HLT: u64 = 0x78;
    /// INVLPGA.
    pub const INVLPGA: u64 = 0x7A;
    /// IN/OUT.
    pub const IOIO: u64 = 0x7B;
    /// RDMSR/WRMSR.
    pub const MSR: u64 = 0x7C;
    /// Shutdown.
    pub const SHUTDOWN: u64 = 0x7F;
    /// VMRUN.
    pub const VMRUN: u64 = 0x80;
    /// VMMCALL.
    pub const VMMCALL: u64 = 0x81;
    /// VMLOAD.
    pub const VMLOAD: u64 = 0x82;
    /// VMSAVE.
    pub const VMSAVE: u64 = 0x83;
    /// STGI.
    pub const STGI: u64 = 0x84;
    /// CLGI.
    pub const CLGI: u64 = 0x85;
    /// SKINIT.
    pub const SKINIT: u64 = 0x86;
    /// Nested page fault.
    pub const NPF: u64 = 0x400;
    /// VMEXIT_INVALID, -1. QEMU before 9c3afb9d writes only the low 32
    /// bits, so compare `code as u32` against this.
    pub const INVALID_LOW32: u32 = 0xFFFF_FFFF;
}

/// Segment attribute words used for the PVH entry state (see [`Segment`]).
pub mod attr {
    /// 32-bit flat code: type 0xB (execute/read, accessed), S, P, D/B, G.
    pub const CODE32: u16 = 0xC9B;
    /// Flat data/stack: type 3 (read/write, accessed), S, P, D/B, G.
    pub const DATA: u16 = 0xC93;
    /// Busy 32-bit TSS: type 0xB, P.
    pub const TSS_BUSY: u16 = 0x8B;
    /// Real-mode code segment after INIT (Intel SDM vol. 3A, table 10-1,
    /// "Present, R/W, Accessed" plus execute): type 0xB, S, P; 16-bit.
    pub const CODE16: u16 = 0x9B;
    /// Real-mode data segment after INIT: type 3 (read/write, accessed),
    /// S, P; 16-bit.
    pub const DATA16: u16 = 0x93;
    /// LDTR after INIT: type 2 (LDT), P.
    pub const LDT: u16 = 0x82;
}

impl Vmcb {
    /// An all-zero VMCB.
    pub const fn zeroed() -> Self {
        // Every field is an integer or an integer array, so all-zero is valid;
        // `FromZeros::new_zeroed` is not `const`.
        Vmcb {
            control: ControlArea {
                intercept_cr: 0,
                intercept_dr: 0,
                intercept_exceptions: 0,
                intercept_misc1: 0,
                intercept_misc2: 0,
                intercept_misc3: 0,
                _rsvd0: [0; 0x24],
                pause_filter_threshold: 0,
                pause_filter_count: 0,
                iopm_base_pa: 0,
                msrpm_base_pa: 0,
                tsc_offset: 0,
                guest_asid: 0,
                tlb_control: 0,
                int_ctl: 0,
                int_vector: 0,
                int_state: 0,
                exit_code: 0,
                exit_info1: 0,
                exit_info2: 0,
                exit_int_info: 0,
                nested_ctl: 0,
                avic_apic_bar: 0,
                ghcb_gpa: 0,
                event_inj: 0,
                n_cr3: 0,
                virt_ext: 0,
                vmcb_clean: 0,
                _rsvd1: 0,
                next_rip: 0,
                insn_len: 0,
                insn_bytes: [0; 15],
                _rsvd2: [0; 0x320],
            },
            state: StateSave {
                es: Segment::ZERO,
                cs: Segment::ZERO,
                ss: Segment::ZERO,
                ds: Segment::ZERO,
                fs: Segment::ZERO,
                gs: Segment::ZERO,
                gdtr: Segment::ZERO,
                ldtr: Segment::ZERO,
                idtr: Segment::ZERO,
                tr: Segment::ZERO,
                _rsvd0: [0; 0x2B],
                cpl: 0,
                _rsvd1: 0,
                efer: 0,
                _rsvd2: [0; 0x70],
                cr4: 0,
                cr3: 0,
                cr0: 0,
                dr7: 0,
                dr6: 0,
                rflags: 0,
                rip: 0,
                _rsvd3: [0; 0x58],
                rsp: 0,
                s_cet: 0,
                ssp: 0,
                isst_addr: 0,
                rax: 0,
                star: 0,
                lstar: 0,
                cstar: 0,
                sfmask: 0,
                kernel_gs_base: 0,
                sysenter_cs: 0,
                sysenter_esp: 0,
                sysenter_eip: 0,
                cr2: 0,
                _rsvd4: [0; 0x20],
                g_pat: 0,
                _rsvd5: [0; 0x990],
            },
        }
    }
}
