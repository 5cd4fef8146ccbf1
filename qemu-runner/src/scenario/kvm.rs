//! Scenarios of the KVM backend: real KVM and the microvisor's `kvm` persona (issue 12).

#[allow(unused_imports)]
use super::*;

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[];
