//! `pooldump analyze`: PoolMon's view of a crash dump (per-tag Allocs,
//! Frees, Diff, Bytes, Per Alloc from the tracker, summed over every
//! processor), `!poolused`'s orders, and the big-page table.
//! [`collect`] builds a typed report; the text, JSON and CSV renderers only
//! format it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use pooldump_core::pool::{
    PoolClass, PoolMonColumn, PoolUsage, SortKey, TrackerOptions, UsageQuery,
};
use pooldump_core::{Warning, WarningKind};

use crate::args::{FilterArgs, ReadArgs};
use crate::common::{SourceArgs, open_source, release};

mod csv;
mod report;
mod sections;
mod text;

pub use report::*;

/// Per-tag pool usage (PoolMon, !poolused) and the big-page table.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Sort by tag, allocs, frees, diff, bytes, per-alloc (PoolMon's T A F
    /// S B M), or nonpaged / paged (the tag's bytes in that pool, as
    /// !poolused 2 and 4 do).
    #[arg(short, long, default_value = "tag", value_parser = parse_sort)]
    pub sort: SortKey,
    /// Reverse the order.
    #[arg(long)]
    pub reverse: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Show only the first N rows.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Add a totals line per pool (PoolMon's E).
    #[arg(short = 'e', long)]
    pub totals: bool,
    /// Include tags whose counters are all zero (seeded at boot).
    #[arg(long)]
    pub all: bool,
    /// List the big-page table's live allocations instead of the tag table.
    #[arg(long)]
    pub big_pool: bool,
    /// With --big-pool: also list freed entries (never counted as live).
    #[arg(long)]
    pub show_free: bool,
    /// Show session pool instead, one table per session (!poolused 8): each
    /// session's tracker read through its own processes' page tables. With
    /// --big-pool, each session's own big-page table (PoolTrackBigPages)
    /// instead of its tags.
    #[arg(long)]
    pub session: bool,
    /// Rows per call site: the map `callsites --patch` or `relabel` wrote
    /// (each allocation site's fresh tag counted under its site's name),
    /// checked against this dump's or target's kernel and modules.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["big_pool", "session"])]
    pub relabel: Option<PathBuf>,
    /// Print JSON (schema pooldump.analyze/2, docs/analyze.md).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
}

fn parse_sort(s: &str) -> Result<SortKey, String> {
    SortKey::parse(s).ok_or_else(|| crate::common::unknown_sort(s, ", nonpaged, paged"))
}

pub fn run(args: &Args) -> Result<String> {
    let r = collect(args)?;
    Ok(if args.json {
        crate::render::json(&r)?
    } else if args.csv {
        csv::render_csv(&r, args)?
    } else {
        text::render_text(&r, args)
    })
}

/// Open the source, read the tracker, and gather what the options ask for
/// (the tag rows, the big-page list, sessions, call sites) into one report.
pub fn collect(args: &Args) -> Result<Report> {
    let (target, meta) = open_source(&args.source, &args.read.symbols)?;
    let tracker_opts = TrackerOptions {
        include_zero: args.all,
        ..TrackerOptions::default()
    };
    let mut warnings = target.warnings.clone();
    // The big-page table does not depend on the tracker: with --big-pool a
    // broken tracker is a warning, not the end.
    let usage = match target.pool_usage(&tracker_opts) {
        Ok(u) => u,
        Err(e) if args.big_pool => {
            warnings.push(Warning::new(
                WarningKind::Tracker,
                format!("the tag tracker could not be read: {e}"),
            ));
            PoolUsage::default()
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)).with_context(|| {
                format!(
                    "{}: build {}: reading the pool tag tracker",
                    meta.name, meta.build
                )
            });
        }
    };
    warnings.extend(usage.warnings.iter().cloned());
    let pooltag = match &args.read.pooltag {
        Some(p) => Some(crate::common::load_pooltag(p)?),
        None => None,
    };
    let query = UsageQuery {
        include: args.filter.include.clone(),
        exclude: args.filter.exclude.clone(),
        pool: args.filter.pool.class(),
        sort: args.sort,
        reverse: args.reverse,
        top: args.top,
    };
    let view = sections::View {
        target: &target,
        meta: &meta,
        args,
        query: &query,
        pooltag: pooltag.as_ref(),
        usage: &usage,
    };
    let rows = view.rows(&query);
    let mut notes = option_notes(args);
    // The tag table is the view (not the big-page list, the sessions' or
    // the call sites' tables).
    if rows.is_empty() && !args.big_pool && !args.session && args.relabel.is_none() {
        notes.extend(empty_filter_note(
            &query,
            "tag rows",
            usage.rows.iter().map(|r| (r.tag, r.pool)),
        ));
    }
    let mut big_pool = None;
    // With --session, the sessions' own tables are the big-page lists.
    if args.big_pool && !args.session {
        big_pool = Some(view.big_pool(&rows, &mut warnings, &mut notes)?);
    }
    let mut sessions = None;
    if args.session {
        sessions = Some(view.sessions(&tracker_opts, &mut warnings)?);
    }
    let relabel = match &args.relabel {
        Some(path) => match view.relabel(path, &mut warnings) {
            Ok(r) => Some(r),
            Err(e) => {
                release(&meta)?;
                return Err(e);
            }
        },
        None => None,
    };
    // Everything is read: let a live target run again.
    release(&meta)?;
    let mut r = view.report(&rows, warnings, notes);
    r.big_pool = big_pool;
    r.sessions = sessions;
    r.relabel = relabel;
    Ok(r)
}

