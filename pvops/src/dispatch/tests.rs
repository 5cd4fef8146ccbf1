//! Host tests of the patcher (on a byte buffer standing in for text), of
//! the records this test binary's own sites emitted, and of the calling
//! convention the sites assume.

use super::plan::{original, site_len, Target, C_ABI_SITE};
use super::*;
use crate::table::index;

const BASE: usize = 0x40_0000;
const SLOTS: usize = BASE + 0x8000;

struct Buffer(Vec<u8>);

impl Text for Buffer {
    fn read(&self, addr: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.0[addr - BASE..addr - BASE + out.len()]);
    }
    fn write(&mut self, addr: usize, bytes: &[u8]) {
        self.0[addr - BASE..addr - BASE + bytes.len()].copy_from_slice(bytes);
    }
}

fn slot(entry: u8) -> usize {
    SLOTS + 8 * usize::from(entry)
}

/// Text with one site per `entries` item, 32 bytes apart.
fn text(entries: &[u8]) -> (Buffer, Vec<(usize, SiteRecord)>) {
    let mut b = Buffer(vec![0xCC; 0x1000]);
    let mut sites = Vec::new();
    for (i, &e) in entries.iter().enumerate() {
        let addr = BASE + 32 * i;
        let len = site_len(e);
        let o = original(addr, slot(e), len).unwrap();
        b.write(addr, &o[..len]);
        sites.push((
            addr,
            SiteRecord {
                offset: 0,
                entry: e,
                len: len as u8,
                clobbers: C_ABI_SITE,
            },
        ));
    }
    (b, sites)
}

fn target(backend: &'static [u8]) -> impl Fn(u8) -> Option<Target> {
    move |e| {
        (usize::from(e) < ENTRY_COUNT).then(|| Target {
            slot: slot(e),
            function: BASE + 0x4000 + 16 * usize::from(e),
            native: !backend.contains(&e),
        })
    }
}

#[test]
fn every_site_is_patched_whole_and_counted_per_entry() {
    let entries = [
        index::IRQ_DISABLE,
        index::IRQ_ENABLE,
        index::CPU_READ_TSC,
        index::TIME_MONOTONIC_NS,
        index::IRQ_EOI,
    ];
    let (mut b, sites) = text(&entries);
    let c = patch_with(
        &mut b,
        sites.into_iter(),
        target(&[index::IRQ_EOI]),
        BASE..BASE + 0x1000,
    );
    assert_eq!(c.inline[usize::from(index::IRQ_DISABLE)], 1);
    assert_eq!(c.inline[usize::from(index::CPU_READ_TSC)], 1);
    assert_eq!(c.direct[usize::from(index::TIME_MONOTONIC_NS)], 1);
    assert_eq!(c.direct[usize::from(index::IRQ_EOI)], 1);
    assert_eq!(c.indirect.iter().sum::<u16>(), 0);
    assert_eq!(b.0[0], 0xFA);
    assert_eq!(b.0[32], 0xFB);
    assert_eq!(&b.0[64..66], &[0x0F, 0x31]);
    assert_eq!(&b.0[96..98], &[0x2E, 0xE8]);
    // Nothing outside the sites changed.
    assert!(b.0[6..32].iter().all(|&x| x == 0xCC));
}

#[test]
fn refused_sites_keep_their_bytes_and_the_others_are_patched() {
    let entries = [index::IRQ_DISABLE, index::IRQ_ENABLE, index::MMU_READ_CR2];
    let (mut b, mut sites) = text(&entries);
    // Site 0: its bytes no longer match its record.
    b.0[2] ^= 0x40;
    let before0 = b.0[..6].to_vec();
    // Site 2: outside the writable range.
    let writable = BASE..BASE + 64;
    let before2 = b.0[64..70].to_vec();
    // A record naming no entry (not even inside the text).
    sites.push((
        BASE + 0x2000,
        SiteRecord {
            offset: 0,
            entry: 200,
            len: 6,
            clobbers: C_ABI_SITE,
        },
    ));
    let c = patch_with(&mut b, sites.into_iter(), target(&[]), writable);
    assert_eq!(&b.0[..6], &before0[..]);
    assert_eq!(&b.0[64..70], &before2[..]);
    assert_eq!(b.0[32], 0xFB);
    assert_eq!(c.inline[usize::from(index::IRQ_ENABLE)], 1);
    assert_eq!(c.indirect[usize::from(index::IRQ_DISABLE)], 1);
    assert_eq!(c.indirect[usize::from(index::MMU_READ_CR2)], 1);
    assert_eq!(c.indirect.iter().sum::<u16>(), 3);
}

