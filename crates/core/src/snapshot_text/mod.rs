//! PoolMon and `!poolused` text as snapshots: the screenshots people
//! already take, fed to `diff`, `trend` and `top`.
//!
//! Formats (docs/leak-hunting.md shows each):
//! * PoolMon's display: `Tag Type Allocs ( ) Frees ( ) Diff Bytes ( ) Per
//!   Alloc [Mapped_Driver]`, with its `Memory:`/`Commit:` header lines and
//!   the `Total  Nonp`/`Total Paged` lines of its `e` key (kept as the
//!   table's totals, not rows);
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
    /// PoolMon's live display (with its `( )` change columns after Allocs, Frees and Bytes).
    PoolmonDisplay,
    /// PoolMon's /n snapshot log (the same columns, no change columns).
    PoolmonLog,
    /// `!poolused` without flag 1: outstanding allocations and bytes.
    PoolusedSummary,
    /// `!poolused 1`: Allocs, Frees, Diff, Used.
    PoolusedVerbose,
    /// `!poolused` in the legacy layout (a `Pool Used:` line, the description glued to the
    /// numbers): outstanding allocations and bytes.
    PoolusedLegacy,
    /// `!poolused 1` in the legacy layout: Allocs, Frees, Diff, Used.
    PoolusedLegacyVerbose,
}

impl TextFormat {
    /// PoolMon's display or its log.
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
    /// The format's name, for messages (`PoolMon /n snapshot log`).
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
    /// The line as read.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

/// One table of a text file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextTable {
    /// Which layout the table is in.
    pub format: TextFormat,
    /// The header line's number (for the second and later snapshots that
    /// PoolSnap appended under one header, the line their rows start at).
    pub header_line: usize,
    /// One row per tag and pool type, in the order read.
    pub rows: Vec<SnapshotRow>,
    /// `!poolused`'s TOTAL row, or PoolMon's `Total` lines (a pool PoolMon
    /// did not show counts 0): (nonpaged, paged) as printed.
    pub total: Option<(PoolCounters, PoolCounters)>,
    /// Session pool (`!poolused 8`, PoolMon /s): not the system pools.
    pub session: bool,
}

/// What a text file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextImport {
    /// The tables, in file order.
    pub tables: Vec<TextTable>,
    /// Lines that were not understood, in file order.
    pub problems: Vec<TextProblem>,
    /// WinDbg's `Debug session time:` (FILETIME), when the text has it.
    pub session_time: Option<u64>,
    /// WinDbg's `System Uptime:` (100 ns), when the text has it.
    pub uptime: Option<u64>,
}

/// Why a text file gave no table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextImportError {
    /// No line looks like a table header.
    #[error("{input}: not a PoolMon display or log, nor !poolused output: no table header line (`Tag Type Allocs ...` or `Tag Allocs Used ...`) was found{}; formats tried: {}", near_header(near), FORMATS_TRIED.join("; "))]
    NotRecognised {
        /// The file's name.
        input: String,
        /// The first line that has a header's words but is not one, and
        /// why.
        near: Option<TextProblem>,
    },
    /// Every table came out empty.
    #[error(
        "{input}: the {format} table at line {line} has no rows it could read{}",
        first_problem(problems)
    )]
    NoRows {
        /// The file's name.
        input: String,
        /// The table's format ([`TextFormat::describe`]).
        format: &'static str,
        /// The table's header line.
        line: usize,
        /// Why each line was not a row.
        problems: Vec<TextProblem>,
    },
}

fn near_header(p: &Option<TextProblem>) -> String {
    p.as_ref().map_or(String::new(), |p| {
        let text: String = p.text.trim().chars().take(70).collect();
        let more = if p.text.trim().chars().count() > 70 {
            "..."
        } else {
            ""
        };
        format!(
            " (line {} has a header's words but {}: `{}{more}`)",
            p.line,
            p.why,
            crate::text::escape(&text)
        )
    })
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
    let mut r = Reader::default();
    for (n, raw) in text.lines().enumerate() {
        r.line(n + 1, raw);
    }
    if !r.saw_header {
        return Err(TextImportError::NotRecognised {
            input: input.into(),
            near: r.near,
        });
    }
    check_rows(&r.tables, &r.problems, input)?;
    Ok(TextImport {
        tables: r.tables,
        problems: r.problems,
        session_time: r.session_time,
        uptime: r.uptime,
    })
}

