//! `pooldump trend` on the kit's series: one machine over time with a
//! planted steady leak, a bigger one-off burst, noisy busy tags and a
//! shrinking tag. The leak must rank first and be the chart's first line;
//! the burst must not be called steady. Every expectation comes from the
//! series' ground truth, never from pooldump.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use pooldump_kit::series::{Series, SeriesSpec, SeriesTruth, WrittenSeries};
use pooldump_kit::{DumpKind, NtBuild};
use serde_json::Value;
use support::{pooldump, require_tool, run_bounded};

struct Fixture {
    _dir: tempfile::TempDir,
    written: WrittenSeries,
    /// One snapshot file per step, written by `pooldump snapshot`.
    snap_dir: PathBuf,
}

/// The series of this test binary, written once.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let series = Series::new(&SeriesSpec::new(NtBuild::Win10_19041, 11));
        let written = series
            .write(&dir.path().join("series"), DumpKind::KernelBitmap)
            .unwrap();
        let snap_dir = dir.path().join("snaps");
        std::fs::create_dir_all(&snap_dir).unwrap();
        for (i, d) in written.dumps.iter().enumerate() {
            let out = snap_dir.join(format!("{i:02}.json"));
            let r = pooldump(&[
                "snapshot",
                d.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--symbol-path",
                written.symbols.to_str().unwrap(),
                "--offline",
                "--no-cache",
            ]);
            assert_eq!(r.code(), Some(0), "{}", r.stderr);
        }
        Fixture {
            _dir: dir,
            written,
            snap_dir,
        }
    })
}

fn truth() -> &'static SeriesTruth {
    &fixture().written.truth
}

/// Bytes of (tag, pool) at every step, from the kit's truth.
fn truth_bytes(t: &SeriesTruth, tag: &str, pool: &str) -> Vec<u64> {
    t.steps
        .iter()
        .map(|s| {
            s.tags
                .iter()
                .find(|r| r.tag == tag && r.pool == pool)
                .map_or(0, |r| r.bytes)
        })
        .collect()
}

fn trend_json(args: &[&str]) -> Value {
    let r = pooldump(args);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

fn find<'a>(t: &'a Value, tag: &str, pool: &str) -> &'a Value {
    support::items(&t["tags"])
        .find(|x| x["tag"] == tag && x["type"] == pool)
        .unwrap_or_else(|| panic!("{tag} {pool} not in the trend"))
}

#[test]
fn the_series_is_a_fair_test() {
    // A naive "last minus first" ranking would blame the burst: the burst
    // grows more than the leak in total, so ranking the leak first is
    // down to steadiness, not size.
    let t = truth();
    let leak = truth_bytes(t, &t.leak.tag, &t.leak.pool);
    let burst = truth_bytes(t, &t.burst.tag, &t.burst.pool);
    let growth = |v: &[u64]| v.last().unwrap() - v.first().unwrap();
    assert!(growth(&burst) > 3 * growth(&leak), "{leak:?} {burst:?}");
    assert!(leak.windows(2).all(|w| w[1] > w[0]), "{leak:?}");
    assert_eq!(
        burst.windows(2).filter(|w| w[1] != w[0]).count(),
        1,
        "{burst:?}"
    );
}

