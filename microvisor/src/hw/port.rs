//! x86 port I/O on the host.

use core::arch::asm;

/// Reads a byte from `port`.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the microvisor owns the machine; reading a port has no memory
    // effects. Callers only name ports of devices the microvisor manages or
    // forwards (UART, PIT, PIC, debug exit).
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Reads a word from `port`.
pub fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: as for `inb`.
    unsafe {
        asm!("in ax, dx", out("ax") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Reads a dword from `port`.
pub fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as for `inb`.
    unsafe {
        asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a byte to `port`.
pub fn outb(port: u16, v: u8) {
    // SAFETY: port writes have no effect on the microvisor's memory; the
    // devices written (UART, PIT, PIC, debug exit) cannot DMA.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// Writes a word to `port`.
pub fn outw(port: u16, v: u16) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags))
    };
}

/// Writes a dword to `port`.
pub fn outl(port: u16, v: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    };
}

/// Reads `size` (1, 2 or 4) bytes from `port`.
pub fn read(port: u16, size: u8) -> u32 {
    match size {
        1 => inb(port) as u32,
        2 => inw(port) as u32,
        _ => inl(port),
    }
}

/// Writes `size` (1, 2 or 4) bytes to `port`.
pub fn write(port: u16, size: u8, v: u32) {
    match size {
        1 => outb(port, v as u8),
        2 => outw(port, v as u16),
        _ => outl(port, v),
    }
}
