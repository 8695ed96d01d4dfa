//! The Python bindings (crates/python) as a Python user gets them: `pip
//! install ./crates/python` (maturin) into the venv `target/py-venv`, then
//!
//! - the pytest suite (crates/python/tests) against a kit machine's ground
//!   truth;
//! - docs/python.md's example on the bundled sample, printing exactly the
//!   output the page shows, which agrees with the sample's truth;
//! - docs/python.md's engine recipe without a cluster (a thread pool and
//!   DuckDB on the Arrow tables) over a kit fleet: docs/batch.md's query
//!   ranks the fleet-wide leaker first.
//!
//! The venv needs maturin, pyarrow, pytest and duckdb (`.ci/run` makes it);
//! `POOLDUMP_PY_VENV` names another. Without it the tests skip, and fail
//! under `CI=true`.
//!
//! The Ray recipe of docs/python.md runs with `--ignored` when
//! `POOLDUMP_RAY_VENV` (default `target/ray-venv`) has ray and pyarrow.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use pooldump_kit::corrupt::{FileCorruption, corrupt_file};
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
use support::{Finished, missing, repo_root, run_bounded, sample_truth};

/// A venv whose python imports `modules` (and has `bin/<tools>`), under
/// the CI-or-skip rule.
fn venv(var: &str, default: &str, modules: &[&str], tools: &[&str]) -> Option<PathBuf> {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default));
    let python = dir.join("bin/python");
    let ok = python.is_file()
        && tools.iter().all(|t| dir.join("bin").join(t).is_file())
        && Command::new(&python)
            .arg("-c")
            .arg(format!("import {}", modules.join(", ")))
            .output()
            .is_ok_and(|o| o.status.success());
    if ok {
        Some(dir)
    } else {
        let packages: Vec<&str> = tools.iter().chain(modules).copied().collect();
        missing(&format!(
            "a Python venv at {} with {} (set {var}, or: python3 -m venv {default} && {default}/bin/pip install {}; .ci/run pins the versions)",
            dir.display(),
            packages.join(", "),
            packages.join(" ")
        ))
    }
}

/// The test venv (CI-or-skip) with the bindings installed from this
/// checkout, once per test process (tests run in parallel and share it).
fn bindings() -> Option<PathBuf> {
    let venv = venv(
        "POOLDUMP_PY_VENV",
        "target/py-venv",
        &["pyarrow", "pytest", "duckdb"],
        &["maturin"],
    )?;
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| install_bindings(&venv));
    Some(venv)
}

/// `pip install ./crates/python` into `venv` (maturin, dev profile so the
/// build reuses the workspace's artifacts; no build isolation so no
/// download).
///
/// Under `CI=true`, where `cargo test --workspace` has just built every
/// dependency, the nested build must compile no crates.io crate but those
/// only the bindings use ([`BINDINGS_ONLY`]): one more means crates/workspace-hack no longer lines its features
/// up with the workspace's, and CI pays minutes for a second build of the
/// dependencies.
fn install_bindings(venv: &Path) {
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut pip = Command::new(venv.join("bin/pip"));
    // Cargo gives this test its package's variables (CARGO_PKG_NAME, ...);
    // ring's build script watches some of them, so the nested build would
    // rebuild ring and everything above it (pooldump-core included) and the
    // next cargo run would rebuild them back. Without them it reuses what
    // `cargo test` built, and compiles pyo3 and the module only.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_EXE_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|p| k.starts_with(p))
            || k == "CARGO_PRIMARY_PACKAGE"
        {
            pip.env_remove(k.as_ref());
        }
    }
    let started = std::time::Instant::now();
    let r = run_bounded(
        pip.args([
            "install",
            "--no-build-isolation",
            "--no-deps",
            "--force-reinstall",
            "--disable-pip-version-check",
            // -v: cargo's `Compiling` lines, to see what was rebuilt.
            "-v",
            "./crates/python",
        ])
        .env("PATH", path)
        .env("MATURIN_PEP517_ARGS", "--profile dev")
        .current_dir(repo_root()),
        Duration::from_secs(1800),
    );
    assert_eq!(
        r.code(),
        Some(0),
        "pip install ./crates/python failed:\n{}\n{}",
        r.stdout,
        r.stderr
    );
    let rebuilt = registry_crates_compiled(&format!("{}\n{}", r.stdout, r.stderr));
    println!(
        "pip install ./crates/python (maturin, dev profile): {:.1} s; crates.io crates compiled: {}",
        started.elapsed().as_secs_f64(),
        if rebuilt.is_empty() {
            "none".to_string()
        } else {
            rebuilt.join(", ")
        }
    );
    let again: Vec<&String> = rebuilt
        .iter()
        .filter(|c| !BINDINGS_ONLY.iter().any(|p| c.starts_with(p)))
        .collect();
    assert!(
        !support::in_ci() || again.is_empty(),
        "the bindings' build compiled {again:?} a second time with other features than \
         `cargo test --workspace`: regenerate crates/workspace-hack \
         (cargo install cargo-hakari; cargo hakari generate)"
    );
}