#[test]
fn trend_ranks_the_planted_leak_first_from_dumps() {
    let f = fixture();
    let t = truth();
    let syms = f.written.symbols.to_str().unwrap();
    let mut args = vec![
        "trend",
        "--json",
        "--symbol-path",
        syms,
        "--offline",
        "--no-cache",
    ];
    // Given out of time order on purpose.
    let dumps: Vec<String> = f
        .written
        .dumps
        .iter()
        .rev()
        .map(|d| d.display().to_string())
        .collect();
    args.extend(dumps.iter().map(String::as_str));
    let j = trend_json(&args);
    assert_eq!(j["schema"], "pooldump.trend/2");
    assert_eq!(j["axis"], "uptime");
    let first = &j["tags"][0];
    assert_eq!(first["tag"], t.leak.tag.as_str(), "{first:#}");
    assert_eq!(first["type"], t.leak.pool.as_str());
    assert_eq!(first["verdict"], "steady-growth");
    assert_eq!(first["driver"], "leakydrv.sys");

    // Every tag's bytes are the truth's, in time order.
    for p in &t.planted {
        let got: Vec<u64> = find(&j, &p.tag, &p.pool)["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(got, truth_bytes(t, &p.tag, &p.pool), "{} {}", p.tag, p.pool);
    }
    // Hours come from the machine's uptime.
    let hours = support::fields(&j["points"], "hours", serde_json::Value::as_f64);
    let step = t.spec.interval_secs as f64 / 3600.0;
    for (i, h) in hours.iter().enumerate() {
        assert!((h - i as f64 * step).abs() < 1e-9, "{hours:?}");
    }
    // The leak's slope is its per-step growth per interval.
    let leak = truth_bytes(t, &t.leak.tag, &t.leak.pool);
    let per_hour = (leak[leak.len() - 1] - leak[0]) as f64 / hours[hours.len() - 1];
    let slope = first["bytes_per_hour"].as_f64().unwrap();
    assert!(
        (slope - per_hour).abs() / per_hour < 0.05,
        "{slope} vs {per_hour}"
    );

    // The burst grows, but not steadily; no noisy tag is called a leak.
    let burst = find(&j, &t.burst.tag, &t.burst.pool);
    assert_eq!(burst["verdict"], "unsteady-growth", "{burst:#}");
    assert!(burst["rank"].as_u64().unwrap() > 1);
    for p in t.planted.iter().filter(|p| p.behaviour != "steady-leak") {
        let x = find(&j, &p.tag, &p.pool);
        assert_ne!(x["verdict"], "steady-growth", "{} {}: {x:#}", p.tag, p.pool);
    }
    for p in t.planted.iter().filter(|p| p.behaviour == "shrinking") {
        assert_eq!(find(&j, &p.tag, &p.pool)["verdict"], "shrinking");
    }
}

#[test]
fn snapshot_files_give_the_same_ranking_as_the_dumps() {
    let f = fixture();
    let t = truth();
    // A directory stands for its .json files (what `watch` writes).
    let j = trend_json(&["trend", "--json", f.snap_dir.to_str().unwrap()]);
    assert_eq!(j["tags"][0]["tag"], t.leak.tag.as_str());
    let by_diff = trend_json(&[
        "trend",
        "--json",
        "--by",
        "diff",
        f.snap_dir.to_str().unwrap(),
    ]);
    assert_eq!(by_diff["metric"], "diff");
    assert_eq!(by_diff["tags"][0]["tag"], t.leak.tag.as_str());
    let slope = by_diff["tags"][0]["diff_per_hour"].as_f64().unwrap();
    let per_hour = f64::from(t.spec.leak_per_step) * 3600.0 / t.spec.interval_secs as f64;
    assert!((slope - per_hour).abs() < 1e-6, "{slope} vs {per_hour}");

    let text = pooldump(&["trend", f.snap_dir.to_str().unwrap()]);
    assert_eq!(text.code(), Some(0), "{}", text.stderr);
    assert!(
        text.stdout.contains(&format!(
            "Most likely leak: {} ({}) from leakydrv.sys",
            t.leak.tag.trim_end(),
            t.leak.pool
        )),
        "{}",
        text.stdout
    );
}

#[test]
fn the_chart_draws_the_leak_first() {
    let f = fixture();
    let t = truth();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("trend.svg");
    let r = pooldump(&[
        "trend",
        f.snap_dir.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--chart-tags",
        "4",
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(200)]);
    // The legend is in rank order with the leak first.
    let label = format!(
        "#1 {} {}: steady growth",
        t.leak.tag.trim_end(),
        t.leak.pool
    );
    assert!(text.contains(&label), "no `{label}` in the chart");
    assert!(text.contains(&format!("{} {}", t.burst.tag.trim_end(), t.burst.pool)));
    assert!(text.find("#2 ").unwrap() > text.find(&label).unwrap());
    assert!(!text.contains("#5 "), "--chart-tags 4 draws four tags");
    // The leak is the thick line: one point per snapshot, rising at every
    // step (SVG's y grows downwards).
    let thick: Vec<Vec<(i64, i64)>> = text
        .match_indices("stroke-width=\"4\" points=\"")
        .map(|(i, m)| {
            let rest = &text[i + m.len()..];
            rest[..rest.find('"').unwrap()]
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect()
        })
        .filter(|pts: &Vec<(i64, i64)>| pts.len() > 2)
        .collect();
    assert!(!thick.is_empty(), "no thick line");
    for line in &thick {
        assert_eq!(line.len(), t.steps.len());
        assert!(
            line.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 < w[0].1),
            "{line:?}"
        );
    }
    render_png(&svg);
}

/// Render the SVG with librsvg (a real SVG renderer, not ours) to prove it
/// is a drawable image.
fn render_png(svg: &Path) {
    let Some(rsvg) = require_tool("rsvg-convert") else {
        return;
    };
    let png = svg.with_extension("png");
    let r = run_bounded(
        Command::new(rsvg).arg(svg).arg("-o").arg(&png),
        Duration::from_secs(60),
    );
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
}

#[test]
fn the_leak_ranks_first_whatever_the_seed_or_build() {
    // Other noise draws, other allocators and tracker layouts (0x28 with
    // 32-bit counters on Windows 7, 0x50 on Windows 11).
    let cases = [
        (NtBuild::Win7_7601, 1),
        (NtBuild::Win10_17763, 2),
        (NtBuild::Win10_19041, 3),
        (NtBuild::Win10_19041, 4),
        (NtBuild::Server2022_20348, 5),
        (NtBuild::Win11_22000, 6),
    ];
    for (build, seed) in cases {
        let dir = tempfile::tempdir().unwrap();
        let w = Series::new(&SeriesSpec::new(build, seed))
            .write(dir.path(), DumpKind::KernelBitmap)
            .unwrap();
        let mut args = vec![
            "trend",
            "--json",
            "--symbol-path",
            w.symbols.to_str().unwrap(),
            "--offline",
            "--no-cache",
        ];
        args.extend(w.dumps.iter().map(|d| d.to_str().unwrap()));
        let j = trend_json(&args);
        let first = &j["tags"][0];
        assert_eq!(
            first["tag"],
            w.truth.leak.tag.as_str(),
            "{build:?} seed {seed}: {first:#}"
        );
        assert_eq!(
            first["type"],
            w.truth.leak.pool.as_str(),
            "{build:?} seed {seed}"
        );
        let steady: Vec<&Value> = support::items(&j["tags"])
            .filter(|x| x["verdict"] == "steady-growth")
            .collect();
        assert_eq!(steady.len(), 1, "{build:?} seed {seed}: {steady:#?}");
    }
}
