//! Decoding an x2APIC ICR write (MSR 0x830) into what it asks for and
//! whom it reaches among the guest's vCPUs (no unsafe, no hardware).
//!
//! Layout from the Intel SDM vol. 3A, 11.6.1 (figure 11-12, "Interrupt
//! Command Register") and 11.12.9 (x2APIC ICR: one 64-bit register, the
//! 32-bit destination in bits 63:32): vector 7:0, delivery mode 10:8,
//! destination mode 11 (0 physical, 1 logical), level 14, trigger mode 15,
//! destination shorthand 19:18. Logical x2APIC destinations (11.12.10.2):
//! cluster in bits 31:16, a 16-bit member mask in 15:0; the logical ID of
//! x2APIC ID `i` is cluster `i >> 4`, member bit `i & 15`. Physical
//! destination 0xFFFF_FFFF is the broadcast (11.12.9).
//!
//! vCPU `i` has APIC ID `i`, so a target set is a bit mask of vCPU indices.

/// x2APIC destination that reaches every CPU (physical mode).
pub const BROADCAST: u32 = u32::MAX;

/// What an ICR write delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Fixed (000) or lowest priority (001, delivered as fixed to every
    /// target: the microvisor has no priorities to arbitrate).
    Fixed(u8),
    /// NMI (100): not modelled, dropped and counted.
    Nmi,
    /// INIT (101) with level assert.
    Init,
    /// INIT level de-assert (101, level 0, trigger level): no effect on
    /// anything newer than a Pentium (SDM 11.6.1), ignored.
    InitDeassert,
    /// Start-up (110): start the AP at `vector << 12`.
    Startup(u8),
    /// SMI (010) and the reserved modes (011, 111): ignored.
    Other,
}

/// One decoded ICR write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    /// What it delivers.
    pub kind: Kind,
    /// The vCPUs it reaches (bit `i` = vCPU `i`).
    pub targets: u32,
    /// A physical destination that names no vCPU (not the broadcast):
    /// dropped, as on hardware, and reported.
    pub absent: Option<u32>,
}

/// Decodes `icr` written by vCPU `sender` of `vcpus` vCPUs.
pub fn decode(icr: u64, sender: usize, vcpus: usize) -> Ipi {
    let vector = icr as u8;
    let level_assert = icr & (1 << 14) != 0;
    let trigger_level = icr & (1 << 15) != 0;
    let kind = match (icr >> 8) & 7 {
        0 | 1 => Kind::Fixed(vector),
        4 => Kind::Nmi,
        5 if !level_assert && trigger_level => Kind::InitDeassert,
        5 => Kind::Init,
        6 => Kind::Startup(vector),
        _ => Kind::Other,
    };
    let all: u32 = if vcpus >= 32 {
        u32::MAX
    } else {
        (1u32 << vcpus) - 1
    };
    let me = 1u32 << sender;
    let dest = (icr >> 32) as u32;
    let logical = icr & (1 << 11) != 0;
    let (targets, absent) = match (icr >> 18) & 3 {
        1 => (me, None),
        2 => (all, None),
        3 => (all & !me, None),
        _ if dest == BROADCAST => (all, None),
        _ if logical => {
            let cluster = dest >> 16;
            let members = dest & 0xFFFF;
            let mask = (0..vcpus)
                .filter(|&i| (i as u32 >> 4) == cluster && members & (1 << (i & 15)) != 0)
                .fold(0, |m, i| m | 1 << i);
            (mask, None)
        }
        _ if (dest as usize) < vcpus => (1 << dest, None),
        _ => (0, Some(dest)),
    };
    Ipi {
        kind,
        targets,
        absent,
    }
}