/// crates.io crates only the bindings use: a build of them is expected.
const BINDINGS_ONLY: [&str; 3] = ["pyo3", "target-lexicon ", "arrow-pyarrow "];

/// `name version` of each crates.io crate cargo says it compiled
/// (`Compiling serde v1.0.0`; a workspace crate's line ends with its path).
fn registry_crates_compiled(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.trim().strip_prefix("Compiling "))
        .filter(|c| !c.ends_with(')'))
        .map(str::to_string)
        .collect()
}

/// A kit machine's dump, symbols and truth, a corrupt file and an empty
/// store, as the pytest suite expects them.
fn test_data(dir: &Path) {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 7));
    let dump = dir.join("MEMORY.DMP");
    m.write_dump_file(DumpKind::KernelBitmap, &dump).unwrap();
    m.write_symbol_store(&dir.join("symbols")).unwrap();
    std::fs::write(dir.join("truth.json"), m.truth.to_json()).unwrap();
    // The first 0x20 bytes of every live `Leak` allocation, as the machine
    // holds them (for `find(bytes=)`; the truth has no contents).
    let contents: serde_json::Map<String, serde_json::Value> = m
        .truth
        .allocations
        .iter()
        .filter(|a| a.tag == "Leak" && a.live && a.in_dump)
        .map(|a| {
            let hex: String = m
                .asp
                .read_mapped(&m.mem, a.va, 0x20)
                .iter()
                .map(|b| format!("{:02x}", b.expect("a live allocation is mapped")))
                .collect();
            (a.va.to_string(), hex.into())
        })
        .collect();
    std::fs::write(
        dir.join("contents.json"),
        serde_json::Value::Object(contents).to_string(),
    )
    .unwrap();
    let mut bad = std::fs::read(&dump).unwrap();
    corrupt_file(&mut bad, FileCorruption::Bits32);
    std::fs::write(dir.join("corrupt.dmp"), bad).unwrap();
    std::fs::create_dir_all(dir.join("empty-store")).unwrap();
}

fn python(venv: &Path, args: &[&str], data: &Path) -> Finished {
    run_bounded(
        Command::new(venv.join("bin/python"))
            .args(args)
            .env("POOLDUMP_TEST_DIR", data)
            // The layout cache in the test's directory, not the user's.
            .env("POOLDUMP_CACHE_DIR", data.join("cache"))
            .env_remove("_NT_SYMBOL_PATH")
            .current_dir(repo_root()),
        Duration::from_secs(600),
    )
}

/// The first fenced block of `lang` in a Markdown file after `marker`.
fn block(md: &str, marker: &str, lang: &str) -> String {
    let from = md
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} is not in the file"));
    let rest = &md[from..];
    let fence = format!("```{lang}\n");
    let start = rest.find(&fence).expect("a block follows") + fence.len();
    let end = rest[start..].find("```").expect("the block ends");
    rest[start..start + end].to_string()
}

fn python_md() -> String {
    std::fs::read_to_string(repo_root().join("docs/python.md")).unwrap()
}

/// docs/batch.md's "top growing tags" query.
fn top_growing_query() -> String {
    let md = std::fs::read_to_string(repo_root().join("docs/batch.md")).unwrap();
    block(
        &md,
        "<!-- top growing tags: run by tests/cli/batch_fleet.rs -->",
        "sql",
    )
}

