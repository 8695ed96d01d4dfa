//! `find` against the kit's ground truth for every layout family: every
//! live in-dump allocation with a wanted tag is found where the kit put it
//! (allocator, size, pool, state), freed ones that keep a stale header are
//! labelled free, cache-aligned allocations appear once, decoys never
//! appear, and well-formed pages in frames no address maps land only in
//! the separate unmapped list.

mod common;

use common::check::{SMALL_TAGS, check, key_of_found, key_of_truth};

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use pooldump_core::pagemap::{PageMap, PageMapOptions};
use pooldump_core::pool::TagPattern;
use pooldump_core::pool::find::{
    self, AllocationState, Allocator, Engine, FindOptions, FindReport, FoundAllocation,
};
use pooldump_core::symbols::SymbolOptions;
use pooldump_core::{CrashDump, Memory, MemoryError, PhysAddr, Target};
use pooldump_kit::bulk::BulkSpec;
use pooldump_kit::corrupt::Corruption;
use pooldump_kit::truth::{Allocation, AllocatorKind};
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};

#[test]
fn every_build_finds_what_the_kit_placed() {
    for b in NtBuild::ALL {
        let m = Machine::build(&Scenario::small(b, 5));
        let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
        let r = common::run(&t, SMALL_TAGS, Engine::Auto);
        check(
            &m,
            &m.truth.allocations,
            &r,
            SMALL_TAGS,
            &format!("{b} all tags"),
        );
        streams_alike(&t, SMALL_TAGS, &r, &format!("{b} all tags"));
        // Nothing vacuous: decoys in unmapped frames, freed chunks with
        // stale headers, and each allocator of the family were all met.
        assert!(!r.unmapped.is_empty(), "{b}: no unmapped decoy met");
        assert!(
            r.allocations
                .iter()
                .any(|a| a.state == AllocationState::Free),
            "{b}"
        );
        let kinds: BTreeSet<Allocator> = r.allocations.iter().map(|a| a.allocator).collect();
        let want: BTreeSet<Allocator> = m
            .truth
            .allocations
            .iter()
            .filter(|a| a.live)
            .map(|a| common::allocator_of(a.allocator))
            .collect();
        assert_eq!(kinds, want, "{b}: allocators");
        // Win8.1's symbols lack the nonpaged pool bounds: the whole kernel
        // half is walked there.
        assert_eq!(
            r.regions.is_none(),
            b == NtBuild::Win81_9600,
            "{b}: regions"
        );
        // Only pool regions are walked: 1607's SystemVaRegions also has
        // WorkingSetPagedPool and WorkingSetSystemCache (the system working
        // sets' lists), which the kit maps like every other region.
        let names: BTreeSet<&str> = r
            .regions
            .iter()
            .flatten()
            .map(|g| g.name.as_str())
            .collect();
        if b == NtBuild::Win10_14393 {
            let want = BTreeSet::from(["NonPagedPool", "PagedPool", "Session", "SpecialPool"]);
            assert_eq!(names, want, "{b}: regions");
        }
        assert!(
            !names.iter().any(|n| n.starts_with("WorkingSet")),
            "{b}: {names:?}"
        );
        assert!(
            r.warnings
                .iter()
                .all(|w| !w.message.contains("segment heap")),
            "{b}: {:?}",
            r.warnings
        );
        // One tag: the memmem engine, and the same answer.
        let one = common::run(&t, &["Leak"], Engine::Auto);
        assert_eq!(one.scan.engine, "memmem");
        check(
            &m,
            &m.truth.allocations,
            &one,
            &["Leak"],
            &format!("{b} Leak"),
        );
    }
}

#[test]
fn frames_read_through_the_memory_interface_give_the_same_answer() {
    // What a live session does: read only the frames the page map names.
    let m = Machine::build(&Scenario::small(NtBuild::Server2022_20348, 6));
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let patterns: Vec<TagPattern> = SMALL_TAGS
        .iter()
        .map(|s| TagPattern::parse(s).unwrap())
        .collect();
    let opts = FindOptions::default();
    let dump = t.find(&patterns, &opts).unwrap();
    let build = Some(t.mem.header().build());
    // The same dump read only through physical reads, as a live target
    // is: no page file to scan in bulk, only the frames the page map names.
    struct PhysicalReadsOnly<'a>(&'a CrashDump);
    impl Memory for PhysicalReadsOnly<'_> {
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn kernel_dtb(&self) -> PhysAddr {
            self.0.kernel_dtb()
        }
        fn read_physical(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
            self.0.read_physical(pa, buf)
        }
    }
    let mapped = find::find_allocations(
        &PhysicalReadsOnly(&t.mem),
        &t.symbols,
        t.kern_base(),
        build,
        &patterns,
        &opts,
        None,
    )
    .unwrap();
    assert_eq!(mapped.allocations, dump.allocations);
    assert!(mapped.unmapped.is_empty());
    assert!(mapped.scan.frames_scanned < dump.scan.frames_scanned);
    check(
        &m,
        &m.truth.allocations,
        &dump,
        SMALL_TAGS,
        "20348 dump frames",
    );
}

