//! `pooldump pool` (`!pool ADDR`) end to end on the bundled sample: the
//! text listing marks the allocation the truth put at the address, the
//! three WinDbg spellings of an address give the same JSON, and a bad
//! address is refused with what is wrong with it; over KDNET, the answer
//! a dump of the same kernel gives. `!pool`'s flags and their named
//! options give the same listing, the contents are the bytes the kit
//! wrote (legacy, LFH, VS, big pages), a page that is not there shows
//! `????????`, and a bit `!pool` does not define is refused by name.

use crate::support;

use pooldump_kdnet_sim::SimTarget;
use pooldump_kit::truth::AllocatorKind;
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
    assert_eq!(r.code(), Some(2));
    assert!(r.stderr.contains("pooldump pool DUMP ADDR"), "{}", r.stderr);
}

/// A `pool --json` document without what differs between a live target
/// and its dump: the source, the link and the warnings.
fn about_the_kernel(mut j: serde_json::Value) -> serde_json::Value {
    let o = j.as_object_mut().unwrap();
    o.remove("source");
    o.remove("kdnet");
    o.remove("warnings");
    j
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
    // A block of the last session's own pool.
    let (sid, session_addr) = m
        .truth
        .sessions
        .iter()
        .rev()
        .find_map(|s| {
            Some((
                s.id.to_string(),
                format!("{:#x}", s.allocations.first()?.va),
            ))
        })
        .expect("a session holding blocks");
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = support::write_dump_and_symbols(&m, dir.path());
    let (cfg, port) = support::loopback_sim("9.8.7.5");
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let spec = format!("port={port},key=9.8.7.5,bind=127.0.0.1");
    let live = support::pooldump_offline(&["pool", "--kdnet", &spec, &addr, "--json"], &syms);
    let dumped =
        support::pooldump_offline(&["pool", dump.to_str().unwrap(), &addr, "--json"], &syms);
    let (live, dumped) = (live.json(), dumped.json());
    assert_eq!(live["source"]["live"], true);
    assert_eq!(live["verdict"], "in-allocation");
    assert_eq!(live["containing"]["tag"], "Leak");
    assert_eq!(about_the_kernel(live), about_the_kernel(dumped));
    assert!(sim.stats().continues >= 1, "the target was resumed");
    // With --kdnet the first positional is the address, the second the
    // flags: the contents come over the link as from the dump.
    let with_flags = ["pool", "--kdnet", &spec, &addr, "1", "--json"];
    let live = support::pooldump_offline(&with_flags, &syms).json();
    let dumped = [
        "pool",
        dump.to_str().unwrap(),
        &addr,
        "--contents",
        "--json",
    ];
    let dumped = support::pooldump_offline(&dumped, &syms).json();
    assert!(live["containing"]["contents"]["hex"].is_string(), "{live}");
    assert_eq!(about_the_kernel(live), about_the_kernel(dumped));
    // Session space through a session's page tables, as from the dump.
    let in_session = ["--session", sid.as_str(), "--json"];
    let live = [&["pool", "--kdnet", &spec, &session_addr][..], &in_session].concat();
    let live = support::pooldump_offline(&live, &syms).json();
    let dumped = [
        &["pool", dump.to_str().unwrap(), &session_addr][..],
        &in_session,
    ]
    .concat();
    let dumped = support::pooldump_offline(&dumped, &syms).json();
    assert_eq!(live["verdict"], "in-allocation", "{live}");
    assert_eq!(live["session"]["session_id"].to_string(), sid, "{live}");
    assert_eq!(about_the_kernel(live), about_the_kernel(dumped));
    // The operands are read by the same parsers as with a dump, and a
    // wrong one is a usage error (exit 2) naming the operand, before the
    // link is tried.
    let refusals = [
        (
            vec!["x", addr.as_str()],
            "ADDR: `x` is not a hexadecimal address",
        ),
        (vec![addr.as_str(), "1z"], "FLAGS: `1z` is not a number"),
        (
            vec![addr.as_str(), "4"],
            "FLAGS 0x4: bit 0x4 is not !pool's",
        ),
    ];
    for (operands, says) in refusals {
        let args = [&["pool", "--kdnet", spec.as_str()][..], &operands].concat();
        let r = support::pooldump_offline(&args, &syms);
        assert_eq!(r.code(), Some(2), "{operands:?}: {}", r.stdout);
        assert!(r.stderr.contains(says), "{operands:?}: {}", r.stderr);
    }
    let r = support::pooldump_offline(&["pool", "--kdnet", &spec, &addr, "1", "2"], &syms);
    assert_eq!(r.code(), Some(2));
    assert!(
        r.stderr
            .contains("give the address and, if any, the flags alone"),
        "{}",
        r.stderr
    );
}