/// The data rows of a table DuckDB printed (`│ a │ b │`), cells trimmed.
fn duckdb_rows(printed: &str) -> Vec<Vec<String>> {
    printed
        .lines()
        .skip_while(|l| !l.starts_with('├'))
        .filter(|l| l.starts_with('│'))
        .map(|l| {
            l.trim_matches('│')
                .split('│')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// A small kit fleet, as docs/python.md makes it with `pooldump-kit fleet
/// --machines 6 --steps 5 --seed 3 --corrupt 2`.
fn small_fleet(dir: &Path) -> pooldump_kit::fleet::WrittenFleet {
    let mut spec = pooldump_kit::fleet::FleetSpec::new(6, 5, 3);
    spec.corrupt = 2;
    pooldump_kit::fleet::write_fleet(&spec, dir).unwrap()
}

#[test]
fn pip_install_then_pytest() {
    let Some(venv) = bindings() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    test_data(data.path());
    let r = python(
        &venv,
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "crates/python/tests",
        ],
        data.path(),
    );
    println!("{}", r.stdout);
    assert_eq!(r.code(), Some(0), "pytest:\n{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(" passed") && !r.stdout.contains("skipped"),
        "{}",
        r.stdout
    );
}

#[test]
fn the_docs_example_prints_what_the_page_shows() {
    let Some(venv) = bindings() else {
        return;
    };
    let md = python_md();
    let example = block(&md, "<!-- The block below is run by", "python");
    let lines = example.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines <= 10, "the example grew to {lines} lines: {example}");
    let shown = block(&md, "<!-- example output", "text");
    let data = tempfile::tempdir().unwrap();
    let script = data.path().join("example.py");
    std::fs::write(&script, &example).unwrap();
    // As the page runs it: from the repository root, on the sample.
    let r = python(
        &venv,
        &[
            script.to_str().unwrap(),
            "testdata/sample/MEMORY.DMP",
            "testdata/sample/symbols",
        ],
        data.path(),
    );
    assert_eq!(r.code(), Some(0), "example:\n{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, shown, "docs/python.md shows another output");

    // What it shows is the sample's truth: the five tags with the most
    // bytes, and Leak's live allocations (find's bytes are block sizes,
    // header included).
    let truth = sample_truth();
    let mut tags: Vec<&serde_json::Value> = truth["tags"].as_array().unwrap().iter().collect();
    tags.sort_by_key(|t| std::cmp::Reverse(t["bytes"].as_u64().unwrap()));
    for (t, line) in tags.iter().take(5).zip(r.stdout.lines()) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (cells[0], cells[1], cells[2], cells[3]),
            (
                t["tag"].as_str().unwrap().trim(),
                t["pool"].as_str().unwrap(),
                t["diff"].to_string().as_str(),
                t["bytes"].to_string().as_str()
            ),
            "{line}"
        );
    }
    let live: Vec<&serde_json::Value> = support::items(&truth["allocations"])
        .filter(|a| a["tag"] == "Leak" && a["live"] == true)
        .collect();
    let bytes: u64 = live
        .iter()
        .map(|a| a["block_bytes"].as_u64().unwrap())
        .sum();
    let want = format!("{} live Leak allocations, {bytes} bytes", live.len());
    assert!(r.stdout.contains(&want), "wanted {want:?} in\n{}", r.stdout);
}

/// docs/python.md's recipe without a cluster: the task body on a thread
/// pool, DuckDB on the Arrow tables with docs/batch.md's query.
#[test]
fn the_local_engine_recipe_ranks_the_fleet_leaker_first() {
    let Some(venv) = bindings() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fleet = small_fleet(&dir.path().join("fleet"));
    let script = dir.path().join("local_recipe.py");
    std::fs::write(&script, block(&python_md(), "<!-- Local recipe", "python")).unwrap();
    let query = dir.path().join("top-growing.sql");
    std::fs::write(&query, top_growing_query()).unwrap();
    let r = run_bounded(
        Command::new(venv.join("bin/python"))
            .arg(&script)
            .arg("fleet")
            .arg("fleet/symbols")
            .arg(&query)
            .env("POOLDUMP_CACHE_DIR", dir.path().join("cache"))
            .env_remove("_NT_SYMBOL_PATH")
            .current_dir(dir.path()),
        Duration::from_secs(600),
    );
    println!("{}", r.stdout);
    assert_eq!(r.code(), Some(0), "{}\n{}", r.stdout, r.stderr);
    check_ranking(&r.stdout, &fleet.truth);
}

