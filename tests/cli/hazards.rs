//! pooldump on hostile dumps: what breaks kdmp-parser and naive tools
//! (docs/design.md, "kdmp-parser and pooldump's own header reader") must not break pooldump.
//!
//! Each case damages a kit machine or its dump file, then runs the real
//! `pooldump info` binary under a watchdog (a hang detector: the limit is
//! far above any real run time) and checks the contract: no panic, and
//! either exit 0 with the partial result and a warning, or exit 1 with an
//! error naming the file and the problem. Reads through the library alone
//! (unaligned physical reads, paged-out and transition pages) are in
//! crates/core/tests/hazards.rs.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pooldump_kit::corrupt::{Corruption, FileCorruption, corrupt_file};
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
use serde_json::Value;

const WATCHDOG: Duration = Duration::from_secs(60);

/// The kit's small scenario with 64 MiB of RAM (full dumps stay small).
fn machine(build: NtBuild, seed: u64) -> Machine {
    let mut s = Scenario::small(build, seed);
    s.ram_mib = 64;
    Machine::build(&s)
}

/// `pooldump info [--json] DUMP`, bounded by the watchdog.
fn info(path: &Path, json: bool) -> support::Finished {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pooldump"));
    cmd.arg("info");
    if json {
        cmd.arg("--json");
    }
    cmd.arg(path);
    let f = support::run_bounded(&mut cmd, WATCHDOG);
    assert!(
        !f.stderr.contains("panicked") && !f.stderr.contains("internal error"),
        "{}: pooldump panicked:\n{}",
        path.display(),
        f.stderr
    );
    f
}

/// Run `info --json`, expect success, return the report.
fn report(path: &Path) -> Value {
    let f = info(path, true);
    assert_eq!(
        f.code(),
        Some(0),
        "{}: exit code; stderr:\n{}",
        path.display(),
        f.stderr
    );
    serde_json::from_str(&f.stdout)
        .unwrap_or_else(|e| panic!("{}: JSON: {e}\n{}", path.display(), f.stdout))
}

/// Every warning of a report (header, kernel, image, module list).
/// Some warning of the report `r` satisfies `ok` (`what` names the case).
fn assert_warned(r: &Value, ok: impl Fn(&str) -> bool, what: &str) {
    let all = warnings(r);
    assert!(all.iter().any(|w| ok(w)), "{what}: {all:?}");
}

fn warnings(r: &Value) -> Vec<String> {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = list(&r["header"]["warnings"]);
    out.extend(list(&r["kernel"]["warnings"]));
    out.extend(list(&r["kernel"]["image"]["warnings"]));
    out.extend(list(&r["modules"]["warnings"]));
    out
}

