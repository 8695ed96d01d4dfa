//! A new user's first hour: what they see when they leave the
//! README's exact path. Each test runs the real binary as a user would and
//! asserts the text on their screen: that it says what happened and what
//! to do, once, in this platform's terms.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{Finished, assert_contains, repo_root, run_bounded};

/// `pooldump ARGS` from the repository root (relative paths as a user
/// types them), with a fresh cache and no symbol path in the environment.
fn pooldump(args: &[&str], cache: &Path) -> Finished {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pooldump"));
    c.args(args)
        .current_dir(repo_root())
        .env("POOLDUMP_CACHE_DIR", cache)
        .env_remove("_NT_SYMBOL_PATH")
        .env_remove("_NT_ALT_SYMBOL_PATH")
        // No network here; make sure a download fails at once.
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "");
    run_bounded(&mut c, Duration::from_secs(120))
}

fn failed(r: &Finished) -> &str {
    assert_eq!(
        r.code(),
        Some(1),
        "expected a failure: {}{}",
        r.stdout,
        r.stderr
    );
    &r.stderr
}

fn succeeded(r: &Finished) -> &str {
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    &r.stdout
}

/// No line of `text` is printed twice.
fn no_repeated_line(text: &str) {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    for (i, l) in lines.iter().enumerate() {
        assert!(
            !lines[..i].contains(l),
            "the line {l:?} is printed twice in:\n{text}"
        );
    }
}

/// Fix lines fit the platform: WinDbg's `srv*C:\symbols*...` only on
/// Windows.
fn platform_fix(text: &str) {
    if !cfg!(windows) {
        assert!(
            !text.contains("C:\\"),
            "a Windows path on this platform:\n{text}"
        );
    }
}

const SAMPLE: &str = "testdata/sample/MEMORY.DMP";
const SAMPLE_SYMBOLS: &str = "testdata/sample/symbols";

#[test]
fn the_sample_without_symbols_says_the_fallback_does_not_fit_and_what_to_do() {
    let cache = tempfile::tempdir().unwrap();
    // Offline, and with the default symbol path (whose server cannot be
    // reached here): the same answer.
    for extra in [&["--offline"][..], &[][..]] {
        let mut args = vec!["analyze", SAMPLE];
        args.extend_from_slice(extra);
        let r = pooldump(&args, cache.path());
        let e = failed(&r);
        // Not the old `cannot read nt!PoolTrackTable ... is not mapped`.
        assert!(!e.contains("PoolTrackTable at"), "{e}");
        assert!(
            e.starts_with(
                "error: testdata/sample/MEMORY.DMP: build 19041: no symbols for ntkrnlmp.pdb 06564D3477822C7D97F04852CBD5AFD61: "
            ),
            "{e}"
        );
        assert_contains(
            e,
            "pooldump's built-in layout table, the fallback, cannot stand in: its entry 10.0.19041.3324 has this GUID and age, but it puts ExpHotTagArray at RVA 0xd58098, beyond the end of this image (SizeOfImage 0x95000), so this kernel is not the build the table describes",
        );
        assert_contains(
            e,
            "\nfix: pass --symbol-path testdata/sample/symbols (the symbols directory beside the dump)\notherwise: pass --symbol-path DIR",
        );
        no_repeated_line(e);
        platform_fix(e);
    }
    // And the fix works.
    let r = pooldump(
        &["analyze", SAMPLE, "--symbol-path", SAMPLE_SYMBOLS],
        cache.path(),
    );
    assert!(succeeded(&r).contains(" Leak  Nonp"), "{}", r.stdout);
}

#[test]
fn symbol_fix_lines_suit_the_platform() {
    let cache = tempfile::tempdir().unwrap();
    let r = pooldump(
        &["analyze", SAMPLE, "--offline", "--no-builtin"],
        cache.path(),
    );
    let e = failed(&r);
    platform_fix(e);
    if !cfg!(windows) {
        // The store pooldump downloads into, under the user's cache.
        let store = cache.path().join("symbols");
        assert_contains(
            e,
            &format!(
                "without --offline and _NT_SYMBOL_PATH it uses srv*{}*https://msdl.microsoft.com/download/symbols",
                store.display()
            ),
        );
    }
    assert_contains(e, "--offline prevents downloads");
    assert_contains(e, "--no-builtin disables the built-in layout table");
}

#[test]
fn a_wrong_pdb_is_named_once() {
    let cache = tempfile::tempdir().unwrap();
    let pdb = "testdata/nt/win10-19041-public/ntkrnlmp.pdb";
    let r = pooldump(&["analyze", SAMPLE, "--pdb", pdb], cache.path());
    let e = failed(&r);
    let first = e.lines().next().unwrap();
    assert_eq!(first.matches(pdb).count(), 1, "{e}");
    assert!(first.contains("is the wrong PDB"), "{e}");
    platform_fix(e);
}

