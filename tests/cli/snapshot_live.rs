//! Snapshots of a live target: `snapshot --kdnet` and `watch --kdnet`
//! against the simulated KDNET target on loopback. The rows are the kit's
//! truth, the clocks come from KUSER_SHARED_DATA (there is no dump header),
//! and the target is let run after every snapshot.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pooldump_core::snapshot::Snapshot;
use pooldump_kdnet_sim::{SimConfig, SimTarget};
use pooldump_kit::{Machine, NtBuild, Scenario};
use support::{Finished, pooldump};

const KEY: &str = "1.2.3.4";

struct Live {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    symbols: String,
    spec: String,
    sim: SimTarget,
    truth: pooldump_kit::GroundTruth,
}

/// The kit's small machine built from `seed`, simulated on loopback with
/// the settings `adjust` makes; its symbol store in a fresh directory.
fn live(seed: u64, adjust: impl FnOnce(&mut SimConfig)) -> Live {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, seed));
    let truth = m.truth.clone();
    let dir = tempfile::tempdir().unwrap();
    let symbols = dir.path().join("symbols");
    m.write_symbol_store(&symbols).unwrap();
    let (mut cfg, port) = support::loopback_sim(KEY);
    adjust(&mut cfg);
    let sim = SimTarget::spawn(m, cfg).unwrap();
    Live {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        symbols: symbols.display().to_string(),
        spec: format!("port={port},key={KEY},bind=127.0.0.1"),
        sim,
        truth,
    }
}

impl Live {
    /// `pooldump CMD --kdnet SPEC ARGS.. --symbol-path SYMBOLS --offline
    /// --no-cache`, which must succeed.
    fn run(&self, cmd: &str, args: &[&str]) -> Finished {
        let mut a = vec![cmd, "--kdnet", &self.spec];
        a.extend_from_slice(args);
        a.extend(["--symbol-path", &self.symbols, "--offline", "--no-cache"]);
        let r = pooldump(&a);
        assert_eq!(r.code(), Some(0), "{a:?}: {}\n{}", r.stdout, r.stderr);
        r
    }
}

/// Rows by (tag, PoolMon's pool name): (allocs, frees, bytes).
type Rows = BTreeMap<(u32, String), (u64, u64, i64)>;

/// The rows of the kit's truth that PoolMon shows (any activity).
fn truth_rows(truth: &pooldump_kit::GroundTruth) -> Rows {
    truth
        .tags
        .iter()
        .filter(|t| t.reported_allocs > 0 || t.bytes > 0)
        .map(|t| {
            (
                (t.tag_value, t.pool.clone()),
                (t.reported_allocs, t.reported_frees, t.bytes as i64),
            )
        })
        .collect()
}

fn snapshot_rows(s: &Snapshot) -> Rows {
    s.rows
        .iter()
        .map(|r| {
            (
                (r.tag.value(), r.pool.poolmon().to_string()),
                (r.allocs, r.frees, r.bytes as i64),
            )
        })
        .collect()
}

/// The files a watch wrote into `out`, in their order.
fn watched(out: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn check_rows(s: &Snapshot, truth: &pooldump_kit::GroundTruth) {
    assert_eq!(snapshot_rows(s), truth_rows(truth));
    assert_eq!(s.kernel.kern_base.0, truth.kernel.kern_base);
    assert_eq!(s.time.uptime_100ns, Some(truth.kernel.interrupt_time));
    assert_eq!(s.time.system_time_filetime, Some(truth.kernel.system_time));
}

#[test]
fn snapshot_of_a_live_target_is_the_truth_and_resumes_it() {
    let l = live(51, |_| {});
    let out = l.dir.join("live.json");
    l.run("snapshot", &["-o", out.to_str().unwrap()]);
    let s = Snapshot::from_json(&std::fs::read(&out).unwrap(), "live.json").unwrap();
    assert_eq!(
        serde_json::to_value(s.source.kind).unwrap(),
        "kdnet",
        "{:?}",
        s.source
    );
    assert_eq!(
        serde_json::to_value(s.time.clock_source).unwrap(),
        "kuser-shared-data"
    );
    check_rows(&s, &l.truth);
    assert!(l.sim.stats().continues >= 1, "{:?}", l.sim.stats());
}

#[test]
fn watch_takes_snapshots_and_lets_the_target_run_in_between() {
    let l = live(52, |_| {});
    let out = l.dir.join("watch");
    let r = l.run(
        "watch",
        &[
            "--interval",
            "200ms",
            "--count",
            "3",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let files = watched(&out);
    assert_eq!(files.len(), 3, "{files:?}");
    for (i, f) in files.iter().enumerate() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!("{:04}-", i + 1)) && name.ends_with("Z.json"),
            "{name}"
        );
        let s = Snapshot::from_json(&std::fs::read(f).unwrap(), &name).unwrap();
        check_rows(&s, &l.truth);
    }
    let stats = l.sim.stats();
    // Stopped for each snapshot, running again after each.
    assert!(stats.breakins >= 3, "{stats:?}");
    assert!(stats.continues >= 3, "{stats:?}");
    assert!(r.stdout.contains("3 snapshot(s) written"), "{}", r.stdout);

    // A second watch continues the numbering.
    l.run(
        "watch",
        &[
            "--interval",
            "100ms",
            "--count",
            "1",
            "--out",
            out.to_str().unwrap(),
            "--no-image-search",
        ],
    );
    assert!(std::fs::read_dir(&out).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("0004-")
    }));

    // The series is a valid trend input (the simulated machine stands
    // still, so nothing grows).
    let r = pooldump(&["trend", out.to_str().unwrap(), "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let t: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        support::items(&t["tags"]).all(|x| x["verdict"] == "flat"),
        "{t:#}"
    );
}

