//! The operations table itself, generated from one list of entries.

use crate::native;
use pvops_probe::CpuidResult;
use x86::dtables::DescriptorTablePointer;

/// A typed handle to one table entry, used by backends to replace it
/// (see [`crate::patch::Patch::set`]).
pub struct Slot<F: 'static> {
    pub(crate) entry: Entry,
    pub(crate) field: fn(&mut Table) -> &mut F,
}

impl<F> Slot<F> {
    /// The entry this slot refers to.
    pub const fn entry(&self) -> Entry {
        self.entry
    }
}

/// One entry of the table, for queries such as [`crate::owner`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry(pub(crate) u8);

macro_rules! define_table {
    ($(
        $(#[$gdoc:meta])*
        $group:ident : $Group:ident {
            $( $(#[$doc:meta])* $name:ident [$SLOT:ident] : $ty:ty = $native:path ; )*
        }
    )*) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        enum Index { $( $( $SLOT, )* )* }

        /// Number of entries in the table.
        pub const ENTRY_COUNT: usize = [$( $( stringify!($SLOT), )* )*].len();

        const NAMES: [&str; ENTRY_COUNT] = [$( $( concat!(stringify!($group), ".", stringify!($name)), )* )*];

        $(
            $(#[$gdoc])*
            #[derive(Clone, Copy)]
            pub struct $Group { $( $(#[$doc])* pub $name: $ty, )* }
        )*

        /// The operations table: one function per operation, in groups.
        #[derive(Clone, Copy)]
        pub struct Table { $( #[allow(missing_docs)] pub $group: $Group, )* }

        impl Table {
            /// Every entry at its native implementation.
            pub const NATIVE: Table = Table { $( $group: $Group { $( $name: $native, )* }, )* };
        }

        /// Byte offset of each entry's function pointer inside [`Table`],
        /// in table order (what a call site's `call [rip + slot]` addresses).
        pub(crate) const SLOT_OFFSETS: [usize; ENTRY_COUNT] = [
            $( $( core::mem::offset_of!(Table, $group.$name), )* )*
        ];

        /// Entry indices by slot name, for the call-site macro.
        pub(crate) mod index {
            $( $(
                #[allow(dead_code)]
                pub(crate) const $SLOT: u8 = super::Index::$SLOT as u8;
            )* )*
        }

        impl Table {
            /// Address of the function `entry` points at in this table.
            pub(crate) fn function_address(&self, entry: Entry) -> Option<usize> {
                let mut i = 0usize;
                $( $(
                    if i == entry.index() {
                        return Some(self.$group.$name as usize);
                    }
                    i += 1;
                )* )*
                let _ = i;
                None
            }
        }

        /// Typed handles to every entry, for backends.
        pub mod slot {
            use super::*;
            $( $(
                #[doc = concat!("Slot of `", stringify!($group), ".", stringify!($name), "`.")]
                pub const $SLOT: Slot<$ty> = Slot {
                    entry: Entry(Index::$SLOT as u8),
                    field: |t: &mut Table| &mut t.$group.$name,
                };
            )* )*
        }
    };
}

impl Entry {
    /// Every entry in table order.
    pub fn all() -> impl Iterator<Item = Entry> + Clone {
        (0..ENTRY_COUNT as u8).map(Entry)
    }

    /// Stable dotted name, such as `"time.monotonic_ns"`.
    pub fn name(self) -> &'static str {
        NAMES.get(usize::from(self.0)).copied().unwrap_or("?")
    }

    /// Looks an entry up by its dotted name.
    pub fn from_name(name: &str) -> Option<Entry> {
        NAMES
            .iter()
            .position(|&n| n == name)
            .map(|i| Entry(i as u8))
    }

    pub(crate) fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl core::fmt::Display for Entry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

define_table! {
    /// CPU operations: identification, model-specific and control registers,
    /// descriptor tables, caches, halting and I/O delay.
    cpu: CpuOps {
        /// Executes CPUID (a backend may filter feature bits).
        cpuid [CPU_CPUID]: extern "C" fn(u32, u32) -> CpuidResult = native::cpu::cpuid;
        /// Reads a model-specific register.
        read_msr [CPU_READ_MSR]: unsafe extern "C" fn(u32) -> u64 = native::cpu::read_msr;
        /// Writes a model-specific register.
        write_msr [CPU_WRITE_MSR]: unsafe extern "C" fn(u32, u64) = native::cpu::write_msr;
        /// Reads CR0.
        read_cr0 [CPU_READ_CR0]: extern "C" fn() -> u64 = native::cpu::read_cr0;
        /// Writes CR0.
        write_cr0 [CPU_WRITE_CR0]: unsafe extern "C" fn(u64) = native::cpu::write_cr0;
        /// Reads CR4.
        read_cr4 [CPU_READ_CR4]: extern "C" fn() -> u64 = native::cpu::read_cr4;
        /// Writes CR4.
        write_cr4 [CPU_WRITE_CR4]: unsafe extern "C" fn(u64) = native::cpu::write_cr4;
        /// Loads the interrupt descriptor table register.
        load_idt [CPU_LOAD_IDT]: unsafe extern "C" fn(&DescriptorTablePointer<u64>) = native::cpu::load_idt;
        /// Loads the global descriptor table register.
        load_gdt [CPU_LOAD_GDT]: unsafe extern "C" fn(&DescriptorTablePointer<u64>) = native::cpu::load_gdt;
        /// Writes back and invalidates caches.
        wbinvd [CPU_WBINVD]: extern "C" fn() = native::cpu::wbinvd;
        /// Halts until the next interrupt (interrupt flag unchanged).
        halt [CPU_HALT]: extern "C" fn() = native::cpu::halt;
        /// Delays for about one legacy I/O bus cycle (port 0x80 natively).
        io_delay [CPU_IO_DELAY]: extern "C" fn() = native::cpu::io_delay;
        /// Reads the time-stamp counter.
        read_tsc [CPU_READ_TSC]: extern "C" fn() -> u64 = native::cpu::read_tsc;
    }

    /// MMU operations: paging registers, TLB flushes and lazy (batched) mode.
    mmu: MmuOps {
        /// Reads CR2 (the faulting address).
        read_cr2 [MMU_READ_CR2]: extern "C" fn() -> u64 = native::mmu::read_cr2;
        /// Reads CR3.
        read_cr3 [MMU_READ_CR3]: extern "C" fn() -> u64 = native::mmu::read_cr3;
        /// Writes CR3 (switches address space).
        write_cr3 [MMU_WRITE_CR3]: unsafe extern "C" fn(u64) = native::mmu::write_cr3;
        /// Flushes the TLB entry of one virtual address on this CPU.
        flush_page [MMU_FLUSH_PAGE]: extern "C" fn(u64) = native::mmu::flush_page;
        /// Flushes every non-global TLB entry on this CPU.
        flush_all [MMU_FLUSH_ALL]: extern "C" fn() = native::mmu::flush_all;
        /// Flushes every TLB entry on this CPU, global ones included.
        flush_all_global [MMU_FLUSH_ALL_GLOBAL]: extern "C" fn() = native::mmu::flush_all_global;
        /// Enters lazy MMU mode: page-table updates may be batched.
        lazy_enter [MMU_LAZY_ENTER]: extern "C" fn() = native::mmu::lazy_enter;
        /// Leaves lazy MMU mode, making every batched update visible.
        lazy_leave [MMU_LAZY_LEAVE]: extern "C" fn() = native::mmu::lazy_leave;
        /// Makes batched updates visible without leaving lazy mode.
        lazy_flush [MMU_LAZY_FLUSH]: extern "C" fn() = native::mmu::lazy_flush;
        /// Flushes `target` on the CPUs in a mask of APIC IDs 0..64
        /// (including this one if its bit is set).
        flush_remote [MMU_FLUSH_REMOTE]: extern "C" fn(u64, crate::mmu::FlushTarget) = native::mmu::flush_remote;
    }

    /// Interrupt operations: the interrupt flag, idling, EOI and IPIs.
    irq: IrqOps {
        /// Returns RFLAGS (only the IF bit is meaningful to callers).
        save_flags [IRQ_SAVE_FLAGS]: extern "C" fn() -> u64 = native::irq::save_flags;
        /// Restores the interrupt flag from a value of `save_flags`.
        restore_flags [IRQ_RESTORE_FLAGS]: extern "C" fn(u64) = native::irq::restore_flags;
        /// Disables interrupts on this CPU.
        disable [IRQ_DISABLE]: extern "C" fn() = native::irq::disable;
        /// Enables interrupts on this CPU.
        enable [IRQ_ENABLE]: extern "C" fn() = native::irq::enable;
        /// Enables interrupts and halts, atomically (no lost wake-up).
        safe_halt [IRQ_SAFE_HALT]: extern "C" fn() = native::irq::safe_halt;
        /// Signals end of interrupt to the local APIC.
        eoi [IRQ_EOI]: extern "C" fn() = native::irq::eoi;
        /// Sends a fixed interrupt `vector` to the CPU with APIC ID `dest`.
        send_ipi [IRQ_SEND_IPI]: extern "C" fn(u32, u8) = native::irq::send_ipi;
        /// Sends fixed interrupt `vector` to every CPU in a mask of APIC IDs 0..64.
        send_ipi_mask [IRQ_SEND_IPI_MASK]: extern "C" fn(u64, u8) = native::irq::send_ipi_mask;
    }

    /// Time operations: TSC and timer frequencies, the clock, the one-shot
    /// timer and steal time.
    time: TimeOps {
        /// TSC frequency and where it came from.
        tsc_frequency [TIME_TSC_FREQUENCY]: extern "C" fn() -> crate::time::TscFrequency = native::time::tsc_frequency;
        /// Local APIC timer input frequency in kHz (0 when unknown).
        apic_timer_khz [TIME_APIC_TIMER_KHZ]: extern "C" fn() -> u64 = native::time::apic_timer_khz;
        /// Monotonic clock in nanoseconds since an arbitrary origin.
        monotonic_ns [TIME_MONOTONIC_NS]: extern "C" fn() -> u64 = native::time::monotonic_ns;
        /// Routes one-shot timer events to `vector` on this CPU.
        timer_setup [TIME_TIMER_SETUP]: extern "C" fn(u8) = native::time::timer_setup;
        /// Arms the one-shot timer to fire `delta_ns` from now.
        timer_arm [TIME_TIMER_ARM]: extern "C" fn(u64) = native::time::timer_arm;
        /// Cancels the one-shot timer.
        timer_cancel [TIME_TIMER_CANCEL]: extern "C" fn() = native::time::timer_cancel;
        /// Nanoseconds this CPU was runnable but not running (0 natively).
        steal_ns [TIME_STEAL_NS]: extern "C" fn() -> u64 = native::time::steal_ns;
        /// Acknowledges a timer event at the start of the timer interrupt
        /// handler (a paravirtual timer may need its event source cleared;
        /// nothing to do natively).
        timer_ack [TIME_TIMER_ACK]: extern "C" fn() = native::time::timer_ack;
    }

    /// System operations: ending the run and reporting a crash.
    system: SystemOps {
        /// Powers the machine off (or reports a crash) and returns only if
        /// that did not happen, so the caller can try something else.
        shutdown [SYSTEM_SHUTDOWN]: extern "C" fn(crate::system::ShutdownReason) = native::system::shutdown;
        /// Hands a crash message to the hypervisor before the kernel dies
        /// (nothing to do natively).
        report_crash [SYSTEM_REPORT_CRASH]: extern "C" fn(&&str) = native::system::report_crash;
    }

    /// Lock operations: what a spinlock waiter and its releaser ask of the
    /// hypervisor ([`crate::lock`]): sleep until a word changes, wake a CPU,
    /// and whether a CPU's vCPU is preempted.
    lock: LockOps {
        /// Waits, perhaps sleeping, while the word still holds `expected`;
        /// may return early (spuriously) at any time.
        wait [LOCK_WAIT]: extern "C" fn(&core::sync::atomic::AtomicU32, u32) = native::lock::wait;
        /// Wakes the CPU with this index ([`crate::percpu`]) from a `wait`.
        kick [LOCK_KICK]: extern "C" fn(u32) = native::lock::kick;
        /// Whether the vCPU of the CPU with this index is preempted (not
        /// running) right now; always false natively.
        vcpu_is_preempted [LOCK_VCPU_IS_PREEMPTED]: extern "C" fn(u32) -> bool = native::lock::vcpu_is_preempted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_grouped_and_round_trip() {
        let names: Vec<&str> = Entry::all().map(Entry::name).collect();
        assert_eq!(names.len(), ENTRY_COUNT);
        for (i, n) in names.iter().enumerate() {
            let group = n.split('.').next().unwrap();
            assert!(
                ["cpu", "mmu", "irq", "time", "system", "lock"].contains(&group),
                "{n}"
            );
            assert_eq!(Entry::from_name(n), Some(Entry(i as u8)));
            assert!(!names[..i].contains(n), "duplicate {n}");
        }
        assert_eq!(Entry::from_name("cpu.nonexistent"), None);
    }

    #[test]
    fn slots_point_at_their_own_entry() {
        assert_eq!(slot::CPU_CPUID.entry().name(), "cpu.cpuid");
        assert_eq!(slot::MMU_FLUSH_PAGE.entry().name(), "mmu.flush_page");
        assert_eq!(slot::IRQ_SAFE_HALT.entry().name(), "irq.safe_halt");
        assert_eq!(slot::TIME_TIMER_ARM.entry().name(), "time.timer_arm");
    }

    #[test]
    fn every_required_operation_is_in_the_table() {
        for name in [
            "cpu.cpuid",
            "cpu.read_msr",
            "cpu.write_msr",
            "cpu.read_cr0",
            "cpu.write_cr0",
            "cpu.read_cr4",
            "cpu.write_cr4",
            "cpu.load_idt",
            "cpu.load_gdt",
            "cpu.wbinvd",
            "cpu.halt",
            "cpu.io_delay",
            "cpu.read_tsc",
            "mmu.read_cr2",
            "mmu.read_cr3",
            "mmu.write_cr3",
            "mmu.flush_page",
            "mmu.flush_all",
            "mmu.flush_all_global",
            "mmu.lazy_enter",
            "mmu.lazy_leave",
            "mmu.lazy_flush",
            "irq.save_flags",
            "irq.restore_flags",
            "irq.disable",
            "irq.enable",
            "irq.safe_halt",
            "irq.eoi",
            "irq.send_ipi",
            "time.tsc_frequency",
            "time.monotonic_ns",
            "time.timer_arm",
            "time.timer_cancel",
            "time.steal_ns",
            "lock.wait",
            "lock.kick",
            "lock.vcpu_is_preempted",
        ] {
            assert!(Entry::from_name(name).is_some(), "{name} missing");
        }
    }
}
