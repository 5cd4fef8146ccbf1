//! Host tests of the persona per vCPU (`vcpus=4`): vCPU ids, upcall
//! vectors and `VIRQ_TIMER` ports per vCPU, singleshot timers refused for
//! another vCPU, `VCPUOP_register_vcpu_info`, IPI ports, `SCHEDOP_poll`
//! blocking and its wake-ups, and the runstate the scheduler makes.

extern crate std;
use super::*;
use crate::personas::test_guest::Guest;
use abi::errno;
use abi::hypercall as nr;

const PAGE_HC: u64 = 0x1000;
const PAGE_SI: u64 = 0x2000;
const ARG: u64 = 0x3000;
const RUNSTATE: u64 = 0x4000;
const PORTS: u64 = 0x5000;
const VCPU_INFO_PAGE: u64 = 0x6000;
const VECTOR: u8 = 0xF3;

fn call(g: &mut Guest, x: &mut Xen, op: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    g.state.rax = u64::from(op);
    g.regs.rdi = a1;
    g.regs.rsi = a2;
    g.regs.rdx = a3;
    let h = x.hypercall(&mut g.cx());
    assert_eq!(h.action, crate::personas::HypercallAction::Return);
    g.state.rax as i64
}

/// Four vCPUs; hypercall page and shared_info set up by vCPU 0.
fn smp() -> (Guest, Xen) {
    let mut g = Guest::new();
    g.vcpus = 4;
    let mut x = Xen::new(false, None).unwrap();
    x.set_vcpus(4);
    x.set_clock(crate::personas::test_guest::KHZ, 1_000_000);
    x.wrmsr(&mut g.cx(), abi::HYPERCALL_MSR, PAGE_HC)
        .unwrap()
        .unwrap();
    g.put(
        ARG,
        &abi::AddToPhysmap {
            domid: abi::DOMID_SELF,
            space: abi::XENMAPSPACE_SHARED_INFO,
            gpfn: PAGE_SI >> 12,
            ..Default::default()
        },
    );
    let add = u64::from(abi::XENMEM_ADD_TO_PHYSMAP);
    assert_eq!(call(&mut g, &mut x, nr::MEMORY_OP, add, ARG, 0), 0);
    (g, x)
}

/// vCPU `v` (the caller) sets its upcall vector and binds its
/// `VIRQ_TIMER`, unmasked; its port.
fn vcpu_set_up(g: &mut Guest, x: &mut Xen, v: u32) -> u32 {
    g.vcpu = v as usize;
    let op = u64::from(abi::HVMOP_SET_EVTCHN_UPCALL_VECTOR);
    g.put(
        ARG,
        &abi::HvmEvtchnUpcallVector {
            vcpu: v,
            vector: VECTOR,
            pad: [0; 3],
        },
    );
    assert_eq!(call(g, x, nr::HVM_OP, op, ARG, 0), 0);
    g.put(
        ARG,
        &abi::EvtchnBindVirq {
            virq: abi::VIRQ_TIMER,
            vcpu: v,
            port: 0,
        },
    );
    let bind = u64::from(abi::EVTCHNOP_BIND_VIRQ);
    assert_eq!(call(g, x, nr::EVENT_CHANNEL_OP, bind, ARG, 0), 0);
    let port = g.get::<abi::EvtchnBindVirq>(ARG).port;
    g.put(ARG, &abi::EvtchnPort { port });
    let unmask = u64::from(abi::EVTCHNOP_UNMASK);
    assert_eq!(call(g, x, nr::EVENT_CHANNEL_OP, unmask, ARG, 0), 0);
    port
}

fn si(g: &Guest) -> abi::SharedInfo {
    g.get(PAGE_SI)
}

#[test]
fn vcpu_id_and_vp_index_are_the_asking_vcpu() {
    let (mut g, mut x) = smp();
    for v in 0..4 {
        g.vcpu = v;
        x.poll(&mut g.cx());
        assert_eq!(x.cpuid(HV_LEAF_BASE_XEN + 4, 0)[1], v as u32);
    }
    let mut vx = Xen::new(true, None).unwrap();
    vx.set_vcpus(4);
    g.vcpu = 3;
    assert_eq!(
        vx.rdmsr(&mut g.cx(), pvops_abi::hyperv::msr::VP_INDEX),
        Some(Ok(3))
    );
}