/// What the options given cannot do here.
fn option_notes(args: &Args) -> Vec<String> {
    let mut v = Vec::new();
    if args.show_free && !args.big_pool {
        v.push("--show-free lists the big-page table's freed entries and applies only with --big-pool: it changed nothing here".into());
    }
    if args.big_pool {
        if !matches!(
            args.sort,
            SortKey::Column(PoolMonColumn::Tag | PoolMonColumn::Bytes)
        ) {
            v.push("--sort: the big-page list has one row per allocation (no Allocs, Frees or Diff), so only -s tag and -s bytes apply; it is sorted by tag".into());
        }
        if args.totals {
            v.push("-e/--totals adds totals to the tag table, not to the big-page list (its header gives the live count and bytes)".into());
        }
        if args.all {
            v.push(
                "--all adds the tag table's zero rows; it changes nothing in the big-page list"
                    .into(),
            );
        }
    }
    v
}

/// Why a filter left no row, when the table had rows: which of -i, -x and
/// --pool did it. `rows` are the table's (tag, pool) pairs before any
/// filter.
fn empty_filter_note(
    q: &UsageQuery,
    what: &str,
    rows: impl Iterator<Item = (pooldump_core::PoolTag, PoolClass)> + Clone,
) -> Option<String> {
    let total = rows.clone().count();
    if total == 0 || (q.include.is_empty() && q.exclude.is_empty() && q.pool.is_none()) {
        return None;
    }
    let mut steps = Vec::new();
    let mut left: Vec<(pooldump_core::PoolTag, PoolClass)> = rows.collect();
    if let Some(p) = q.pool {
        left.retain(|r| r.1 == p);
        let name = match p {
            PoolClass::Paged => "paged",
            PoolClass::NonPaged => "nonpaged",
        };
        steps.push(format!("--pool {name} kept {}", left.len()));
    }
    if !q.include.is_empty() {
        left.retain(|r| q.include.iter().any(|p| p.matches(r.0)));
        let mut tags: Vec<String> = left
            .iter()
            .map(|r| r.0.to_string().trim_end().to_string())
            .collect();
        tags.dedup();
        let shown = if tags.is_empty() {
            String::new()
        } else {
            format!(" ({})", tags.join(", "))
        };
        let pats: Vec<String> = q.include.iter().map(|p| format!("-i {p}")).collect();
        steps.push(format!("{} kept {}{shown}", pats.join(" "), left.len()));
    }
    if !q.exclude.is_empty() && !left.is_empty() {
        let pats: Vec<String> = q.exclude.iter().map(|p| format!("-x {p}")).collect();
        steps.push(format!("{} hid the rest", pats.join(" ")));
    }
    Some(format!(
        "no row is left: of the {total} {what}, {}; patterns are case-sensitive, `?` is one character and `*` any",
        steps.join(", ")
    ))
}
