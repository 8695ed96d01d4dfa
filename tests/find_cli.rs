//! `pooldump find` end to end: the bundled sample against its ground
//! truth in every output format, `--tags-from`, and bad input (an error
//! that names the input and the problem, or a partial result with a
//! warning; never a panic or a hang).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pooldump_kit::corrupt::{Corruption, FileCorruption, corrupt_file};
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
use support::{Finished, repo_root, run_bounded};

fn pooldump(args: &[&str]) -> Finished {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pooldump"));
    c.args(args)
        .env_remove("_NT_SYMBOL_PATH")
        .current_dir(repo_root());
    // Hang detector, not a timing test.
    run_bounded(&mut c, Duration::from_secs(120))
}

/// `pooldump find` on a dump with the symbol store next to it.
fn find(dump: &Path, extra: &[&str]) -> Finished {
    let syms = dump.parent().unwrap().join("symbols");
    let (d, s) = (dump.display().to_string(), syms.display().to_string());
    let mut a = vec!["find", &d, "--symbol-path", &s, "--offline", "--no-cache"];
    a.extend_from_slice(extra);
    pooldump(&a)
}

fn sample_dump() -> std::path::PathBuf {
    repo_root().join("testdata/sample/MEMORY.DMP")
}

fn truth() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("testdata/sample/truth.json")).unwrap(),
    )
    .unwrap()
}

