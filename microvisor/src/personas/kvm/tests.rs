//! Host tests: the interface against a guest RAM buffer, read back with the
//! ABI types the guest backend uses.

extern crate std;
use super::*;
use crate::personas::test_guest::{Guest, KHZ};

const PAGE: u64 = 0x2000;

impl Guest {
    fn kvm_call(&mut self, k: &mut KvmInterface, nr: u64, a: [u64; 4]) -> (i64, u64) {
        self.state.rax = nr;
        self.regs.rbx = a[0];
        self.regs.rcx = a[1];
        self.regs.rdx = a[2];
        self.regs.rsi = a[3];
        let h = k.hypercall(&mut self.cx());
        assert_eq!(h.action, HypercallAction::Return);
        (self.state.rax as i64, h.code)
    }
}

fn iface(broken: Option<Break>) -> KvmInterface {
    let mut k = KvmInterface::new(super::super::HV_LEAF_BASE, broken);
    k.set_clock(KHZ);
    k
}

#[test]
fn leaves_and_breaks() {
    let k = Kvm::new(None).unwrap();
    let [max, b, c, d] = k.iface.cpuid(0x4000_0000).unwrap();
    assert_eq!(max, 0x4000_0001);
    assert_eq!([b, c, d], signature(abi::SIGNATURE));
    assert_eq!(k.iface.cpuid(0x4000_0001).unwrap()[0], FEATURES.0);
    assert_eq!(k.iface.cpuid(0x4000_0002), None);
    let stacked = KvmInterface::new(0x4000_0100, None);
    assert_eq!(stacked.cpuid(0x4000_0100).unwrap()[0], 0x4000_0101);
    assert_eq!(stacked.cpuid(0x4000_0000), None);
    for s in BREAK_STEPS {
        let k = Kvm::new(Some(s)).unwrap();
        assert_eq!(k.iface.broken().map(Break::name), Some(*s));
    }
    assert!(matches!(
        Kvm::new(Some("nope")),
        Err(SelectError::UnknownBreak)
    ));
    assert!(KvmInterface::owns_msr(m::PV_EOI_EN) && !KvmInterface::owns_msr(0x80b));
}

#[test]
fn kvmclock_is_published_with_the_version_protocol() {
    let mut g = Guest::new();
    let mut k = iface(None);
    k.wrmsr(&mut g.cx(), m::SYSTEM_TIME_NEW, m::system_time(PAGE))
        .unwrap();
    let t: VcpuTimeInfo = g.get(PAGE);
    assert_eq!(t.version, 2);
    assert_eq!(t.flags, pvclock::FLAG_TSC_STABLE);
    assert!(t.tsc_khz().abs_diff(KHZ) <= 1);
    assert_eq!(t.tsc_timestamp, g.now);
    assert_eq!(k.rdmsr(0, m::SYSTEM_TIME_NEW), Ok(PAGE | 1));
    // Broken: stuck odd; no stable bit.
    let mut g = Guest::new();
    let mut k = iface(Some(Break::PvclockOdd));
    k.wrmsr(&mut g.cx(), m::SYSTEM_TIME_NEW, m::system_time(PAGE))
        .unwrap();
    assert_eq!(g.get::<VcpuTimeInfo>(PAGE).version & 1, 1);
    let mut g = Guest::new();
    let mut k = iface(Some(Break::StableBit));
    k.wrmsr(&mut g.cx(), m::SYSTEM_TIME_NEW, m::system_time(PAGE))
        .unwrap();
    assert_eq!(g.get::<VcpuTimeInfo>(PAGE).flags, 0);
}

#[test]
fn steal_time_registration_and_reserved_bits() {
    let mut g = Guest::new();
    let mut k = iface(None);
    assert_eq!(k.wrmsr(&mut g.cx(), m::STEAL_TIME, PAGE | 2), Err(Gp));
    k.wrmsr(&mut g.cx(), m::STEAL_TIME, m::steal_time(PAGE + 64))
        .unwrap();
    let st: StealTime = g.get(PAGE + 64);
    assert_eq!((st.version, st.steal), (2, 0));
    // Refreshed after the period.
    g.now += KHZ * STEAL_REFRESH_MS;
    k.poll(&mut g.cx());
    assert_eq!(g.get::<StealTime>(PAGE + 64).version, 4);
    let mut g = Guest::new();
    let mut k = iface(Some(Break::StealNever));
    k.wrmsr(&mut g.cx(), m::STEAL_TIME, m::steal_time(PAGE + 64))
        .unwrap();
    assert_eq!(g.get::<StealTime>(PAGE + 64).version, 0);
}

