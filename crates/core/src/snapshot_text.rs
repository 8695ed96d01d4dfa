//! PoolMon and `!poolused` text as snapshots: the screenshots people
//! already take, fed to `diff`, `trend` and `top`.
//!
//! Formats (docs/leak-hunting.md shows each):
//! * PoolMon's display: `Tag Type Allocs ( ) Frees ( ) Diff Bytes ( ) Per
//!   Alloc [Mapped_Driver]`, with its `Memory:`/`Commit:` header lines;
//! * PoolMon's `/n` snapshot file (poolsnap.log): the same columns without
//!   the change columns ("the snapshot data is static", Microsoft's
//!   poolmon-startup-command page);
//! * WinDbg `!poolused` in its modern layouts: flags 0/2/4 (`Allocs Used`
//!   per pool: outstanding allocations and bytes), flag 1 (`Allocs Frees
//!   Diff Used` per pool, a TOTAL row), the kd cache preamble, a tab
//!   before the description (`..., Binary: nt!io`);
//! * `!poolused` in its legacy layout (a `Pool Used:` line, the
//!   description glued to the last number: `384UNKNOWN pooltag 'AGP '`).
//!
//! Columns are found from each table's header line: the tag is the four
//! characters under `Tag` (tags have spaces: `Io  `, `Dh 0`), and in the
//! legacy layout a number ends where its header word ends, which is how a
//! glued description is cut off even when it starts with a digit.
//! Published copies whose spacing was collapsed are read token by token.
//!
//! Nothing is dropped silently: every line that is neither a row nor a
//! known header, prompt or preamble line is reported with its number.
//! A file with several tables (two `!poolused` runs, PoolMon screens one
//! after another) yields one table each; the caller picks.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::KernelVa;
use crate::dump::FileTime;
use crate::pool::PoolClass;
use crate::snapshot::{
    ClockSource, KernelInfo, PoolCounters, SCHEMA, Snapshot, SnapshotRow, SnapshotTotals,
    SourceInfo, SourceKind, TimeInfo,
};
use crate::tag::PoolTag;

/// The formats tried, in the order a message lists them.
pub const FORMATS_TRIED: &[&str] = &[
    "PoolMon display (Tag Type Allocs ( ) Frees ( ) Diff Bytes ( ) Per Alloc)",
    "PoolMon /n snapshot log (poolsnap.log: the display without the change columns)",
    "!poolused, modern layout (flags 0/2/4: Allocs Used per pool; flag 1: Allocs Frees Diff Used)",
    "!poolused, legacy layout (`Pool Used:`, description glued to the numbers)",
];

/// The largest text file read (a PoolMon log of every tag is ~300 KiB).
pub const MAX_TEXT_FILE: u64 = 64 << 20;

/// Which layout a table is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextFormat {
    PoolmonDisplay,
    PoolmonLog,
    /// `!poolused` without flag 1: outstanding allocations and bytes.
    PoolusedSummary,
    /// `!poolused 1`: Allocs, Frees, Diff, Used.
    PoolusedVerbose,
    PoolusedLegacy,
    PoolusedLegacyVerbose,
}

impl TextFormat {
    pub fn is_poolmon(self) -> bool {
        matches!(self, TextFormat::PoolmonDisplay | TextFormat::PoolmonLog)
    }
    /// Allocs and Frees are not in the table, only outstanding counts.
    pub fn diff_only(self) -> bool {
        matches!(
            self,
            TextFormat::PoolusedSummary | TextFormat::PoolusedLegacy
        )
    }
    pub fn describe(self) -> &'static str {
        match self {
            TextFormat::PoolmonDisplay => "PoolMon display",
            TextFormat::PoolmonLog => "PoolMon /n snapshot log",
            TextFormat::PoolusedSummary => "!poolused (Allocs/Used)",
            TextFormat::PoolusedVerbose => "!poolused 1 (Allocs/Frees/Diff/Used)",
            TextFormat::PoolusedLegacy => "!poolused, legacy layout",
            TextFormat::PoolusedLegacyVerbose => "!poolused 1, legacy layout",
        }
    }
}

