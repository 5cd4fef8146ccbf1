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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_with_message_and_bad_ranges() {
        let mut buf = vec![0u64; 1024];
        // SAFETY: the test's own buffer, alive while `mem` is used; on the
        // host the "host-physical" address is the buffer's address.
        let mem = unsafe { GuestRam::new(buf.as_mut_ptr() as u64, 8192) };
        mem.write(0x100, b"boom \xFF\xC3\xA9!").unwrap();
        let mut c = Crash {
            p: [0x73_706F_7670, 1, 2, 0x100, 9],
            ..Crash::default()
        };
        assert!(!c.write_ctl(crash_ctl::CRASH_MESSAGE, &mem));
        assert!(c.write_ctl(CAPABILITIES, &mem));
        assert_eq!(c.notified, Some([0x73_706F_7670, 1, 2, 0x100, 9]));
        assert_eq!(format!("{}", c.message()), "boom \u{FFFD}\u{e9}!");
        // Only the first notification is kept.
        c.p[0] = 5;
        assert!(!c.write_ctl(CAPABILITIES, &mem));
        assert_eq!(c.notifications, 2);
        // A message outside guest RAM is flagged, never read.
        let mut d = Crash {
            p: [0, 0, 0, 8000, 4096],
            ..Crash::default()
        };
        assert!(d.write_ctl(CAPABILITIES, &mem));
        assert!(d.message_unreadable);
        assert_eq!(format!("{}", d.message()), "");
        // A long message crosses the 128-byte display pieces intact.
        let long: Vec<u8> = "é".repeat(200).into_bytes();
        mem.write(0x400, &long).unwrap();
        let mut e = Crash {
            p: [0, 0, 0, 0x400, long.len() as u64],
            ..Crash::default()
        };
        assert!(e.write_ctl(CAPABILITIES, &mem));
        assert_eq!(format!("{}", e.message()), "é".repeat(200));
    }
}