/// `va` as pooldump and WinDbg print it.
fn shown(va: u64) -> String {
    format!("{:08x}`{:08x}", va >> 32, va & 0xFFFF_FFFF)
}

/// An address of the JSON document (`ffffc60c`c01143e0`) as a number.
fn va_of(v: &serde_json::Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not an address: {v}"));
    u64::from_str_radix(&s.replace('`', ""), 16).unwrap()
}

/// Bytes as the JSON's `hex` writes them: `??` for one not read.
fn hex_of(bytes: &[Option<u8>]) -> String {
    bytes
        .iter()
        .map(|b| b.map_or("??".into(), |b| format!("{b:02x}")))
        .collect()
}

/// The bytes of a run of content lines (`    ADDR  DWORD DWORD DWORD DWORD
/// CHARS`): each DWORD's bytes in memory order; `None` for `????????`.
fn listed_bytes(lines: &[&str]) -> Vec<Option<u8>> {
    let mut out = Vec::new();
    for l in lines {
        // Four spaces, the address (17), a space, then four 9-wide words.
        let words = &l[4 + 17 + 1..4 + 17 + 1 + 36];
        for w in words.split_whitespace() {
            let n = w.len() / 2;
            for k in (0..n).rev() {
                out.push(u8::from_str_radix(&w[2 * k..2 * k + 2], 16).ok());
            }
        }
    }
    out
}

/// The lines of content under the row at `at`.
fn content_lines<'a>(lines: &[&'a str], at: usize) -> Vec<&'a str> {
    lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with("    ffff"))
        .copied()
        .collect()
}

#[test]
fn flags_and_their_options_give_the_same_listing() {
    let (header, _) = leak_block();
    let addr = format!("{:x}", header + 0x20);
    let pairs: [(&str, &[&str]); 6] = [
        ("0", &[]),
        ("1", &["--contents"]),
        ("2", &["--only-containing"]),
        ("0x3", &["--contents", "--only-containing"]),
        ("80000000", &["--no-description"]),
        (
            "0X80000003",
            &["--no-description", "--only-containing", "--contents"],
        ),
    ];
    for (flags, options) in pairs {
        let by_flags = pool(&[&addr, flags]);
        let by_options = pool(&[&[addr.as_str()][..], options].concat());
        assert_eq!(by_flags.ok(), by_options.ok(), "{flags}");
    }
    // 0x2: the holder's row alone.
    let r = pool(&[&addr, "2"]);
    let rows: Vec<&str> = r.ok().lines().filter(|l| l.contains("  0x")).collect();
    assert_eq!(rows.len(), 1, "{}", r.stdout);
    assert!(
        rows[0].starts_with(&format!("*{}", shown(header))),
        "{}",
        r.stdout
    );
    // 0x80000000: no sentence on the address, its page or its pool.
    let r = pool(&[&addr, "80000000"]);
    assert!(!r.ok().contains("is inside the block"), "{}", r.stdout);
    assert!(!r.stdout.contains("Page ffff"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("*{}", shown(header))),
        "{}",
        r.stdout
    );
    assert!(pool(&[&addr]).ok().contains("is inside the block"));
}

