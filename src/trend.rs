//! `pooldump trend SNAPSHOTS...`: rank tags by sustained growth over a
//! series (the seeds' "take a screenshot every half hour and see which
//! tag's bytes keep increasing"), and chart the top tags as SVG.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pooldump_core::snapshot::{self, TimeAxis, Trend, TrendMetric, TrendOptions, Verdict};

use crate::args::{FilterArgs, ReadArgs};
use crate::render::{ListTable, push_list};
use crate::snapshot::{human_bytes, load};

/// Rank tags by sustained growth over a series of snapshots or dumps, and
/// chart the top ones.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshots (JSON) or dumps, in any order (they are sorted by time); a
    /// directory stands for the .json files in it (what `watch` writes).
    #[arg(value_name = "SNAPSHOT", required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Rank by the growth of bytes or of diff (live allocations).
    #[arg(long, value_enum, default_value_t = Metric::Bytes)]
    pub by: Metric,
    /// Least R² of a tag's straight-line fit for "steady growth".
    #[arg(long, default_value_t = TrendOptions::default().min_r2, value_name = "R2")]
    pub min_r2: f64,
    /// Least fraction of intervals in which a tag must grow for "steady
    /// growth".
    #[arg(long, default_value_t = TrendOptions::default().min_grew_fraction, value_name = "FRACTION")]
    pub min_grew: f64,
    /// Show only the first N tags (all with --json unless given).
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Write an SVG chart of the top tags' bytes over time.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Tags in the chart.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub chart_tags: usize,
    /// Print JSON (schema pooldump.trend/2, docs/leak-hunting.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Metric {
    Bytes,
    Diff,
}

pub fn run(args: &Args) -> Result<String> {
    if !(0.0..=1.0).contains(&args.min_r2) || !(0.0..=1.0).contains(&args.min_grew) {
        bail!("--min-r2 and --min-grew are fractions between 0 and 1");
    }
    let files = expand(&args.inputs)?;
    let db = args.read.pooltag_db()?;
    let snaps = files
        .iter()
        .map(|f| load(f, &args.read, db.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let opts = TrendOptions {
        metric: match args.by {
            Metric::Bytes => TrendMetric::Bytes,
            Metric::Diff => TrendMetric::Diff,
        },
        min_r2: args.min_r2,
        min_grew_fraction: args.min_grew,
    };
    let mut t = snapshot::trend(&snaps, &opts);
    t.tags.retain(|x| args.filter.keeps(x.value, x.pool));
    if let Some(svg) = &args.svg {
        write_svg(&t, svg, args.chart_tags)?;
    }
    if args.json {
        if let Some(n) = args.top {
            t.tags.truncate(n);
        }
        return Ok(crate::render::json(&t)?);
    }
    let mut out = render_text(&t, args.top.unwrap_or(20), &opts);
    if let Some(svg) = &args.svg {
        out.push_str(&format!("\nChart: {}\n", svg.display()));
    }
    Ok(out)
}

/// Directories stand for their .json files, in name order.
fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("{}: cannot list", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|e| e == "json") && f.is_file())
                .collect();
            if v.is_empty() {
                bail!("{}: a directory with no .json snapshots", p.display());
            }
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn axis_text(a: TimeAxis) -> &'static str {
    match a {
        TimeAxis::Uptime => "the machine's uptime",
        TimeAxis::SystemTime => "the machine's clock",
        TimeAxis::HostTime => "when the host took them",
        TimeAxis::Index => "snapshot order",
    }
}

pub fn render_text(t: &Trend, top: usize, opts: &TrendOptions) -> String {
    let mut out = String::new();
    let n = t.points.len();
    let span = t.points.last().map_or(0.0, |p| p.hours);
    let first = t.points.first();
    let last = t.points.last();
    let at = |p: Option<&snapshot::TrendPoint>| {
        p.and_then(|p| p.system_time.clone().or(p.uptime.clone()))
            .unwrap_or_else(|| "?".into())
    };
    out.push_str(&format!(
        "{n} snapshots from {} to {}, {}, timed by {}\n",
        at(first),
        at(last),
        if t.axis == TimeAxis::Index {
            format!("{span:.0} steps")
        } else {
            format!("{span:.2} hours")
        },
        axis_text(t.axis)
    ));
    let metric = match t.metric {
        TrendMetric::Bytes => "Bytes",
        TrendMetric::Diff => "Diff",
    };
    out.push_str(&format!(
        "Ranked by sustained growth of {metric}: steady = R\u{b2} >= {:.2} and growth in >= {:.0}% of intervals\n\n",
        opts.min_r2,
        opts.min_grew_fraction * 100.0
    ));
    let unit = if t.axis == TimeAxis::Index {
        "step"
    } else {
        "h"
    };
    let per_unit = |per_hour, per_step| if unit == "h" { per_hour } else { per_step };
    ListTable::new(t.tags.iter().take(top))
        .right("Rank", |x| x.rank)
        .left("Tag", |x| &x.tag)
        .left("Type", |x| x.pool.poolmon())
        .right("Bytes first", |x| x.bytes.first().copied().unwrap_or(0))
        .right("Bytes last", |x| x.bytes.last().copied().unwrap_or(0))
        .right("Growth", |x| format!("{:+}", x.bytes_growth))
        .right(per_unit("Bytes/h", "Bytes/step"), |x| {
            format!("{:+.0}", x.bytes_per_hour)
        })
        .right(per_unit("Diff/h", "Diff/step"), |x| {
            format!("{:+.1}", x.diff_per_hour)
        })
        .right("R\u{b2}", |x| format!("{:.2}", x.r2))
        .right("Grew", |x| format!("{}/{}", x.grew, x.intervals))
        .left("Verdict", |x| &x.verdict)
        .left("Mapped_Driver", |x| x.driver.as_deref().unwrap_or_default())
        .render(&mut out, 1);
    if t.tags.len() > top {
        out.push_str(&format!(
            " ... {} more (--top N shows more)\n",
            t.tags.len() - top
        ));
    }
    out.push('\n');
    out.push_str(&verdict_text(t, unit));
    push_list(&mut out, "\nWarnings:\n", &t.warnings);
    out
}

