//! `pooldump snapshot` and `pooldump diff` on kit dumps: the snapshot's
//! rows and clocks are the kit's ground truth, the JSON round-trips, a dump
//! compared with itself shows no change, the changes between two moments
//! of one machine are the truth's, and bad snapshot files are refused by
//! name.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pooldump_core::snapshot::Snapshot;
use pooldump_kit::series::{Series, SeriesSpec, WrittenSeries};
use pooldump_kit::truth::TagUsage;
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
use serde_json::Value;
use support::pooldump;

/// A kit machine written as a dump with its symbol store.
struct Kit {
    dir: tempfile::TempDir,
    dump: PathBuf,
    symbols: PathBuf,
    machine: Machine,
}

fn kit(build: NtBuild, seed: u64) -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let m = Machine::build(&Scenario::small(build, seed));
    let (dump, symbols) = support::write_dump_and_symbols(&m, dir.path());
    Kit {
        dir,
        dump,
        symbols,
        machine: m,
    }
}

fn sym_args(symbols: &Path) -> Vec<String> {
    vec![
        "--symbol-path".into(),
        symbols.display().to_string(),
        "--offline".into(),
        "--no-cache".into(),
    ]
}

fn run_ok(args: &[String]) -> String {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = pooldump(&a);
    assert_eq!(r.code(), Some(0), "pooldump {}: {}", a.join(" "), r.stderr);
    r.stdout
}

fn snapshot_to(dump: &Path, symbols: &Path, out: &Path) -> Snapshot {
    let mut a = vec![
        "snapshot".to_string(),
        dump.display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ];
    a.extend(sym_args(symbols));
    run_ok(&a);
    Snapshot::from_json(&std::fs::read(out).unwrap(), "snapshot").unwrap()
}

/// (tag value, "Paged"/"Nonp") -> truth row.
fn truth_rows(tags: &[TagUsage]) -> BTreeMap<(u32, String), &TagUsage> {
    tags.iter()
        .filter(|t| t.reported_allocs > 0 || t.reported_frees > 0 || t.bytes > 0)
        .map(|t| ((t.tag_value, t.pool.clone()), t))
        .collect()
}

#[test]
fn snapshot_rows_and_clocks_are_the_kit_truth() {
    for (build, seed) in [(NtBuild::Win10_19041, 31), (NtBuild::Win7_7601, 32)] {
        let k = kit(build, seed);
        let t = &k.machine.truth;
        let s = snapshot_to(&k.dump, &k.symbols, &k.dir.path().join("s.json"));
        assert_eq!(s.schema, "pooldump.snapshot/2");
        assert_eq!(s.kernel.build, t.build_number);
        assert_eq!(s.kernel.kern_base.0, t.kernel.kern_base);
        assert_eq!(s.kernel.processors, u64::from(t.cpus));
        assert_eq!(
            s.kernel.pdb.as_deref(),
            Some(format!("{} {}", t.kernel.pdb_name, t.kernel.store_key).as_str())
        );
        assert_eq!(s.time.uptime_100ns, Some(t.kernel.interrupt_time));
        assert_eq!(s.time.system_time_filetime, Some(t.kernel.system_time));
        assert_eq!(
            serde_json::to_value(s.time.clock_source).unwrap(),
            "kuser-shared-data"
        );
        let want = truth_rows(&t.tags);
        let got: BTreeMap<(u32, String), _> = s
            .rows
            .iter()
            .filter(|r| !r.overflow)
            .map(|r| ((r.tag.value(), r.pool.poolmon().to_string()), r))
            .collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{build:?}"
        );
        for (key, w) in &want {
            let g = got[key];
            assert_eq!(
                (g.allocs, g.frees, g.bytes),
                (w.reported_allocs, w.reported_frees, w.bytes),
                "{build:?} {}",
                w.tag
            );
            assert_eq!(g.diff, w.reported_allocs.saturating_sub(w.reported_frees));
        }
        let np: u64 = want
            .values()
            .filter(|w| w.pool == "Nonp")
            .map(|w| w.bytes)
            .sum();
        assert_eq!(s.totals.nonpaged.bytes, np);
    }
}