#[test]
fn contents_list_each_block_from_its_body_as_the_json_says() {
    let (header, bytes) = leak_block();
    let addr = format!("{:x}", header + 0x20);
    let r = pool(&[&addr, "1"]);
    let lines: Vec<&str> = r.ok().lines().collect();
    let j = pool(&[&addr, "1", "--json"]).json();
    let allocations: Vec<&serde_json::Value> = support::items(&j["allocations"]).collect();
    let rows: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with(" ffff") || lines[i].starts_with("*ffff"))
        .collect();
    assert_eq!(rows.len(), allocations.len(), "{}", r.stdout);
    for (&at, a) in rows.iter().zip(&allocations) {
        let c = &a["contents"];
        let body = a["bytes"].as_u64().unwrap() - 0x10;
        let holder = lines[at].starts_with('*');
        let want = body.min(if holder { 0x400 } else { 0x20 });
        assert_eq!(c["body_bytes"], body, "{a}");
        assert_eq!(c["shown_bytes"], want, "{a}");
        assert_eq!(c["va"], a["va"], "the body follows the header");
        let run = content_lines(&lines, at);
        assert_eq!(run.len() as u64, want.div_ceil(16), "{}", lines[at]);
        assert!(run[0].starts_with(&format!("    {}  ", c["va"].as_str().unwrap())));
        let hex = hex_of(&listed_bytes(&run));
        assert_eq!(hex, c["hex"].as_str().unwrap(), "{}", lines[at]);
        // A block cut short says so, with the option that shows the rest.
        let note = lines[at + 1 + run.len()];
        if want < body {
            assert_eq!(c["cut"], "length");
            let more = format!(
                "    ... {:#x} more bytes (--bytes {body:#x} shows them)",
                body - want
            );
            assert_eq!(note, more);
        } else {
            assert!(c["cut"].is_null());
        }
    }
    assert_eq!(j["containing"]["contents"]["body_bytes"], bytes - 0x10);
    // --bytes: every block's first N bytes.
    let j = pool(&[&addr, "--bytes", "0x10", "--json"]).json();
    for a in support::items(&j["allocations"]) {
        assert_eq!(a["contents"]["shown_bytes"], 0x10, "{a}");
        assert_eq!(a["contents"]["hex"].as_str().unwrap().len(), 0x20);
    }
    // 0x3: the holder alone, in JSON too; the page's list stays whole.
    let j = pool(&[&addr, "3", "--json"]).json();
    let read: Vec<_> = support::items(&j["allocations"])
        .filter(|a| a.get("contents").is_some())
        .collect();
    assert_eq!(read, [&j["containing"]]);
    assert_eq!(support::items(&j["allocations"]).count(), allocations.len());
}

#[test]
fn unknown_flag_bits_are_refused_by_name() {
    let (header, _) = leak_block();
    let addr = format!("{header:x}");
    // A bit !pool lacks, a FLAGS or --bytes that is not a number: usage
    // errors, exit 2, as the argument parser's own.
    let cases: [(&[&str], &str); 5] = [
        (&["5"], "FLAGS 0x5: bit 0x4 is not !pool's (0x1 contents"),
        (&["0x40000030"], "bits 0x40000030 are not !pool's"),
        (&["0n3z"], "FLAGS: `0n3z` is not a number"),
        (&["+3"], "FLAGS: `+3` is not a number"),
        (&["--bytes", "0"], "show at least 1 byte"),
    ];
    for (args, says) in cases {
        let r = pool(&[&[addr.as_str()][..], args].concat());
        assert_eq!(r.code(), Some(2), "{args:?}: {}", r.stdout);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    }
}

#[test]
fn flags_take_windbg_radix_prefixes() {
    // WinDbg reads `!pool`'s flags in its default radix (hex) and takes
    // its prefixes: 0x hex, 0n decimal, 0t octal, 0y binary.
    let (header, _) = leak_block();
    let addr = format!("{header:x}");
    let json = |flags: &str| pool(&[&addr, flags, "--json"]).json();
    let three = json("3");
    assert!(
        three["containing"]["contents"]["hex"].is_string(),
        "{three}"
    );
    for same in ["0x3", "0n3", "0t3", "0y11", "0X3", "0`3"] {
        assert_eq!(json(same), three, "{same}");
    }
    // Hex by default: `10` is 0x10, a bit !pool lacks, not ten.
    let r = pool(&[&addr, "10"]);
    assert_eq!(r.code(), Some(2));
    assert!(r.stderr.contains("FLAGS 0x10: bit 0x10"), "{}", r.stderr);
    let r = pool(&[&addr, "0n10"]);
    assert!(
        r.stderr.contains("FLAGS 0xa: bit 0x8 is not"),
        "{}",
        r.stderr
    );
}

