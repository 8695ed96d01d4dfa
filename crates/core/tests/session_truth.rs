//! Session pool (`!poolused 8`) against the kit's ground truth,
//! for every layout family: each session read through its own processes'
//! page tables (the table's VA is the same in every session, its contents
//! are not), the session expansion table, the process list, and damaged
//! inputs that must give warnings rather than wrong numbers or panics;
//! and `find` in every session's pool, legacy pages and (19H1+) each
//! session's own segment heap.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use pooldump_core::KernelVa;
use pooldump_core::pool::find::{AllocationState, Engine, FoundAllocation, PoolKind};
use pooldump_core::pool::{SessionPool, TrackerOptions};
use pooldump_kit::corrupt::Corruption;
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
            // Its own big-page table, read through its page tables.
            let (got, truth) = (
                s.big_pages.as_ref().unwrap(),
                want.big_pool.as_ref().unwrap(),
            );
            assert_eq!(
                (got.table.0, got.size, got.in_use, got.live_count),
                (
                    truth.table_va,
                    truth.table_size,
                    Some(truth.in_use),
                    truth.in_use
                ),
                "{b}: session {}",
                want.id
            );
            // Live entries, then freed ones, each in table order.
            let mut all: Vec<_> = (truth.entries.iter())
                .map(|e| (e.freed, e.index, e.va, e.tag.clone(), e.pool_type, e.bytes))
                .collect();
            all.sort();
            let read: Vec<_> = (got.entries.iter())
                .map(|e| {
                    (
                        e.freed,
                        e.index,
                        e.va.0,
                        e.tag.to_string(),
                        e.pool_type,
                        e.bytes,
                    )
                })
                .collect();
            assert_eq!(read, all, "{b}: session {}", want.id);
            assert!(got.entries.iter().any(|e| e.freed), "{b}: none freed");
            assert!(got.entries.iter().all(|e| e.session), "{b}");
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

