//! Host tests' guest: a RAM buffer behind [`GuestRam`] with paging off
//! (guest-virtual = guest-physical), a register set, a virtual APIC and a
//! clock, shared by the personas' tests.

extern crate std;
use super::GuestCx;
use crate::guest::mem::GuestRam;
use crate::svm::{vmcb::StateSave, vmrun::GuestRegs};
use crate::vapic::VApic;
use std::vec::Vec;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

/// Guest RAM size.
pub const RAM: usize = 64 * 1024;
/// The TSC (and virtual APIC) rate in kHz.
pub const KHZ: u64 = 2_000_000;

/// One guest: its memory, registers, APIC and the time (host TSC) now.
pub struct Guest {
    _ram: Vec<u64>,
    pub mem: GuestRam,
    pub state: StateSave,
    pub regs: GuestRegs,
    pub apic: VApic,
    pub now: u64,
    /// The vCPU the handler runs for, of `vcpus`.
    pub vcpu: usize,
    pub vcpus: usize,
    pub steal_ns: u64,
    /// Polled from the idle loop (the current vCPU is halted).
    pub idle: bool,
    /// What the handlers asked of other vCPUs.
    pub requests: crate::personas::Requests,
}

impl Guest {
    /// A zeroed guest at TSC 1 000 000.
    pub fn new() -> Guest {
        let ram = std::vec![0u64; RAM / 8];
        // SAFETY: the buffer is this test's own, lives as long as `Guest`
        // and is accessed only through `mem` (host tests: addresses are
        // host pointers).
        let mem = unsafe { GuestRam::new(ram.as_ptr() as u64, RAM as u64) };
        Guest {
            _ram: ram,
            mem,
            state: StateSave::new_zeroed(),
            regs: GuestRegs::default(),
            apic: VApic::new(KHZ),
            now: 1_000_000,
            vcpu: 0,
            vcpus: 1,
            steal_ns: 0,
            idle: false,
            requests: Default::default(),
        }
    }

    /// The context a persona handler gets.
    pub fn cx(&mut self) -> GuestCx<'_> {
        GuestCx {
            state: &mut self.state,
            regs: &mut self.regs,
            mem: &self.mem,
            now: self.now,
            tsc_khz: KHZ,
            apic: &mut self.apic,
            vcpu: self.vcpu,
            vcpus: self.vcpus,
            steal_ns: self.steal_ns,
            idle: self.idle,
            requests: &mut self.requests,
        }
    }

    /// Writes `v` at `gpa`.
    pub fn put<T: IntoBytes + Immutable>(&self, gpa: u64, v: &T) {
        self.mem.write(gpa, v.as_bytes()).unwrap();
    }

    /// Reads a `T` at `gpa`.
    pub fn get<T: FromBytes + IntoBytes>(&self, gpa: u64) -> T {
        let mut v = T::new_zeroed();
        self.mem.read(gpa, v.as_mut_bytes()).unwrap();
        v
    }
}
