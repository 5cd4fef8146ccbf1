//! Synthetic timers in direct mode (TLFS, Timers: Synthetic Timers,
//! Synthetic Timer Configuration Register, Direct Synthetic Timers).
//!
//! - CONFIG with RsvdZ bits set: #GP. Enabling needs a non-zero count; a
//!   timer in message mode (DirectMode clear) would need the SynIC, which
//!   this persona does not offer (no AccessSynicRegs), so it stays disabled.
//! - COUNT = 0 stops the timer (Enable cleared); a non-zero COUNT with
//!   AutoEnable sets Enable. One-shot: COUNT is the absolute expiry in
//!   reference time, a time already past fires at once; periodic: COUNT is
//!   the period (at least [`MIN_PERIOD`]).
//! - On expiry in direct mode the timer's vector is raised at the local
//!   APIC as a fixed, edge-triggered interrupt; a one-shot timer then clears
//!   its Enable bit; a periodic one re-arms from its previous expiry
//!   (missed periods coalesce, like a periodic APIC timer's).
//!
//! Deadlines are kept in host TSC ticks, computed with the exact inverse of
//! the reference formula, so a timer never fires before the reference time
//! (MSR or TSC page) reaches its COUNT.

use super::refclock::RefClock;
use crate::guest::Gp;
use pvops_abi::hyperv::StimerConfig;

/// The shortest period a periodic timer gets, in 100 ns units (50 µs):
/// shorter ones would keep the vCPU in interrupt delivery.
pub const MIN_PERIOD: u64 = 500;

/// One synthetic timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stimer {
    config: u64,
    count: u64,
    /// Reference time of the next expiry (periodic and one-shot).
    expiry: u64,
    /// Host TSC of the next expiry, when armed.
    deadline: Option<u64>,
    /// Expirations delivered.
    pub fires: u64,
}

impl Stimer {
    /// HV_X64_MSR_STIMERn_CONFIG.
    pub fn config(&self) -> u64 {
        self.config
    }

    /// HV_X64_MSR_STIMERn_COUNT.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Host TSC of the next expiry.
    pub fn deadline(&self) -> Option<u64> {
        self.deadline
    }

    fn cfg(&self) -> StimerConfig {
        StimerConfig(self.config)
    }

    /// WRMSR CONFIG.
    pub fn write_config(&mut self, value: u64, clock: &RefClock, now: u64) -> Result<(), Gp> {
        if value & StimerConfig::RESERVED_MASK != 0 {
            return Err(Gp);
        }
        self.config = value;
        self.update(clock, now);
        Ok(())
    }

    /// WRMSR COUNT.
    pub fn write_count(&mut self, value: u64, clock: &RefClock, now: u64) {
        self.count = value;
        if value != 0 && self.cfg().has(StimerConfig::AUTO_ENABLE) {
            self.config |= StimerConfig::ENABLE;
        }
        self.update(clock, now);
    }

    /// Applies CONFIG and COUNT: disables what cannot run, arms the rest.
    fn update(&mut self, clock: &RefClock, now: u64) {
        let c = self.cfg();
        if !c.has(StimerConfig::ENABLE) {
            self.deadline = None;
            return;
        }
        if self.count == 0 || !c.has(StimerConfig::DIRECT_MODE) {
            self.config &= !StimerConfig::ENABLE;
            self.deadline = None;
            return;
        }
        self.expiry = if c.has(StimerConfig::PERIODIC) {
            clock.at(now).saturating_add(self.count.max(MIN_PERIOD))
        } else {
            self.count
        };
        self.deadline = Some(clock.tsc_for(self.expiry));
    }

    /// Fires the timer if due; returns the vector to raise.
    pub fn poll(&mut self, clock: &RefClock, now: u64) -> Option<u8> {
        let d = self.deadline?;
        if now < d {
            return None;
        }
        let c = self.cfg();
        self.fires += 1;
        if c.has(StimerConfig::PERIODIC) {
            let period = self.count.max(MIN_PERIOD);
            let now_ref = clock.at(now);
            let missed = now_ref.saturating_sub(self.expiry) / period;
            self.expiry = self
                .expiry
                .saturating_add(missed.saturating_add(1).saturating_mul(period));
            self.deadline = Some(clock.tsc_for(self.expiry));
        } else {
            self.config &= !StimerConfig::ENABLE;
            self.deadline = None;
        }
        Some(c.vector())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> RefClock {
        let mut c = RefClock::new(1_000_000); // 1 GHz: 100 TSC ticks per unit.
        c.start(0);
        c
    }

    #[test]
    fn one_shot_auto_enable_fires_once_at_the_absolute_count() {
        let c = clock();
        let mut t = Stimer::default();
        t.write_config(StimerConfig::direct_one_shot(0xEC).0, &c, 0)
            .unwrap();
        assert_eq!(t.deadline(), None);
        t.write_count(1000, &c, 0);
        assert!(t.config() & StimerConfig::ENABLE != 0);
        let d = t.deadline().unwrap();
        assert!(c.at(d) >= 1000);
        assert_eq!(t.poll(&c, d - 1), None);
        assert_eq!(t.poll(&c, d), Some(0xEC));
        assert_eq!(t.config() & StimerConfig::ENABLE, 0);
        assert_eq!(t.poll(&c, d + 10_000), None);
    }

    #[test]
    fn count_zero_cancels_and_past_times_fire_at_once() {
        let c = clock();
        let mut t = Stimer::default();
        t.write_config(StimerConfig::direct_one_shot(0x40).0, &c, 0)
            .unwrap();
        t.write_count(500, &c, 0);
        t.write_count(0, &c, 1);
        assert_eq!(t.deadline(), None);
        assert_eq!(t.config() & StimerConfig::ENABLE, 0);
        t.write_count(5, &c, 1_000_000);
        assert_eq!(t.poll(&c, 1_000_000), Some(0x40));
    }

    #[test]
    fn reserved_bits_and_message_mode() {
        let c = clock();
        let mut t = Stimer::default();
        assert_eq!(t.write_config(1 << 13, &c, 0), Err(Gp));
        // Message mode (no DirectMode) with Enable: stays disabled.
        t.write_count(100, &c, 0);
        t.write_config(StimerConfig::ENABLE | 1 << 16, &c, 0)
            .unwrap();
        assert_eq!(t.config() & StimerConfig::ENABLE, 0);
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn periodic_rearms_and_coalesces() {
        let c = clock();
        let mut t = Stimer::default();
        let cfg = StimerConfig::DIRECT_MODE
            | StimerConfig::PERIODIC
            | StimerConfig::ENABLE
            | 0x33 << StimerConfig::VECTOR_SHIFT;
        t.write_count(10_000, &c, 0);
        t.write_config(cfg, &c, 0).unwrap();
        let d = t.deadline().unwrap();
        assert_eq!(t.poll(&c, d), Some(0x33));
        let d2 = t.deadline().unwrap();
        assert!(d2 > d);
        // Three periods late: one interrupt, next expiry in the future.
        assert_eq!(t.poll(&c, d2 + 3 * 1_000_000), Some(0x33));
        assert!(t.deadline().unwrap() > d2 + 3 * 1_000_000);
    }
}