/// [`parse_text`]'s state from line to line.
#[derive(Default)]
struct Reader {
    tables: Vec<TextTable>,
    problems: Vec<TextProblem>,
    /// The columns of the table being read, if any.
    layout: Option<Layout>,
    /// A `Pool Used` preamble was seen: the next header is the legacy one.
    legacy_pending: bool,
    /// A preamble named session pool: the next table is session pool's.
    session_pending: bool,
    session_time: Option<u64>,
    uptime: Option<u64>,
    saw_header: bool,
    /// What a file with no header came closest to.
    near: Option<TextProblem>,
    /// The line before was blank.
    blank: bool,
}

impl Reader {
    fn line(&mut self, line_no: usize, raw: &str) {
        let line = raw.trim_end_matches(['\r', '\u{1A}']);
        let t = line.trim();
        if t.is_empty() {
            self.blank = true;
            return;
        }
        let after_blank = std::mem::take(&mut self.blank);
        if let Some(h) = header(line, self.legacy_pending, self.session_pending) {
            self.legacy_pending = false;
            self.session_pending = false;
            self.saw_header = true;
            self.tables.push(TextTable {
                format: h.format,
                header_line: line_no,
                rows: Vec::new(),
                total: None,
                session: h.session,
            });
            self.layout = Some(h);
            return;
        }
        // Named only when the file has no header at all: once one is
        // seen, the lines need not be looked at again.
        if self.near.is_none() && !self.saw_header {
            self.near = near_miss(line, line_no);
        }
        if self.preamble(t) {
            return;
        }
        let (Some(l), Some(table)) = (&self.layout, self.tables.last_mut()) else {
            self.problems.push(TextProblem {
                line: line_no,
                text: line.to_string(),
                why: "not part of a table".into(),
            });
            return;
        };
        if after_blank && next_appended_snapshot(line, l, table) {
            let next = TextTable {
                format: table.format,
                header_line: line_no,
                rows: Vec::new(),
                total: None,
                session: table.session,
            };
            self.tables.push(next);
        }
        if let Some(table) = self.tables.last_mut() {
            add_rows(line, line_no, l, table, &mut self.problems);
        }
    }

    /// A line outside the tables' rows (the debugger's clock, a prompt, a
    /// preamble): take what it says. False for anything else.
    fn preamble(&mut self, t: &str) -> bool {
        if let Some(v) = t.strip_prefix("Debug session time:") {
            self.session_time = parse_session_time(v.trim());
            return true;
        }
        if let Some(v) = t.strip_prefix("System Uptime:") {
            self.uptime = parse_uptime(v.trim());
            return true;
        }
        if !known_line(t) {
            return false;
        }
        self.legacy_pending |= t.starts_with("Pool Used");
        self.session_pending |= t.to_ascii_lowercase().contains("session") && !t.contains(" - ");
        // A prompt or a new preamble ends the table before it.
        if is_prompt(t) || t.starts_with("Pool Used") {
            self.layout = None;
        }
        true
    }
}

/// Does `line`, read after a blank line, start the next snapshot of a
/// log that PoolSnap appends to (poolsnap.c writes the header once per
/// file, then a blank line and the rows for each run)? It does when the
/// table is a log whose rows already have its tag and pool: a double-spaced
/// copy of one log never repeats a row.
fn next_appended_snapshot(line: &str, l: &Layout, table: &TextTable) -> bool {
    table.format == TextFormat::PoolmonLog
        && !table.rows.is_empty()
        && poolmon_row(line, l)
            .is_ok_and(|(r, changes)| !changes && table.rows.iter().any(|x| x.key() == r.key()))
}

/// A file whose tables all came out empty is an error that says where the
/// table was and what was wrong with its lines.
fn check_rows(
    tables: &[TextTable],
    problems: &[TextProblem],
    input: &str,
) -> Result<(), TextImportError> {
    if let Some(empty) = tables
        .iter()
        .find(|t| t.rows.is_empty() && t.total.is_none())
        && tables.iter().all(|t| t.rows.is_empty())
    {
        // A PoolMon table is told display or log by its rows' change
        // columns: without rows it is either.
        let format = if empty.format.is_poolmon() {
            "PoolMon (display or /n log)"
        } else {
            empty.format.describe()
        };
        return Err(TextImportError::NoRows {
            input: input.into(),
            format,
            line: empty.header_line,
            problems: problems.to_vec(),
        });
    }
    Ok(())
}

