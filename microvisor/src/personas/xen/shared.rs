//! Memory the persona shares with the guest: the hypercall page,
//! shared_info (vCPU 0's pvclock, the 2-level event-channel words) and the
//! runstate area. All of it lives in guest RAM and is written through the
//! bounds-checked [`GuestRam`](crate::guest::mem::GuestRam) (shared_info by
//! guest-physical address, the runstate area by guest-virtual address);
//! the guest is not running while the persona writes, so no update is ever
//! seen half done.

use super::{Break, Poll, Port, Runstate, Xen, MAX_VCPUS, NR_PORTS};
use crate::guest::mem::GuestRam;
use crate::guest::Gp;
use crate::personas::GuestCx;
use core::mem::offset_of;
use pvops_abi::pvclock::VcpuTimeInfo;
use pvops_abi::xen::{self as abi, VcpuInfo, VcpuRunstateInfo};
use zerocopy::IntoBytes;

const PAGE: u64 = 4096;
/// Offsets in a `vcpu_info`.
const UPCALL_PENDING: u64 = offset_of!(VcpuInfo, evtchn_upcall_pending) as u64;
const PENDING_SEL: u64 = offset_of!(VcpuInfo, evtchn_pending_sel) as u64;
const TIME: u64 = offset_of!(VcpuInfo, time) as u64;
const VCPU_INFO_SIZE: u64 = core::mem::size_of::<VcpuInfo>() as u64;
/// The pvclock is re-based at most this often (in ms of TSC): the guest
/// computes time from the TSC, so the published values stay valid; the
/// refresh only keeps the deltas small, as Xen's periodic update does.
const REFRESH_MS: u64 = 1000;

fn rd_u64(mem: &GuestRam, gpa: u64) -> u64 {
    let mut b = [0u8; 8];
    match mem.read(gpa, &mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => 0,
    }
}

fn wr_u64(mem: &GuestRam, gpa: u64, v: u64) {
    let _ = mem.write(gpa, &v.to_le_bytes());
}

fn rd_u8(mem: &GuestRam, gpa: u64) -> u8 {
    let mut b = [0u8; 1];
    match mem.read(gpa, &mut b) {
        Ok(()) => b[0],
        Err(_) => 0,
    }
}

impl Xen {
    /// WRMSR to the hypercall-page MSR: GPA in bits 63:12, page index in
    /// 11:0 (only page 0 exists). A page outside guest RAM or another index
    /// is #GP, as in Xen (`guest_wrmsr_xen`). Fills the page with one stub
    /// per hypercall number, unless `break=hypercall-page`.
    pub(super) fn write_hypercall_msr(
        &mut self,
        cx: &mut GuestCx<'_>,
        value: u64,
    ) -> Result<(), Gp> {
        let (gpa, index) = (value & !(PAGE - 1), value & (PAGE - 1));
        if index != 0 || !cx.mem.contains(gpa, PAGE) {
            return Err(Gp);
        }
        self.hypercall_page = Some(gpa);
        if self.brk == Some(Break::HypercallPage) {
            return Ok(());
        }
        for nr in 0..abi::HYPERCALL_STUBS {
            let stub = abi::hypercall_stub(nr as u32, abi::VMMCALL);
            let at = gpa + (nr * abi::HYPERCALL_STUB_SIZE) as u64;
            cx.mem.write(at, &stub).map_err(|_| Gp)?;
        }
        Ok(())
    }

    /// `XENMEM_add_to_physmap(XENMAPSPACE_shared_info, gpfn)`: from now on
    /// guest frame `gpfn` is shared_info. The first mapping starts from a
    /// zeroed page (Xen's shared_info is zeroed at domain creation); moving
    /// it carries the contents over (the old frame is ordinary RAM again).
    pub(super) fn map_shared_info(&mut self, cx: &mut GuestCx<'_>, gpfn: u64) -> Result<(), i64> {
        let gpa = gpfn.checked_mul(PAGE).ok_or(-abi::errno::EINVAL)?;
        if !cx.mem.contains(gpa, PAGE) {
            return Err(-abi::errno::EINVAL);
        }
        match self.shared_info {
            Some(old) if old != gpa => {
                // In small pieces: the microvisor's stack is not large.
                let mut chunk = [0u8; 256];
                for off in (0..PAGE).step_by(chunk.len()) {
                    let moved = cx
                        .mem
                        .read(old + off, &mut chunk)
                        .and_then(|()| cx.mem.write(gpa + off, &chunk));
                    moved.map_err(|_| -abi::errno::EINVAL)?;
                }
            }
            Some(_) => {}
            None => cx.mem.zero(gpa, PAGE).map_err(|_| -abi::errno::EINVAL)?,
        }
        let first = self.shared_info.is_none();
        self.shared_info = Some(gpa);
        self.publish(cx);
        if first {
            // The console daemon consumed the boot's first output: an
            // event on a port the guest has not masked yet.
            self.noise(cx, super::CONSOLE_PORT);
        }
        Ok(())
    }

