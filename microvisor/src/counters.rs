//! Exit accounting: counts per exit reason, per MSR (reads and writes), per
//! I/O port and per hypercall code, in fixed-size tables (no heap).
//!
//! Two sets are kept: the lifetime set printed at the end of the run, and a
//! window the guest can reset and read through the microvisor hypercall
//! (`pvops_abi::microvisor`). Every exit is counted in both, when the exit
//! is taken and before it is handled. Both exist in total (over all
//! vCPUs) and per vCPU (the one [`Accounting::current`] names).

use crate::config::MAX_VCPUS;
use crate::svm::vmcb::exit;
use pvops_abi::microvisor::{class, ExitSnapshot};

/// One key with up to two counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Entry {
    /// The key (exit code, MSR, port, hypercall code).
    pub key: u64,
    /// First count (total; MSR reads).
    pub a: u64,
    /// Second count (MSR writes).
    pub b: u64,
}

/// A small insertion-ordered map from keys to counts. Keys beyond the
/// capacity are folded into `overflow`.
#[derive(Clone, Copy, Debug)]
pub struct Table<const N: usize> {
    entries: [Entry; N],
    len: usize,
    /// Counts that did not fit.
    pub overflow: u64,
}

impl<const N: usize> Table<N> {
    const fn new() -> Self {
        Table {
            entries: [Entry { key: 0, a: 0, b: 0 }; N],
            len: 0,
            overflow: 0,
        }
    }

    fn slot(&mut self, key: u64) -> Option<&mut Entry> {
        let len = self.len;
        if let Some(i) = self.entries[..len].iter().position(|e| e.key == key) {
            return Some(&mut self.entries[i]);
        }
        if len == N {
            return None;
        }
        self.len += 1;
        self.entries[len] = Entry { key, a: 0, b: 0 };
        Some(&mut self.entries[len])
    }

    fn bump(&mut self, key: u64, second: bool) {
        match self.slot(key) {
            Some(e) if second => e.b += 1,
            Some(e) => e.a += 1,
            None => self.overflow += 1,
        }
    }

    /// The entries in first-seen order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries[..self.len]
    }

    /// Count(s) for `key`: `a + b`.
    pub fn get(&self, key: u64) -> u64 {
        self.entries()
            .iter()
            .find(|e| e.key == key)
            .map_or(0, |e| e.a + e.b)
    }
}

/// One set of counters.
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    /// Every exit.
    pub total: u64,
    /// By SVM exit code.
    pub reasons: Table<48>,
    /// By MSR index (a = reads, b = writes).
    pub msrs: Table<96>,
    /// By I/O port.
    pub ports: Table<96>,
    /// By hypercall code.
    pub hypercalls: Table<64>,
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

impl Counters {
    /// All zero.
    pub const fn new() -> Self {
        Counters {
            total: 0,
            reasons: Table::new(),
            msrs: Table::new(),
            ports: Table::new(),
            hypercalls: Table::new(),
        }
    }

    /// The class totals the guest can copy out.
    pub fn snapshot(&self) -> ExitSnapshot {
        let r = |c| self.reasons.get(c);
        let known = [
            exit::CPUID,
            exit::MSR,
            exit::IOIO,
            exit::HLT,
            exit::VMMCALL,
            exit::INTR,
            exit::VINTR,
            exit::NPF,
        ];
        let known_sum: u64 = known.iter().map(|&c| r(c)).sum();
        ExitSnapshot {
            total: self.total,
            cpuid: r(exit::CPUID),
            msr: r(exit::MSR),
            io: r(exit::IOIO),
            hlt: r(exit::HLT),
            vmmcall: r(exit::VMMCALL),
            intr: r(exit::INTR),
            vintr: r(exit::VINTR),
            npf: r(exit::NPF),
            other: self.total - known_sum,
        }
    }

    /// One counter by class and key (`pvops_abi::microvisor::class`).
    pub fn read(&self, cls: u64, key: u64) -> Option<u64> {
        Some(match cls {
            class::EXIT_REASON => self.reasons.get(key),
            class::MSR => self.msrs.get(key),
            class::PORT => self.ports.get(key),
            class::HYPERCALL => self.hypercalls.get(key),
            _ => return None,
        })
    }
}

/// One vCPU's share of the counters.
#[derive(Clone, Copy, Debug)]
pub struct VcpuCounters {
    /// Since the start of the run.
    pub lifetime: Counters,
    /// Since the guest's last reset.
    pub window: Counters,
}

/// Lifetime counters plus the guest-resettable window, in total and per
/// vCPU.
#[derive(Debug)]
pub struct Accounting {
    /// Since the start of the run (printed at the end), all vCPUs.
    pub lifetime: Counters,
    /// Since the guest's last reset, all vCPUs.
    pub window: Counters,
    /// The vCPU whose exits are being counted (the one running).
    pub current: usize,
    /// Per vCPU.
    pub vcpus: [VcpuCounters; MAX_VCPUS],
}