/// A live allocation of the truth placed by one of `allocators`, in the
/// dump.
fn placed_by<'m>(
    m: &'m Machine,
    allocators: &[AllocatorKind],
) -> Option<&'m pooldump_kit::truth::Allocation> {
    m.truth
        .allocations
        .iter()
        .find(|a| allocators.contains(&a.allocator) && a.live && a.in_dump && a.size >= 0x40)
}

#[test]
fn contents_are_the_bytes_the_kit_wrote() {
    use AllocatorKind::{Big, LegacyPage, Lfh, Vs, VsBig};
    let big: &[AllocatorKind] = &[Big, VsBig];
    let cases = [
        (
            NtBuild::Win7_7601,
            vec![(&[LegacyPage][..], "legacy-page"), (big, "big-pool")],
        ),
        (
            NtBuild::Win10_19041,
            vec![(&[Lfh][..], "lfh"), (&[Vs][..], "vs"), (big, "big-pool")],
        ),
    ];
    for (build, kinds) in cases {
        let m = Machine::build(&Scenario::small(build, 21));
        let dir = tempfile::tempdir().unwrap();
        let (dump, syms) = support::write_dump_and_symbols(&m, dir.path());
        for (kind, name) in kinds {
            let a = placed_by(&m, kind).unwrap_or_else(|| panic!("{build}: no {name} block"));
            let addr = format!("{:#x}", a.va + 8);
            let args = ["pool", dump.to_str().unwrap(), &addr, "1", "--json"];
            let j = support::pooldump_offline(&args, &syms).json();
            let what = format!("{build} {name} {addr}");
            assert_eq!(j["containing"]["allocator"], name, "{what}");
            assert_eq!(
                j["containing"]["contents"]["va"],
                shown(a.va).as_str(),
                "{what}"
            );
            for b in support::items(&j["allocations"]) {
                let c = &b["contents"];
                let n = c["shown_bytes"].as_u64().unwrap() as usize;
                let want = hex_of(&m.asp.read_mapped(&m.mem, va_of(&c["va"]), n));
                assert_eq!(c["hex"].as_str().unwrap(), want, "{what}: {b}");
            }
        }
    }
}

#[test]
fn a_page_that_is_not_there_shows_question_marks() {
    let mut s = Scenario::small(NtBuild::Win10_19041, 12);
    s.paged_out = 0.3;
    let m = Machine::build(&s);
    // A paged-out page in the first 64 KiB of a live big allocation.
    let (entry, page) =
        m.truth
            .big_pool
            .entries
            .iter()
            .filter(|e| !e.freed)
            .find_map(|e| {
                let p = m.truth.pages.paged_out.iter().find(|p| {
                    **p >= e.va && **p < e.va + e.bytes && **p - e.va < 0x1_0000 - 0x10
                })?;
                Some((e, *p))
            })
            .expect("a big allocation over a paged-out page");
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = support::write_dump_and_symbols(&m, dir.path());
    let addr = format!("{:#x}", page + 0x10);
    let args = [
        "pool",
        dump.to_str().unwrap(),
        &addr,
        "3",
        "--bytes",
        "0x10000",
    ];
    let r = support::pooldump_offline(&args, &syms);
    let out = r.ok();
    let gone = format!(
        "    {}  ???????? ???????? ???????? ????????  ????????????????",
        shown(page)
    );
    assert!(out.contains(&gone), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(" not read: ") && l.ends_with("is not mapped (PTE not present))")),
        "{out}"
    );
    let j = support::pooldump_offline(&[&args[..], &["--json"]].concat(), &syms).json();
    let c = &j["containing"]["contents"];
    assert_eq!(c["va"], shown(entry.va).as_str());
    let covers = |u: &&serde_json::Value| {
        let start = va_of(&u["va"]);
        start <= page && page < start + u["bytes"].as_u64().unwrap()
    };
    let hole = support::items(&c["unreadable"])
        .find(covers)
        .unwrap_or_else(|| panic!("{c}"));
    assert!(
        hole["reason"].as_str().unwrap().contains("not mapped"),
        "{hole}"
    );
    let at = 2 * (page - entry.va) as usize;
    assert_eq!(
        &c["hex"].as_str().unwrap()[at..at + 0x2000],
        "??".repeat(0x1000)
    );
}

