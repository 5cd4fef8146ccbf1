//! Host-test helpers shared by the backends' tests: CPUID signature words,
//! an [`Environment`] built from a CPUID source, a stand-in backend that
//! detects a probed signature, and a platform that lends test pages.
#![allow(
    dead_code,
    reason = "each backend's tests use a subset; which depends on the Cargo features"
)]

use crate::{Backend, Detection, Environment, Platform, SetupError, SharedPage};
use core::ptr::NonNull;
use pvops::patch::Patch;
use pvops_probe::{CpuidSource, HypervisorKind};

/// A 12-byte CPUID signature as three little-endian words, in the
/// (EBX, ECX, EDX) order of leaf 0x4000_0000.
pub(crate) fn sig(s: &[u8; 12]) -> (u32, u32, u32) {
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    (w(0), w(4), w(8))
}

/// Runs `f` on the environment probed from `src`.
pub(crate) fn with_env<R>(src: &dyn CpuidSource, f: impl FnOnce(&Environment<'_>) -> R) -> R {
    let probe = pvops_probe::probe(src);
    f(&Environment {
        probe: &probe,
        cpuid: src,
    })
}

/// A backend that detects when the probe shows `kind`, with its base as the
/// priority; installing does nothing.
pub(crate) struct FakeBackend {
    pub(crate) name: &'static str,
    pub(crate) kind: HypervisorKind,
}

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        self.name
    }
    fn description(&self) -> &'static str {
        "test backend"
    }
    fn detect(&self, env: &Environment<'_>) -> Option<Detection> {
        env.probe.find(self.kind).map(|i| Detection {
            priority: i.base,
            reason: "signature",
            base: Some(i.base),
        })
    }
    fn install(
        &self,
        _: &Environment<'_>,
        _: &mut Patch,
        _: &mut dyn Platform,
    ) -> Result<(), SetupError> {
        Ok(())
    }
}

/// The stand-in KVM backend.
pub(crate) static FAKE_KVM: FakeBackend = FakeBackend {
    name: "kvm",
    kind: HypervisorKind::Kvm,
};

#[repr(C, align(4096))]
struct PageMem([u8; 4096]);

/// Lends up to `left` leaked, zeroed, page-aligned host buffers, with fake
/// GPAs from 0x10_0000 up.
pub(crate) struct Pages {
    left: usize,
    next_gpa: u64,
    /// Every page lent so far, in order.
    pub(crate) given: Vec<SharedPage>,
}

impl Pages {
    pub(crate) fn new(left: usize) -> Pages {
        Pages {
            left,
            next_gpa: 0x10_0000,
            given: Vec::new(),
        }
    }

    /// The mapping of the lent page at `gpa`.
    pub(crate) fn virt(&self, gpa: u64) -> Option<NonNull<u8>> {
        self.given.iter().find(|p| p.phys == gpa).map(|p| p.virt)
    }
}

impl Platform for Pages {
    fn alloc_shared_page(&mut self) -> Option<SharedPage> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Leaked on purpose: a backend keeps its pages for good.
        let mem: &'static mut PageMem = Box::leak(Box::new(PageMem([0; 4096])));
        let page = SharedPage {
            phys: self.next_gpa,
            virt: NonNull::from(&mut mem.0).cast::<u8>(),
        };
        self.next_gpa += 0x1000;
        self.given.push(page);
        Some(page)
    }
}

thread_local! {
    static CAPTURED: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        CAPTURED.with(|c| {
            if let Some(v) = c.borrow_mut().as_mut() {
                v.push(format!("{}", record.args()));
            }
        });
    }
    fn flush(&self) {}
}

static LOGGER: CaptureLogger = CaptureLogger;

/// Runs `f` and returns what it logged (this thread's records only), so a
/// test can check that a fallback says why.
pub(crate) fn capture_logs<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(log::LevelFilter::Trace);
    });
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let r = f();
    let logs = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (r, logs)
}