#[test]
fn engines_and_wildcards_agree() {
    for b in [NtBuild::Win7_7601, NtBuild::Win10_19041] {
        let m = Machine::build(&Scenario::small(b, 9));
        let (_dir, t) = common::open(&m, DumpKind::Full);
        let exact = ["Leak", "File", "Irp ", "Proc"];
        let base = common::run(&t, &exact, Engine::Stride);
        for e in [Engine::AhoCorasick, Engine::Auto] {
            assert_eq!(
                common::run(&t, &exact, e).allocations,
                base.allocations,
                "{b} {e:?}"
            );
        }
        // `?`, `*` and 0x... spellings of the same tags.
        let wild = ["Lea?", "Fil*", "0x20707249", "*roc"];
        assert_eq!(
            common::run(&t, &wild, Engine::Auto).allocations,
            base.allocations,
            "{b}"
        );
        check(
            &m,
            &m.truth.allocations,
            &base,
            &exact,
            &format!("{b} exact"),
        );
    }
}

#[test]
fn bulk_pool_is_found_on_both_allocators() {
    for b in [NtBuild::Win10_17763, NtBuild::Win10_19041] {
        let mut s = Scenario::small(b, 3);
        s.bulk = Some(BulkSpec {
            bytes: 16 << 20,
            tags: 40,
            big_live: 100,
            big_freed: 10,
        });
        let m = Machine::build(&s);
        let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
        let mut truth = m.truth.allocations.clone();
        truth.extend(m.bulk_allocations());
        // Bulk tags: an upper-case letter and three of [a-z0-9].
        let tags = ["Baaa", "Caaa", "Daaa", "Ebaa", "F*"];
        let mut r = common::run(&t, &tags, Engine::Auto);
        assert!(r.allocations.len() > 100, "{b}: {}", r.allocations.len());
        // Session pool has its own test; here, every block found in a
        // session's pool must be one the kit placed there. (`F*` once
        // matched sixteen random bytes inside a session's VS chunk that
        // decoded as a chunk header: the chunk chain now rules them out.)
        let placed: BTreeSet<(u32, u64)> = (m.truth.sessions.iter())
            .flat_map(|s| s.allocations.iter().map(move |a| (s.id, key_of_truth(a))))
            .collect();
        for a in r.allocations.iter().filter(|a| a.session_id.is_some()) {
            let at = key_of_found(a);
            assert!(
                placed.contains(&(a.session_id.unwrap(), at)),
                "{b}: session {:?} block {at:#x} ({}) is not one the kit placed",
                a.session_id,
                a.tag
            );
        }
        let kernel = r
            .allocations
            .iter()
            .filter(|a| a.session_id.is_none())
            .cloned()
            .collect();
        let all = std::mem::replace(&mut r.allocations, kernel);
        check(&m, &truth, &r, &tags, &format!("{b} bulk"));
        r.allocations = all;
        streams_alike(&t, &tags, &r, &format!("{b} bulk"));
    }
}

#[test]
fn paged_out_pool_is_counted_not_found() {
    let mut s = Scenario::small(NtBuild::Win10_19041, 21);
    s.paged_out = 0.4;
    s.transition = 0.2;
    let m = Machine::build(&s);
    assert!(!m.truth.pages.paged_out.is_empty());
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let tags = ["File", "Ntfx", "CM", "FsFl", "MmSt"];
    let r = common::run(&t, &tags, Engine::Auto);
    check(&m, &m.truth.allocations, &r, &tags, "paged out");
    assert!(r.scan.paged_out_pages > 0);
    let missing: u64 = r.tags.iter().filter_map(|t| t.not_found).sum();
    let truth_missing = m
        .truth
        .allocations
        .iter()
        .filter(|a| {
            a.live
                && !a.in_dump
                && tags.iter().any(|t| {
                    TagPattern::parse(t)
                        .unwrap()
                        .matches(pooldump_core::PoolTag::parse(&a.tag).unwrap())
                })
        })
        .count() as u64;
    assert!(truth_missing > 0);
    // A freed block's stale header whose heap metadata is paged out is
    // listed as Unknown (allocated or recently freed) and counted as seen.
    let freed: BTreeSet<u64> = (m.truth.allocations.iter())
        .filter(|a| !a.live)
        .filter_map(|a| a.header_va)
        .collect();
    let stale_unknown = (r.allocations.iter())
        .filter(|f| f.state == AllocationState::Unknown)
        .filter(|f| f.header.is_some_and(|h| freed.contains(&h.0)))
        .count() as u64;
    assert_eq!(missing + stale_unknown, truth_missing);
}

