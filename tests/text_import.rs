//! PoolMon and `!poolused` text as snapshots: the real outputs in
//! ../shared/realworld/ as they are, hand-made texts of each layout, and
//! mixed series (text, dump, snapshot file) that `trend` ranks together.

mod support;

use std::path::{Path, PathBuf};

use pooldump_core::pool::PoolClass;
use pooldump_core::snapshot_text::{FORMATS_TRIED, TextFormat, parse_text};
use support::pooldump;

fn realworld(name: &str) -> Option<PathBuf> {
    let p = support::shared_dir()?.join("realworld").join(name);
    p.is_file()
        .then_some(p.clone())
        .or_else(|| support::missing(&p.display().to_string()))
}

fn row<'a>(
    t: &'a pooldump_core::snapshot_text::TextTable,
    tag: &str,
    pool: PoolClass,
) -> &'a pooldump_core::snapshot::SnapshotRow {
    t.rows
        .iter()
        .find(|r| r.tag_text == tag && r.pool == pool)
        .unwrap_or_else(|| panic!("no {tag} {pool:?} row"))
}

#[test]
fn real_poolused_2_with_tabs_before_descriptions() {
    let Some(p) = realworld("poolused2-live-amd-leak.txt") else {
        return;
    };
    let bytes = std::fs::read(&p).unwrap();
    let i = parse_text(&bytes, "poolused2").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    assert_eq!(i.tables.len(), 1);
    let t = &i.tables[0];
    assert_eq!(t.format, TextFormat::PoolusedSummary);
    let amda = row(t, "amda", PoolClass::NonPaged);
    assert_eq!((amda.diff, amda.bytes), (5_768_754, 1_938_325_232));
    let amda_p = row(t, "amda", PoolClass::Paged);
    assert_eq!((amda_p.diff, amda_p.bytes), (32, 9360));
    assert_eq!(amda.driver, None, "UNKNOWN pooltag");
    assert_eq!(
        row(t, "IoWI", PoolClass::NonPaged).driver.as_deref(),
        Some("nt!io")
    );
    assert_eq!(
        row(t, "HalD", PoolClass::NonPaged).driver.as_deref(),
        Some("hal.dll")
    );
    // 8 tags; IoWI and HalD have no paged row (0 0).
    assert_eq!(t.rows.len(), 8 + 4);
    // The same text saved by PowerShell (UTF-16 with a BOM).
    let mut u16 = vec![0xFF, 0xFE];
    u16.extend(
        String::from_utf8_lossy(&bytes)
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    assert_eq!(parse_text(&u16, "utf16").unwrap().tables, i.tables);
}

#[test]
fn real_poolused_1_verbose_with_total_and_kd_preamble() {
    let Some(p) = realworld("poolused1-verbose-snippets.txt") else {
        return;
    };
    let i = parse_text(&std::fs::read(&p).unwrap(), "poolused1").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    assert_eq!(i.tables.len(), 2, "two excerpts, two tables");
    let a = &i.tables[0];
    assert_eq!(a.format, TextFormat::PoolusedVerbose);
    let appt = row(a, "APpt", PoolClass::Paged);
    assert_eq!(
        (appt.allocs, appt.frees, appt.diff, appt.bytes),
        (109_457, 107_115, 2342, 255_952)
    );
    assert_eq!(
        row(a, "ALPC", PoolClass::NonPaged).driver.as_deref(),
        Some("nt!alpc")
    );
    assert_eq!(row(a, "-UMD", PoolClass::NonPaged).bytes, 48);
    let b = &i.tables[1];
    assert_eq!(b.rows.len(), 1);
    let (np, pg) = b.total.unwrap();
    assert_eq!((np.allocs, np.bytes, pg.bytes), (1, 112, 0));
}

#[test]
fn real_poolmon_screens_display_and_log() {
    let Some(p) = realworld("poolmon-docs-examples.txt") else {
        return;
    };
    let i = parse_text(&std::fs::read(&p).unwrap(), "poolmon").unwrap();
    let formats: Vec<TextFormat> = i.tables.iter().map(|t| t.format).collect();
    use TextFormat::{PoolmonDisplay as D, PoolmonLog as L};
    assert_eq!(formats, [D, D, D, D, D, D, L]);
    // The file's `##` headings are not PoolMon's: reported by number.
    let lines: Vec<usize> = i.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [2, 17, 37, 44, 59, 72, 73, 74]);
    assert!(i.problems.iter().all(|p| p.text.starts_with("##")));
    let io = row(&i.tables[0], "Io  ", PoolClass::NonPaged);
    assert_eq!(
        (io.allocs, io.frees, io.diff, io.bytes),
        (1_021_112, 1_020_985, 127, 91_912)
    );
    assert_eq!(
        row(&i.tables[1], "NtFB", PoolClass::Paged)
            .driver
            .as_deref(),
        Some("ntfs.sys")
    );
    assert_eq!(row(&i.tables[2], "1MEM", PoolClass::NonPaged).driver, None);
    assert_eq!(
        row(&i.tables[3], "IpEQ", PoolClass::NonPaged)
            .driver
            .as_deref(),
        Some("ipsec.sys")
    );
    assert_eq!(
        row(&i.tables[3], "IpIO", PoolClass::NonPaged)
            .driver
            .as_deref(),
        Some("ipsec")
    );
    // Before and after a print job: 6 blocks, 4992 bytes leaked.
    let before = row(&i.tables[4], "Drsd", PoolClass::Paged);
    let after = row(&i.tables[5], "Drsd", PoolClass::Paged);
    assert_eq!(after.bytes - before.bytes, 4992);
    assert_eq!(after.diff - before.diff, 6);
    let thre = row(&i.tables[6], "Thre", PoolClass::NonPaged);
    assert_eq!((thre.diff, thre.bytes), (3749, 13_179_648));
    assert_eq!(thre.driver.as_deref(), Some("nt!ps"));
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
    let files = [
        (
            "a-0700.txt",
            summary("Mon Nov  2 16:00:00.000 2026 (UTC + 9:00)", 9120),
        ),
        ("b-0800.txt", legacy),
        ("c-0900.txt", verbose.to_string()),
    ];
    let mut out = Vec::new();
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        out.push(p);
    }
    // Legacy and verbose texts state no time: their file times do.
    let set = |p: &Path, rfc: &str| {
        let t = humantime::parse_rfc3339(rfc).unwrap();
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    set(&out[1], "2026-11-02T08:00:00Z");
    set(&out[2], "2026-11-02T09:00:00Z");
    out
}

