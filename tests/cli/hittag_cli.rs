//! `pooldump hittag` against the simulated target while it runs: its
//! processors execute the drivers' and nt's code (the leak workload), and
//! nt!PoolHitTag stops them as Windows does. What pooldump reports is
//! compared with what the simulated CPU recorded at each stop (its own
//! shadow stack, the pool call in progress, the size requested), and the
//! target must be running with PoolHitTag restored afterwards, however the
//! session ended.

use crate::support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pooldump_kdnet_sim::{
    Faults, Mishap, MishapAt, MishapKind, SimEvent, SimTarget, StopOnResume, WorkItem, Workload,
};
use pooldump_kit::run::{HitRecord, PoolOp, RunTruth};
use pooldump_kit::{Machine, NtBuild, Scenario};
use serde_json::Value;
use support::run_bounded;

const KEY: &str = "1.2.3.4";

/// A driver self-check that breaks with DbgBreakPoint every 20 simulated
/// seconds: a stop that is not a pool call.
fn assertion() -> WorkItem {
    WorkItem {
        name: "assert".into(),
        driver: "leakydrv.sys".into(),
        kind: 6,
        flags: 0,
        length: 0,
        context: 0,
        every_ms: 20_000,
        start_ms: 20_000,
        burst: 1,
    }
}

struct Setup {
    sim: SimTarget,
    spec: String,
    symbols: tempfile::TempDir,
    /// The same store with nt's and the drivers' image files too.
    with_images: tempfile::TempDir,
    hit_tag_va: u64,
    /// nt!DbgBreakPoint, where the driver's assertion stops.
    dbg_break_point: u64,
    modules: Vec<(String, u64)>,
}

fn setup(build: NtBuild, faults: Faults) -> Setup {
    setup_with(build, faults, Workload::leak())
}

fn setup_with(build: NtBuild, faults: Faults, workload: Workload) -> Setup {
    setup_stopping_on_resume(build, faults, workload, None)
}

/// A target struck by `kind` as soon as the debugger has set PoolHitTag
/// and let it run.
fn setup_struck_when_watched(kind: MishapKind) -> Setup {
    let mishap = Mishap {
        at: MishapAt::ResumeAfterWrites(1),
        kind,
    };
    setup_full(
        NtBuild::Win10_19041,
        Faults::default(),
        Workload::leak(),
        None,
        Some(mishap),
    )
}

/// As [`setup_with`], with a stop under way when the target is frozen
/// (made from nt!DbgBreakPoint's address), raised when it runs again.
fn setup_stopping_on_resume(
    build: NtBuild,
    faults: Faults,
    workload: Workload,
    stop: Option<&dyn Fn(u64) -> StopOnResume>,
) -> Setup {
    setup_full(build, faults, workload, stop, None)
}

/// As [`setup_stopping_on_resume`], and struck by `mishap`.
fn setup_full(
    build: NtBuild,
    faults: Faults,
    workload: Workload,
    stop: Option<&dyn Fn(u64) -> StopOnResume>,
    mishap: Option<Mishap>,
) -> Setup {
    setup_machine(Scenario::small(build, 31), faults, workload, stop, mishap)
}

/// The simulated target of `scenario`, running `workload`.
fn setup_machine(
    scenario: Scenario,
    faults: Faults,
    workload: Workload,
    stop: Option<&dyn Fn(u64) -> StopOnResume>,
    mishap: Option<Mishap>,
) -> Setup {
    let m = Machine::build(&scenario);
    let symbols = tempfile::tempdir().unwrap();
    m.write_symbol_store(symbols.path()).unwrap();
    let with_images = tempfile::tempdir().unwrap();
    m.write_symbol_store(with_images.path()).unwrap();
    m.write_image_files(with_images.path()).unwrap();
    let hit_tag_va = m.sym_va("PoolHitTag").unwrap();
    let dbg_break_point = m.sym_va("DbgBreakPoint").unwrap();
    let modules = m
        .truth
        .kernel
        .modules
        .iter()
        .map(|d| (d.base_name.clone(), d.base))
        .collect();
    let (mut cfg, port) = support::loopback_sim(KEY);
    cfg.faults = faults;
    cfg.workload = Some(workload);
    cfg.speed = 60.0;
    cfg.stop_on_resume = stop.map(|f| f(dbg_break_point));
    cfg.mishap = mishap;
    let sim = SimTarget::spawn(m, cfg).unwrap();
    Setup {
        sim,
        spec: format!("port={port},key={KEY},bind=127.0.0.1"),
        symbols,
        with_images,
        hit_tag_va,
        dbg_break_point,
        modules,
    }
}

