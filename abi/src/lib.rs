//! Binary interfaces shared by both sides of pvops.
//!
//! Everything here is plain data: layouts fixed by public specifications
//! (PVH `hvm_start_info`), the companion microvisor's own hypercall numbers,
//! the `isa-debug-exit` codes and the structured serial-line protocol the
//! host runner parses. A guest backend and the microvisor persona that
//! implements the same ABI both use these definitions, so they cannot drift.
//!
//! The crate has no `unsafe` code and builds for the host and for
//! `x86_64-unknown-none` alike.
#![no_std]
#![forbid(unsafe_code)]

pub mod acpi;
pub mod exit;
pub mod hyperv;
pub mod kvm;
pub mod microvisor;
pub mod pvclock;
pub mod pvh;
pub mod report;
pub mod vmware;
pub mod xen;
