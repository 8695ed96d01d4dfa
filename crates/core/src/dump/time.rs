//! Windows times from the dump header, shown as UTC.
//!
//! A FILETIME counts 100 ns intervals since 1601-01-01 UTC. The conversion
//! to a civil date is Howard Hinnant's `civil_from_days`; it is a dozen
//! lines, which is less than a date crate costs.

use std::fmt;

use serde::{Serialize, Serializer};

/// FILETIME ticks per second.
const TICKS: u64 = 10_000_000;
/// Seconds from 1601-01-01 to 1970-01-01.
const EPOCH_DELTA: u64 = 11_644_473_600;

/// A FILETIME as the dump header stores it (SystemTime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FileTime(pub u64);

/// A calendar date and time in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcDateTime {
    /// The year (1970 or later: [`FileTime::to_utc`] gives no earlier one).
    pub year: i64,
    /// The month, 1 to 12.
    pub month: u32,
    /// The day of the month, 1 to 31.
    pub day: u32,
    /// The hour, 0 to 23.
    pub hour: u32,
    /// The minute, 0 to 59.
    pub minute: u32,
    /// The second, 0 to 59.
    pub second: u32,
}

impl FileTime {
    /// The FILETIME of a Unix time (a PE TimeDateStamp, say).
    pub const fn from_unix_seconds(secs: u64) -> Self {
        Self((secs + EPOCH_DELTA) * TICKS)
    }

    /// Seconds since the Unix epoch, or `None` before 1970 or for zero.
    pub fn unix_seconds(self) -> Option<u64> {
        (self.0 / TICKS).checked_sub(EPOCH_DELTA)
    }

    /// The UTC date and time, or `None` when the value is 0 or before 1970
    /// (no crash dump predates the Unix epoch; such a value is garbage).
    pub fn to_utc(self) -> Option<UtcDateTime> {
        let secs = self.unix_seconds()?;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        Some(UtcDateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
        })
    }

    /// RFC 3339 form (`2024-05-01T12:34:56Z`).
    pub fn rfc3339(self) -> Option<String> {
        self.to_utc().map(|t| {
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year, t.month, t.day, t.hour, t.minute, t.second
            )
        })
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2024-05-01 12:34:56 UTC`, or `invalid (0x...)`.
impl fmt::Display for FileTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_utc() {
            Some(t) => write!(
                f,
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year, t.month, t.day, t.hour, t.minute, t.second
            ),
            None => write!(f, "invalid ({:#x})", self.0),
        }
    }
}

/// Serialised as an RFC 3339 string, or `null` when invalid.
impl Serialize for FileTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339() {
            Some(t) => s.serialize_str(&t),
            None => s.serialize_none(),
        }
    }
}

/// Time since boot in 100 ns units (SystemUpTime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UpTime(pub u64);

impl UpTime {
    /// Whole seconds since boot.
    pub fn seconds(self) -> u64 {
        self.0 / TICKS
    }
}

/// `3d 04:05:06` (as WinDbg's "System Uptime" shows it, without the
/// fraction).
impl fmt::Display for UpTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds();
        write!(
            f,
            "{}d {:02}:{:02}:{:02}",
            s / 86_400,
            s / 3600 % 24,
            s / 60 % 60,
            s % 60
        )
    }
}

/// Serialised as whole seconds.
impl Serialize for UpTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.seconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filetime_to_utc() {
        // 2020-06-15 08:30:45 UTC = Unix 1592209845.
        let ft = FileTime((1_592_209_845 + EPOCH_DELTA) * TICKS + 1234);
        assert_eq!(ft.to_string(), "2020-06-15 08:30:45 UTC");
        assert_eq!(ft.rfc3339().as_deref(), Some("2020-06-15T08:30:45Z"));
        // Leap day.
        let ft = FileTime((951_782_400 + EPOCH_DELTA) * TICKS);
        assert_eq!(ft.to_string(), "2000-02-29 00:00:00 UTC");
        assert_eq!(FileTime(0).to_string(), "invalid (0x0)");
        assert!(FileTime(u64::MAX).to_utc().is_some());
    }

    #[test]
    fn uptime_display() {
        let t = UpTime((3 * 86_400 + 4 * 3600 + 5 * 60 + 6) * TICKS);
        assert_eq!(t.to_string(), "3d 04:05:06");
    }
}
