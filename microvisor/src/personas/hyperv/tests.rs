//! Host tests of the persona per VP (`vcpus=4`): VP index, VP assist page
//! and lazy EOI, synthetic timers, and flush/IPI effects on other VPs.

use super::hypercalls::Effects;
use super::*;
use crate::personas::test_guest::Guest;
use pvops_abi::hyperv::{StimerConfig, APIC_ASSIST_NO_EOI_REQUIRED, VP_ASSIST_APIC_ASSIST_OFFSET};

/// IA32_APIC_BASE with the APIC and x2APIC mode enabled (SDM 10.12.1).
const APIC_BASE_X2: u64 = 0xFEE0_0000 | 1 << 11 | 1 << 10;

fn smp() -> (Guest, HyperV) {
    let mut g = Guest::new();
    g.vcpus = 4;
    let mut p = HyperV::new(false, None).unwrap();
    p.set_vcpus(4);
    p.set_clock(crate::personas::test_guest::KHZ, 1_000_000);
    p.poll(&mut g.cx());
    (g, p)
}

fn assist_word(g: &Guest, page: u64) -> u32 {
    let mut b = [0u8; 4];
    g.mem
        .read(page + VP_ASSIST_APIC_ASSIST_OFFSET as u64, &mut b)
        .unwrap();
    u32::from_le_bytes(b)
}

#[test]
fn vp_index_is_the_vcpu_and_read_only() {
    let (mut g, mut p) = smp();
    for v in 0..4 {
        g.vcpu = v;
        assert_eq!(p.rdmsr(&mut g.cx(), m::VP_INDEX), Some(Ok(v as u64)));
        assert_eq!(p.wrmsr(&mut g.cx(), m::VP_INDEX, 0), Some(Err(Gp)));
    }
    // Max VPs in CPUID 0x4000_0005.
    assert_eq!(
        p.cpuid(pvops_abi::hyperv::cpuid::IMPLEMENTATION_LIMITS, 0)[0],
        4
    );
}

#[test]
fn assist_page_and_lazy_eoi_per_vp() {
    let (mut g, mut p) = smp();
    g.vcpu = 1;
    assert_eq!(
        p.wrmsr(&mut g.cx(), m::VP_ASSIST_PAGE, 0x2001),
        Some(Ok(()))
    );
    g.vcpu = 2;
    assert_eq!(
        p.wrmsr(&mut g.cx(), m::VP_ASSIST_PAGE, 0x3001),
        Some(Ok(()))
    );
    assert_eq!(p.rdmsr(&mut g.cx(), m::VP_ASSIST_PAGE), Some(Ok(0x3001)));
    g.vcpu = 0;
    assert_eq!(p.rdmsr(&mut g.cx(), m::VP_ASSIST_PAGE), Some(Ok(0)));
    // VP 2 takes an interrupt: its assist bit, not VP 1's.
    g.vcpu = 2;
    g.apic.wrmsr(0x1B, APIC_BASE_X2, 0).unwrap();
    g.apic.raise(0xEC);
    g.apic.accept(0xEC);
    p.on_inject(&mut g.cx(), 0xEC);
    assert_eq!(assist_word(&g, 0x3000) & APIC_ASSIST_NO_EOI_REQUIRED, 1);
    assert_eq!(assist_word(&g, 0x2000), 0);
    // The guest clears it (lazy EOI done): the next poll of VP 2 EOIs.
    g.mem
        .write(
            0x3000 + VP_ASSIST_APIC_ASSIST_OFFSET as u64,
            &0u32.to_le_bytes(),
        )
        .unwrap();
    p.poll(&mut g.cx());
    assert_eq!(g.apic.in_service(), None);
    assert_eq!(p.vps[2].lazy.completed, 1);
    assert_eq!(p.vps[1].lazy.completed + p.vps[1].lazy.offered, 0);
}

#[test]
fn stimer_of_a_vp_fires_at_that_vp() {
    let (mut g, mut p) = smp();
    g.vcpu = 2;
    let cfg = StimerConfig::direct_one_shot(0xEC).0;
    assert_eq!(p.wrmsr(&mut g.cx(), m::stimer_config(0), cfg), Some(Ok(())));
    assert_eq!(p.wrmsr(&mut g.cx(), m::stimer_count(0), 10), Some(Ok(())));
    assert_eq!(p.rdmsr(&mut g.cx(), m::stimer_count(0)), Some(Ok(10)));
    g.vcpu = 0;
    assert_eq!(p.rdmsr(&mut g.cx(), m::stimer_count(0)), Some(Ok(0)));
    let due = p.next_deadline().unwrap();
    // VP 0 about to run when VP 2's timer expires: an IPI request to VP 2.
    g.now = due;
    p.poll(&mut g.cx());
    assert_eq!(g.apic.requested(), None);
    let (ipis, n) = g.requests.take_ipis();
    assert_eq!(&ipis[..n], &[(1 << 2, 0xEC)]);
    assert_eq!(p.next_deadline(), None);
    // Its own timer goes into the running VP's APIC.
    assert_eq!(p.wrmsr(&mut g.cx(), m::stimer_config(1), cfg), Some(Ok(())));
    assert_eq!(p.wrmsr(&mut g.cx(), m::stimer_count(1), 1), Some(Ok(())));
    p.poll(&mut g.cx());
    assert_eq!(g.apic.requested(), Some(0xEC));
    assert_eq!(g.requests.take_ipis().1, 0);
}

#[test]
fn flush_set_flags_the_other_vps_for_their_next_entry() {
    let (mut g, mut p) = smp();
    g.vcpu = 0;
    let e = Effects {
        flush: 0b1011,
        ..Default::default()
    };
    p.apply(&mut g.cx(), e);
    assert!(g.requests.flush_tlb);
    let flagged: [bool; 4] = core::array::from_fn(|i| p.vps[i].flush_pending);
    assert_eq!(flagged, [false, true, false, true]);
    for (v, want) in [(1, true), (2, false), (3, true), (1, false)] {
        g.requests.flush_tlb = false;
        g.vcpu = v;
        p.poll(&mut g.cx());
        assert_eq!(g.requests.flush_tlb, want, "vCPU {v}");
    }
}

#[test]
fn cluster_ipi_reaches_each_vp_of_the_set() {
    let (mut g, mut p) = smp();
    g.vcpu = 1;
    let e = Effects {
        ipi: Some((0b0111, 0xE0)),
        ..Default::default()
    };
    p.apply(&mut g.cx(), e);
    assert_eq!(g.apic.requested(), Some(0xE0));
    let (ipis, n) = g.requests.take_ipis();
    assert_eq!(&ipis[..n], &[(0b0101, 0xE0)]);
    // A long spin wait yields only with several VPs.
    p.apply(
        &mut g.cx(),
        Effects {
            spin_wait: true,
            ..Default::default()
        },
    );
    assert!(g.requests.yield_now);
}