const HV_LEAF_BASE_XEN: u32 = crate::personas::HV_LEAF_BASE;

#[test]
fn timers_and_upcalls_per_vcpu() {
    let (mut g, mut x) = smp();
    let ports: std::vec::Vec<u32> = (0..4).map(|v| vcpu_set_up(&mut g, &mut x, v)).collect();
    // One VIRQ_TIMER port per vCPU, all different.
    for (i, p) in ports.iter().enumerate() {
        assert!(!ports[i + 1..].contains(p));
        assert_eq!(x.port_of(abi::VIRQ_TIMER, i), Some(*p));
    }
    // vCPU 4 does not exist.
    g.vcpu = 0;
    g.put(
        ARG,
        &abi::EvtchnBindVirq {
            virq: abi::VIRQ_TIMER,
            vcpu: 4,
            port: 0,
        },
    );
    let bind = u64::from(abi::EVTCHNOP_BIND_VIRQ);
    assert_eq!(
        call(&mut g, &mut x, nr::EVENT_CHANNEL_OP, bind, ARG, 0),
        -errno::ENOENT
    );

    // vCPU 1 sets its own timer; vCPU 0 may not set or stop vCPU 1's.
    let now_ns = si(&g).vcpu_info[0].time.ns_at(g.now);
    let timer = abi::VcpuSetSingleshotTimer {
        timeout_abs_ns: now_ns + 1_000_000,
        ..Default::default()
    };
    g.put(ARG, &timer);
    let set = u64::from(abi::VCPUOP_SET_SINGLESHOT_TIMER);
    let stop = u64::from(abi::VCPUOP_STOP_SINGLESHOT_TIMER);
    g.vcpu = 0;
    assert_eq!(
        call(&mut g, &mut x, nr::VCPU_OP, set, 1, ARG),
        -errno::EINVAL
    );
    assert_eq!(
        call(&mut g, &mut x, nr::VCPU_OP, stop, 1, 0),
        -errno::EINVAL
    );
    assert_eq!(
        call(&mut g, &mut x, nr::VCPU_OP, set, 9, ARG),
        -errno::ENOENT
    );
    g.vcpu = 1;
    assert_eq!(call(&mut g, &mut x, nr::VCPU_OP, set, 1, ARG), 0);
    // It fires while vCPU 0 runs: vCPU 1's port, selector and flag, and
    // its vector through an IPI request (vCPU 0's APIC untouched).
    g.vcpu = 0;
    g.now = x.next_deadline().unwrap();
    g.requests = Default::default();
    x.poll(&mut g.cx());
    let s = si(&g);
    assert_eq!(s.evtchn_pending[0] & (1 << ports[1]), 1 << ports[1]);
    assert_eq!(s.vcpu_info[1].evtchn_upcall_pending, 1);
    assert_eq!(s.vcpu_info[0].evtchn_upcall_pending, 0);
    assert_eq!(g.apic.requested(), None);
    let (ipis, n) = g.requests.take_ipis();
    assert_eq!(&ipis[..n], &[(1 << 1, VECTOR)]);
    assert_eq!(x.stats.cross_events, 1);
}

