//! Memory the persona shares with the guest: the hypercall page,
//! shared_info (vCPU 0's pvclock, the 2-level event-channel words) and the
//! runstate area. All of it lives in guest RAM and is written through the
//! bounds-checked [`GuestRam`](crate::guest::mem::GuestRam) (shared_info by
//! guest-physical address, the runstate area by guest-virtual address);
//! the guest is not running while the persona writes, so no update is ever
//! seen half done.

use super::{Break, Port, Runstate, Xen, NR_PORTS};
use crate::guest::mem::GuestRam;
use crate::guest::Gp;
use crate::personas::GuestCx;
use core::mem::offset_of;
use pvops_abi::pvclock::VcpuTimeInfo;
use pvops_abi::xen::{self as abi, VcpuInfo, VcpuRunstateInfo};
use zerocopy::IntoBytes;

const PAGE: u64 = 4096;
/// vCPU 0's `vcpu_info` in shared_info.
const VCPU0: u64 = abi::vcpu_info_offset(0) as u64;
const UPCALL_PENDING: u64 = VCPU0 + offset_of!(VcpuInfo, evtchn_upcall_pending) as u64;
const PENDING_SEL: u64 = VCPU0 + offset_of!(VcpuInfo, evtchn_pending_sel) as u64;
const TIME: u64 = VCPU0 + offset_of!(VcpuInfo, time) as u64;
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
        let Some(si) = self.shared_info else { return };
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
        let _ = cx.mem.write(si + TIME, t.as_bytes());
        self.stats.publishes += 1;
        if self.brk == Some(Break::PvclockOdd) {
            self.time.version = odd;
            return;
        }
        self.time.version = odd.wrapping_add(1);
        let _ = cx.mem.write(si + TIME, &self.time.version.to_le_bytes());
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

    /// The port `virq` is bound to, if any.
    pub(super) fn port_of(&self, virq: u32) -> Option<u32> {
        self.ports
            .iter()
            .position(|p| u8::try_from(virq).is_ok_and(|v| *p == Port::Virq(v)))
            .map(|i| i as u32)
    }

    /// A free port (1..NR_PORTS).
    pub(super) fn alloc_port(&mut self, what: Port) -> Option<u32> {
        let i = (1..NR_PORTS).find(|&i| self.ports[i] == Port::Free)?;
        self.ports[i] = what;
        Some(i as u32)
    }

    /// Raises `virq` on its port, if bound (Xen `send_guest_vcpu_virq`;
    /// unbound VIRQs are dropped).
    pub(super) fn send_virq(&mut self, cx: &mut GuestCx<'_>, virq: u32) {
        if let Some(port) = self.port_of(virq) {
            self.set_pending(cx, port);
        }
    }

    /// Marks `port` pending, 2-level ABI (Xen `evtchn_2l_set_pending`): an
    /// already pending port is no new event; a masked one stays quiet; else
    /// its selector bit and then `evtchn_upcall_pending` are set, and the
    /// 0→1 transition of the latter raises the callback vector — once per
    /// new event, never again while the guest has not acknowledged. Before
    /// shared_info is mapped there is nowhere to record an event: dropped.
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
        let mask = rd_u64(cx.mem, si + abi::evtchn_mask_offset(word) as u64);
        if mask & (1 << bit) == 0 {
            self.mark_selector(cx, si, word);
        }
    }

    /// Sets the selector bit of `word` and, on its 0→1 transition, the
    /// upcall.
    fn mark_selector(&mut self, cx: &mut GuestCx<'_>, si: u64, word: usize) {
        let sel = rd_u64(cx.mem, si + PENDING_SEL);
        if sel & (1 << word) != 0 {
            return;
        }
        wr_u64(cx.mem, si + PENDING_SEL, sel | 1 << word);
        self.mark_upcall(cx, si);
    }

    /// Sets `evtchn_upcall_pending`; on its 0→1 transition raises the
    /// callback vector (Xen `vcpu_mark_events_pending`).
    fn mark_upcall(&mut self, cx: &mut GuestCx<'_>, si: u64) {
        if rd_u8(cx.mem, si + UPCALL_PENDING) != 0 {
            return;
        }
        let _ = cx.mem.write(si + UPCALL_PENDING, &[1]);
        self.raise_callback(cx);
    }

    /// Raises the upcall (Xen `hvm_assert_evtchn_irq`): the per-vCPU
    /// vector through the virtual APIC, else the callback-via vector (which
    /// [`Xen::poll`](super::Xen) keeps asserted while the flag is set).
    pub(super) fn raise_callback(&mut self, cx: &mut GuestCx<'_>) {
        if let Some(v) = self.upcall_vector.or(self.callback_vector()) {
            cx.apic.raise(v);
            self.stats.upcalls += 1;
        }
    }

    /// Whether vCPU 0 has an upcall pending.
    pub(super) fn upcall_pending(&self, cx: &GuestCx<'_>) -> bool {
        self.shared_info
            .is_some_and(|si| rd_u8(cx.mem, si + UPCALL_PENDING) != 0)
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
            self.mark_selector(cx, si, word);
        }
    }

    /// Writes the runstate area: vCPU 0 has been `RUNSTATE_running` since
    /// registration (the persona never deschedules it; halted time is not
    /// told apart), so `time[running]` is all the time since then and
    /// runnable/blocked/offline stay 0. `state_entry_time` is the time of
    /// this update, so the guest's before/after check sees it move.
    pub(super) fn update_runstate(&mut self, cx: &mut GuestCx<'_>) {
        let Some(r) = self.runstate else { return };
        let now = self.system_ns(cx.now);
        let mut info = VcpuRunstateInfo {
            state: abi::RUNSTATE_RUNNING as i32,
            state_entry_time: now,
            ..Default::default()
        };
        info.time[abi::RUNSTATE_RUNNING] = now.saturating_sub(r.since_ns);
        // An area the guest unmapped since is skipped (Xen ignores a
        // failing copy too).
        let _ = cx.write_virt(r.gva, info.as_bytes());
    }

    /// Registers (or with 0, unregisters) the runstate area at `gva`.
    pub(super) fn register_runstate(&mut self, cx: &mut GuestCx<'_>, gva: u64) -> Result<(), i64> {
        if gva == 0 {
            self.runstate = None;
            return Ok(());
        }
        // The whole area must be mapped onto guest RAM now.
        let mut probe = [0u8; core::mem::size_of::<VcpuRunstateInfo>()];
        cx.read_virt(gva, &mut probe).ok_or(-abi::errno::EFAULT)?;
        let since_ns = match self.runstate {
            Some(r) => r.since_ns,
            None => self.system_ns(cx.now),
        };
        self.runstate = Some(Runstate { gva, since_ns });
        self.update_runstate(cx);
        Ok(())
    }
}
