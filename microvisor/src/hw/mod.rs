//! Host hardware access: the only place (with `svm::vmrun`) where the
//! microvisor executes privileged instructions.

pub mod cpu;
pub mod lapic;
pub mod pic;
pub mod pit;
pub mod port;
