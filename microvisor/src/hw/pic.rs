//! The legacy 8259A pair: SeaBIOS leaves the master at vector 8, which would
//! collide with #DF, so remap both to 0x20..0x2F and mask every line. The
//! microvisor's interrupts come from the LAPIC only.

use super::port::outb;

/// Remaps the PICs to vectors 0x20/0x28 and masks all 16 lines.
pub fn remap_and_mask() {
    // ICW1: init, ICW4 needed.
    outb(0x20, 0x11);
    outb(0xA0, 0x11);
    // ICW2: vector offsets.
    outb(0x21, 0x20);
    outb(0xA1, 0x28);
    // ICW3: slave on IRQ2 / slave identity 2.
    outb(0x21, 0x04);
    outb(0xA1, 0x02);
    // ICW4: 8086 mode.
    outb(0x21, 0x01);
    outb(0xA1, 0x01);
    // OCW1: mask everything.
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
}
