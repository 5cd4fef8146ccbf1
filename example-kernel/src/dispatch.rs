//! Patched call sites: the kernel lets pvops rewrite its text, and reports
//! the mechanism in force (`@@ dispatch`, one `@@ dispatch.entry` per entry).
//!
//! The kernel's page tables (bootkit's boot tables, then `paging`'s) map
//! the whole image writable, so `.text` is writable when the backend is
//! installed. `dispatch=table` on the command line keeps the table instead
//! (as a kernel with read-only text would).

use bootkit::{println, record};
use pvops::dispatch::{self, State};

/// Declares the kernel's text writable unless the command line says
/// `dispatch=table`. Call before `pvops_backends::init`.
pub fn allow(cmdline: &str) {
    if cmdline
        .split_ascii_whitespace()
        .any(|w| w == "dispatch=table")
    {
        return;
    }
    let text = bootkit::image::text();
    // SAFETY: `.text` of this image, mapped writable by every page table the
    // kernel uses (2 MiB identity pages with RW); only the boot CPU runs
    // until `install` (inside `pvops_backends::init`) returns.
    unsafe { dispatch::allow_patching(text.start as usize..text.end as usize) };
}

/// The human line and the records.
pub fn report() {
    let s = dispatch::summary();
    match s.state {
        State::Patched => {
            println!(
                "Dispatch: patched call sites: {} ({} inline, {} direct, {} refused)",
                s.sites.total(),
                s.sites.inline,
                s.sites.direct,
                s.sites.indirect
            );
            record!(
                "dispatch",
                mechanism = "patched",
                sites = s.sites.total(),
                inline = s.sites.inline,
                direct = s.sites.direct,
                refused = s.sites.indirect
            );
        }
        State::Table(reason) => {
            println!("Dispatch: through the table ({reason})");
            record!(
                "dispatch",
                mechanism = "table",
                sites = s.sites.total(),
                reason = reason
            );
        }
        State::NotInstalled => {
            println!("Dispatch: through the table (no backend installed)");
            record!(
                "dispatch",
                mechanism = "table",
                sites = 0,
                reason = "not installed"
            );
        }
    }
    for (entry, m) in dispatch::mechanisms() {
        let c = dispatch::sites(entry);
        record!(
            "dispatch.entry",
            entry = entry.name(),
            owner = pvops::owner(entry),
            mechanism = m.name(),
            sites = c.total(),
            inline = c.inline,
            direct = c.direct,
            indirect = c.indirect
        );
    }
}
