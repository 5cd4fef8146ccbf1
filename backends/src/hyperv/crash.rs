//! Reporting a crash through the guest crash MSRs (TLFS, Partition
//! Properties: Partition Crash Enlightenment).
//!
//! P0..P2 carry [`P0_MARKER`] and zeros; with the CrashMessage capability
//! P3 is the GPA of a page holding the message and P4 its length (at most
//! 4096 bytes), then CRASH_CTL = CrashNotify | CrashMessage. Without it,
//! CrashNotify alone. At most one write to CRASH_CTL per crash, as the TLFS
//! asks.

use super::msr;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use pvops_abi::hyperv::{crash_ctl, msr as m};

/// P0 value identifying a pvops crash report ("pvops" in ASCII).
pub const P0_MARKER: u64 = 0x0000_0073_706F_7670;

static MESSAGE_PAGE: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static MESSAGE_GPA: AtomicU64 = AtomicU64::new(0);
static REPORTED: AtomicBool = AtomicBool::new(false);

/// Publishes the page that carries crash messages.
pub(crate) fn set_message_page(virt: *mut u8, gpa: u64) {
    MESSAGE_GPA.store(gpa, Ordering::Relaxed);
    MESSAGE_PAGE.store(virt, Ordering::Release);
}

/// The CRASH_CTL value and message length for `message`, given whether a
/// message page exists.
pub(crate) fn plan(message: &str, has_page: bool) -> (u64, usize) {
    if has_page {
        let len = message.len().min(crash_ctl::MAX_MESSAGE_LEN);
        (crash_ctl::CRASH_NOTIFY | crash_ctl::CRASH_MESSAGE, len)
    } else {
        (crash_ctl::CRASH_NOTIFY, 0)
    }
}

/// `system.report_crash`.
pub(crate) extern "C" fn report_crash(message: &&str) {
    if REPORTED.swap(true, Ordering::AcqRel) {
        return;
    }
    let page = MESSAGE_PAGE.load(Ordering::Acquire);
    let (ctl, len) = plan(message, !page.is_null());
    if len != 0 {
        // SAFETY: `page` is the backend's own 4 KiB shared page and `len`
        // is at most 4096; no one else writes it.
        unsafe { ptr::copy_nonoverlapping(message.as_ptr(), page, len) };
    }
    msr::write(m::CRASH_P0, P0_MARKER);
    msr::write(m::CRASH_P1, 0);
    msr::write(m::CRASH_P2, 0);
    msr::write(
        m::CRASH_P3,
        if len != 0 {
            MESSAGE_GPA.load(Ordering::Relaxed)
        } else {
            0
        },
    );
    msr::write(m::CRASH_P4, len as u64);
    msr::write(m::CRASH_CTL, ctl);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_plan() {
        let long = "x".repeat(5000);
        assert_eq!(
            plan(&long, true),
            (crash_ctl::CRASH_NOTIFY | crash_ctl::CRASH_MESSAGE, 4096)
        );
        assert_eq!(plan("boom", false), (crash_ctl::CRASH_NOTIFY, 0));
        assert_eq!(&P0_MARKER.to_le_bytes()[..5], b"pvops");
    }
}
