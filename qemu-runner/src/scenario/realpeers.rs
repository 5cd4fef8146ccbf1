//! Scenarios that read KVM's own exit counters over QMP (issue 10).

#[allow(unused_imports)]
use super::*;

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[];