#[test]
fn pv_eoi_msr_and_its_break() {
    let mut g = Guest::new();
    let mut k = iface(None);
    assert_eq!(k.wrmsr(&mut g.cx(), m::PV_EOI_EN, PAGE | 3), Err(Gp));
    k.wrmsr(&mut g.cx(), m::PV_EOI_EN, m::pv_eoi(PAGE + 128))
        .unwrap();
    assert_eq!(k.rdmsr(0, m::PV_EOI_EN), Ok(PAGE + 128 + 1));
    let mut k = iface(Some(Break::PvEoiRefused));
    assert_eq!(
        k.wrmsr(&mut g.cx(), m::PV_EOI_EN, m::pv_eoi(PAGE + 128)),
        Err(Gp)
    );
    assert_eq!(k.stats.refused, 1);
    // MSRs not offered.
    assert_eq!(k.wrmsr(&mut g.cx(), m::POLL_CONTROL, 0), Err(Gp));
    assert_eq!(k.rdmsr(0, m::ASYNC_PF_EN), Err(Gp));
}

#[test]
fn hypercalls_are_counted_and_enosys_when_broken() {
    let mut g = Guest::new();
    let mut k = iface(None);
    assert_eq!(g.kvm_call(&mut k, hc::SEND_IPI, [1, 0, 0, 0x40]), (1, 10));
    assert_eq!(g.kvm_call(&mut k, hc::SEND_IPI, [0, 0, 0, 0x40]), (0, 10));
    assert_eq!(g.kvm_call(&mut k, hc::SCHED_YIELD, [0; 4]), (0, 11));
    assert_eq!(g.kvm_call(&mut k, hc::KICK_CPU, [0, 0, 0, 0]), (0, 5));
    assert_eq!(g.kvm_call(&mut k, 99, [0; 4]).0, -abi::err::ENOSYS);
    assert_eq!(
        (k.stats.ipis, k.stats.yields, k.stats.kicks, k.stats.enosys),
        (1, 1, 1, 1)
    );
    let mut k = iface(Some(Break::HypercallEnosys));
    assert_eq!(
        g.kvm_call(&mut k, hc::SEND_IPI, [1, 0, 0, 0x40]).0,
        -abi::err::ENOSYS
    );
    assert_eq!(k.stats.ipis, 0);
}

#[test]
fn lying_steps() {
    assert_eq!(
        iface(Some(Break::NoFeatures)).cpuid(0x4000_0001).unwrap()[0],
        0
    );
    let hidden = iface(Some(Break::HiddenSteal)).cpuid(0x4000_0001).unwrap()[0];
    assert_eq!(hidden, FEATURES.0 & !Features::STEAL_TIME.0);
    let mut g = Guest::new();
    let mut k = iface(Some(Break::ClockGp));
    assert_eq!(
        k.wrmsr(&mut g.cx(), m::SYSTEM_TIME_NEW, m::system_time(PAGE)),
        Err(Gp)
    );
    // Hidden but working: the MSR still takes the area.
    let mut k = iface(Some(Break::HiddenSteal));
    assert!(k.wrmsr(&mut g.cx(), m::STEAL_TIME, PAGE | 1).is_ok());
    let mut k = iface(Some(Break::AbsurdFrequency));
    k.wrmsr(&mut g.cx(), m::SYSTEM_TIME_NEW, m::system_time(PAGE))
        .unwrap();
    let t: VcpuTimeInfo = g.get(PAGE);
    assert_eq!(t.tsc_khz(), ABSURD_TSC_KHZ);
    let mut k = iface(Some(Break::StealBackwards));
    k.wrmsr(&mut g.cx(), m::STEAL_TIME, PAGE | 1).unwrap();
    let first: StealTime = g.get(PAGE);
    k.poll(&mut g.cx());
    let second: StealTime = g.get(PAGE);
    assert!(second.steal < first.steal && second.version > first.version);
}

#[test]
fn pvclock_backwards_steps_back_every_other_publication() {
    let mut g = Guest::new();
    let mut k = iface(Some(Break::PvclockBackwards));
    k.wrmsr(&mut g.cx(), m::SYSTEM_TIME_NEW, m::system_time(PAGE))
        .unwrap();
    let mut back = 0;
    for _ in 0..BACKWARDS_EVERY {
        let before: VcpuTimeInfo = g.get(PAGE);
        g.now += 1000;
        k.poll(&mut g.cx());
        let after: VcpuTimeInfo = g.get(PAGE);
        assert_eq!(after.flags, pvclock::FLAG_TSC_STABLE);
        if after.ns_at(g.now) < before.ns_at(g.now) {
            back += 1;
        }
    }
    assert_eq!(back, 1);
}

/// Four vCPUs: `g.vcpu` says which one a handler runs for.
fn smp_guest() -> (Guest, KvmInterface) {
    let mut g = Guest::new();
    g.vcpus = 4;
    let mut k = iface(None);
    k.set_vcpus(4);
    (g, k)
}