#[test]
fn session_space_is_read_through_the_session_named() {
    // The sample's sessions hold their blocks at session-space addresses
    // each session maps to frames of its own; the dump's own tables are
    // System's, which map no session's.
    let t = sample_truth();
    let mut seen = 0;
    for s in support::items(&t["sessions"]) {
        let Some(a) = support::items(&s["allocations"]).next() else {
            continue;
        };
        seen += 1;
        let id = s["id"].as_u64().unwrap();
        let addr = format!("{:x}", a["va"].as_u64().unwrap());
        let r = pool(&[&addr, "--session", &id.to_string(), "--json"]);
        assert_eq!(r.code(), Some(0), "{}", r.stderr);
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let c = &j["containing"];
        assert_eq!(va_of(&c["va"]), a["va"].as_u64().unwrap(), "{j}");
        assert_eq!(c["tag"], a["tag"], "{j}");
        assert_eq!(c["allocator"], a["allocator"], "{j}");
        assert_eq!(c["session_id"], id, "{j}");
        assert_eq!(j["session"]["session_id"], id, "{j}");
        let heap = j["session"]["heap"].as_str().map(|h| va_of(&h.into()));
        assert_eq!(heap, s["heap_va"].as_u64(), "{j}");
        let text = pool(&[&addr, "--session", &id.to_string()]).stdout;
        assert!(
            text.contains(&format!("read through session {id}'s page tables")),
            "{text}"
        );

        // Without --session: not mapped in System's tables, and said why.
        let r = pool(&[&addr]);
        assert_eq!(r.code(), Some(0), "{}", r.stderr);
        assert!(r.stdout.contains("is not mapped"), "{}", r.stdout);
        assert!(
            r.stdout.contains(
                "is session space, read through the source's own page tables (System's, in no session): each session maps it to frames of its own, and --session N reads it through session N's"
            ),
            "{}",
            r.stdout
        );
        // A session the process list does not hold.
        let r = pool(&[&addr, "--session", "7"]);
        assert_ne!(r.code(), Some(0));
        assert!(
            r.stderr
                .contains("session 7: not on PsActiveProcessHead (its sessions: 0, 1)"),
            "{}",
            r.stderr
        );
    }
    assert!(seen >= 1, "the sample's sessions hold no blocks");
}

#[test]
fn a_session_big_allocation_is_found_in_that_session_s_own_table() {
    // The sample's sessions' big allocations (no pool header) are only in
    // their own big-page tables: --session N finds the one holding an
    // address inside it, with its size from the table.
    let t = sample_truth();
    let mut seen = 0;
    for s in support::items(&t["sessions"]) {
        let id = s["id"].as_u64().unwrap();
        let entries = &s["big_pool"]["entries"];
        let Some(e) = support::items(entries).find(|e| e["freed"] == false) else {
            continue;
        };
        seen += 1;
        let va = e["va"].as_u64().unwrap();
        let addr = format!("{:x}", va + 0x100);
        let r = pool(&[&addr, "--session", &id.to_string(), "--json"]);
        assert_eq!(r.code(), Some(0), "{}", r.stderr);
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let c = &j["containing"];
        assert_eq!(va_of(&c["va"]), va, "{j}");
        assert_eq!(c["tag"], e["tag"], "{j}");
        assert_eq!(c["allocator"], "big-pool", "{j}");
        assert_eq!(c["bytes"], e["bytes"], "{j}");
        assert_eq!(c["pool_type"], "0x21", "{j}");
        assert_eq!(c["session_id"], id, "{j}");
        assert!(c["header"].is_null(), "{j}");
        // The other session's table does not hold it.
        let other = if id == 0 { "1" } else { "0" };
        let r = pool(&[&addr, "--session", other, "--json"]);
        let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert!(
            j["containing"].is_null() || va_of(&j["containing"]["va"]) != va,
            "{j}"
        );
    }
    assert_eq!(seen, 2, "both sessions hold big allocations");
}
