//! `pooldump find`: `!poolfind` at memory bandwidth. Every allocation
//! carrying the given tags (PoolMon wildcards and `0x...` values allowed):
//! address, physical address, size, pool, allocated or free, allocator;
//! then per-tag counts and bytes beside the tracker's live count, and the
//! headers found in frames no pool address maps. [`collect`] builds a
//! typed report; the text, JSON and CSV renderers only format it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pooldump_core::pool::TagPattern;
use pooldump_core::pool::find::{
    self, AllocationState, Engine, FindOptions, FindReport, FoundAllocation, ScanProgress,
};
use rayon::prelude::*;
use serde::Serialize;

use crate::common::{SourceArgs, SymbolArgs, kdnet_report, open_source, release};
use crate::relabel_rows;
use crate::render::{Align, Columns, Table};
use pooldump_core::relabel::RelabelMap;
use pooldump_core::{Warning, WarningKind};

/// Find every allocation with the given tags (!poolfind).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub symbols: SymbolArgs,
    /// A tag to find: `Abc1`, a PoolMon pattern (`Ab?1`, `Ab*`; case
    /// sensitive) or a value (`0x31636241`); may be repeated.
    #[arg(short, long = "tag", value_name = "TAG")]
    pub tags: Vec<TagPattern>,
    /// Read tags from FILE, one per line (blank lines and `#` comments
    /// skipped), e.g. the fresh tags given to each call site; the per-tag
    /// table lists every one of them.
    #[arg(long, value_name = "FILE")]
    pub tags_from: Option<PathBuf>,
    /// List only allocated allocations (not freed ones, nor headers whose
    /// state the heap cannot tell).
    #[arg(long)]
    pub allocated: bool,
    /// Print only the per-tag table.
    #[arg(long)]
    pub per_tag: bool,
    /// Scan threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Candidate search: auto, memmem, stride or aho-corasick.
    #[arg(long, default_value = "auto", value_name = "ENGINE")]
    pub engine: Engine,
    /// Skip the big-page table.
    #[arg(long)]
    pub no_big_pool: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Find the tags of a relabel map (each allocation site's fresh tag,
    /// and the old one) and add a table per call site; the map is checked
    /// against this dump's or target's kernel and modules.
    #[arg(long, value_name = "FILE")]
    pub relabel: Option<PathBuf>,
    /// Print JSON (schema pooldump.find/2, docs/find.md).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV: the allocations, or with --per-tag the per-tag table.
    #[arg(long)]
    pub csv: bool,
}

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
/// (legacy-page, lfh, vs, big-pool, unverified) and `in_dump`.
#[derive(Debug, Default)]
pub struct Allocations {
    list: Vec<FoundAllocation>,
    /// --per-tag: the per-tag table only.
    omitted: bool,
}

impl Allocations {
    fn is_omitted(&self) -> bool {
        self.omitted
    }

    /// The allocations the user asked for (with `--allocated`, only live
    /// ones: the others were dropped when the report was built).
    fn shown(&self) -> &[FoundAllocation] {
        &self.list
    }

    pub fn iter(&self) -> impl Iterator<Item = &FoundAllocation> {
        self.list.iter()
    }
}

impl Serialize for Allocations {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(AllocationJson))
    }
}

/// One allocation as JSON, its strings formatted while it is written.
struct AllocationJson<'a>(&'a FoundAllocation);

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
        let mut m = s.serialize_struct("Allocation", 12)?;
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
    pub page_tables_read: u64,
    pub alias_pages: u64,
    pub duplicate_headers: u64,
    pub rejected_by_heap: u64,
}

