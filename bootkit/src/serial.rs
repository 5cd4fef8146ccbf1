//! The COM1 serial console (I/O port 0x3F8), 115200 8N1, via `uart_16550`.
//!
//! Every wait is bounded: a UART that never drains (absent, or an emulator
//! that does not model it) costs a bounded delay per byte and never hangs.
//! If the UART does not answer its scratch-register probe, bytes are written
//! to the data port unchecked, which is what every emulator accepts.

use crate::sync::IrqMutex;
use core::fmt;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550};

/// I/O base of COM1.
pub const COM1: u16 = 0x3f8;

/// Spins per byte before giving up on a transmitter that stays busy.
const SEND_SPINS: u32 = 1_000_000;

enum Port {
    /// Not initialised yet: bytes go straight to the data port.
    Raw,
    /// An initialised 16550.
    Uart(Uart16550<PioBackend>),
}

/// The serial console.
pub struct Console {
    port: Port,
}

impl Console {
    const fn new() -> Self {
        Console { port: Port::Raw }
    }

    fn init(&mut self) {
        // SAFETY: COM1 is the PC's first serial port; its eight registers
        // at 0x3F8..0x3FF are used only through this console for the rest
        // of the kernel's life.
        let Ok(mut uart) = (unsafe { Uart16550::new_port(COM1) }) else {
            return;
        };
        let config = Config {
            baud_rate: BaudRate::Baud115200,
            ..Config::DEFAULT
        };
        if uart.init(config).is_ok() {
            self.port = Port::Uart(uart);
        }
    }

    /// Writes raw bytes (no newline translation).
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        match &mut self.port {
            Port::Raw => {
                for &b in bytes {
                    // SAFETY: writing COM1's data register only transmits a
                    // byte (or is ignored when there is no UART).
                    unsafe { crate::cpu::outb(COM1, b) };
                }
            }
            Port::Uart(uart) => {
                let mut rest = bytes;
                let mut spins = 0u32;
                while !rest.is_empty() {
                    let n = uart.send_bytes(rest);
                    rest = &rest[n..];
                    if n == 0 {
                        spins += 1;
                        if spins > SEND_SPINS {
                            // Give up on this byte rather than hang.
                            rest = &rest[1..];
                            spins = 0;
                        }
                        core::hint::spin_loop();
                    } else {
                        spins = 0;
                    }
                }
            }
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

static CONSOLE: IrqMutex<Console> = IrqMutex::new(Console::new());

/// Initialises COM1 (115200 8N1, FIFOs on). Safe to call more than once.
pub fn init() {
    CONSOLE.lock().init();
}

/// Runs `f` with the console locked (interrupts masked), so a multi-part
/// line is never interleaved with output from an interrupt handler.
pub fn with<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    f(&mut CONSOLE.lock())
}

/// Like [`with`], but breaks the lock if an interrupted writer holds it.
/// Only for paths that never return (panic, fatal exception).
pub fn with_for_panic<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    f(&mut CONSOLE.lock_for_panic())
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    with(|c| {
        let _ = fmt::Write::write_fmt(c, args);
    });
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::_print(format_args!($($arg)*)) };
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
