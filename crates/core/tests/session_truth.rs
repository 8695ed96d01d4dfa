//! Session pool (`!poolused 8`) against the kit's ground truth,
//! for every layout family: each session read through its own processes'
//! page tables (the table's VA is the same in every session, its contents
//! are not), the session expansion table, the process list, and damaged
//! inputs that must give warnings rather than wrong numbers or panics.

mod common;

use std::collections::BTreeMap;

use pooldump_core::pool::{SessionPool, TrackerOptions};
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario, SessionTagSpec, SizeSpec};

/// session id -> tag -> (Allocs, Frees, Bytes)
type Sessions = BTreeMap<u32, BTreeMap<String, (u64, u64, u64)>>;

fn expected(m: &Machine) -> Sessions {
    m.truth
        .sessions
        .iter()
        .map(|s| {
            let rows = s
                .tags
                .iter()
                .map(|r| {
                    let (a, f) = (r.reported_allocs, r.reported_frees);
                    (r.tag.clone(), (a.max(f), f, r.bytes))
                })
                .collect();
            (s.id, rows)
        })
        .collect()
}

fn actual(p: &SessionPool) -> Sessions {
    p.sessions
        .iter()
        .map(|s| {
            let rows = s
                .rows
                .iter()
                .map(|r| {
                    assert_eq!(r.pool.poolmon(), "Paged", "{} {:?}", r.tag, s.session_id);
                    (r.tag.to_string(), (r.allocs, r.frees, r.bytes))
                })
                .collect();
            (s.session_id.expect("readable SessionId"), rows)
        })
        .collect()
}

#[test]
fn every_build_every_session() {
    for b in NtBuild::ALL {
        let m = Machine::build(&Scenario::small(b, 21));
        let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
        let p = t.session_pool(&TrackerOptions::default()).unwrap();
        assert!(p.warnings.is_empty(), "{b}: {:?}", p.warnings);
        assert_eq!(actual(&p), expected(&m), "{b}");
        assert_eq!(p.processes, m.truth.processes.len(), "{b}");
        for (s, want) in p.sessions.iter().zip(&m.truth.sessions) {
            assert_eq!(s.table.0, want.table_va, "{b}");
            assert_eq!(s.size, want.table_size, "{b}");
            assert_eq!(s.session_space.0, want.global_va, "{b}");
            let pids: Vec<u64> = s.processes.iter().map(|p| p.pid).collect();
            assert_eq!(pids, want.pids, "{b}");
            assert!(s.warnings.is_empty(), "{b}: {:?}", s.warnings);
        }
        // The process list itself.
        let procs = t.processes().unwrap();
        assert!(procs.complete);
        let got: Vec<(u64, String, u64)> = procs
            .processes
            .iter()
            .map(|p| (p.pid, p.name.clone(), p.dtb.0))
            .collect();
        let want: Vec<(u64, String, u64)> = m
            .truth
            .processes
            .iter()
            .map(|p| (p.pid, p.name.clone(), p.dtb))
            .collect();
        assert_eq!(got, want, "{b}");
    }
}

#[test]
fn full_sessions_spill_into_their_expansion_tables() {
    for b in [
        NtBuild::Win7_7601,
        NtBuild::Win10_19041,
        NtBuild::Win11_22000,
    ] {
        let mut s = Scenario::small(b, 5);
        s.sessions[1].filler_tags = 400;
        let m = Machine::build(&s);
        let (_dir, t) = common::open(&m, DumpKind::Full);
        let p = t.session_pool(&TrackerOptions::default()).unwrap();
        assert_eq!(actual(&p), expected(&m), "{b}");
        let s1 = &p.sessions[1];
        assert_eq!(
            s1.expansion_used as usize,
            m.truth.sessions[1].expansion_tags.len(),
            "{b}"
        );
        assert!(s1.expansion_used > 0);
        assert_eq!(s1.expansion.0, m.truth.sessions[1].expansion_va);
    }
}

#[test]
fn a_scenario_without_sessions_says_so() {
    let mut s = Scenario::small(NtBuild::Win10_19041, 3);
    s.sessions.clear();
    let m = Machine::build(&s);
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let p = t.session_pool(&TrackerOptions::default()).unwrap();
    assert!(p.sessions.is_empty());
    assert_eq!(p.processes, 2, "System and smss.exe");
    assert!(
        p.warnings
            .iter()
            .any(|w| w.message.contains("belongs to a session")),
        "{:?}",
        p.warnings
    );
}

/// Patch a u64 of the machine's kernel memory before the dump is written.
fn poke(m: &mut Machine, va: u64, v: u64) {
    let asp = m.asp;
    asp.write_u64(&mut m.mem, va, v);
}