#[test]
fn an_error_cause_is_not_repeated() {
    let cache = tempfile::tempdir().unwrap();
    let r = pooldump(&["analyze", "--kdnet", "port=50000,key=1.2"], cache.path());
    let e = failed(&r);
    assert_eq!(
        e,
        "error: --kdnet port=50000,key=1.2\n  caused by: the KDNET spec's key: a KDNET key has four dot-separated parts (w.x.y.z), this one has 2\n"
    );
}

#[test]
fn windbgs_k_net_spelling_is_accepted_by_every_kdnet_command() {
    let cache = tempfile::tempdir().unwrap();
    let out = cache.path().join("w").display().to_string();
    let map = cache.path().join("m.json").display().to_string();
    // docs/kdnet.md's `--kdnet "-k net:port=...,key=..."`: the value is
    // parsed (here: its key is wrong), not refused as an unknown `-k`.
    for cmd in [
        &["info"][..],
        &["analyze"],
        &["find", "--tag", "Leak"],
        &["snapshot"],
        &["watch", "--out", &out, "--count", "1"],
        &["top", "--once"],
        &["hittag", "--tag", "Leak"],
        &["relabel", "--tag", "Leak", "-o", &map],
        &["callsites", "--tag", "Leak"],
    ] {
        let mut args = cmd.to_vec();
        args.extend(["--kdnet", "-k net:port=50000,key=1.2"]);
        let r = pooldump(&args, cache.path());
        let e = failed(&r);
        assert!(!e.contains("unexpected argument"), "{cmd:?}: {e}");
        assert!(
            e.contains("a KDNET key has four dot-separated parts (w.x.y.z), this one has 2"),
            "{cmd:?}: {e}"
        );
    }
}

#[test]
fn a_file_that_cannot_be_written_is_named_without_a_temporary_name() {
    let dir = tempfile::Builder::new()
        .prefix("first-hour")
        .tempdir()
        .unwrap();
    let out = dir.path().join("nodir").join("s.json");
    let out = out.display().to_string();
    let r = on_sample("snapshot", &["-o", &out]);
    let e = failed(&r);
    assert!(!e.contains(".tmp"), "{e}");
    assert!(e.starts_with(&format!("error: {out}: cannot write")), "{e}");
    assert_eq!(e.matches(&out).count(), 1, "{e}");
    if cfg!(unix) {
        assert_contains(e, "caused by: No such file or directory (os error 2)\n");
    }
}

#[test]
fn an_interval_without_a_unit_lists_the_units() {
    let cache = tempfile::tempdir().unwrap();
    for cmd in [
        &[
            "watch",
            "--kdnet",
            "port=50000,key=1.2.3.4",
            "--out",
            "/nonexistent/w",
        ][..],
        &["top", SAMPLE],
    ] {
        let mut args = cmd.to_vec();
        args.extend(["--interval", "5"]);
        let r = pooldump(&args, cache.path());
        assert_eq!(r.code(), Some(2), "{}", r.stderr);
        assert_contains(
            &r.stderr,
            "give a number and a unit, such as 90s, 30m, 1h or 1h30m (units: ms, s or sec, m or min, h or hr, d or days)",
        );
    }
}

#[test]
fn finds_per_tag_table_is_in_tag_order() {
    let r = on_sample(
        "find",
        &[
            "--per-tag",
            "--tag",
            "ZZZZ",
            "--tag",
            "Leak",
            "--tag",
            "CM",
            "--tag",
            "Irp",
        ],
    );
    let out = succeeded(&r);
    assert_contains(out, "Per tag, in tag order as analyze lists them");
    let tags: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with(" Tag "))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // As analyze's -s tag: by the tag's characters ("CM " before "Irp "),
    // not by the tag's numeric value (which puts "ZZZZ" before "Leak").
    assert_eq!(tags, ["CM", "Irp", "Leak", "ZZZZ"], "{out}");
}

/// `pooldump CMD` on the sample, with its symbols, `extra` after them and
/// a fresh cache.
fn on_sample(cmd: &str, extra: &[&str]) -> Finished {
    let cache = tempfile::tempdir().unwrap();
    let mut args = vec![cmd, SAMPLE, "--symbol-path", SAMPLE_SYMBOLS];
    args.extend_from_slice(extra);
    pooldump(&args, cache.path())
}

/// `analyze` on the sample, with its symbols.
fn analyze(extra: &[&str]) -> Finished {
    on_sample("analyze", extra)
}

