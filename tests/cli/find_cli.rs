//! `pooldump find` end to end: the bundled sample against its ground
//! truth in every output format, `--tags-from`, and bad input (an error
//! that names the input and the problem, or a partial result with a
//! warning; never a panic or a hang).

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pooldump_kit::corrupt::{Corruption, FileCorruption, corrupt_file};
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
use support::{Finished, repo_root, run_bounded, sample_truth};

pub(crate) fn pooldump(args: &[&str]) -> Finished {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pooldump"));
    c.args(args)
        .env_remove("_NT_SYMBOL_PATH")
        .current_dir(repo_root());
    // Hang detector, not a timing test.
    run_bounded(&mut c, Duration::from_secs(120))
}

/// `pooldump find` on a dump with the symbol store next to it.
fn find(dump: &Path, extra: &[&str]) -> Finished {
    let syms = dump.parent().unwrap().join("symbols");
    let (d, s) = (dump.display().to_string(), syms.display().to_string());
    let mut a = vec!["find", &d, "--symbol-path", &s, "--offline", "--no-cache"];
    a.extend_from_slice(extra);
    pooldump(&a)
}

fn sample_dump() -> std::path::PathBuf {
    repo_root().join("testdata/sample/MEMORY.DMP")
}

/// Live in-dump allocations of `tag` in the truth, by allocation address.
fn live(t: &serde_json::Value, tag: &str) -> BTreeSet<u64> {
    support::items(&t["allocations"])
        .filter(|a| a["tag"] == tag && a["live"] == true && a["in_dump"] == true)
        .map(|a| a["va"].as_u64().unwrap())
        .collect()
}

pub(crate) fn va(s: &str) -> u64 {
    u64::from_str_radix(&s.replace('`', ""), 16).unwrap()
}

#[test]
fn no_tag_is_a_usage_error_before_the_dump_is_read() {
    // The dump is not even opened: a file that is not one says nothing.
    let not_a_dump = repo_root().join("README.md");
    let r = find(&not_a_dump, &[]);
    assert_eq!(r.code(), Some(2), "{}", r.stdout);
    assert!(
        r.stderr.contains("name the tags to find with --tag TAG"),
        "{}",
        r.stderr
    );
}

#[test]
fn json_lists_what_the_truth_holds() {
    let r = find(
        &sample_dump(),
        &["--tag", "Leak", "--tag", "NSbf", "--json"],
    );
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["schema"], "pooldump.find/2");
    let t = sample_truth();
    for tag in ["Leak", "NSbf"] {
        let got: BTreeSet<u64> = support::items(&j["allocations"])
            .filter(|a| a["tag"] == tag && a["state"] == "allocated")
            .map(|a| va(a["va"].as_str().unwrap()))
            .collect();
        assert_eq!(got, live(&t, tag), "{tag}");
        let row = support::items(&j["tags"])
            .find(|r| r["tag"] == tag)
            .unwrap();
        assert_eq!(row["allocated"].as_u64().unwrap() as usize, got.len());
        assert_eq!(row["not_found"], 0, "{tag}");
    }
    // NSbf (0x1000-0x6000 bytes) lives only in the big-page table.
    assert!(
        support::items(&j["allocations"])
            .filter(|a| a["tag"] == "NSbf")
            .all(|a| a["allocator"] == "big-pool" && a["header"].is_null())
    );
}

