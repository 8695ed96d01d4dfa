//! `pooldump find --unsorted`: each scan thread formats the allocations
//! it finds (text row, JSON object or CSV record) and writes them to
//! stdout under one lock as it goes ([`pooldump_core::Target::find_with`]),
//! so memory does not grow with the number of results. What needs the
//! whole scan (the per-tag table, the unmapped headers, the warnings)
//! follows the list.
//!
//! The JSON document is the sorted one's, in a different key order:
//! `schema`, `source` and `patterns`, then `allocations` (one compact
//! object per line, in the order found), then the rest, so it stays one
//! valid document however the output is cut into writes.

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Mutex;

use anyhow::{Context, Result};
use pooldump_core::pool::find::{AllocationState, BlockContents, FoundAllocation, MAX_BLOCK_BYTES};
use serde::Serialize;

use super::report::{AllocationJson, Listed, Report, SourceInfo};
use super::text::{
    Shown, allocation_cells, allocation_columns, allocation_csv, allocation_csv_header,
    push_allocations, render_text, rows_per_block,
};
use super::{Args, Opened};
use crate::contents::AllocationWithContents;
use crate::render::Columns;

/// The output of every format.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
    Csv,
}

/// Where the scan threads write.
struct Out<W> {
    w: W,
    /// Allocations written.
    rows: u64,
    /// The write (or, with --bytes, the read) that failed: the search
    /// stops and this is returned.
    failed: Option<anyhow::Error>,
}

struct Stream<'o, W> {
    out: Mutex<Out<W>>,
    format: Format,
    allocated_only: bool,
    /// With --bytes: the source the allocations' bytes are read from, as
    /// each is written, and how many of each.
    contents: Option<(&'o Opened, u64)>,
    /// Text: fixed widths, wide enough for any address and size (no row
    /// can be measured before it is written).
    columns: Columns,
}

/// Search and write the allocations as they are found, then the summary.
pub(super) fn run<W: Write + Send>(args: &Args, w: W) -> Result<()> {
    let format = match (args.json, args.csv) {
        (true, _) => Format::Json,
        (_, true) => Format::Csv,
        _ => Format::Text,
    };
    let opened = super::open(args)?;
    let s = Stream {
        out: Mutex::new(Out {
            w,
            rows: 0,
            failed: None,
        }),
        format,
        allocated_only: args.allocated,
        contents: args.bytes.map(|n| (&opened, n)),
        columns: widest_columns(),
    };
    s.head(&opened)?;
    let sink = |batch: &[FoundAllocation]| s.batch(batch);
    let found = super::search(args, &opened, Some(&sink));
    let mut out = s.out.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = out.failed.take() {
        return Err(e);
    }
    let r = super::finish(&opened, found?, Listed::Omitted);
    tail(&r, format, out.rows, &mut out.w)?;
    out.w.flush()?;
    Ok(())
}

/// Columns as wide as the widest row can be.
fn widest_columns() -> Columns {
    let widest = FoundAllocation {
        va: pooldump_core::KernelVa(u64::MAX),
        header: None,
        pa: Some(pooldump_core::PhysAddr((1 << 52) - 1)),
        tag: pooldump_core::PoolTag(0),
        protected: false,
        bytes: 0xFFFF_FFFF,
        pool: pooldump_core::pool::find::PoolKind::NonPagedNx,
        session: true,
        session_id: Some(u32::MAX),
        pool_type: 0,
        state: AllocationState::Allocated,
        allocator: pooldump_core::pool::find::Allocator::LegacyPage,
        in_dump: true,
    };
    let mut t = allocation_columns();
    let mut row = Default::default();
    allocation_cells(&widest, &mut row);
    t.measure(&row);
    t
}