fn module_names(r: &Value) -> Vec<String> {
    r["modules"]["modules"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn truth_names(m: &Machine) -> Vec<String> {
    m.truth
        .kernel
        .modules
        .iter()
        .map(|md| md.base_name.clone())
        .collect()
}

/// Expect exit 1 with `error: <path>: ... <problem> ...` and nothing on
/// stdout.
fn expect_error(path: &Path, problem: &str) {
    let f = info(path, false);
    assert_eq!(f.code(), Some(1), "{}: {}", path.display(), f.stderr);
    let first = f.stderr.lines().next().unwrap_or("");
    assert!(
        first.starts_with("error: ")
            && first.contains(&path.display().to_string())
            && first.contains(problem),
        "{}: wanted an error naming the file and {problem:?}, got:\n{}",
        path.display(),
        f.stderr
    );
    assert!(f.stdout.is_empty(), "{}: {}", path.display(), f.stdout);
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

// ----- damaged machines ---------------------------------------------------

/// A Flink that cycles without returning to the head hangs kdmp-parser's
/// walk in release builds; pooldump lists what it saw and warns.
#[test]
fn cyclic_module_list_is_listed_with_a_warning() {
    let dir = tempfile::tempdir().expect("temp dir");
    for build in [NtBuild::Win7_7601, NtBuild::Win10_19041] {
        let mut m = machine(build, 1);
        m.corrupt(Corruption::CyclicModuleList);
        let p = dir.path().join(format!("{build}-cyclic.dmp"));
        m.write_dump_file(DumpKind::KernelBitmap, &p)
            .expect("write");
        let r = report(&p);
        assert_eq!(
            r["kernel"]["kern_base"], m.truth.kernel.kern_base,
            "{build}"
        );
        assert_eq!(module_names(&r), truth_names(&m), "{build}: modules seen");
        assert_eq!(r["modules"]["complete"], false, "{build}");
        assert_warned(&r, |w| w.contains("loops back"), &format!("{build}"));
        let text = info(&p, false);
        assert_eq!(text.code(), Some(0));
        support::assert_contains_all(build, &text.stdout, &["incomplete", "Warnings"]);
    }
}

/// Damage that pooldump info does not depend on (or that kdmp-parser
/// chokes on: duplicate module ranges panic its debug build): the report
/// is complete and right.
#[test]
fn other_machine_damage_leaves_info_intact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        Corruption::DuplicateModules,
        Corruption::PageTableLoops,
        Corruption::MissingTrackerPages,
        Corruption::UnmappedTrackerTable,
        Corruption::HugeTrackerSize,
        Corruption::HugeBigTableSize,
        Corruption::BigTableIntoNowhere,
        Corruption::GarbagePerCpuPointers,
    ];
    for build in [NtBuild::Win81_9600, NtBuild::Win11_22000] {
        for c in cases {
            let mut s = Scenario::small(build, 2);
            s.ram_mib = 64;
            let mut m = Machine::build(&s);
            m.corrupt(c);
            let p = dir.path().join(format!("{build}-{c:?}.dmp"));
            m.write_dump_file(DumpKind::KernelBitmap, &p)
                .expect("write");
            let r = report(&p);
            let what = format!("{build} {c:?}");
            assert_eq!(r["kernel"]["kern_base"], m.truth.kernel.kern_base, "{what}");
            assert_eq!(r["kernel"]["found_by"], "kd-debugger-data-block", "{what}");
            assert_eq!(r["modules"]["complete"], true, "{what}");
            let names = module_names(&r);
            assert_eq!(names.len(), m.truth.kernel.modules.len(), "{what}");
            if c != Corruption::DuplicateModules {
                assert_eq!(names, truth_names(&m), "{what}");
            }
        }
    }
}

/// With the KDBG and the module list gone, pooldump falls back to scanning
/// the page tables of nt's load window; paging structures that point back
/// up the hierarchy must not trap that walk.
#[test]
fn page_table_loops_do_not_trap_the_fallback_scan() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut m = machine(NtBuild::Win10_19041, 4);
    m.corrupt(Corruption::PageTableLoops);
    // Remove the 'KDBG' tag, so the physical KDBG scan finds nothing.
    let kdbg = m.truth.kernel.kd_debugger_data_block;
    m.asp.write(&mut m.mem, kdbg + 0x10, b"XXXX");
    let mut bytes = m.dump_bytes(DumpKind::KernelBitmap);
    // PsLoadedModuleList and KdDebuggerDataBlock in the header: 0.
    bytes[0x20..0x28].fill(0);
    bytes[0x80..0x88].fill(0);
    let p = write(dir.path(), "loops.dmp", &bytes);
    let r = report(&p);
    assert_eq!(r["kernel"]["kern_base"], m.truth.kernel.kern_base);
    assert_eq!(r["kernel"]["found_by"], "image-scan", "{r}");
}

/// The pool tables themselves damaged, through `pooldump analyze`: each
/// case ends, without a panic, either in a result whose warnings name the
/// damaged table or in an error naming the file and the table. Never a
/// 2^40-entry allocation (the sizes are checked before anything is read).
#[test]
fn damaged_pool_tables_through_analyze() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (Corruption::MissingTrackerPages, false, "PoolTrackTable"),
        (Corruption::UnmappedTrackerTable, false, "PoolTrackTable"),
        (Corruption::HugeTrackerSize, false, "PoolTrackTableSize"),
        (Corruption::GarbagePerCpuPointers, false, "ExPoolTagTables"),
        (Corruption::HugeBigTableSize, true, "PoolBigPageTableSize"),
        (Corruption::BigTableIntoNowhere, true, "PoolBigPageTable"),
    ];
    for build in [NtBuild::Win7_7601, NtBuild::Win10_19041] {
        for (c, big_pool, names) in cases {
            let mut s = Scenario::small(build, 3);
            s.ram_mib = 64;
            // See other_machine_damage_leaves_info_intact (kit bug).
            s.large_pages = c != Corruption::UnmappedTrackerTable;
            let mut m = Machine::build(&s);
            m.corrupt(c);
            let case = dir.path().join(format!("{build}-{c:?}"));
            let (dump, store) = (case.join("MEMORY.DMP"), case.join("symbols"));
            std::fs::create_dir_all(&case).expect("case dir");
            m.write_dump_file(DumpKind::KernelBitmap, &dump)
                .expect("write");
            m.write_symbol_store(&store).expect("symbols");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_pooldump"));
            cmd.arg("analyze")
                .arg(&dump)
                .arg("--symbol-path")
                .arg(&store)
                .args(["--offline", "--no-cache"]);
            if big_pool {
                cmd.arg("--big-pool");
            }
            let f = support::run_bounded(&mut cmd, WATCHDOG);
            let what = format!("{build} {c:?}");
            assert!(
                !f.stderr.contains("panicked") && !f.stderr.contains("internal error"),
                "{what}: {}",
                f.stderr
            );
            let first = f.stderr.lines().next().unwrap_or("");
            match f.code() {
                Some(0) => assert!(
                    f.stdout.contains("Warnings") && f.stdout.contains(names),
                    "{what}: a result without a warning naming {names}:\n{}",
                    f.stdout
                ),
                Some(1) => assert!(
                    first.starts_with("error: ")
                        && first.contains(&dump.display().to_string())
                        && f.stderr.contains(names),
                    "{what}: an error without the file or {names}:\n{}",
                    f.stderr
                ),
                other => panic!("{what}: exit {other:?}\n{}", f.stderr),
            }
        }
    }
}

