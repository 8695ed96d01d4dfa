//! `pooldump pool` (`!pool ADDR`) end to end on the bundled sample: the
//! text listing marks the allocation the truth put at the address, the
//! three WinDbg spellings of an address give the same JSON, and a bad
//! address is refused with what is wrong with it.

use crate::support;

use std::process::Command;
use std::time::Duration;

use support::{Finished, repo_root, run_bounded, sample_truth};

fn pool(extra: &[&str]) -> Finished {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pooldump"));
    c.args(["pool", "testdata/sample/MEMORY.DMP"])
        .args(["--symbol-path", "testdata/sample/symbols", "--offline"])
        .args(extra)
        .env_remove("_NT_SYMBOL_PATH")
        .current_dir(repo_root());
    // Hang detector, not a timing test.
    run_bounded(&mut c, Duration::from_secs(120))
}

/// A live `Leak` LFH block of the sample's truth: its header and size.
fn leak_block() -> (u64, u64) {
    let t = sample_truth();
    let a = support::items(&t["allocations"])
        .find(|a| {
            a["tag"] == "Leak"
                && a["live"] == true
                && a["in_dump"] == true
                && a["allocator"] == "lfh"
        })
        .expect("a live Leak block in the sample");
    (
        a["header_va"].as_u64().unwrap(),
        a["block_bytes"].as_u64().unwrap(),
    )
}

#[test]
fn text_marks_the_block_holding_the_address() {
    let (header, bytes) = leak_block();
    let inside = header + bytes - 1;
    let r = pool(&[&format!("{inside:x}")]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let shown = format!("{:08x}`{:08x}", header >> 32, header & 0xFFFF_FFFF);
    let marked: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(marked.len(), 1, "{}", r.stdout);
    assert!(marked[0].starts_with(&format!("*{shown}")), "{}", r.stdout);
    for word in ["Leak", "Allocated", "LFH", &format!("{bytes:#x}")] {
        assert!(marked[0].contains(word), "{word}: {}", marked[0]);
    }
    assert!(
        r.stdout
            .contains(&format!("is inside the block at {shown} (marked *)")),
        "{}",
        r.stdout
    );
    // Its neighbours in the page are listed too, by address.
    let rows: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with(" ffff") || l.starts_with("*ffff"))
        .collect();
    assert!(rows.len() > 1, "{}", r.stdout);
    assert!(
        rows.is_sorted_by_key(|l| l[1..18].to_string()),
        "{}",
        r.stdout
    );
}

#[test]
fn json_is_the_same_for_every_spelling_of_the_address() {
    let (header, bytes) = leak_block();
    let mid = header + bytes / 2;
    let plain = format!("{mid:x}");
    let spellings = [
        plain.clone(),
        format!("0x{plain}"),
        format!("{}`{}", &plain[..8], &plain[8..]),
    ];
    let outs: Vec<String> = spellings
        .iter()
        .map(|s| {
            let r = pool(&[s, "--json"]);
            assert_eq!(r.code(), Some(0), "{s}: {}", r.stderr);
            r.stdout
        })
        .collect();
    assert!(outs.iter().all(|o| *o == outs[0]));
    let j: serde_json::Value = serde_json::from_str(&outs[0]).unwrap();
    assert_eq!(j["schema"], "pooldump.pool/1");
    assert_eq!(j["verdict"], "in-allocation");
    assert_eq!(j["page_status"], "resident");
    assert_eq!(j["region"], "NonPagedPool");
    let c = &j["containing"];
    let shown = format!("{:08x}`{:08x}", header >> 32, header & 0xFFFF_FFFF);
    assert_eq!(c["header"], shown.as_str());
    assert_eq!(c["tag"], "Leak");
    assert_eq!(c["bytes"], bytes);
    assert_eq!(c["allocator"], "lfh");
    assert!(support::items(&j["allocations"]).any(|a| a == c));
}

#[test]
fn a_bad_address_is_refused_with_the_reason() {
    let r = pool(&["ffffc60c`c01z43e0"]);
    assert_eq!(r.code(), Some(2), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("`ffffc60c`c01z43e0` is not a hexadecimal address"),
        "{}",
        r.stderr
    );
    let r = pool(&["0x0000800000000000"]);
    assert_eq!(r.code(), Some(1));
    assert!(
        r.stderr
            .contains("00008000`00000000 is not a canonical address"),
        "{}",
        r.stderr
    );
    let r = pool(&[]);
    assert_eq!(r.code(), Some(1));
    assert!(r.stderr.contains("pooldump pool DUMP ADDR"), "{}", r.stderr);
}