#[test]
fn snapshot_json_round_trips_and_a_dump_against_itself_is_empty() {
    let k = kit(NtBuild::Win10_19041, 33);
    let path = k.dir.path().join("s.json");
    let s = snapshot_to(&k.dump, &k.symbols, &path);
    // The file is exactly what the model writes back.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(s.to_json(), text);
    let again = Snapshot::from_json(s.to_json().as_bytes(), "again").unwrap();
    assert_eq!(again, s);
    // Standard output gives the same document (host time aside).
    let mut a = vec!["snapshot".to_string(), k.dump.display().to_string()];
    a.extend(sym_args(&k.symbols));
    let mut stdout = Snapshot::from_json(run_ok(&a).as_bytes(), "stdout").unwrap();
    stdout.time.taken_unix = s.time.taken_unix;
    assert_eq!(stdout, s);

    let dump = k.dump.display().to_string();
    let snap = path.display().to_string();
    for (a, b) in [(&dump, &dump), (&dump, &snap), (&snap, &snap)] {
        let mut args = vec!["diff".to_string(), a.clone(), b.clone(), "--json".into()];
        args.extend(sym_args(&k.symbols));
        let d: Value = serde_json::from_str(&run_ok(&args)).unwrap();
        assert_eq!(d["schema"], "pooldump.diff/2");
        assert_eq!(d["rows"], Value::Array(vec![]), "{a} vs {b}");
        assert_eq!(d["same_boot"], true);
        assert_eq!(d["elapsed_secs"], 0.0);
        let mut args = vec!["diff".to_string(), a.clone(), b.clone()];
        args.extend(sym_args(&k.symbols));
        assert!(run_ok(&args).contains("No tag changed"));
    }
}

fn series(steps: usize, seed: u64) -> (tempfile::TempDir, WrittenSeries) {
    let dir = tempfile::tempdir().unwrap();
    let w = Series::new(&SeriesSpec {
        steps,
        ..SeriesSpec::new(NtBuild::Win10_19041, seed)
    })
    .write(dir.path(), DumpKind::KernelBitmap)
    .unwrap();
    (dir, w)
}

#[test]
fn diff_between_two_moments_is_the_truth_and_ranked_by_growth() {
    let (_dir, w) = series(4, 41);
    let (i, j) = (0, 3);
    let before = truth_rows(&w.truth.steps[i].tags);
    let after = truth_rows(&w.truth.steps[j].tags);
    let mut args = vec![
        "diff".to_string(),
        w.dumps[i].display().to_string(),
        w.dumps[j].display().to_string(),
        "--json".into(),
    ];
    args.extend(sym_args(&w.symbols));
    let d: Value = serde_json::from_str(&run_ok(&args)).unwrap();
    assert_eq!(d["same_boot"], true);
    assert_eq!(
        d["elapsed_secs"].as_f64().unwrap(),
        ((j - i) as u64 * w.truth.spec.interval_secs) as f64
    );
    // Every (tag, type) whose counters moved, with the truth's numbers.
    let mut want: Vec<(String, String, i64, i64, i64)> = Vec::new();
    let keys: std::collections::BTreeSet<_> = before.keys().chain(after.keys()).collect();
    for k in keys {
        let b = before.get(k);
        let a = after.get(k);
        let f = |r: Option<&&TagUsage>, g: fn(&TagUsage) -> u64| r.map_or(0, |r| g(r)) as i64;
        let da = f(a, |r| r.reported_allocs) - f(b, |r| r.reported_allocs);
        let df = f(a, |r| r.reported_frees) - f(b, |r| r.reported_frees);
        let db = f(a, |r| r.bytes) - f(b, |r| r.bytes);
        if da != 0 || df != 0 || db != 0 {
            let tag = a.or(b).unwrap().tag.clone();
            want.push((tag, k.1.clone(), da, df, db));
        }
    }
    let rows = d["rows"].as_array().unwrap();
    assert_eq!(rows.len(), want.len(), "{rows:#?}");
    for (tag, pool, da, df, db) in &want {
        let r = rows
            .iter()
            .find(|r| r["tag"] == tag.as_str() && r["type"] == pool.as_str())
            .unwrap_or_else(|| panic!("{tag} {pool} missing"));
        assert_eq!(r["allocs"]["delta"], *da, "{tag}");
        assert_eq!(r["frees"]["delta"], *df, "{tag}");
        assert_eq!(r["bytes"]["delta"], *db, "{tag}");
    }
    // Ranked by bytes growth, largest first (the truth decides the order).
    let deltas: Vec<i64> = rows
        .iter()
        .map(|r| r["bytes"]["delta"].as_i64().unwrap())
        .collect();
    assert!(deltas.windows(2).all(|w| w[0] >= w[1]), "{deltas:?}");
    let top = want.iter().max_by_key(|w| w.4).unwrap();
    assert_eq!(rows[0]["tag"], top.0.as_str());

    // PoolMon's text columns: value, then the change in parentheses.
    let mut args = vec![
        "diff".to_string(),
        w.dumps[i].display().to_string(),
        w.dumps[j].display().to_string(),
        "--sort".into(),
        "S".into(),
        "--pool".into(),
        "nonpaged".into(),
    ];
    args.extend(sym_args(&w.symbols));
    let text = run_ok(&args);
    let leak = w.truth.leak.tag.trim_end();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(leak))
        .unwrap_or_else(|| panic!("{text}"));
    let per = i64::from(w.truth.spec.leak_per_step) * (j - i) as i64;
    assert!(line.contains(&format!("(+{per})")), "{line}");
    assert!(!text.contains("Paged "), "--pool nonpaged: {text}");
}

