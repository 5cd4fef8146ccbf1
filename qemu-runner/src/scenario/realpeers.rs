//! Scenarios that read KVM's own exit counters over QMP (issue 10).
//!
//! Every `-accel kvm` scenario with a direct boot has its counters read
//! (see `crate::qmp`); these are the backend-vs-native pairs compared with
//! them, as the microvisor's personas are.

#[allow(unused_imports)]
use super::*;

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[Scenario {
    name: "kvm/native",
    description: "KVM (-cpu host), guest forced to pvops=native (pair of kvm; KVM's exit counters)",
    accel: Accel::Kvm,
    // arch-capabilities: see `kvm`.
    cpu: Some("host,-arch-capabilities"),
    guest_cmdline: "pvops=native",
    requires: &[Requirement::Kvm],
    expect: Expect {
        hypervisor: Some("kvm"),
        backend: Some("native"),
        owners: Some(Owners::NATIVE),
        ..Expect::PASS
    },
    ..Scenario::BASE
}];