/// The first rows of docs/batch.md's query as DuckDB printed them: the
/// fleet-wide leaker on every machine that leaks, then the local one.
fn check_ranking(printed: &str, t: &pooldump_kit::fleet::FleetTruth) {
    let rows = duckdb_rows(printed);
    assert!(rows.len() >= 2, "{printed}");
    let leaking = t.leaking_machines.len().to_string();
    assert_eq!(
        (
            rows[0][0].as_str(),
            rows[0][1].as_str(),
            rows[0][2].as_str()
        ),
        (t.leaker.as_str(), t.leaker_pool.as_str(), leaking.as_str()),
        "{printed}"
    );
    assert_eq!(rows[0][6], "leakydrv.sys", "{printed}");
    assert_eq!(
        (rows[1][0].as_str(), rows[1][2].as_str()),
        (t.local_leaker.as_str(), "1"),
        "{printed}"
    );
    for r in &rows[2..] {
        assert_eq!(r[2], "0", "only the planted leakers grow: {printed}");
    }
}

/// docs/python.md's Ray recipe in local mode (2 CPUs) over the same small
/// fleet, then docs/batch.md's query on its output with DuckDB. Ray is a
/// 450 MB install, so CI does not run it; run with --ignored.
#[test]
#[ignore = "needs ray (POOLDUMP_RAY_VENV or target/ray-venv)"]
fn ray_recipe_local_mode() {
    let Some(py) = bindings() else {
        return;
    };
    let Some(ray) = venv(
        "POOLDUMP_RAY_VENV",
        "target/ray-venv",
        &["ray", "pyarrow"],
        &[],
    ) else {
        return;
    };
    // The wheel maturin left in target/wheels goes into the Ray venv too.
    let wheel = std::fs::read_dir(repo_root().join("target/wheels"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("maturin wrote a wheel");
    let r = run_bounded(
        Command::new(ray.join("bin/pip"))
            .args(["install", "-q", "--no-deps", "--force-reinstall"])
            .arg(&wheel),
        Duration::from_secs(300),
    );
    assert_eq!(r.code(), Some(0), "{}", r.stderr);

    let dir = tempfile::tempdir().unwrap();
    let fleet = small_fleet(&dir.path().join("fleet"));
    let script = dir.path().join("ray_recipe.py");
    std::fs::write(&script, block(&python_md(), "<!-- Ray recipe", "python")).unwrap();
    let r = run_bounded(
        Command::new(ray.join("bin/python"))
            .arg(&script)
            .args(["fleet", "fleet/symbols", "out"])
            .env("POOLDUMP_CACHE_DIR", dir.path().join("cache"))
            .env_remove("_NT_SYMBOL_PATH")
            .current_dir(dir.path()),
        Duration::from_secs(600),
    );
    println!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let t = &fleet.truth;
    let n = t.dumps.len() + t.corrupt.len();
    let want = format!(
        "{n} dumps in {} tasks: {} ok, {} failed; tables in out",
        n.div_ceil(8),
        t.dumps.len(),
        t.corrupt.len()
    );
    assert!(r.stdout.contains(&want), "wanted {want:?}: {}", r.stdout);

    // batch.md's query, unchanged but for the directory.
    let query = top_growing_query().replace("results/", "out/");
    let r = run_bounded(
        Command::new(py.join("bin/python"))
            .arg("-c")
            .arg("import duckdb, sys; print(duckdb.sql(sys.argv[1]))")
            .arg(&query)
            .current_dir(dir.path()),
        Duration::from_secs(300),
    );
    println!("{}", r.stdout);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    check_ranking(&r.stdout, t);
}
