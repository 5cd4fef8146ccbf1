//! The CPUs of the machine, from the ACPI MADT.
//!
//! The RSDP is where the PVH loader says (`hvm_start_info.rsdp_paddr`),
//! else in the first KiB of the EBDA or in 0xE0000..0x100000 on a 16-byte
//! boundary (ACPI 6.5, 5.2.5.1). Every table is checked (signature,
//! length, checksum) by `pvops_abi::acpi`; a bad one is an error, never a
//! panic, and a kernel then runs on its boot CPU alone.
//!
//! Tables are read through the identity map of the low 4 GiB that bootkit's
//! boot tables (and the example kernel's own) provide.

use pvops_abi::acpi::{self, AcpiError, MadtCpu};

/// CPUs [`cpus`] reports at most.
pub const MAX_CPUS: usize = 64;
/// Longest table read (a MADT for 64 x2APICs is about 1.1 KiB).
const MAX_TABLE: usize = 64 * 1024;

/// The processors of the MADT that are enabled or online capable, in
/// table order (the boot CPU among them).
#[derive(Clone, Copy, Debug)]
pub struct Cpus {
    ids: [u32; MAX_CPUS],
    len: usize,
    /// Processors past [`MAX_CPUS`], or listed twice, left out.
    pub left_out: usize,
    /// Processors neither enabled nor online capable (not started).
    pub disabled: usize,
}

impl Cpus {
    /// The APIC IDs.
    pub fn apic_ids(&self) -> &[u32] {
        &self.ids[..self.len]
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the MADT listed none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Reads `len` bytes of physical memory at `addr` below 4 GiB.
fn phys(addr: u64, len: usize, what: &'static str) -> Result<&'static [u8], AcpiError> {
    if addr == 0 || len > MAX_TABLE || addr.saturating_add(len as u64) > 4 << 30 {
        return Err(AcpiError::Unreachable(what));
    }
    // SAFETY: the range lies in the permanent identity map of the low
    // 4 GiB (module docs), read only; firmware tables and the BIOS areas
    // are never written while the kernel runs.
    Ok(unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len) })
}

/// A whole table at `addr`: its header first, then `length` bytes.
fn table(addr: u64, signature: [u8; 4], what: &'static str) -> Result<&'static [u8], AcpiError> {
    let head = phys(addr, core::mem::size_of::<acpi::SdtHeader>(), what)?;
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    acpi::check_table(phys(addr, len.max(head.len()), what)?, signature, what)
}

/// Finds the RSDP: at `rsdp_paddr` when non-zero, else in the BIOS areas.
pub fn find_rsdp(rsdp_paddr: u64) -> Result<(u64, u32), AcpiError> {
    if rsdp_paddr != 0 {
        return acpi::parse_rsdp(phys(rsdp_paddr, 36, "RSDP")?);
    }
    // The EBDA's segment is the word at 0x40E (ACPI 6.5, 5.2.5.1).
    let ebda = phys(0x40E, 2, "BDA")?;
    let ebda = u64::from(u16::from_le_bytes([ebda[0], ebda[1]])) << 4;
    let areas = [(ebda, 1024usize), (0xE0000, 0x20000)];
    for (start, len) in areas {
        if start == 0 {
            continue;
        }
        let Ok(area) = phys(start, len, "BIOS area") else {
            continue;
        };
        for off in (0..len.saturating_sub(20)).step_by(16) {
            if area[off..off + 8] == acpi::RSDP_SIGNATURE {
                if let Ok(r) = acpi::parse_rsdp(&area[off..(off + 36).min(len)]) {
                    return Ok(r);
                }
            }
        }
    }
    Err(AcpiError::NoRsdp)
}

/// The MADT's processors (see [`Cpus`]).
pub fn cpus(rsdp_paddr: u64) -> Result<Cpus, AcpiError> {
    let (xsdt, rsdt) = find_rsdp(rsdp_paddr)?;
    let madt = madt_from(xsdt, rsdt)?;
    let mut c = Cpus {
        ids: [0; MAX_CPUS],
        len: 0,
        left_out: 0,
        disabled: 0,
    };
    for cpu in acpi::madt_cpus(madt) {
        let MadtCpu {
            apic_id,
            enabled,
            online_capable,
        } = cpu?;
        if !enabled && !online_capable {
            c.disabled += 1;
        } else if c.len == MAX_CPUS || c.apic_ids().contains(&apic_id) {
            c.left_out += 1;
        } else {
            c.ids[c.len] = apic_id;
            c.len += 1;
        }
    }
    Ok(c)
}

fn madt_from(xsdt: u64, rsdt: u32) -> Result<&'static [u8], AcpiError> {
    let (root, size) = if xsdt != 0 {
        (table(xsdt, acpi::XSDT_SIGNATURE, "XSDT")?, 8)
    } else {
        (table(u64::from(rsdt), acpi::RSDT_SIGNATURE, "RSDT")?, 4)
    };
    for addr in acpi::sdt_entries(root, size) {
        let Ok(head) = phys(addr, 4, "table") else {
            continue;
        };
        if head == acpi::MADT_SIGNATURE {
            return table(addr, acpi::MADT_SIGNATURE, "MADT");
        }
    }
    Err(AcpiError::NoMadt)
}
