//! `pooldump diff A B`: what changed between two snapshots or dumps, per
//! tag, largest growth first, in PoolMon's `value (change)` columns. The
//! comparison the seeds do by hand between two half-hourly screenshots.

use std::path::PathBuf;

use anyhow::Result;
use pooldump_core::pool::PoolMonColumn;
use pooldump_core::snapshot::{self, RowStatus, SnapshotDiff};

use crate::args::{FilterArgs, ReadArgs};
use crate::render::{Align, poolmon_table};
use crate::snapshot::{change_cells, human_bytes, load, signed};

/// Compare two snapshots or dumps: per tag the change in Allocs, Frees,
/// Diff and Bytes, largest growth first.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The earlier snapshot (JSON) or dump.
    #[arg(value_name = "BEFORE")]
    pub before: PathBuf,
    /// The later snapshot (JSON) or dump.
    #[arg(value_name = "AFTER")]
    pub after: PathBuf,
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Rank by the change in bytes, diff, allocs or frees (PoolMon's B S A
    /// F), by per-alloc (M) or by tag (T).
    #[arg(short, long, default_value = "bytes", value_parser = parse_sort)]
    pub sort: PoolMonColumn,
    /// Reverse the order (largest drop first).
    #[arg(long)]
    pub reverse: bool,
    /// Show only the first N rows.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Print JSON (schema pooldump.diff/2, docs/leak-hunting.md).
    #[arg(long)]
    pub json: bool,
}

fn parse_sort(s: &str) -> Result<PoolMonColumn, String> {
    PoolMonColumn::parse(s).ok_or_else(|| crate::common::unknown_sort(s, ""))
}

pub fn run(args: &Args) -> Result<String> {
    let db = args.read.pooltag_db()?;
    let a = load(&args.before, &args.read, db.as_ref())?;
    let b = load(&args.after, &args.read, db.as_ref())?;
    let mut d = snapshot::diff(&a, &b);
    d.rows.retain(|r| args.filter.keeps(r.value, r.pool));
    snapshot::sort_rows(&mut d.rows, args.sort);
    if args.reverse {
        d.rows.reverse();
    }
    if let Some(n) = args.top {
        d.rows.truncate(n);
    }
    Ok(crate::render::json_or_text(args.json, &d, render_text)?)
}

pub fn render_text(d: &SnapshotDiff) -> String {
    let mut out = String::new();
    let when = |r: &pooldump_core::snapshot::SnapshotRef| {
        let mut parts = Vec::new();
        if let Some(t) = &r.system_time {
            parts.push(t.clone());
        }
        if let Some(u) = &r.uptime {
            parts.push(format!("up {u}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    out.push_str(&format!("Before: {}{}\n", d.before.source, when(&d.before)));
    out.push_str(&format!("After:  {}{}\n", d.after.source, when(&d.after)));
    let mut span = Vec::new();
    if let Some(s) = d.elapsed_secs {
        let abs = std::time::Duration::from_secs(s.abs().round() as u64);
        span.push(format!(
            "{}{} apart",
            if s < 0.0 { "-" } else { "" },
            humantime::format_duration(abs)
        ));
    }
    match d.same_boot {
        Some(true) => span.push("same boot".into()),
        Some(false) => span.push("DIFFERENT BOOTS".into()),
        None => {}
    }
    if !span.is_empty() {
        out.push_str(&format!("        {}\n", span.join(", ")));
    }
    let t = &d.totals;
    out.push_str(&format!(
        "Pool N: {} ({})  P: {} ({})  bytes\n\n",
        t.nonpaged.bytes.after,
        signed(t.nonpaged.bytes.delta),
        t.paged.bytes.after,
        signed(t.paged.bytes.delta),
    ));
    if d.rows.is_empty() {
        out.push_str(
            "No tag changed: the two are the same moment, or every allocation made in between was freed.\n",
        );
    } else {
        render_rows(d, &mut out);
    }
    crate::render::push_list(&mut out, "\nWarnings:\n", &d.warnings);
    out
}

fn render_rows(d: &SnapshotDiff, out: &mut String) {
    let col = |f: fn(&pooldump_core::snapshot::DiffRow) -> pooldump_core::snapshot::Change| {
        change_cells(
            &d.rows
                .iter()
                .map(|r| (f(r).after, f(r).delta))
                .collect::<Vec<_>>(),
        )
    };
    let (allocs, frees, diff, bytes) = (
        col(|r| r.allocs),
        col(|r| r.frees),
        col(|r| r.diff),
        col(|r| r.bytes),
    );
    let mut t = poolmon_table(&[], &[("", Align::Left), ("Mapped_Driver", Align::Left)]);
    for (i, r) in d.rows.iter().enumerate() {
        t.push(vec![
            r.tag.clone(),
            r.pool.poolmon().into(),
            allocs[i].clone(),
            frees[i].clone(),
            diff[i].clone(),
            bytes[i].clone(),
            r.per_alloc.to_string(),
            match r.status {
                RowStatus::New => "new".into(),
                RowStatus::Gone => "gone".into(),
                RowStatus::Changed => String::new(),
            },
            r.driver.clone().unwrap_or_default(),
        ]);
    }
    t.render(out, 1);
    let grew: i64 = d.rows.iter().map(|r| r.bytes.delta.max(0)).sum();
    out.push_str(&format!(
        "\n{} tag(s) changed; {} more bytes in the tags that grew\n",
        d.rows.len(),
        human_bytes(grew as f64)
    ));
}
