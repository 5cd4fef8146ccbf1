//! The hostile-guest matrix: guests that attack the microvisor, each ending in a report and a distinct exit code or an error code to the guest (issue 16).

#[allow(unused_imports)]
use super::*;

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[];
