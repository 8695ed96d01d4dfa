//! Small memory dumps (DumpType 4) through the binary: the real Windows 11
//! ARM64 file in ../shared/realworld/ and x64 ones the kit writes
//! (crates/core/tests/small_dump.rs reads them through the library).

use crate::support;

use pooldump_core::KernelVa;
use pooldump_kit::triage::SmallDumpOptions;
use pooldump_kit::{Machine as KitMachine, NtBuild, Scenario};
use support::pooldump;

fn real() -> Option<std::path::PathBuf> {
    support::shared_file("realworld/triage-arm64-22000.dmp")
}

/// `pooldump info DUMP`'s text, which must succeed.
fn info(dump: &str) -> String {
    let out = pooldump(&["info", dump]);
    assert!(out.status.success(), "{}", out.stderr);
    out.stdout
}

#[test]
fn info_analyze_and_find_on_the_real_small_dump() {
    let Some(p) = real() else { return };
    let p = p.to_str().unwrap();
    let text = info(p);
    for want in [
        "small memory dump (DumpType 4",
        "ARM64",
        "22000",
        "MANUALLY_INITIATED_POWER_BUTTON_HOLD",
        "ffffbb8e`b1719180 (Running)",
        "PoolTrackTable       fffff803`f3a169f8",
        "Loaded drivers (245)",
        "Unloaded drivers (11)",
        "WdFilter.sys",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    let out = pooldump(&["info", "--json", p]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["kind"], "small memory dump");
    assert_eq!(v["machine"], "arm64");
    assert_eq!(v["drivers"].as_array().unwrap().len(), 245);
    assert_eq!(
        v["bug_check"]["name"],
        "MANUALLY_INITIATED_POWER_BUTTON_HOLD"
    );

    for args in [
        vec!["analyze", p, "--offline"],
        vec!["find", p, "--tag", "Leak", "--offline"],
    ] {
        let out = pooldump(&args);
        let err = &out.stderr;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        support::assert_contains_all(
            format!("{args:?}"),
            err,
            &[
                "small memory dump",
                "no pool pages",
                "PoolTrackTable at fffff803`f3a169f8",
                "Kernel memory dump",
                "Automatic memory dump",
            ],
        );
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"));
    }

    // `stack` unwinds x64 only: an ARM64 dump is refused by name, with
    // where to look instead.
    let out = pooldump(&["stack", p, "--offline"]);
    let err = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{err}");
    support::assert_contains_all(
        "stack",
        err,
        &[
            "ARM64 small memory dump",
            "x64 stacks only",
            "pooldump info",
        ],
    );
}

#[test]
fn info_names_the_crashing_process_of_a_kit_small_dump() {
    let m = KitMachine::build(&Scenario::small(NtBuild::Win10_19041, 7));
    let (bytes, t) = m.small_dump(&SmallDumpOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("Mini120126-01.dmp");
    std::fs::write(&p, bytes).unwrap();
    let p = p.to_str().unwrap();
    let text = info(p);
    let want = format!("{} {} (PID {})", KernelVa(t.process), t.process_name, t.pid);
    assert!(text.contains(&want), "{want} missing from:\n{text}");
    assert!(text.contains("x64 (0x8664)"), "{text}");
    assert!(
        text.contains(&format!("Loaded drivers ({})", t.drivers.len())),
        "{text}"
    );
    assert!(text.contains("oldfilt.sys"), "{text}");
    let out = pooldump(&["snapshot", p, "--offline"]);
    let err = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no pool pages") && err.contains(&format!("{}", KernelVa(t.pool_track_table))),
        "{err}"
    );
}
