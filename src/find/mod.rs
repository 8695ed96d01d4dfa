//! `pooldump find`: `!poolfind` at memory bandwidth. Every allocation
//! carrying the given tags (PoolMon wildcards and `0x...` values allowed):
//! address, physical address, size, pool, allocated or free, allocator;
//! then per-tag counts and bytes beside the tracker's live count, and the
//! headers found in frames no pool address maps. [`collect`] builds a
//! typed report ([`report`]); [`text`] formats it as text and CSV and
//! serde as JSON. `--unsorted` ([`stream`]) writes the allocations as the
//! scan finds them instead.

mod report;
mod stream;
mod text;

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pooldump_core::pool::TagPattern;
use pooldump_core::pool::find::{
    AllocationState, BlockContents, Engine, FindOptions, FindReport, FindSink, FoundAllocation,
    ScanProgress, contents_fit,
};
use pooldump_core::relabel::RelabelMap;
use pooldump_core::{Target, Warning, WarningKind};
use rayon::prelude::*;

use crate::common::{
    Source, SourceArgs, SourceMeta, SymbolArgs, UsageError, kdnet_report, open_source, release,
};
use crate::relabel_rows;
use report::Listed;
pub use report::Report;
pub(crate) use report::{AllocationJson, SourceInfo, family_name};
pub(crate) use text::{allocation_cells, allocation_columns};

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
    /// Print only the per-tag table (the allocations are counted as they
    /// are found, never held, sorted or not).
    #[arg(long)]
    pub per_tag: bool,
    /// Scan threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Candidate search: auto, memmem, stride or aho-corasick.
    #[arg(long, default_value = "auto", value_name = "ENGINE")]
    pub engine: Engine,
    /// Skip the big-page tables (the kernel's and each session's).
    #[arg(long)]
    pub no_big_pool: bool,
    /// Keep at most N allocations to sort and list (they are held in
    /// memory); the rest are counted and a warning says how many.
    /// `--unsorted` holds none and lists every one.
    #[arg(long, value_name = "N", default_value_t = FindOptions::default().max_results)]
    pub max_results: usize,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Find the tags of a relabel map (each allocation site's fresh tag,
    /// and the old one) and add a table per call site; the map is checked
    /// against this dump's or target's kernel and modules.
    #[arg(long, value_name = "FILE")]
    pub relabel: Option<PathBuf>,
    /// Show N bytes of each listed allocation's body (after its pool
    /// header) under its line, as DWORDs with their characters (`dc`);
    /// JSON and CSV add them as hex. Decimal, or hex with 0x; at most
    /// 0x10000.
    #[arg(long, value_name = "N", value_parser = crate::contents::parse_byte_count, conflicts_with = "per_tag")]
    pub bytes: Option<u64>,
    /// Print JSON (schema pooldump.find/2, docs/find.md).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV: the allocations, or with --per-tag the per-tag table.
    #[arg(long)]
    pub csv: bool,
    /// Write each allocation as the scan finds it, in no particular
    /// order, instead of sorting by address: memory stays the same however
    /// many allocations match. The per-tag table, the unmapped headers
    /// and the warnings follow the list.
    #[arg(long)]
    pub unsorted: bool,
}