#[test]
fn register_vcpu_info_moves_it_once() {
    let (mut g, mut x) = smp();
    let port = vcpu_set_up(&mut g, &mut x, 2);
    let reg = u64::from(abi::VCPUOP_REGISTER_VCPU_INFO);
    let put = |g: &mut Guest, mfn: u64, offset: u32| {
        g.put(
            ARG,
            &abi::VcpuRegisterVcpuInfo {
                mfn,
                offset,
                rsvd: 0,
            },
        );
    };
    // Not inside the page, not guest RAM.
    put(&mut g, VCPU_INFO_PAGE >> 12, 4090);
    assert_eq!(
        call(&mut g, &mut x, nr::VCPU_OP, reg, 2, ARG),
        -errno::EINVAL
    );
    put(&mut g, 0x10_0000, 0);
    assert_eq!(
        call(&mut g, &mut x, nr::VCPU_OP, reg, 2, ARG),
        -errno::EINVAL
    );
    put(&mut g, VCPU_INFO_PAGE >> 12, 64);
    assert_eq!(call(&mut g, &mut x, nr::VCPU_OP, reg, 2, ARG), 0);
    let at = VCPU_INFO_PAGE + 64;
    let moved: abi::VcpuInfo = g.get(at);
    // The pvclock came along; every selector bit and the flag are set
    // "just to make sure nothing gets lost" (Xen `map_vcpu_info`).
    assert_ne!(moved.time.tsc_to_system_mul, 0);
    assert_eq!(moved.evtchn_pending_sel, u64::MAX);
    assert_eq!(moved.evtchn_upcall_pending, 1);
    // Moved for good.
    put(&mut g, VCPU_INFO_PAGE >> 12, 0);
    assert_eq!(
        call(&mut g, &mut x, nr::VCPU_OP, reg, 2, ARG),
        -errno::EINVAL
    );
    // Its events now land in the new place; shared_info's old slot is
    // left alone.
    g.mem.write(at, &[0]).unwrap();
    g.mem.write(at + 8, &0u64.to_le_bytes()).unwrap();
    let old_slot = si(&g).vcpu_info[2];
    x.set_pending(&mut g.cx(), port);
    let moved: abi::VcpuInfo = g.get(at);
    assert_eq!(moved.evtchn_pending_sel, 1);
    assert_eq!(moved.evtchn_upcall_pending, 1);
    assert_eq!(si(&g).vcpu_info[2], old_slot);
    // The pvclock is published there too.
    g.now += 2_000_000_000;
    x.publish(&mut g.cx());
    let moved: abi::VcpuInfo = g.get(at);
    assert_eq!(moved.time, si(&g).vcpu_info[0].time);
}

/// vCPU `v` binds a masked IPI port to itself (the backend's lock port).
fn lock_port(g: &mut Guest, x: &mut Xen, v: u32) -> u32 {
    g.vcpu = v as usize;
    g.put(ARG, &abi::EvtchnBindIpi { vcpu: v, port: 0 });
    let bind = u64::from(abi::EVTCHNOP_BIND_IPI);
    assert_eq!(call(g, x, nr::EVENT_CHANNEL_OP, bind, ARG, 0), 0);
    g.get::<abi::EvtchnBindIpi>(ARG).port
}

fn poll(g: &mut Guest, x: &mut Xen, port: u32, timeout: u64) -> i64 {
    g.put(PORTS, &port);
    g.put(
        ARG,
        &abi::SchedPoll {
            ports: PORTS,
            nr_ports: 1,
            pad: 0,
            timeout,
        },
    );
    let op = u64::from(abi::SCHEDOP_POLL);
    call(g, x, nr::SCHED_OP, op, ARG, 0)
}