#[test]
fn every_session_s_pool_is_found_through_its_own_page_tables() {
    // Session pool sits at the same addresses in every session, in frames
    // that only the session's own processes map: the dump's
    // DirectoryTableBase (System's here) maps none of them. From 19H1 on
    // each session's pool is a segment heap of its own, whose segments
    // name a heap no pool node holds.
    for b in NtBuild::ALL {
        let m = Machine::build(&Scenario::small(b, 5));
        let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
        let sessions = &m.truth.sessions;
        let tags: BTreeSet<&str> = sessions
            .iter()
            .flat_map(|s| s.allocations.iter().map(|a| a.tag.as_str()))
            .collect();
        let tags: Vec<&str> = tags.into_iter().collect();
        assert!(tags.len() >= 3, "{b}: {tags:?}");
        // Big ones among them, live and freed, from the sessions' own
        // big-page tables.
        let all = sessions.iter().flat_map(|s| &s.allocations);
        let big: Vec<_> = all.filter(|a| a.header_va.is_none()).collect();
        assert!(
            big.iter().any(|a| a.live) && big.iter().any(|a| !a.live),
            "{b}"
        );
        let r = common::run(&t, &tags, Engine::Auto);
        let found: BTreeMap<(u32, u64), &FoundAllocation> = r
            .allocations
            .iter()
            .map(|a| {
                let id = a
                    .session_id
                    .unwrap_or_else(|| panic!("{b}: {} at {} has no session", a.tag, a.va));
                ((id, a.header.unwrap_or(a.va).0), a)
            })
            .collect();
        assert_eq!(found.len(), r.allocations.len(), "{b}: listed twice");
        let mut want = 0;
        for s in sessions {
            assert!(
                !s.allocations.is_empty(),
                "{b}: session {} placed none",
                s.id
            );
            let big: BTreeMap<u64, u64> = (s.big_pool.iter())
                .flat_map(|t| &t.entries)
                .map(|e| (e.va, e.bytes))
                .collect();
            for a in &s.allocations {
                want += 1;
                let h = a.header_va.unwrap_or(a.va);
                let name = format!("{b}: session {} {} at {h:#x}", s.id, a.tag);
                let f = found
                    .get(&(s.id, h))
                    .unwrap_or_else(|| panic!("{name} was not found"));
                assert_eq!(f.va.0, a.va, "{name}");
                assert_eq!(f.pa.map(|p| p.0), a.pa, "{name}: physical address");
                // A big one's size is its big-page entry's NumberOfBytes.
                let bytes = match a.header_va {
                    Some(_) => a.block_bytes,
                    None => big[&a.va],
                };
                assert_eq!(f.bytes, bytes, "{name}: size");
                assert_eq!(f.tag.to_string(), a.tag, "{name}");
                let state = if a.live {
                    AllocationState::Allocated
                } else {
                    AllocationState::Free
                };
                assert_eq!(f.state, state, "{name}");
                assert_eq!(f.allocator, common::allocator_of(a.allocator), "{name}");
                assert_eq!(f.pool, PoolKind::Paged, "{name}");
                assert!(f.session, "{name}: the header's session bit");
            }
        }
        assert_eq!(
            r.allocations.len(),
            want,
            "{b}: found what no session holds"
        );
        assert!(r.unmapped.is_empty(), "{b}: {:?}", r.unmapped);
        // Each session mapped, and named with the page tables it was read
        // through: one of its own processes'.
        let ids: Vec<u32> = r.sessions.iter().map(|s| s.session_id).collect();
        let want_ids: Vec<u32> = sessions.iter().map(|s| s.id).collect();
        assert_eq!(ids, want_ids, "{b}");
        // From 19H1 on each session's segments vouched for its own heap.
        let heaps: Vec<Option<u64>> = r.sessions.iter().map(|s| s.heap.map(|h| h.0)).collect();
        let want_heaps: Vec<Option<u64>> = sessions.iter().map(|s| s.heap_va).collect();
        assert_eq!(heaps, want_heaps, "{b}: the sessions' heaps");
        for s in &r.sessions {
            let own: BTreeSet<u64> = m
                .truth
                .processes
                .iter()
                .filter(|p| p.session_id == Some(s.session_id))
                .map(|p| p.dtb)
                .collect();
            assert!(
                own.contains(&s.dtb.0),
                "{b}: session {} read through {}",
                s.session_id,
                s.dtb
            );
        }
        // The per-tag live counts agree with the sessions' trackers.
        for tag in &r.tags {
            let live: u64 = sessions
                .iter()
                .flat_map(|s| &s.tags)
                .filter(|u| u.tag == tag.tag.to_string())
                .map(|u| u.diff)
                .sum();
            assert_eq!(tag.allocated, live, "{b}: {}", tag.tag);
        }
    }
}

#[test]
fn a_hostile_session_pool_range_is_said_and_the_other_sessions_are_mapped() {
    let mut m = Machine::build(&Scenario::small(NtBuild::Win10_17763, 5));
    m.corrupt(Corruption::HugeSessionPoolRange);
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let r = common::run(&t, &["Gh05", "Gla5"], Engine::Auto);
    let bad = m.truth.sessions[0].id;
    let ids: Vec<u32> = r.sessions.iter().map(|s| s.session_id).collect();
    assert!(!ids.contains(&bad) && !ids.is_empty(), "{ids:?}");
    assert!(
        r.warnings.iter().any(|w| w.message.contains(&format!(
            "session {bad}'s PagedPoolStart ffff8000`00000000 to PagedPoolEnd ffffffff`ffffffff is not a session pool range: its pool is not mapped"
        ))),
        "{:?}",
        r.warnings
    );
    // The other session's allocations are all there.
    let other = &m.truth.sessions[1];
    let found = r
        .allocations
        .iter()
        .filter(|a| a.session_id == Some(other.id))
        .count();
    let want = other
        .allocations
        .iter()
        .filter(|a| a.tag == "Gh05" || a.tag == "Gla5")
        .count();
    assert_eq!(found, want);
}

