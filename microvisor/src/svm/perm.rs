//! I/O and MSR permission maps (APM vol. 2, 15.10.1 "I/O Permissions
//! Map" and 15.11 "MSR Intercepts").
//!
//! Both start with every bit set (intercept everything); the microvisor
//! then clears the bits of the few MSRs it lets the guest own outright.

/// I/O permission map: one bit per port, 12 KiB (the last bits cover
/// multi-byte accesses that wrap past port 0xFFFF).
#[repr(C, align(4096))]
pub struct Iopm(pub [u8; 3 * 4096]);

/// MSR permission map: two bits (read, write) per MSR in three ranges.
#[repr(C, align(4096))]
pub struct Msrpm(pub [u8; 2 * 4096]);

impl Iopm {
    /// A map intercepting every port.
    pub const fn intercept_all() -> Self {
        Iopm([0xFF; 3 * 4096])
    }
}

impl Msrpm {
    /// A map intercepting every MSR access.
    pub const fn intercept_all() -> Self {
        Msrpm([0xFF; 2 * 4096])
    }

    /// Byte offset and bit of `msr`'s read-intercept bit (the write bit is
    /// the next one), or `None` for MSRs outside the three mapped ranges
    /// (those always exit). Ranges, APM vol. 2, table 15-4:
    /// 0000_0000..0000_1FFF at 0x000, C000_0000..C000_1FFF at 0x800,
    /// C001_0000..C001_1FFF at 0x1000.
    pub fn position(msr: u32) -> Option<(usize, u32)> {
        let (base, index) = match msr {
            0x0000_0000..=0x0000_1FFF => (0x000, msr),
            0xC000_0000..=0xC000_1FFF => (0x800, msr - 0xC000_0000),
            0xC001_0000..=0xC001_1FFF => (0x1000, msr - 0xC001_0000),
            _ => return None,
        };
        Some((base + index as usize / 4, (index % 4) * 2))
    }

    /// Lets the guest read and write `msr` without an exit.
    pub fn pass_through(&mut self, msr: u32) {
        if let Some((byte, bit)) = Self::position(msr) {
            self.0[byte] &= !(0b11 << bit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msrpm_positions() {
        // EFER: MSRPM byte 0x820, bits 0..1 (APM vol. 2, 15.11).
        assert_eq!(Msrpm::position(0xC000_0080), Some((0x820, 0)));
        assert_eq!(Msrpm::position(0x1B), Some((0x6, 6)));
        assert_eq!(Msrpm::position(0xC001_0000), Some((0x1000, 0)));
        assert_eq!(Msrpm::position(0x4000_0000), None);
        assert_eq!(Msrpm::position(0x4FFF_0000), None);
    }

    #[test]
    fn pass_through_clears_both_bits() {
        let mut m = Msrpm::intercept_all();
        m.pass_through(0x175);
        let (byte, bit) = Msrpm::position(0x175).unwrap();
        assert_eq!(m.0[byte] >> bit & 0b11, 0);
        assert_eq!(m.0[byte].count_ones(), 6);
    }
}