#[test]
fn poll_blocks_until_the_port_is_sent_or_the_timeout() {
    let (mut g, mut x) = smp();
    let p1 = lock_port(&mut g, &mut x, 1);
    let p2 = lock_port(&mut g, &mut x, 2);
    assert_ne!(p1, p2);
    // Masked, as the backend keeps it: an event only pends.
    let sim = PAGE_SI + abi::evtchn_mask_offset(0) as u64;
    let mask: u64 = g.get(sim);
    g.put(sim, &(mask | 1 << p1 | 1 << p2));

    // vCPU 1 polls its port: it blocks, with no deadline.
    g.vcpu = 1;
    g.requests = Default::default();
    assert_eq!(poll(&mut g, &mut x, p1, 0), 0);
    assert!(g.requests.block);
    assert_eq!(x.next_deadline(), None);
    // vCPU 0 sends to vCPU 2's port: vCPU 1 stays blocked.
    g.vcpu = 0;
    g.requests = Default::default();
    g.put(ARG, &abi::EvtchnPort { port: p2 });
    let send = u64::from(abi::EVTCHNOP_SEND);
    assert_eq!(call(&mut g, &mut x, nr::EVENT_CHANNEL_OP, send, ARG, 0), 0);
    assert_eq!(g.requests.kicks, 0);
    // Now to vCPU 1's: masked, but the poller is kicked (Xen
    // `evtchn_check_pollers`); no upcall for a masked port.
    g.put(ARG, &abi::EvtchnPort { port: p1 });
    assert_eq!(call(&mut g, &mut x, nr::EVENT_CHANNEL_OP, send, ARG, 0), 0);
    assert_eq!(g.requests.kicks, 1 << 1);
    assert_eq!(g.requests.take_ipis().1, 0);
    assert_eq!(si(&g).vcpu_info[1].evtchn_upcall_pending, 0);
    assert_eq!((x.stats.polls_blocked, x.stats.poll_wakes), (1, 1));

    // The port still pending: a poll returns at once.
    g.vcpu = 1;
    g.requests = Default::default();
    assert_eq!(poll(&mut g, &mut x, p1, 0), 0);
    assert!(!g.requests.block);
    // Cleared again, with a timeout (absolute system time) in the past:
    // at once; 1 ms ahead: blocks until then, and the deadline kicks it.
    let sip = PAGE_SI + abi::evtchn_pending_offset(0) as u64;
    let pending: u64 = g.get(sip);
    g.put(sip, &(pending & !(1 << p1)));
    assert_eq!(poll(&mut g, &mut x, p1, 1), 0);
    assert!(!g.requests.block);
    let now_ns = si(&g).vcpu_info[0].time.ns_at(g.now);
    assert_eq!(poll(&mut g, &mut x, p1, now_ns + 1_000_000), 0);
    assert!(g.requests.block);
    let due = x.next_deadline().unwrap();
    assert!(due.abs_diff(g.now + 2_000_000) <= 2);
    g.vcpu = 0;
    g.requests = Default::default();
    g.now = due - 1;
    x.poll(&mut g.cx());
    assert_eq!(g.requests.kicks, 0);
    g.now = due;
    x.poll(&mut g.cx());
    assert_eq!(g.requests.kicks, 1 << 1);
    assert_eq!(x.next_deadline(), None);

    // Bad arguments, as Xen checks them.
    g.vcpu = 1;
    assert_eq!(poll(&mut g, &mut x, NR_PORTS as u32, 0), -errno::EINVAL);
    g.put(
        ARG,
        &abi::SchedPoll {
            ports: PORTS,
            nr_ports: 129,
            pad: 0,
            timeout: 0,
        },
    );
    let op = u64::from(abi::SCHEDOP_POLL);
    assert_eq!(
        call(&mut g, &mut x, nr::SCHED_OP, op, ARG, 0),
        -errno::EINVAL
    );
}

#[test]
fn bind_ipi_and_bind_vcpu() {
    let (mut g, mut x) = smp();
    let port = lock_port(&mut g, &mut x, 3);
    g.vcpu = 0;
    g.put(ARG, &abi::EvtchnBindIpi { vcpu: 4, port: 0 });
    let bind = u64::from(abi::EVTCHNOP_BIND_IPI);
    assert_eq!(
        call(&mut g, &mut x, nr::EVENT_CHANNEL_OP, bind, ARG, 0),
        -errno::ENOENT
    );
    // An IPI port is per vCPU: it cannot move (Xen `evtchn_bind_vcpu`).
    let to = u64::from(abi::EVTCHNOP_BIND_VCPU);
    g.put(ARG, &abi::EvtchnBindVcpu { port, vcpu: 1 });
    assert_eq!(
        call(&mut g, &mut x, nr::EVENT_CHANNEL_OP, to, ARG, 0),
        -errno::EINVAL
    );
    // The toolstack's console port (unbound interdomain) can.
    g.put(
        ARG,
        &abi::EvtchnBindVcpu {
            port: CONSOLE_PORT,
            vcpu: 2,
        },
    );
    assert_eq!(call(&mut g, &mut x, nr::EVENT_CHANNEL_OP, to, ARG, 0), 0);
    g.requests = Default::default();
    x.set_pending(&mut g.cx(), CONSOLE_PORT);
    // Unmasked (shared_info starts zeroed): vCPU 2's selector and flag,
    // not vCPU 0's.
    let s = si(&g);
    assert_eq!(s.vcpu_info[2].evtchn_upcall_pending, 1);
    assert_eq!(s.vcpu_info[0].evtchn_upcall_pending, 0);
    g.put(
        ARG,
        &abi::EvtchnBindVcpu {
            port: CONSOLE_PORT,
            vcpu: 7,
        },
    );
    assert_eq!(
        call(&mut g, &mut x, nr::EVENT_CHANNEL_OP, to, ARG, 0),
        -errno::ENOENT
    );
}