#[test]
fn options_that_change_nothing_say_so() {
    let out = analyze(&["--show-free"]);
    assert!(
        succeeded(&out).contains(
            "\nNote: --show-free lists the big-page table's freed entries and applies only with --big-pool: it changed nothing here\n"
        ),
        "{}",
        out.stdout
    );
    let out = analyze(&["--big-pool", "-s", "A"]);
    assert!(
        succeeded(&out).contains(
            "\nNote: --sort: the big-page list has one row per allocation (no Allocs, Frees or Diff), so only -s tag and -s bytes apply; it is sorted by tag\n"
        ),
        "{}",
        out.stdout
    );
    // Without a note: the options do what they say.
    for ok in [
        &["--big-pool", "--show-free"][..],
        &["--big-pool", "-s", "B"],
    ] {
        let out = analyze(ok);
        assert!(!succeeded(&out).contains("Note:"), "{ok:?}: {}", out.stdout);
    }
}

/// The Bytes column of the big-page list, in order.
fn big_bytes(out: &str) -> Vec<u64> {
    out.lines()
        .skip_while(|l| !l.starts_with(" Address "))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().nth(4).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn big_pool_sorts_by_bytes_and_cuts_with_top() {
    let out = analyze(&["--big-pool", "-s", "B"]);
    let b = big_bytes(succeeded(&out));
    assert!(b.len() > 5, "{}", out.stdout);
    assert!(b.windows(2).all(|w| w[0] >= w[1]), "{b:?}");
    // --top keeps the largest; the drivers of the tags shown stay.
    let out = analyze(&["--big-pool", "-s", "B", "--top", "3"]);
    let top = big_bytes(succeeded(&out));
    assert_eq!(top, b[..3], "{}", out.stdout);
    assert_contains(&out.stdout, "fsfilt.sys");
}

#[test]
fn a_filter_that_matches_nothing_says_why() {
    // The README's own PoolMon /i /x example, on the sample.
    let out = analyze(&["-i", "Ntf?", "-x", "Ntfx"]);
    assert!(
        succeeded(&out).contains(
            "\nNote: no row is left: of the 13 tag rows, -i Ntf? kept 1 (Ntfx), -x Ntfx hid the rest; patterns are case-sensitive, `?` is one character and `*` any\n"
        ),
        "{}",
        out.stdout
    );
    let out = analyze(&["--pool", "paged", "-i", "Leak"]);
    assert!(
        succeeded(&out).contains("of the 13 tag rows, --pool paged kept 5, -i Leak kept 0;"),
        "{}",
        out.stdout
    );
    let out = analyze(&["--big-pool", "-i", "leak", "--json"]);
    let v: serde_json::Value = serde_json::from_str(succeeded(&out)).unwrap();
    assert_eq!(
        v["notes"][0],
        "no row is left: of the 17 big-page entries, -i leak kept 0; patterns are case-sensitive, `?` is one character and `*` any"
    );
    // CSV stays CSV; the note goes to stderr.
    let out = analyze(&["-i", "leak", "--csv"]);
    assert_eq!(succeeded(&out).lines().count(), 1, "{}", out.stdout);
    assert_contains(&out.stderr, "pooldump: note: no row is left");
}

/// `.ci/run`'s summary of the tests that skipped (libtest says `ok` for
/// them): a count and which, from the log tests/support writes; under
/// CI=true a skip fails the run.
#[cfg(unix)]
#[test]
fn skipped_tests_are_counted_and_named_in_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(support::SKIP_LOG),
        "SKIPPED\tkdnet_capture\twindbg_uncut\tthe capture x is missing\n\
         NOTE\tkdnet_netem\tanalyze_and_info\ttc netem unavailable; a relay instead\n",
    )
    .unwrap();
    let run = |ci: &str| {
        let mut c = Command::new("bash");
        c.arg(repo_root().join(".ci/test-summary"))
            .env("CARGO_TARGET_DIR", dir.path())
            .env("CI", ci);
        run_bounded(&mut c, Duration::from_secs(30))
    };
    let r = run("");
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "1 test(s) skipped, 1 ran in a documented weaker form (docs/testing.md, \"Tests that skip\")\n\
         skipped:\n  kdnet_capture::windbg_uncut: the capture x is missing\n\
         weaker form:\n  kdnet_netem::analyze_and_info: tc netem unavailable; a relay instead\n"
    );
    let r = run("true");
    assert_eq!(r.code(), Some(1), "{}", r.stdout);
    assert_contains(&r.stderr, "CI=true: no test may skip");
    // Nothing recorded: said too.
    std::fs::remove_file(dir.path().join(support::SKIP_LOG)).unwrap();
    let r = run("true");
    assert_eq!(r.code(), Some(0));
    assert!(
        r.stdout.starts_with("0 test(s) skipped, 0 ran"),
        "{}",
        r.stdout
    );
}

#[test]
fn an_isf_that_cannot_be_used_is_said_even_when_other_symbols_answer() {
    let r = analyze(&["--isf", "/nonexistent/nt.json"]);
    assert_contains(
        succeeded(&r),
        "\nWarnings:\n  - --isf /nonexistent/nt.json: not used: ",
    );
}
