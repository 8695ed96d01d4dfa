//! `pooldump find --bytes N`: each listed allocation's first bytes, held
//! against what the kit machine that wrote the dump has at that address
//! (its own page tables and memory, not pooldump's reader), in JSON, CSV
//! and text, sorted and `--unsorted`, and from a live target.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;

use crate::find_cli::{pooldump, va};
use pooldump_kdnet_sim::SimTarget;
use pooldump_kit::{Machine, NtBuild, Scenario};
use support::repo_root;

/// `find` on `source` (a dump, or `--kdnet SPEC`) with the symbols in `syms`.
fn find(source: &[&str], syms: &Path, extra: &[&str]) -> serde_json::Value {
    let s = syms.display().to_string();
    let mut a = vec!["find"];
    a.extend_from_slice(source);
    a.extend_from_slice(&["--symbol-path", &s, "--offline", "--no-cache"]);
    a.extend_from_slice(extra);
    let r = pooldump(&a);
    assert_eq!(r.code(), Some(0), "{a:?}: {}", r.stderr);
    if extra.contains(&"--json") {
        serde_json::from_str(&r.stdout).expect("valid JSON")
    } else {
        serde_json::Value::String(r.stdout)
    }
}

/// What the machine holds at `va`: two hex digits a byte, `??` where
/// nothing is mapped.
fn machine_hex(m: &Machine, va: u64, len: usize) -> String {
    m.asp
        .read_mapped(&m.mem, va, len)
        .iter()
        .map(|b| b.map_or_else(|| "??".to_string(), |b| format!("{b:02x}")))
        .collect()
}

const SHOWN: usize = 0x40;

#[test]
fn bytes_are_what_the_machine_holds_in_every_format() {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 23));
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = support::write_dump_and_symbols(&m, dir.path());
    let d = dump.display().to_string();
    let tags = ["--tag", "Leak", "--tag", "Irp", "--tag", "NSbf"];
    let with = |extra: &[&str]| {
        let mut a = tags.to_vec();
        a.extend_from_slice(extra);
        find(&[&d], &syms, &a)
    };

    // JSON: every allocation's body, as far as asked, is the machine's.
    let j = with(&["--bytes", "0x40", "--json"]);
    let listed = j["allocations"].as_array().unwrap();
    assert!(listed.len() > 10, "{j}");
    assert!(
        listed.iter().any(|a| a["allocator"] == "big-pool"),
        "big-page entries too"
    );
    let mut by_va = BTreeMap::new();
    for a in listed {
        let at = va(a["va"].as_str().unwrap());
        let start = a["header"].as_str().map_or(at, va);
        let body = start + a["bytes"].as_u64().unwrap() - at;
        let c = &a["contents"];
        assert_eq!(c["va"], a["va"]);
        assert_eq!(c["body_bytes"].as_u64(), Some(body), "{a}");
        let shown = (body as usize).min(SHOWN);
        assert_eq!(c["shown_bytes"].as_u64(), Some(shown as u64), "{a}");
        assert_eq!(c["hex"], machine_hex(&m, at, shown), "{a}");
        let cut = if body as usize > SHOWN {
            serde_json::json!("length")
        } else {
            serde_json::Value::Null
        };
        assert_eq!(c["cut"], cut, "{a}");
        by_va.insert(a["va"].as_str().unwrap().to_string(), c["hex"].clone());
    }

    // --unsorted: the same objects, in the order found.
    let u = with(&["--bytes", "0x40", "--json", "--unsorted"]);
    let sorted = |v: &serde_json::Value| {
        let mut a = v["allocations"].as_array().unwrap().clone();
        a.sort_by_key(|a| (a["va"].to_string(), a["header"].to_string()));
        a
    };
    assert_eq!(sorted(&j), sorted(&u));

    // CSV, sorted and not: a `contents` column with the same hex.
    for extra in [&[][..], &["--unsorted"][..]] {
        let mut a = vec!["--bytes", "0x40", "--csv"];
        a.extend_from_slice(extra);
        let csv = with(&a);
        let mut lines = csv.as_str().unwrap().lines();
        let header = lines.next().unwrap();
        assert!(header.ends_with(",in_dump,session_id,contents"), "{header}");
        let mut n = 0;
        for line in lines {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.last(), by_va[cells[0]].as_str().as_ref(), "{line}");
            n += 1;
        }
        assert_eq!(n, by_va.len(), "{extra:?}");
    }

    // Text: right under each allocation's row, `dc`'s first line: the
    // allocation's address, then DWORDs. The whole bodies are asked for,
    // so the rows are formatted a few at a time.
    let block_of: BTreeMap<String, String> = listed
        .iter()
        .map(|a| {
            let block = a["header"].as_str().or(a["va"].as_str()).unwrap();
            (block.to_string(), a["va"].as_str().unwrap().to_string())
        })
        .collect();
    for extra in [&[][..], &["--unsorted"][..]] {
        let mut a = vec!["--bytes", "0x10000", "--no-progress"];
        a.extend_from_slice(extra);
        let text = with(&a);
        let lines: Vec<&str> = text.as_str().unwrap().lines().collect();
        let mut checked = 0;
        for (row, next) in lines.iter().zip(lines.iter().skip(1)) {
            let Some(va) = row
                .split_whitespace()
                .next()
                .and_then(|block| block_of.get(block))
                .filter(|_| row.starts_with(' ') && !row.starts_with("    "))
            else {
                continue;
            };
            let hex = by_va[va].as_str().unwrap();
            let dword: String = (0..4).rev().map(|i| &hex[2 * i..2 * i + 2]).collect();
            let words: Vec<&str> = next.split_whitespace().take(2).collect();
            assert!(
                next.starts_with("    ") && words == [va.as_str(), &dword],
                "{extra:?}: under\n{row}\n{next}"
            );
            checked += 1;
        }
        assert_eq!(checked, by_va.len(), "{extra:?}");
    }

    // A live target: the same allocations with the same bytes.
    let key = "1.2.3.4";
    let (cfg, port) = support::loopback_sim(key);
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let spec = format!("port={port},key={key},bind=127.0.0.1");
    let mut a = vec!["--kdnet", spec.as_str()];
    a.extend_from_slice(&tags);
    let live = find(
        &a[..2],
        &syms,
        &[&a[2..], &["--bytes", "0x40", "--json"]].concat(),
    );
    assert!(sim.stats().continues >= 1, "the target was not resumed");
    assert_eq!(live["allocations"], j["allocations"]);
    // Streamed: each allocation's bytes are read from the scan's threads
    // while the target is stopped.
    let extra = ["--bytes", "0x40", "--json", "--unsorted"];
    let live = find(&a[..2], &syms, &[&a[2..], &extra].concat());
    assert!(sim.stats().continues >= 2, "the target was not resumed");
    assert_eq!(sorted(&live), sorted(&j));
}

#[test]
fn bytes_needs_a_listing_and_a_count() {
    let sample = repo_root().join("testdata/sample/MEMORY.DMP");
    let d = sample.display().to_string();
    for (extra, says) in [
        (&["--per-tag"][..], "cannot be used with"),
        (&[][..], "show at least 1 byte"),
    ] {
        let bytes = if extra.is_empty() { "0" } else { "0x20" };
        let mut a = vec!["find", &d, "--tag", "Leak", "--bytes", bytes];
        a.extend_from_slice(extra);
        let r = pooldump(&a);
        assert_eq!(r.code(), Some(2), "{a:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{a:?}: {}", r.stderr);
    }
}
