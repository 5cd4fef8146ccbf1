//! Host tests: detection and decoding with spec-built CPUID dumps (KB
//! 1009458 layout) and a fake backdoor that answers like VMware, like QEMU's
//! vmport, or not at all.

use super::detect::{self, StealSkip};
use super::*;
use crate::select::select_from;
use crate::test_support::{sig, with_env, Pages};
use pvops_abi::vmware::{self as abi, Hz, StealClockStatus, Version, MAGIC, UNSUPPORTED};
use pvops_probe::CpuidResult;
use std::sync::Mutex;

/// Installation writes the backend's statics: one test at a time.
static GLOBALS: Mutex<()> = Mutex::new(());

/// A CPUID dump: hypervisor bit as given, `signature` at 0x4000_0000 with
/// `max_leaf`, and `timing` (EAX, EBX, ECX) at 0x4000_0010.
#[derive(Clone, Copy)]
struct Dump {
    hypervisor_bit: bool,
    signature: &'static [u8; 12],
    max_leaf: u32,
    timing: (u32, u32, u32),
}

impl Dump {
    const VMWARE: Dump = Dump {
        hypervisor_bit: true,
        signature: abi::SIGNATURE,
        max_leaf: 0x4000_0010,
        // 2.5 GHz TSC, 66 MHz APIC bus, no hypercall instruction.
        timing: (2_500_000, 66_000, 0),
    };

    fn cpuid(self) -> impl Fn(u32, u32) -> CpuidResult {
        move |leaf, _| {
            let r = |eax, (ebx, ecx, edx)| CpuidResult { eax, ebx, ecx, edx };
            match leaf {
                0 => r(1, sig(b"GenuineIntel")),
                1 => CpuidResult {
                    ecx: if self.hypervisor_bit { 1 << 31 } else { 0 },
                    edx: 1 << 4,
                    ..Default::default()
                },
                0x4000_0000 => r(self.max_leaf, sig(self.signature)),
                0x4000_0010 if self.max_leaf >= 0x4000_0010 => CpuidResult {
                    eax: self.timing.0,
                    ebx: self.timing.1,
                    ecx: self.timing.2,
                    edx: 0,
                },
                _ => CpuidResult::default(),
            }
        }
    }

    fn detect(self) -> (Option<VmwareCpuid>, Option<Detection>) {
        with_env(&self.cpuid(), |env| {
            (
                detect::vmware_cpuid(env.probe, env.cpuid),
                VMWARE.detect(env),
            )
        })
    }
}

/// How the fake hypervisor answers STEALCLOCK.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Steal {
    /// Answers -1.
    NotAvailable,
    /// Does not know the command: registers come back unchanged (QEMU).
    Unknown,
    /// Accepts any 64-byte aligned address.
    Works,
    /// Answers the probe but refuses to enable (0).
    Refuses,
}

/// A fake backdoor: VMware-like answers; unknown commands are echoed (QEMU
/// before 5.0, or `x-signal-unsupported-cmd=off`), or answered with EAX = -1
/// and the rest untouched (`minus_one`: VMware, and QEMU's vmport since 5.0).
struct Fake {
    version: bool,
    hz: Option<Hz>,
    steal: Steal,
    minus_one: bool,
    calls: Vec<Request>,
}

impl Fake {
    fn new(hz: Option<Hz>, steal: Steal) -> Fake {
        Fake {
            version: true,
            hz,
            steal,
            minus_one: false,
            calls: Vec::new(),
        }
    }

    fn answer(&mut self, req: &Request) -> Registers {
        self.calls.push(*req);
        let echo = if self.minus_one {
            req.registers(Channel::IoPort).answer_unsupported()
        } else {
            req.registers(Channel::IoPort)
        };
        match req.command_number() {
            abi::cmd::GETVERSION if self.version => Registers::answer_version(Version {
                version: 6,
                product: 2,
            }),
            abi::cmd::GETHZ => self.hz.map_or(echo, Registers::answer_hz),
            abi::cmd::GETVCPU_INFO => Registers {
                eax: abi::vcpu_info::LEGACY_X2APIC_OK,
                ..echo
            },
            abi::cmd::STEALCLOCK => {
                let addr = (u64::from(req.esi) << 32) | u64::from(req.edi);
                let status = match self.steal {
                    Steal::Unknown => return echo,
                    Steal::NotAvailable => StealClockStatus::NotAvailable,
                    Steal::Refuses => StealClockStatus::Disabled,
                    Steal::Works if addr == abi::STEALCLOCK_DISABLE_ADDRESS => {
                        StealClockStatus::Disabled
                    }
                    Steal::Works if addr % abi::STEAL_TIME_ALIGN == 0 => StealClockStatus::Enabled,
                    Steal::Works => StealClockStatus::Disabled,
                };
                Registers {
                    eax: status.eax(),
                    ..echo
                }
            }
            _ => echo,
        }
    }

