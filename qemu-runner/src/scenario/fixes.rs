//! Scenarios of the real-hypervisor fixes: personas that behave as the real hypervisors do (issue 11).

#[allow(unused_imports)]
use super::*;

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[];