/// A line that was not understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextProblem {
    /// 1-based.
    pub line: usize,
    pub text: String,
    pub why: String,
}

/// One table of a text file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextTable {
    pub format: TextFormat,
    /// The header line's number.
    pub header_line: usize,
    pub rows: Vec<SnapshotRow>,
    /// `!poolused 1`'s TOTAL row: (nonpaged, paged) as printed.
    pub total: Option<(PoolCounters, PoolCounters)>,
    /// Session pool (`!poolused 8`, PoolMon /s): not the system pools.
    pub session: bool,
}

/// What a text file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextImport {
    pub tables: Vec<TextTable>,
    pub problems: Vec<TextProblem>,
    /// WinDbg's `Debug session time:` (FILETIME), when the text has it.
    pub session_time: Option<u64>,
    /// WinDbg's `System Uptime:` (100 ns), when the text has it.
    pub uptime: Option<u64>,
}

/// Why a text file gave no table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextImportError {
    #[error("{input}: not a PoolMon display or log, nor !poolused output: no table header line (`Tag Type Allocs ...` or `Tag Allocs Used ...`) was found; formats tried: {}", FORMATS_TRIED.join("; "))]
    NotRecognised { input: String },
    #[error(
        "{input}: the {format} table at line {line} has no rows it could read{}",
        first_problem(problems)
    )]
    NoRows {
        input: String,
        format: &'static str,
        line: usize,
        problems: Vec<TextProblem>,
    },
}

fn first_problem(p: &[TextProblem]) -> String {
    p.first().map_or(String::new(), |p| {
        format!(" (line {}: {}: `{}`)", p.line, p.why, p.text)
    })
}

/// The columns of the current table.
#[derive(Debug, Clone)]
struct Layout {
    format: TextFormat,
    /// Character column of `Tag`.
    tag_col: usize,
    /// For `!poolused`: the column just past each numeric header word.
    num_ends: Vec<usize>,
    session: bool,
}

/// Parse a text file's bytes (UTF-8, or UTF-16 with a BOM, as PowerShell's
/// `>` writes).
pub fn parse_text(bytes: &[u8], input: &str) -> Result<TextImport, TextImportError> {
    let text = crate::pool::pooltag::decode_text(bytes);
    let mut tables: Vec<TextTable> = Vec::new();
    let mut problems = Vec::new();
    let mut layout: Option<Layout> = None;
    let mut legacy_pending = false;
    let mut session_pending = false;
    let mut session_time = None;
    let mut uptime = None;
    let mut saw_header = false;
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw.trim_end_matches(['\r', '\u{1A}']);
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(h) = header(line, legacy_pending, session_pending) {
            legacy_pending = false;
            session_pending = false;
            saw_header = true;
            tables.push(TextTable {
                format: h.format,
                header_line: line_no,
                rows: Vec::new(),
                total: None,
                session: h.session,
            });
            layout = Some(h);
            continue;
        }
        if let Some(v) = t.strip_prefix("Debug session time:") {
            session_time = parse_session_time(v.trim());
            continue;
        }
        if let Some(v) = t.strip_prefix("System Uptime:") {
            uptime = parse_uptime(v.trim());
            continue;
        }
        if known_line(t) {
            if t.starts_with("Pool Used") {
                legacy_pending = true;
                layout = None;
            }
            if t.to_ascii_lowercase().contains("session") && !t.contains(" - ") {
                session_pending = true;
            }
            // A prompt or a new preamble ends the table before it.
            if is_prompt(t) {
                layout = None;
            }
            continue;
        }
        let (Some(l), Some(table)) = (&layout, tables.last_mut()) else {
            problems.push(TextProblem {
                line: line_no,
                text: line.to_string(),
                why: "not part of a table".into(),
            });
            continue;
        };
        let parsed = if l.format.is_poolmon() {
            poolmon_row(line, l).map(|(r, changes)| {
                // Change columns make it the display; without them it is
                // the /n log.
                if changes {
                    table.format = TextFormat::PoolmonDisplay;
                }
                vec![r]
            })
        } else {
            poolused_row(line, l, table)
        };
        match parsed {
            Ok(rows) => {
                for r in rows {
                    if table.rows.iter().any(|x| x.key() == r.key()) {
                        problems.push(TextProblem {
                            line: line_no,
                            text: line.to_string(),
                            why: format!("a second {} row for tag {}", r.pool.poolmon(), r.tag),
                        });
                    } else {
                        table.rows.push(r);
                    }
                }
            }
            Err(why) => problems.push(TextProblem {
                line: line_no,
                text: line.to_string(),
                why,
            }),
        }
    }
    if !saw_header {
        return Err(TextImportError::NotRecognised {
            input: input.into(),
        });
    }
    if let Some(empty) = tables
        .iter()
        .find(|t| t.rows.is_empty() && t.total.is_none())
        && tables.iter().all(|t| t.rows.is_empty())
    {
        return Err(TextImportError::NoRows {
            input: input.into(),
            format: empty.format.describe(),
            line: empty.header_line,
            problems,
        });
    }
    Ok(TextImport {
        tables,
        problems,
        session_time,
        uptime,
    })
}

