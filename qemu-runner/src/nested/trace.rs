//! L1 KVM's view of L2: its tracefs events (`events/kvm/kvm_exit`,
//! `kvm_msr`, `kvm_hypercall`, `kvm_hv_hypercall`, `kvm_xen_hypercall`),
//! counted into the runner's [`Exits`], and the TCG glitch watchdog.
//!
//! Why tracefs and not KVM's binary statistics over QMP from L2's QEMU:
//! the stats give totals per class, while the trace gives every exit with
//! its reason, RIP and exit information, so the same counts as the
//! microvisor's (per reason, per I/O port, per MSR, per hypercall code)
//! come out, and the watchdog can see an exit whose RIP lies in L1's own
//! KVM text. Formats: Linux `arch/x86/kvm/trace.h` (6.12).

use std::collections::BTreeMap;

use crate::parse::Exits;

/// What the trace shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// The counts.
    pub exits: Exits,
    /// `kvm_exit` RIP of the first shutdown exit (L2 triple fault), if any.
    pub shutdown_rip: Option<u64>,
    /// Exits whose RIP lies in L1's kvm/kvm_amd text: (RIP, module).
    pub glitches: Vec<(u64, String)>,
    /// Events the ring buffer lost (written minus kept).
    pub lost: u64,
    /// Number of `kvm_exit` events.
    pub exit_events: u64,
    /// `kvm_exit` events between each pair of I/O exits at the report
    /// card's mark port ([`pvops_abi::report::CARD_MARK_PORT`]), in order
    /// (the marks themselves not counted).
    pub marked: Vec<u64>,
}

/// A loaded L1 module's address range, from `/proc/modules`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Name.
    pub name: String,
    /// Load address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// `kvm` and `kvm_amd` of `/proc/modules` (`name size refs deps state addr`).
pub fn kvm_modules(proc_modules: &str) -> Vec<Module> {
    proc_modules
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let name = *w.first()?;
            if name != "kvm" && name != "kvm_amd" {
                return None;
            }
            let size = w.get(1)?.parse().ok()?;
            let base = u64::from_str_radix(w.last()?.strip_prefix("0x")?, 16).ok()?;
            (base != 0).then(|| Module {
                name: name.to_string(),
                base,
                size,
            })
        })
        .collect()
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

/// The value after `key` in whitespace-separated `words`.
fn after<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| *w == key)
        .and_then(|i| words.get(i + 1).copied())
}

/// Xen hypercall numbers whose first argument is a sub-command (Xen
/// public headers, xen.h `__HYPERVISOR_*`): memory_op 12, vcpu_op 24,
/// sched_op 29, event_channel_op 32, hvm_op 34. Their counter code is
/// `nr << 8 | cmd`, as the microvisor's xen persona counts them.
const XEN_MULTIPLEXED: [u64; 5] = [12, 24, 29, 32, 34];