fn hittag_cmd(s: &Setup, extra: &[&str]) -> Command {
    hittag_cmd_with(s, s.symbols.path(), extra)
}

fn hittag_cmd_with(s: &Setup, symbols: &std::path::Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pooldump"));
    c.args(["hittag", "--kdnet", &s.spec, "--offline", "--symbol-path"])
        .arg(symbols)
        .args(extra)
        .env_remove("_NT_SYMBOL_PATH");
    c
}

/// `hittag --tag Leak` for `seconds` (no hit count reached first), with
/// `extra`.
fn watch_leak_for(s: &Setup, seconds: &str, extra: &[&str]) -> support::Finished {
    let mut a = vec!["--tag", "Leak", "--hits", "1000000", "--seconds", seconds];
    a.extend_from_slice(extra);
    run_bounded(&mut hittag_cmd(s, &a), Duration::from_secs(120))
}

/// `hittag --tag TAG --hits HITS --json` until the hits are counted: its
/// JSON.
fn watch_hits(s: &Setup, tag: &str, hits: u32) -> Value {
    let hits = hits.to_string();
    let out = run_bounded(
        &mut hittag_cmd(s, &["--tag", tag, "--hits", &hits, "--json"]),
        Duration::from_secs(240),
    );
    assert_eq!(out.code(), Some(0), "{tag}: {}", out.stderr);
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["ended"], "hits", "{}", out.stdout);
    j
}

/// `hittag --tag TAG --hits 30` on a small machine of `build` set up by
/// `set`, running `workload`, checked against the CPU's record: the target
/// restored and running, every count and size, every stack.
fn watch_checked(
    build: NtBuild,
    seed: u64,
    set: impl Fn(&mut Scenario),
    workload: Workload,
    tag: &str,
) -> Value {
    let mut scenario = Scenario::small(build, seed);
    set(&mut scenario);
    let s = setup_machine(scenario, Faults::default(), workload, None, None);
    let j = watch_hits(&s, tag, 30);
    assert_restored_and_running(&s);
    let truth = s.sim.truth().unwrap();
    assert!(truth.invalid.is_empty(), "{:?}", truth.invalid);
    assert_counts_match(&s, &j, &truth);
    assert_stacks_are_the_cpus(&j, &truth);
    j
}