    /// Re-bases the pvclock at `now` (continuing the published timebase) and
    /// writes it to vCPU 0's `vcpu_time_info` with the version protocol:
    /// odd version, fields, even version. Under `break=pvclock-odd` the
    /// version is left odd.
    pub(super) fn publish(&mut self, cx: &mut GuestCx<'_>) {
        if self.shared_info.is_none() {
            return;
        }
        if self.time.tsc_to_system_mul == 0 {
            // No TSC rate yet: publish nothing (the guest sees mul 0).
            return;
        }
        let now = cx.now;
        self.time.system_time = self.system_ns(now);
        if self.brk == Some(Break::PvclockBackwards) && self.stats.publishes > 0 {
            // Back, then on time again at the next publication: no drift.
            let every = super::BACKWARDS_EVERY;
            let lag = super::BACKWARDS_LAG_NS;
            let t = &mut self.time.system_time;
            match self.stats.publishes % every {
                n if n == every - 1 => *t = t.saturating_sub(lag),
                0 => *t = t.saturating_add(lag),
                _ => {}
            }
        }
        self.time.tsc_timestamp = now;
        let odd = self.time.version | 1;
        let t = VcpuTimeInfo {
            version: odd,
            ..self.time
        };
        // One TSC, one timebase: every vCPU's copy is the same.
        for vcpu in 0..self.vcpus {
            if let Some(vi) = self.vcpu_info(vcpu) {
                let _ = cx.mem.write(vi + TIME, t.as_bytes());
            }
        }
        self.stats.publishes += 1;
        if self.brk == Some(Break::PvclockOdd) {
            self.time.version = odd;
            return;
        }
        self.time.version = odd.wrapping_add(1);
        for vcpu in 0..self.vcpus {
            if let Some(vi) = self.vcpu_info(vcpu) {
                let _ = cx.mem.write(vi + TIME, &self.time.version.to_le_bytes());
            }
        }
    }

    /// GPA of vCPU `vcpu`'s `vcpu_info`: where `VCPUOP_register_vcpu_info`
    /// put it, else its slot in shared_info for vCPUs below
    /// `XEN_LEGACY_MAX_VCPUS` (xen.h), else nowhere yet.
    pub(super) fn vcpu_info(&self, vcpu: usize) -> Option<u64> {
        if let Some(gpa) = self.vcpu_ref(vcpu).vcpu_info {
            return Some(gpa);
        }
        let si = self.shared_info?;
        (vcpu < abi::XEN_LEGACY_MAX_VCPUS).then(|| si + abi::vcpu_info_offset(vcpu) as u64)
    }

