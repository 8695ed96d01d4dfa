//! `pooldump batch` over a kit fleet: 20 machines over the ten
//! committed builds (eight build numbers: 19041 with full and with
//! publics-only symbols, 22000 in revisions 2538 and 318), 10 dumps each
//! (200 dumps), a leak on 15 of them (`Leak`), a faster one on one machine
//! only (`Lone`), five corrupt files and one copy of a dump under another
//! name.
//!
//! - a batch killed mid-run resumes: the rerun skips what was committed,
//!   removes what the kill left half-written, and the output ends with every
//!   input exactly once and every dump's tag rows once;
//! - DuckDB (the Python package in `target/py-venv`, or `POOLDUMP_PY_VENV`;
//!   CI-or-skip) reads the Parquet and the "top growing tags across dumps"
//!   query of docs/batch.md ranks the fleet-wide leaker first;
//! - the rows equal `pooldump analyze --json`'s for the same dump, and the
//!   NDJSON output holds them too (a second, two-machine fleet).
//!
//! Every expectation comes from the kit's fleet truth. Each test writes
//! its fleet into its own temporary directory, deleted when it ends.

use crate::support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::{Array, RecordBatch, StringArray, UInt64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pooldump_kit::fleet::{FleetSpec, WrittenFleet, write_fleet};
use serde_json::Value;
use support::{Finished, missing, pooldump, pooldump_command, repo_root, run_bounded};

struct Fixture {
    /// Dropped (deleted) when the test ends: a fleet is 700 MiB.
    dir: tempfile::TempDir,
    fleet: WrittenFleet,
    /// Every input file: the fleet's dumps, the corrupt files, the copy.
    inputs: Vec<PathBuf>,
    /// A dump, and a copy of it under another name.
    original: PathBuf,
    copy: PathBuf,
}

/// `machines` kit machines over the committed builds, `steps` dumps each,
/// the kit's corrupt files, and a copy of machine 1's third dump.
fn fixture(machines: usize, steps: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let fleet = write_fleet(
        &FleetSpec::new(machines, steps, 17),
        &dir.path().join("fleet"),
    )
    .unwrap();
    let copy = dir.path().join("fleet/copies/same-as-m001-step-02.dmp");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let original = fleet
        .truth
        .dumps
        .iter()
        .find(|d| d.machine == 1 && d.step == 2)
        .unwrap()
        .path
        .clone();
    std::fs::copy(&original, &copy).unwrap();
    let mut inputs: Vec<PathBuf> = fleet.truth.dumps.iter().map(|d| d.path.clone()).collect();
    inputs.extend(fleet.truth.corrupt.iter().map(|c| c.path.clone()));
    inputs.push(copy.clone());
    Fixture {
        dir,
        fleet,
        inputs,
        original,
        copy,
    }
}

fn batch_cmd(f: &Fixture, out: &Path, extra: &[&str]) -> Command {
    let mut c = pooldump_command(&["batch"]);
    c.arg(f.dir.path().join("fleet"))
        .arg("-o")
        .arg(out)
        .arg("--symbol-path")
        .arg(&f.fleet.symbols)
        .args(["--offline", "--no-cache"])
        .args(extra);
    c
}

fn batch(f: &Fixture, out: &Path, extra: &[&str]) -> Finished {
    run_bounded(&mut batch_cmd(f, out, extra), Duration::from_secs(600))
}

/// Every record batch of the Parquet files in `out/table`, read with the
/// parquet crate's own reader.
fn parquet_batches(out: &Path, table: &str) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for e in std::fs::read_dir(out.join(table)).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "parquet") {
            continue;
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap())
            .unwrap()
            .build()
            .unwrap();
        batches.extend(reader.map(Result::unwrap));
    }
    batches
}

/// The column `name` of `b`, of type `A`.
fn column<A: Array + Clone + 'static>(b: &RecordBatch, name: &str) -> A {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<A>()
        .unwrap_or_else(|| panic!("column {name} has another type"))
        .clone()
}

/// The values of the text columns `names` in every row of `out/table`.
fn text_rows<const N: usize>(out: &Path, table: &str, names: [&str; N]) -> Vec<[String; N]> {
    let mut rows = Vec::new();
    for b in parquet_batches(out, table) {
        let cols = names.map(|n| column::<StringArray>(&b, n));
        for i in 0..b.num_rows() {
            rows.push(std::array::from_fn(|c| cols[c].value(i).to_string()));
        }
    }
    rows
}