/// The target afterwards: PoolHitTag back to 0 and running (given time to
/// process the last Continue).
fn assert_restored_and_running(s: &Setup) {
    let t0 = Instant::now();
    loop {
        let st = s.sim.stats();
        if st.running || t0.elapsed() > Duration::from_secs(5) {
            assert!(st.running, "the target was left stopped: {st:?}");
            assert!(!st.bugchecked, "the target bug-checked: {st:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let v = s.sim.peek(s.hit_tag_va, 4).expect("PoolHitTag is mapped");
    // The kernel's own initial value (WRK pool.c: 0xffffff0f), as the kit
    // boots it.
    assert_eq!(
        v,
        0xFFFF_FF0Fu32.to_le_bytes(),
        "nt!PoolHitTag was not restored"
    );
}

fn site_name(site: &Option<pooldump_kit::run::Site>) -> String {
    let site = site.as_ref().unwrap();
    format!("{}+{:#x}", site.module, site.rva)
}

/// (module+rva of the site's return address, op) -> (count, bytes), from
/// the CPU's records.
fn truth_sites(hits: &[HitRecord]) -> BTreeMap<(String, String), (u64, u64)> {
    let mut m = BTreeMap::new();
    for h in hits.iter().filter(|h| h.pool_hit_tag) {
        let (op, _, bytes, site) = h.pool.clone().unwrap();
        let op = match op {
            PoolOp::Alloc => "alloc",
            PoolOp::Free => "free",
        };
        let e = m
            .entry((site_name(&site), op.to_string()))
            .or_insert((0, 0));
        e.0 += 1;
        if op == "alloc" {
            e.1 += bytes;
        }
    }
    m
}

/// pooldump's sites as (module+rva, op) -> (count, bytes requested).
fn reported_sites(s: &Setup, j: &Value) -> BTreeMap<(String, String), (u64, u64)> {
    let mut m = BTreeMap::new();
    for row in j["table"]["sites"].as_array().unwrap() {
        let va = row["site_va"].as_u64().unwrap();
        let (name, base) = s
            .modules
            .iter()
            .filter(|(_, b)| *b <= va)
            .max_by_key(|(_, b)| *b)
            .unwrap();
        let key = format!("{name}+{:#x}", va - base);
        let allocs = row["allocs"].as_u64().unwrap();
        let frees = row["frees"].as_u64().unwrap();
        assert_eq!(row["unknown_sizes"], 0, "{row}");
        if allocs > 0 {
            m.insert(
                (key.clone(), "alloc".to_string()),
                (allocs, row["bytes_requested"].as_u64().unwrap()),
            );
        }
        if frees > 0 {
            m.insert((key, "free".to_string()), (frees, 0));
        }
    }
    m
}

/// Every stack pooldump printed is one the CPU built at a stop.
fn assert_stacks_are_the_cpus(j: &Value, truth: &RunTruth) {
    for row in j["table"]["sites"].as_array().unwrap() {
        for st in row["stacks"].as_array().unwrap() {
            let got: Vec<(u64, u64)> = support::items(&st["frames"])
                .map(|f| (f["pc"].as_u64().unwrap(), f["child_sp"].as_u64().unwrap()))
                .collect();
            assert!(
                truth.hits.iter().any(|h| h
                    .frames
                    .iter()
                    .map(|f| (f.pc, f.child_sp))
                    .eq(got.iter().copied())),
                "a reported stack the CPU never built: {got:x?}"
            );
        }
    }
}

/// pooldump's counts against the CPU's: equal, except for at most one stop
/// the target took while pooldump was breaking in to restore (it is
/// resumed, not counted).
fn assert_counts_match(s: &Setup, j: &Value, truth: &RunTruth) {
    let got = reported_sites(s, j);
    let want = truth_sites(&truth.hits);
    let mut missing = 0;
    for (k, (n, bytes)) in &want {
        let (g, gb) = got.get(k).copied().unwrap_or((0, 0));
        assert!(g <= *n, "{k:?}: reported {g}, the CPU did {n}");
        missing += n - g;
        if g == *n && k.1 == "alloc" {
            assert_eq!(gb, *bytes, "{k:?}: bytes requested");
        }
    }
    for k in got.keys() {
        assert!(want.contains_key(k), "{k:?} reported, never hit");
    }
    assert!(
        missing <= 1,
        "{missing} hits not reported: {got:?} vs {want:?}"
    );
}

#[test]
fn hittag_names_the_call_sites_the_cpu_went_through() {
    for build in [NtBuild::Win10_19041, NtBuild::Win10_17763] {
        let s = setup(build, Faults::default());
        let j = watch_hits(&s, "Leak", 60);
        assert_eq!(j["restored"], true);
        assert_eq!(j["table"]["pool_hits"], 60);
        assert_restored_and_running(&s);
        let truth = s.sim.truth().unwrap();
        assert!(truth.invalid.is_empty(), "{:?}", truth.invalid);
        assert_counts_match(&s, &j, &truth);
        assert_stacks_are_the_cpus(&j, &truth);
        // The leaking site is named, and the breaks of the driver's own
        // assertion are kept apart.
        let sites = support::field_strs(&j["table"]["sites"], "site");
        assert!(
            sites
                .iter()
                .any(|n| n.starts_with("leakydrv!LeakOneRecord+")),
            "{sites:?}"
        );
        // With the image files on the symbol path the analysis reads only
        // each module's header page from the target (to learn its
        // TimeDateStamp); unwind data and code come from the files.
        let without = j["analysis_reads"]["first_hit_image"]["reads"]
            .as_u64()
            .unwrap();
        assert!(without > 2, "{}", j["analysis_reads"]);
        let mut c = hittag_cmd_with(
            &s,
            s.with_images.path(),
            &["--tag", "Leak", "--hits", "20", "--json"],
        );
        let out = run_bounded(&mut c, Duration::from_secs(120));
        assert_eq!(out.code(), Some(0), "{build:?}: {}", out.stderr);
        let k: Value = serde_json::from_str(&out.stdout).unwrap();
        let with = k["analysis_reads"]["first_hit_image"]["reads"]
            .as_u64()
            .unwrap();
        // nt's and leakydrv's header pages.
        assert!(with <= 2, "{}", k["analysis_reads"]);
        assert_eq!(
            k["analysis_reads"]["later_image"]["reads"], 0,
            "{}",
            k["analysis_reads"]
        );
        assert_restored_and_running(&s);
        let truth = s.sim.truth().unwrap();
        assert_stacks_are_the_cpus(&k, &truth);

        // The text form, on the same (still running) target.
        let out = run_bounded(
            &mut hittag_cmd(&s, &["--tag", "Leak", "--hits", "10"]),
            Duration::from_secs(120),
        );
        assert_eq!(out.code(), Some(0), "{}", out.stderr);
        assert!(out.stdout.contains("Call site"), "{}", out.stdout);
        assert!(out.stdout.contains("# Child-SP"), "{}", out.stdout);
        assert!(
            out.stdout.contains("nt!PoolHitTag restored to ffffff0f"),
            "{}",
            out.stdout
        );
        assert_restored_and_running(&s);
    }
}

#[test]
fn other_stops_are_reported_resumed_and_never_counted() {
    let mut w = Workload::leak();
    w.items.push(assertion());
    let s = setup_with(NtBuild::Win10_19041, Faults::default(), w);
    let out = watch_leak_for(&s, "3", &["--json"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["ended"], "time");
    let other = j["table"]["other"].as_array().unwrap();
    assert!(
        other
            .iter()
            .any(|o| o["reason"].as_str().unwrap().contains("DbgBreakPoint")
                && o["at"].as_str().unwrap().starts_with("nt!DbgBreakPoint")),
        "{other:?}"
    );
    let truth = s.sim.truth().unwrap();
    assert_counts_match(&s, &j, &truth);
    // PoolHitTag is back; the driver's own assertion may stop the target
    // again after pooldump left (it waits for a debugger, as Windows
    // does), but nothing else may.
    let v = s.sim.peek(s.hit_tag_va, 4).unwrap();
    assert_eq!(v, 0xFFFF_FF0Fu32.to_le_bytes());
    // (The sim's truth does not say where it stopped: nt!DbgBreakPoint
    // is nt's code the kit runs on the host, not an int3 it records.)
    let st = s.sim.stats();
    if !st.running {
        assert_eq!(
            st.stopped_pc,
            Some(s.dbg_break_point),
            "left stopped elsewhere than the driver's assertion\n{st:?}\n{}\n{}",
            out.stderr,
            j["kdnet"]
        );
    }
}

#[test]
fn a_stop_under_way_when_the_tag_is_restored_is_resumed() {
    // A processor frozen by the last break-in between its tag check and
    // its int3 breaks as soon as the target runs again, after pooldump
    // restored PoolHitTag and resumed it; with no debugger the kernel
    // would wait for one. pooldump stays until the target has run a
    // while without stopping.
    let stop = |pc| StopOnResume {
        after_writes: 2,
        event: SimEvent::Breakpoint { processor: 1, pc },
    };
    let s = setup_stopping_on_resume(
        NtBuild::Win10_19041,
        Faults::default(),
        Workload::leak(),
        Some(&stop),
    );
    let out = run_bounded(
        &mut hittag_cmd(&s, &["--tag", "Leak", "--hits", "5", "--json"]),
        Duration::from_secs(120),
    );
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["restored"], true);
    let st = s.sim.stats();
    assert_eq!(st.writes, 2, "{st:?}");
    assert_restored_and_running(&s);
    // Named in the notes: as a pool hit under way or as another stop,
    // whichever the stack of the processor it is raised on reads as (the
    // simulator raises it with that processor's last registers).
    let notes = j["notes"].as_array().unwrap();
    let named = |n: &Value| {
        let n = n.as_str().unwrap();
        n.contains("already under way when nt!PoolHitTag was restored")
            || n.contains("right after nt!PoolHitTag was restored")
    };
    assert!(notes.iter().any(named), "{notes:?}");
}

#[test]
fn ctrl_c_restores_and_resumes() {
    let s = setup(NtBuild::Win10_19041, Faults::default());
    let mut child = hittag_cmd(&s, &["--tag", "Leak", "--hits", "1000000", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is collecting: the target has stopped several times.
    let t0 = Instant::now();
    while s.sim.stats().stops < 5 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no hits came");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let t1 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(60),
            "pooldump did not end after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["ended"], "interrupted");
    assert_eq!(j["restored"], true);
    assert_restored_and_running(&s);
    let truth = s.sim.truth().unwrap();
    assert_counts_match(&s, &j, &truth);
}

#[test]
fn hittag_over_a_lossy_link() {
    let s = setup(NtBuild::Win10_19041, Faults::lossy(0.10));
    let out = run_bounded(
        &mut hittag_cmd(&s, &["--tag", "Leak", "--hits", "30", "--json"]),
        Duration::from_secs(300),
    );
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["restored"], true, "{j}");
    assert_eq!(j["table"]["pool_hits"], 30, "{j}");
    assert_restored_and_running(&s);
    let truth = s.sim.truth().unwrap();
    assert_counts_match(&s, &j, &truth);
    assert_stacks_are_the_cpus(&j, &truth);
}

#[test]
fn an_outage_while_watching_is_ridden_out_and_the_tag_restored() {
    // The target stops answering for 3 s as soon as it runs with the tag
    // set; pooldump's break-in to restore it keeps trying through the
    // outage.
    let s = setup_struck_when_watched(MishapKind::Silent(Duration::from_secs(3)));
    let out = watch_leak_for(&s, "1", &["--json"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["restored"], true, "{j}");
    assert!(s.sim.stats().ignored_while_silent > 0, "no outage happened");
    assert_restored_and_running(&s);
}

#[test]
fn a_link_lost_for_good_while_watching_says_the_tag_is_still_set() {
    // Silent for longer than pooldump waits: PoolHitTag cannot be set
    // back, and the user is told how to do it by hand.
    let s = setup_struck_when_watched(MishapKind::Silent(Duration::from_secs(600)));
    let out = watch_leak_for(&s, "1", &[]);
    assert_ne!(out.code(), Some(0), "{}", out.stdout);
    // Said once, as the error.
    assert_eq!(
        out.stderr.matches("restoring nt!PoolHitTag at").count(),
        1,
        "{}",
        out.stderr
    );
    support::assert_contains_all(
        "restore failed",
        &out.stderr,
        &[
            "restoring nt!PoolHitTag at",
            "to ffffff0f",
            "the target may still break on every Leak",
            "ed nt!PoolHitTag ffffff0f",
        ],
    );
    // It is still set: the message is true.
    let v = s.sim.peek(s.hit_tag_va, 4).expect("PoolHitTag is mapped");
    assert_eq!(&v, b"Leak");
}

#[test]
fn a_tag_nobody_allocates_ends_at_the_time_limit_restored() {
    let s = setup(NtBuild::Win10_19041, Faults::default());
    let out = run_bounded(
        &mut hittag_cmd(&s, &["--tag", "Zzzz", "--seconds", "2"]),
        Duration::from_secs(120),
    );
    support::assert_contains(out.ok(), "no allocation or free with tag Zzzz in 2 s");
    assert_restored_and_running(&s);
}

#[test]
fn useless_tags_are_refused_before_touching_the_target() {
    let s = setup(NtBuild::Win10_19041, Faults::default());
    for tag in ["0x0", "    "] {
        let out = run_bounded(
            &mut hittag_cmd(&s, &["--tag", tag, "--seconds", "2"]),
            Duration::from_secs(60),
        );
        assert_ne!(out.code(), Some(0));
        assert!(out.stderr.contains("--tag"), "{}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    assert_eq!(s.sim.stats().handshakes, 0, "the target was contacted");
}

/// The network machine: the miniport nicmini.sys allocates its 'NmRx'
/// buffers through ndis.sys's NdisAllocateMemoryWithTagPriority, which
/// calls nt's pool (a frame of its own), and frees them through
/// NdisFreeMemoryWithTagPriority, which tail-calls nt's. The sites are the
/// miniport's calls, as the CPU recorded them; the allocations are
/// NDIS's routine's, with the length the miniport asked for.
#[test]
fn a_miniports_pool_calls_through_ndis_are_its_own() {
    for build in [NtBuild::Win10_19041, NtBuild::Win10_17763] {
        let j = watch_checked(build, 31, |s| s.ndis = true, Workload::network(), "NmRx");
        let rows = j["table"]["sites"].as_array().unwrap();
        let mut kinds = Vec::new();
        for row in rows {
            let site = row["site"].as_str().unwrap();
            assert!(site.starts_with("nicmini!Nm"), "{build:?}: {row}");
            kinds.push((site.to_string(), row["decided_by"].to_string()));
        }
        assert!(
            kinds
                .iter()
                .any(|(s, d)| s.starts_with("nicmini!NmReceive+")
                    && d.contains("NdisAllocateMemoryWithTagPriority")),
            "{build:?}: {kinds:?}"
        );
        assert!(
            kinds
                .iter()
                .any(|(s, _)| s.starts_with("nicmini!NmReturn+")),
            "{build:?}: {kinds:?}"
        );
    }
}

/// KMDF on a running target: kmdfdrv.sys calls the framework (Wdf01000.sys)
/// through its function table for buffers with its DriverPoolTag 'KmDr',
/// and the framework allocates with that tag for requests it dispatches
/// from nt's worker thread. `hittag --tag KmDr` names the driver's frames
/// where the driver called the framework (with the framework's entry it
/// went through) and the framework's where nt did, with the counts and the
/// bytes the simulated CPU recorded.
#[test]
fn a_kmdf_drivers_calls_through_the_framework_are_its_own() {
    for build in [NtBuild::Win10_19041, NtBuild::Win10_17763] {
        let j = watch_checked(build, 33, |s| s.kmdf = true, Workload::kmdf(), "KmDr");
        let rows: Vec<(String, String)> = j["table"]["sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let through = r["through"].as_str().unwrap_or("");
                (r["site"].as_str().unwrap().to_string(), through.to_string())
            })
            .collect();
        let has = |site: &str, through: &str| {
            rows.iter()
                .any(|(s, t)| s.starts_with(site) && t.starts_with(through))
        };
        assert!(
            has("kmdfdrv!KmEvtIoRead+", "Wdf01000!imp_WdfMemoryCreate+"),
            "{build:?}: {rows:?}"
        );
        assert!(has("Wdf01000!FxPoolAllocate+", ""), "{build:?}: {rows:?}");
        // A driver's frame is only ever named through the framework.
        for (site, through) in &rows {
            assert_eq!(
                site.starts_with("kmdfdrv!"),
                !through.is_empty(),
                "{build:?}: {rows:?}"
            );
        }
    }
}