    fn commands(&self) -> Vec<u32> {
        self.calls.iter().map(|r| r.command_number()).collect()
    }
}

const HZ_3GHZ: Hz = Hz {
    tsc_hz: 3_000_000_000,
    apic_hz: 100_000_000,
};

fn install(dump: Dump, fake: &mut Fake, pages: usize) -> (Result<(), SetupError>, Patch, Pages) {
    let cpu = dump.detect().0.expect("dump must detect");
    let mut patch = Patch::new("vmware");
    let mut platform = Pages::new(pages);
    let r = install_with(cpu, &mut patch, &mut platform, &mut |req| fake.answer(req));
    (r, patch, platform)
}

#[test]
fn signature_with_timing_leaf_is_detected_and_trusted() {
    let (cpu, det) = Dump::VMWARE.detect();
    let cpu = cpu.unwrap();
    assert_eq!(cpu.max_leaf, 0x4000_0010);
    assert_eq!(
        cpu.timing.and_then(|t| t.trusted_tsc_khz()),
        Some(2_500_000)
    );
    assert_eq!(cpu.channel, Channel::IoPort);
    let det = det.unwrap();
    assert_eq!(det.priority, 0x4000_0000);
    assert_eq!(det.base, Some(0x4000_0000));
    let plan = detect::plan_time(cpu.timing, || panic!("GETHZ not needed")).unwrap();
    assert_eq!(
        plan,
        TimePlan {
            tsc_khz: 2_500_000,
            source: TscSource::TimingLeaf,
            apic_khz: Some(66_000),
        }
    );
}

#[test]
fn max_leaf_below_timing_leaf_means_no_timing() {
    let dump = Dump {
        max_leaf: 0x4000_0001,
        ..Dump::VMWARE
    };
    let cpu = dump.detect().0.unwrap();
    assert_eq!(cpu.timing, None);
    assert_eq!(cpu.channel, Channel::IoPort);
    let plan = detect::plan_time(cpu.timing, || Some(HZ_3GHZ)).unwrap();
    assert_eq!(plan.source, TscSource::VmwareBackdoor);
    assert_eq!((plan.tsc_khz, plan.apic_khz), (3_000_000, Some(100_000)));
}

#[test]
fn zero_timing_leaf_is_not_trusted() {
    let dump = Dump {
        timing: (0, 66_000, abi::timing_ecx::VMCALL),
        ..Dump::VMWARE
    };
    let cpu = dump.detect().0.unwrap();
    assert!(cpu.timing.is_some());
    assert_eq!(cpu.timing.unwrap().trusted_tsc_khz(), None);
    // The hypercall bits are still honoured (Linux reads ECX whenever the
    // max leaf reaches 0x4000_0010).
    assert_eq!(cpu.channel, Channel::Vmcall);
    // GETHZ decides; if it is unsupported there is no frequency at all.
    let plan = detect::plan_time(cpu.timing, || Some(HZ_3GHZ)).unwrap();
    assert_eq!(plan.source, TscSource::VmwareBackdoor);
    assert_eq!(detect::plan_time(cpu.timing, || None), None);
}

#[test]
fn leaf_without_bus_frequency_asks_gethz_for_the_apic_only() {
    let t = abi::TimingLeaf::from_regs(2_000_000, 0, 0);
    let plan = detect::plan_time(Some(t), || Some(HZ_3GHZ)).unwrap();
    assert_eq!(plan.tsc_khz, 2_000_000);
    assert_eq!(plan.source, TscSource::TimingLeaf);
    assert_eq!(plan.apic_khz, Some(100_000));
    let plan = detect::plan_time(Some(t), || None).unwrap();
    assert_eq!(plan.apic_khz, None);
}

/// Lying-hypervisor matrix: a timing leaf or GETHZ answer outside the
/// plausible range is ignored like a zero one.
#[test]
fn implausible_frequencies_are_ignored() {
    let absurd = abi::TimingLeaf::from_regs(1, 66_000, 0);
    let plan = detect::plan_time(Some(absurd), || Some(HZ_3GHZ)).unwrap();
    assert_eq!(plan.source, TscSource::VmwareBackdoor);
    assert_eq!(plan.tsc_khz, 3_000_000);
    let slow = Hz {
        tsc_hz: 1_000_000,
        apic_hz: 0,
    };
    assert_eq!(detect::plan_time(Some(absurd), || Some(slow)), None);
    assert_eq!(detect::plan_time(None, || Some(slow)), None);
}

