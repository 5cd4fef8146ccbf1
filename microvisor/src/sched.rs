//! The vCPU scheduler: round robin over the runnable vCPUs of the one
//! guest on the one physical CPU, with a fixed time slice, and the
//! accounting of each vCPU's runnable-but-not-running ("stolen") time.
//! Pure: times are host TSC ticks passed in by the caller, which enforces
//! the decisions (the host timer preempts a vCPU at the end of its slice
//! whatever the guest's IF, `vcpu/mod.rs`).

use crate::config::MAX_VCPUS;

/// What a vCPU is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Can run (running, if it is the current one).
    Runnable,
    /// Executed HLT with interrupts enabled: waits for an interrupt.
    Halted,
    /// An AP after power-on or INIT: waits for a Start-up IPI (Intel SDM
    /// vol. 3A, 9.4.2 "wait-for-SIPI").
    WaitForSipi,
    /// An AP that executed HLT with interrupts disabled: only INIT can
    /// revive it (the microvisor models no NMI).
    Stopped,
}

impl State {
    /// Name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            State::Runnable => "runnable",
            State::Halted => "halted",
            State::WaitForSipi => "wait-for-sipi",
            State::Stopped => "stopped",
        }
    }
}

/// The scheduler.
#[derive(Clone, Debug)]
pub struct Sched {
    n: usize,
    state: [State; MAX_VCPUS],
    current: usize,
    slice: u64,
    slice_start: u64,
    /// Since when a runnable vCPU other than the current one waits.
    waiting_since: [Option<u64>; MAX_VCPUS],
    stolen: [u64; MAX_VCPUS],
    /// vCPU switches.
    pub switches: u64,
    /// Switches forced by the end of a slice.
    pub preemptions: u64,
}

impl Sched {
    /// `n` vCPUs (1..=[`MAX_VCPUS`]): vCPU 0 runnable and current, the
    /// others waiting for SIPI; a slice of `slice` ticks starting at `now`.
    pub fn new(n: usize, slice: u64, now: u64) -> Self {
        let n = n.clamp(1, MAX_VCPUS);
        let mut state = [State::WaitForSipi; MAX_VCPUS];
        state[0] = State::Runnable;
        Sched {
            n,
            state,
            current: 0,
            slice: slice.max(1),
            slice_start: now,
            waiting_since: [None; MAX_VCPUS],
            stolen: [0; MAX_VCPUS],
            switches: 0,
            preemptions: 0,
        }
    }

    /// Number of vCPUs.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there is no vCPU (never: at least one).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The vCPU on the physical CPU.
    pub fn current(&self) -> usize {
        self.current
    }

    /// vCPU `i`'s state.
    pub fn state(&self, i: usize) -> State {
        self.state[i]
    }

    /// Sets vCPU `i`'s state at `now`, keeping the stolen-time accounting.
    pub fn set_state(&mut self, i: usize, s: State, now: u64) {
        if i >= self.n {
            return;
        }
        self.state[i] = s;
        if i == self.current {
            return;
        }
        match (s, self.waiting_since[i]) {
            (State::Runnable, None) => self.waiting_since[i] = Some(now),
            (State::Runnable, Some(_)) => {}
            (_, Some(t)) => {
                self.stolen[i] += now.saturating_sub(t);
                self.waiting_since[i] = None;
            }
            (_, None) => {}
        }
    }

    /// Whether any vCPU is in state `s`.
    pub fn any(&self, s: State) -> bool {
        self.state[..self.n].contains(&s)
    }

    /// The next runnable vCPU after the current one in round-robin order,
    /// other than the current one.
    pub fn next_other(&self) -> Option<usize> {
        (1..self.n)
            .map(|k| (self.current + k) % self.n)
            .find(|&i| self.state[i] == State::Runnable)
    }

    /// When the current slice ends, if another vCPU waits to run (nothing
    /// to preempt for otherwise).
    pub fn slice_end(&self) -> Option<u64> {
        self.next_other()
            .map(|_| self.slice_start.saturating_add(self.slice))
    }

    /// The vCPU to run next at `now`: the current one while it is
    /// runnable and its slice lasts (or nobody else is runnable), else the
    /// next runnable one; `None` when no vCPU is runnable.
    pub fn pick(&self, now: u64) -> Option<usize> {
        let cur_ok = self.state[self.current] == State::Runnable;
        let other = self.next_other();
        match (cur_ok, other) {
            (true, Some(o)) if now >= self.slice_start.saturating_add(self.slice) => Some(o),
            (true, _) => Some(self.current),
            (false, o) => o,
        }
    }