#[test]
fn text_csv_and_tags_from() {
    let (_dir, tags) = support::temp_file(
        "sites.txt",
        "# one fresh tag per call site\nLeak\n\nIrp\nZzz9\r\n",
    );
    let t = sample_truth();

    let r = find(&sample_dump(), &["--tags-from", &tags]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("Per tag"), "{}", r.stdout);
    assert!(
        r.stdout.contains("Zzz9"),
        "a tag with no allocation still gets a row"
    );
    assert!(r.stdout.contains("LFH") || r.stdout.contains("VS"));

    let r = find(
        &sample_dump(),
        &["--tags-from", &tags, "--csv", "--allocated"],
    );
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let mut lines = r.stdout.lines();
    assert!(lines.next().unwrap().starts_with("va,header,pa,bytes,pool"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), live(&t, "Leak").len() + live(&t, "Irp ").len());
    assert!(rows.iter().all(|r| r.contains(",allocated,")));

    let r = find(
        &sample_dump(),
        &["--tags-from", &tags, "--csv", "--per-tag"],
    );
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let rows: Vec<&str> = r.stdout.lines().collect();
    assert!(rows[0].starts_with("tag,allocated,bytes"));
    let zzz = rows
        .iter()
        .find(|r| r.starts_with("Zzz9,"))
        .expect("Zzz9 row");
    assert!(zzz.starts_with("Zzz9,0,0,"), "{zzz}");
    let leak = rows.iter().find(|r| r.starts_with("Leak,")).unwrap();
    let n: usize = leak.split(',').nth(1).unwrap().parse().unwrap();
    assert_eq!(n, live(&t, "Leak").len());
}

#[test]
fn wildcards_and_values_find_the_same() {
    let a = find(&sample_dump(), &["--tag", "Leak", "--json"]);
    let b = find(
        &sample_dump(),
        &["--tag", "Le?k", "--tag", "0x6b61654c", "--json"],
    );
    assert_eq!(a.code(), Some(0), "{}", a.stderr);
    assert_eq!(b.code(), Some(0), "{}", b.stderr);
    let ja: serde_json::Value = serde_json::from_str(&a.stdout).unwrap();
    let jb: serde_json::Value = serde_json::from_str(&b.stdout).unwrap();
    assert_eq!(ja["allocations"], jb["allocations"]);
    // Case-sensitive, as PoolMon's are.
    let c = find(&sample_dump(), &["--tag", "leak", "--json"]);
    let jc: serde_json::Value = serde_json::from_str(&c.stdout).unwrap();
    assert_eq!(jc["allocations"].as_array().unwrap().len(), 0);
}