#[test]
fn trend_over_three_poolused_texts_and_a_dump_ranks_the_growing_tag_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = poolused_series(dir.path());
    let root = support::repo_root().join("testdata/sample");
    files.push(root.join("MEMORY.DMP"));
    let mut args: Vec<String> = vec!["trend".into()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    args.extend(
        [
            "--symbol-path",
            root.join("symbols").to_str().unwrap(),
            "--offline",
            "--no-cache",
            "--json",
        ]
        .map(String::from),
    );
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = pooldump(&a);
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
    let hours: Vec<f64> = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["hours"].as_f64().unwrap())
        .collect();
    assert_eq!(hours, [0.0, 1.0, 2.0, 2.5]);
    // Flat tags are not growth.
    let cm = v["tags"]
        .as_array()
        .unwrap()
        .iter()
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
    std::fs::write(
        &log,
        // The sample's table an hour earlier: Leak at half its bytes.
        " Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc\n\n \
         CM   Paged     50020            50000              20   39120           1956\n \
         CaAl Nonp          4                0               4    1600            400\n \
         File Nonp      12370            12345              25   10528            421\n \
         File Paged     90040            90000              40    9616            240\n \
         FsFl Paged         7                4               3   76084          25361\n \
         Irp  Nonp    2000016          2000000              16    4864            304\n \
         Leak Nonp         63                3              60   18240            304\n \
         LkBf Nonp          7                1               6   73728          12288\n \
         MmLd Nonp          4                0               4    1040            260\n \
         MmSt Paged      7012             7000              12   16592           1382\n \
         NSbf Nonp         18               10               8   94213          11776\n \
         Ntfx Paged    400030           400000              30   24048            801\n \
         Proc Nonp        316              300              16   41680           2605\n",
    )
    .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_modified(humantime::parse_rfc3339("2026-11-02T08:30:00Z").unwrap())
        .unwrap();
    let snap = dir.path().join("later.json");
    let sym = root.join("symbols");
    let r = pooldump(&[
        "snapshot",
        root.join("MEMORY.DMP").to_str().unwrap(),
        "--symbol-path",
        sym.to_str().unwrap(),
        "--offline",
        "--no-cache",
        "-o",
        snap.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", &r.stderr);
    let r = pooldump(&[
        "diff",
        log.to_str().unwrap(),
        root.join("MEMORY.DMP").to_str().unwrap(),
        "--symbol-path",
        sym.to_str().unwrap(),
        "--offline",
        "--no-cache",
    ]);
    let text = &r.stdout;
    assert!(r.status.success(), "{}", &r.stderr);
    let leak = text
        .lines()
        .find(|l| l.contains("Leak"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(leak.contains("18240") && leak.contains("+18240"), "{leak}");
    let r = pooldump(&[
        "trend",
        log.to_str().unwrap(),
        root.join("MEMORY.DMP").to_str().unwrap(),
        snap.to_str().unwrap(),
        "--symbol-path",
        sym.to_str().unwrap(),
        "--offline",
        "--no-cache",
        "--json",
    ]);
    assert!(r.status.success(), "{}", &r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["points"].as_array().unwrap().len(), 3);
    assert_eq!(v["points"][0]["source"], log.to_str().unwrap());
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
    let rows: Vec<pooldump_kit::truth::TagUsage> = m
        .truth
        .tags
        .iter()
        .filter(|t| {
            t.reported_allocs > 0
                && !matches!(t.slot, pooldump_kit::truth::TrackerSlot::Overflow)
                && t.tag.len() <= 4
                && t.tag.bytes().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .collect();
    let grower = rows.iter().max_by_key(|t| t.bytes).unwrap().clone();
    let mut log = String::from(
        " Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc\n\n",
    );
    for t in &rows {
        let (diff, bytes) = if t.tag == grower.tag && t.pool == grower.pool {
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
    let log_path = dir.path().join("poolsnap.log");
    std::fs::write(&log_path, log).unwrap();
    let dump_time = m.truth.kernel.system_time / 10_000_000 - 11_644_473_600;
    std::fs::File::options()
        .write(true)
        .open(&log_path)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(dump_time - 3600))
        .unwrap();

    let (cfg, port) = support::loopback_sim("1.2.3.4");
    let _sim = SimTarget::spawn(m, cfg).unwrap();
    let live = dir.path().join("live.json");
    let spec = format!("port={port},key=1.2.3.4,bind=127.0.0.1");
    let sym = symbols.to_str().unwrap();
    let r = pooldump(&[
        "snapshot",
        "--kdnet",
        &spec,
        "-o",
        live.to_str().unwrap(),
        "--symbol-path",
        sym,
        "--offline",
        "--no-cache",
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);

    let r = pooldump(&[
        "trend",
        log_path.to_str().unwrap(),
        dump.to_str().unwrap(),
        live.to_str().unwrap(),
        "--symbol-path",
        sym,
        "--offline",
        "--no-cache",
        "--json",
    ]);
    assert!(r.status.success(), "{}", &r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let kinds: Vec<&str> = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["source"].as_str().unwrap())
        .collect();
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
