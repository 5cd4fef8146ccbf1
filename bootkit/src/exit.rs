//! Leaving QEMU through the `isa-debug-exit` device.

use pvops_abi::exit::{ExitCode, DEBUG_EXIT_PORT};

/// Writes `code` to the debug-exit port (QEMU then exits with status
/// `(code << 1) | 1`), then halts forever with interrupts off in case the
/// device is absent.
pub fn exit(code: ExitCode) -> ! {
    signal(code);
    crate::cpu::halt_forever()
}

/// Writes `code` to the debug-exit port and returns when the device is
/// absent (a machine without it: real hardware, a real hypervisor), so the
/// caller can power off another way next.
pub fn signal(code: ExitCode) {
    // SAFETY: port 0xf4 is the isa-debug-exit device of the test setup; a
    // 32-bit OUT ends the emulator. Without the device the write is ignored.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            in("dx") DEBUG_EXIT_PORT,
            in("eax") code as u32,
            options(nomem, nostack, preserves_flags)
        )
    };
}