#[test]
fn steal_clock_never_goes_backwards() {
    use core::sync::atomic::{AtomicU64, AtomicU8};
    let (last, frozen) = (AtomicU64::new(0), AtomicU8::new(0));
    assert_eq!(super::steal_monotonic(10, &last, &frozen), 10);
    assert_eq!(super::steal_monotonic(20, &last, &frozen), 20);
    assert_eq!(super::steal_monotonic(5, &last, &frozen), 20);
    // Frozen for good, even when the host's counter climbs again.
    assert_eq!(super::steal_monotonic(30, &last, &frozen), 20);
}

#[test]
fn kvm_signature_with_timing_leaf_is_not_vmware() {
    let dump = Dump {
        signature: b"KVMKVMKVM\0\0\0",
        ..Dump::VMWARE
    };
    assert_eq!(dump.detect(), (None, None));
}

#[test]
fn hypervisor_bit_clear_means_nothing() {
    let dump = Dump {
        hypervisor_bit: false,
        ..Dump::VMWARE
    };
    assert_eq!(dump.detect(), (None, None));
    // Nor is the backdoor touched.
    let mut fake = Fake::new(Some(HZ_3GHZ), Steal::Works);
    assert_eq!(detect::probe_backdoor(false, &mut |r| fake.answer(r)), None);
    assert!(fake.calls.is_empty());
}

#[test]
fn channel_follows_timing_ecx() {
    for (ecx, want) in [
        (0, Channel::IoPort),
        (abi::timing_ecx::VMMCALL, Channel::Vmmcall),
        (abi::timing_ecx::VMCALL, Channel::Vmcall),
        (
            abi::timing_ecx::VMMCALL | abi::timing_ecx::VMCALL,
            Channel::IoPort,
        ),
    ] {
        let dump = Dump {
            timing: (2_500_000, 66_000, ecx),
            ..Dump::VMWARE
        };
        assert_eq!(dump.detect().0.unwrap().channel, want, "ecx={ecx:#x}");
    }
}

#[test]
fn selection_prefers_vmware_over_native_only_with_the_signature() {
    static LIST: &[&dyn Backend] = &[&VMWARE, &crate::native::NATIVE];
    for (dump, want) in [
        (Dump::VMWARE, "vmware"),
        (
            Dump {
                signature: b"KVMKVMKVM\0\0\0",
                ..Dump::VMWARE
            },
            "native",
        ),
    ] {
        with_env(&dump.cpuid(), |env| {
            assert_eq!(select_from(LIST, env, None).backend.name(), want);
        });
    }
}

#[test]
fn gethz_unsupported_is_ebx_all_ones() {
    let r = Registers {
        eax: 0x1234,
        ebx: UNSUPPORTED,
        ecx: 66_000_000,
        ..Default::default()
    };
    assert_eq!(r.hz(), None);
    // EAX:EBX is low:high.
    let r = Registers {
        eax: 0x5D21_DBA0, // 1.5625 GHz: fits in EAX alone
        ebx: 0,
        ecx: 0,
        ..Default::default()
    };
    assert_eq!(r.hz().unwrap().tsc_hz, 0x5D21_DBA0);
    let r = Registers::answer_hz(Hz {
        tsc_hz: 0x1_0000_0000 + 7,
        apic_hz: 0,
    });
    assert_eq!((r.eax, r.ebx), (7, 1));
}

#[test]
fn backdoor_probe_validates_answers() {
    // A VMware-like backdoor.
    let mut fake = Fake::new(Some(HZ_3GHZ), Steal::Works);
    let info = detect::probe_backdoor(true, &mut |r| fake.answer(r)).unwrap();
    assert_eq!(info.version.version, 6);
    assert_eq!(info.hz, Some(HZ_3GHZ));
    assert_eq!(info.vcpu_info, Some(abi::vcpu_info::LEGACY_X2APIC_OK));
    // GETVERSION first: nothing else is asked before the magic came back.
    assert_eq!(fake.commands()[0], abi::cmd::GETVERSION);
    // A port that echoes everything (no backdoor) is not a backdoor.
    let mut echo = |r: &Request| r.registers(Channel::IoPort);
    assert_eq!(detect::probe_backdoor(true, &mut echo), None);
    // A port that reads all-ones is not either.
    let mut absent = |_: &Request| Registers {
        eax: u32::MAX,
        ebx: 0,
        ..Default::default()
    };
    assert_eq!(detect::probe_backdoor(true, &mut absent), None);
    // Backdoor without GETHZ: version only.
    let mut fake = Fake::new(None, Steal::Unknown);
    let info = detect::probe_backdoor(true, &mut |r| fake.answer(r)).unwrap();
    assert_eq!(info.hz, None);
}