#[test]
fn bad_snapshot_files_are_refused_by_name() {
    let k = kit(NtBuild::Win10_19041, 34);
    let good = k.dir.path().join("good.json");
    let s = snapshot_to(&k.dump, &k.symbols, &good);
    let write = |name: &str, bytes: &[u8]| {
        let p = k.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let newer = write(
        "newer.json",
        s.to_json()
            .replace("pooldump.snapshot/2", "pooldump.snapshot/3")
            .as_bytes(),
    );
    let mut dup = s.clone();
    dup.rows.push(dup.rows[0].clone());
    let dup = write("dup.json", dup.to_json().as_bytes());
    let bad_type = write(
        "type.json",
        s.to_json().replacen("\"Paged\"", "\"Pagd\"", 1).as_bytes(),
    );
    let truncated = write("cut.json", &s.to_json().as_bytes()[..200]);
    let neither = write("junk.bin", b"\x00\x01 not a dump");
    for (p, why) in [
        (&newer, "pooldump.snapshot/2"),
        (&dup, "two rows"),
        (&bad_type, "Pagd"),
        (&truncated, "not a pooldump snapshot"),
        (&neither, "neither a crash dump"),
    ] {
        let r = pooldump(&["diff", good.to_str().unwrap(), p.to_str().unwrap()]);
        assert_eq!(r.code(), Some(1), "{}", p.display());
        assert!(
            r.stderr.contains(&p.display().to_string()) && r.stderr.contains(why),
            "{}: {}",
            p.display(),
            r.stderr
        );
        assert!(!r.stderr.contains("internal error"), "{}", r.stderr);
    }
}

#[test]
fn clocks_fall_back_to_the_dump_header() {
    use pooldump_kit::machine::KUSER_SHARED_DATA;
    // (1) KUSER_SHARED_DATA not in the dump; (2) caught mid-update
    // (High1Time != High2Time): both fall back to the header's clocks.
    for torn in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 35));
        if torn {
            let off =
                m.m.offset_of("_KUSER_SHARED_DATA", "InterruptTime.High2Time");
            m.asp.write_u32(&mut m.mem, KUSER_SHARED_DATA + off, 0xDEAD);
        } else {
            m.asp.set_pte(&mut m.mem, KUSER_SHARED_DATA, 0, false);
        }
        let (dump, symbols) = support::write_dump_and_symbols(&m, dir.path());
        let s = snapshot_to(&dump, &symbols, &dir.path().join("s.json"));
        assert_eq!(
            serde_json::to_value(s.time.clock_source).unwrap(),
            "dump-header",
            "torn={torn}"
        );
        assert_eq!(s.time.uptime_100ns, Some(m.truth.kernel.interrupt_time));
        assert_eq!(
            s.time.system_time_filetime,
            Some(m.truth.kernel.system_time)
        );
        assert_eq!(s.kernel.physical_pages, None);
    }
}
