//! `pooldump find` as a user runs it, against the floor: the whole
//! `pooldump find DUMP --tag T` process (opening the dump, the page-table
//! walk, the big-page table, the scan, sorting, the output) beside a
//! separate raw process that memory-maps the same file and counts one tag
//! with memchr's memmem on all cores (`pooldump-scan`'s example
//! `memmem_count`). Runs alternate (raw, find, raw, find, ...) over the
//! page-cached dump; the figure is the median of each and "% of raw" =
//! raw wall time / find wall time.
//!
//! Run:
//!
//!     cargo build --release -p pooldump -p pooldump-scan --examples --bins
//!     cargo bench --bench find_process            # 4 GiB dump, 7 runs
//!     POOLDUMP_BENCH_GIB=1 cargo bench --bench find_process -- --runs 5
//!
//! The dump is the find bench's (`target/bench-dumps/<N>g/`, written on the
//! first run: 3000 bulk tags, 70,000 big-pool allocations). Cases: 1, 8 and
//! 64 tags (text output), 64 tags with `--json --per-tag`, and 1 and 64
//! tags with `--unsorted` (text and JSON). Each row also gives the find
//! process's max RSS (`wait4`'s `ru_maxrss`, the largest over its runs).

mod common;
#[path = "common/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn exe(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    assert!(
        p.is_file(),
        "{} is missing: cargo build --release -p pooldump -p pooldump-scan --examples --bins",
        p.display()
    );
    p
}

fn main() {
    let mut runs = 7usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(runs);
        }
    }
    let gib = common::gib(4);
    let dir = common::bench_dump(&format!("{gib}g"), gib << 30, 70_000, 1 << 16);
    let dump = dir.join("MEMORY.DMP");
    let syms = dir.join("symbols");
    let pooldump = exe("target/release/pooldump");
    let raw = exe("target/release/examples/memmem_count");
    let tag1 = common::bulk_tags(1)[0].to_string();

    let raw_cmd = || {
        let mut c = Command::new(&raw);
        c.arg(&dump).arg(&tag1);
        c
    };
    let find_cmd = |n: usize, extra: &[&str]| {
        let mut c = Command::new(&pooldump);
        c.arg("find").arg(&dump);
        for t in common::bulk_tags(n) {
            c.arg("--tag").arg(t.to_string());
        }
        c.arg("--symbol-path").arg(&syms).arg("--offline");
        c.args(extra);
        c
    };
    // Warm the page cache and the layout cache.
    process::run_process(&mut raw_cmd(), Stdio::null());
    process::run_process(&mut find_cmd(1, &[]), Stdio::null());
    let only = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--") && a.parse::<usize>().is_err());

    println!(
        "pooldump find vs a raw memmem process, {gib} GiB dump ({} bytes), {runs} runs each, medians",
        std::fs::metadata(&dump).map(|m| m.len()).unwrap_or(0)
    );
    println!("| case | raw s | find s | % of raw | find max RSS |");
    println!("|---|---|---|---|---|");
    for (name, n, extra) in [
        ("1 tag", 1usize, &[][..]),
        ("1 tag --unsorted", 1, &["--unsorted"][..]),
        ("8 tags", 8, &[][..]),
        ("64 tags", 64, &[][..]),
        ("64 tags --unsorted", 64, &["--unsorted"][..]),
        ("64 tags --json", 64, &["--json"][..]),
        (
            "64 tags --json --unsorted",
            64,
            &["--json", "--unsorted"][..],
        ),
        ("64 tags --json --per-tag", 64, &["--json", "--per-tag"][..]),
    ] {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let (mut r, mut f, mut rss) = (Vec::new(), Vec::new(), 0);
        for _ in 0..runs {
            r.push(process::run_process(&mut raw_cmd(), Stdio::null()).secs);
            let m = process::run_process(&mut find_cmd(n, extra), Stdio::null());
            f.push(m.secs);
            rss = rss.max(m.max_rss_kib);
        }
        let (r, f) = (common::median(r), common::median(f));
        println!(
            "| {name} | {r:.3} | {f:.3} | {:.0}% | {} MB |",
            100.0 * r / f,
            rss * 1024 / 1_000_000
        );
    }
}
