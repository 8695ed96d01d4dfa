//! `pooldump analyze` end to end: the README's command on the bundled
//! sample, output formats, PoolMon's filters, pooltag.txt, and bad input
//! (never a panic or a hang; an error that names the dump and the problem,
//! or a partial result with a warning).

use crate::support;

use std::path::{Path, PathBuf};

use pooldump_kit::corrupt::{Corruption, FileCorruption, corrupt_file};
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
use support::{Finished, pooldump, repo_root, sample, sample_truth};

/// `pooldump analyze` on the bundled sample with its own symbols, offline.
fn analyze_sample(extra: &[&str]) -> Finished {
    let (dump, syms) = sample();
    let mut a = vec![
        "analyze",
        dump.as_str(),
        "--symbol-path",
        syms.as_str(),
        "--offline",
        "--no-cache",
    ];
    a.extend_from_slice(extra);
    pooldump(&a)
}

#[test]
fn readme_command_on_the_sample() {
    let r = analyze_sample(&[]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let t = sample_truth();
    let leak = support::items(&t["tags"])
        .find(|x| x["tag"] == "Leak")
        .unwrap();
    let line = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("Leak "))
        .expect("a Leak row");
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1], "Nonp");
    assert_eq!(cols[2], leak["reported_allocs"].to_string());
    assert_eq!(cols[3], leak["frees"].to_string());
    assert_eq!(cols[4], leak["diff"].to_string());
    assert_eq!(cols[5], leak["bytes"].to_string());
    assert_eq!(
        cols[7], "leakydrv.sys",
        "the tag is an immediate in leakydrv.sys's code"
    );
}

#[test]
fn json_rows_are_the_truth_and_csv_has_them_too() {
    let r = analyze_sample(&["--json", "-s", "B"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["schema"], "pooldump.analyze/2");
    let rows = j["rows"].as_array().unwrap();
    let bytes: Vec<u64> = rows.iter().map(|x| x["bytes"].as_u64().unwrap()).collect();
    assert!(
        bytes.windows(2).all(|w| w[0] >= w[1]),
        "sorted by bytes, descending"
    );
    for want in sample_truth()["tags"].as_array().unwrap() {
        let ty = if want["pool"] == "Paged" {
            "Paged"
        } else {
            "Nonp"
        };
        let got = rows
            .iter()
            .find(|x| x["tag"] == want["tag"] && x["type"] == ty)
            .unwrap_or_else(|| panic!("no row for {} {ty}", want["tag"]));
        assert_eq!(got["diff"], want["diff"]);
        assert_eq!(got["bytes"], want["bytes"]);
    }
    let r = analyze_sample(&["--csv", "-i", "Leak"]);
    let mut lines = r.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("tag,type,allocs,frees,diff,bytes,per_alloc,driver,description,slot")
    );
    assert!(lines.next().unwrap().starts_with("Leak,Nonp,"));
    assert!(lines.next().is_none());
}