#[test]
fn a_second_pass_over_patched_text_changes_nothing() {
    let entries = [index::IRQ_SAVE_FLAGS, index::TIME_STEAL_NS];
    let (mut b, sites) = text(&entries);
    patch_with(
        &mut b,
        sites.clone().into_iter(),
        target(&[]),
        BASE..BASE + 0x1000,
    );
    let once = b.0.clone();
    let c = patch_with(&mut b, sites.into_iter(), target(&[]), BASE..BASE + 0x1000);
    assert_eq!(b.0, once);
    assert_eq!(c.indirect.iter().sum::<u16>(), 2);
}

#[test]
fn the_host_build_keeps_the_table() {
    // `install` is refused on the host (interrupts on), and the host never
    // patches: every entry reports the table.
    assert_eq!(
        mechanism(crate::slot::IRQ_DISABLE.entry()),
        Mechanism::Indirect
    );
    assert!(matches!(
        summary().state,
        State::NotInstalled | State::Table(_)
    ));
}

/// Every record this binary's sites emitted describes exactly the bytes at
/// its address: the indirect call through the entry's slot of the live
/// table, padded to the entry's site length.
#[test]
fn this_binarys_sites_match_their_records() {
    // Make sure some wrappers are instantiated here.
    let _ = crate::cpu::read_tsc();
    let _ = crate::irq::save_flags();
    let _ = crate::time::tsc_frequency();
    let live = &raw const crate::patch::LIVE as usize + crate::patch::TABLE_OFFSET;
    let mut seen = 0;
    for rec in text::records().iter().filter(|r| r.entry != ANCHOR) {
        let addr = text::site_address(rec);
        let e = usize::from(rec.entry);
        assert!(e < ENTRY_COUNT, "{rec:?}");
        assert_eq!(
            usize::from(rec.len),
            site_len(rec.entry),
            "{}",
            Entry(rec.entry)
        );
        assert_eq!(rec.clobbers, C_ABI_SITE);
        let mut bytes = vec![0; usize::from(rec.len)];
        // SAFETY: the record points into this binary's mapped text.
        unsafe { text::read(addr, &mut bytes) };
        let o = original(addr, live + crate::table::SLOT_OFFSETS[e], bytes.len()).unwrap();
        assert_eq!(
            &bytes[..],
            &o[..bytes.len()],
            "site of {}",
            Entry(rec.entry)
        );
        seen += 1;
    }
    assert!(seen >= 3, "only {seen} sites found");
}

/// The sites' register use, checked against real `extern "C"` functions:
/// results in RAX:RDX for the 16-byte `repr(C)` returns.
#[test]
fn aggregate_results_come_back_in_rax_rdx() {
    // CPUID and PUSHFQ run in user mode, so the native functions serve.
    assert_eq!(crate::cpu::cpuid(0, 0), crate::native::cpu::cpuid(0, 0));
    assert_eq!(crate::cpu::cpuid(1, 0), crate::native::cpu::cpuid(1, 0));
    assert_ne!(crate::irq::save_flags() & crate::irq::FLAGS_IF, 0);
    let f = crate::time::tsc_frequency();
    assert_eq!(f, crate::native::time::tsc_frequency());
}

static SEEN: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

extern "C" fn flush_probe(cpus: u64, target: crate::mmu::FlushTarget) {
    let t = match target {
        crate::mmu::FlushTarget::Page(va) => va,
        crate::mmu::FlushTarget::All => u64::MAX,
    };
    SEEN.lock().unwrap().extend([cpus, t]);
}

extern "C" fn crash_probe(message: &&str) {
    SEEN.lock().unwrap().push(message.len() as u64);
}

extern "C" fn shutdown_probe(reason: crate::system::ShutdownReason) {
    SEEN.lock().unwrap().push(reason as u64 + 100);
}

/// Arguments: `FlushTarget` as tag in RSI, address in RDX; `&&str` as one
/// pointer in RDI; `ShutdownReason` in DIL, as the wrappers pass them.
#[test]
fn aggregate_and_enum_arguments_go_where_the_wrappers_put_them() {
    SEEN.lock().unwrap().clear();
    let msg: &str = "four";
    let arg: *const &str = &msg;
    // SAFETY: each block calls an `extern "C"` function of this module with
    // the registers the matching wrapper uses, declaring the C clobbers.
    unsafe {
        core::arch::asm!("call {f}", f = sym flush_probe, in("rdi") 3u64, in("rsi") 0u64,
            in("rdx") 0x5000u64, clobber_abi("C"));
        core::arch::asm!("call {f}", f = sym flush_probe, in("rdi") 4u64, in("rsi") 1u64,
            in("rdx") 0u64, clobber_abi("C"));
        core::arch::asm!("call {f}", f = sym crash_probe, in("rdi") arg, clobber_abi("C"));
        core::arch::asm!("call {f}", f = sym shutdown_probe, in("rdi") 1u64, clobber_abi("C"));
    }
    assert_eq!(*SEEN.lock().unwrap(), [3, 0x5000, 4, u64::MAX, 4, 101]);
}