    /// `VCPUOP_register_vcpu_info` for vCPU `vcpu` (Xen `map_vcpu_info`,
    /// common/domain.c): the structure must fit in the page (-EINVAL), a
    /// second registration is -EINVAL (it cannot be moved again), the
    /// frame must be guest RAM (-EINVAL). The old contents are carried
    /// over and, as Xen does "just to make sure nothing gets lost", every
    /// selector bit and the upcall flag are set and the upcall raised.
    pub(super) fn register_vcpu_info(
        &mut self,
        cx: &mut GuestCx<'_>,
        vcpu: usize,
        gfn: u64,
        offset: u32,
    ) -> Result<(), i64> {
        let einval = -abi::errno::EINVAL;
        if u64::from(offset) > PAGE - VCPU_INFO_SIZE {
            return Err(einval);
        }
        if self.vcpu_ref(vcpu).vcpu_info.is_some() {
            return Err(einval);
        }
        let gpa = gfn
            .checked_mul(PAGE)
            .ok_or(einval)?
            .checked_add(u64::from(offset))
            .ok_or(einval)?;
        if !cx.mem.contains(gpa, VCPU_INFO_SIZE) {
            return Err(einval);
        }
        let mut info = [0u8; VCPU_INFO_SIZE as usize];
        if let Some(old) = self.vcpu_info(vcpu) {
            cx.mem.read(old, &mut info).map_err(|_| einval)?;
        } else {
            // No slot before (vCPU 32 and up): the current pvclock.
            info[TIME as usize..].copy_from_slice(self.time.as_bytes());
        }
        cx.mem.write(gpa, &info).map_err(|_| einval)?;
        self.vcpu(vcpu).vcpu_info = Some(gpa);
        wr_u64(cx.mem, gpa + PENDING_SEL, u64::MAX);
        let _ = cx.mem.write(gpa + UPCALL_PENDING, &[1]);
        self.raise_callback(cx, vcpu);
        Ok(())
    }

    /// Re-publishes the pvclock when the last publication is old.
    pub(super) fn maybe_refresh(&mut self, cx: &mut GuestCx<'_>) {
        if self.brk == Some(Break::PvclockOdd) && self.stats.publishes != 0 {
            return;
        }
        let period = self.tsc_khz.saturating_mul(REFRESH_MS);
        let always = self.brk == Some(Break::PvclockBackwards);
        if period != 0 && (always || cx.now.wrapping_sub(self.time.tsc_timestamp) >= period) {
            self.publish(cx);
        }
    }

    /// The port `virq` of vCPU `vcpu` is bound to, if any (Xen's
    /// `v->virq_to_evtchn[]`).
    pub(super) fn port_of(&self, virq: u32, vcpu: usize) -> Option<u32> {
        (0..NR_PORTS)
            .find(|&i| {
                u8::try_from(virq).is_ok_and(|v| self.ports[i] == Port::Virq(v))
                    && usize::from(self.notify[i]) == vcpu
            })
            .map(|i| i as u32)
    }

    /// A free port (1..NR_PORTS), notifying vCPU `vcpu`.
    pub(super) fn alloc_port(&mut self, what: Port, vcpu: usize) -> Option<u32> {
        let i = (1..NR_PORTS).find(|&i| self.ports[i] == Port::Free)?;
        self.ports[i] = what;
        self.notify[i] = vcpu.min(MAX_VCPUS - 1) as u8;
        Some(i as u32)
    }

    /// Raises `virq` on vCPU `vcpu`'s port, if bound (Xen
    /// `send_guest_vcpu_virq`; unbound VIRQs are dropped).
    pub(super) fn send_virq(&mut self, cx: &mut GuestCx<'_>, virq: u32, vcpu: usize) {
        if let Some(port) = self.port_of(virq, vcpu) {
            self.set_pending(cx, port);
        }
    }

    /// Marks `port` pending, 2-level ABI (Xen `evtchn_2l_set_pending`): an
    /// already pending port is no new event; a masked one stays quiet; else
    /// its selector bit and then `evtchn_upcall_pending` are set, and the
    /// 0→1 transition of the latter raises the callback vector — once per
    /// new event, never again while the guest has not acknowledged. Before
    /// shared_info is mapped there is nowhere to record an event: dropped.
    /// The selector and upcall flag are those of the port's vCPU
    /// (`notify_vcpu_id`); a vCPU polling the port is woken, masked or not
    /// (Xen `evtchn_check_pollers`).
    pub(super) fn set_pending(&mut self, cx: &mut GuestCx<'_>, port: u32) {
        let Some(si) = self.shared_info else { return };
        let (word, bit) = abi::port_word_bit(port);
        let pending_at = si + abi::evtchn_pending_offset(word) as u64;
        let pending = rd_u64(cx.mem, pending_at);
        if pending & (1 << bit) != 0 {
            return;
        }
        wr_u64(cx.mem, pending_at, pending | 1 << bit);
        self.stats.events += 1;
        let vcpu = self
            .notify
            .get(port as usize)
            .map_or(0, |&v| usize::from(v));
        let mask = rd_u64(cx.mem, si + abi::evtchn_mask_offset(word) as u64);
        if mask & (1 << bit) == 0 {
            self.mark_selector(cx, vcpu, word);
        }
        for v in 0..self.vcpus {
            if self.per[v].poll.is_some_and(|p| p.ports & (1 << bit) != 0) && word == 0 {
                self.wake_poller(cx, v);
            }
        }
    }

