//! Scenarios of the real-hypervisor fixes: personas that behave as the real hypervisors do (issue 11).

#[allow(unused_imports)]
use super::*;

/// This area's scenarios, in report order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "microvisor:xen:noisy-ports",
        description: "persona xen with the toolstack's xenstore and console ports (1, 2: word 0, as the timer's) raising events during the boot: the timer keeps interrupting (review F1)",
        boot: mv("xen", "break=noisy-ports"),
        expect: Expect {
            fewer_than_native: &[],
            ..XEN
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:xen:callback-via",
        description: "persona xen without base+4's upcall-vector bit (Xen before 4.17): HVM_PARAM_CALLBACK_IRQ, injected without the vLAPIC, re-asserted while the upcall flag is set, no EOI (review F3)",
        boot: mv("xen", "break=callback-via+noisy-ports"),
        expect: Expect {
            fewer_than_native: &[],
            ..XEN
        },
        ..Scenario::BASE
    },
    Scenario {
        name: "microvisor:xen:qemu",
        description: "persona xen as QEMU's Xen emulation: 4.10, HVMOP_get_param -ENOSYS, base+3 sub-leaf 0 not in Xen's layout; the timer is still Xen's",
        boot: mv("xen", "break=qemu+noisy-ports"),
        expect: Expect {
            fewer_than_native: &[],
            ..XEN
        },
        ..Scenario::BASE
    },
];
