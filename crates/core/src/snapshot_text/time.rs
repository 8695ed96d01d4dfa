//! The times a text capture carries (WinDbg's session time, uptime) or
//! a user gives.

use super::*;

/// `Thu Nov 14 10:12:31.123 2024 (UTC + 8:00)` as a FILETIME (UTC).
pub fn parse_session_time(s: &str) -> Option<u64> {
    let (when, zone) = match s.split_once('(') {
        Some((w, z)) => (w.trim(), Some(z.trim_end_matches(')').trim())),
        None => (s.trim(), None),
    };
    let parts: Vec<&str> = when.split_whitespace().collect();
    let [_, mon, day, time, year] = parts[..] else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m.eq_ignore_ascii_case(mon))?
        + 1;
    let time = time.split('.').next()?;
    let iso = format!("{year}-{month:02}-{:02} {time}", day.parse::<u32>().ok()?);
    let local = humantime::parse_rfc3339_weak(&iso).ok()?;
    let mut secs = local.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    // `UTC + 8:00`: local time is ahead of UTC.
    if let Some(z) = zone.and_then(|z| z.strip_prefix("UTC")) {
        let z = z.replace(' ', "");
        if let Some((sign, hm)) = z
            .strip_prefix('+')
            .map(|r| (1, r))
            .or_else(|| z.strip_prefix('-').map(|r| (-1, r)))
        {
            let (h, m) = hm.split_once(':').unwrap_or((hm, "0"));
            secs -= sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60);
        }
    }
    u64::try_from(secs)
        .ok()
        .map(FileTime::from_unix_seconds)
        .map(|f| f.0)
}

/// `3 days 4:05:06.789` as 100 ns units.
pub fn parse_uptime(s: &str) -> Option<u64> {
    let mut parts = s.split_whitespace();
    let days: u64 = parts.next()?.parse().ok()?;
    let _ = parts.next()?; // "days"
    let hms = parts.next()?;
    let (hms, frac) = hms.split_once('.').unwrap_or((hms, "0"));
    let v: Vec<u64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = v[..] else { return None };
    let ms: u64 = format!("{frac:0<3}")[..3].parse().ok()?;
    Some((((days * 24 + h) * 60 + m) * 60 + sec) * 10_000_000 + ms * 10_000)
}

/// `--time`: RFC 3339 (`2024-11-14T10:12:31Z`) or `2024-11-14 10:12:31`
/// (UTC), as a FILETIME.
pub fn parse_time_arg(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(s))
        .ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(FileTime::from_unix_seconds(secs).0)
}
