//! Nested real peers: the example kernel as L2 under KVM, KVM's Hyper-V and QEMU/KVM's Xen emulation in an L1 Linux under TCG (issue 10).

#[allow(unused_imports)]
use super::*;

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[];
