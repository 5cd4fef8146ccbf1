//! The microvisor binary: PVH entry and panic handler. Everything else is
//! the `microvisor` library (`lib.rs`).
#![no_std]
#![no_main]

bootkit::pvh_entry!(microvisor::start, stack_size = 256 * 1024);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    microvisor::report::panic(info)
}
