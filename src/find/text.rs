//! `pooldump find`'s text and CSV output, written from the [`Report`] as
//! it is formatted (a find can list hundreds of thousands of allocations,
//! which are never held as text). The rows of one allocation are built
//! here for the sorted output and for `--unsorted` alike.

use std::io::Write;

use pooldump_core::pool::find::{AllocationState, BlockContents, FoundAllocation};
use rayon::prelude::*;

use super::report::Report;
use crate::render::{Align, Columns, ListTable, hex, push_list};

/// What the text output shows besides the summary.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Shown {
    /// The allocation table (from the report) and the unmapped headers.
    Everything,
    /// The unmapped headers; the allocations were written before.
    AfterStream,
    /// Neither (`--per-tag`).
    PerTag,
}

pub(super) fn state_text(s: AllocationState) -> &'static str {
    match s {
        AllocationState::Allocated => "Allocated",
        AllocationState::Free => "Free",
        AllocationState::Unknown => "Unknown",
    }
}

pub(super) fn render_text(r: &Report, shown: Shown, w: &mut dyn Write) -> std::io::Result<()> {
    w.write_all(title(r).as_bytes())?;
    if shown == Shown::Everything {
        write_allocations(r.allocations.shown(), r.allocations.contents(), w)?;
        w.write_all(b"\n")?;
    }
    let mut out = String::new();
    push_tags(r, &mut out);
    push_sites(r, &mut out);
    if shown != Shown::PerTag {
        push_unmapped(r, &mut out);
    }
    push_warnings(r, &mut out);
    w.write_all(out.as_bytes())
}

/// The source, the tags, and what the scan read.
fn title(r: &Report) -> String {
    let s = &r.scan;
    let gib = s.bytes as f64 / (1u64 << 30) as f64;
    let rate = if s.seconds > 0.0 {
        format!(", {:.1} GB/s", s.bytes as f64 / s.seconds / 1e9)
    } else {
        String::new()
    };
    let sessions = if s.sessions.is_empty() {
        String::new()
    } else {
        let ids: Vec<String> = s
            .sessions
            .iter()
            .map(|x| x.session_id.to_string())
            .collect();
        format!(
            "; session pool of session(s) {} through their own page tables",
            ids.join(", ")
        )
    };
    format!(
        "{}: Windows build {}, {} pool; tags {}\n\
         Scanned {gib:.2} GiB ({} frames) in {:.2} s{rate} ({}, {} thread(s)); {}{sessions}\n\n",
        r.source.name,
        r.source.build,
        r.allocator,
        r.patterns.join(", "),
        s.frames,
        s.seconds,
        s.engine,
        s.threads,
        match &s.regions {
            Some(v) => format!("pool regions {}", v.join(", ")),
            None => "pool regions unknown: the whole kernel half was mapped".into(),
        }
    )
}

/// The allocation table's columns, as !poolfind lists them: the block
/// (its pool header, or the big-page entry's address), its physical
/// address and size.
pub(crate) fn allocation_columns() -> Columns {
    Columns::new(&[
        ("Block", Align::Left),
        ("Physical", Align::Right),
        ("Size", Align::Right),
        ("Pool", Align::Left),
        ("State", Align::Left),
        ("Allocator", Align::Left),
        ("Tag", Align::Left),
    ])
}

/// The sorted allocation table, each row followed by its bytes when
/// `contents` has them (`--bytes`; else it is empty). Formatting hundreds
/// of thousands of rows is most of what is left after the scan: both
/// passes (measuring the columns, writing the rows) run on every core, a
/// block of rows at a time, and the blocks are written in order.
fn write_allocations(
    list: &[FoundAllocation],
    contents: &[BlockContents],
    w: &mut dyn Write,
) -> std::io::Result<()> {
    const BLOCK: usize = 4096;
    if list.is_empty() {
        return w.write_all(b" No allocation carries these tags.\n");
    }
    let mut t = allocation_columns();
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
    t.write_header(w, 1)?;
    // A bounded number of formatted blocks at a time: with contents, fewer
    // rows a block, so that a block's text stays near a few MiB however
    // many bytes each row shows.
    let longest = contents.iter().map(|c| c.bytes.len() as u64).max();
    let rows = rows_per_block(BLOCK, longest.unwrap_or(0));
    for group in (0..list.len()).step_by(rows * 16) {
        let blocks: Vec<usize> = (group..list.len().min(group + rows * 16))
            .step_by(rows)
            .collect();
        let text: Vec<String> = blocks
            .into_par_iter()
            .map(|first| {
                let c = &list[first..list.len().min(first + rows)];
                let bytes = contents.get(first..first + c.len());
                let mut s = String::with_capacity(c.len() * 96);
                push_allocations(&t, c, bytes, &mut s);
                s
            })
            .collect();
        for s in text {
            w.write_all(s.as_bytes())?;
        }
    }
    Ok(())
}

/// The bytes of contents a block of formatted rows carries at most (its
/// text is about five times as long).
const BLOCK_CONTENTS: u64 = 256 << 10;

/// Rows a block of formatted text holds when each row shows up to `each`
/// bytes of contents: `most`, or fewer, never none.
pub(super) fn rows_per_block(most: usize, each: u64) -> usize {
    match BLOCK_CONTENTS.checked_div(each) {
        Some(n) => usize::try_from(n).map_or(most, |n| n.clamp(1, most)),
        None => most,
    }
}