#[test]
fn session_pool_per_session_as_poolused_8() {
    let r = analyze_sample(&["--session", "--json", "-s", "diff"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let got = j["sessions"].as_array().unwrap();
    let want = sample_truth()["sessions"].as_array().unwrap().clone();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["id"], w["id"]);
        let pids: Vec<_> = support::items(&g["processes"])
            .map(|p| p["pid"].clone())
            .collect();
        assert_eq!(&serde_json::Value::from(pids), &w["pids"]);
        let rows = g["rows"].as_array().unwrap();
        let diffs: Vec<u64> = rows.iter().map(|x| x["diff"].as_u64().unwrap()).collect();
        assert!(diffs.windows(2).all(|d| d[0] >= d[1]), "sorted by diff");
        assert_eq!(rows.len(), w["tags"].as_array().unwrap().len());
        for t in w["tags"].as_array().unwrap() {
            let row = rows.iter().find(|x| x["tag"] == t["tag"]).unwrap();
            assert_eq!(row["type"], "Paged");
            assert_eq!(row["diff"], t["diff"]);
            assert_eq!(row["bytes"], t["bytes"]);
        }
    }
    // Text: one table per session; CSV: a session column; filters apply.
    let r = analyze_sample(&["--session", "-i", "SLek"]);
    support::assert_contains_all(
        "--session -i SLek",
        r.ok(),
        &[
            "Session 0: _MM_SESSION_SPACE",
            "Session 1: _MM_SESSION_SPACE",
        ],
    );
    let slek: Vec<&str> = r.stdout.lines().filter(|l| l.contains("SLek")).collect();
    assert_eq!(slek.len(), 1, "{}", r.stdout);
    let r = analyze_sample(&["--session", "--csv", "-i", "Gla5"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("session,tag,type,"));
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(lines[1].starts_with("0,Gla5,Paged,"));
    assert!(lines[2].starts_with("1,Gla5,Paged,"));
    // --session --big-pool: each session's own big-page table, live and
    // (with --show-free) freed entries, as the truth has them.
    let r = analyze_sample(&["--session", "--big-pool", "--show-free", "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(j["big_pool"].is_null(), "the global table is not the view");
    let va = |v: &serde_json::Value| {
        u64::from_str_radix(&v.as_str().unwrap().replace('`', ""), 16).unwrap()
    };
    let mut listed = 0;
    for (g, w) in support::items(&j["sessions"]).zip(&want) {
        let (b, t) = (&g["big_pages"], &w["big_pool"]);
        assert_eq!(va(&b["table"]), t["table_va"].as_u64().unwrap());
        assert_eq!(b["size"], t["table_size"]);
        assert_eq!(b["in_use"], t["in_use"]);
        assert_eq!(b["live"], t["in_use"]);
        let mut got: Vec<(u64, String, u64, bool)> = support::items(&b["entries"])
            .map(|e| {
                let tag = e["tag"].as_str().unwrap().to_string();
                (
                    va(&e["va"]),
                    tag,
                    e["bytes"].as_u64().unwrap(),
                    e["freed"].as_bool().unwrap(),
                )
            })
            .collect();
        let mut truth: Vec<(u64, String, u64, bool)> = support::items(&t["entries"])
            .map(|e| {
                let tag = e["tag"].as_str().unwrap().to_string();
                (
                    e["va"].as_u64().unwrap(),
                    tag,
                    e["bytes"].as_u64().unwrap(),
                    e["freed"].as_bool().unwrap(),
                )
            })
            .collect();
        got.sort();
        truth.sort();
        assert_eq!(got, truth, "session {}", g["id"]);
        listed += got.len();
    }
    assert!(listed > 0);
    // Its text lists entries, not tags; CSV leads with the session.
    let r = analyze_sample(&["--session", "--big-pool", "-i", "Gpbm"]);
    support::assert_contains_all(
        "--session --big-pool",
        r.ok(),
        &[
            "  Big-page table ",
            "PoolBigEntriesInUse",
            " Address ",
            "Gpbm  Paged      0x21",
        ],
    );
    assert!(!r.stdout.contains("Per Alloc"), "{}", r.stdout);
    let r = analyze_sample(&["--session", "--big-pool", "--csv", "-i", "Gpbm"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "session,va,tag,type,pool_type,bytes,status,driver"
    );
    let gpbm = (want[1]["big_pool"]["entries"].as_array().unwrap().iter())
        .filter(|e| e["tag"] == "Gpbm" && e["freed"] == false)
        .count();
    assert!(gpbm > 0);
    assert_eq!(lines.len(), 1 + gpbm, "{}", r.stdout);
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.starts_with("1,") && l.contains(",Gpbm,Paged,0x21,"))
    );
}

#[test]
fn poolmon_filters_and_pooltag_txt() {
    let (_dir, pt) = support::temp_file(
        "pooltag.txt",
        "rem test\nNtf? - ntfs.sys - NTFS structures\nFile - nt!io - File objects\n",
    );
    let r = analyze_sample(&[
        "--pooltag",
        &pt,
        "-i",
        "N*",
        "-i",
        "File",
        "-x",
        "NSbf",
        "--pool",
        "paged",
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let rows: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("Paged") || l.contains("Nonp"))
        .skip(1)
        .collect();
    assert!(
        rows.iter().all(|l| l.contains("Paged")),
        "--pool paged: {rows:?}"
    );
    assert!(rows.iter().any(|l| l.trim_start().starts_with("Ntfx") && l.contains("ntfs.sys - NTFS structures")));
    assert!(
        rows.iter()
            .any(|l| l.trim_start().starts_with("File") && l.contains("nt!io"))
    );
    assert!(
        !rows
            .iter()
            .any(|l| l.contains("NSbf") || l.contains("Leak"))
    );
}

#[test]
fn big_pool_listing_matches_the_truth() {
    let r = analyze_sample(&["--big-pool", "--show-free", "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let got: Vec<(String, String, bool)> = support::items(&j["big_pool"]["entries"])
        .map(|e| {
            (
                e["va"].as_str().unwrap().replace('`', ""),
                e["tag"].as_str().unwrap().to_string(),
                e["freed"].as_bool().unwrap(),
            )
        })
        .collect();
    let t = sample_truth();
    let mut want: Vec<(String, String, bool)> = support::items(&t["big_pool"]["entries"])
        .map(|e| {
            (
                format!("{:016x}", e["va"].as_u64().unwrap()),
                e["tag"].as_str().unwrap().to_string(),
                e["freed"].as_bool().unwrap(),
            )
        })
        .collect();
    let mut got = got;
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

/// Write a damaged machine's dump and symbols to a temp dir.
fn damaged(
    c: Option<Corruption>,
    f: Option<FileCorruption>,
) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let mut m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 77));
    if let Some(c) = c {
        m.corrupt(c);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = m.dump_bytes(DumpKind::KernelBitmap);
    if let Some(f) = f {
        corrupt_file(&mut bytes, f);
    }
    let dump = dir.path().join("MEMORY.DMP");
    std::fs::write(&dump, bytes).unwrap();
    let syms = dir.path().join("symbols");
    m.write_symbol_store(&syms).unwrap();
    (dir, dump, syms)
}

fn analyze(dump: &Path, syms: &Path, extra: &[&str]) -> Finished {
    let (d, s) = (dump.display().to_string(), syms.display().to_string());
    let mut a = vec![
        "analyze",
        d.as_str(),
        "--symbol-path",
        s.as_str(),
        "--offline",
        "--no-cache",
    ];
    a.extend_from_slice(extra);
    pooldump(&a)
}

fn no_panic(r: &Finished) {
    assert!(
        !r.stderr.contains("internal error") && !r.stderr.contains("panicked"),
        "{}",
        r.stderr
    );
}

#[test]
fn missing_tracker_pages_are_an_error_that_says_where() {
    for c in [
        Corruption::MissingTrackerPages,
        Corruption::UnmappedTrackerTable,
    ] {
        let (_d, dump, syms) = damaged(Some(c), None);
        let r = analyze(&dump, &syms, &[]);
        no_panic(&r);
        assert_eq!(r.code(), Some(1), "{c:?}: {}{}", r.stdout, r.stderr);
        support::assert_contains_all(
            format!("{c:?}"),
            &r.stderr,
            &["MEMORY.DMP", "PoolTrackTable"],
        );
    }
}

#[test]
fn hostile_sizes_are_refused_without_allocating() {
    let (_d, dump, syms) = damaged(Some(Corruption::HugeTrackerSize), None);
    let r = analyze(&dump, &syms, &[]);
    no_panic(&r);
    assert_eq!(r.code(), Some(1));
    assert!(
        r.stderr.contains("PoolTrackTableSize is 0x10000000000"),
        "{}",
        r.stderr
    );

    let (_d, dump, syms) = damaged(Some(Corruption::HugeBigTableSize), None);
    let r = analyze(&dump, &syms, &["--big-pool"]);
    no_panic(&r);
    assert_eq!(r.code(), Some(1));
    assert!(r.stderr.contains("PoolBigPageTableSize"), "{}", r.stderr);
}

#[test]
fn damaged_tables_give_partial_results_with_warnings() {
    let (_d, dump, syms) = damaged(Some(Corruption::BigTableIntoNowhere), None);
    let r = analyze(&dump, &syms, &["--big-pool"]);
    no_panic(&r);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains("big-page table is missing"),
        "{}",
        r.stdout
    );

    let (_d, dump, syms) = damaged(Some(Corruption::GarbagePerCpuPointers), None);
    let r = analyze(&dump, &syms, &[]);
    no_panic(&r);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("ExPoolTagTables[1]"), "{}", r.stdout);
    // In JSON each warning says which part of the reading it concerns.
    let r = analyze(&dump, &syms, &["--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let w = j["warnings"].as_array().unwrap();
    assert!(
        w.iter().any(|w| w["kind"] == "tracker"
            && w["message"]
                .as_str()
                .unwrap()
                .contains("ExPoolTagTables[1]")),
        "{w:?}"
    );
    // With --csv the warning goes to stderr, the CSV stays CSV.
    let r = analyze(&dump, &syms, &["--csv"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("pooldump: warning: ") && l.contains("ExPoolTagTables[1]")),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("ExPoolTagTables"), "{}", r.stdout);
}

#[test]
fn truncated_dumps_never_panic() {
    let (_d, dump, syms) = damaged(None, None);
    let len = std::fs::metadata(&dump).unwrap().len();
    for keep in [len - 1, len / 2, len / 4, 0x3000, 0x2000, 100] {
        let mut b = std::fs::read(&dump).unwrap();
        corrupt_file(&mut b, FileCorruption::Truncate(keep));
        let p = dump.with_extension(format!("{keep}.dmp"));
        std::fs::write(&p, b).unwrap();
        let r = analyze(&p, &syms, &[]);
        no_panic(&r);
        assert!(matches!(r.code(), Some(0 | 1)), "{keep}: {:?}", r.status);
        if r.code() == Some(1) {
            assert!(
                r.stderr.contains(&p.display().to_string()),
                "the error names the dump: {}",
                r.stderr
            );
        }
    }
}

#[test]
fn wrong_symbols_are_refused_with_the_build_named() {
    let (_d, dump, _syms) = damaged(None, None);
    let other = repo_root()
        .join("testdata/nt/win11-22000/ntkrnlmp.pdb")
        .display()
        .to_string();
    let r = analyze(
        &dump,
        Path::new("/nonexistent"),
        &["--pdb", &other, "--no-builtin"],
    );
    no_panic(&r);
    assert_eq!(r.code(), Some(1));
    assert!(
        r.stderr.contains("19041") && r.stderr.contains("MEMORY.DMP"),
        "{}",
        r.stderr
    );
}
