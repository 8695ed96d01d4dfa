//! The typed report of `analyze`, as `--json` prints it, and the
//! conversions from the library's rows.

use pooldump_core::Warning;
pub use pooldump_core::pool::SessionProcess;
use pooldump_core::pool::{
    BigPoolEntry, BigPoolTable, PoolMonColumn, SortKey, TagUsage, UsageQuery,
};
pub use pooldump_core::snapshot::PoolCounters;
use serde::Serialize;

use crate::common::KdnetReport;
use crate::render::hex;

/// The report, also the JSON document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub source: SourceInfo,
    pub symbols: SymbolsInfo,
    pub totals: Totals,
    /// The rows after filtering, sorting and --top.
    pub rows: Vec<Row>,
    pub big_pool: Option<BigPool>,
    /// With --session: each session's rows (filtered and sorted like
    /// `rows`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<Session>>,
    /// With --relabel: the rows per call site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relabel: Option<RelabelReport>,
    pub tracker: TrackerSummary,
    pub warnings: Vec<Warning>,
    /// Options that changed nothing, and filters that left no row: said
    /// rather than answered with silence or an empty table.
    pub notes: Vec<String>,
    /// A live target: what the KDNET link did (docs/kdnet.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kdnet: Option<KdnetReport>,
}

#[derive(Debug, Serialize)]
pub struct Session {
    /// `_MM_SESSION_SPACE.SessionId` (null when unreadable).
    pub id: Option<u32>,
    /// `EPROCESS.Session` of its processes.
    pub session_space: String,
    /// `pid name` of each process.
    pub processes: Vec<SessionProcess>,
    /// The DirectoryTableBase the table was read through.
    pub dtb: String,
    pub table: String,
    pub size: u64,
    pub expansion_used: u64,
    pub totals: PoolCounters,
    pub tags: u64,
    pub rows: Vec<Row>,
    /// Its own big-page table (`PoolTrackBigPages`), filtered and sorted as
    /// the global list; null when it has none or it could not be read.
    pub big_pages: Option<BigPool>,
}

#[derive(Debug, Serialize)]
pub struct RelabelReport {
    /// The map file.
    pub map: String,
    /// The tag the map split.
    pub tag: String,
    /// One row per (site, pool), sorted and filtered like the tag table;
    /// the old tag's row says what was counted before the relabel.
    pub rows: Vec<SiteRow>,
    /// Free sites (patched to pass 0: their frees count under the freed
    /// block's own tag).
    pub free_sites: Vec<String>,
    /// Allocation sites whose tag the tracker has no row for.
    pub quiet_sites: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SiteRow {
    /// `module!function+0xoff`, or the old tag's note.
    pub site: String,
    /// Index into the map's sites (none for the old tag).
    pub map_site: Option<usize>,
    /// What the site's code holds in this memory (relabelled, original...).
    pub code: Option<pooldump_core::relabel::SiteState>,
    #[serde(flatten)]
    pub row: Row,
}

#[derive(Debug, Serialize)]
pub struct SourceInfo {
    /// The dump's path or the KDNET peer.
    pub name: String,
    pub live: bool,
    pub build: u32,
    pub processors: u64,
    /// The dump's SystemTime; none for a live target.
    pub system_time: Option<String>,
    pub kern_base: String,
}

#[derive(Debug, Serialize)]
pub struct SymbolsInfo {
    pub pdb: String,
    pub from: String,
    pub builtin: bool,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    pub paged: PoolCounters,
    pub nonpaged: PoolCounters,
    pub tags: u64,
}

/// One tag row: PoolMon's columns as the report prints them.
pub use pooldump_core::pool::PoolMonRow as Row;

#[derive(Debug, Serialize)]
pub struct BigPool {
    pub table: String,
    pub size: u64,
    pub entry_size: u64,
    pub in_use: Option<u64>,
    pub live: u64,
    pub freed: u64,
    pub live_bytes: u64,
    pub entries: Vec<BigEntry>,
}

#[derive(Debug, Serialize)]
pub struct BigEntry {
    pub va: String,
    pub tag: String,
    pub pool_type: String,
    #[serde(rename = "type")]
    pub pool: &'static str,
    pub bytes: u64,
    pub freed: bool,
    pub driver: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TrackerSummary {
    pub table: String,
    pub size: u64,
    pub entry_size: u64,
    pub counter_bits: u32,
    pub per_cpu_tables: usize,
    pub expansion_used: u64,
}

pub(super) fn row(r: &TagUsage) -> Row {
    r.poolmon_row()
}

/// The big-page entries the tag filters keep, with the drivers the tag
/// rows found.
pub(super) fn big_pool_report(t: &BigPoolTable, rows: &[TagUsage], q: &UsageQuery) -> BigPool {
    let keep = |e: &BigPoolEntry| {
        q.pool.is_none_or(|p| p == e.pool)
            && (q.include.is_empty() || q.include.iter().any(|p| p.matches(e.tag)))
            && !q.exclude.iter().any(|p| p.matches(e.tag))
    };
    let driver = |tag| {
        rows.iter()
            .find(|r| r.tag == tag)
            .and_then(|r| r.driver.clone())
    };
    // One row per allocation: by tag (then address), or by size with
    // -s bytes; --reverse and --top as for the tag table.
    let mut kept: Vec<&BigPoolEntry> = t.entries.iter().filter(|e| keep(e)).collect();
    match q.sort {
        SortKey::Column(PoolMonColumn::Bytes) => {
            kept.sort_by_key(|e| (std::cmp::Reverse(e.bytes), e.tag.bytes(), e.va))
        }
        _ => kept.sort_by_key(|e| (e.tag.bytes(), e.va)),
    }
    if q.reverse {
        kept.reverse();
    }
    if let Some(n) = q.top {
        kept.truncate(n);
    }
    BigPool {
        table: t.table.to_string(),
        size: t.size,
        entry_size: t.entry_size,
        in_use: t.in_use,
        live: t.live_count,
        freed: t.freed_count,
        live_bytes: t.live_bytes,
        entries: kept
            .into_iter()
            .map(|e| BigEntry {
                va: e.va.to_string(),
                tag: e.tag.to_string(),
                pool_type: hex(e.pool_type as u64),
                pool: e.pool.poolmon(),
                bytes: e.bytes,
                freed: e.freed,
                driver: driver(e.tag),
            })
            .collect(),
    }
}