/// The rows of `list` in the columns `t`, appended to `s`; with
/// `contents` (one per allocation, in order), each row's bytes under it.
pub(super) fn push_allocations<'a>(
    t: &Columns,
    list: impl IntoIterator<Item = &'a FoundAllocation>,
    contents: Option<&[BlockContents]>,
    s: &mut String,
) {
    let mut row = Default::default();
    for (i, a) in list.into_iter().enumerate() {
        allocation_cells(a, &mut row);
        t.push_line(s, &row, 1);
        if let Some(c) = contents.and_then(|c| c.get(i)) {
            crate::contents::push_dwords(c, s);
        }
    }
}

/// The text columns of one allocation, in reused buffers.
pub(crate) fn allocation_cells(a: &FoundAllocation, row: &mut [String; 7]) {
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
    // The header's session bit, or an address in a session's space (the
    // session named).
    if a.session || a.session_id.is_some() {
        row[3].push_str(" session");
    }
    if let Some(id) = a.session_id {
        let _ = write!(row[3], " {id}");
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

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn push_tags(r: &Report, out: &mut String) {
    out.push_str(
        "Per tag, in tag order as analyze lists them (Tracker: live allocations and bytes the tag tracker counts):\n",
    );
    ListTable::new(&r.tags)
        .left("Tag", |x| &x.tag)
        .right("Allocated", |x| x.allocated)
        .right("Bytes", |x| x.bytes)
        .right("Free", |x| x.free)
        .right("Unknown", |x| x.unknown)
        .right("Tracker", |x| opt(x.tracker_diff))
        .right("Tracker Bytes", |x| opt(x.tracker_bytes))
        .right("Not found", |x| opt(x.not_found))
        .render(out, 1);
}

fn push_sites(r: &Report, out: &mut String) {
    let Some(sites) = &r.sites else { return };
    out.push_str("\nPer call site (the relabel map's tags):\n");
    ListTable::new(sites)
        .left("Site", |x| &x.site)
        .left("Tag", |x| &x.tag)
        .right("Allocated", |x| x.allocated)
        .right("Bytes", |x| x.bytes)
        .right("Free", |x| x.free)
        .right("Tracker", |x| opt(x.tracker_diff))
        .right("Tracker Bytes", |x| opt(x.tracker_bytes))
        .render(out, 1);
}

fn push_unmapped(r: &Report, out: &mut String) {
    if r.unmapped.is_empty() {
        return;
    }
    out.push_str(
        "\nHeaders in frames no pool address maps (possibly freed memory; not counted above):\n",
    );
    ListTable::new(&r.unmapped)
        .right("Physical", |u| &u.pa)
        .right("Size", |u| hex(u.bytes))
        .right("PoolType", |u| &u.pool_type)
        .left("State", |u| state_text(u.state))
        .left("Mapped at", |u| u.mapped_at.as_deref().unwrap_or("-"))
        .left("Tag", |u| &u.tag)
        .render(out, 1);
}

fn push_warnings(r: &Report, out: &mut String) {
    let notes = scan_notes(r);
    let messages = r.warnings.iter().map(|w| &w.message);
    push_list(out, "\nWarnings:\n", notes.iter().chain(messages));
}

/// `--csv`: the warnings the text output ends with, on stderr.
pub(super) fn warnings_to_stderr(r: &Report) {
    let messages = r.warnings.iter().map(|w| w.message.as_str());
    crate::render::tell_on_stderr(
        "warning",
        scan_notes(r).iter().map(String::as_str).chain(messages),
    );
}

/// What the scan's counts say that a reader must know.
fn scan_notes(r: &Report) -> Vec<String> {
    let s = &r.scan;
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
    notes
}

/// The CSV header of the allocation list.
pub(super) const ALLOCATION_CSV: [&str; 13] = [
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
    "session_id",
];

/// With `--bytes`, the column after [`ALLOCATION_CSV`]'s: the bytes as
/// hex, `??` for one not read.
pub(super) const CONTENTS_CSV: &str = "contents";

/// One allocation as a CSV record, in [`ALLOCATION_CSV`]'s columns, then
/// [`CONTENTS_CSV`]'s when its bytes were read.
pub(super) fn allocation_csv<W: Write>(
    w: &mut csv::Writer<W>,
    a: &FoundAllocation,
    contents: Option<&BlockContents>,
) -> std::io::Result<()> {
    let cells = [
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
        a.session_id.map(|id| id.to_string()).unwrap_or_default(),
    ];
    let bytes = contents.map(crate::contents::hex_bytes);
    crate::render::csv_record(w, cells.into_iter().chain(bytes))?;
    Ok(())
}

/// The CSV header of the allocation list, with the contents column when
/// the bytes were read.
pub(super) fn allocation_csv_header(contents: bool) -> impl Iterator<Item = &'static str> {
    ALLOCATION_CSV
        .into_iter()
        .chain(contents.then_some(CONTENTS_CSV))
}

/// The CSV header of the per-tag table.
const TAG_CSV: [&str; 9] = [
    "tag",
    "allocated",
    "bytes",
    "free",
    "unknown",
    "not_in_dump",
    "tracker_diff",
    "tracker_bytes",
    "not_found",
];

/// The allocations as CSV, or with `per_tag` the per-tag table.
pub(super) fn render_csv(r: &Report, per_tag: bool, out: &mut dyn Write) -> std::io::Result<()> {
    warnings_to_stderr(r);
    let mut w = csv::Writer::from_writer(out);
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    if per_tag {
        let rows = r.tags.iter().map(|x| {
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
            ]
        });
        crate::render::csv_table(&mut w, TAG_CSV, rows)?;
    } else {
        let contents = r.allocations.contents();
        crate::render::csv_record(&mut w, allocation_csv_header(!contents.is_empty()))?;
        for (i, a) in r.allocations.iter().enumerate() {
            allocation_csv(&mut w, a, contents.get(i))?;
        }
    }
    w.flush()
}
