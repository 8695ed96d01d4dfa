//! The typed report `pooldump find` prints: also its JSON document
//! (schema pooldump.find/2, docs/find.md), built from the core's
//! [`FindReport`].

use pooldump_core::Warning;
use pooldump_core::pool::find::{
    self, AllocationState, BlockContents, FindReport, FoundAllocation,
};
use pooldump_core::relabel::RelabelMap;
use serde::Serialize;

use crate::contents::AllocationWithContents;
use crate::render::hex;

/// The JSON document's schema.
pub(super) const SCHEMA: &str = "pooldump.find/2";

/// The report, also the JSON document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub source: SourceInfo,
    pub patterns: Vec<String>,
    /// legacy or segment-heap.
    pub allocator: String,
    /// Absent with --per-tag.
    #[serde(skip_serializing_if = "Allocations::is_omitted")]
    pub allocations: Allocations,
    pub tags: Vec<TagRow>,
    pub unmapped: Vec<Unmapped>,
    /// With --relabel: the allocations found per call site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sites: Option<Vec<SiteRow>>,
    pub scan: Scan,
    pub warnings: Vec<Warning>,
    /// A live target: what the KDNET link did (docs/kdnet.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kdnet: Option<crate::common::KdnetReport>,
}

#[derive(Debug, Serialize)]
pub struct SourceInfo {
    pub name: String,
    pub build: u32,
    pub live: bool,
}

/// The allocations found, kept as the scan returned them (no copy per
/// row) and written straight to the output: text, CSV or JSON, where each
/// is an object with `va`, `header`, `pa` (hex strings), `tag`,
/// `protected`, `bytes` (BlockSize × 16 with the header, or the big-page
/// entry's bytes), `pool` (NonPaged, NonPagedNx or Paged), `session`,
/// `pool_type`, `state` (allocated, free, unknown), `allocator`
/// (legacy-page, lfh, vs, big-pool, unverified), `in_dump` and, in
/// session space only, `session_id` (the session whose space holds it).
#[derive(Debug, Default)]
pub struct Allocations {
    list: Vec<FoundAllocation>,
    /// With --bytes: each allocation's bytes, in the list's order (each
    /// object then has `contents`, as `pool --json` writes it); else
    /// empty.
    contents: Vec<BlockContents>,
    /// --per-tag: the per-tag table only.
    omitted: bool,
}

impl Allocations {
    fn is_omitted(&self) -> bool {
        self.omitted
    }

    /// The allocations the user asked for (with `--allocated`, only live
    /// ones: the others were dropped when the report was built).
    pub(super) fn shown(&self) -> &[FoundAllocation] {
        &self.list
    }

    pub fn iter(&self) -> impl Iterator<Item = &FoundAllocation> {
        self.list.iter()
    }

    /// `--bytes`: the contents of [`Self::shown`], one each, in order.
    pub(super) fn set_contents(&mut self, contents: Vec<BlockContents>) {
        debug_assert!(contents.is_empty() || contents.len() == self.list.len());
        self.contents = contents;
    }

    /// The contents of [`Self::shown`] (empty without `--bytes`).
    pub(super) fn contents(&self) -> &[BlockContents] {
        &self.contents
    }
}

impl Serialize for Allocations {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.contents.is_empty() {
            s.collect_seq(self.iter().map(AllocationJson))
        } else {
            s.collect_seq(
                self.list
                    .iter()
                    .zip(&self.contents)
                    .map(|(a, c)| AllocationWithContents::new(a, Some(c))),
            )
        }
    }
}

/// One allocation as JSON, its strings formatted while it is written.
#[derive(Clone, Copy)]
pub(crate) struct AllocationJson<'a>(pub(crate) &'a FoundAllocation);

/// A value written as its Display text.
struct Text<T>(T);

impl<T: std::fmt::Display> Serialize for Text<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