/// (dump_id, path, status) of every dumps row.
fn dumps_rows(out: &Path) -> Vec<(String, String, String)> {
    text_rows(out, "dumps", ["dump_id", "path", "status"])
        .into_iter()
        .map(|[id, path, status]| (id, path, status))
        .collect()
}

/// A tags row's (path, tag, type).
type TagKey = (String, String, String);

/// Every tags row's key, and each dumps row's `tags` count by path.
fn tags_rows(out: &Path) -> (Vec<TagKey>, HashMap<String, u64>) {
    let rows = text_rows(out, "tags", ["path", "tag", "type"])
        .into_iter()
        .map(|[path, tag, ty]| (path, tag, ty))
        .collect();
    let mut counts = HashMap::new();
    for b in parquet_batches(out, "dumps") {
        let path = column::<StringArray>(&b, "path");
        let tags = column::<UInt64Array>(&b, "tags");
        for i in 0..b.num_rows() {
            counts.insert(path.value(i).to_string(), tags.value(i));
        }
    }
    (rows, counts)
}

fn wait_for_a_part(out: &Path, child: &mut std::process::Child) {
    let start = Instant::now();
    loop {
        let parts = std::fs::read_dir(out.join("dumps"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
                    .count()
            })
            .unwrap_or(0);
        if parts > 0 {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the batch ended before a part was committed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no part committed in 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn killed_batch_resumes_then_duckdb_ranks_the_fleet_leaker_first() {
    // 200 dumps over every committed build, as the fleet of docs/batch.md.
    let f = &fixture(20, 10);
    let total = f.inputs.len();
    let out = f.dir.path().join("results");

    // 1. A batch killed after its first part.
    let mut child = batch_cmd(f, &out, &["--jobs", "1", "--commit-every", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_a_part(&out, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let before = dumps_rows(&out);
    assert!(
        !before.is_empty() && before.len() < total,
        "{} of {total} rows after the kill",
        before.len()
    );
    // What a kill between the two renames, or during a write, leaves.
    let orphan = out.join("tags/part-0-99999.parquet");
    std::fs::write(&orphan, b"half").unwrap();
    let tmp = out.join("dumps/.part-0-99998.parquet.tmp");
    std::fs::write(&tmp, b"half").unwrap();

    // 2. The rerun finishes the job and does nothing twice.
    let r = batch(f, &out, &["--jobs", "2"]);
    assert_eq!(r.code(), Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains(&format!("{} dump(s) already done, skipped", before.len())),
        "{}",
        r.stderr
    );
    assert!(!orphan.exists() && !tmp.exists(), "{}", r.stderr);
    assert!(r.stderr.contains("part-0-99999.parquet"), "{}", r.stderr);
    let rows = dumps_rows(&out);
    let paths: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    let unique: HashSet<&str> = paths.iter().copied().collect();
    assert_eq!(unique.len(), paths.len(), "a dump was recorded twice");
    let want: HashSet<String> = f.inputs.iter().map(|p| p.display().to_string()).collect();
    let got: HashSet<String> = unique.iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want);
    // No dump's tag rows twice (an orphaned tags part would repeat them),
    // and each dump's rows as many as its dumps row says.
    let (tags, counts) = tags_rows(&out);
    let unique: HashSet<&TagKey> = tags.iter().collect();
    assert_eq!(unique.len(), tags.len(), "a tag row was written twice");
    let mut per_path: HashMap<&str, u64> = HashMap::new();
    for t in &tags {
        *per_path.entry(t.0.as_str()).or_default() += 1;
    }
    for (path, n) in &counts {
        assert_eq!(
            per_path.get(path.as_str()).copied().unwrap_or(0),
            *n,
            "{path}"
        );
    }
    assert_eq!(per_path.len(), f.fleet.truth.dumps.len());
    // Everything committed before the kill is untouched (same rows).
    for b in &before {
        assert!(rows.contains(b), "{b:?} changed");
    }
    let analysed_again = total - before.len();
    assert!(
        r.stdout.starts_with(&format!("{total} input(s): ")),
        "{}",
        r.stdout
    );
    let status: BTreeMap<&str, usize> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.2.as_str()).or_default() += 1;
        m
    });
    assert_eq!(
        status,
        BTreeMap::from([
            ("duplicate", 1),
            ("error", f.fleet.truth.corrupt.len()),
            ("ok", f.fleet.truth.dumps.len())
        ])
    );
    // The copy and its original: one analysed, the other (whichever came
    // second) recorded as a duplicate of it, with the same key.
    let original = f.original.display().to_string();
    let copy = f.copy.display().to_string();
    let mut pair: Vec<&(String, String, String)> = rows
        .iter()
        .filter(|r| r.1 == copy || r.1 == original)
        .collect();
    pair.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(pair.len(), 2);
    assert_eq!(
        (pair[0].2.as_str(), pair[1].2.as_str()),
        ("duplicate", "ok")
    );
    assert_eq!(pair[0].0, pair[1].0);
    assert!(analysed_again > 0);

    // 3. A third run has nothing to do.
    let r = batch(f, &out, &[]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains("0 analysed (0 failed)") && r.stdout.contains("0 part(s) written"),
        "{}",
        r.stdout
    );

    // 4. DuckDB on the output.
    duckdb_checks(f, &out);
}

/// The DuckDB queries of docs/batch.md on `out`.
fn duckdb_checks(f: &Fixture, out: &Path) {
    let Some(py) = duckdb_python() else {
        return;
    };
    let t = &f.fleet.truth;
    let query = doc_query();
    let script = format!(
        r#"
import duckdb, json, sys
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
out = sys.argv[1]
top = con.sql("""{query}""".replace("results/", out + "/")).fetchall()
errors = con.sql(f"SELECT path, error FROM '{{out}}/dumps/*.parquet' WHERE status = 'error' ORDER BY path").fetchall()
builds = con.sql(f"SELECT DISTINCT build, pdb_key FROM '{{out}}/tags/*.parquet' ORDER BY ALL").fetchall()
per_dump = con.sql(f"SELECT min(c), max(c) FROM (SELECT path, count(*) AS c FROM '{{out}}/tags/*.parquet' GROUP BY path)").fetchall()
print(json.dumps({{"top": top, "errors": errors, "builds": builds, "per_dump": per_dump}}, default=str))
"#
    );
    let r = run_bounded(
        Command::new(&py).arg("-c").arg(&script).arg(out),
        Duration::from_secs(300),
    );
    assert_eq!(r.code(), Some(0), "duckdb:\n{}\n{}", r.stdout, r.stderr);
    let v: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let top = v["top"].as_array().unwrap();
    println!("top growing tags: {top:?}");
    // Rank 1: the fleet-wide leaker, growing on exactly its machines.
    assert_eq!(top[0][0], t.leaker.as_str(), "{top:?}");
    assert_eq!(top[0][1], t.leaker_pool.as_str(), "{top:?}");
    assert_eq!(
        top[0][2].as_u64(),
        Some(t.leaking_machines.len() as u64),
        "{top:?}"
    );
    assert_eq!(top[0][6], "leakydrv.sys", "{top:?}");
    // The local leaker grows faster, on one machine: ranked below.
    let lone = top
        .iter()
        .position(|r| r[0] == t.local_leaker.as_str())
        .expect("the local leaker is listed");
    assert!(lone > 0);
    assert_eq!(top[lone][2].as_u64(), Some(1));
    assert!(
        top[lone][5].as_f64().unwrap() > top[0][5].as_f64().unwrap(),
        "the local leaker must be the faster one: {top:?}"
    );
    // Nothing else grows steadily on any machine (the burst is a step,
    // the noisy tags wander).
    for r in top
        .iter()
        .skip(1)
        .filter(|r| r[0] != t.local_leaker.as_str())
    {
        assert_eq!(r[2].as_u64(), Some(0), "{r:?}");
    }
    // Each corrupt file is an error row saying what is wrong.
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), t.corrupt.len());
    for e in errors {
        assert!(!e[1].as_str().unwrap().is_empty(), "{e:?}");
        assert!(
            e[1].as_str().unwrap().contains(e[0].as_str().unwrap()),
            "the error names the file: {e:?}"
        );
    }
    // Every committed build, told apart by nt's PDB where two share a
    // build number (19041 with full and publics-only PDBs; 22000.2538 and
    // 22000.318).
    let builds: HashSet<(u64, String)> = support::items(&v["builds"])
        .map(|b| (b[0].as_u64().unwrap(), b[1].as_str().unwrap().to_string()))
        .collect();
    let want: HashSet<(u64, String)> = t
        .dumps
        .iter()
        .map(|d| {
            let m = d.build.manifest();
            (u64::from(m.build), m.pdb.store_key.clone())
        })
        .collect();
    assert_eq!(want.len(), t.spec.builds.len(), "one PDB per build");
    assert_eq!(builds, want);
    assert!(v["per_dump"][0][0].as_u64().unwrap() >= 10, "{v}");
}