    /// Sets the selector bit of `word` in vCPU `vcpu`'s `vcpu_info` and,
    /// on its 0→1 transition, the upcall.
    fn mark_selector(&mut self, cx: &mut GuestCx<'_>, vcpu: usize, word: usize) {
        let Some(vi) = self.vcpu_info(vcpu) else {
            return;
        };
        let sel = rd_u64(cx.mem, vi + PENDING_SEL);
        if sel & (1 << word) != 0 {
            return;
        }
        wr_u64(cx.mem, vi + PENDING_SEL, sel | 1 << word);
        if rd_u8(cx.mem, vi + UPCALL_PENDING) != 0 {
            return;
        }
        // Xen `vcpu_mark_events_pending`: the 0→1 of the flag raises it.
        let _ = cx.mem.write(vi + UPCALL_PENDING, &[1]);
        self.raise_callback(cx, vcpu);
    }

    /// Raises vCPU `vcpu`'s upcall (Xen `hvm_assert_evtchn_irq`): its
    /// upcall vector through its virtual APIC, else the callback-via vector
    /// (which [`Xen::poll`](super::Xen) keeps asserted while the flag is
    /// set). Another vCPU's APIC is reached through an IPI request, which
    /// also wakes it if halted (Xen's `vcpu_kick`).
    pub(super) fn raise_callback(&mut self, cx: &mut GuestCx<'_>, vcpu: usize) {
        let Some(v) = self
            .vcpu_ref(vcpu)
            .upcall_vector
            .or(self.callback_vector(vcpu))
        else {
            return;
        };
        self.stats.upcalls += 1;
        if vcpu == cx.vcpu {
            cx.apic.raise(v);
        } else if vcpu < 32 {
            self.stats.cross_events += 1;
            cx.requests.ipi(1 << vcpu, v);
        }
    }

    /// Whether vCPU `vcpu` has an upcall pending.
    pub(super) fn upcall_pending(&self, cx: &GuestCx<'_>, vcpu: usize) -> bool {
        self.vcpu_info(vcpu)
            .is_some_and(|vi| rd_u8(cx.mem, vi + UPCALL_PENDING) != 0)
    }

    /// Whether `port` is pending in shared_info.
    pub(super) fn port_pending(&self, cx: &GuestCx<'_>, port: u32) -> bool {
        let Some(si) = self.shared_info else {
            return false;
        };
        let (word, bit) = abi::port_word_bit(port);
        rd_u64(cx.mem, si + abi::evtchn_pending_offset(word) as u64) & (1 << bit) != 0
    }

    /// Blocks the calling vCPU in `SCHEDOP_poll` on `ports` until host TSC
    /// `deadline` (if any).
    pub(super) fn block_poll(&mut self, cx: &mut GuestCx<'_>, ports: u64, deadline: Option<u64>) {
        self.stats.polls_blocked += 1;
        self.vcpu(cx.vcpu).poll = Some(Poll { ports, deadline });
        cx.requests.block = true;
    }

    /// `EVTCHNOP_unmask` (Xen `evtchn_2l_unmask`): clears the mask bit; a
    /// port that was pending meanwhile now notifies.
    pub(super) fn unmask(&mut self, cx: &mut GuestCx<'_>, port: u32) {
        let Some(si) = self.shared_info else { return };
        let (word, bit) = abi::port_word_bit(port);
        let mask_at = si + abi::evtchn_mask_offset(word) as u64;
        let mask = rd_u64(cx.mem, mask_at);
        wr_u64(cx.mem, mask_at, mask & !(1 << bit));
        let pending = rd_u64(cx.mem, si + abi::evtchn_pending_offset(word) as u64);
        if mask & (1 << bit) != 0 && pending & (1 << bit) != 0 {
            let vcpu = self
                .notify
                .get(port as usize)
                .map_or(0, |&v| usize::from(v));
            self.mark_selector(cx, vcpu, word);
        }
    }