#[test]
fn truncated_dumps_give_partial_results() {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 8));
    let dir = tempfile::tempdir().unwrap();
    let full = m.dump_bytes(DumpKind::KernelBitmap);
    let mut cut = full.clone();
    pooldump_kit::corrupt::corrupt_file(
        &mut cut,
        pooldump_kit::corrupt::FileCorruption::Truncate(full.len() as u64 * 3 / 4),
    );
    let path = dir.path().join("MEMORY.DMP");
    std::fs::write(&path, &cut).unwrap();
    m.write_symbol_store(&dir.path().join("symbols")).unwrap();
    let t = Target::open_dump(
        &path,
        &SymbolOptions::local_store(&dir.path().join("symbols")),
    )
    .unwrap();
    let r = common::run(&t, SMALL_TAGS, Engine::Auto);
    assert!(r.scan.unreadable_frames > 0, "no unreadable frames counted");
    // What is found is right; what lies past the cut is not claimed.
    let truth: BTreeMap<u64, &Allocation> = m
        .truth
        .allocations
        .iter()
        .map(|a| (key_of_truth(a), a))
        .collect();
    for f in &r.allocations {
        let a = truth.get(&key_of_found(f)).expect("a real allocation");
        if f.state == AllocationState::Allocated {
            assert!(a.live);
        }
    }
    assert!(r.allocations.iter().any(|a| a.header.is_some()));
}

#[test]
fn hostile_page_tables_end_the_walk() {
    // 19041 walks only the pool regions; 8.1 has no region symbols for
    // nonpaged pool, so its walk covers the whole kernel half and meets
    // the loops.
    for b in [NtBuild::Win10_19041, NtBuild::Win81_9600] {
        let mut m = Machine::build(&Scenario::small(b, 4));
        m.corrupt(Corruption::PageTableLoops);
        let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
        let r = common::run(&t, &["Leak", "Irp "], Engine::Auto);
        check(
            &m,
            &m.truth.allocations,
            &r,
            &["Leak", "Irp "],
            &format!("{b} page-table loops"),
        );
        let all = PageMap::walk(&t.mem, None, &PageMapOptions::default());
        // The real self-map, the extra one, and the PDPTE pointing up.
        assert!(all.stats.self_references >= 3, "{b}: {:?}", all.stats);
        assert!(all.stats.truncated.is_none());
        if b == NtBuild::Win81_9600 {
            assert!(r.regions.is_none());
            assert!(r.pagemap.self_references >= 3);
        }
    }
}

/// `find_with` hands the sink what `find` lists (in another order) and
/// reports the same totals.
fn streams_alike(t: &Target<CrashDump>, tags: &[&str], sorted: &FindReport, what: &str) {
    let patterns: Vec<TagPattern> = tags.iter().map(|s| TagPattern::parse(s).unwrap()).collect();
    let got = std::sync::Mutex::new(Vec::new());
    let sink = |b: &[FoundAllocation]| {
        assert!(!b.is_empty(), "{what}: an empty batch");
        got.lock().unwrap().extend_from_slice(b);
        ControlFlow::Continue(())
    };
    // Small chunks: many batches, from both threads.
    let opts = FindOptions {
        chunk_bytes: 64 << 10,
        ..FindOptions::default()
    };
    let r = t.find_with(&patterns, &opts, &sink).unwrap();
    assert!(r.allocations.is_empty(), "{what}");
    let mut got = got.into_inner().unwrap();
    got.sort_by_key(|a| (a.va, a.header, a.bytes, a.pool_type, a.tag.value()));
    assert_eq!(got, sorted.allocations, "{what}: streamed allocations");
    assert_eq!(r.tags, sorted.tags, "{what}: streamed per-tag totals");
    assert_eq!(r.unmapped, sorted.unmapped, "{what}");
    let counts = |r: &FindReport| {
        (
            r.scan.headers,
            r.scan.duplicate_headers,
            r.scan.rejected_by_heap,
        )
    };
    assert_eq!(counts(&r), counts(sorted), "{what}: streamed scan counts");
    assert_eq!(r.warnings, sorted.warnings, "{what}");

    // A sink that says stop gets no more batches, and the search says why.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let stop = |_: &[FoundAllocation]| {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ControlFlow::Break(())
    };
    let one_thread = FindOptions {
        threads: Some(1),
        ..opts
    };
    let r = t.find_with(&patterns, &one_thread, &stop);
    assert!(matches!(r, Err(find::FindError::Stopped)), "{what}: {r:?}");
    assert_eq!(calls.into_inner(), 1, "{what}: a batch after the stop");
}