struct Hex(u64);

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl Serialize for AllocationJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let a = self.0;
        let mut m = s.serialize_struct("Allocation", 13)?;
        m.serialize_field("va", &Text(a.va))?;
        m.serialize_field("header", &a.header.map(Text))?;
        m.serialize_field("pa", &a.pa.map(|p| Text(Hex(p.0))))?;
        m.serialize_field("tag", &Text(a.tag))?;
        m.serialize_field("protected", &a.protected)?;
        m.serialize_field("bytes", &a.bytes)?;
        m.serialize_field("pool", a.pool.name())?;
        m.serialize_field("session", &a.session)?;
        m.serialize_field("pool_type", &Text(Hex(u64::from(a.pool_type))))?;
        m.serialize_field("state", &a.state)?;
        m.serialize_field("allocator", &a.allocator)?;
        m.serialize_field("in_dump", &a.in_dump)?;
        // Only in session space: a listing of hundreds of thousands of
        // allocations stays as it was elsewhere.
        match a.session_id {
            Some(id) => m.serialize_field("session_id", &id)?,
            None => m.skip_field("session_id")?,
        }
        m.end()
    }
}

#[derive(Debug, Serialize)]
pub struct TagRow {
    pub tag: String,
    pub allocated: u64,
    pub bytes: u64,
    pub free: u64,
    pub unknown: u64,
    pub not_in_dump: u64,
    pub tracker_diff: Option<u64>,
    pub tracker_bytes: Option<u64>,
    pub not_found: Option<u64>,
}

/// One call site of a relabel map: the allocations carrying its tag.
#[derive(Debug, Serialize)]
pub struct SiteRow {
    /// `module!function+0xoff`, or the old tag's note.
    pub site: String,
    pub tag: String,
    pub allocated: u64,
    pub bytes: u64,
    pub free: u64,
    pub tracker_diff: Option<u64>,
    pub tracker_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Unmapped {
    pub pa: String,
    pub tag: String,
    pub bytes: u64,
    pub pool_type: String,
    pub state: AllocationState,
    /// A kernel address outside the pool regions mapping the frame.
    pub mapped_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Scan {
    pub engine: &'static str,
    pub threads: usize,
    pub frames: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub unreadable_frames: u64,
    pub mapped_frames_not_in_dump: Option<u64>,
    pub paged_out_pages: u64,
    pub regions: Option<Vec<String>>,
    /// Sessions whose paged pool was mapped through their own page tables.
    pub sessions: Vec<SessionScan>,
    pub page_tables_read: u64,
    pub alias_pages: u64,
    pub duplicate_headers: u64,
    pub rejected_by_heap: u64,
    /// Headers past `--max-results` (allocations, and headers in frames
    /// no address maps): the allocations are counted in the per-tag
    /// table; none is listed.
    pub not_listed: u64,
}

#[derive(Debug, Serialize)]
pub struct SessionScan {
    pub session_id: u32,
    /// The page tables (a process of the session's) its pool was read through.
    pub dtb: String,
    pub mapped_pages: u64,
    /// Its pool's own segment heap (19H1+), as its segments name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap: Option<String>,
    /// Its own big-page table (`PoolTrackBigPages`) and the entries whose
    /// tag matched; absent with --no-big-pool, or when it could not be
    /// read (said in the warnings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub big_pages: Option<SessionBigPages>,
}

#[derive(Debug, Serialize)]
pub struct SessionBigPages {
    /// `_MM_SESSION_SPACE.PoolTrackBigPages` (a session-space address).
    pub table: String,
    /// `PoolTrackBigPagesSize`: its entries.
    pub size: u64,
    pub matched_live: u64,
    pub matched_freed: u64,
}

/// The per-tag counts as rows per call site of the map: each allocation
/// site's tag, most bytes first, then the old tag.
pub(super) fn site_rows(map: &RelabelMap, r: &FindReport) -> Vec<SiteRow> {
    let mut rows: Vec<SiteRow> = r
        .tags
        .iter()
        .filter_map(|t| {
            let site = if t.tag.unprotected() == map.tag.unprotected() {
                format!(
                    "(old tag {}: before the relabel, or unpatched code)",
                    map.tag
                )
            } else {
                map.site_of(t.tag)?.site.clone()
            };
            Some(SiteRow {
                site,
                tag: t.tag.to_string(),
                allocated: t.allocated,
                bytes: t.allocated_bytes,
                free: t.free,
                tracker_diff: t.tracker.map(|c| c.diff),
                tracker_bytes: t.tracker.map(|c| c.bytes),
            })
        })
        .collect();
    rows.sort_by_key(|x| {
        (
            x.site.starts_with('('),
            std::cmp::Reverse(x.bytes),
            x.site.clone(),
        )
    });
    rows
}

/// What the report shows of the allocations.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Listed {
    /// All of them (sorted).
    All,
    /// Only allocated ones (`--allocated`).
    Allocated,
    /// None: `--per-tag`, or already written as they were found
    /// (`--unsorted`).
    Omitted,
}

/// The report of `r` for the source `name` (`build`, `live`).
/// `legacy` or `segment-heap`, as the reports name the allocator family.
pub(crate) fn family_name(f: find::AllocatorFamily) -> &'static str {
    match f {
        find::AllocatorFamily::Legacy => "legacy",
        find::AllocatorFamily::SegmentHeap => "segment-heap",
    }
}

