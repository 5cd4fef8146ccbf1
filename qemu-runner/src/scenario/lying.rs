//! The lying-hypervisor matrix: each backend's persona lying in a `break=` way, each ending in a passing boot with the entries it could not trust native (issue 16).

#[allow(unused_imports)]
use super::*;

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[];
