//! `pooldump pool` (`!pool ADDR`) end to end on the bundled sample: the
//! text listing marks the allocation the truth put at the address, the
//! three WinDbg spellings of an address give the same JSON, and a bad
//! address is refused with what is wrong with it; over KDNET, the answer
//! a dump of the same kernel gives.

use crate::support;

use pooldump_kdnet_sim::SimTarget;
use pooldump_kit::{Machine, NtBuild, Scenario};
use support::{Finished, sample_truth};

/// `pooldump pool` on the bundled sample with its symbol store.
fn pool(extra: &[&str]) -> Finished {
    let args = [&["pool", "testdata/sample/MEMORY.DMP"], extra].concat();
    support::pooldump_offline(&args, std::path::Path::new("testdata/sample/symbols"))
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

#[test]
fn a_live_target_answers_as_its_dump_does() {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 34));
    let a = m
        .truth
        .allocations
        .iter()
        .find(|a| a.live && a.in_dump && a.tag == "Leak")
        .expect("a live Leak allocation");
    let addr = format!("{:#x}", a.va + 8);
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = support::write_dump_and_symbols(&m, dir.path());
    let (cfg, port) = support::loopback_sim("9.8.7.5");
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let spec = format!("port={port},key=9.8.7.5,bind=127.0.0.1");
    let live = support::pooldump_offline(&["pool", "--kdnet", &spec, &addr, "--json"], &syms);
    let dumped =
        support::pooldump_offline(&["pool", dump.to_str().unwrap(), &addr, "--json"], &syms);
    let (mut live, mut dumped) = (live.json(), dumped.json());
    assert_eq!(live["source"]["live"], true);
    assert_eq!(live["verdict"], "in-allocation");
    assert_eq!(live["containing"]["tag"], "Leak");
    for j in [&mut live, &mut dumped] {
        let o = j.as_object_mut().unwrap();
        o.remove("source");
        o.remove("kdnet");
        o.remove("warnings");
    }
    assert_eq!(live, dumped);
    assert!(sim.stats().continues >= 1, "the target was resumed");
    // With --kdnet the one positional is the address.
    let r = support::pooldump_offline(&["pool", "--kdnet", &spec, "x", &addr], &syms);
    assert_eq!(r.code(), Some(1));
    assert!(
        r.stderr.contains("with --kdnet, give the address alone"),
        "{}",
        r.stderr
    );
}
