//! The guest's virtual local APICs (one per vCPU), offered in x2APIC mode
//! only (MSRs 0x800..0x8FF), so no access needs an instruction decoder.
//! An ICR write is only decoded here as far as the sender's own state
//! goes (the ESR); the vCPU code delivers it ([`crate::ipi`]).
//!
//! Semantics follow the Intel SDM vol. 3A, chapter 11 ("Advanced
//! Programmable Interrupt Controller"): 11.12 (x2APIC MSR map, table
//! 11-6; #GP rules in 11.12.1.2), 11.5.4 (timer: one-shot, periodic,
//! TSC-deadline), 11.8 (IRR/ISR/PPR, EOI), 11.6 (ICR, self-IPI).
//!
//! Time: the timer counts at a nominal 1 GHz bus clock (QEMU's own APIC
//! timer rate) divided by the divide configuration; deadlines are kept in
//! host TSC ticks (the guest runs with TSC_OFFSET = 0).

/// IA32_APIC_BASE.
pub const MSR_APIC_BASE: u32 = 0x1B;
/// IA32_TSC_DEADLINE.
pub const MSR_TSC_DEADLINE: u32 = 0x6E0;
/// First and last x2APIC MSR.
pub const X2APIC_FIRST: u32 = 0x800;
/// Last x2APIC MSR.
pub const X2APIC_LAST: u32 = 0x8FF;

const BASE_BSP: u64 = 1 << 8;
const BASE_EXTD: u64 = 1 << 10;
const BASE_EN: u64 = 1 << 11;
const BASE_ADDR: u64 = 0xFEE0_0000;
const LVT_MASK: u32 = 1 << 16;
const TIMER_MODE_SHIFT: u32 = 17;
const TIMER_PERIODIC: u32 = 1;
const TIMER_TSC_DEADLINE: u32 = 2;
/// APIC version register: version 0x14, max LVT entry 5 (six LVTs), as
/// QEMU's own APIC reports.
const VERSION: u32 = 0x0005_0014;
/// Nominal APIC bus clock in kHz (1 GHz).
pub const BUS_KHZ: u64 = 1_000_000;
/// Shortest period of the periodic timer, in microseconds: a shorter one
/// is stretched to this. The rule is KVM's (`min_timer_period_us`,
/// arch/x86/kvm/x86.c, applied by `limit_periodic_timer_frequency` in
/// lapic.c); KVM's default is 200 us on hardware, this is 1 ms because
/// under TCG one interrupt's exits take tens to hundreds of microseconds
/// (1 ms is also the fastest periodic tick Linux asks for, HZ=1000).
/// Without a floor a guest programming initial count 1 (a 1 ns period) is
/// interrupted again before its handler's IRET reaches the next
/// instruction: it livelocks, and as every delivered interrupt counts as
/// progress no watchdog ends the run (`microvisor:fault-timer-storm`,
/// docs/hostile-guests.md).
pub const MIN_PERIOD_US: u64 = 1000;
/// ESR bit 5: send illegal vector; bit 6: receive illegal vector.
const ESR_SEND_ILLEGAL: u32 = 1 << 5;

use crate::guest::Gp;

/// Register offsets (x2APIC MSR = 0x800 + offset / 16).
mod reg {
    pub const ID: u32 = 0x802;
    pub const VERSION: u32 = 0x803;
    pub const TPR: u32 = 0x808;
    pub const PPR: u32 = 0x80A;
    pub const EOI: u32 = 0x80B;
    pub const LDR: u32 = 0x80D;
    pub const SVR: u32 = 0x80F;
    pub const ISR0: u32 = 0x810;
    pub const TMR0: u32 = 0x818;
    pub const IRR0: u32 = 0x820;
    pub const ESR: u32 = 0x828;
    pub const LVT_CMCI: u32 = 0x82F;
    pub const ICR: u32 = 0x830;
    pub const LVT_TIMER: u32 = 0x832;
    pub const LVT_THERMAL: u32 = 0x833;
    pub const LVT_PMC: u32 = 0x834;
    pub const LVT_LINT0: u32 = 0x835;
    pub const LVT_LINT1: u32 = 0x836;
    pub const LVT_ERROR: u32 = 0x837;
    pub const INIT_COUNT: u32 = 0x838;
    pub const CUR_COUNT: u32 = 0x839;
    pub const DIVIDE: u32 = 0x83E;
    pub const SELF_IPI: u32 = 0x83F;
}