/// Sixteen bytes of allocation data can decode as a VS chunk header (the
/// heap key and the address are all the encoding mixes in): here a block's
/// own data carries a copy of another chunk's header, re-encoded for its
/// new address, and a pool header tagged `Fake` behind it. Every check a
/// header and its chunk header get in isolation passes; only the
/// subsegment's chunk chain, on which the forged chunk is no link, rules
/// it out.
#[test]
fn a_chunk_header_forged_inside_vs_data_is_not_a_block() {
    let fake = "Fake";
    let mut forged = 0;
    for b in NtBuild::ALL.into_iter().filter(|b| b.number() >= 18362) {
        let mut m = Machine::build(&Scenario::small(b, 5));
        assert!(
            !m.truth.allocations.iter().any(|a| a.tag == fake),
            "{b}: the kit already uses {fake}"
        );
        // A plain VS block (its chunk header right in front of its pool
        // header) to copy from, and a larger one to forge inside.
        let plain = |a: &&Allocation| {
            a.live
                && a.in_dump
                && a.allocator == AllocatorKind::Vs
                && a.extra_header_va.is_none()
                && a.header_va
                    .is_some_and(|h| h % 0x1000 != 0 && h % 0x1000 <= 0xF00)
        };
        let vs: Vec<&Allocation> = m.truth.allocations.iter().filter(plain).collect();
        let Some((host, src)) = vs.iter().find_map(|host| {
            let src = vs.iter().find(|s| {
                s.block_bytes + 0x20 <= host.block_bytes && s.header_va != host.header_va
            })?;
            Some((host.header_va?, src.header_va?))
        }) else {
            panic!("{b}: no two VS blocks to forge with")
        };
        let (src_chunk, at) = (src - 0x10, host + 0x10);
        let q = m.asp.read_u64(&m.mem, src_chunk) ^ src_chunk ^ at;
        let mut header = [0u8; 16];
        m.asp.read(&m.mem, src, &mut header);
        header[4..8].copy_from_slice(fake.as_bytes());
        m.asp.write_u64(&mut m.mem, at, q);
        m.asp.write(&mut m.mem, at + 0x10, &header);
        forged += 1;

        let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
        let r = common::run(&t, &[fake], Engine::Auto);
        assert!(
            r.allocations.is_empty(),
            "{b}: the forged header at {:#x} was taken for a block: {:?}",
            at + 0x10,
            r.allocations
        );
        // The block it hides in is still found, whole.
        let host_tag = m
            .truth
            .allocations
            .iter()
            .find(|a| a.header_va == Some(host))
            .unwrap();
        let r = common::run(&t, &[host_tag.tag.as_str()], Engine::Auto);
        assert!(
            r.allocations
                .iter()
                .any(|a| a.header == Some(pooldump_core::KernelVa(host))),
            "{b}: the host block {host:#x} was lost"
        );
    }
    assert!(forged >= 2, "only {forged} segment-heap build(s)");
}

/// Past `max_results` the sorted search lists no more, but still counts:
/// its per-tag totals are those of the whole search (each cache-aligned
/// allocation once, even with its two headers on two pages), and what it
/// lists is part of what the whole search lists.
#[test]
fn past_max_results_allocations_are_counted_not_listed() {
    for b in [
        NtBuild::Win7_7601,
        NtBuild::Win10_19041,
        NtBuild::Win11_22000,
    ] {
        let m = Machine::build(&Scenario::small(b, 5));
        let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
        let all = common::run(&t, SMALL_TAGS, Engine::Auto);
        let headers = all
            .allocations
            .iter()
            .filter(|a| a.header.is_some())
            .count();
        assert!(headers > 30, "{b}: {headers}");
        let patterns: Vec<TagPattern> = SMALL_TAGS
            .iter()
            .map(|s| TagPattern::parse(s).unwrap())
            .collect();
        for cap in [0, headers / 3] {
            let opts = FindOptions {
                max_results: cap,
                ..FindOptions::default()
            };
            let some = t.find(&patterns, &opts).unwrap();
            assert!(some.scan.dropped > 0, "{b}");
            let listed = some
                .allocations
                .iter()
                .filter(|a| a.header.is_some())
                .count();
            assert!(listed <= cap, "{b}: {listed} listed past a cap of {cap}");
            for a in &some.allocations {
                assert!(
                    all.allocations.contains(a),
                    "{b}: {a:?} is not in the whole search"
                );
            }
            assert_eq!(some.tags, all.tags, "{b}: per-tag totals, cap {cap}");
            assert!(
                (some.warnings.iter()).any(|w| w.message.contains("counted in the per-tag totals")),
                "{b}: {:?}",
                some.warnings
            );
        }
    }
}
