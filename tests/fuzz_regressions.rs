//! Every input the fuzzers found that crashed, ran out of memory or hung
//! (minimized, in `testdata/fuzz-regressions/<target>/`), replayed through
//! the same harness the fuzz target runs (fuzz/src/targets/), on stable,
//! in the normal `cargo test`. docs/security.md lists what each one was.
//!
//! The harness asserts nothing but what the library promises: no panic,
//! no abort, memory bounded, a typed error or a result. A regression shows
//! as a panic (this test fails) or an abort (this test binary dies).

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn regressions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz-regressions")
}

/// The files of one target's directory, sorted.
fn cases(target: &str) -> Vec<PathBuf> {
    let dir = regressions().join(target);
    let mut v: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(d) => d.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    v.retain(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"));
    v.sort();
    v
}

fn replay(target: &str, run: fn(&[u8])) {
    for case in cases(target) {
        let bytes = std::fs::read(&case).unwrap();
        let started = Instant::now();
        run(&bytes);
        // The fuzzers ran with -timeout=10; a case that took seconds in a
        // debug build is a hang come back (generous for a loaded machine).
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}: took {:?}",
            case.display(),
            started.elapsed()
        );
    }
}

/// Every target directory names a harness below (a crasher filed under a
/// misspelled target would otherwise never run).
#[test]
fn every_regression_directory_is_a_target() {
    let known = [
        "dump_open",
        "page_walk",
        "pdb_layouts",
        "isf",
        "pooltag",
        "snapshot_json",
        "text_import",
        "triage",
        "kdnet_datagram",
        "kdnet_packet",
        "pool_walkers",
        "stack_unwind",
        "hittag",
        "cab_store",
        "callsites",
        "relabel_map",
    ];
    let Ok(dirs) = std::fs::read_dir(regressions()) else {
        return;
    };
    for d in dirs.filter_map(|e| e.ok()) {
        let name = d.file_name().to_string_lossy().into_owned();
        if d.path().is_dir() {
            assert!(
                known.contains(&name.as_str()),
                "unknown target directory {name}"
            );
        }
    }
}

macro_rules! regression_tests {
    ($($t:ident),* $(,)?) => {
        $(
            #[test]
            fn $t() {
                replay(stringify!($t), harness::targets::$t::run);
            }
        )*
    };
}

regression_tests!(
    dump_open,
    page_walk,
    pdb_layouts,
    isf,
    pooltag,
    snapshot_json,
    text_import,
    triage,
    kdnet_datagram,
    kdnet_packet,
    pool_walkers,
    stack_unwind,
    hittag,
    cab_store,
    callsites,
    relabel_map,
);