/// The first ```sql block of docs/batch.md after its "top growing" marker.
fn doc_query() -> String {
    let md = std::fs::read_to_string(repo_root().join("docs/batch.md")).unwrap();
    let from = md
        .find("<!-- top growing tags: run by tests/cli/batch_fleet.rs -->")
        .expect("docs/batch.md has the query");
    let rest = &md[from..];
    let start = rest.find("```sql\n").unwrap() + 7;
    let end = rest[start..].find("```").unwrap();
    rest[start..start + end]
        .trim()
        .trim_end_matches(';')
        .to_string()
}

/// A Python with the duckdb package, under the CI-or-skip rule.
fn duckdb_python() -> Option<PathBuf> {
    let venv = std::env::var_os("POOLDUMP_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/py-venv"));
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(py)
    } else {
        missing(&format!(
            "DuckDB's Python package in {} (set POOLDUMP_PY_VENV, or: python3 -m venv target/py-venv && target/py-venv/bin/pip install duckdb)",
            venv.display()
        ))
    }
}

/// `pooldump analyze --json` rows of one dump, by (tag, type).
fn analyze_rows(f: &Fixture, dump: &Path) -> HashMap<(String, String), Value> {
    let v = pooldump(&[
        "analyze",
        dump.to_str().unwrap(),
        "--symbol-path",
        f.fleet.symbols.to_str().unwrap(),
        "--offline",
        "--no-cache",
        "--json",
    ])
    .json();
    support::items(&v["rows"])
        .map(|r| {
            (
                (
                    r["tag"].as_str().unwrap().to_string(),
                    r["type"].as_str().unwrap().to_string(),
                ),
                r.clone(),
            )
        })
        .collect()
}

