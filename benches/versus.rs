//! This build of `pooldump` against an earlier one, as a user runs both:
//! the whole process (`analyze`, `find`, `info` on the find bench's dump),
//! the two binaries run in turn over the page-cached dump, medians of
//! wall time, the larger peak RSS of each, and whether the two print the
//! same thing (timing fields aside: `find`'s "Scanned ... s" line and the
//! JSON's `seconds`). This is how a change is shown to cost nothing: the
//! figures in docs/performance.md come from it.
//!
//! Run (the baseline is a commit, built here, or a binary you built):
//!
//!     cargo build --release --bin pooldump
//!     cargo bench --bench versus -- --rev 1abb6a4          # 4 GiB dump, 7 runs
//!     cargo bench --bench versus -- --baseline ../old/target/release/pooldump --runs 9
//!     POOLDUMP_BENCH_GIB=1 cargo bench --bench versus -- --rev HEAD~3 find
//!
//! `--rev REV` extracts REV (`git archive`) into target/versus/REV/ and
//! builds its `pooldump` there the first time (minutes). A trailing word
//! keeps only the cases whose name contains it. When two outputs differ,
//! both are written to target/versus/out/ for `diff`. Each binary has its
//! own layout cache (target/versus/cache/), warmed by the first run.

mod common;
#[path = "common/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

struct Args {
    baseline: Option<PathBuf>,
    rev: Option<String>,
    runs: usize,
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        baseline: None,
        rev: None,
        runs: 7,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--baseline" => a.baseline = Some(PathBuf::from(value("--baseline")?)),
            "--rev" => a.rev = Some(value("--rev")?),
            "--runs" => {
                let v = value("--runs")?;
                a.runs = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("--runs {v}: not a positive count"))?;
            }
            // cargo bench passes --bench to every harness-less bench.
            "--bench" => {}
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s => a.only = Some(s.to_string()),
        }
    }
    if a.baseline.is_some() == a.rev.is_some() {
        return Err("give the build to compare against: --rev REV or --baseline BINARY".into());
    }
    Ok(a)
}