    /// Makes `i` the current vCPU at `now` with a fresh slice. Counts a
    /// preemption when the previous one was still runnable.
    pub fn switch_to(&mut self, i: usize, now: u64) {
        if i >= self.n || i == self.current {
            self.slice_start = now;
            return;
        }
        let old = self.current;
        self.switches += 1;
        if self.state[old] == State::Runnable {
            self.preemptions += 1;
            self.waiting_since[old] = Some(now);
        }
        if let Some(t) = self.waiting_since[i].take() {
            self.stolen[i] += now.saturating_sub(t);
        }
        self.current = i;
        self.slice_start = now;
    }

    /// Ends the current slice at `now` (a yield): the next [`Sched::pick`]
    /// runs another runnable vCPU if there is one.
    pub fn end_slice(&mut self, now: u64) {
        self.slice_start = now.saturating_sub(self.slice);
    }

    /// vCPU `i`'s stolen time up to `now` in ticks: runnable while another
    /// vCPU ran.
    pub fn stolen(&self, i: usize, now: u64) -> u64 {
        let ongoing = self.waiting_since[i].map_or(0, |t| now.saturating_sub(t));
        self.stolen[i] + ongoing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_with_the_boot_cpu_alone() {
        let s = Sched::new(4, 100, 0);
        assert_eq!(s.current(), 0);
        assert_eq!(s.state(1), State::WaitForSipi);
        assert_eq!(s.pick(1_000_000), Some(0), "nobody else to run");
        assert_eq!(s.slice_end(), None, "nothing to preempt for");
        assert_eq!(Sched::new(0, 0, 0).len(), 1);
        assert_eq!(Sched::new(99, 1, 0).len(), MAX_VCPUS);
    }

    #[test]
    fn round_robin_with_slices() {
        let mut s = Sched::new(3, 100, 0);
        s.set_state(1, State::Runnable, 0);
        s.set_state(2, State::Runnable, 0);
        assert_eq!(s.slice_end(), Some(100));
        assert_eq!(s.pick(99), Some(0));
        assert_eq!(s.pick(100), Some(1));
        s.switch_to(1, 100);
        assert_eq!(s.pick(150), Some(1));
        assert_eq!(s.pick(200), Some(2));
        s.switch_to(2, 200);
        assert_eq!(s.pick(300), Some(0), "wraps around");
        s.switch_to(0, 300);
        assert_eq!((s.switches, s.preemptions), (3, 3));
        // vCPU 1 waited 0..100 and 200..300; 2 waited 0..200.
        assert_eq!(s.stolen(1, 300), 200);
        assert_eq!(s.stolen(2, 300), 200);
        assert_eq!(s.stolen(0, 300), 200);
        assert_eq!(s.stolen(1, 350), 250, "still waiting");
    }

    #[test]
    fn halting_yields_and_wakes() {
        let mut s = Sched::new(2, 100, 0);
        s.set_state(1, State::Runnable, 10);
        s.set_state(0, State::Halted, 20);
        // The current vCPU halted: the other runs at once, slice or not.
        assert_eq!(s.pick(20), Some(1));
        s.switch_to(1, 20);
        assert_eq!(s.preemptions, 0, "a halt is no preemption");
        assert_eq!(s.stolen(1, 20), 10);
        assert_eq!(s.stolen(0, 500), 0, "halted is not stolen");
        assert_eq!(s.slice_end(), None);
        // vCPU 0 woken (an IPI): it waits for 1's slice to end.
        s.set_state(0, State::Runnable, 50);
        assert_eq!(s.slice_end(), Some(120));
        assert_eq!(s.pick(119), Some(1));
        assert_eq!(s.pick(120), Some(0));
        s.switch_to(0, 120);
        assert_eq!(s.stolen(0, 120), 70);
        // Everybody halted: nothing to run.
        s.set_state(0, State::Halted, 130);
        s.set_state(1, State::Halted, 130);
        assert_eq!(s.pick(130), None);
        assert!(s.any(State::Halted) && !s.any(State::Runnable));
        assert_eq!(s.stolen(1, 1000), 10 + 10, "1 waited 120..130 as well");
    }

    #[test]
    fn a_spinning_vcpu_cannot_starve_the_others() {
        // vCPU 0 never halts; 1 and 2 are runnable: every slice end hands
        // the CPU on, so each runs within 2 slices.
        let mut s = Sched::new(3, 100, 0);
        s.set_state(1, State::Runnable, 0);
        s.set_state(2, State::Runnable, 0);
        let mut ran = [0u32; 3];
        let mut now = 0;
        for _ in 0..30 {
            now += 100;
            let next = s.pick(now).unwrap();
            s.switch_to(next, now);
            ran[next] += 1;
        }
        assert_eq!(ran, [10, 10, 10]);
        assert!(s.stolen(1, now) <= 2 * 100 * 10 + 200);
    }

    #[test]
    fn states_outside_the_range_are_ignored() {
        let mut s = Sched::new(2, 100, 0);
        s.set_state(5, State::Runnable, 0);
        s.switch_to(5, 0);
        assert_eq!(s.current(), 0);
        assert_eq!(State::WaitForSipi.name(), "wait-for-sipi");
    }
}