/// The x2APIC logical ID of x2APIC ID `id` (SDM 11.12.10.2): cluster
/// `id >> 4` in bits 31:16, bit `id & 15` in 15:0.
pub fn logical_id(id: u32) -> u32 {
    (id >> 4) << 16 | 1 << (id & 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipi(icr: u64, sender: usize, n: usize) -> (Kind, u32, Option<u32>) {
        let i = decode(icr, sender, n);
        (i.kind, i.targets, i.absent)
    }

    #[test]
    fn fixed_physical_and_shorthands() {
        // Fixed vector 0x41 to APIC ID 2 of 4.
        assert_eq!(ipi(2 << 32 | 0x41, 0, 4), (Kind::Fixed(0x41), 0b0100, None));
        // Self, all including self, all excluding self.
        assert_eq!(ipi(1 << 18 | 0x42, 1, 4), (Kind::Fixed(0x42), 0b0010, None));
        assert_eq!(ipi(2 << 18 | 0x42, 1, 4), (Kind::Fixed(0x42), 0b1111, None));
        assert_eq!(ipi(3 << 18 | 0x42, 1, 4), (Kind::Fixed(0x42), 0b1101, None));
        // Shorthand wins over the destination field.
        assert_eq!(ipi(7 << 32 | 1 << 18 | 0x42, 0, 4).1, 0b0001);
        // Physical broadcast.
        assert_eq!(ipi(0xFFFF_FFFF << 32 | 0x43, 0, 3).1, 0b111);
        // Lowest priority counts as fixed.
        assert_eq!(ipi(1 << 8 | 0x44, 0, 2), (Kind::Fixed(0x44), 1, None));
        // One vCPU: all-excluding-self reaches nobody.
        assert_eq!(ipi(3 << 18 | 0x42, 0, 1).1, 0);
    }

    #[test]
    fn absent_destinations_are_reported() {
        assert_eq!(
            ipi(7 << 32 | 6 << 8 | 0x08, 0, 2),
            (Kind::Startup(8), 0, Some(7))
        );
        assert_eq!(
            ipi(4 << 32 | 5 << 8 | 1 << 14, 0, 4),
            (Kind::Init, 0, Some(4))
        );
        assert_eq!(ipi(1 << 32 | 0x40, 0, 1), (Kind::Fixed(0x40), 0, Some(1)));
    }

    #[test]
    fn init_sipi_nmi_and_others() {
        assert_eq!(ipi(1 << 32 | 5 << 8 | 1 << 14, 0, 2).0, Kind::Init);
        // INIT de-assert: level 0, trigger level.
        assert_eq!(ipi(1 << 32 | 5 << 8 | 1 << 15, 0, 2).0, Kind::InitDeassert);
        assert_eq!(
            ipi(1 << 32 | 6 << 8 | 1 << 14 | 0x9A, 0, 2).0,
            Kind::Startup(0x9A)
        );
        assert_eq!(ipi(1 << 32 | 4 << 8, 0, 2).0, Kind::Nmi);
        for mode in [2u64, 3, 7] {
            assert_eq!(ipi(1 << 32 | mode << 8, 0, 2).0, Kind::Other);
        }
    }

    #[test]
    fn logical_destinations() {
        assert_eq!(logical_id(0), 1);
        assert_eq!(logical_id(5), 1 << 5);
        assert_eq!(logical_id(17), 1 << 16 | 1 << 1);
        // Cluster 0, members 0 and 3.
        assert_eq!(ipi(0b1001 << 32 | 1 << 11 | 0x45, 0, 8).1, 0b1001);
        // Cluster 1 names nobody of 8 vCPUs; members past 8 neither.
        assert_eq!(ipi((1 << 16 | 1) << 32 | 1 << 11 | 0x45, 0, 8).1, 0);
        assert_eq!(ipi(0xFF00 << 32 | 1 << 11 | 0x45, 0, 8).1, 0);
        // Logical destination 0 reaches nobody and is not "absent".
        assert_eq!(ipi(1 << 11 | 0x45, 0, 4), (Kind::Fixed(0x45), 0, None));
    }
}