/// Character positions of whitespace-separated words: (start, end, word).
fn words(line: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    for (ci, (bi, c)) in chars.iter().enumerate() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some((ci, *bi)),
            (true, Some((s, sb))) => {
                out.push((s, ci, &line[sb..*bi]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some((s, sb)) = start {
        out.push((s, chars.len(), &line[sb..]));
    }
    out
}

fn header(line: &str, legacy: bool, session: bool) -> Option<Layout> {
    let w = words(line);
    let names: Vec<&str> = w.iter().map(|x| x.2).collect();
    let tag = w.iter().position(|x| x.2 == "Tag")?;
    if tag != 0 {
        return None;
    }
    let has = |s: &str| names.contains(&s);
    let tag_col = w[tag].0;
    if has("Type") && has("Allocs") && has("Frees") && has("Diff") && has("Bytes") {
        // The display has a `( )` change column after Allocs, Frees and
        // Bytes in its rows, not in its header: told apart per row.
        return Some(Layout {
            format: TextFormat::PoolmonLog,
            tag_col,
            num_ends: Vec::new(),
            session,
        });
    }
    if has("Allocs") && has("Used") && !has("Type") {
        let verbose = has("Frees") && has("Diff");
        let num_ends: Vec<usize> = w
            .iter()
            .filter(|x| matches!(x.2, "Allocs" | "Frees" | "Diff" | "Used"))
            .map(|x| x.1)
            .collect();
        let want = if verbose { 8 } else { 4 };
        if num_ends.len() != want {
            return None;
        }
        let format = match (legacy, verbose) {
            (false, false) => TextFormat::PoolusedSummary,
            (false, true) => TextFormat::PoolusedVerbose,
            (true, false) => TextFormat::PoolusedLegacy,
            (true, true) => TextFormat::PoolusedLegacyVerbose,
        };
        return Some(Layout {
            format,
            tag_col,
            num_ends,
            session,
        });
    }
    None
}

fn is_prompt(t: &str) -> bool {
    // `0: kd> !poolused 2`, `lkd> ...`, `: kd> ...` (an excerpt).
    let head = t.split("kd>").next().unwrap_or("");
    t.contains("kd>")
        && head
            .trim_end_matches('l')
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == ' ')
}

/// Lines of PoolMon's and WinDbg's output that carry no row.
fn known_line(t: &str) -> bool {
    let lower = t.to_ascii_lowercase();
    is_prompt(t)
        || t.chars().all(|c| c == '.' || c == ' ')
        || lower.starts_with("memory:")
        || lower.starts_with("commit:")
        || lower.ends_with("pool information")
        || lower.starts_with("sorting by")
        || lower.starts_with("using a machine size of")
        || lower.starts_with("pool used")
        || t.split_whitespace()
            .all(|w| matches!(w, "NonPaged" | "Paged" | "Nonpaged"))
}

/// A PoolMon row: tag, type, then Allocs [(n)] Frees [(n)] Diff Bytes
/// [(n)] Per-Alloc, then the Mapped_Driver text.
fn poolmon_row(line: &str, l: &Layout) -> Result<(SnapshotRow, bool), String> {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() < l.tag_col + 5 {
        return Err("too short for a PoolMon row".into());
    }
    let tag_text: String = chars[l.tag_col..l.tag_col + 4].iter().collect();
    let rest: String = chars[l.tag_col + 4..].iter().collect();
    if !rest.starts_with(char::is_whitespace) {
        return Err("the tag column is not four characters wide".into());
    }
    let w = words(&rest);
    let mut it = w.iter();
    let ty = it.next().ok_or("no Type column")?;
    let pool = match ty.2 {
        "Nonp" | "NonP" | "Nonpaged" | "NonPaged" => PoolClass::NonPaged,
        "Paged" => PoolClass::Paged,
        other => return Err(format!("Type `{other}` is neither Nonp nor Paged")),
    };
    let mut nums = Vec::new();
    let mut changes = false;
    let mut end = ty.1;
    while nums.len() < 5 {
        let x = it.next().ok_or("fewer than five numbers")?;
        // A `( n)` change column: `(`, `n)` or `(n)`.
        if x.2.starts_with('(') {
            changes = true;
            let mut y = *x;
            while !y.2.ends_with(')') {
                y = *it.next().ok_or("an unclosed `(`")?;
            }
            end = y.1;
            continue;
        }
        nums.push(
            x.2.parse::<u64>()
                .map_err(|_| format!("`{}` is not a count", x.2))?,
        );
        end = x.1;
    }
    // A trailing change column after Per Alloc is not PoolMon's, but
    // Bytes' change column comes before it and was consumed above.
    let driver_text: String = rest.chars().skip(end).collect();
    let [allocs, frees, diff, bytes, _per] = [nums[0], nums[1], nums[2], nums[3], nums[4]];
    let tag = PoolTag::from_bytes(tag_bytes(&tag_text)?);
    let row = SnapshotRow {
        tag_text: tag.to_string(),
        tag,
        pool,
        allocs,
        frees,
        diff,
        bytes,
        overflow: false,
        driver: poolmon_driver(driver_text.trim()),
    };
    Ok((row, changes))
}

fn tag_bytes(s: &str) -> Result<[u8; 4], String> {
    let b = s.as_bytes();
    if b.len() != 4 {
        return Err(format!("tag `{s}` is not four bytes"));
    }
    Ok([b[0], b[1], b[2], b[3]])
}

/// `[ntfs.sys - AttrSup.c]`, `[ipsec][ipsec.sys - timers]`, `[nt!ps -
/// Thread objects]`, `Unknown Driver`.
fn poolmon_driver(t: &str) -> Option<String> {
    if t.is_empty() || t.eq_ignore_ascii_case("unknown driver") {
        return None;
    }
    let groups: Vec<&str> = t
        .split('[')
        .filter_map(|g| g.split(']').next())
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .collect();
    let pick = groups
        .iter()
        .find(|g| g.contains(" - "))
        .or(groups.first())
        .copied()
        .unwrap_or(t);
    let name = pick.split(" - ").next().unwrap_or(pick).trim();
    (!name.is_empty() && !name.eq_ignore_ascii_case("<unknown>")).then(|| name.to_string())
}

/// A `!poolused` row (one or two snapshot rows: nonpaged and paged), or
/// its TOTAL row.
fn poolused_row(line: &str, l: &Layout, table: &mut TextTable) -> Result<Vec<SnapshotRow>, String> {
    let chars: Vec<char> = line.chars().collect();
    let trimmed = line.trim_start();
    let is_total = trimmed.starts_with("TOTAL");
    let (tag_text, after) = if is_total {
        let skip = chars.len() - trimmed.chars().count() + 5;
        (String::new(), skip)
    } else {
        if chars.len() < l.tag_col + 5 {
            return Err("too short for a !poolused row".into());
        }
        (
            chars[l.tag_col..l.tag_col + 4].iter().collect::<String>(),
            l.tag_col + 4,
        )
    };
    let rest: String = chars[after..].iter().collect();
    let w = words(&rest);
    let n = l.num_ends.len();
    let mut nums = Vec::with_capacity(n);
    let mut desc_from = rest.chars().count();
    for i in 0..n {
        let x = w.get(i).ok_or_else(|| format!("fewer than {n} numbers"))?;
        let digits: String = x.2.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return Err(format!("`{}` is not a count", x.2));
        }
        let mut len = digits.chars().count();
        if i + 1 < n {
            if len != x.2.chars().count() {
                return Err(format!("`{}` is not a count", x.2));
            }
        } else {
            // The last number may be glued to the description (legacy
            // layout): where the columns line up, it ends under its
            // header word.
            let col_end = l.num_ends[i] as isize - after as isize;
            if col_end > x.0 as isize && (col_end as usize) < x.0 + len {
                len = col_end as usize - x.0;
            }
            desc_from = x.0 + len;
        }
        let v = digits[..len]
            .parse::<u64>()
            .map_err(|_| format!("`{}` is out of range", x.2))?;
        nums.push(v);
    }
    let desc: String = rest.chars().skip(desc_from).collect();
    let driver = desc
        .rsplit_once(", Binary:")
        .map(|(_, b)| b.trim().to_string())
        .filter(|b| !b.is_empty() && !b.eq_ignore_ascii_case("<unknown>"));
    let verbose = n == 8;
    let counters = |s: &[u64]| -> PoolCounters {
        if verbose {
            PoolCounters {
                allocs: s[0],
                frees: s[1],
                diff: s[2],
                bytes: s[3],
            }
        } else {
            // Outstanding allocations: Allocs is Diff; Allocs and Frees
            // themselves are not printed.
            PoolCounters {
                allocs: s[0],
                frees: 0,
                diff: s[0],
                bytes: s[1],
            }
        }
    };
    let half = n / 2;
    let np = counters(&nums[..half]);
    let pg = counters(&nums[half..]);
    if is_total {
        table.total = Some((np, pg));
        return Ok(Vec::new());
    }
    let tag = PoolTag::from_bytes(tag_bytes(&tag_text)?);
    Ok([(PoolClass::NonPaged, np), (PoolClass::Paged, pg)]
        .into_iter()
        .filter(|(_, c)| c.allocs != 0 || c.frees != 0 || c.bytes != 0)
        .map(|(pool, c)| SnapshotRow {
            tag_text: tag.to_string(),
            tag,
            pool,
            allocs: c.allocs,
            frees: c.frees,
            diff: c.diff,
            bytes: c.bytes,
            overflow: false,
            driver: driver.clone(),
        })
        .collect())
}

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

/// Where a text snapshot's time comes from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextTime {
    /// `--time`.
    Given(u64),
    /// The file's modification time (FILETIME), when the text has none.
    FileModified(u64),
    Unknown,
}