/// Live in-dump allocations of `tag` in the truth, by allocation address.
fn live(t: &serde_json::Value, tag: &str) -> BTreeSet<u64> {
    t["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["tag"] == tag && a["live"] == true && a["in_dump"] == true)
        .map(|a| a["va"].as_u64().unwrap())
        .collect()
}

fn va(s: &str) -> u64 {
    u64::from_str_radix(&s.replace('`', ""), 16).unwrap()
}

#[test]
fn json_lists_what_the_truth_holds() {
    let r = find(
        &sample_dump(),
        &["--tag", "Leak", "--tag", "NSbf", "--json"],
    );
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["schema"], "pooldump.find/2");
    let t = truth();
    for tag in ["Leak", "NSbf"] {
        let got: BTreeSet<u64> = j["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["tag"] == tag && a["state"] == "allocated")
            .map(|a| va(a["va"].as_str().unwrap()))
            .collect();
        assert_eq!(got, live(&t, tag), "{tag}");
        let row = j["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["tag"] == tag)
            .unwrap();
        assert_eq!(row["allocated"].as_u64().unwrap() as usize, got.len());
        assert_eq!(row["not_found"], 0, "{tag}");
    }
    // NSbf (0x1000-0x6000 bytes) lives only in the big-page table.
    assert!(
        j["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["tag"] == "NSbf")
            .all(|a| a["allocator"] == "big-pool" && a["header"].is_null())
    );
}

#[test]
fn text_csv_and_tags_from() {
    let dir = tempfile::tempdir().unwrap();
    let tags = dir.path().join("sites.txt");
    std::fs::write(
        &tags,
        "# one fresh tag per call site\nLeak\n\nIrp\nZzz9\r\n",
    )
    .unwrap();
    let tags = tags.display().to_string();
    let t = truth();

    let r = find(&sample_dump(), &["--tags-from", &tags]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("Per tag"), "{}", r.stdout);
    assert!(
        r.stdout.contains("Zzz9"),
        "a tag with no allocation still gets a row"
    );
    assert!(r.stdout.contains("LFH") || r.stdout.contains("VS"));

    let r = find(
        &sample_dump(),
        &["--tags-from", &tags, "--csv", "--allocated"],
    );
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let mut lines = r.stdout.lines();
    assert!(lines.next().unwrap().starts_with("va,header,pa,bytes,pool"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), live(&t, "Leak").len() + live(&t, "Irp ").len());
    assert!(rows.iter().all(|r| r.contains(",allocated,")));

    let r = find(
        &sample_dump(),
        &["--tags-from", &tags, "--csv", "--per-tag"],
    );
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let rows: Vec<&str> = r.stdout.lines().collect();
    assert!(rows[0].starts_with("tag,allocated,bytes"));
    let zzz = rows
        .iter()
        .find(|r| r.starts_with("Zzz9,"))
        .expect("Zzz9 row");
    assert!(zzz.starts_with("Zzz9,0,0,"), "{zzz}");
    let leak = rows.iter().find(|r| r.starts_with("Leak,")).unwrap();
    let n: usize = leak.split(',').nth(1).unwrap().parse().unwrap();
    assert_eq!(n, live(&t, "Leak").len());
}

#[test]
fn wildcards_and_values_find_the_same() {
    let a = find(&sample_dump(), &["--tag", "Leak", "--json"]);
    let b = find(
        &sample_dump(),
        &["--tag", "Le?k", "--tag", "0x6b61654c", "--json"],
    );
    assert_eq!(a.code(), Some(0), "{}", a.stderr);
    assert_eq!(b.code(), Some(0), "{}", b.stderr);
    let ja: serde_json::Value = serde_json::from_str(&a.stdout).unwrap();
    let jb: serde_json::Value = serde_json::from_str(&b.stdout).unwrap();
    assert_eq!(ja["allocations"], jb["allocations"]);
    // Case-sensitive, as PoolMon's are.
    let c = find(&sample_dump(), &["--tag", "leak", "--json"]);
    let jc: serde_json::Value = serde_json::from_str(&c.stdout).unwrap();
    assert_eq!(jc["allocations"].as_array().unwrap().len(), 0);
}

#[test]
fn bad_arguments_are_explained() {
    let r = find(&sample_dump(), &[]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("--tag"), "{}", r.stderr);

    let r = find(&sample_dump(), &["--tag", "Toolong"]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("Toolong"), "{}", r.stderr);

    let r = find(&sample_dump(), &["--tags-from", "/nonexistent/tags.txt"]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("/nonexistent/tags.txt"), "{}", r.stderr);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "Leak\nnot a tag\n").unwrap();
    let r = find(&sample_dump(), &["--tags-from", &bad.display().to_string()]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("line 2"), "{}", r.stderr);

    let r = find(&dir.path().join("MEMORY.DMP"), &["--tag", "Leak"]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("MEMORY.DMP"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn truncated_dump_gives_a_partial_result() {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 31));
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = m.dump_bytes(DumpKind::Full);
    let n = bytes.len() as u64;
    corrupt_file(&mut bytes, FileCorruption::Truncate(n * 2 / 3));
    let dump = dir.path().join("MEMORY.DMP");
    std::fs::write(&dump, &bytes).unwrap();
    m.write_symbol_store(&dir.path().join("symbols")).unwrap();
    let r = find(&dump, &["--tag", "Leak", "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(j["scan"]["unreadable_frames"].as_u64().unwrap() > 0);
    assert!(j["warnings"].as_array().unwrap().iter().any(
        |w| w["kind"] == "find" && w["message"].as_str().unwrap().contains("could not be read")
    ));
}

#[test]
fn hostile_page_tables_and_sizes_do_not_hang() {
    for c in [
        Corruption::PageTableLoops,
        Corruption::HugeBigTableSize,
        Corruption::BigTableIntoNowhere,
        Corruption::MissingTrackerPages,
    ] {
        let mut m = Machine::build(&Scenario::small(NtBuild::Win81_9600, 2));
        m.corrupt(c);
        let dir = tempfile::tempdir().unwrap();
        let dump = dir.path().join("MEMORY.DMP");
        m.write_dump_file(DumpKind::KernelBitmap, &dump).unwrap();
        m.write_symbol_store(&dir.path().join("symbols")).unwrap();
        let r = find(&dump, &["--tag", "Leak", "--json"]);
        assert_eq!(r.code(), Some(0), "{c:?}: {}", r.stderr);
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let want = m
            .truth
            .allocations
            .iter()
            .filter(|a| a.tag == "Leak" && a.live && a.in_dump)
            .count();
        let got = j["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["state"] == "allocated")
            .count();
        assert_eq!(got, want, "{c:?}");
    }
}

#[test]
fn live_kdnet_target_gives_what_the_dump_gives() {
    use std::net::{Ipv4Addr, UdpSocket};

    use pooldump_kdnet_sim::{SimConfig, SimTarget};

    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 23));
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("MEMORY.DMP");
    m.write_dump_file(DumpKind::KernelBitmap, &dump).unwrap();
    m.write_symbol_store(&dir.path().join("symbols")).unwrap();
    let from_dump = find(&dump, &["--tag", "Leak", "--tag", "Irp", "--json"]);
    assert_eq!(from_dump.code(), Some(0), "{}", from_dump.stderr);

    let port = {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        s.local_addr().unwrap().port()
    };
    let key = "1.2.3.4";
    let cfg = SimConfig::new(key.parse().unwrap(), (Ipv4Addr::LOCALHOST, port).into());
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let spec = format!("port={port},key={key},bind=127.0.0.1");
    let syms = dir.path().join("symbols").display().to_string();
    let live = pooldump(&[
        "find",
        "--kdnet",
        &spec,
        "--symbol-path",
        &syms,
        "--offline",
        "--no-cache",
        "--tag",
        "Leak",
        "--tag",
        "Irp",
        "--json",
    ]);
    assert_eq!(live.code(), Some(0), "{}", live.stderr);
    assert!(sim.stats().continues >= 1, "the target was not resumed");
    let a: serde_json::Value = serde_json::from_str(&from_dump.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_str(&live.stdout).unwrap();
    assert_eq!(b["source"]["live"], true);
    assert_eq!(a["allocations"], b["allocations"]);
    assert!(!a["allocations"].as_array().unwrap().is_empty());
}
