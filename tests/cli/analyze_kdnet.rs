//! `analyze --kdnet` against the simulated target gives the same table as
//! `analyze` on a dump of the same synthetic kernel, over a lossy link
//! (10% loss, duplicates and reordering), and leaves the target running;
//! the same for session pool (`--session`).

use crate::support;

use std::net::Ipv4Addr;

use pooldump_kdnet_sim::{Faults, SimConfig, SimTarget};
use pooldump_kit::{Machine, NtBuild, Scenario};
use serde_json::Value;

const KEY: &str = "9.8.7.6";

fn analyze(args: &[&str]) -> Value {
    let mut a = vec!["analyze", "--offline", "--no-cache", "--json"];
    a.extend_from_slice(args);
    support::pooldump(&a).json()
}

#[test]
fn live_table_equals_the_dump_table_over_a_lossy_link() {
    for build in [NtBuild::Win10_19041, NtBuild::Win7_7601] {
        let mut s = Scenario::small(build, 33);
        s.cpus = 2;
        let m = Machine::build(&s);
        let dir = tempfile::tempdir().unwrap();
        let (dump, syms) = support::write_dump_and_symbols(&m, dir.path());
        let syms = syms.display().to_string();

        let (mut cfg, port) = support::loopback_sim(KEY);
        cfg.faults = Faults::lossy(0.10);
        let sim = SimTarget::spawn(m, cfg).unwrap();
        // Default settings: the retransmission timer adapts to loopback's
        // microsecond round trips by itself (no `retry=`).
        let spec = format!("port={port},key={KEY},bind=127.0.0.1");

        let live = analyze(&["--kdnet", &spec, "--symbol-path", &syms, "--big-pool"]);
        let from_dump = analyze(&[dump.to_str().unwrap(), "--symbol-path", &syms, "--big-pool"]);
        assert!(live["source"]["live"].as_bool().unwrap());
        assert!(!live["rows"].as_array().unwrap().is_empty());
        assert_eq!(live["rows"], from_dump["rows"], "{build}: per-tag rows");
        assert_eq!(live["totals"], from_dump["totals"], "{build}");
        assert_eq!(
            live["big_pool"], from_dump["big_pool"],
            "{build}: big-page table"
        );
        assert!(
            sim.stats().continues >= 1,
            "{build}: the target was resumed"
        );
        // Session pool: the process list and each session's table through
        // its processes' page tables, over the same lossy link (one build:
        // each run costs a connection and a break-in).
        if build != NtBuild::Win10_19041 {
            continue;
        }
        // With the binaries on the symbol path too, the Mapped_Driver
        // search reads their sections from the files (checked against the
        // headers in memory): the same rows for fewer reads over the wire.
        let with_images = dir.path().join("with-images");
        let frozen = sim.stop().expect("the machine back");
        frozen.write_symbol_store(&with_images).unwrap();
        frozen.write_image_files(&with_images).unwrap();
        let with_images = with_images.display().to_string();
        let mut cfg = SimConfig::new(KEY.parse().unwrap(), (Ipv4Addr::LOCALHOST, port).into());
        cfg.faults = Faults::lossy(0.10);
        let sim = SimTarget::spawn(frozen, cfg).unwrap();
        let plain = analyze(&["--kdnet", &spec, "--symbol-path", &syms]);
        let files = analyze(&["--kdnet", &spec, "--symbol-path", &with_images]);
        assert_eq!(
            files["rows"], plain["rows"],
            "{build}: rows with image files"
        );
        let reads = |v: &Value| v["kdnet"]["reads"].as_u64().unwrap();
        assert!(
            reads(&files) < reads(&plain),
            "{build}: {} reads with image files, {} without",
            reads(&files),
            reads(&plain)
        );

        let live = analyze(&["--kdnet", &spec, "--symbol-path", &syms, "--session"]);
        let from_dump = analyze(&[dump.to_str().unwrap(), "--symbol-path", &syms, "--session"]);
        assert_eq!(
            live["sessions"].as_array().map(Vec::len),
            Some(2),
            "{build}: {live}"
        );
        assert_eq!(live["sessions"], from_dump["sessions"], "{build}: sessions");
        assert!(sim.stats().running, "{build}: the target was left stopped");
    }
}

/// `examples/live.rs`, the library on a live target: the five tags with the
/// most bytes, as `analyze -s bytes` lists them, and the target left
/// running.
#[test]
fn the_live_example_prints_the_top_tags_and_resumes_the_target() {
    let Some(exe) = support::example("live") else {
        return;
    };
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 34));
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = support::write_dump_and_symbols(&m, dir.path());
    let syms = syms.display().to_string();
    let (cfg, port) = support::loopback_sim(KEY);
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let spec = format!("port={port},key={KEY},bind=127.0.0.1");
    let out = support::run_bounded(
        std::process::Command::new(&exe).args([spec.as_str(), syms.as_str()]),
        support::CLI_LIMIT,
    );
    let printed = out.ok();
    let table = analyze(&[
        dump.to_str().unwrap(),
        "--symbol-path",
        &syms,
        "-s",
        "bytes",
        "--top",
        "5",
    ]);
    let want: String = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {} bytes\n",
                r["tag"].as_str().unwrap(),
                r["type"].as_str().unwrap(),
                r["bytes"]
            )
        })
        .collect();
    assert_eq!(printed, want);
    assert!(
        sim.stats().continues >= 1 && sim.stats().running,
        "the target was left stopped"
    );
}