#[test]
fn a_process_with_a_bad_dtb_falls_back_to_another_of_its_session() {
    let mut m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 8));
    let dtb_off = m.m.offset_of("_EPROCESS", "Pcb.DirectoryTableBase");
    let session1: Vec<_> = m
        .truth
        .processes
        .iter()
        .filter(|p| p.session_id == Some(1))
        .map(|p| p.eprocess)
        .collect();
    // The first process of session 1 names a frame past the end of RAM.
    poke(&mut m, session1[0] + dtb_off, 0x7F_FFFF_F000);
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let p = t.session_pool(&TrackerOptions::default()).unwrap();
    assert_eq!(actual(&p), expected(&m));
    let want_dtb = m
        .truth
        .processes
        .iter()
        .find(|p| p.eprocess == session1[1])
        .unwrap()
        .dtb;
    assert_eq!(p.sessions[1].dtb.0, want_dtb);

    // With every process of session 1 broken, session 1 is a warning and
    // session 0 is still read.
    for ep in &session1 {
        poke(&mut m, ep + dtb_off, 0x7F_FFFF_F000);
    }
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let p = t.session_pool(&TrackerOptions::default()).unwrap();
    assert_eq!(p.sessions.len(), 1);
    assert_eq!(p.sessions[0].session_id, Some(0));
    assert!(
        p.warnings.iter().any(|w| {
            w.message.starts_with("session 1 at ")
                && w.message.contains("not readable through process")
        }),
        "{:?}",
        p.warnings
    );
}

#[test]
fn hostile_sizes_pointers_and_links() {
    // ExpSessionPoolTrackTableSize of 2^40: refused before any allocation.
    let mut m = Machine::build(&Scenario::small(NtBuild::Win11_22000, 9));
    let size_va = m.truth.symbols["ExpSessionPoolTrackTableSize"];
    poke(&mut m, size_va, 1 << 40);
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let e = t.session_pool(&TrackerOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("ExpSessionPoolTrackTableSize"),
        "{e}"
    );

    // A Session pointer into user space and a process list that loops.
    let mut m = Machine::build(&Scenario::small(NtBuild::Win7_7601, 9));
    let session_off = m.m.offset_of("_EPROCESS", "Session");
    let links = m.m.offset_of("_EPROCESS", "ActiveProcessLinks");
    let procs = m.truth.processes.clone();
    let s0: Vec<_> = procs.iter().filter(|p| p.session_id == Some(0)).collect();
    for p in &s0 {
        poke(&mut m, p.eprocess + session_off, 0x1234_0000);
    }
    let last = procs.last().unwrap();
    poke(&mut m, last.eprocess + links, procs[1].eprocess + links);
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let p = t.session_pool(&TrackerOptions::default()).unwrap();
    assert_eq!(p.sessions.len(), 1, "{:?}", p.warnings);
    assert_eq!(p.sessions[0].session_id, Some(1));
    let w: Vec<&str> = p.warnings.iter().map(|w| w.message.as_str()).collect();
    let w = w.join("\n");
    assert!(w.contains("not a kernel address; skipped"), "{w}");
    assert!(w.contains("already visited"), "{w}");
}

/// A session counter that wrapped (32-bit PagedAllocs, Allocs now below
/// Frees) is raised to Frees as the kernel does, and the session's
/// warning names the row, as the tracker's does.
#[test]
fn a_wrapped_session_counter_is_clamped_and_named() {
    let mut wrapped_somewhere = false;
    for b in NtBuild::ALL {
        let mut s = Scenario::small(b, 21);
        s.sessions[0].tags.push(SessionTagSpec {
            tag: "Wrap".into(),
            live: 2,
            size: SizeSpec::Fixed(0x40),
            freed: u64::from(u32::MAX),
        });
        let m = Machine::build(&s);
        let truth = (m.truth.sessions[0].tags.iter())
            .find(|r| r.tag == "Wrap")
            .unwrap();
        let wraps = truth.reported_allocs < truth.reported_frees;
        wrapped_somewhere |= wraps;
        let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
        let p = t.session_pool(&TrackerOptions::default()).unwrap();
        let s0 = &p.sessions[0];
        let row = s0
            .rows
            .iter()
            .find(|r| r.tag.to_string() == "Wrap")
            .unwrap();
        assert_eq!(row.clamped, wraps, "{b}");
        assert_eq!(
            row.allocs,
            truth.reported_frees.max(truth.reported_allocs),
            "{b}"
        );
        let said: Vec<&str> = s0.warnings.iter().map(|w| w.message.as_str()).collect();
        if wraps {
            assert!(
                said.iter()
                    .any(|w| w.starts_with("Allocs raised to Frees for 1 row(s)")
                        && w.contains("Wrap")),
                "{b}: {said:?}"
            );
        } else {
            assert!(said.is_empty(), "{b}: {said:?}");
        }
    }
    assert!(wrapped_somewhere, "no build has 32-bit session counters");
}