/// Turn one table of a text file into a snapshot. `which` is the table's
/// index (the last when `None`).
pub fn to_snapshot(
    import: &TextImport,
    which: Option<usize>,
    input: &Path,
    time: TextTime,
) -> Snapshot {
    let idx = which.unwrap_or(import.tables.len().saturating_sub(1));
    let table = &import.tables[idx.min(import.tables.len() - 1)];
    let mut warnings = Vec::new();
    if import.tables.len() > 1 {
        warnings.push(format!(
            "{} holds {} tables; this snapshot is the one at line {} ({})",
            input.display(),
            import.tables.len(),
            table.header_line,
            table.format.describe()
        ));
    }
    if !import.problems.is_empty() {
        warnings.push(problem_summary(&import.problems));
    }
    if table.format.diff_only() {
        warnings.push(format!(
            "{} gives outstanding allocations and bytes only (no Allocs/Frees columns): Allocs is set to Diff and Frees to 0; use `!poolused 1` for all four",
            table.format.describe()
        ));
    }
    if table.session {
        warnings.push("this table is session pool, not the system pools".into());
    }
    let mut rows = table.rows.clone();
    rows.sort_by_key(|r| (r.tag.bytes(), r.pool, r.overflow));
    let sum = |p: PoolClass| {
        rows.iter()
            .filter(|r| r.pool == p)
            .fold(PoolCounters::default(), |a, r| PoolCounters {
                allocs: a.allocs.saturating_add(r.allocs),
                frees: a.frees.saturating_add(r.frees),
                diff: a.diff.saturating_add(r.diff),
                bytes: a.bytes.saturating_add(r.bytes),
            })
    };
    let (np, pg) = (sum(PoolClass::NonPaged), sum(PoolClass::Paged));
    if let Some((tn, tp)) = table.total
        && (tn.bytes != np.bytes || tp.bytes != pg.bytes)
    {
        warnings.push(format!(
            "the TOTAL row says Nonp {} and Paged {} bytes but the rows add up to {} and {}: the table is incomplete (an interrupted !poolused prints partial results)",
            tn.bytes, tp.bytes, np.bytes, pg.bytes
        ));
    }
    let (system, clock) = match (time, import.session_time) {
        (TextTime::Given(t), _) => (Some(t), Some(ClockSource::Given)),
        (_, Some(t)) => (Some(t), Some(ClockSource::TextFile)),
        (TextTime::FileModified(t), None) => {
            warnings.push(format!(
                "{} states no time: its modification time is used (pass --time to `pooldump snapshot --from-text` to set it)",
                input.display()
            ));
            (Some(t), Some(ClockSource::FileModified))
        }
        (TextTime::Unknown, None) => (None, None),
    };
    let tags = {
        let mut t: Vec<_> = rows.iter().map(|r| r.tag).collect();
        t.sort_by_key(|t| t.bytes());
        t.dedup();
        t.len() as u64
    };
    Snapshot {
        schema: SCHEMA.into(),
        source: SourceInfo {
            kind: if table.format.is_poolmon() {
                SourceKind::Poolmon
            } else {
                SourceKind::Poolused
            },
            name: input.display().to_string(),
        },
        kernel: KernelInfo {
            build: 0,
            kern_base: KernelVa(0),
            pdb: None,
            processors: 0,
            physical_pages: None,
        },
        time: TimeInfo {
            system_time_filetime: system,
            system_time: system.and_then(|t| FileTime(t).rfc3339()),
            uptime_100ns: import.uptime,
            uptime: import.uptime.map(|u| crate::dump::UpTime(u).to_string()),
            clock_source: clock,
            taken_unix: None,
        },
        totals: SnapshotTotals {
            nonpaged: np,
            paged: pg,
            tags,
        },
        rows,
        warnings,
        diff_only: table.format.diff_only(),
    }
}

