//! The whole hunt's last step on a live target that runs, over a link
//! losing, duplicating and reordering 10% of datagrams: `relabel` gives
//! each allocation site of 'Leak' its own tag in the driver's code in
//! memory, the machine runs simulated minutes (its CPU executes the
//! patched code, so the new tags appear from then on), `analyze` and
//! `find --relabel` attribute the usage to the right site with the counts
//! the CPU recorded, and `--undo` restores the bytes. The target never
//! bug-checks and is left running.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use pooldump_core::relabel::RelabelMap;
use pooldump_kdnet_sim::{Faults, SimTarget, Workload};
use pooldump_kit::{Machine, NtBuild, Scenario};
use serde_json::Value;
use support::{Finished, run_bounded};

const KEY: &str = "1.2.3.4";

fn pooldump(args: &[&str], symbols: &std::path::Path) -> Finished {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pooldump"));
    c.args(args)
        .args(["--offline", "--symbol-path"])
        .arg(symbols)
        .env_remove("_NT_SYMBOL_PATH");
    run_bounded(&mut c, Duration::from_secs(300))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(60), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn relabel_count_per_site_and_undo_over_a_lossy_link() {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 51));
    let dir = tempfile::tempdir().unwrap();
    let symbols = dir.path().join("symbols");
    m.write_symbol_store(&symbols).unwrap();
    let (mut cfg, port) = support::loopback_sim(KEY);
    cfg.faults = Faults::lossy(0.10);
    cfg.workload = Some(Workload::leak());
    cfg.speed = 60.0;
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let spec = format!("port={port},key={KEY},bind=127.0.0.1");
    let map_path = dir.path().join("relabel.json");
    let map_s = map_path.to_str().unwrap();

    // Relabel.
    let r = pooldump(
        &[
            "relabel", "--kdnet", &spec, "--tag", "Leak", "-o", map_s, "--json",
        ],
        &symbols,
    );
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let map = RelabelMap::from_json(&std::fs::read(&map_path).unwrap(), map_s).unwrap();
    let allocs: Vec<_> = map.alloc_sites().collect();
    assert_eq!(allocs.len(), 3, "{:#?}", map.sites);
    assert_eq!(map.sites.len(), 5, "three allocation sites, two free sites");
    for s in &map.sites {
        let now = sim.peek(s.immediate.0, 4).unwrap();
        assert_eq!(now, s.new_bytes, "{} not patched", s.site);
    }
    let started = sim.stats().sim_ns;

    // Simulated minutes with the new tags, then the clock stops so what
    // pooldump reads can be compared with what the CPU did.
    wait_until("five simulated minutes", || {
        sim.stats().sim_ns > started + 5 * 60 * 1_000_000_000
    });
    sim.set_speed(0.0);
    let truth = sim.truth().unwrap();
    let a = pooldump(
        &["analyze", "--kdnet", &spec, "--relabel", map_s, "--json"],
        &symbols,
    );
    assert_eq!(a.code(), Some(0), "{}", a.stderr);
    let a: Value = serde_json::from_str(&a.stdout).unwrap();
    let f = pooldump(
        &["find", "--kdnet", &spec, "--relabel", map_s, "--json"],
        &symbols,
    );
    assert_eq!(f.code(), Some(0), "{}", f.stderr);
    let f: Value = serde_json::from_str(&f.stdout).unwrap();
    let rows = a["relabel"]["rows"].as_array().unwrap();
    let frows = f["sites"].as_array().unwrap();
    for s in &allocs {
        let (n_alloc, n_free, bytes) = truth.tags[&(s.new_tag.0, false)];
        assert!(n_alloc > 0, "{} allocated nothing", s.site);
        let row = rows
            .iter()
            .find(|r| r["tag"] == s.new_tag.to_string())
            .unwrap_or_else(|| panic!("no analyze row for {}: {rows:#?}", s.site));
        assert_eq!(row["site"], s.site);
        assert_eq!(row["allocs"], n_alloc, "{}", s.site);
        assert_eq!(row["frees"], n_free, "{}", s.site);
        assert_eq!(row["bytes"], bytes as u64, "{}", s.site);
        let fr = frows
            .iter()
            .find(|r| r["tag"] == s.new_tag.to_string())
            .unwrap_or_else(|| panic!("no find row for {}: {frows:#?}", s.site));
        assert_eq!(fr["allocated"], n_alloc - n_free, "{}", s.site);
    }
    // The leak is LeakOneRecord's: its blocks are never freed; the other
    // sites' are.
    let leaky = allocs
        .iter()
        .find(|s| s.site.starts_with("leakydrv!LeakOneRecord+"))
        .unwrap();
    let (n, freed, _) = truth.tags[&(leaky.new_tag.0, false)];
    assert_eq!(freed, 0);
    assert!(n >= 100, "{n}");
    for s in allocs.iter().filter(|s| s.site != leaky.site) {
        let (n, freed, _) = truth.tags[&(s.new_tag.0, false)];
        assert!(n - freed <= 6, "{}: {n} allocated, {freed} freed", s.site);
    }
    sim.set_speed(60.0);

    // Undo: the original bytes where ours still are; a second undo finds
    // them original already.
    let u = pooldump(&["relabel", "--kdnet", &spec, "--undo", map_s], &symbols);
    assert_eq!(u.code(), Some(0), "{}", u.stderr);
    assert!(u.stdout.contains("5 site(s) restored"), "{}", u.stdout);
    for s in &map.sites {
        assert_eq!(
            sim.peek(s.immediate.0, 4).unwrap(),
            s.old_bytes,
            "{}",
            s.site
        );
    }
    let u = pooldump(&["relabel", "--kdnet", &spec, "--undo", map_s], &symbols);
    assert_eq!(u.code(), Some(0), "{}", u.stderr);
    assert!(
        u.stdout.contains("0 site(s) restored, 5 already original"),
        "{}",
        u.stdout
    );

    // A map of another boot is refused, and changes nothing.
    let mut other: Value = serde_json::from_slice(&std::fs::read(&map_path).unwrap()).unwrap();
    other["target"]["kern_base"] = Value::String("0xfffff80000000000".into());
    let other_path = dir.path().join("other.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    let u = pooldump(
        &[
            "relabel",
            "--kdnet",
            &spec,
            "--undo",
            other_path.to_str().unwrap(),
        ],
        &symbols,
    );
    assert_ne!(u.code(), Some(0));
    assert!(u.stderr.contains("not for this boot"), "{}", u.stderr);

    // Never a bug check; the target runs.
    wait_until("the target runs", || sim.stats().running);
    let st = sim.stats();
    assert!(!st.bugchecked, "{st:?}");
    let truth = sim.truth().unwrap();
    assert!(truth.bugcheck.is_none());
    assert!(truth.invalid.is_empty(), "{:?}", truth.invalid);
}