#[test]
fn a_session_heap_that_does_not_vouch_for_itself_is_not_named() {
    // Its segments' signatures still name a context, but the heap that
    // context points back at has lost its signature: nothing in it is
    // taken as a segment heap's metadata. The blocks are still checked by
    // their own subsegment and chunk headers (as when a segment header is
    // not in the dump), so every one is found; the other session's heap
    // is named as before.
    let mut m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 5));
    m.corrupt(Corruption::UnsignedSessionHeap);
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let tags = ["Gh05", "Gla5", "Usdi", "Uscu", "SLek", "Gkbm", "Gpbm"];
    let r = common::run(&t, &tags, Engine::Auto);
    let (bad, good) = (&m.truth.sessions[0], &m.truth.sessions[1]);
    let heap = |id: u32| {
        r.sessions
            .iter()
            .find(|s| s.session_id == id)
            .map(|s| s.heap)
    };
    assert_eq!(heap(bad.id), Some(None), "{:?}", r.sessions);
    assert_eq!(
        heap(good.id),
        Some(good.heap_va.map(KernelVa)),
        "{:?}",
        r.sessions
    );
    for s in [bad, good] {
        let found = r
            .allocations
            .iter()
            .filter(|a| a.session_id == Some(s.id))
            .count();
        assert_eq!(found, s.allocations.len(), "session {}", s.id);
    }
}

#[test]
fn a_hostile_session_big_page_table_is_said_and_the_other_session_is_read() {
    // Session 0's PoolTrackBigPagesSize of 2^40 is refused before anything
    // is read or allocated for it; session 1's table is read as before.
    for b in [NtBuild::Win7_7601, NtBuild::Win10_19041] {
        let mut m = Machine::build(&Scenario::small(b, 5));
        let s0 = m.truth.sessions[0].global_va;
        let size_off = m.m.offset_of("_MM_SESSION_SPACE", "PoolTrackBigPagesSize");
        poke(&mut m, s0 + size_off, 1 << 40);
        let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
        let said = "_MM_SESSION_SPACE.PoolTrackBigPagesSize at ";
        let p = t.session_pool(&TrackerOptions::default()).unwrap();
        assert!(p.sessions[0].big_pages.is_none(), "{b}");
        assert!(
            (p.sessions[0].warnings.iter())
                .any(|w| w.message.contains(said) && w.message.contains("0x10000000000")),
            "{b}: {:?}",
            p.sessions[0].warnings
        );
        let good = &m.truth.sessions[1];
        let live = good.big_pool.as_ref().unwrap().in_use;
        assert_eq!(p.sessions[1].big_pages.as_ref().unwrap().live_count, live);

        let r = common::run(&t, &["Gkbm", "Gpbm"], Engine::Auto);
        assert!(
            r.warnings.iter().any(|w| w
                .message
                .starts_with("session 0's big-page table could not be read: ")
                && w.message.contains(said)),
            "{b}: {:?}",
            r.warnings
        );
        let found = |id: u32| {
            (r.allocations.iter())
                .filter(|a| a.session_id == Some(id))
                .count()
        };
        let want = (good.allocations.iter())
            .filter(|a| a.header_va.is_none())
            .count();
        assert!(want > 0, "{b}");
        assert_eq!(found(good.id), want, "{b}");
        assert_eq!(found(0), 0, "{b}: session 0's are only in its table");
    }
}

#[test]
fn the_sessions_big_page_tables_share_one_bound() {
    // A bound of one table and a bit: the first session's table is read,
    // the second's is refused before anything of it is read, and said.
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 5));
    let size = m.truth.sessions[0].big_pool.as_ref().unwrap().table_size;
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let opts = TrackerOptions {
        max_session_big_entries: size + 10,
        ..TrackerOptions::default()
    };
    let p = t.session_pool(&opts).unwrap();
    assert!(p.sessions[0].big_pages.is_some());
    assert!(p.sessions[1].big_pages.is_none());
    let said = format!(
        "its big-page table cannot be read: its {size:#x} entries are more than the 0xa left of the {:#x} the sessions' big-page tables may hold together; not read",
        size + 10
    );
    assert!(
        p.sessions[1].warnings.iter().any(|w| w.message == said),
        "{:?}",
        p.sessions[1].warnings
    );
    // A bound of 0 reads none, and says nothing (the rows alone).
    let opts = TrackerOptions {
        max_session_big_entries: 0,
        ..TrackerOptions::default()
    };
    let p = t.session_pool(&opts).unwrap();
    assert!(p.sessions.iter().all(|s| s.big_pages.is_none()));
    assert!(p.sessions.iter().all(|s| s.warnings.is_empty()));
    assert_eq!(actual(&p), expected(&m));
}