/// A 256-bit vector register (IRR, ISR, TMR).
#[derive(Clone, Copy, Debug, Default)]
struct Bits([u32; 8]);

impl Bits {
    fn set(&mut self, v: u8) {
        self.0[v as usize / 32] |= 1 << (v % 32);
    }
    fn clear(&mut self, v: u8) {
        self.0[v as usize / 32] &= !(1 << (v % 32));
    }
    fn highest(&self) -> Option<u8> {
        (0..8)
            .rev()
            .find(|&i| self.0[i] != 0)
            .map(|i| (i * 32 + 31 - self.0[i].leading_zeros() as usize) as u8)
    }
}

/// The virtual local APIC of one vCPU.
#[derive(Debug)]
pub struct VApic {
    /// x2APIC ID (the vCPU's index).
    id: u32,
    /// The ICR value the guest wrote last, until the vCPU code delivers it.
    outbox: Option<u64>,
    apic_base: u64,
    tpr: u32,
    svr: u32,
    esr: u32,
    esr_pending: u32,
    lvt_timer: u32,
    lvt: [u32; 6], // CMCI, thermal, PMC, LINT0, LINT1, error
    divide: u32,
    initial_count: u32,
    irr: Bits,
    isr: Bits,
    /// Host TSC at which the timer fires next, if armed.
    deadline: Option<u64>,
    /// Host TSC at which the current one-shot/periodic count started.
    count_start: u64,
    /// Guest-written IA32_TSC_DEADLINE (TSC-deadline mode only).
    tsc_deadline: u64,
    tsc_khz: u64,
    /// Timer interrupts raised (for statistics and the watchdog).
    pub timer_fires: u64,
    /// EOIs written with nothing in service (a guest EOI-ing an interrupt
    /// that never went through the APIC).
    pub idle_eois: u64,
}

impl VApic {
    /// Power-on state (SDM 11.4.7.1) of the boot CPU (APIC ID 0): xAPIC
    /// enabled, BSP, all LVTs masked.
    pub fn new(tsc_khz: u64) -> Self {
        Self::with_id(tsc_khz, 0)
    }

    /// Power-on state of the APIC with x2APIC ID `id`; ID 0 is the boot
    /// CPU (IA32_APIC_BASE.BSP set), every other an AP.
    pub fn with_id(tsc_khz: u64, id: u32) -> Self {
        let bsp = if id == 0 { BASE_BSP } else { 0 };
        VApic {
            id,
            outbox: None,
            apic_base: BASE_ADDR | BASE_EN | bsp,
            tpr: 0,
            svr: 0xFF,
            esr: 0,
            esr_pending: 0,
            lvt_timer: LVT_MASK,
            lvt: [LVT_MASK; 6],
            divide: 0,
            initial_count: 0,
            irr: Bits::default(),
            isr: Bits::default(),
            deadline: None,
            count_start: 0,
            tsc_deadline: 0,
            tsc_khz: tsc_khz.max(1),
            timer_fires: 0,
            idle_eois: 0,
        }
    }

    /// Whether the guest switched the APIC to x2APIC mode.
    pub fn x2apic(&self) -> bool {
        self.apic_base & (BASE_EN | BASE_EXTD) == BASE_EN | BASE_EXTD
    }

    fn timer_mode(&self) -> u32 {
        (self.lvt_timer >> TIMER_MODE_SHIFT) & 3
    }

    /// Divisor from the divide configuration register (SDM figure 11-10).
    fn divisor(&self) -> u64 {
        let d = (self.divide & 3) | ((self.divide >> 1) & 4);
        if d == 7 {
            1
        } else {
            2 << d
        }
    }

    /// Host TSC ticks for `count` timer ticks.
    fn count_to_tsc(&self, count: u64) -> u64 {
        ((count as u128 * self.divisor() as u128 * self.tsc_khz as u128) / BUS_KHZ as u128) as u64
    }

