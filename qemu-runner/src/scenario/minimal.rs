//! Scenarios of `examples/minimal-kernel/`, built out of tree (issue 9).

#[allow(unused_imports)]
use super::*;

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[];