impl<W: Write + Send> Stream<'_, W> {
    /// What comes before the first allocation.
    fn head(&self, opened: &Opened) -> Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut out.w;
        match self.format {
            Format::Text => self.columns.write_header(w, 1)?,
            Format::Csv => {
                let mut c = csv::Writer::from_writer(w);
                crate::render::csv_record(&mut c, allocation_csv_header(self.contents.is_some()))?;
                c.flush()?;
            }
            Format::Json => {
                #[derive(Serialize)]
                struct Head {
                    schema: &'static str,
                    source: SourceInfo,
                    patterns: Vec<String>,
                }
                let head = serde_json::to_string_pretty(&Head {
                    schema: super::report::SCHEMA,
                    source: super::source_info(opened),
                    patterns: opened.patterns.iter().map(|p| p.to_string()).collect(),
                })?;
                let head = head.strip_suffix("\n}").context("a JSON object")?;
                write!(w, "{head},\n  \"allocations\": [")?;
            }
        }
        Ok(())
    }

    /// Format `batch` and write it (from a scan thread), a few hundred
    /// rows at a time: small buffers of one size, reused, so the heap
    /// does not fragment as the scan threads format side by side.
    fn batch(&self, batch: &[FoundAllocation]) -> ControlFlow<()> {
        const PIECE: usize = 256;
        let mut text = Vec::with_capacity(PIECE * 256);
        // With --bytes, fewer rows a piece: a piece's text stays near a
        // few MiB however many bytes each row shows.
        let each = self.contents.map_or(0, |(_, n)| n.min(MAX_BLOCK_BYTES));
        let rows = rows_per_block(PIECE, each);
        let mut shown = batch
            .iter()
            .filter(|a| !self.allocated_only || a.state == AllocationState::Allocated)
            .peekable();
        while shown.peek().is_some() {
            text.clear();
            let piece: Vec<&FoundAllocation> = shown.by_ref().take(rows).collect();
            let contents = match self.contents {
                Some((o, bytes)) => {
                    let read: Result<Vec<_>> = piece
                        .iter()
                        .map(|a| super::read_contents(o, a, bytes))
                        .collect();
                    match read {
                        Ok(c) => Some(c),
                        Err(e) => return self.fail(e),
                    }
                }
                None => None,
            };
            self.format_rows(&piece, contents.as_deref(), &mut text);
            self.write(&text, piece.len() as u64)?;
        }
        ControlFlow::Continue(())
    }

    /// `list` in the output's format, appended to `text`, with each
    /// allocation's bytes when `contents` has them (one each, in order).
    fn format_rows(
        &self,
        list: &[&FoundAllocation],
        contents: Option<&[BlockContents]>,
        text: &mut Vec<u8>,
    ) {
        let bytes = |i: usize| contents.and_then(|c| c.get(i));
        match self.format {
            Format::Text => {
                let mut s = String::with_capacity(list.len() * 128);
                push_allocations(&self.columns, list.iter().copied(), contents, &mut s);
                text.extend_from_slice(s.as_bytes());
            }
            Format::Json => {
                for (i, a) in list.iter().enumerate() {
                    text.extend_from_slice(b",\n    ");
                    // Writing to a Vec cannot fail: every field is a
                    // number, a bool or a string.
                    let _ = match bytes(i) {
                        Some(c) => serde_json::to_writer(
                            &mut *text,
                            &AllocationWithContents::new(a, Some(c)),
                        ),
                        None => serde_json::to_writer(&mut *text, &AllocationJson(a)),
                    };
                }
            }
            Format::Csv => {
                let mut c = csv::Writer::from_writer(text);
                for (i, a) in list.iter().enumerate() {
                    let _ = allocation_csv(&mut c, a, bytes(i));
                }
                let _ = c.flush();
            }
        }
    }

    /// A read failed: the search stops and `e` is returned.
    fn fail(&self, e: anyhow::Error) -> ControlFlow<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.failed.get_or_insert(e);
        ControlFlow::Break(())
    }

    /// Write `n` formatted allocations; a failed write stops the search.
    fn write(&self, text: &[u8], n: u64) -> ControlFlow<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if out.failed.is_some() {
            return ControlFlow::Break(());
        }
        // The first JSON object has no comma before it.
        let skip = usize::from(self.format == Format::Json && out.rows == 0);
        match out.w.write_all(text.get(skip..).unwrap_or_default()) {
            Ok(()) => {
                out.rows += n;
                ControlFlow::Continue(())
            }
            Err(e) => {
                out.failed = Some(e.into());
                ControlFlow::Break(())
            }
        }
    }
}

/// What follows the allocations: for text, the sorted output without its
/// allocation table; for JSON, the rest of the document.
fn tail(r: &Report, format: Format, rows: u64, w: &mut dyn Write) -> Result<()> {
    match format {
        Format::Text => {
            if rows == 0 {
                w.write_all(b" No allocation carries these tags.\n")?;
            }
            w.write_all(b"\n")?;
            render_text(r, Shown::AfterStream, w)?;
        }
        Format::Csv => super::text::warnings_to_stderr(r),
        Format::Json => {
            // The whole report without its allocations, from its first key
            // after `patterns` (each top-level key is on a line of its own,
            // indented by two spaces).
            let doc = serde_json::to_string_pretty(r)?;
            let at = doc
                .find("\n  \"allocator\": ")
                .context("the report's allocator key")?;
            w.write_all(if rows == 0 {
                b"],"
            } else {
                b"\n  ],".as_slice()
            })?;
            w.write_all(&doc.as_bytes()[at..])?;
            w.write_all(b"\n")?;
        }
    }
    Ok(())
}