// ----- damaged files ------------------------------------------------------

#[test]
fn damaged_headers_fail_with_the_file_and_the_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let m = machine(NtBuild::Win10_18362, 5);
    let kernel = m.dump_bytes(DumpKind::KernelBitmap);
    let full = m.dump_bytes(DumpKind::Full);
    let damaged = |mut b: Vec<u8>, c| {
        corrupt_file(&mut b, c);
        b
    };
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "cut-in-header.dmp",
            damaged(kernel.clone(), FileCorruption::Truncate(0x1000)),
            "too small",
        ),
        (
            "cut-in-bitmap-header.dmp",
            damaged(kernel.clone(), FileCorruption::Truncate(0x2010)),
            "bitmap",
        ),
        (
            "huge-bitmap.dmp",
            damaged(kernel.clone(), FileCorruption::HugeBitmap),
            "bitmap",
        ),
        (
            "triage.dmp",
            damaged(kernel.clone(), FileCorruption::TriageType),
            "DumpType 4",
        ),
        (
            "x86.dmp",
            damaged(kernel.clone(), FileCorruption::Bits32),
            "32-bit",
        ),
        (
            "too-many-runs.dmp",
            damaged(full, FileCorruption::TooManyRuns),
            "runs",
        ),
    ];
    for (name, bytes, problem) in cases {
        expect_error(&write(dir.path(), name, &bytes), problem);
    }
}

/// A dump cut short (a copy that stopped, a disk that filled up): the
/// header and whatever the remaining pages allow, with a warning that says
/// how much is missing.
#[test]
fn truncated_dumps_show_the_header_and_say_what_is_missing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let m = machine(NtBuild::Server2022_20348, 6);
    for kind in [DumpKind::KernelBitmap, DumpKind::Full] {
        let whole = m.dump_bytes(kind);
        for cut in [0x3000, whole.len() as u64 / 2, whole.len() as u64 - 0x800] {
            let mut b = whole.clone();
            corrupt_file(&mut b, FileCorruption::Truncate(cut));
            let p = write(dir.path(), &format!("{kind:?}-{cut:#x}.dmp"), &b);
            let what = p.display().to_string();
            let r = report(&p);
            assert_eq!(r["header"]["minor_version"], m.truth.build_number, "{what}");
            assert_eq!(
                r["header"]["directory_table_base"], m.truth.kernel.dtb,
                "{what}"
            );
            assert!(r["header"]["truncation"].is_object(), "{what}: {r}");
            assert_warned(&r, |w| w.contains("truncated"), &what);
            // Either nt was found, or the report says why not.
            assert!(
                r["kernel"].is_object() || r["kernel_error"].is_string(),
                "{what}: {r}"
            );
            let text = info(&p, false);
            support::assert_contains_all(&what, &text.stdout, &["missing (truncated)"]);
        }
    }
}

#[test]
fn implausible_header_fields_are_warned_about() {
    let dir = tempfile::tempdir().expect("temp dir");
    let m = machine(NtBuild::Win10_14393, 7);
    let dump = m.dump_bytes(DumpKind::KernelBitmap);
    let damaged = |c| {
        let mut b = dump.clone();
        corrupt_file(&mut b, c);
        b
    };

    let r = report(&write(
        dir.path(),
        "cpus.dmp",
        &damaged(FileCorruption::HugeProcessorCount),
    ));
    assert_eq!(r["kernel"]["kern_base"], m.truth.kernel.kern_base);
    assert_warned(&r, |w| w.contains("NumberProcessors"), "cpus.dmp");

    // No PML4, no virtual reads: nt cannot be found, and both the header
    // warning and the kernel error say why.
    let r = report(&write(
        dir.path(),
        "dtb.dmp",
        &damaged(FileCorruption::DtbOutOfRange),
    ));
    assert!(r["kernel"].is_null(), "{r}");
    assert!(
        r["kernel_error"]
            .as_str()
            .is_some_and(|e| e.contains("PML4E")),
        "{r}"
    );
    assert_warned(
        &r,
        |w| w.contains("DirectoryTableBase") && w.contains("not in the dump"),
        "dtb.dmp",
    );

    // A KdDebuggerDataBlock that is not even canonical: nt is found
    // through PsLoadedModuleList instead.
    let r = report(&write(
        dir.path(),
        "kdbg.dmp",
        &damaged(FileCorruption::BadKdbgPointer),
    ));
    assert_eq!(r["kernel"]["kern_base"], m.truth.kernel.kern_base);
    assert_eq!(r["kernel"]["found_by"], "loaded-module-list");
    assert_warned(
        &r,
        |w| w.contains("KdDebuggerDataBlock") && w.contains("canonical"),
        "kdbg.dmp",
    );
    assert_eq!(module_names(&r), truth_names(&m));
}