/// Collect the report and write it to stdout as it is rendered: a find
/// can list hundreds of thousands of allocations, which are never held as
/// text (a closed pipe ends the output quietly).
pub fn run(args: &Args) -> Result<()> {
    let r = collect(args)?;
    // The one escaping rule, as main applies it to the other commands'
    // output (tags, names and warnings come from the dump and from files).
    let mut out = std::io::BufWriter::with_capacity(
        1 << 16,
        crate::render::EscapingWriter::new(std::io::stdout().lock()),
    );
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &r)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else if args.csv {
        render_csv(&r, args.per_tag, &mut out)
    } else {
        render_text(&r, args, &mut out)
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// The tags of `--tag`, `--tags-from` and `--relabel`'s map.
pub fn patterns(args: &Args) -> Result<Vec<TagPattern>> {
    let mut p = args.tags.clone();
    if let Some(f) = &args.tags_from {
        p.extend(read_tags_file(f)?);
    }
    if let Some(path) = &args.relabel {
        let bytes = pooldump_core::input::read_capped(
            path,
            crate::relabel_rows::MAX_MAP_FILE,
            "a relabel map",
        )?;
        let map = RelabelMap::from_json(&bytes, &path.display().to_string())?;
        p.extend(
            relabel_rows::map_tags(&map)
                .into_iter()
                .map(relabel_rows::pattern),
        );
    }
    if p.is_empty() {
        bail!("name the tags to find with --tag TAG, --tags-from FILE or --relabel MAP");
    }
    Ok(p)
}

/// A tags file larger than this is refused (a million tags is 5 MiB).
const MAX_TAGS_FILE: u64 = 8 << 20;

/// One tag per line; trailing blanks are padding (`Irp` is `Irp `).
fn read_tags_file(path: &Path) -> Result<Vec<TagPattern>> {
    let bytes = pooldump_core::input::read_capped(path, MAX_TAGS_FILE, "a tags file")?;
    let text = pooldump_core::pool::pooltag::decode_text(&bytes);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t.trim_start().is_empty() || t.trim_start().starts_with('#') {
            continue;
        }
        let p = TagPattern::parse(t).with_context(|| {
            let shown: String = t.chars().take(40).collect();
            format!(
                "{}: line {}: `{}` is not a tag",
                path.display(),
                n + 1,
                pooldump_core::text::escape(&shown)
            )
        })?;
        out.push(p);
    }
    if out.is_empty() {
        bail!("{}: no tags in the file", path.display());
    }
    Ok(out)
}

pub fn collect(args: &Args) -> Result<Report> {
    let patterns = patterns(args)?;
    let (target, meta) = open_source(&args.source, &args.symbols)?;
    let checked = match args
        .relabel
        .as_deref()
        .map(|p| relabel_rows::load_and_check(p, &target))
    {
        Some(Err(e)) => {
            release(&meta)?;
            return Err(e);
        }
        Some(Ok(c)) => Some(c),
        None => None,
    };
    let bar =
        (!args.no_progress && !args.json && std::io::stderr().is_terminal()).then(ScanBar::default);
    let opts = FindOptions {
        engine: args.engine,
        threads: args.threads,
        release_scanned: true,
        big_pool: !args.no_big_pool,
        progress: bar.as_ref().map(|b| b as &dyn ScanProgress),
        ..FindOptions::default()
    };
    let found = target
        .find(&patterns, &opts)
        .with_context(|| format!("{}: build {}: finding the tags", meta.name, meta.build));
    release(&meta)?;
    let found = found?;
    let mut warnings = target.warnings.clone();
    warnings.extend(found.warnings.iter().cloned());
    if let Some(c) = &checked {
        warnings.extend(Warning::all(WarningKind::Relabel, &c.warnings));
    }
    let sites = checked.map(|c| site_rows(&c.map, &found));
    let mut r = report(found, &meta.name, meta.build, meta.live, args, warnings);
    r.kdnet = kdnet_report(&meta);
    r.sites = sites;
    Ok(r)
}

/// The per-tag counts as rows per call site of the map: each allocation
/// site's tag, most bytes first, then the old tag.
fn site_rows(map: &RelabelMap, r: &FindReport) -> Vec<SiteRow> {
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

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

fn report(
    mut r: FindReport,
    name: &str,
    build: u32,
    live: bool,
    args: &Args,
    warnings: Vec<Warning>,
) -> Report {
    Report {
        schema: "pooldump.find/2",
        source: SourceInfo {
            name: name.to_string(),
            build,
            live,
        },
        patterns: r.patterns.clone(),
        allocator: match r.allocator {
            find::AllocatorFamily::Legacy => "legacy".into(),
            find::AllocatorFamily::SegmentHeap => "segment-heap".into(),
        },
        allocations: Allocations {
            list: {
                let mut list = std::mem::take(&mut r.allocations);
                if args.allocated {
                    list.retain(|a| a.state == AllocationState::Allocated);
                }
                list
            },
            omitted: args.per_tag,
        },
        // In the order analyze's tag table uses (PoolMon's T: the tag's
        // four characters as they are written, byte by byte), so the two
        // tables read alike and a tag is found where a reader looks for
        // it; the scan keeps them by the tag's numeric value, which puts
        // `ZZZZ` before `Leak` (the first character is the low byte).
        tags: {
            let mut tags: Vec<_> = r.tags.iter().collect();
            tags.sort_by_key(|t| t.tag.bytes());
            tags
        }
        .into_iter()
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
        .collect(),
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
        scan: Scan {
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
            page_tables_read: r.pagemap.tables_read,
            alias_pages: r.pagemap.alias_pages,
            duplicate_headers: r.scan.duplicate_headers,
            rejected_by_heap: r.scan.rejected_by_heap,
        },
        warnings,
        kdnet: None,
    }
}

fn state_text(s: AllocationState) -> &'static str {
    match s {
        AllocationState::Allocated => "Allocated",
        AllocationState::Free => "Free",
        AllocationState::Unknown => "Unknown",
    }
}

