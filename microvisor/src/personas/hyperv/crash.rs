//! Guest crash MSRs (TLFS, Partition Properties: Partition Crash
//! Enlightenment; Data Types: HV_CRASH_CTL_REG_CONTENTS).
//!
//! P0..P4 are plain read/write registers. Reading CRASH_CTL reports the
//! supported actions, CrashNotify and CrashMessage. Writing it with
//! CrashNotify records P0..P4 and, with CrashMessage, copies the message
//! (P3 = GPA, P4 = length, at most 4096 bytes, read bounds-checked from
//! guest RAM; an unreadable range gives an empty message and is flagged).
//! The first notification is kept; the run's report prints it as
//! `@@ mv.crash p0=.. p1=.. p2=.. p3=.. p4=.. message=..`.

use crate::guest::mem::GuestRam;
use core::fmt;
use pvops_abi::hyperv::crash_ctl;

/// What CRASH_CTL offers.
pub const CAPABILITIES: u64 = crash_ctl::CRASH_NOTIFY | crash_ctl::CRASH_MESSAGE;

/// The crash registers and the recorded notification.
#[derive(Clone, Copy, Debug, Default)]
pub struct Crash {
    /// P0..P4 as last written.
    pub p: [u64; 5],
    /// P0..P4 at the first CrashNotify, if any.
    pub notified: Option<[u64; 5]>,
    /// Notifications seen (only the first is kept).
    pub notifications: u32,
    /// The message: guest RAM and the checked range in it.
    message: Option<(GuestRam, u64, u64)>,
    /// CrashMessage was given but P3/P4 did not name readable guest RAM.
    pub message_unreadable: bool,
}

impl Crash {
    /// WRMSR CRASH_CTL. Returns true when this write recorded a crash.
    pub fn write_ctl(&mut self, value: u64, mem: &GuestRam) -> bool {
        if value & crash_ctl::CRASH_NOTIFY == 0 {
            return false;
        }
        self.notifications += 1;
        if self.notified.is_some() {
            return false;
        }
        self.notified = Some(self.p);
        if value & crash_ctl::CRASH_MESSAGE != 0 {
            let len = self.p[4].min(crash_ctl::MAX_MESSAGE_LEN as u64);
            if mem.contains(self.p[3], len) {
                self.message = Some((*mem, self.p[3], len));
            } else {
                self.message_unreadable = true;
            }
        }
        true
    }

    /// The message (read from guest RAM when displayed: the guest's
    /// message page is not touched again after a crash report), with
    /// invalid UTF-8 replaced.
    pub fn message(&self) -> Message {
        Message(self.message)
    }
}

/// A crash message for display.
pub struct Message(Option<(GuestRam, u64, u64)>);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((mem, gpa, len)) = self.0 else {
            return Ok(());
        };
        // In pieces, a multi-byte character possibly split between two.
        let mut buf = [0u8; 128];
        let mut carry = 0usize;
        let mut off = 0u64;
        while off < len {
            let n = ((len - off) as usize).min(buf.len() - carry);
            if mem.read(gpa + off, &mut buf[carry..carry + n]).is_err() {
                break;
            }
            off += n as u64;
            let filled = carry + n;
            let mut done = 0;
            for chunk in buf[..filled].utf8_chunks() {
                f.write_str(chunk.valid())?;
                done += chunk.valid().len();
                let bad = chunk.invalid();
                let at_end = done + bad.len() == filled;
                if bad.is_empty() {
                    continue;
                }
                if at_end && off < len && bad.len() < 4 {
                    break; // possibly the start of a character: keep it
                }
                f.write_str("\u{FFFD}")?;
                done += bad.len();
            }
            buf.copy_within(done..filled, 0);
            carry = filled - done;
        }
        if carry != 0 {
            f.write_str("\u{FFFD}")?;
        }
        Ok(())
    }
}
