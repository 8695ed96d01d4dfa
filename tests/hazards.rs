//! pooldump on hostile dumps: what breaks kdmp-parser and naive tools
//! (docs/design.md, "kdmp-parser and pooldump's own header reader") must not break pooldump.
//!
//! Each case damages a kit machine or its dump file, then runs the real
//! `pooldump info` binary under a watchdog (a hang detector: the limit is
//! far above any real run time) and checks the contract: no panic, and
//! either exit 0 with the partial result and a warning, or exit 1 with an
//! error naming the file and the problem. Reads through the library are
//! compared byte for byte with the kit's physical memory.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pooldump_core::dump::CrashDump;
use pooldump_core::{KernelVa, Memory, MemoryError, PhysAddr};
use pooldump_kit::corrupt::{Corruption, FileCorruption, corrupt_file};
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
use serde_json::Value;

const WATCHDOG: Duration = Duration::from_secs(60);
const PAGE: u64 = 0x1000;

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
        assert!(
            text.stdout.contains("incomplete") && text.stdout.contains("Warnings"),
            "{build}:\n{}",
            text.stdout
        );
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
            assert!(
                text.stdout.contains("missing (truncated)"),
                "{what}:\n{}",
                text.stdout
            );
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

// ----- reads through the library ------------------------------------------

/// A deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Unaligned reads spanning up to four pages (kdmp-parser's physical
/// reader gets these wrong, §1.4) return exactly the kit's bytes; a range
/// that reaches a page the kernel dump omits fails on that page.
#[test]
fn unaligned_multi_page_physical_reads_are_exact() {
    for build in [NtBuild::Win7_7601, NtBuild::Win11_22000] {
        let m = machine(build, 8);
        let populated = |pfn: u64| m.mem.is_populated(pfn);
        let ram: Vec<u64> = m.mem.runs().iter().flat_map(|r| r.clone()).collect();
        let used: Vec<u64> = ram.iter().copied().filter(|&p| populated(p)).collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ m.truth.kernel.kern_base);
        for kind in [
            DumpKind::Full,
            DumpKind::KernelBitmap,
            DumpKind::CompleteBitmap,
        ] {
            let what = format!("{build} {kind:?}");
            let dump = CrashDump::from_bytes(&what, m.dump_bytes(kind)).expect("open");
            let in_dump = |pfn: u64| kind != DumpKind::KernelBitmap || populated(pfn);
            let (mut exact, mut crossing, mut absent) = (0, 0, 0);
            for _ in 0..4000 {
                // Mostly from frames that hold something (a kernel dump
                // has little else), sometimes from anywhere in RAM.
                let from = if rng.below(4) == 0 { &ram } else { &used };
                let start = from[rng.below(from.len() as u64) as usize] * PAGE + rng.below(PAGE);
                let len = 1 + rng.below(3 * PAGE + 0x800);
                let end = start + len;
                let pages: Vec<u64> = (start / PAGE..=(end - 1) / PAGE).collect();
                if pages.iter().any(|p| !m.mem.is_ram(*p)) {
                    continue;
                }
                let mut got = vec![0u8; len as usize];
                let r = dump.read_physical(PhysAddr(start), &mut got);
                match pages.iter().find(|p| !in_dump(**p)) {
                    None => {
                        r.unwrap_or_else(|e| panic!("{what}: {start:#x}+{len:#x}: {e}"));
                        let mut want = vec![0u8; len as usize];
                        m.mem.read(start, &mut want);
                        assert!(got == want, "{what}: {start:#x}+{len:#x} differs");
                        exact += 1;
                        crossing += usize::from(pages.len() >= 3);
                    }
                    Some(&missing) => {
                        let first_byte = (missing * PAGE).max(start);
                        assert_eq!(
                            r,
                            Err(MemoryError::not_in_source(PhysAddr(first_byte))),
                            "{what}: {start:#x}+{len:#x}"
                        );
                        absent += 1;
                    }
                }
            }
            assert!(
                crossing > 100,
                "{what}: {crossing} reads crossed 2+ boundaries"
            );
            if kind == DumpKind::KernelBitmap {
                assert!(absent > 100 && exact > 100, "{what}: {exact} / {absent}");
            }
        }
    }
}

/// Translate `va` through the kit's own page tables and return the last
/// entry (valid or not), for pages the kit's translate() refuses.
fn pte_of(m: &Machine, va: u64) -> u64 {
    let mut table = m.asp.pml4 * PAGE;
    for shift in [39u32, 30, 21, 12] {
        let e = m.mem.read_u64(table + ((va >> shift) & 0x1FF) * 8);
        if shift == 12 {
            return e;
        }
        assert!(e & 1 == 1 && e & 0x80 == 0, "{va:#x}: no page table");
        table = e & 0x000F_FFFF_FFFF_F000;
    }
    unreachable!()
}

/// Paged-out pool pages are not present; transition pages (standby list)
/// still read, with the bytes of the frame their PTE names.
#[test]
fn paged_out_and_transition_pages() {
    for build in [NtBuild::Win7_7601, NtBuild::Win10_19041] {
        let mut s = Scenario::small(build, 9);
        s.ram_mib = 64;
        s.paged_out = 0.3;
        s.transition = 0.3;
        let m = Machine::build(&s);
        let t = &m.truth;
        assert!(!t.pages.paged_out.is_empty() && !t.pages.transition.is_empty());
        let dump = CrashDump::from_bytes(build.name(), m.dump_bytes(DumpKind::KernelBitmap))
            .expect("open");
        let mut buf = vec![0u8; PAGE as usize];
        for &va in &t.pages.paged_out {
            let want = MemoryError::page_not_present(KernelVa(va));
            assert_eq!(dump.translate(KernelVa(va)), Err(want.clone()), "{build}");
            assert_eq!(dump.read_virtual(KernelVa(va), &mut buf), Err(want));
        }
        for &va in &t.pages.transition {
            let pte = pte_of(&m, va);
            assert!(pte & 1 == 0 && pte & (1 << 11) != 0, "{va:#x}: {pte:#x}");
            let frame = pte & 0x000F_FFFF_FFFF_F000;
            let tr = dump.translate(KernelVa(va)).expect("transition translates");
            assert!(tr.transition && tr.pa == PhysAddr(frame), "{build} {va:#x}");
            dump.read_virtual(KernelVa(va), &mut buf)
                .unwrap_or_else(|e| panic!("{build}: transition page {va:#x}: {e}"));
            let mut want = vec![0u8; PAGE as usize];
            m.mem.read(frame, &mut want);
            assert!(buf == want, "{build}: transition page {va:#x} bytes");
        }
        // Allocations on those pages: absent ones fail, the rest read the
        // kit's header bytes.
        let (mut read, mut missing) = (0, 0);
        for a in &t.allocations {
            let Some(h) = a.header_va else { continue };
            let mut got = [0u8; 16];
            let r = dump.read_virtual(KernelVa(h), &mut got);
            match a.pa {
                Some(pa) if a.in_dump => {
                    r.unwrap_or_else(|e| panic!("{build}: header {h:#x}: {e}"));
                    let mut want = [0u8; 16];
                    m.mem.read(pa, &mut want);
                    assert_eq!(got, want, "{build}: header {h:#x}");
                    read += 1;
                }
                _ => {
                    assert!(
                        matches!(r, Err(MemoryError::NotPresent { .. })),
                        "{build}: {h:#x}: {r:?}"
                    );
                    missing += 1;
                }
            }
        }
        assert!(
            read > 100 && missing > 0,
            "{build}: {read} read, {missing} missing"
        );
    }
}