/// Parse one line of a table (`l` is its header) into `table`'s rows; a
/// line that is not a row, or a second row for one tag and pool, is a
/// problem.
fn add_rows(
    line: &str,
    line_no: usize,
    l: &Layout,
    table: &mut TextTable,
    problems: &mut Vec<TextProblem>,
) {
    let problem = |why| TextProblem {
        line: line_no,
        text: line.to_string(),
        why,
    };
    let parsed = if l.format.is_poolmon() {
        if let Some(total) = poolmon_total(line) {
            match total {
                Ok((pool, c)) => {
                    let (np, pg) = table.total.unwrap_or_default();
                    table.total = Some(match pool {
                        PoolClass::NonPaged => (c, pg),
                        PoolClass::Paged => (np, c),
                    });
                }
                Err(why) => problems.push(problem(why)),
            }
            return;
        }
        poolmon_row(line, l).map(|(r, changes)| {
            // Change columns make it the display; without them it is the
            // /n log.
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
                    let why = format!("a second {} row for tag {}", r.pool.poolmon(), r.tag);
                    problems.push(problem(why));
                } else {
                    table.rows.push(r);
                }
            }
        }
        Err(why) => problems.push(problem(why)),
    }
}

mod rows;
mod time;

use rows::{header, is_prompt, known_line, near_miss, poolmon_row, poolmon_total, poolused_row};
pub use time::*;

/// Where a text snapshot's time comes from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextTime {
    /// `--time`.
    Given(u64),
    /// The file's modification time (FILETIME), when the text has none.
    FileModified(u64),
    /// No time: the snapshot has none.
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
    let mut warnings = table_warnings(import, table, input);
    let mut rows = table.rows.clone();
    rows.sort_by_key(|r| (r.tag.bytes(), r.pool, r.overflow));
    let (np, pg) = (
        pool_sum(&rows, PoolClass::NonPaged),
        pool_sum(&rows, PoolClass::Paged),
    );
    if let Some((tn, tp)) = table.total
        && (tn.bytes != np.bytes || tp.bytes != pg.bytes)
    {
        let (what, why) = if table.format.is_poolmon() {
            (
                "PoolMon's Total lines say",
                "PoolMon shows only the rows that fit its window",
            )
        } else {
            (
                "the TOTAL row says",
                "an interrupted !poolused prints partial results",
            )
        };
        warnings.push(format!(
            "{what} Nonp {} and Paged {} bytes but the rows add up to {} and {}: the table is incomplete ({why})",
            tn.bytes, tp.bytes, np.bytes, pg.bytes
        ));
    }
    let (system, clock) = clock(time, import, input, &mut warnings);
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
        warnings: crate::warning::Warning::all(crate::warning::WarningKind::Snapshot, warnings),
        diff_only: table.format.diff_only(),
    }
}

/// What to say of the table a snapshot is made of: one of several, lines
/// not understood, columns missing, session pool.
fn table_warnings(import: &TextImport, table: &TextTable, input: &Path) -> Vec<String> {
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
    warnings
}

/// One pool's counters summed over `rows` (saturating: the text's numbers
/// are not to be trusted).
fn pool_sum(rows: &[SnapshotRow], pool: PoolClass) -> PoolCounters {
    rows.iter()
        .filter(|r| r.pool == pool)
        .fold(PoolCounters::default(), |a, r| PoolCounters {
            allocs: a.allocs.saturating_add(r.allocs),
            frees: a.frees.saturating_add(r.frees),
            diff: a.diff.saturating_add(r.diff),
            bytes: a.bytes.saturating_add(r.bytes),
        })
}

/// The snapshot's time (FILETIME) and where it comes from: `--time`, the
/// text's own session time, else the file's modification time (said).
fn clock(
    time: TextTime,
    import: &TextImport,
    input: &Path,
    warnings: &mut Vec<String>,
) -> (Option<u64>, Option<ClockSource>) {
    match (time, import.session_time) {
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
mod tests;