fn render_text(r: &Report, args: &Args, w: &mut dyn Write) -> std::io::Result<()> {
    let mut out = String::new();
    let s = &r.scan;
    let gib = s.bytes as f64 / (1u64 << 30) as f64;
    let rate = if s.seconds > 0.0 {
        format!(", {:.1} GB/s", s.bytes as f64 / s.seconds / 1e9)
    } else {
        String::new()
    };
    out.push_str(&format!(
        "{}: Windows build {}, {} pool; tags {}\n",
        r.source.name,
        r.source.build,
        r.allocator,
        r.patterns.join(", ")
    ));
    out.push_str(&format!(
        "Scanned {gib:.2} GiB ({} frames) in {:.2} s{rate} ({}, {} thread(s)); {}\n\n",
        s.frames,
        s.seconds,
        s.engine,
        s.threads,
        match &s.regions {
            Some(v) => format!("pool regions {}", v.join(", ")),
            None => "pool regions unknown: the whole kernel half was mapped".into(),
        }
    ));
    if !args.per_tag {
        // As !poolfind lists them: the block (its pool header, or the
        // big-page entry's address), its physical address and size.
        let mut t = Columns::new(&[
            ("Block", Align::Left),
            ("Physical", Align::Right),
            ("Size", Align::Right),
            ("Pool", Align::Left),
            ("State", Align::Left),
            ("Allocator", Align::Left),
            ("Tag", Align::Left),
        ]);
        let list = r.allocations.shown();
        // Formatting hundreds of thousands of rows is most of what is left
        // after the scan: both passes run on every core, a block of rows
        // at a time, and the blocks are written in order.
        const BLOCK: usize = 4096;
        if let Some(widths) = list
            .par_chunks(BLOCK)
            .map(|c| {
                let (mut t, mut row) = (t.clone(), Default::default());
                for a in c {
                    allocation_cells(a, &mut row);
                    t.measure(&row);
                }
                t
            })
            .reduce_with(|mut a, b| {
                a.merge(&b);
                a
            })
        {
            t.merge(&widths);
        }
        w.write_all(out.as_bytes())?;
        out.clear();
        if list.is_empty() {
            w.write_all(b" No allocation carries these tags.\n")?;
        } else {
            t.write_header(w, 1)?;
            // A bounded number of formatted blocks at a time.
            for group in list.chunks(BLOCK * 16) {
                let text: Vec<String> = group
                    .par_chunks(BLOCK)
                    .map(|c| {
                        let (mut s, mut row) =
                            (String::with_capacity(c.len() * 96), Default::default());
                        for a in c {
                            allocation_cells(a, &mut row);
                            t.push_line(&mut s, &row, 1);
                        }
                        s
                    })
                    .collect();
                for s in text {
                    w.write_all(s.as_bytes())?;
                }
            }
        }
        out.push('\n');
    }
    out.push_str(
        "Per tag, in tag order as analyze lists them (Tracker: live allocations and bytes the tag tracker counts):\n",
    );
    let mut t = Table::new(&[
        ("Tag", Align::Left),
        ("Allocated", Align::Right),
        ("Bytes", Align::Right),
        ("Free", Align::Right),
        ("Unknown", Align::Right),
        ("Tracker", Align::Right),
        ("Tracker Bytes", Align::Right),
        ("Not found", Align::Right),
    ]);
    let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
    for x in &r.tags {
        t.push(vec![
            x.tag.clone(),
            x.allocated.to_string(),
            x.bytes.to_string(),
            x.free.to_string(),
            x.unknown.to_string(),
            opt(x.tracker_diff),
            opt(x.tracker_bytes),
            opt(x.not_found),
        ]);
    }
    t.render(&mut out, 1);
    if let Some(sites) = &r.sites {
        out.push_str("\nPer call site (the relabel map's tags):\n");
        let mut t = Table::new(&[
            ("Site", Align::Left),
            ("Tag", Align::Left),
            ("Allocated", Align::Right),
            ("Bytes", Align::Right),
            ("Free", Align::Right),
            ("Tracker", Align::Right),
            ("Tracker Bytes", Align::Right),
        ]);
        for x in sites {
            t.push(vec![
                x.site.clone(),
                x.tag.clone(),
                x.allocated.to_string(),
                x.bytes.to_string(),
                x.free.to_string(),
                opt(x.tracker_diff),
                opt(x.tracker_bytes),
            ]);
        }
        t.render(&mut out, 1);
    }
    if !r.unmapped.is_empty() && !args.per_tag {
        out.push_str(
            "\nHeaders in frames no pool address maps (possibly freed memory; not counted above):\n",
        );
        let mut t = Table::new(&[
            ("Physical", Align::Right),
            ("Size", Align::Right),
            ("PoolType", Align::Right),
            ("State", Align::Left),
            ("Mapped at", Align::Left),
            ("Tag", Align::Left),
        ]);
        for u in &r.unmapped {
            t.push(vec![
                u.pa.clone(),
                hex(u.bytes),
                u.pool_type.clone(),
                state_text(u.state).into(),
                u.mapped_at.clone().unwrap_or_else(|| "-".into()),
                u.tag.clone(),
            ]);
        }
        t.render(&mut out, 1);
    }
    let mut notes = Vec::new();
    if s.unreadable_frames > 0 {
        notes.push(format!(
            "{} frame(s) of the dump could not be read: results are partial",
            s.unreadable_frames
        ));
    }
    if s.paged_out_pages > 0 {
        notes.push(format!(
            "{} pool page(s) are paged out: allocations on them are counted by the tracker, not found",
            s.paged_out_pages
        ));
    }
    if !r.warnings.is_empty() || !notes.is_empty() {
        out.push_str("\nWarnings:\n");
        let messages = r.warnings.iter().map(|w| &w.message);
        for w in notes.iter().chain(messages) {
            out.push_str(&format!("  - {w}\n"));
        }
    }
    w.write_all(out.as_bytes())
}