#[test]
fn every_vcpu_has_its_own_registrations() {
    let (mut g, mut k) = smp_guest();
    for v in 0..4u64 {
        g.vcpu = v as usize;
        let page = PAGE + v * 0x100;
        k.wrmsr(&mut g.cx(), m::SYSTEM_TIME_NEW, m::system_time(page))
            .unwrap();
        k.wrmsr(&mut g.cx(), m::STEAL_TIME, m::steal_time(page + 64))
            .unwrap();
        k.wrmsr(&mut g.cx(), m::PV_EOI_EN, m::pv_eoi(page + 128))
            .unwrap();
    }
    for v in 0..4u64 {
        let page = PAGE + v * 0x100;
        assert_eq!(k.rdmsr(v as usize, m::SYSTEM_TIME_NEW), Ok(page | 1));
        assert_eq!(k.rdmsr(v as usize, m::STEAL_TIME), Ok(page + 64 + 1));
        assert_eq!(k.rdmsr(v as usize, m::PV_EOI_EN), Ok(page + 128 + 1));
        let t: VcpuTimeInfo = g.get(page);
        assert_eq!(t.version, 2, "vCPU {v}'s own pvclock, published once");
        assert_eq!(g.get::<StealTime>(page + 64).version, 2);
    }
    // PV TLB flush is offered with several vCPUs only.
    assert!(Features(k.cpuid(0x4000_0001).unwrap()[0]).contains(Features::PV_TLB_FLUSH));
    assert!(!Features(iface(None).cpuid(0x4000_0001).unwrap()[0]).contains(Features::PV_TLB_FLUSH));
}

#[test]
fn last_vcpu_refuses_its_steal_and_pv_eoi_areas_only() {
    let mut g = Guest::new();
    g.vcpus = 4;
    let mut k = iface(Some(Break::LastVcpuRefuses));
    k.set_vcpus(4);
    for v in 0..4u64 {
        g.vcpu = v as usize;
        let page = PAGE + v * 0x100;
        let clock = k.wrmsr(&mut g.cx(), m::SYSTEM_TIME_NEW, m::system_time(page));
        let steal = k.wrmsr(&mut g.cx(), m::STEAL_TIME, m::steal_time(page + 64));
        let eoi = k.wrmsr(&mut g.cx(), m::PV_EOI_EN, m::pv_eoi(page + 128));
        assert_eq!(clock, Ok(()), "vCPU {v}'s kvmclock is served");
        let want = if v == 3 { Err(Gp) } else { Ok(()) };
        assert_eq!((steal, eoi), (want, want), "vCPU {v}");
    }
    assert_eq!(k.stats.refused, 2);
    // With one vCPU nothing is refused: it is the boot CPU.
    let mut one = iface(Some(Break::LastVcpuRefuses));
    g.vcpu = 0;
    assert_eq!(
        one.wrmsr(&mut g.cx(), m::STEAL_TIME, m::steal_time(PAGE)),
        Ok(())
    );
}

#[test]
fn steal_time_preempted_flag_and_pv_tlb_flush() {
    let (mut g, mut k) = smp_guest();
    g.vcpu = 2;
    k.wrmsr(&mut g.cx(), m::STEAL_TIME, m::steal_time(PAGE))
        .unwrap();
    // Preempted at the end of a slice: the flag is set.
    k.descheduled(&mut g.cx(), true);
    assert_eq!(g.get::<StealTime>(PAGE).preempted, abi::VCPU_PREEMPTED);
    // Another vCPU asks for a flush through the flag (kvm_flush_tlb_multi).
    g.put(
        PAGE + PREEMPTED_OFFSET,
        &(abi::VCPU_PREEMPTED | abi::VCPU_FLUSH_TLB),
    );
    // vCPU 2 runs again, having waited 5 us: steal time, flag cleared,
    // TLB flushed.
    g.steal_ns = 5000;
    k.poll(&mut g.cx());
    let st: StealTime = g.get(PAGE);
    assert_eq!((st.steal, st.preempted), (5000, 0));
    assert!(g.requests.flush_tlb);
    assert_eq!(k.stats.tlb_flushes, 1);
    // A halted vCPU is not marked preempted.
    k.descheduled(&mut g.cx(), false);
    assert_eq!(g.get::<StealTime>(PAGE).preempted, 0);
}

#[test]
fn send_ipi_kick_and_yield_name_other_vcpus() {
    let (mut g, mut k) = smp_guest();
    // IDs 0, 1 and 3 from min 0; IDs 2 and 3 from min 2; ID 5 is absent.
    assert_eq!(g.kvm_call(&mut k, hc::SEND_IPI, [0b1011, 0, 0, 0x40]).0, 3);
    assert_eq!(g.kvm_call(&mut k, hc::SEND_IPI, [0b1011, 0, 2, 0x41]).0, 2);
    let (ipis, n) = g.requests.take_ipis();
    assert_eq!(&ipis[..n], &[(0b1011, 0x40), (0b1100, 0x41)]);
    // NMI delivery (100b) is not modelled.
    assert_eq!(g.kvm_call(&mut k, hc::SEND_IPI, [1, 0, 0, 4 << 8]).0, 0);
    assert_eq!(k.stats.ipis_unsupported, 1);
    assert_eq!(g.kvm_call(&mut k, hc::KICK_CPU, [0, 2, 0, 0]).0, 0);
    assert_eq!(g.kvm_call(&mut k, hc::KICK_CPU, [0, 9, 0, 0]).0, 0);
    assert_eq!(g.requests.kicks, 1 << 2);
    assert_eq!(g.kvm_call(&mut k, hc::SCHED_YIELD, [3, 0, 0, 0]).0, 0);
    assert!(g.requests.yield_now);
}