#[test]
fn install_owns_time_io_delay_idle_and_steal() {
    let _g = GLOBALS.lock().unwrap_or_else(|e| e.into_inner());
    let dump = Dump {
        timing: (1_000_000, 66_000, 0), // 1 GHz: one tick per ns.
        ..Dump::VMWARE
    };
    let mut fake = Fake::new(Some(HZ_3GHZ), Steal::Works);
    let (r, patch, pages) = install(dump, &mut fake, 1);
    assert_eq!(r, Ok(()));
    let owned: Vec<&str> = patch.replaced().map(|e| e.name()).collect();
    assert_eq!(
        owned,
        [
            "cpu.halt",
            "cpu.io_delay",
            "irq.safe_halt",
            "time.tsc_frequency",
            "time.apic_timer_khz",
            "time.monotonic_ns",
            "time.steal_ns",
        ]
    );
    // The leaf gave everything: no GETHZ; STEALCLOCK probe then enable.
    assert_eq!(
        fake.commands(),
        [abi::cmd::STEALCLOCK, abi::cmd::STEALCLOCK]
    );
    let t = patch.table();
    assert_eq!(
        (t.time.tsc_frequency)(),
        TscFrequency {
            khz: 1_000_000,
            source: TscSource::TimingLeaf
        }
    );
    assert_eq!((t.time.apic_timer_khz)(), 66_000);
    // The area is the lent page; the counter is in TSC ticks.
    let page = pages.given[0];
    assert_eq!(fake.calls[1].edi, page.phys as u32);
    assert_eq!(fake.calls[1].esi, (page.phys >> 32) as u32);
    // SAFETY: the page is live, aligned and not otherwise accessed now.
    unsafe { (*page.virt.as_ptr().cast::<StealTime>()).clock = 5_000 };
    assert_eq!((t.time.steal_ns)(), 5_000);
    let a = (t.time.monotonic_ns)();
    let b = (t.time.monotonic_ns)();
    assert!(b >= a);
    assert_eq!(channel(), Some(Channel::IoPort));
}

#[test]
fn install_uses_gethz_without_a_timing_leaf() {
    let _g = GLOBALS.lock().unwrap_or_else(|e| e.into_inner());
    let dump = Dump {
        max_leaf: 0x4000_0001,
        ..Dump::VMWARE
    };
    let mut fake = Fake::new(Some(HZ_3GHZ), Steal::NotAvailable);
    let (r, patch, pages) = install(dump, &mut fake, 1);
    assert_eq!(r, Ok(()));
    assert_eq!(
        (patch.table().time.tsc_frequency)(),
        TscFrequency {
            khz: 3_000_000,
            source: TscSource::VmwareBackdoor
        }
    );
    // Steal clock not offered: probed once, no page taken, entry native.
    assert_eq!(fake.commands(), [abi::cmd::GETHZ, abi::cmd::STEALCLOCK]);
    assert!(pages.given.is_empty());
    assert_eq!(patch.owner(slot::TIME_STEAL_NS.entry()), "native");
    assert_eq!(patch.owner(slot::TIME_MONOTONIC_NS.entry()), "vmware");
}

#[test]
fn install_fails_without_any_frequency() {
    let _g = GLOBALS.lock().unwrap_or_else(|e| e.into_inner());
    let dump = Dump {
        timing: (0, 0, 0),
        ..Dump::VMWARE
    };
    let mut fake = Fake::new(None, Steal::Works);
    let (r, patch, pages) = install(dump, &mut fake, 1);
    assert_eq!(r.unwrap_err().step, "tsc frequency");
    assert_eq!(patch.replaced().count(), 0);
    assert!(pages.given.is_empty());
}

