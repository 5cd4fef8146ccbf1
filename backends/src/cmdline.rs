//! The `pvops=<name>` kernel command-line option.

/// The backend name given by `pvops=<name>` on `cmdline`, if any (the last
/// occurrence wins, as with Linux's early parameters).
pub fn override_from_cmdline(cmdline: &str) -> Option<&str> {
    cmdline
        .split_ascii_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("pvops="))
}

#[cfg(test)]
mod tests {
    use super::*;

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
