//! Host hardware access: the only place (with `svm::vmrun`, `svm::tables`
//! and `guest::mem`) where the microvisor executes privileged instructions.

pub mod cpu;
pub mod lapic;
pub mod pic;
pub mod pit;
pub mod port;