pub(super) fn report(
    mut r: FindReport,
    name: &str,
    build: u32,
    live: bool,
    listed: Listed,
    warnings: Vec<Warning>,
) -> Report {
    Report {
        schema: SCHEMA,
        source: SourceInfo {
            name: name.to_string(),
            build,
            live,
        },
        patterns: r.patterns.clone(),
        allocator: family_name(r.allocator).into(),
        allocations: Allocations {
            list: {
                let mut list = std::mem::take(&mut r.allocations);
                if listed == Listed::Allocated {
                    list.retain(|a| a.state == AllocationState::Allocated);
                }
                list
            },
            contents: Vec::new(),
            omitted: listed == Listed::Omitted,
        },
        tags: tag_rows(&r),
        sites: None,
        unmapped: r
            .unmapped
            .iter()
            .map(|u| Unmapped {
                pa: hex(u.pa.0),
                tag: u.tag.to_string(),
                bytes: u.bytes,
                pool_type: hex(u.pool_type as u64),
                state: u.state,
                mapped_at: u.mapped_at.map(|v| v.to_string()),
            })
            .collect(),
        scan: scan_row(&r),
        warnings,
        kdnet: None,
    }
}

/// The per-tag rows, in the order analyze's tag table uses (PoolMon's T:
/// the tag's four characters as they are written, byte by byte), so the
/// two tables read alike and a tag is found where a reader looks for it;
/// the scan keeps them by the tag's numeric value, which puts `ZZZZ`
/// before `Leak` (the first character is the low byte).
fn tag_rows(r: &FindReport) -> Vec<TagRow> {
    let mut tags: Vec<_> = r.tags.iter().collect();
    tags.sort_by_key(|t| t.tag.bytes());
    tags.into_iter()
        .map(|t| TagRow {
            tag: t.tag.to_string(),
            allocated: t.allocated,
            bytes: t.allocated_bytes,
            free: t.free,
            unknown: t.unknown,
            not_in_dump: t.not_in_dump,
            tracker_diff: t.tracker.map(|c| c.diff),
            tracker_bytes: t.tracker.map(|c| c.bytes),
            not_found: t.not_found,
        })
        .collect()
}

fn scan_row(r: &FindReport) -> Scan {
    Scan {
        engine: r.scan.engine,
        threads: r.scan.threads,
        frames: r.scan.frames_scanned,
        bytes: r.scan.bytes_scanned,
        seconds: r.scan.scan_seconds,
        unreadable_frames: r.scan.unreadable_frames,
        mapped_frames_not_in_dump: r.scan.mapped_frames_not_in_dump,
        paged_out_pages: r.scan.paged_out_pages,
        regions: r
            .regions
            .as_ref()
            .map(|v| v.iter().map(|g| g.name.clone()).collect()),
        sessions: r
            .sessions
            .iter()
            .map(|s| SessionScan {
                session_id: s.session_id,
                dtb: format!("{:#x}", s.dtb.0),
                mapped_pages: s.mapped_pages,
                heap: s.heap.map(|h| h.to_string()),
                big_pages: s.big_pages.as_ref().map(|b| SessionBigPages {
                    table: b.table.to_string(),
                    size: b.size,
                    matched_live: b.matched_live,
                    matched_freed: b.matched_freed,
                }),
            })
            .collect(),
        page_tables_read: r.pagemap.tables_read,
        alias_pages: r.pagemap.alias_pages,
        duplicate_headers: r.scan.duplicate_headers,
        rejected_by_heap: r.scan.rejected_by_heap,
        not_listed: r.scan.dropped,
    }
}