    /// Host TSC ticks of one period of the periodic timer (at least
    /// [`MIN_PERIOD_US`]).
    fn period_tsc(&self) -> u64 {
        let floor = self.tsc_khz * MIN_PERIOD_US / 1000;
        self.count_to_tsc(self.initial_count as u64)
            .max(floor)
            .max(1)
    }

    fn tsc_to_count(&self, tsc: u64) -> u64 {
        (tsc as u128 * BUS_KHZ as u128 / (self.tsc_khz as u128 * self.divisor() as u128)) as u64
    }

    /// Processor priority (SDM 11.8.3.1).
    fn ppr(&self) -> u32 {
        let isrv = self.isr.highest().map_or(0, |v| v as u32);
        if (self.tpr & 0xF0) >= (isrv & 0xF0) {
            self.tpr & 0xFF
        } else {
            isrv & 0xF0
        }
    }

    /// Sets `vector` in the IRR, as an interrupt arriving at this APIC does
    /// (vectors below 16 are illegal and set the error status instead).
    pub fn raise(&mut self, vector: u8) {
        if vector < 16 {
            self.error(1 << 6);
            return;
        }
        self.irr.set(vector);
    }

    fn error(&mut self, bit: u32) {
        self.esr_pending |= bit;
        let lvt = self.lvt[5];
        if lvt & LVT_MASK == 0 && (lvt & 0xFF) >= 16 {
            self.irr.set(lvt as u8);
        }
    }

    /// The timer's next deadline in host TSC ticks.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// Fires the timer if its deadline has passed. Returns true if it fired.
    pub fn poll(&mut self, now: u64) -> bool {
        let Some(d) = self.deadline else { return false };
        if now < d {
            return false;
        }
        match self.timer_mode() {
            TIMER_PERIODIC if self.initial_count != 0 => {
                // Re-arm from the previous deadline, not from `now`, so no tick
                // is lost or added; ticks that passed while the guest could not
                // take them coalesce in the IRR, as on hardware.
                // A whole period or more late, the guest gets a whole period
                // from now before the next tick: a guest slower than its
                // timer (its handler alone outlasting the period, as under
                // TCG on a loaded host) still runs between interrupts.
                let period = self.period_tsc();
                let missed = (now - d) / period;
                self.count_start = if missed == 0 { d } else { now };
                self.deadline = Some(self.count_start + period);
            }
            TIMER_TSC_DEADLINE => {
                self.tsc_deadline = 0;
                self.deadline = None;
            }
            _ => self.deadline = None,
        }
        self.timer_fires += 1;
        if self.lvt_timer & LVT_MASK == 0 {
            self.raise(self.lvt_timer as u8);
        }
        true
    }

    /// The vector to deliver next, if any beats the processor priority.
    pub fn pending(&self) -> Option<u8> {
        if self.apic_base & BASE_EN == 0 {
            return None;
        }
        let v = self.irr.highest()?;
        (v as u32 & 0xF0 > self.ppr() & 0xF0).then_some(v)
    }

    /// End of interrupt: retires the highest in-service vector (SDM 11.8.5).
    pub fn eoi(&mut self) {
        match self.isr.highest() {
            Some(top) => self.isr.clear(top),
            None => self.idle_eois += 1,
        }
    }

    /// Withdraws a requested `vector` from the IRR (a level-like source
    /// that stopped asserting before the guest took it).
    pub fn withdraw(&mut self, vector: u8) {
        self.irr.clear(vector);
    }

    /// Clears `vector` from the ISR without an EOI: for an interrupt the
    /// microvisor injects directly, bypassing the APIC (Xen's callback-via
    /// vector, `hvm_intack_vector`), which leaves nothing in service.
    pub fn bypass(&mut self, vector: u8) {
        self.isr.clear(vector);
    }

    /// The highest in-service vector, if any.
    pub fn in_service(&self) -> Option<u8> {
        self.isr.highest()
    }

    /// The highest requested (IRR) vector, if any, whatever the priority.
    pub fn requested(&self) -> Option<u8> {
        self.irr.highest()
    }

    /// The guest took `vector`: IRR to ISR (SDM 11.8.4).
    pub fn accept(&mut self, vector: u8) {
        self.irr.clear(vector);
        self.isr.set(vector);
    }

