//! `pooldump hittag` as a user runs it (the whole process, default
//! settings) against the simulated target running the leak workload on
//! loopback: hits per second, KDNET round trips per hit, and what the
//! stack analysis reads per hit (the first hit reads the modules' unwind
//! data, code and import tables; later hits should read only the stack).
//!
//! Run with `cargo bench --bench hittag`. Each row is the median of three
//! runs; "marginal" compares a 250-hit run with a 50-hit one, so the
//! connection and the first hits' cost drop out.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pooldump_kdnet_sim::{Faults, SimConfig, SimTarget, Workload};
use pooldump_kit::{Machine, NtBuild, Scenario};
use serde_json::Value;

mod common;

const KEY: &str = "1.2.3.4";

struct Run {
    wall: Duration,
    hits: u64,
    round_trips: u64,
    later_hits: u64,
    later_stack_reads: u64,
    later_image_reads: u64,
    first_image_reads: u64,
    first_stack_reads: u64,
}

fn pooldump() -> std::path::PathBuf {
    // The release binary next to this bench's.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("pooldump");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --release` first (cargo bench builds only the bench)",
        p.display()
    );
    p
}

fn run_once(build: NtBuild, loss: f64, hits: u64, symbols: &Path) -> Run {
    let m = Machine::build(&Scenario::small(build, 41));
    m.write_symbol_store(symbols).unwrap();
    let port = common::free_port();
    let mut cfg = SimConfig::new(KEY.parse().unwrap(), (Ipv4Addr::LOCALHOST, port).into());
    cfg.workload = Some(Workload::leak());
    cfg.speed = 600.0;
    cfg.faults = Faults::lossy(loss);
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let t = Instant::now();
    let out = Command::new(pooldump())
        .args([
            "hittag",
            "--kdnet",
            &format!("port={port},key={KEY},bind=127.0.0.1"),
            "--tag",
            "Leak",
            "--hits",
            &hits.to_string(),
            "--json",
            "--offline",
            "--symbol-path",
        ])
        .arg(symbols)
        .output()
        .unwrap();
    let wall = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(sim);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &j["analysis_reads"];
    Run {
        wall,
        hits: j["table"]["pool_hits"].as_u64().unwrap(),
        round_trips: j["kdnet"]["round_trips"].as_u64().unwrap_or(0),
        later_hits: r["later_hits"].as_u64().unwrap(),
        later_stack_reads: r["later_stack"]["reads"].as_u64().unwrap(),
        later_image_reads: r["later_image"]["reads"].as_u64().unwrap(),
        first_image_reads: r["first_hit_image"]["reads"].as_u64().unwrap(),
        first_stack_reads: r["first_hit_stack"]["reads"].as_u64().unwrap(),
    }
}

fn median(mut v: Vec<Run>) -> Run {
    v.sort_by_key(|r| r.wall);
    v.swap_remove(v.len() / 2)
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let dir = tempfile::tempdir().unwrap();
    println!(
        "{:<22} {:>5} {:>6} {:>9} {:>10} {:>12} {:>12} {:>14} {:>14}",
        "build / loss",
        "hits",
        "wall s",
        "hits/s",
        "marg. h/s",
        "RT/hit",
        "marg. RT/hit",
        "1st hit reads",
        "later reads/hit"
    );
    for (build, loss) in [
        (NtBuild::Win10_19041, 0.0),
        (NtBuild::Win10_17763, 0.0),
        (NtBuild::Win10_19041, 0.10),
    ] {
        let small = median(
            (0..3)
                .map(|_| run_once(build, loss, 50, dir.path()))
                .collect(),
        );
        let big = median(
            (0..3)
                .map(|_| run_once(build, loss, 250, dir.path()))
                .collect(),
        );
        let dh = (big.hits - small.hits) as f64;
        let dt = big.wall.as_secs_f64() - small.wall.as_secs_f64();
        let drt = big.round_trips as f64 - small.round_trips as f64;
        println!(
            "{:<22} {:>5} {:>6.2} {:>9.0} {:>10.0} {:>12.1} {:>12.1} {:>7} img {:>3} stk {:>5.2} img {:>4.2} stk",
            format!("{} {:.0}%", build.name(), loss * 100.0),
            big.hits,
            big.wall.as_secs_f64(),
            big.hits as f64 / big.wall.as_secs_f64(),
            dh / dt.max(1e-9),
            big.round_trips as f64 / big.hits as f64,
            drt / dh,
            big.first_image_reads,
            big.first_stack_reads,
            big.later_image_reads as f64 / big.later_hits.max(1) as f64,
            big.later_stack_reads as f64 / big.later_hits.max(1) as f64,
        );
    }
}