fn git(root: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .map_err(|e| format!("git {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The baseline binary for commit `rev`: its tree extracted under
/// target/versus/<commit>/ and built there once.
fn build_rev(root: &Path, rev: &str) -> Result<PathBuf, String> {
    let commit = git(
        root,
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
    )?;
    let dir = root.join("target/versus").join(&commit[..12]);
    let bin = dir.join("target/release/pooldump");
    if bin.is_file() {
        return Ok(bin);
    }
    if !dir.join("Cargo.toml").is_file() {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        eprintln!("extracting {commit} into {}", dir.display());
        let status = Command::new("sh")
            .arg("-c")
            .arg("git -C \"$1\" archive \"$2\" | tar -x -C \"$3\"")
            .args([
                "sh",
                &root.to_string_lossy(),
                &commit,
                &dir.to_string_lossy(),
            ])
            .status()
            .map_err(|e| format!("git archive: {e}"))?;
        if !status.success() {
            return Err(format!("git archive {commit} failed"));
        }
    }
    eprintln!("building pooldump at {commit} (release; minutes the first time)");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--bin", "pooldump"])
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(|e| format!("cargo build in {}: {e}", dir.display()))?;
    if !status.success() || !bin.is_file() {
        return Err(format!("cargo build in {} failed", dir.display()));
    }
    Ok(bin)
}

/// Whether two outputs (files) say the same, timing and each binary's own
/// layout cache directory (`caches`) aside: lines that start `Scanned `
/// (text) or `"seconds":` (the pretty-printed JSON) are skipped. Read line
/// by line, so a GiB of output costs no memory here.
fn same_output(a: &Path, b: &Path, caches: [&Path; 2]) -> std::io::Result<bool> {
    use std::io::BufRead;
    let caches = caches.map(|c| c.to_string_lossy().into_owned());
    let lines = |p: &Path| -> std::io::Result<_> {
        let caches = caches.clone();
        Ok(std::io::BufReader::new(std::fs::File::open(p)?)
            .split(b'\n')
            .filter(|l| {
                l.as_ref().map_or(true, |l| {
                    let t = l.trim_ascii_start();
                    !t.starts_with(b"Scanned ") && !t.starts_with(b"\"seconds\":")
                })
            })
            .map(move |l| {
                l.map(|l| {
                    let mut t = String::from_utf8_lossy(&l).into_owned();
                    for c in &caches {
                        t = t.replace(c.as_str(), "CACHE");
                    }
                    t
                })
            }))
    };
    let (mut x, mut y) = (lines(a)?, lines(b)?);
    loop {
        match (x.next().transpose()?, y.next().transpose()?) {
            (None, None) => return Ok(true),
            (l, r) if l != r => return Ok(false),
            _ => {}
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "versus: {e}\nusage: cargo bench --bench versus -- (--rev REV | --baseline BINARY) [--runs N] [CASE]"
            );
            return ExitCode::from(2);
        }
    };
    let root = common::workspace_root();
    let this = root.join("target/release/pooldump");
    if !this.is_file() {
        eprintln!(
            "versus: {} is missing: cargo build --release --bin pooldump",
            this.display()
        );
        return ExitCode::from(2);
    }
    let baseline = match (&args.baseline, &args.rev) {
        (Some(b), _) => b.clone(),
        (None, Some(rev)) => match build_rev(&root, rev) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("versus: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => unreachable!("parse_args requires one"),
    };
    let gib = common::gib(4);
    let dir = common::bench_dump(&format!("{gib}g"), gib << 30, 70_000, 1 << 16);
    let dump = dir.join("MEMORY.DMP");
    let syms = dir.join("symbols");
    let tags64: Vec<String> = common::bulk_tags(64)
        .iter()
        .map(|t| t.to_string())
        .collect();
    // Each binary keeps its own layout cache: two cache formats in one
    // directory would make each ignore (and rewrite) the other's file.
    let caches = ["baseline", "this"].map(|side| root.join("target/versus/cache").join(side));
    let cache_of = |bin: &Path| &caches[usize::from(bin == this)];
    let cmd = |bin: &Path, words: &[&str], tags: &[String], symbols: bool| {
        let mut c = Command::new(bin);
        c.env("POOLDUMP_CACHE_DIR", cache_of(bin));
        c.args(words).arg(&dump);
        for t in tags {
            c.arg("--tag").arg(t);
        }
        if symbols {
            c.arg("--symbol-path").arg(&syms).arg("--offline");
        }
        c
    };
    let leak = ["Leak".to_string()];
    // (name, words before DUMP, tags, reads symbols)
    let cases: [(&str, &[&str], &[String], bool); 7] = [
        ("analyze", &["analyze"], &[], true),
        ("analyze --json", &["analyze", "--json"], &[], true),
        (
            "analyze --big-pool --json",
            &["analyze", "--big-pool", "--json"],
            &[],
            true,
        ),
        ("info --json", &["info", "--json"], &[], false),
        ("find --tag Leak", &["find"], &leak, true),
        ("find --tag Leak --json", &["find", "--json"], &leak, true),
        ("find 64 tags --json", &["find", "--json"], &tags64, true),
    ];
    let out_dir = root.join("target/versus/out");
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("versus: {}: {e}", out_dir.display());
        return ExitCode::from(2);
    }
    println!(
        "pooldump {} against {}, {gib} GiB dump, {} runs each in turn, medians",
        this.display(),
        baseline.display(),
        args.runs
    );
    println!(
        "| case | baseline s | this s | this / baseline | baseline max RSS | this max RSS | output |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut differ = false;
    for (name, words, tags, symbols) in cases {
        if args.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        // Warm the page cache (and each binary's own caches) first; the
        // warm-up runs write the outputs compared.
        let file = name.replace([' ', '-'], "_");
        let (old_out, new_out) = (
            out_dir.join(format!("{file}.baseline")),
            out_dir.join(format!("{file}.this")),
        );
        let to = |p: &Path| {
            std::fs::File::create(p)
                .expect("creates the output file")
                .into()
        };
        process::run_process(&mut cmd(&baseline, words, tags, symbols), to(&old_out));
        process::run_process(&mut cmd(&this, words, tags, symbols), to(&new_out));
        let same =
            same_output(&old_out, &new_out, [&caches[0], &caches[1]]).expect("reads both outputs");
        if same {
            let _ = std::fs::remove_file(&old_out);
            let _ = std::fs::remove_file(&new_out);
        } else {
            differ = true;
        }
        let (mut b, mut t, mut b_rss, mut t_rss) = (Vec::new(), Vec::new(), 0, 0);
        for _ in 0..args.runs {
            let m = process::run_process(&mut cmd(&baseline, words, tags, symbols), Stdio::null());
            b.push(m.secs);
            b_rss = b_rss.max(m.max_rss_kib);
            let m = process::run_process(&mut cmd(&this, words, tags, symbols), Stdio::null());
            t.push(m.secs);
            t_rss = t_rss.max(m.max_rss_kib);
        }
        let (b, t) = (common::median(b), common::median(t));
        println!(
            "| {name} | {b:.3} | {t:.3} | {:.2} | {:.1} MiB | {:.1} MiB | {} |",
            t / b,
            b_rss as f64 / 1024.0,
            t_rss as f64 / 1024.0,
            if same { "same" } else { "differs" }
        );
    }
    if differ {
        println!("outputs that differ are in {}", out_dir.display());
    }
    ExitCode::SUCCESS
}
