//! The kit's own invariants. Independent checks of what it writes (with
//! kdmp-parser, llvm-pdbutil and Volatility) are in the root tests/.

use pooldump_kit::truth::TrackerSlot;
use pooldump_kit::{DumpKind, Machine, NtBuild, PoolKind, Scenario, SizeSpec, TagSpec};

fn tag(name: &str, pool: PoolKind, live: u32, size: u32, freed: u64) -> TagSpec {
    TagSpec {
        tag: name.into(),
        pool,
        live,
        size: SizeSpec::Fixed(size),
        freed,
        freed_in_memory: 0,
        protected: false,
        cache_aligned: false,
    }
}

#[test]
fn every_build_builds_with_its_scenario_in_the_truth() {
    for b in NtBuild::ALL {
        let s = Scenario::small(b, 1);
        let m = Machine::build(&s);
        let d = m.dump_bytes(DumpKind::KernelBitmap);
        assert_eq!(&d[..8], b"PAGEDU64");
        for t in &s.tags {
            let v = pooldump_kit::machine::tag_value(&t.tag) & 0x7FFF_FFFF;
            assert!(
                m.truth.tags.iter().any(|r| r.tag_value == v),
                "{b}: {} missing from the truth",
                t.tag
            );
            let live = m
                .truth
                .allocations
                .iter()
                .filter(|a| a.tag_value == v && a.live)
                .count();
            let in_big = m
                .truth
                .big_pool
                .entries
                .iter()
                .filter(|e| e.tag == t.tag && !e.freed)
                .count();
            assert!(
                live >= t.live as usize,
                "{b}: {} has {live} live allocations, wanted {}",
                t.tag,
                t.live
            );
            assert!(in_big <= live);
        }
        assert!(
            m.truth.big_pool.entries.iter().any(|e| e.freed),
            "{b}: no stale big-pool entry"
        );
        assert!(
            m.truth.kernel.modules.len() == 4,
            "{b}: nt and three drivers"
        );
        assert_eq!(m.truth.tracker.per_cpu_vas.len(), s.cpus as usize);
    }
}

#[test]
fn machines_are_reproducible() {
    for b in [NtBuild::Win7_7601, NtBuild::Win10_19041] {
        let a = Machine::build(&Scenario::small(b, 3)).dump_bytes(DumpKind::KernelBitmap);
        let c = Machine::build(&Scenario::small(b, 3)).dump_bytes(DumpKind::KernelBitmap);
        assert!(
            a == c,
            "{b}: the same scenario and seed gave different dumps"
        );
        let d = Machine::build(&Scenario::small(b, 4)).dump_bytes(DumpKind::KernelBitmap);
        assert!(a != d, "{b}: the seed changed nothing");
    }
}

#[test]
fn scenarios_round_trip_through_json() {
    let s = Scenario::small(NtBuild::Win11_22000, 9);
    let j = serde_json::to_string(&s).unwrap();
    let back: Scenario = serde_json::from_str(&j).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), j);
}

#[test]
fn a_full_table_spills_into_the_expansion_table_then_the_overflow_slot() {
    let mut s = Scenario::small(NtBuild::Win10_19041, 5);
    s.hot_tags = false;
    s.tracker.size_log2 = Some(6); // 64 hashed slots
    s.tracker.expansion_capacity = 20;
    s.tags = (0..100)
        .map(|i| tag(&format!("X{i:03}"), PoolKind::Paged, 1, 0x40, 3))
        .collect();
    let m = Machine::build(&s);
    let t = &m.truth.tracker;
    assert_eq!(t.size, 65);
    assert_eq!(t.expansion_tags.len(), 20);
    assert!(t.expansion_va != 0 && t.expansion_size >= 20);
    let overflow: Vec<_> = m
        .truth
        .tags
        .iter()
        .filter(|r| r.slot == TrackerSlot::Overflow)
        .collect();
    assert!(
        !overflow.is_empty(),
        "more tags than slots + expansion must reach the overflow slot"
    );
    let o = t.overflow.expect("overflow counters recorded");
    assert_eq!(o.allocs, overflow.iter().map(|r| r.allocs).sum::<u64>());
}

#[test]
fn counters_wrap_at_32_bits_in_the_win7_layout() {
    let mut s = Scenario::small(NtBuild::Win7_7601, 2);
    s.tags
        .push(tag("Wrap", PoolKind::NonPaged, 3, 0x30, 5_000_000_000));
    let m = Machine::build(&s);
    assert_eq!(m.truth.tracker.counter_bits, 32);
    let r = m.truth.tags.iter().find(|r| r.tag == "Wrap").unwrap();
    assert_eq!(r.allocs, 5_000_000_003);
    assert_eq!(r.reported_allocs, 5_000_000_003 % (1 << 32));
    assert_eq!(
        r.reported_allocs.wrapping_sub(r.reported_frees) & 0xFFFF_FFFF,
        3
    );
    let s10 = Machine::build(&Scenario::small(NtBuild::Win10_19041, 2));
    assert_eq!(s10.truth.tracker.counter_bits, 64);
}

#[test]
fn bulk_pool_counts_agree_with_its_pages() {
    for b in [NtBuild::Win7_7601, NtBuild::Win10_19041] {
        let mut s = Scenario::small(b, 8);
        s.bulk = Some(pooldump_kit::bulk::BulkSpec {
            bytes: 8 << 20,
            tags: 200,
            big_live: 300,
            big_freed: 40,
        });
        let m = Machine::build(&s);
        let bulk = m.truth.bulk.clone().unwrap();
        let allocs = m.bulk_allocations();
        assert_eq!(
            allocs.iter().filter(|a| a.live).count() as u64,
            bulk.live_allocations
        );
        // Every header the kit claims is in memory, with its tag.
        for a in allocs.iter().step_by(97) {
            let mut b4 = [0u8; 4];
            m.mem.read(a.pa.unwrap() + 4, &mut b4);
            assert_eq!(u32::from_le_bytes(b4), a.tag_value);
        }
        let live_big = m.truth.big_pool.entries.iter().filter(|e| !e.freed).count() as u64;
        assert_eq!(live_big, m.truth.big_pool.in_use);
        assert!(live_big >= 300);
    }
}

/// A legacy chunk, header included, is at most 0xFF0 bytes (BlockSize is
/// 8 bits of 16-byte units): 0xFE0 bytes is the largest a pool page
/// serves, and anything above takes whole pages in the big-page table.
#[test]
fn legacy_chunks_stop_at_0xfe0_bytes() {
    for b in [NtBuild::Win7_7601, NtBuild::Win10_17763] {
        let mut s = Scenario::small(b, 3);
        s.tags.push(tag("Edge", PoolKind::Paged, 2, 0xFE0, 0));
        s.tags.push(tag("Over", PoolKind::Paged, 2, 0xFE8, 0));
        let m = Machine::build(&s);
        let of = |name: &str| {
            let v = pooldump_kit::machine::tag_value(name);
            m.truth
                .allocations
                .iter()
                .filter(move |a| a.tag_value == v && a.live)
        };
        for a in of("Edge") {
            assert_eq!(a.block_bytes, 0xFF0, "{b}: a full chunk");
            assert!(a.header_va.is_some(), "{b}");
        }
        for a in of("Over") {
            assert!(a.header_va.is_none(), "{b}: whole pages, no header");
            assert_eq!(a.va % 0x1000, 0, "{b}");
        }
        let over = (m.truth.big_pool.entries.iter())
            .filter(|e| e.tag == "Over" && !e.freed)
            .count();
        assert_eq!(over, 2, "{b}");
    }
}
