//! Scenarios of QEMU's microVM machine and the microvisor without a PIT (issue 10).

#[allow(unused_imports)]
use super::*;

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[];