/// Search and write the result to stdout as it is rendered: a find can
/// list hundreds of thousands of allocations, which are never held as
/// text (a closed pipe ends the output quietly).
pub fn run(args: &Args) -> Result<()> {
    // The one escaping rule, as main applies it to the other commands'
    // output (tags, names and warnings come from the dump and from files).
    let out = std::io::BufWriter::with_capacity(
        1 << 16,
        crate::render::EscapingWriter::new(std::io::stdout()),
    );
    let written = if args.unsorted && !args.per_tag {
        stream::run(args, out)
    } else {
        collect(args).and_then(|r| Ok(render(&r, args, out)?))
    };
    match written {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// The sorted report in the format asked for.
fn render(r: &Report, args: &Args, mut out: impl Write) -> std::io::Result<()> {
    if args.json {
        serde_json::to_writer_pretty(&mut out, r)?;
        out.write_all(b"\n")?;
    } else if args.csv {
        text::render_csv(r, args.per_tag, &mut out)?;
    } else {
        let shown = if args.per_tag {
            text::Shown::PerTag
        } else {
            text::Shown::Everything
        };
        text::render_text(r, shown, &mut out)?;
    }
    out.flush()
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
        return Err(UsageError(
            "name the tags to find with --tag TAG, --tags-from FILE or --relabel MAP".into(),
        )
        .into());
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

/// The source opened, with what the search needs besides.
struct Opened {
    patterns: Vec<TagPattern>,
    target: Target<Source>,
    meta: SourceMeta,
    /// `--relabel`'s map, checked against the source.
    checked: Option<relabel_rows::Checked>,
}

/// Parse the tags, open the source, check the relabel map.
fn open(args: &Args) -> Result<Opened> {
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
    Ok(Opened {
        patterns,
        target,
        meta,
        checked,
    })
}

/// The search: sorted, or with a sink, streamed to it. A live target
/// runs again once it is done.
fn search(args: &Args, o: &Opened, sink: Option<&dyn FindSink>) -> Result<FindReport> {
    let found = search_stopped(args, o, sink);
    release(&o.meta)?;
    found
}

/// The search, leaving a live target stopped: the caller resumes it.
fn search_stopped(args: &Args, o: &Opened, sink: Option<&dyn FindSink>) -> Result<FindReport> {
    let bar =
        (!args.no_progress && !args.json && std::io::stderr().is_terminal()).then(ScanBar::default);
    let opts = FindOptions {
        engine: args.engine,
        threads: args.threads,
        release_scanned: true,
        big_pool: !args.no_big_pool,
        max_results: args.max_results,
        progress: bar.as_ref().map(|b| b as &dyn ScanProgress),
        ..FindOptions::default()
    };
    let found = match sink {
        Some(sink) => o.target.find_with(&o.patterns, &opts, sink),
        None => o.target.find(&o.patterns, &opts),
    };
    found.with_context(|| format!("{}: build {}: finding the tags", o.meta.name, o.meta.build))
}

/// The search, then `bytes` of each allocation listed, read before a live
/// target runs again: with `--allocated`, only the allocated ones are
/// kept (and read).
fn search_with_contents(
    args: &Args,
    o: &Opened,
    bytes: u64,
) -> Result<(FindReport, Vec<BlockContents>)> {
    let mut found = search_stopped(args, o, None)?;
    if args.allocated {
        found
            .allocations
            .retain(|a| a.state == AllocationState::Allocated);
    }
    // The sorted listing holds every allocation's bytes until it writes
    // them; --unsorted reads each as it writes it and holds none.
    if let Err(e) = contents_fit(found.allocations.len(), bytes) {
        bail!(
            "{}: {e}: --unsorted writes each allocation as it is found, or ask fewer --bytes",
            o.meta.name
        );
    }
    let contents = found
        .allocations
        .par_iter()
        .map(|a| read_contents(o, a, bytes))
        .collect::<Result<_>>()?;
    Ok((found, contents))
}

/// `bytes` of `a`'s body; only a live link failing is an error.
fn read_contents(o: &Opened, a: &FoundAllocation, bytes: u64) -> Result<BlockContents> {
    o.target.allocation_contents(a, bytes).with_context(|| {
        format!(
            "{}: reading the contents of the allocation at {}",
            o.meta.name, a.va
        )
    })
}

/// The report of a finished search.
fn finish(o: &Opened, found: FindReport, listed: Listed) -> Report {
    let mut warnings = o.target.warnings.clone();
    warnings.extend(found.warnings.iter().cloned());
    if let Some(c) = &o.checked {
        warnings.extend(Warning::all(WarningKind::Relabel, &c.warnings));
    }
    // A sorted list stopped at --max-results (a streamed one holds none).
    if found.scan.dropped > 0 && !matches!(listed, Listed::Omitted) {
        warnings.push(Warning::new(
            WarningKind::Find,
            "--unsorted lists every match, in constant memory, as the scan finds them",
        ));
    }
    let sites = o
        .checked
        .as_ref()
        .map(|c| report::site_rows(&c.map, &found));
    let m = &o.meta;
    let mut r = report::report(found, &m.name, m.build, m.live, listed, warnings);
    r.kdnet = kdnet_report(m);
    r.sites = sites;
    r
}

fn source_info(o: &Opened) -> SourceInfo {
    SourceInfo {
        name: o.meta.name.clone(),
        build: o.meta.build,
        live: o.meta.live,
    }
}

/// The sorted report. With `--per-tag` the allocations are only counted
/// (streamed past a sink that drops them), so nothing grows with them.
pub fn collect(args: &Args) -> Result<Report> {
    let opened = open(args)?;
    let listed = if args.allocated {
        Listed::Allocated
    } else {
        Listed::All
    };
    let (found, listed, contents) = if args.per_tag {
        let count_only = |_: &[FoundAllocation]| ControlFlow::Continue(());
        let found = search(args, &opened, Some(&count_only))?;
        (found, Listed::Omitted, Vec::new())
    } else if let Some(bytes) = args.bytes {
        let searched = search_with_contents(args, &opened, bytes);
        release(&opened.meta)?;
        let (found, contents) = searched?;
        (found, listed, contents)
    } else {
        (search(args, &opened, None)?, listed, Vec::new())
    };
    let mut r = finish(&opened, found, listed);
    r.allocations.set_contents(contents);
    Ok(r)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_with_contents_are_formatted_a_few_at_a_time() {
        use text::rows_per_block;
        assert_eq!(rows_per_block(4096, 0), 4096);
        assert_eq!(rows_per_block(256, 0x20), 256);
        assert_eq!(rows_per_block(4096, 0x1_0000), 4);
        assert_eq!(rows_per_block(4096, u64::MAX), 1);
    }
}