    /// Writes the calling vCPU's runstate area (if registered) from
    /// [`Xen::runstate_info`].
    pub(super) fn update_runstate(&mut self, cx: &mut GuestCx<'_>) {
        let Some(r) = self.vcpu_ref(cx.vcpu).runstate else {
            return;
        };
        let info = self.runstate_info(cx);
        // An area the guest unmapped since is skipped (Xen ignores a
        // failing copy too).
        let _ = cx.write_virt(r.gva, info.as_bytes());
    }

    /// Moves the calling vCPU to runstate `state` now (several vCPUs: a
    /// context switch, [`Persona::descheduled`], or its next entry) and
    /// writes its area.
    pub(super) fn enter_runstate(&mut self, cx: &mut GuestCx<'_>, state: usize) {
        let now = self.system_ns(cx.now);
        let v = self.vcpu(cx.vcpu);
        v.start_accounting(now);
        if v.state == abi::RUNSTATE_RUNNING {
            v.running_ns += now.saturating_sub(v.entry_ns);
        }
        v.state = state;
        v.entry_ns = now;
        self.update_runstate(cx);
    }

    /// The calling vCPU's `vcpu_runstate_info` now, since the accounting
    /// began (its first registration or query).
    ///
    /// With one vCPU it is always running: `time[running]` is all the
    /// time since, the rest 0, and `state_entry_time` the time of this
    /// update, so the guest's before/after check sees it move.
    ///
    /// With several, `state` is what the scheduler made it
    /// ([`Xen::enter_runstate`]) since `state_entry_time`;
    /// `time[running]` is the time it ran as the persona saw it (entry
    /// to descheduling), `time[runnable]` the scheduler's stolen time
    /// (runnable while another vCPU ran: exact, the figure the steal
    /// agreement checks), `time[blocked]` the rest (halted or polling);
    /// offline stays 0 (no vCPU is ever paused).
    pub(super) fn runstate_info(&mut self, cx: &mut GuestCx<'_>) -> VcpuRunstateInfo {
        let now = self.system_ns(cx.now);
        let smp = self.vcpus > 1;
        let v = self.vcpu(cx.vcpu);
        v.start_accounting(now);
        let total = now.saturating_sub(v.since_ns.unwrap_or(now));
        let mut info = VcpuRunstateInfo {
            state: abi::RUNSTATE_RUNNING as i32,
            state_entry_time: now,
            ..Default::default()
        };
        if !smp {
            info.time[abi::RUNSTATE_RUNNING] = total;
            return info;
        }
        let mut running = v.running_ns;
        if v.state == abi::RUNSTATE_RUNNING {
            running += now.saturating_sub(v.entry_ns);
        }
        info.state = v.state as i32;
        info.state_entry_time = v.entry_ns;
        info.time[abi::RUNSTATE_RUNNING] = running;
        info.time[abi::RUNSTATE_RUNNABLE] = cx.steal_ns;
        info.time[abi::RUNSTATE_BLOCKED] =
            total.saturating_sub(running).saturating_sub(cx.steal_ns);
        info
    }

    /// Registers (or with 0, unregisters) the calling vCPU's runstate area
    /// at `gva`.
    /// Any vCPU's area may be registered (Xen `do_vcpu_op` has no
    /// `v != current` check here); it is written at once for the calling
    /// vCPU, else when that vCPU next runs (as Xen does).
    pub(super) fn register_runstate(
        &mut self,
        cx: &mut GuestCx<'_>,
        vcpu: usize,
        gva: u64,
    ) -> Result<(), i64> {
        if gva == 0 {
            self.vcpu(vcpu).runstate = None;
            return Ok(());
        }
        // The whole area must be mapped onto guest RAM now.
        let mut probe = [0u8; core::mem::size_of::<VcpuRunstateInfo>()];
        cx.read_virt(gva, &mut probe).ok_or(-abi::errno::EFAULT)?;
        self.vcpu(vcpu).runstate = Some(Runstate { gva });
        if vcpu == cx.vcpu {
            self.update_runstate(cx);
        }
        Ok(())
    }
}