#[test]
fn ndjson_rows_equal_analyze_and_formats_do_not_mix() {
    let f = &fixture(2, 5);
    let out = f.dir.path().join("results-ndjson");
    // Two machines' directories and the corrupt files, by glob and by dir.
    let m0 = f.dir.path().join("fleet/m000-*");
    let r = pooldump(&[
        "batch",
        m0.to_str().unwrap(),
        f.dir.path().join("fleet/corrupt").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
        "ndjson",
        "--symbol-path",
        f.fleet.symbols.to_str().unwrap(),
        "--offline",
        "--no-cache",
    ]);
    assert_eq!(r.code(), Some(0), "{}\n{}", r.stdout, r.stderr);
    let lines = |table: &str| -> Vec<Value> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(out.join(table)).unwrap() {
            let p = e.unwrap().path();
            for l in std::fs::read_to_string(&p).unwrap().lines() {
                v.push(serde_json::from_str(l).unwrap());
            }
        }
        v
    };
    let dumps = lines("dumps");
    let m0_dumps: Vec<_> = f
        .fleet
        .truth
        .dumps
        .iter()
        .filter(|d| d.machine == 0)
        .collect();
    assert_eq!(dumps.len(), m0_dumps.len() + f.fleet.truth.corrupt.len());
    let tags = lines("tags");
    // One dump's rows against `pooldump analyze --json`.
    let d = m0_dumps[3];
    let want = analyze_rows(f, &d.path);
    let got: Vec<&Value> = tags
        .iter()
        .filter(|t| t["path"] == d.path.display().to_string().as_str())
        .collect();
    assert_eq!(got.len(), want.len());
    for g in got {
        let key = (
            g["tag"].as_str().unwrap().to_string(),
            g["type"].as_str().unwrap().to_string(),
        );
        let w = &want[&key];
        for (col, wcol) in [
            ("allocs", "allocs"),
            ("frees", "frees"),
            ("diff", "diff"),
            ("bytes", "bytes"),
            ("per_alloc", "per_alloc"),
            ("mapped_driver", "driver"),
        ] {
            assert_eq!(g[col], w[wcol], "{key:?} {col}");
        }
        assert_eq!(g["build"].as_u64(), Some(d.build.number() as u64));
        assert_eq!(g["kern_base"].as_u64(), Some(d.kern_base));
        // The dump's SystemTime, as RFC 3339.
        assert!(g["system_time"].as_str().unwrap().starts_with("20"), "{g}");
    }
    // The machine's dumps share a boot id; the ids differ across machines.
    let boots: HashSet<&str> = tags.iter().filter_map(|t| t["boot_id"].as_str()).collect();
    assert_eq!(boots.len(), 1, "{boots:?}");
    // Parquet into an NDJSON directory is refused, saying how to resume.
    let r = batch(f, &out, &[]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("--format ndjson"), "{}", r.stderr);
}