    /// RDMSR of an APIC MSR (0x1B, 0x6E0, 0x800..0x8FF).
    pub fn rdmsr(&mut self, msr: u32, now: u64) -> Result<u64, Gp> {
        if msr == MSR_APIC_BASE {
            return Ok(self.apic_base);
        }
        if msr == MSR_TSC_DEADLINE {
            return Ok(if self.timer_mode() == TIMER_TSC_DEADLINE {
                self.tsc_deadline
            } else {
                0
            });
        }
        if !self.x2apic() {
            return Err(Gp);
        }
        Ok(match msr {
            reg::ID => self.id as u64,
            reg::VERSION => VERSION as u64,
            reg::TPR => self.tpr as u64,
            reg::PPR => self.ppr() as u64,
            // Derived from the x2APIC ID (SDM 11.12.10.2).
            reg::LDR => crate::ipi::logical_id(self.id) as u64,
            reg::SVR => self.svr as u64,
            r @ reg::ISR0..=0x817 => self.isr.0[(r - reg::ISR0) as usize] as u64,
            reg::TMR0..=0x81F => 0,
            r @ reg::IRR0..=0x827 => self.irr.0[(r - reg::IRR0) as usize] as u64,
            reg::ESR => self.esr as u64,
            reg::LVT_CMCI => self.lvt[0] as u64,
            reg::ICR => 0,
            reg::LVT_TIMER => self.lvt_timer as u64,
            reg::LVT_THERMAL => self.lvt[1] as u64,
            reg::LVT_PMC => self.lvt[2] as u64,
            reg::LVT_LINT0 => self.lvt[3] as u64,
            reg::LVT_LINT1 => self.lvt[4] as u64,
            reg::LVT_ERROR => self.lvt[5] as u64,
            reg::INIT_COUNT => self.initial_count as u64,
            reg::CUR_COUNT => self.current_count(now) as u64,
            reg::DIVIDE => self.divide as u64,
            // EOI and SELF IPI are write-only; everything else is reserved.
            _ => return Err(Gp),
        })
    }

    fn current_count(&self, now: u64) -> u32 {
        match (self.timer_mode(), self.deadline) {
            (TIMER_TSC_DEADLINE, _) | (_, None) => 0,
            (_, Some(d)) => {
                let left = self.tsc_to_count(d.saturating_sub(now));
                left.min(self.initial_count as u64) as u32
            }
        }
    }