#[test]
fn minus_one_for_unknown_commands_is_understood_everywhere() {
    let _g = GLOBALS.lock().unwrap_or_else(|e| e.into_inner());
    let vmware_like = |hz| Fake {
        minus_one: true,
        ..Fake::new(hz, Steal::Unknown)
    };
    // The probe keeps the version and finds no GETHZ (EBX stays the marker).
    let mut fake = vmware_like(None);
    let info = detect::probe_backdoor(true, &mut |r| fake.answer(r)).unwrap();
    assert_eq!((info.version.version, info.hz), (6, None));
    // STEALCLOCK unknown: "not available", no page taken.
    let mut fake = vmware_like(None);
    let got = detect::setup_steal_clock(&mut |r| fake.answer(r), || panic!("no page needed"));
    assert_eq!(
        got,
        Err(StealSkip::NotOffered(StealClockStatus::NotAvailable))
    );
    // Neither the leaf nor GETHZ: the backend refuses to install.
    let mut fake = vmware_like(None);
    let dump = Dump {
        timing: (0, 0, 0),
        ..Dump::VMWARE
    };
    let (r, patch, _) = install(dump, &mut fake, 1);
    assert_eq!(r.unwrap_err().step, "tsc frequency");
    assert_eq!(patch.replaced().count(), 0);
    // The leaf alone suffices; steal time stays native.
    let mut fake = vmware_like(None);
    let (r, patch, pages) = install(Dump::VMWARE, &mut fake, 1);
    assert_eq!(r, Ok(()));
    assert_eq!(patch.owner(slot::TIME_STEAL_NS.entry()), "native");
    assert!(pages.given.is_empty());
}

#[test]
fn failed_steal_clock_steps_leave_steal_native() {
    let _g = GLOBALS.lock().unwrap_or_else(|e| e.into_inner());
    for (steal, pages, skip) in [
        (
            Steal::Unknown,
            1,
            StealSkip::NotOffered(StealClockStatus::Invalid(MAGIC)),
        ),
        (Steal::Works, 0, StealSkip::NoPage),
        (
            Steal::Refuses,
            1,
            StealSkip::Refused(StealClockStatus::Disabled),
        ),
    ] {
        let mut fake = Fake::new(None, steal);
        let mut pg = Pages::new(pages);
        let got = detect::setup_steal_clock(&mut |r| fake.answer(r), || {
            pg.alloc_shared_page().map(|p| p.phys)
        });
        assert_eq!(got, Err(skip));
        let mut fake = Fake::new(None, steal);
        let (r, patch, _) = install(Dump::VMWARE, &mut fake, pages);
        assert_eq!(r, Ok(()));
        assert_eq!(patch.owner(slot::TIME_STEAL_NS.entry()), "native");
        assert_eq!(patch.owner(slot::TIME_TSC_FREQUENCY.entry()), "vmware");
    }
}

/// STEALCLOCK registers the calling vCPU's area: each AP sends it with its
/// own page; a refusal on one AP is that AP's fallback only.
#[test]
fn each_ap_registers_its_own_steal_area() {
    let _g = GLOBALS.lock().unwrap_or_else(|e| e.into_inner());
    let mut fake = Fake::new(Some(HZ_3GHZ), Steal::Works);
    let (r, patch, boot_pages) = install(Dump::VMWARE, &mut fake, 1);
    assert!(r.is_ok());
    assert!(patch.replaced().any(|e| e.name() == "time.steal_ns"));
    let mut pages = Pages::new(1);
    let mut fb = crate::Fallbacks::default();
    fake.calls.clear();
    let cpu = crate::Cpu {
        index: 21,
        apic_id: 21,
    };
    super::init_cpu_with(cpu, &mut fb, &mut pages, &mut |req| fake.answer(req));
    assert!(fb.is_empty());
    assert_eq!(
        fake.commands(),
        [abi::cmd::STEALCLOCK, abi::cmd::STEALCLOCK]
    );
    let last = fake.calls.last().unwrap();
    let addr = (u64::from(last.esi) << 32) | u64::from(last.edi);
    assert_eq!(addr, pages.given[0].phys);
    let area = super::STEAL_AREA[21].load(Ordering::Acquire);
    assert_eq!(area.cast::<u8>(), pages.given[0].virt.as_ptr());
    assert_ne!(
        area.cast::<u8>(),
        boot_pages.given[0].virt.as_ptr(),
        "its own area, not the boot CPU's"
    );

    let mut refusing = Fake::new(Some(HZ_3GHZ), Steal::Refuses);
    let mut fb = crate::Fallbacks::default();
    let cpu = crate::Cpu {
        index: 22,
        apic_id: 22,
    };
    super::init_cpu_with(cpu, &mut fb, &mut Pages::new(1), &mut |req| {
        refusing.answer(req)
    });
    assert_eq!(
        fb.iter().map(|(e, _)| e).collect::<Vec<_>>(),
        ["time.steal_ns"]
    );
    assert!(super::STEAL_AREA[22].load(Ordering::Acquire).is_null());
}
