//! PoolMon and `!poolused` text as snapshots through the binary: a real
//! output in ../shared/realworld/, hand-made texts of each layout, and
//! mixed series (text, dump, snapshot file) that `trend` ranks together.
//! (crates/core/tests/text_import.rs reads the real outputs through the
//! library.)

use crate::support;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pooldump_core::snapshot_text::FORMATS_TRIED;
use pooldump_kit::GroundTruth;
use pooldump_kit::truth::{TagUsage, TrackerSlot};
use support::pooldump;

fn realworld(name: &str) -> Option<PathBuf> {
    support::shared_file(&format!("realworld/{name}"))
}

#[test]
fn snapshot_from_text_reports_lines_and_refuses_unknown_formats() {
    let Some(p) = realworld("poolmon-docs-examples.txt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap.json");
    let r = pooldump(&[
        "snapshot",
        "--from-text",
        p.to_str().unwrap(),
        "--table",
        "5",
        "--time",
        "2024-11-14 10:00:00",
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = &r.stderr;
    assert!(r.status.success(), "{err}");
    assert!(
        err.contains("8 line(s) were not understood") && err.contains("2, 17, 37, 44, 59, 72-74"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["source"]["kind"], "poolmon");
    assert_eq!(v["time"]["system_time"], "2024-11-14T10:00:00Z");
    assert_eq!(v["time"]["clock_source"], "given");
    assert_eq!(v["rows"][0]["tag"], "Drsd");
    assert_eq!(v["rows"][0]["bytes"], 17472);

    // pooltag.txt is none of the formats: the message lists them.
    let Some(pt) = realworld("pooltag.txt") else {
        return;
    };
    let r = pooldump(&["snapshot", "--from-text", pt.to_str().unwrap()]);
    let err = &r.stderr;
    assert_eq!(r.status.code(), Some(1), "{err}");
    for f in FORMATS_TRIED {
        assert!(err.contains(f), "{f} missing from {err}");
    }
    // diff on it says what the file is not.
    let r = pooldump(&["diff", pt.to_str().unwrap(), pt.to_str().unwrap()]);
    let err = &r.stderr;
    assert!(
        err.contains("nor PoolMon or !poolused text") && err.contains("formats tried"),
        "{err}"
    );
}

/// `pooldump ARGS` with the symbols in `symbols` alone and no layout
/// cache.
fn uncached(args: &[&str], symbols: &Path) -> support::Finished {
    support::pooldump_offline(&[args, &["--no-cache"]].concat(), symbols)
}

/// `!poolused` texts in three layouts (2 with a session time, 1 with the
/// legacy glued descriptions, 1 verbose dated by its file time), then the
/// sample dump: `trend` puts the tag that grows in every one first.
fn poolused_series(dir: &Path) -> Vec<PathBuf> {
    // The sample dump (2026-11-02 09:30 UTC) has Leak Nonp 120 / 36480.
    let summary = |time: &str, leak: u64| {
        format!(
            "Debug session time: {time}\n\
             0: kd> !poolused 2\n\
             ....\n Sorting by NonPaged Pool Consumed\n\n\
             \x20              NonPaged                  Paged\n\
             \x20Tag     Allocs         Used     Allocs         Used\n\n\
             \x20NSbf         8        94213          0            0\tUNKNOWN pooltag 'NSbf', please update pooltag.txt\n\
             \x20Leak  {:>8} {:>12}          0            0\tUNKNOWN pooltag 'Leak', please update pooltag.txt\n\
             \x20CM           0            0         20        39120\tConfiguration Manager (registry) , Binary: nt!cm\n",
            leak / 304,
            leak
        )
    };
    let legacy = String::from(
        "kd> !poolused\n   Sorting by  Tag\n\n  Pool Used:\n            NonPaged            Paged\n \
         Tag    Allocs     Used    Allocs     Used\n \
         CM          0        0        20    39120Configuration Manager (registry) , Binary: nt!cm\n \
         Leak       60    18240         0        0UNKNOWN pooltag 'Leak', please update pooltag.txt\n \
         NSbf        8    94213         0        0UNKNOWN pooltag 'NSbf', please update pooltag.txt\n",
    );
    let verbose = "                            NonPaged                                         Paged\n \
         Tag       Allocs       Frees      Diff         Used       Allocs       Frees      Diff         Used\n\n \
         CM             0           0         0            0        50020       50000        20        39120\tConfiguration Manager (registry) , Binary: nt!cm\n \
         Leak         100          10        90        27360            0           0         0            0\tUNKNOWN pooltag 'Leak', please update pooltag.txt\n \
         NSbf          18          10         8        94213            0           0         0            0\tUNKNOWN pooltag 'NSbf', please update pooltag.txt\n\n\
         TOTAL         118          20        98       121573        50020       50000        20        39120\n";
    let a = dir.join("a-0700.txt");
    std::fs::write(
        &a,
        summary("Mon Nov  2 16:00:00.000 2026 (UTC + 9:00)", 9120),
    )
    .unwrap();
    // Legacy and verbose texts state no time: their file times do.
    let b = dir.join("b-0800.txt");
    write_dated(&b, &legacy, rfc3339("2026-11-02T08:00:00Z"));
    let c = dir.join("c-0900.txt");
    write_dated(&c, verbose, rfc3339("2026-11-02T09:00:00Z"));
    vec![a, b, c]
}

fn rfc3339(time: &str) -> SystemTime {
    humantime::parse_rfc3339(time).unwrap()
}

/// `text` written to `path`, with `modified` as its file time (what
/// dates a text that states no time of its own).
fn write_dated(path: &Path, text: &str, modified: SystemTime) {
    std::fs::write(path, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

/// A PoolMon `/n` log (poolsnap.log) of a kit machine's table, `tags`,
/// as it stood an hour before: the same rows, but `grower`'s (tag, type)
/// at half its outstanding allocations and bytes.
fn poolmon_log_before(tags: &[TagUsage], grower: (&str, &str)) -> String {
    let mut log = String::from(
        " Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc\n\n",
    );
    for t in poolmon_rows(tags) {
        let (diff, bytes) = if (t.tag.as_str(), t.pool.as_str()) == grower {
            (t.diff / 2, t.bytes / 2)
        } else {
            (t.diff, t.bytes)
        };
        let allocs = t.reported_frees + diff;
        log.push_str(&format!(
            " {:<4} {:<5} {allocs:>10} {:>16} {diff:>15} {bytes:>7} {:>14}\n",
            t.tag,
            t.pool,
            t.reported_frees,
            bytes.checked_div(diff).unwrap_or(0)
        ));
    }
    log
}

/// The rows of `tags` that PoolMon shows: tags that were allocated, that
/// have a tracker row of their own and that print as four characters
/// (printable, padded with spaces as `CM  ` is).
fn poolmon_rows(tags: &[TagUsage]) -> impl Iterator<Item = &TagUsage> {
    tags.iter().filter(|t| {
        t.reported_allocs > 0
            && !matches!(t.slot, TrackerSlot::Overflow)
            && t.tag.len() <= 4
            && t.tag.trim_end().bytes().all(|c| c.is_ascii_graphic())
    })
}

#[test]
fn trend_over_three_poolused_texts_and_a_dump_ranks_the_growing_tag_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = poolused_series(dir.path());
    let root = support::repo_root().join("testdata/sample");
    files.push(root.join("MEMORY.DMP"));
    let mut args = vec!["trend"];
    args.extend(files.iter().map(|p| p.to_str().unwrap()));
    args.push("--json");
    let r = uncached(&args, &root.join("symbols"));
    assert!(r.status.success(), "{}", &r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["axis"], "system-time", "{}", v["warnings"]);
    let first = &v["tags"][0];
    assert_eq!(
        (first["tag"].as_str(), first["type"].as_str()),
        (Some("Leak"), Some("Nonp"))
    );
    assert_eq!(first["verdict"], "steady-growth");
    assert_eq!(
        first["bytes"],
        serde_json::json!([9120, 18240, 27360, 36480])
    );
    // 07:00, 08:00, 09:00, 09:30: one hour apart, then half an hour.
    let hours = support::fields(&v["points"], "hours", serde_json::Value::as_f64);
    assert_eq!(hours, [0.0, 1.0, 2.0, 2.5]);
    // Flat tags are not growth.
    let cm = support::items(&v["tags"])
        .find(|t| t["tag"] == "CM  " && t["type"] == "Paged")
        .unwrap();
    assert_eq!(cm["verdict"], "flat");
}

/// A PoolMon log, then a dump, then a snapshot file taken of the dump:
/// one series (a live target's snapshots are such files).
#[test]
fn mixed_poolmon_log_dump_and_snapshot_file_trend_together() {
    let dir = tempfile::tempdir().unwrap();
    let root = support::repo_root().join("testdata/sample");
    let log = dir.path().join("poolsnap.log");
    // The sample's table an hour earlier (the dump is of 09:30): Leak at
    // half its bytes.
    let truth: GroundTruth =
        serde_json::from_str(&std::fs::read_to_string(root.join("truth.json")).unwrap()).unwrap();
    write_dated(
        &log,
        &poolmon_log_before(&truth.tags, ("Leak", "Nonp")),
        rfc3339("2026-11-02T08:30:00Z"),
    );
    let snap = dir.path().join("later.json");
    let sym = root.join("symbols");
    let dump = root.join("MEMORY.DMP");
    let (log_s, dump_s, snap_s) = (
        log.to_str().unwrap(),
        dump.to_str().unwrap(),
        snap.to_str().unwrap(),
    );
    let r = uncached(&["snapshot", dump_s, "-o", snap_s], &sym);
    assert!(r.status.success(), "{}", &r.stderr);
    let r = uncached(&["diff", log_s, dump_s], &sym);
    let text = &r.stdout;
    assert!(r.status.success(), "{}", &r.stderr);
    let leak = text
        .lines()
        .find(|l| l.contains("Leak"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(leak.contains("18240") && leak.contains("+18240"), "{leak}");
    let r = uncached(&["trend", log_s, dump_s, snap_s, "--json"], &sym);
    assert!(r.status.success(), "{}", &r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["points"].as_array().unwrap().len(), 3);
    assert_eq!(v["points"][0]["source"], log_s);
    assert_eq!(v["tags"][0]["tag"], "Leak");
}

/// The mixed series on one machine: a PoolMon /n log taken an
/// hour before, a kernel dump, and a snapshot of the same machine live
/// over KDNET (the simulated target on loopback). They trend together on
/// the machine's clock, and the tag that grew ranks first.
#[test]
fn poolmon_log_dump_and_live_snapshot_trend_together() {
    use pooldump_kdnet_sim::SimTarget;
    use pooldump_kit::{Machine, NtBuild, Scenario};

    use std::time::Duration;

    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 61));
    let dir = tempfile::tempdir().unwrap();
    let (dump, symbols) = support::write_dump_and_symbols(&m, dir.path());
    // The log: the machine's table an hour before the dump, with its
    // biggest tag at half its bytes and allocations.
    let grower = poolmon_rows(&m.truth.tags)
        .max_by_key(|t| t.bytes)
        .unwrap()
        .clone();
    let log_path = dir.path().join("poolsnap.log");
    let dump_time = m.truth.kernel.system_time / 10_000_000 - 11_644_473_600;
    write_dated(
        &log_path,
        &poolmon_log_before(&m.truth.tags, (&grower.tag, &grower.pool)),
        std::time::UNIX_EPOCH + Duration::from_secs(dump_time - 3600),
    );

    let (cfg, port) = support::loopback_sim("1.2.3.4");
    let _sim = SimTarget::spawn(m, cfg).unwrap();
    let live = dir.path().join("live.json");
    let spec = format!("port={port},key=1.2.3.4,bind=127.0.0.1");
    let live_s = live.to_str().unwrap();
    let r = uncached(&["snapshot", "--kdnet", &spec, "-o", live_s], &symbols);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);

    let log_s = log_path.to_str().unwrap();
    let r = uncached(
        &["trend", log_s, dump.to_str().unwrap(), live_s, "--json"],
        &symbols,
    );
    assert!(r.status.success(), "{}", &r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let kinds = support::field_strs(&v["points"], "source");
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert_eq!(
        kinds[0],
        log_path.to_str().unwrap(),
        "the log is the oldest"
    );
    assert_eq!(v["axis"], "system-time");
    assert_eq!(v["points"][1]["hours"], 1.0);
    let first = &v["tags"][0];
    assert_eq!(
        (
            first["tag"].as_str().unwrap(),
            first["type"].as_str().unwrap()
        ),
        (grower.tag.as_str(), grower.pool.as_str()),
        "{}",
        v["tags"]
    );
    assert_eq!(first["bytes"][0], grower.bytes / 2);
}