/// `3 lines were not understood: 1, 5-7 (line 1: not part of a table:
/// `## poolmon /a`)`.
pub fn problem_summary(p: &[TextProblem]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for x in p {
        match ranges.last_mut() {
            Some((_, e)) if *e + 1 == x.line || *e == x.line => *e = x.line,
            _ => ranges.push((x.line, x.line)),
        }
    }
    let list: Vec<String> = ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let first = &p[0];
    format!(
        "{} line(s) were not understood and were left out: {} (line {}: {}: `{}`)",
        p.len(),
        list.join(", "),
        first.line,
        first.why,
        first.text.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_time_and_uptime() {
        // 2024-11-14 10:12:31 at UTC+8 is 02:12:31 UTC.
        let t = parse_session_time("Thu Nov 14 10:12:31.123 2024 (UTC + 8:00)").unwrap();
        assert_eq!(FileTime(t).rfc3339().unwrap(), "2024-11-14T02:12:31Z");
        assert_eq!(parse_uptime("0 days 1:00:00.500"), Some(36_005_000_000));
        let g = parse_time_arg("2024-11-14T02:12:31Z").unwrap();
        assert_eq!(g, t);
        assert_eq!(parse_time_arg("2024-11-14 02:12:31"), Some(t));
    }

    #[test]
    fn legacy_glued_descriptions_are_cut_at_the_header_column() {
        let text = "\
0: kd> !poolused
   Sorting by  Tag

  Pool Used:
            NonPaged            Paged
 Tag    Allocs     Used    Allocs     Used
 1394        1      520         0        0UNKNOWN pooltag '1394', please update pooltag.txt
 8042        4     3944         0        0PS/2 kb and mouse , Binary: i8042prt.sys
 AGP         1      344         2      384UNKNOWN pooltag 'AGP ', please update pooltag.txt
 Tst1        1      344         2      3841394 bus driver , Binary: t.sys
";
        let i = parse_text(text.as_bytes(), "legacy.txt").unwrap();
        assert!(i.problems.is_empty(), "{:?}", i.problems);
        let t = &i.tables[0];
        assert_eq!(t.format, TextFormat::PoolusedLegacy);
        let row = |tag: &str, pool| {
            t.rows
                .iter()
                .find(|r| r.tag_text == tag && r.pool == pool)
                .unwrap()
        };
        assert_eq!(row("8042", PoolClass::NonPaged).bytes, 3944);
        assert_eq!(
            row("8042", PoolClass::NonPaged).driver.as_deref(),
            Some("i8042prt.sys")
        );
        assert_eq!(row("AGP ", PoolClass::Paged).bytes, 384);
        // A description starting with digits, glued on.
        assert_eq!(row("Tst1", PoolClass::Paged).bytes, 384);
        assert_eq!(row("Tst1", PoolClass::Paged).diff, 2);
    }

    #[test]
    fn a_file_of_no_known_format_names_the_formats_tried() {
        let e = parse_text(b"hello\nworld\n", "notes.txt").unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("notes.txt: not a PoolMon display"), "{m}");
        for f in FORMATS_TRIED {
            assert!(m.contains(f), "{m}");
        }
    }

    #[test]
    fn hostile_rows_are_reported_not_panicked_on() {
        let text = "
 Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc
 Ab\u{c4}d Nonp 1 ( 0) 1 ( 0) 0 0 ( 0) 0
 Abcd Nonp 99999999999999999999999 ( 0) 1 ( 0) 0 0 ( 0) 0
 Abcd Nonp 1 ( 0
 Abcd Huge 1 2 3 4 5
 Ab
 Abcd Nonp 5 ( 0) 4 ( 0) 1 64 ( 0) 64
 Abcd Nonp 5 ( 0) 4 ( 0) 1 64 ( 0) 64
 Tag     Allocs         Used     Allocs         Used
 TOTAL
 Wxyz 1 2 3
 Wxyz 1 2 3 4x
";
        let i = parse_text(text.as_bytes(), "hostile").unwrap();
        let lines: Vec<usize> = i.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 9, 11, 12], "{:?}", i.problems);
        assert_eq!(i.tables[0].rows.len(), 1);
        assert_eq!(
            i.tables[1].rows[1].bytes, 4,
            "the paged Used before a glued `x`"
        );
    }
}
