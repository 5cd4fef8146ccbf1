//! The `pvops=<name>` kernel command-line option.

/// The backend name given by `pvops=<name>` on `cmdline`, if any (the last
/// occurrence wins, as with Linux's early parameters).
pub fn override_from_cmdline(cmdline: &str) -> Option<&str> {
    cmdline
        .split_ascii_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("pvops="))
}

/// Whether `cmdline` turns KVM hypercalls off (`kvm.hypercalls=off`): a
/// host whose KVM never returns from a hypercall (seen with `kvm_pvm`, a
/// software KVM) must not get one; the features that need them (PV IPIs,
/// PV spinlock kicks, PV sched yield) then stay native.
pub fn kvm_hypercalls_off(cmdline: &str) -> bool {
    cmdline
        .split_ascii_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("kvm.hypercalls="))
        == Some("off")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_hypercalls_switch() {
        assert!(kvm_hypercalls_off("a kvm.hypercalls=off"));
        assert!(!kvm_hypercalls_off("kvm.hypercalls=off kvm.hypercalls=on"));
        assert!(!kvm_hypercalls_off("kvm.hypercalls"));
        assert!(!kvm_hypercalls_off(""));
    }

    #[test]
    fn finds_last_override() {
        assert_eq!(
            override_from_cmdline("console=ttyS0 pvops=native"),
            Some("native")
        );
        assert_eq!(
            override_from_cmdline("pvops=xen pvops=vmware"),
            Some("vmware")
        );
        assert_eq!(override_from_cmdline("xpvops=xen"), None);
        assert_eq!(override_from_cmdline(""), None);
        assert_eq!(override_from_cmdline("pvops="), Some(""));
    }
}