/// The verdict under the table: the most likely leak (the first steady
/// grower), how many others grow, and what to do next.
fn verdict_text(t: &Trend, unit: &str) -> String {
    let mut out = String::new();
    let steady: Vec<_> = t
        .tags
        .iter()
        .filter(|x| x.verdict == Verdict::SteadyGrowth)
        .collect();
    match steady.first() {
        Some(x) => {
            out.push_str(&format!(
                "Most likely leak: {} ({}){}, {} per {unit}, growing in {} of {} intervals.\n",
                x.tag.trim_end(),
                x.pool.poolmon(),
                x.driver
                    .as_ref()
                    .map(|d| format!(" from {d}"))
                    .unwrap_or_default(),
                human_bytes(x.bytes_per_hour),
                x.grew,
                x.intervals
            ));
            if steady.len() > 1 {
                out.push_str(&format!(
                    "{} other tag(s) also grow steadily.\n",
                    steady.len() - 1
                ));
            }
            out.push_str(&format!(
                "Next: stop the test and take one more snapshot later; a leak gives nothing back (see bytes_released in --json). Then find the allocating code: `pooldump hittag --kdnet SPEC --tag {}` (nt!PoolHitTag stacks per call site), or `pooldump callsites` for every site that passes the tag.\n",
                x.tag.trim_end()
            ));
        }
        None => out.push_str("No tag grows steadily over this series.\n"),
    }
    out
}

/// The unit the chart's bytes axis counts in, for a largest value of
/// `max` bytes: its size and name.
fn byte_scale(max: f64) -> (f64, &'static str) {
    if max >= (1u64 << 30) as f64 {
        ((1u64 << 30) as f64, "GiB")
    } else if max >= (1u64 << 20) as f64 {
        ((1u64 << 20) as f64, "MiB")
    } else if max >= 1024.0 {
        (1024.0, "KiB")
    } else {
        (1.0, "bytes")
    }
}

/// One tag's line: (hours, bytes / `div`) per snapshot.
fn points(hours: &[f64], bytes: &[u64], div: f64) -> Vec<(f64, f64)> {
    hours
        .iter()
        .zip(bytes)
        .map(|(h, b)| (*h, *b as f64 / div))
        .collect()
}

/// The chart: bytes of the top `n` tags over time, the first-ranked drawn
/// thickest, legend in rank order.
pub fn write_svg(t: &Trend, path: &Path, n: usize) -> Result<()> {
    use plotters::prelude::*;

    let tags: Vec<_> = t.tags.iter().take(n.max(1)).collect();
    let xs: Vec<f64> = t.points.iter().map(|p| p.hours).collect();
    let xmax = xs.last().copied().unwrap_or(0.0).max(1e-9);
    let ymax_bytes = tags
        .iter()
        .flat_map(|x| x.bytes.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (div, unit) = byte_scale(ymax_bytes);
    let ymax = ymax_bytes / div * 1.08;
    let xdesc = match t.axis {
        TimeAxis::Index => "snapshot".to_string(),
        _ => format!("hours since the first snapshot ({})", axis_text(t.axis)),
    };
    let draw = || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Pool bytes by tag over time (top tags by sustained growth)",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
        chart
            .configure_mesh()
            .x_desc(xdesc.as_str())
            .y_desc(format!("Bytes ({unit})"))
            .label_style(("sans-serif", 14))
            .draw()?;
        for (i, x) in tags.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let width = if i == 0 { 4 } else { 2 };
            let pts = points(&xs, &x.bytes, div);
            // plotters escapes XML; the one rule escapes what a viewer
            // would act on (bidi overrides, controls).
            let label = format!(
                "#{} {} {}: {}, {}/h",
                x.rank,
                pooldump_core::text::escape(x.tag.trim_end()),
                x.pool.poolmon(),
                x.verdict,
                human_bytes(x.bytes_per_hour)
            );
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))?
                .label(label)
                .legend(move |(lx, ly)| {
                    PathElement::new(vec![(lx, ly), (lx + 24, ly)], color.stroke_width(width))
                });
            chart.draw_series(
                pts.iter()
                    .map(|p| Circle::new(*p, width + 1, color.filled())),
            )?;
        }
        // The first-ranked line again, unlabelled, so no other line crosses
        // over it (the legend keeps rank order).
        if let Some(x) = tags.first() {
            let color = Palette99::pick(0).to_rgba();
            let pts = points(&xs, &x.bytes, div);
            chart.draw_series(LineSeries::new(pts, color.stroke_width(4)))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("{}: cannot write the chart: {e}", path.display()))
}