#[test]
fn bad_arguments_are_explained() {
    let r = find(&sample_dump(), &[]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("--tag"), "{}", r.stderr);

    let r = find(&sample_dump(), &["--tag", "Toolong"]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("Toolong"), "{}", r.stderr);

    let r = find(&sample_dump(), &["--tags-from", "/nonexistent/tags.txt"]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("/nonexistent/tags.txt"), "{}", r.stderr);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "Leak\nnot a tag\n").unwrap();
    let r = find(&sample_dump(), &["--tags-from", &bad.display().to_string()]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("line 2"), "{}", r.stderr);

    let r = find(&dir.path().join("MEMORY.DMP"), &["--tag", "Leak"]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("MEMORY.DMP"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn truncated_dump_gives_a_partial_result() {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 31));
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = m.dump_bytes(DumpKind::Full);
    let n = bytes.len() as u64;
    corrupt_file(&mut bytes, FileCorruption::Truncate(n * 2 / 3));
    let dump = dir.path().join("MEMORY.DMP");
    std::fs::write(&dump, &bytes).unwrap();
    m.write_symbol_store(&dir.path().join("symbols")).unwrap();
    let r = find(&dump, &["--tag", "Leak", "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(j["scan"]["unreadable_frames"].as_u64().unwrap() > 0);
    assert!(j["warnings"].as_array().unwrap().iter().any(
        |w| w["kind"] == "find" && w["message"].as_str().unwrap().contains("could not be read")
    ));
    // CSV is for a program, but the person running it is still told: on
    // stderr, sorted or streamed, the list or the per-tag table.
    for extra in [&[][..], &["--unsorted"], &["--per-tag"]] {
        let mut args = vec!["--tag", "Leak", "--csv"];
        args.extend_from_slice(extra);
        let r = find(&dump, &args);
        assert_eq!(r.code(), Some(0), "{}", r.stderr);
        support::assert_warned_on_stderr(&r.stdout, &r.stderr, "could not be read");
    }
}

#[test]
fn hostile_page_tables_and_sizes_do_not_hang() {
    for c in [
        Corruption::PageTableLoops,
        Corruption::HugeBigTableSize,
        Corruption::BigTableIntoNowhere,
        Corruption::MissingTrackerPages,
    ] {
        let mut m = Machine::build(&Scenario::small(NtBuild::Win81_9600, 2));
        m.corrupt(c);
        let dir = tempfile::tempdir().unwrap();
        let dump = dir.path().join("MEMORY.DMP");
        m.write_dump_file(DumpKind::KernelBitmap, &dump).unwrap();
        m.write_symbol_store(&dir.path().join("symbols")).unwrap();
        let r = find(&dump, &["--tag", "Leak", "--json"]);
        assert_eq!(r.code(), Some(0), "{c:?}: {}", r.stderr);
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let want = m
            .truth
            .allocations
            .iter()
            .filter(|a| a.tag == "Leak" && a.live && a.in_dump)
            .count();
        let got = support::items(&j["allocations"])
            .filter(|a| a["state"] == "allocated")
            .count();
        assert_eq!(got, want, "{c:?}");
    }
}

/// `pooldump find` over KDNET against `m` simulated on a loopback port,
/// with the symbol store in `dir`; it must succeed. The target is
/// returned too, to look at afterwards.
fn find_live(m: Machine, dir: &Path, extra: &[&str]) -> (Finished, pooldump_kdnet_sim::SimTarget) {
    let key = "1.2.3.4";
    let (cfg, port) = support::loopback_sim(key);
    let sim = pooldump_kdnet_sim::SimTarget::spawn(m, cfg).unwrap();
    let spec = format!("port={port},key={key},bind=127.0.0.1");
    let syms = dir.join("symbols").display().to_string();
    let mut a = vec![
        "find",
        "--kdnet",
        &spec,
        "--symbol-path",
        &syms,
        "--offline",
        "--no-cache",
    ];
    a.extend_from_slice(extra);
    let live = pooldump(&a);
    assert_eq!(live.code(), Some(0), "{}", live.stderr);
    (live, sim)
}

#[test]
fn live_kdnet_target_gives_what_the_dump_gives() {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 23));
    let dir = tempfile::tempdir().unwrap();
    let (dump, _) = support::write_dump_and_symbols(&m, dir.path());
    let from_dump = find(&dump, &["--tag", "Leak", "--tag", "Irp", "--json"]);
    assert_eq!(from_dump.code(), Some(0), "{}", from_dump.stderr);

    let (live, sim) = find_live(m, dir.path(), &["--tag", "Leak", "--tag", "Irp", "--json"]);
    assert!(sim.stats().continues >= 1, "the target was not resumed");
    let a: serde_json::Value = serde_json::from_str(&from_dump.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_str(&live.stdout).unwrap();
    assert_eq!(b["source"]["live"], true);
    assert_eq!(a["allocations"], b["allocations"]);
    assert!(!a["allocations"].as_array().unwrap().is_empty());
}

#[test]
fn session_pool_is_found_in_each_session_from_a_dump_and_a_live_target() {
    // Win7: session pool at 0xFFFFF900`C0000000 in every session, in
    // frames only that session's processes map, in legacy pool pages.
    // 2004: the same in a segment heap of each session's own.
    for build in [NtBuild::Win7_7601, NtBuild::Win10_19041] {
        session_pool_case(build);
    }
}

fn session_pool_case(build: NtBuild) {
    let m = Machine::build(&Scenario::small(build, 11));
    let want: BTreeSet<(u64, u64)> = m
        .truth
        .sessions
        .iter()
        .flat_map(|s| s.allocations.iter().map(|a| (u64::from(s.id), a.va)))
        .collect();
    let tags: BTreeSet<String> = m
        .truth
        .sessions
        .iter()
        .flat_map(|s| s.allocations.iter().map(|a| a.tag.clone()))
        .collect();
    let mut args = vec![];
    for t in &tags {
        args.extend(["--tag", t.as_str()]);
    }
    let dir = tempfile::tempdir().unwrap();
    let (dump, _) = support::write_dump_and_symbols(&m, dir.path());
    let with = |extra: &[&str]| {
        let mut a = args.clone();
        a.extend_from_slice(extra);
        let r = find(&dump, &a);
        assert_eq!(r.code(), Some(0), "{}", r.stderr);
        r.stdout
    };
    let j: serde_json::Value = serde_json::from_str(&with(&["--json"])).unwrap();
    let got: BTreeSet<(u64, u64)> = support::items(&j["allocations"])
        .map(|a| {
            assert_eq!(a["session"], true, "{a}");
            let id = a["session_id"].as_u64().unwrap_or_else(|| panic!("{a}"));
            (id, va(a["va"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(got, want);
    let ids: Vec<u64> = support::items(&j["scan"]["sessions"])
        .map(|s| s["session_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 1]);
    // Each session's own heap, from 19H1 on; none before.
    let heaps: Vec<Option<u64>> = support::items(&j["scan"]["sessions"])
        .map(|s| s["heap"].as_str().map(va))
        .collect();
    let want_heaps: Vec<Option<u64>> = m.truth.sessions.iter().map(|s| s.heap_va).collect();
    assert_eq!(heaps, want_heaps, "{build}");
    // Each session's own big-page table: its live and freed entries are
    // among the allocations (every tag of the session is searched).
    for (s, t) in support::items(&j["scan"]["sessions"]).zip(&m.truth.sessions) {
        let (b, want) = (&s["big_pages"], t.big_pool.as_ref().unwrap());
        assert_eq!(va(b["table"].as_str().unwrap()), want.table_va, "{build}");
        assert_eq!(b["size"], want.table_size, "{build}");
        let count = |freed: bool| want.entries.iter().filter(|e| e.freed == freed).count();
        assert_eq!(b["matched_live"], count(false), "{build}");
        assert_eq!(b["matched_freed"], count(true), "{build}");
        assert!(count(false) > 0 && count(true) > 0, "{build}");
    }
    // The tracker column counts the sessions' own tables: nothing is
    // "not found".
    for t in support::items(&j["tags"]) {
        assert_eq!(t["tracker_diff"], t["allocated"], "{t}");
        assert_eq!(t["not_found"], 0, "{t}");
    }

    let text = with(&[]);
    assert!(
        text.contains("session pool of session(s) 0, 1 through their own page tables"),
        "{text}"
    );
    assert!(text.contains("Paged session 1"), "{text}");
    assert!(text.contains("Paged session 0"), "{text}");
    let csv = with(&["--csv"]);
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().ends_with(",in_dump,session_id"));
    let from_csv: BTreeSet<(u64, u64)> = lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[12].parse().unwrap(), va(c[0]))
        })
        .collect();
    assert_eq!(from_csv, want);

    // A live target: the same sessions, read through the same tables.
    args.push("--json");
    let (live, _sim) = find_live(m, dir.path(), &args);
    let b: serde_json::Value = serde_json::from_str(&live.stdout).unwrap();
    assert_eq!(j["allocations"], b["allocations"]);
}

// --- --unsorted ------------------------------------------------------------

/// `v` without the fields that differ from run to run (the scan's time).
fn steady(mut v: serde_json::Value) -> serde_json::Value {
    v["scan"]["seconds"] = serde_json::Value::Null;
    v
}

/// The allocations of a JSON report, by address.
fn sorted_allocations(v: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut a = v["allocations"].as_array().expect("allocations").clone();
    a.sort_by_key(|a| (a["va"].to_string(), a["header"].to_string()));
    a
}

/// The allocation rows of a text report with their columns' padding
/// squeezed, sorted, and the text from the per-tag table on.
fn text_parts(out: &str) -> (Vec<String>, String) {
    let start = out
        .lines()
        .position(|l| l.trim_start().starts_with("Block"))
        .expect("the table header");
    let rows: Vec<String> = out
        .lines()
        .skip(start + 1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let per_tag = out.find("Per tag").expect("the per-tag table");
    let mut rows = rows;
    rows.sort();
    (rows, out[per_tag..].to_string())
}

#[test]
fn unsorted_lists_what_sorted_lists() {
    let tags = [
        "--tag", "Leak", "--tag", "NSbf", "--tag", "Irp", "--tag", "CaAl",
    ];
    let with = |extra: &[&str]| {
        let mut a = tags.to_vec();
        a.extend_from_slice(extra);
        let r = find(&sample_dump(), &a);
        assert_eq!(r.code(), Some(0), "{extra:?}: {}", r.stderr);
        r.stdout
    };
    let json = |s: &str| -> serde_json::Value { serde_json::from_str(s).expect("valid JSON") };

    // JSON: one valid document, the same allocations, the same rest.
    let (a, b) = (
        json(&with(&["--json"])),
        json(&with(&["--json", "--unsorted"])),
    );
    assert!(a["allocations"].as_array().unwrap().len() > 10);
    assert_eq!(sorted_allocations(&a), sorted_allocations(&b));
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("allocations");
        steady(v)
    };
    assert_eq!(strip(a), strip(b));

    // With --allocated, only live ones, in JSON and in CSV.
    let b = json(&with(&["--json", "--unsorted", "--allocated"]));
    let live = b["allocations"].as_array().unwrap();
    assert!(!live.is_empty() && live.iter().all(|a| a["state"] == "allocated"));
    let lines = |s: String| -> Vec<String> {
        let mut l: Vec<String> = s.lines().map(str::to_string).collect();
        l[1..].sort();
        l
    };
    assert_eq!(
        lines(with(&["--csv", "--allocated"])),
        lines(with(&["--csv", "--allocated", "--unsorted"]))
    );
    assert_eq!(
        lines(with(&["--csv"])),
        lines(with(&["--csv", "--unsorted"]))
    );

    // Text: the same rows, then the same summary.
    let (rows_a, rest_a) = text_parts(&with(&["--no-progress"]));
    let (rows_b, rest_b) = text_parts(&with(&["--no-progress", "--unsorted"]));
    assert_eq!(rows_a, rows_b);
    assert_eq!(rest_a, rest_b);
    let unsorted = with(&["--unsorted"]);
    assert!(unsorted.contains("Scanned "), "{unsorted}");
    assert!(
        unsorted.contains("Headers in frames no pool address maps")
            == rest_a.contains("Headers in frames no pool address maps")
    );

    // --per-tag: the per-tag table only, the same with or without.
    for f in ["--json", "--csv"] {
        let a = with(&[f, "--per-tag"]);
        let b = with(&[f, "--per-tag", "--unsorted"]);
        if f == "--json" {
            let (a, b) = (json(&a), json(&b));
            assert!(a.get("allocations").is_none() && b.get("allocations").is_none());
            assert_eq!(steady(a), steady(b));
        } else {
            assert_eq!(a, b);
            assert!(a.starts_with("tag,allocated,bytes"), "{a}");
        }
    }
}

#[test]
fn unsorted_json_without_results_is_valid() {
    for extra in [&["--json"][..], &["--json", "--allocated"][..]] {
        let mut a = vec!["--tag", "Zzz9", "--unsorted"];
        a.extend_from_slice(extra);
        let r = find(&sample_dump(), &a);
        assert_eq!(r.code(), Some(0), "{}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("valid JSON");
        assert_eq!(v["allocations"], serde_json::json!([]));
        assert_eq!(v["tags"][0]["tag"], "Zzz9");
    }
}

/// The heap of `pooldump find --unsorted` must not follow the number of
/// allocations found. One kit dump with a bulk pool of 128 MiB under one
/// tag (about 600,000 allocations) and the scenario's few `Leak`s: the
/// same dump is scanned for either, so what differs is what the results
/// cost. The sorted search on the same dump must grow (it holds 64 bytes
/// per result), which shows the measurement sees results at all.
///
/// Measured is the peak of the child's anonymous memory (`RssAnon` in
/// /proc/PID/status, sampled every millisecond): the dump's pages are a
/// file mapping whose resident share depends on the page cache and on
/// when the scan last released them, so total RSS varies by ±8 MB from
/// run to run whatever the results.
#[cfg(target_os = "linux")]
#[test]
fn unsorted_memory_does_not_grow_with_results() {
    let mut s = Scenario::small(NtBuild::Win10_19041, 4);
    // As a scenario file spells it: no big-pool entries.
    let bulk = serde_json::json!({ "bytes": 128u64 << 20, "tags": 1 });
    s.bulk = Some(serde_json::from_value(bulk).unwrap());
    let m = Machine::build(&s);
    let (bulk_tag, many) = {
        let all = m.bulk_allocations();
        (all[0].tag.clone(), all.len())
    };
    assert!(many > 200_000, "{many}");
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("MEMORY.DMP");
    m.write_dump_file(DumpKind::KernelBitmap, &dump).unwrap();
    m.write_symbol_store(&dir.path().join("symbols")).unwrap();
    drop(m);
    let peak = |tag: &str, extra: &[&str]| -> (u64, usize) {
        let syms = dir.path().join("symbols").display().to_string();
        let d = dump.display().to_string();
        let out = dir.path().join(format!("{tag}{}.csv", extra.len()));
        let mut c = Command::new(env!("CARGO_BIN_EXE_pooldump"));
        c.args([
            "find",
            &d,
            "--symbol-path",
            &syms,
            "--offline",
            "--no-cache",
        ])
        .args(["--tag", tag, "--csv", "--no-progress"])
        .args(extra)
        .env_remove("_NT_SYMBOL_PATH")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null());
        let (ok, peak) = peak_anon(&mut c);
        assert!(ok, "pooldump find {tag} {extra:?} failed");
        let rows = std::fs::read_to_string(&out).unwrap().lines().count() - 1;
        eprintln!(
            "find {tag} {extra:?}: {rows} rows, peak RssAnon {} KiB",
            peak >> 10
        );
        (peak, rows)
    };
    let (few_peak, few) = peak("Leak", &["--unsorted"]);
    let (many_peak, found) = peak(&bulk_tag, &["--unsorted"]);
    assert!(few > 0 && few < 1000, "{few}");
    assert!(found > 200_000, "{found} of {many}");
    let (sorted_peak, _) = peak(&bulk_tag, &[]);
    assert!(
        sorted_peak > few_peak + (24 << 20),
        "the sorted search should hold its {found} results: {sorted_peak} vs {few_peak}"
    );
    assert!(
        many_peak < few_peak + (8 << 20),
        "--unsorted grew with its results: {few} -> {few_peak} bytes, {found} -> {many_peak} bytes"
    );
}

/// Run `cmd` to its end (at most 300 s), sampling its anonymous memory:
/// whether it exited 0, and the largest `RssAnon` seen, in bytes.
#[cfg(target_os = "linux")]
fn peak_anon(cmd: &mut Command) -> (bool, u64) {
    let mut child = cmd.spawn().expect("spawn pooldump");
    let status_file = format!("/proc/{}/status", child.id());
    let started = std::time::Instant::now();
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib << 10);
        }
        if let Some(st) = child.try_wait().expect("wait for pooldump") {
            return (st.success(), peak);
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "pooldump find hung"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `--max-results N` lists N allocations at most (and the big-page
/// entries), counts the rest in the per-tag table, and says so, with the
/// way to list every one.
#[test]
fn max_results_lists_fewer_and_counts_all() {
    let tags = ["--tag", "Leak", "--tag", "Us*", "--json"];
    let all = find(&sample_dump(), &tags);
    assert_eq!(all.code(), Some(0), "{}", all.stderr);
    let all: serde_json::Value = serde_json::from_str(&all.stdout).unwrap();
    let mut args = tags.to_vec();
    args.extend(["--max-results", "5"]);
    let some = find(&sample_dump(), &args);
    assert_eq!(some.code(), Some(0), "{}", some.stderr);
    let some: serde_json::Value = serde_json::from_str(&some.stdout).unwrap();
    let headers = |j: &serde_json::Value| {
        support::items(&j["allocations"])
            .filter(|a| !a["header"].is_null())
            .count()
    };
    assert!(headers(&all) > 5);
    assert_eq!(headers(&some), 5);
    assert_eq!(some["tags"], all["tags"]);
    assert!(some["scan"]["not_listed"].as_u64().unwrap() > 0);
    let warnings = some["warnings"].to_string();
    assert!(
        warnings.contains("counted in the per-tag totals"),
        "{warnings}"
    );
    assert!(
        warnings.contains("--unsorted lists every match"),
        "{warnings}"
    );
}