#[test]
fn runstate_follows_the_scheduler() {
    let (mut g, mut x) = smp();
    g.vcpu = 1;
    let reg = u64::from(abi::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA);
    g.put(ARG, &abi::VcpuRegisterRunstateMemoryArea { addr: RUNSTATE });
    assert_eq!(call(&mut g, &mut x, nr::VCPU_OP, reg, 1, ARG), 0);
    let area = |g: &Guest| g.get::<abi::VcpuRunstateInfo>(RUNSTATE);
    assert_eq!(area(&g).state, abi::RUNSTATE_RUNNING as i32);
    // 1 ms later it is preempted: runnable, seen by the other vCPUs.
    g.now += 2_000_000;
    x.descheduled(&mut g.cx(), true);
    let r = area(&g);
    assert_eq!(r.state, abi::RUNSTATE_RUNNABLE as i32);
    assert!(r.time[abi::RUNSTATE_RUNNING].abs_diff(1_000_000) <= 1);
    // Polled while another vCPU runs: nothing changes for vCPU 1.
    // Back 2 ms later, 2 ms stolen: running again.
    g.now += 4_000_000;
    g.steal_ns = 2_000_000;
    x.poll(&mut g.cx());
    let r = area(&g);
    assert_eq!(r.state, abi::RUNSTATE_RUNNING as i32);
    assert_eq!(r.time[abi::RUNSTATE_RUNNABLE], 2_000_000);
    assert!(r.time[abi::RUNSTATE_BLOCKED] <= 1);
    // It halts after 1 ms and sleeps 3 ms: blocked; the idle loop's polls
    // meanwhile leave it blocked.
    g.now += 2_000_000;
    x.descheduled(&mut g.cx(), false);
    assert_eq!(area(&g).state, abi::RUNSTATE_BLOCKED as i32);
    g.now += 6_000_000;
    g.idle = true;
    x.poll(&mut g.cx());
    assert_eq!(area(&g).state, abi::RUNSTATE_BLOCKED as i32);
    g.idle = false;
    x.poll(&mut g.cx());
    let r = area(&g);
    assert_eq!(r.state, abi::RUNSTATE_RUNNING as i32);
    let ms = |ns: u64| (ns + 500_000) / 1_000_000;
    assert_eq!(
        [
            ms(r.time[abi::RUNSTATE_RUNNING]),
            ms(r.time[abi::RUNSTATE_RUNNABLE]),
            ms(r.time[abi::RUNSTATE_BLOCKED]),
            r.time[abi::RUNSTATE_OFFLINE],
        ],
        [2, 2, 3, 0]
    );
    // The guest's steal is runnable + offline.
    assert_eq!(r.steal_ns(), 2_000_000);
    // VCPUOP_get_runstate_info of another vCPU: its last update.
    g.vcpu = 0;
    let get = u64::from(abi::VCPUOP_GET_RUNSTATE_INFO);
    assert_eq!(call(&mut g, &mut x, nr::VCPU_OP, get, 1, ARG), 0);
    assert_eq!(g.get::<abi::VcpuRunstateInfo>(ARG), r);
}