impl Default for Accounting {
    fn default() -> Self {
        Self::new()
    }
}

impl Accounting {
    /// All zero.
    pub const fn new() -> Self {
        Accounting {
            lifetime: Counters::new(),
            window: Counters::new(),
            current: 0,
            vcpus: [VcpuCounters {
                lifetime: Counters::new(),
                window: Counters::new(),
            }; MAX_VCPUS],
        }
    }

    fn each(&mut self, f: impl Fn(&mut Counters)) {
        f(&mut self.lifetime);
        f(&mut self.window);
        if let Some(v) = self.vcpus.get_mut(self.current) {
            f(&mut v.lifetime);
            f(&mut v.window);
        }
    }

    /// Counts one exit by SVM exit code.
    pub fn exit(&mut self, code: u64) {
        self.each(|c| {
            c.total += 1;
            c.reasons.bump(code, false);
        });
    }

    /// Counts an intercepted MSR access.
    pub fn msr(&mut self, msr: u32, write: bool) {
        self.each(|c| c.msrs.bump(msr as u64, write));
    }

    /// Counts an intercepted port access.
    pub fn port(&mut self, port: u16) {
        self.each(|c| c.ports.bump(port as u64, false));
    }

    /// Counts a hypercall by code.
    pub fn hypercall(&mut self, code: u64) {
        self.each(|c| c.hypercalls.bump(code, false));
    }

    /// Clears the guest's window, the total's and every vCPU's.
    pub fn reset_window(&mut self) {
        self.window = Counters::new();
        for v in &mut self.vcpus {
            v.window = Counters::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_window() {
        let mut a = Accounting::new();
        a.exit(exit::CPUID);
        a.exit(exit::MSR);
        a.msr(0x1B, false);
        a.exit(exit::MSR);
        a.msr(0x1B, true);
        a.exit(exit::IOIO);
        a.port(0x3F8);
        a.exit(0x7D);
        assert_eq!(a.lifetime.total, 5);
        let e = a.lifetime.msrs.entries()[0];
        assert_eq!((e.key, e.a, e.b), (0x1B, 1, 1));
        assert_eq!(a.window.read(class::MSR, 0x1B), Some(2));
        assert_eq!(a.window.read(class::EXIT_REASON, exit::MSR), Some(2));
        assert_eq!(a.window.read(class::PORT, 0x3F8), Some(1));
        assert_eq!(a.window.read(9, 0), None);
        let s = a.window.snapshot();
        assert_eq!((s.total, s.cpuid, s.msr, s.io, s.other), (5, 1, 2, 1, 1));
        a.reset_window();
        assert_eq!(a.window.total, 0);
        assert_eq!(a.window.read(class::MSR, 0x1B), Some(0));
        assert_eq!(a.lifetime.total, 5, "lifetime survives resets");
    }

    #[test]
    fn per_vcpu_and_total() {
        let mut a = Accounting::new();
        a.exit(exit::CPUID);
        a.current = 2;
        a.exit(exit::HLT);
        a.exit(exit::MSR);
        a.msr(0x830, true);
        a.current = 0;
        a.exit(exit::IOIO);
        assert_eq!(a.lifetime.total, 4);
        assert_eq!(a.vcpus[0].lifetime.total, 2);
        assert_eq!(a.vcpus[2].lifetime.total, 2);
        assert_eq!(a.vcpus[1].lifetime.total, 0);
        let s2 = a.vcpus[2].window.snapshot();
        assert_eq!((s2.total, s2.hlt, s2.msr, s2.cpuid), (2, 1, 1, 0));
        assert_eq!(a.vcpus[2].window.read(class::MSR, 0x830), Some(1));
        let sum: u64 = a.vcpus.iter().map(|v| v.lifetime.total).sum();
        assert_eq!(sum, a.lifetime.total, "the vCPUs add up to the total");
        a.reset_window();
        assert_eq!(a.window.total, 0);
        assert!(a.vcpus.iter().all(|v| v.window.total == 0));
        assert_eq!(a.vcpus[2].lifetime.total, 2, "lifetime survives resets");
        // An index past the table counts in the total only (never panics).
        a.current = MAX_VCPUS;
        a.exit(exit::CPUID);
        assert_eq!(a.lifetime.total, 5);
    }

    #[test]
    fn overflow_is_counted() {
        let mut a = Accounting::new();
        for p in 0..200u16 {
            a.port(p);
        }
        assert_eq!(a.lifetime.ports.entries().len(), 96);
        assert_eq!(a.lifetime.ports.overflow, 104);
    }
}