#[test]
fn watch_refuses_bad_arguments_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (args, why) in [
        (
            vec!["--kdnet", "port=1,key=1.2.3", "--out", d],
            "four dot-separated parts",
        ),
        (
            vec![
                "--kdnet",
                "port=1,key=1.2.3.4",
                "--interval",
                "0s",
                "--out",
                d,
            ],
            "--interval",
        ),
        (
            vec![
                "--kdnet",
                "port=1,key=1.2.3.4",
                "--interval",
                "soon",
                "--out",
                d,
            ],
            "soon",
        ),
    ] {
        let mut a = vec!["watch"];
        a.extend(args);
        let r = pooldump(&a);
        assert_ne!(r.code(), Some(0));
        assert!(r.stderr.contains(why), "{why}: {}", r.stderr);
    }
}

/// Issue 11: on a target that runs, `watch` sees the leak grow live. The
/// simulated machine executes the drivers' work items between snapshots
/// (leakydrv leaks `Leak`, the others balance), its clock advancing in
/// KUSER_SHARED_DATA as Windows' does; `trend` over the watched series
/// finds the steady leak; and a snapshot of the frozen machine equals the
/// tracker as the CPU left it (the boot's rows plus every pool call the
/// CPU made, counted by the simulator, not read back from memory).
#[test]
fn watch_over_a_running_target_sees_the_leak_grow() {
    use pooldump_kdnet_sim::Workload;
    let l = live(53, |cfg| {
        cfg.workload = Some(Workload::leak());
        // Two simulated minutes per real second.
        cfg.speed = 120.0;
    });
    let out = l.dir.join("watch");
    l.run(
        "watch",
        &[
            "--interval",
            "1s",
            "--count",
            "5",
            "--out",
            out.to_str().unwrap(),
            "--no-image-search",
        ],
    );
    let files = watched(&out);
    assert_eq!(files.len(), 5, "{files:?}");
    let leak = |s: &Snapshot| {
        s.rows
            .iter()
            .find(|r| &r.tag.bytes() == b"Leak")
            .map(|r| r.allocs - r.frees)
            .unwrap_or_default()
    };
    let snaps: Vec<Snapshot> = files
        .iter()
        .map(|f| Snapshot::from_json(&std::fs::read(f).unwrap(), "watch").unwrap())
        .collect();
    for w in snaps.windows(2) {
        // Outstanding allocations grow (bytes swing with leakydrv's
        // short-lived 12 KiB buffers), and the machine's clock moved on.
        assert!(leak(&w[1]) > leak(&w[0]), "{} {}", leak(&w[0]), leak(&w[1]));
        assert!(w[1].time.uptime_100ns > w[0].time.uptime_100ns);
    }
    // Ranked by live allocations: leakydrv's own 12 KiB buffers, allocated
    // and freed under the same tag, swing its bytes more than a few
    // minutes of the leak add.
    let r = pooldump(&["trend", out.to_str().unwrap(), "--by", "diff", "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let t: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let first = &t["tags"][0];
    assert_eq!(first["tag"], "Leak", "{t:#}");
    assert_eq!(first["verdict"], "steady-growth", "{t:#}");

    // Freeze the clock, snapshot, and compare with the CPU's own record.
    l.sim.set_speed(0.0);
    let one = l.dir.join("frozen.json");
    l.run(
        "snapshot",
        &["-o", one.to_str().unwrap(), "--no-image-search"],
    );
    let s = Snapshot::from_json(&std::fs::read(&one).unwrap(), "frozen.json").unwrap();
    let ran = l.sim.truth().expect("the machine ran");
    assert!(ran.invalid.is_empty(), "{:?}", ran.invalid);
    // The boot's rows plus what the CPU did since.
    let mut want = truth_rows(&l.truth);
    for (&(tag, paged), &(a, f, b)) in &ran.tags {
        let pool = if paged { "Paged" } else { "Nonp" };
        let e = want.entry((tag, pool.to_string())).or_default();
        e.0 += a;
        e.1 += f;
        e.2 += b;
    }
    want.retain(|_, v| v.0 > 0 || v.2 != 0);
    assert_eq!(snapshot_rows(&s), want);
    assert!(l.sim.stats().running);
}