/// The text columns of one allocation, in reused buffers.
fn allocation_cells(a: &FoundAllocation, row: &mut [String; 7]) {
    use std::fmt::Write as _;
    for c in row.iter_mut() {
        c.clear();
    }
    let _ = write!(row[0], "{}", a.header.unwrap_or(a.va));
    match a.pa {
        Some(p) => {
            let _ = write!(row[1], "{:#x}", p.0);
        }
        None => row[1].push('-'),
    }
    let _ = write!(row[2], "{:#x}", a.bytes);
    row[3].push_str(a.pool.name());
    if a.session {
        row[3].push_str(" session");
    }
    row[4].push_str(state_text(a.state));
    let _ = write!(row[5], "{}", a.allocator);
    let _ = write!(row[6], "{}", a.tag);
    if a.protected {
        row[6].push_str(" (protected)");
    }
    if !a.in_dump && a.state == AllocationState::Allocated {
        row[6].push_str(" (not in dump)");
    }
}

fn render_csv(r: &Report, per_tag: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    if per_tag {
        crate::render::csv_record(
            &mut w,
            [
                "tag",
                "allocated",
                "bytes",
                "free",
                "unknown",
                "not_in_dump",
                "tracker_diff",
                "tracker_bytes",
                "not_found",
            ],
        )?;
        for x in &r.tags {
            crate::render::csv_record(
                &mut w,
                [
                    x.tag.clone(),
                    x.allocated.to_string(),
                    x.bytes.to_string(),
                    x.free.to_string(),
                    x.unknown.to_string(),
                    x.not_in_dump.to_string(),
                    opt(x.tracker_diff),
                    opt(x.tracker_bytes),
                    opt(x.not_found),
                ],
            )?;
        }
    } else {
        crate::render::csv_record(
            &mut w,
            [
                "va",
                "header",
                "pa",
                "bytes",
                "pool",
                "session",
                "pool_type",
                "state",
                "allocator",
                "tag",
                "protected",
                "in_dump",
            ],
        )?;
        for a in r.allocations.iter() {
            crate::render::csv_record(
                &mut w,
                [
                    a.va.to_string(),
                    a.header.map(|h| h.to_string()).unwrap_or_default(),
                    a.pa.map(|p| hex(p.0)).unwrap_or_default(),
                    a.bytes.to_string(),
                    a.pool.name().to_string(),
                    a.session.to_string(),
                    hex(u64::from(a.pool_type)),
                    state_text(a.state).to_lowercase(),
                    serde_json::to_value(a.allocator)?
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    a.tag.to_string(),
                    a.protected.to_string(),
                    a.in_dump.to_string(),
                ],
            )?;
        }
    }
    w.flush()
}

/// An indicatif bar on stderr that appears only once a scan has run for
/// a second (short scans print nothing).
#[derive(Default)]
struct ScanBar {
    bar: OnceLock<indicatif::ProgressBar>,
    started: OnceLock<Instant>,
    shown: AtomicBool,
}

impl ScanProgress for ScanBar {
    fn start(&self, total: u64) {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::hidden(),
        );
        let style = indicatif::ProgressStyle::with_template(
            "scanning {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        let _ = self.bar.set(bar);
        let _ = self.started.set(Instant::now());
    }
    fn advance(&self, bytes: u64) {
        let Some(bar) = self.bar.get() else { return };
        bar.inc(bytes);
        let late = self
            .started
            .get()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(1));
        if late && !self.shown.swap(true, Ordering::Relaxed) {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    }
    fn finish(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
        }
    }
}