/// Parses a `trace` file of L1's tracefs; `modules` are L1's KVM modules
/// for the watchdog.
pub fn parse(text: &str, modules: &[Module]) -> Trace {
    let mut t = Trace::default();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    // Exits since the last opening mark, while inside a marked loop.
    let mut inside: Option<u64> = None;
    for line in text.lines() {
        if let Some(rest) = line
            .trim()
            .strip_prefix("# entries-in-buffer/entries-written:")
        {
            let nums: Vec<u64> = rest
                .split(|c: char| c == '/' || c.is_whitespace())
                .filter_map(|n| n.parse().ok())
                .collect();
            if let [kept, written, ..] = nums[..] {
                t.lost = written.saturating_sub(kept);
            }
            continue;
        }
        let Some((_, event)) = line.split_once(": kvm_") else {
            continue;
        };
        let Some((name, args)) = event.split_once(": ") else {
            continue;
        };
        let w: Vec<&str> = args.split_whitespace().collect();
        match name {
            "exit" => {
                let Some(reason) = after(&w, "reason") else {
                    continue;
                };
                t.exit_events += 1;
                *reasons.entry(reason.to_string()).or_insert(0) += 1;
                let rip = after(&w, "rip").and_then(hex).unwrap_or(0);
                let mut mark = false;
                if reason == "io" {
                    // EXITINFO1 of an IOIO intercept: port in bits 31:16
                    // (AMD APM vol. 2, 15.10.2).
                    if let Some(info1) = after(&w, "info1").and_then(hex) {
                        let port = (info1 >> 16) as u16;
                        *t.exits.ports.entry(port).or_insert(0) += 1;
                        mark = port == pvops_abi::report::CARD_MARK_PORT;
                    }
                }
                // The report card's loops lie between two marks.
                match (mark, inside) {
                    (true, None) => inside = Some(0),
                    (true, Some(n)) => {
                        t.marked.push(n);
                        inside = None;
                    }
                    (false, Some(n)) => inside = Some(n + 1),
                    (false, None) => {}
                }
                if reason == "shutdown" && t.shutdown_rip.is_none() {
                    t.shutdown_rip = Some(rip);
                }
                if let Some(m) = modules
                    .iter()
                    .find(|m| rip >= m.base && rip < m.base.saturating_add(m.size))
                {
                    t.glitches.push((rip, m.name.clone()));
                }
            }
            "msr" => {
                // `msr_read 40000020 = 0x...` / `msr_write 80b = 0x0`.
                let (Some(dir), Some(msr)) = (w.first(), w.get(1).and_then(|m| hex(m))) else {
                    continue;
                };
                let c = t.exits.msrs.entry(msr as u32).or_default();
                match *dir {
                    "msr_read" => c.reads += 1,
                    "msr_write" => c.writes += 1,
                    _ => {}
                }
            }
            "hv_hypercall" => {
                if let Some(code) = after(&w, "code").and_then(hex) {
                    *t.exits.hypercalls.entry(code & 0xffff).or_insert(0) += 1;
                }
            }
            "xen_hypercall" => {
                if let Some(nr) = after(&w, "nr").and_then(hex) {
                    let code = if XEN_MULTIPLEXED.contains(&nr) {
                        nr << 8 | (after(&w, "a0").and_then(hex).unwrap_or(0) & 0xff)
                    } else {
                        nr << 8
                    };
                    *t.exits.hypercalls.entry(code).or_insert(0) += 1;
                }
            }
            "hypercall" => {
                if let Some(nr) = after(&w, "nr").and_then(hex) {
                    *t.exits.hypercalls.entry(nr).or_insert(0) += 1;
                }
            }
            _ => {}
        }
    }
    t.exits.total = reasons.values().sum();
    t.exits.reasons = reasons;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_loops() {
        let exit = |reason: &str, info1: u64| {
            format!(" q-1 [000] d..1. 1.0: kvm_exit: vcpu 0 reason {reason} rip 0x1 info1 {info1:#x} info2 0x0\n")
        };
        let mark = exit("io", 0x00ed_0010);
        let text = [
            exit("cpuid", 0),
            mark.clone(),
            mark.clone(),
            mark.clone(),
            exit("cpuid", 0),
            exit("io", 0x03f8_0010),
            mark.clone(),
            exit("msr", 1),
        ]
        .concat();
        let t = parse(&text, &[]);
        assert_eq!(t.marked, [0, 2]);
        assert_eq!(t.exits.ports.get(&0xed), Some(&4));
    }

    const TRACE: &str = "\
# tracer: nop
#
# entries-in-buffer/entries-written: 9/10   #P:1
 qemu-system-x86-162     [000] d..1.    24.506187: kvm_exit: vcpu 0 reason interrupt rip 0xfff0 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
 qemu-system-x86-162     [000] d..1.    24.524136: kvm_exit: vcpu 0 reason io rip 0xec16 info1 0x0000000003f80010 info2 0x000000000000ec18 intr_info 0x00000000 error_code 0x00000000
 qemu-system-x86-162     [000] d..1.    24.524136: kvm_exit: vcpu 0 reason io rip 0xec16 info1 0x0000000000610011 info2 0x000000000000ec18 intr_info 0x00000000 error_code 0x00000000
 qemu-system-x86-162     [000] d..1.    24.524136: kvm_exit: vcpu 0 reason msr rip 0x1000 info1 0x1 info2 0x0 intr_info 0x00000000 error_code 0x00000000
 qemu-system-x86-162     [000] .....    24.815530: kvm_msr: msr_write 80b = 0x0
 qemu-system-x86-162     [000] .....    24.975277: kvm_msr: msr_read 40000020 = 0x508
 qemu-system-x86-162     [000] .....    24.975277: kvm_hv_hypercall: code 0x2 fast 1 varhead 0 rep_cnt 0 idx 0 in 0x0 out 0x0
 qemu-system-x86-162     [000] .....    24.975277: kvm_xen_hypercall: cpl 0 nr 0x1d a0 0x2 a1 0x0 a2 0x0 a3 0x0 a4 0x0 a5 0x0
 qemu-system-x86-162     [000] d..1.    24.524136: kvm_exit: vcpu 0 reason shutdown rip 0xffffffffc07dd100 info1 0x0 info2 0x0 intr_info 0x00000000 error_code 0x00000000
";

    #[test]
    fn counts_like_the_microvisor() {
        let mods = kvm_modules(
            "kvm_amd 217088 0 - Live 0xffffffffc07dd000\nkvm 1392640 1 kvm_amd, Live 0xffffffffc0659000\nfoo 1 0 - Live 0x0\n",
        );
        assert_eq!(mods.len(), 2);
        let t = parse(TRACE, &mods);
        assert_eq!(t.lost, 1);
        assert_eq!(t.exits.total, 5);
        assert_eq!(t.exits.reason("io"), 2);
        assert_eq!(t.exits.console(), 1);
        assert_eq!(t.exits.pit(), 1);
        assert_eq!(t.exits.msrs[&0x80b].writes, 1);
        assert_eq!(t.exits.msrs[&0x4000_0020].reads, 1);
        assert_eq!(t.exits.eoi(), 1);
        assert_eq!(t.exits.hypercalls[&2], 1);
        assert_eq!(t.exits.hypercalls[&0x1d02], 1);
        assert_eq!(t.shutdown_rip, Some(0xffff_ffff_c07d_d100));
        assert_eq!(
            t.glitches,
            vec![(0xffff_ffff_c07d_d100, "kvm_amd".to_string())]
        );
    }

    #[test]
    fn empty_and_garbage() {
        let t = parse("garbage\n: kvm_exit: nothing\n", &[]);
        assert_eq!(t, Trace::default());
    }
}
