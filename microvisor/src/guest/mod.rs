//! The guest: its RAM and how its kernel image is loaded into it.

pub mod acpi;
pub mod loader;
pub mod mem;
pub mod walk;

/// An access the guest is refused: it gets #GP(0), as hardware would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gp;