    /// WRMSR of an APIC MSR (0x1B, 0x6E0, 0x800..0x8FF).
    pub fn wrmsr(&mut self, msr: u32, value: u64, now: u64) -> Result<(), Gp> {
        if msr == MSR_APIC_BASE {
            return self.write_base(value);
        }
        if msr == MSR_TSC_DEADLINE {
            if self.timer_mode() == TIMER_TSC_DEADLINE {
                self.tsc_deadline = value;
                self.deadline = (value != 0).then_some(value);
            }
            return Ok(());
        }
        if !self.x2apic() {
            return Err(Gp);
        }
        // x2APIC registers other than ICR are 32 bits; reserved high bits #GP.
        if msr != reg::ICR && value >> 32 != 0 {
            return Err(Gp);
        }
        let v = value as u32;
        match msr {
            reg::TPR => self.tpr = v & 0xFF,
            reg::EOI => {
                if v != 0 {
                    return Err(Gp);
                }
                self.eoi();
            }
            reg::SVR => {
                self.svr = v & 0x11FF;
                if v & 0x100 == 0 {
                    // Software disable masks every LVT (SDM 11.4.7.2).
                    self.lvt_timer |= LVT_MASK;
                    for l in &mut self.lvt {
                        *l |= LVT_MASK;
                    }
                }
            }
            reg::ESR => {
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            reg::ICR => self.write_icr(value),
            reg::LVT_TIMER => self.write_lvt_timer(v),
            reg::LVT_CMCI => self.lvt[0] = self.lvt_value(v),
            reg::LVT_THERMAL => self.lvt[1] = self.lvt_value(v),
            reg::LVT_PMC => self.lvt[2] = self.lvt_value(v),
            reg::LVT_LINT0 => self.lvt[3] = self.lvt_value(v),
            reg::LVT_LINT1 => self.lvt[4] = self.lvt_value(v),
            reg::LVT_ERROR => self.lvt[5] = self.lvt_value(v),
            reg::INIT_COUNT => {
                if self.timer_mode() != TIMER_TSC_DEADLINE {
                    self.initial_count = v;
                    self.count_start = now;
                    self.deadline = (v != 0).then(|| now + self.count_to_tsc(v as u64).max(1));
                }
            }
            reg::DIVIDE => self.divide = v & 0xB,
            reg::SELF_IPI => self.raise(v as u8),
            _ => return Err(Gp),
        }
        Ok(())
    }

    fn lvt_value(&self, v: u32) -> u32 {
        if self.svr & 0x100 == 0 {
            v | LVT_MASK
        } else {
            v
        }
    }

    fn write_lvt_timer(&mut self, v: u32) {
        let old_mode = self.timer_mode();
        self.lvt_timer = self.lvt_value(v & 0x7_10FF);
        if self.timer_mode() != old_mode {
            // A mode change disarms the timer (SDM 11.5.4.1).
            self.deadline = None;
            self.initial_count = 0;
            self.tsc_deadline = 0;
        }
    }

    /// An ICR write: a fixed IPI with an illegal vector (below 16) sets
    /// the sender's "send illegal vector" error and goes nowhere (SDM
    /// 11.5.3); anything else waits in the outbox for [`VApic::take_icr`].
    fn write_icr(&mut self, value: u64) {
        let vector = value as u8;
        let fixed = (value >> 8) & 7 <= 1;
        if fixed && vector < 16 {
            self.error(ESR_SEND_ILLEGAL);
            return;
        }
        self.outbox = Some(value);
    }

    /// The ICR value of the last IPI the guest sent, once.
    pub fn take_icr(&mut self) -> Option<u64> {
        self.outbox.take()
    }

    /// The x2APIC ID.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn write_base(&mut self, value: u64) -> Result<(), Gp> {
        // Reserved: bits 0..7, 9, and above 52 bits of address.
        if value & 0xFFF0_0000_0000_02FF != 0 {
            return Err(Gp);
        }
        let old = self.apic_base & (BASE_EN | BASE_EXTD);
        let new = value & (BASE_EN | BASE_EXTD);
        // Valid transitions, SDM 11.12.5 figure 11-26.
        let ok = match (old, new) {
            (a, b) if a == b => true,
            (_, 0) => true,
            (0, BASE_EN) => true,
            (BASE_EN, x) if x == BASE_EN | BASE_EXTD => true,
            _ => false,
        };
        if !ok {
            return Err(Gp);
        }
        if new == 0 {
            *self = VApic {
                apic_base: value | (self.apic_base & BASE_BSP),
                ..VApic::with_id(self.tsc_khz, self.id)
            };
        } else {
            self.apic_base = (value & !BASE_BSP) | (self.apic_base & BASE_BSP);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 GHz TSC: one TSC tick per nominal APIC bus tick.
    const KHZ: u64 = 1_000_000;

    fn x2apic() -> VApic {
        let mut a = VApic::new(KHZ);
        a.wrmsr(MSR_APIC_BASE, BASE_ADDR | BASE_EN | BASE_EXTD, 0)
            .unwrap();
        a.wrmsr(reg::SVR, 0x1FF, 0).unwrap();
        a
    }

    #[test]
    fn x2apic_registers_need_x2apic_mode() {
        let mut a = VApic::new(KHZ);
        assert_eq!(a.rdmsr(reg::ID, 0), Err(Gp));
        assert_eq!(a.wrmsr(reg::TPR, 0, 0), Err(Gp));
        a.wrmsr(MSR_APIC_BASE, BASE_ADDR | BASE_EN | BASE_EXTD, 0)
            .unwrap();
        assert_eq!(a.rdmsr(reg::ID, 0), Ok(0));
        assert_eq!(a.rdmsr(reg::VERSION, 0), Ok(0x50014));
        // x2APIC back to xAPIC is illegal; disabling is allowed.
        assert_eq!(a.wrmsr(MSR_APIC_BASE, BASE_ADDR | BASE_EN, 0), Err(Gp));
        assert_eq!(a.wrmsr(MSR_APIC_BASE, BASE_ADDR, 0), Ok(()));
        // EXTD without EN is invalid.
        assert_eq!(a.wrmsr(MSR_APIC_BASE, BASE_ADDR | BASE_EXTD, 0), Err(Gp));
    }

    #[test]
    fn access_rules() {
        let mut a = x2apic();
        assert_eq!(a.rdmsr(reg::EOI, 0), Err(Gp), "EOI is write-only");
        assert_eq!(a.wrmsr(reg::EOI, 1, 0), Err(Gp), "EOI takes only 0");
        assert_eq!(a.wrmsr(reg::ID, 5, 0), Err(Gp), "ID is read-only");
        assert_eq!(a.wrmsr(reg::CUR_COUNT, 5, 0), Err(Gp));
        assert_eq!(a.rdmsr(0x804, 0), Err(Gp), "reserved");
        assert_eq!(a.wrmsr(reg::TPR, 1 << 32, 0), Err(Gp), "high bits");
    }

    #[test]
    fn one_shot_fires_once_after_count() {
        let mut a = x2apic();
        a.wrmsr(reg::DIVIDE, 0xB, 0).unwrap(); // divide by 1
        a.wrmsr(reg::LVT_TIMER, 0x40, 0).unwrap();
        a.wrmsr(reg::INIT_COUNT, 1000, 100).unwrap();
        assert_eq!(a.next_deadline(), Some(1100));
        assert_eq!(a.rdmsr(reg::CUR_COUNT, 600), Ok(500));
        assert!(!a.poll(1099));
        assert_eq!(a.pending(), None);
        assert!(a.poll(1100));
        assert_eq!(a.pending(), Some(0x40));
        assert!(!a.poll(5000), "one-shot fires once");
        assert_eq!(a.rdmsr(reg::CUR_COUNT, 5000), Ok(0));
    }

    #[test]
    fn divide_configuration() {
        let mut a = x2apic();
        a.wrmsr(reg::LVT_TIMER, 0x40, 0).unwrap();
        a.wrmsr(reg::DIVIDE, 0b0011, 0).unwrap(); // divide by 16
        a.wrmsr(reg::INIT_COUNT, 10, 0).unwrap();
        assert_eq!(a.next_deadline(), Some(160));
    }

    #[test]
    fn periodic_rearms_from_the_previous_deadline() {
        let mut a = periodic_x2apic();
        a.wrmsr(reg::INIT_COUNT, 1_000_000, 0).unwrap();
        assert!(a.poll(1_000_030)); // late by 30
        assert_eq!(a.next_deadline(), Some(2_000_000), "no drift");
        assert!(a.poll(2_000_000));
        assert_eq!(a.next_deadline(), Some(3_000_000));
        assert_eq!(a.timer_fires, 2);
    }

    /// An x2APIC whose timer is periodic (vector 0x40, divide by 1), not
    /// yet started.
    fn periodic_x2apic() -> VApic {
        let mut a = x2apic();
        a.wrmsr(reg::DIVIDE, 0xB, 0).unwrap();
        a.wrmsr(
            reg::LVT_TIMER,
            (0x40 | TIMER_PERIODIC << TIMER_MODE_SHIFT) as u64,
            0,
        )
        .unwrap();
        a
    }

    #[test]
    fn periodic_period_has_a_floor() {
        let mut a = periodic_x2apic();
        // Count 1 at 1 GHz: 1 ns, stretched to the floor after the first.
        a.wrmsr(reg::INIT_COUNT, 1, 0).unwrap();
        assert!(a.poll(1));
        let floor = MIN_PERIOD_US * 1000; // TSC at 1 GHz in this test
        assert_eq!(a.next_deadline(), Some(1 + floor));
        assert!(!a.poll(floor));
        assert!(a.poll(1 + floor));
    }

    #[test]
    fn periodic_more_than_a_period_late_gives_the_guest_a_period() {
        let mut a = periodic_x2apic();
        a.wrmsr(reg::INIT_COUNT, 2_000_000, 0).unwrap();
        // Due at 2 ms, polled at 7.5 ms: the missed ticks coalesce and the
        // next is a whole period after now.
        assert!(a.poll(7_500_000));
        assert_eq!(a.next_deadline(), Some(9_500_000));
        assert_eq!(a.timer_fires, 1);
    }

    #[test]
    fn tsc_deadline_mode() {
        let mut a = x2apic();
        a.wrmsr(
            reg::LVT_TIMER,
            (0x40 | TIMER_TSC_DEADLINE << TIMER_MODE_SHIFT) as u64,
            0,
        )
        .unwrap();
        a.wrmsr(MSR_TSC_DEADLINE, 5000, 10).unwrap();
        assert_eq!(a.rdmsr(MSR_TSC_DEADLINE, 10), Ok(5000));
        // The initial count is ignored in TSC-deadline mode.
        a.wrmsr(reg::INIT_COUNT, 1, 10).unwrap();
        assert_eq!(a.next_deadline(), Some(5000));
        // Cancel with 0.
        a.wrmsr(MSR_TSC_DEADLINE, 0, 20).unwrap();
        assert!(!a.poll(10_000));
        assert_eq!(a.pending(), None);
        // Arm, fire, disarmed afterwards.
        a.wrmsr(MSR_TSC_DEADLINE, 20_000, 10_000).unwrap();
        assert!(a.poll(20_000));
        assert_eq!(a.pending(), Some(0x40));
        assert_eq!(a.rdmsr(MSR_TSC_DEADLINE, 20_000), Ok(0));
        assert!(!a.poll(30_000));
    }

    #[test]
    fn mode_change_disarms_and_deadline_ignored_outside_its_mode() {
        let mut a = x2apic();
        a.wrmsr(reg::LVT_TIMER, 0x40, 0).unwrap();
        a.wrmsr(MSR_TSC_DEADLINE, 500, 0).unwrap();
        assert_eq!(a.next_deadline(), None, "ignored in one-shot mode");
        a.wrmsr(reg::INIT_COUNT, 100, 0).unwrap();
        a.wrmsr(
            reg::LVT_TIMER,
            (0x40 | TIMER_TSC_DEADLINE << TIMER_MODE_SHIFT) as u64,
            0,
        )
        .unwrap();
        assert_eq!(a.next_deadline(), None);
        assert_eq!(a.rdmsr(reg::INIT_COUNT, 0), Ok(0));
    }

    #[test]
    fn masked_timer_raises_nothing() {
        let mut a = x2apic();
        a.wrmsr(reg::LVT_TIMER, (0x40 | LVT_MASK) as u64, 0)
            .unwrap();
        a.wrmsr(reg::INIT_COUNT, 10, 0).unwrap();
        assert!(a.poll(1000));
        assert_eq!(a.pending(), None);
    }

    #[test]
    fn priority_tpr_isr_and_eoi() {
        let mut a = x2apic();
        a.wrmsr(reg::SELF_IPI, 0x41, 0).unwrap();
        a.wrmsr(reg::SELF_IPI, 0x72, 0).unwrap();
        assert_eq!(a.pending(), Some(0x72), "highest first");
        a.accept(0x72);
        assert_eq!(a.pending(), None, "0x41 is below the in-service class");
        assert_eq!(a.rdmsr(reg::PPR, 0), Ok(0x70));
        a.wrmsr(reg::EOI, 0, 0).unwrap();
        assert_eq!(a.pending(), Some(0x41));
        a.wrmsr(reg::TPR, 0x50, 0).unwrap();
        assert_eq!(a.pending(), None, "TPR class 5 masks 0x41");
        a.wrmsr(reg::TPR, 0x30, 0).unwrap();
        assert_eq!(a.pending(), Some(0x41));
        a.accept(0x41);
        assert_eq!(a.rdmsr(reg::ISR0 + 2, 0), Ok(1 << 1));
        a.wrmsr(reg::EOI, 0, 0).unwrap();
        assert_eq!(a.rdmsr(reg::ISR0 + 2, 0), Ok(0));
    }

    /// Sends what `icr` asks for from a 1-vCPU machine's only APIC, as the
    /// vCPU code does.
    fn send(a: &mut VApic, icr: u64) {
        a.wrmsr(reg::ICR, icr, 0).unwrap();
        if let Some(v) = a.take_icr() {
            let ipi = crate::ipi::decode(v, 0, 1);
            if let (crate::ipi::Kind::Fixed(vector), 1) = (ipi.kind, ipi.targets) {
                a.raise(vector);
            }
        }
    }

    #[test]
    fn ids_of_aps() {
        let mut a = VApic::with_id(KHZ, 3);
        assert_eq!(a.rdmsr(MSR_APIC_BASE, 0), Ok(BASE_ADDR | BASE_EN));
        a.wrmsr(MSR_APIC_BASE, BASE_ADDR | BASE_EN | BASE_EXTD, 0)
            .unwrap();
        assert_eq!(a.rdmsr(reg::ID, 0), Ok(3));
        assert_eq!(a.rdmsr(reg::LDR, 0), Ok(1 << 3));
        // A disable keeps the ID and the (absent) BSP flag.
        a.wrmsr(MSR_APIC_BASE, BASE_ADDR, 0).unwrap();
        a.wrmsr(MSR_APIC_BASE, BASE_ADDR | BASE_EN, 0).unwrap();
        assert_eq!(a.rdmsr(MSR_APIC_BASE, 0), Ok(BASE_ADDR | BASE_EN));
        assert_eq!(a.id(), 3);
        let mut b = x2apic();
        assert_eq!(b.rdmsr(reg::ID, 0), Ok(0));
        assert_eq!(b.rdmsr(MSR_APIC_BASE, 0).unwrap() & BASE_BSP, BASE_BSP);
    }

    #[test]
    fn icr_goes_to_the_outbox() {
        let mut a = x2apic();
        a.wrmsr(reg::ICR, 2 << 32 | 0x41, 0).unwrap();
        assert_eq!(a.take_icr(), Some(2 << 32 | 0x41));
        assert_eq!(a.take_icr(), None);
        assert_eq!(a.pending(), None, "the vCPU code delivers, not the APIC");
        // An illegal fixed vector never leaves.
        a.wrmsr(reg::ICR, 2 << 32 | 0x05, 0).unwrap();
        assert_eq!(a.take_icr(), None);
        // INIT and SIPI carry "vectors" below 16 legitimately.
        a.wrmsr(reg::ICR, 2 << 32 | 5 << 8 | 1 << 14, 0).unwrap();
        assert!(a.take_icr().is_some());
        a.wrmsr(reg::ICR, 2 << 32 | 6 << 8 | 0x08, 0).unwrap();
        assert_eq!(a.take_icr(), Some(2 << 32 | 6 << 8 | 0x08));
    }

    #[test]
    fn icr_self_ipis() {
        let mut a = x2apic();
        // Fixed, physical, destination 0 (self).
        send(&mut a, 0x4041);
        assert_eq!(a.pending(), Some(0x41));
        a.accept(0x41);
        a.wrmsr(reg::EOI, 0, 0).unwrap();
        // Shorthand self.
        send(&mut a, 1 << 18 | 0x42);
        assert_eq!(a.pending(), Some(0x42));
        a.accept(0x42);
        a.wrmsr(reg::EOI, 0, 0).unwrap();
        // All excluding self, another CPU, NMI delivery: nothing.
        send(&mut a, 3 << 18 | 0x43);
        send(&mut a, 5u64 << 32 | 0x43);
        send(&mut a, 4 << 8 | 0x43);
        assert_eq!(a.pending(), None);
        // Illegal vector: ESR "send illegal vector" after the ESR write.
        send(&mut a, 0x05);
        a.wrmsr(reg::ESR, 0, 0).unwrap();
        assert_eq!(a.rdmsr(reg::ESR, 0), Ok(ESR_SEND_ILLEGAL as u64));
    }

    #[test]
    fn software_disable_masks_lvts() {
        let mut a = x2apic();
        a.wrmsr(reg::LVT_TIMER, 0x40, 0).unwrap();
        a.wrmsr(reg::SVR, 0xFF, 0).unwrap();
        assert_eq!(a.rdmsr(reg::LVT_TIMER, 0), Ok((0x40 | LVT_MASK) as u64));
        a.wrmsr(reg::LVT_LINT0, 0x700, 0).unwrap();
        assert_eq!(a.rdmsr(reg::LVT_LINT0, 0), Ok((0x700 | LVT_MASK) as u64));
    }
}
