//! Snapshots of a live target: `snapshot --kdnet` and `watch --kdnet`
//! against the simulated KDNET target on loopback. The rows are the kit's
//! truth, the clocks come from KUSER_SHARED_DATA (there is no dump header),
//! and the target is let run after every snapshot.

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use pooldump_core::snapshot::Snapshot;
use pooldump_kdnet_sim::{SimConfig, SimTarget};
use pooldump_kit::{Machine, NtBuild, Scenario};
use support::{Finished, repo_root, run_bounded};

const KEY: &str = "1.2.3.4";

fn pooldump(args: &[&str]) -> Finished {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pooldump"));
    c.args(args)
        .env_remove("_NT_SYMBOL_PATH")
        .current_dir(repo_root());
    // Hang detector, not a timing test.
    run_bounded(&mut c, Duration::from_secs(240))
}

/// A free UDP port on loopback (released before the CLI binds it).
fn free_port() -> u16 {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    s.local_addr().unwrap().port()
}

struct Live {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    symbols: String,
    spec: String,
    sim: SimTarget,
    truth: pooldump_kit::GroundTruth,
}

fn live(seed: u64) -> Live {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, seed));
    let truth = m.truth.clone();
    let dir = tempfile::tempdir().unwrap();
    let symbols = dir.path().join("symbols");
    m.write_symbol_store(&symbols).unwrap();
    let port = free_port();
    let cfg = SimConfig::new(KEY.parse().unwrap(), (Ipv4Addr::LOCALHOST, port).into());
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

fn check_rows(s: &Snapshot, truth: &pooldump_kit::GroundTruth) {
    let want: BTreeMap<(u32, String), (u64, u64, u64)> = truth
        .tags
        .iter()
        .filter(|t| t.reported_allocs > 0 || t.bytes > 0)
        .map(|t| {
            (
                (t.tag_value, t.pool.clone()),
                (t.reported_allocs, t.reported_frees, t.bytes),
            )
        })
        .collect();
    let got: BTreeMap<(u32, String), (u64, u64, u64)> = s
        .rows
        .iter()
        .map(|r| {
            (
                (r.tag.value(), r.pool.poolmon().to_string()),
                (r.allocs, r.frees, r.bytes),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(s.kernel.kern_base.0, truth.kernel.kern_base);
    assert_eq!(s.time.uptime_100ns, Some(truth.kernel.interrupt_time));
    assert_eq!(s.time.system_time_filetime, Some(truth.kernel.system_time));
}

#[test]
fn snapshot_of_a_live_target_is_the_truth_and_resumes_it() {
    let l = live(51);
    let out = l.dir.join("live.json");
    let r = pooldump(&[
        "snapshot",
        "--kdnet",
        &l.spec,
        "-o",
        out.to_str().unwrap(),
        "--symbol-path",
        &l.symbols,
        "--offline",
        "--no-cache",
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
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
    let l = live(52);
    let out = l.dir.join("watch");
    let r = pooldump(&[
        "watch",
        "--kdnet",
        &l.spec,
        "--interval",
        "200ms",
        "--count",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--symbol-path",
        &l.symbols,
        "--offline",
        "--no-cache",
    ]);
    assert_eq!(r.code(), Some(0), "{}\n{}", r.stdout, r.stderr);
    let mut files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
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
    let r = pooldump(&[
        "watch",
        "--kdnet",
        &l.spec,
        "--interval",
        "100ms",
        "--count",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--symbol-path",
        &l.symbols,
        "--offline",
        "--no-cache",
        "--no-image-search",
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
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
        t["tags"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["verdict"] == "flat"),
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
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 53));
    let boot = m.truth.clone();
    let dir = tempfile::tempdir().unwrap();
    let symbols = dir.path().join("symbols");
    m.write_symbol_store(&symbols).unwrap();
    let symbols = symbols.display().to_string();
    let port = free_port();
    let mut cfg = SimConfig::new(KEY.parse().unwrap(), (Ipv4Addr::LOCALHOST, port).into());
    cfg.workload = Some(Workload::leak());
    // Two simulated minutes per real second.
    cfg.speed = 120.0;
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let spec = format!("port={port},key={KEY},bind=127.0.0.1");
    let out = dir.path().join("watch");
    let r = pooldump(&[
        "watch",
        "--kdnet",
        &spec,
        "--interval",
        "1s",
        "--count",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--symbol-path",
        &symbols,
        "--offline",
        "--no-cache",
        "--no-image-search",
    ]);
    assert_eq!(r.code(), Some(0), "{}\n{}", r.stdout, r.stderr);
    let mut files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
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
    sim.set_speed(0.0);
    let one = dir.path().join("frozen.json");
    let r = pooldump(&[
        "snapshot",
        "--kdnet",
        &spec,
        "-o",
        one.to_str().unwrap(),
        "--symbol-path",
        &symbols,
        "--offline",
        "--no-cache",
        "--no-image-search",
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let s = Snapshot::from_json(&std::fs::read(&one).unwrap(), "frozen.json").unwrap();
    let ran = sim.truth().expect("the machine ran");
    assert!(ran.invalid.is_empty(), "{:?}", ran.invalid);
    let mut want: BTreeMap<(u32, String), (u64, u64, i64)> = boot
        .tags
        .iter()
        .filter(|t| t.reported_allocs > 0 || t.bytes > 0)
        .map(|t| {
            (
                (t.tag_value, t.pool.clone()),
                (t.reported_allocs, t.reported_frees, t.bytes as i64),
            )
        })
        .collect();
    for (&(tag, paged), &(a, f, b)) in &ran.tags {
        let pool = if paged { "Paged" } else { "Nonp" };
        let e = want.entry((tag, pool.to_string())).or_default();
        e.0 += a;
        e.1 += f;
        e.2 += b;
    }
    let got: BTreeMap<(u32, String), (u64, u64, i64)> = s
        .rows
        .iter()
        .map(|r| {
            (
                (r.tag.value(), r.pool.poolmon().to_string()),
                (r.allocs, r.frees, r.bytes as i64),
            )
        })
        .collect();
    want.retain(|_, v| v.0 > 0 || v.2 != 0);
    assert_eq!(got, want);
    assert!(sim.stats().running);
}
