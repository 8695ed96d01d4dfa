//! `find`'s report held against the kit's ground truth (`check`), for the
//! tests that run `find` on kit machines.

use std::collections::{BTreeMap, BTreeSet};

use pooldump_core::pool::TagPattern;
use pooldump_core::pool::find::{
    AllocationState, Allocator, FindReport, FoundAllocation, PoolKind,
};
use pooldump_kit::Machine;
use pooldump_kit::truth::{Allocation, AllocatorKind};

/// Where an allocation is identified: its header, or its address.
pub fn key_of_truth(a: &Allocation) -> u64 {
    a.header_va.unwrap_or(a.va)
}

pub fn key_of_found(a: &FoundAllocation) -> u64 {
    a.header.map_or(a.va.0, |h| h.0)
}

pub fn pool_of(p: pooldump_kit::PoolKind) -> PoolKind {
    match p {
        pooldump_kit::PoolKind::NonPaged => PoolKind::NonPaged,
        pooldump_kit::PoolKind::NonPagedNx => PoolKind::NonPagedNx,
        pooldump_kit::PoolKind::Paged => PoolKind::Paged,
    }
}

/// Compare a report with the truth for the allocations of `tags`.
pub fn check(m: &Machine, truth: &[Allocation], r: &FindReport, tags: &[&str], what: &str) {
    let wanted = |tag: &str| {
        tags.iter().any(|t| {
            TagPattern::parse(t)
                .unwrap()
                .matches(pooldump_core::PoolTag::parse(tag).unwrap())
        })
    };
    let found: BTreeMap<u64, &FoundAllocation> =
        r.allocations.iter().map(|a| (key_of_found(a), a)).collect();
    assert_eq!(
        found.len(),
        r.allocations.len(),
        "{what}: an allocation is listed twice"
    );
    let big_bytes: BTreeMap<u64, u64> = m
        .truth
        .big_pool
        .entries
        .iter()
        .map(|e| (e.va, e.bytes))
        .collect();
    let mut truth_keys = BTreeSet::new();
    let mut live_in_dump = 0;
    for a in truth.iter().filter(|a| wanted(&a.tag)) {
        let k = key_of_truth(a);
        truth_keys.insert(k);
        let f = found.get(&k);
        let name = format!(
            "{what}: {} {} at {k:#x} ({:?})",
            a.tag,
            if a.live { "live" } else { "freed" },
            a.allocator
        );
        if a.live && a.in_dump {
            let f = f.unwrap_or_else(|| panic!("{name} was not found"));
            if f.state == AllocationState::Unknown {
                // Only when the heap metadata that decides it is paged out:
                // the segment header, and the page of the VS chunk header
                // (the LFH subsegment header shares the block's page).
                let out: BTreeSet<u64> = m.truth.pages.paged_out.iter().copied().collect();
                let seg = k & !0xF_FFFF;
                let first = a.extra_header_va.unwrap_or(k);
                let chunk_page = (first - 0x10) & !0xFFF;
                // A VS header at a page's start may have moved there from
                // the chunk header before it: only the segment header's
                // chunk chain finds that chunk.
                let moved = a.allocator == AllocatorKind::Vs && first % 0x1000 == 0;
                assert!(
                    (out.contains(&seg) || out.contains(&(seg + 0x1000)))
                        && (a.allocator != AllocatorKind::Vs || moved || out.contains(&chunk_page)),
                    "{name}: state unknown with its heap metadata in the dump"
                );
                assert_eq!(f.allocator, Allocator::Unverified, "{name}");
                continue;
            }
            live_in_dump += 1;
            assert_eq!(f.state, AllocationState::Allocated, "{name}");
            assert_eq!(f.allocator, super::allocator_of(a.allocator), "{name}");
            assert_eq!(f.va.0, a.va, "{name}: address");
            assert_eq!(f.tag.to_string(), a.tag, "{name}");
            assert_eq!(f.protected, a.protected, "{name}: protected bit");
            assert_eq!(f.pool, pool_of(a.pool), "{name}: pool");
            let bytes = match f.allocator {
                Allocator::BigPool => big_bytes[&a.va],
                _ => a.block_bytes,
            };
            assert_eq!(f.bytes, bytes, "{name}: size");
            if f.header.is_some() {
                assert_eq!(f.pa.map(|p| p.0), a.pa, "{name}: physical address");
            }
        } else if a.live {
            if let Some(f) = f {
                assert!(!f.in_dump, "{name}: paged out, yet listed as in the dump");
            }
        } else if a.stale_header && a.in_dump {
            let f = f.unwrap_or_else(|| panic!("{name}: its stale header was not found"));
            // Unknown only when the heap metadata that decides it is paged
            // out: the segment header (without it the chunk chain that
            // finds a header moved to a page's start cannot be walked), or
            // the page of the VS chunk header.
            let out: BTreeSet<u64> = m.truth.pages.paged_out.iter().copied().collect();
            let seg = k & !0xF_FFFF;
            let chunk_page = (k - 0x10) & !0xFFF;
            let metadata_out = [seg, seg + 0x1000, chunk_page]
                .iter()
                .any(|p| out.contains(p));
            if f.state == AllocationState::Unknown
                && a.allocator == AllocatorKind::Vs
                && metadata_out
            {
                continue;
            }
            assert_eq!(f.state, AllocationState::Free, "{name}");
        } else if let Some(f) = f {
            assert_eq!(f.state, AllocationState::Free, "{name}");
        }
    }
    // The big-page table: live entries allocated, freed ones free.
    for e in m.truth.big_pool.entries.iter().filter(|e| wanted(&e.tag)) {
        truth_keys.insert(e.va);
        let name = format!("{what}: big-page entry {} at {:#x}", e.tag, e.va);
        let f = found
            .get(&e.va)
            .unwrap_or_else(|| panic!("{name} was not found"));
        assert_eq!(f.allocator, Allocator::BigPool, "{name}");
        assert_eq!(f.bytes, e.bytes, "{name}");
        assert_eq!(f.state, super::state_of(!e.freed), "{name}");
        if !e.freed && !truth.iter().any(|a| a.va == e.va) {
            live_in_dump += 1;
        }
    }
    for (k, f) in &found {
        assert!(
            truth_keys.contains(k),
            "{what}: {} {} at {k:#x} ({}) is not an allocation of the truth",
            f.tag,
            f.state,
            f.allocator
        );
    }
    // Decoys never look like allocations.
    for d in m.truth.decoys.iter().filter(|d| wanted(&d.tag)) {
        if let Some(va) = d.va {
            assert!(
                !found.contains_key(&(va - 4)),
                "{what}: decoy at {va:#x} listed"
            );
        }
    }
    // Well-formed pages in unmapped frames: only in the unmapped list.
    let unmapped_decoys: BTreeSet<u64> = m
        .truth
        .decoys
        .iter()
        .filter(|d| d.place == "unmapped-frame" && wanted(&d.tag))
        .map(|d| d.pa - 4)
        .collect();
    let listed: BTreeSet<u64> = r
        .unmapped
        .iter()
        .filter(|u| u.mapped_at.is_none())
        .map(|u| u.pa.0)
        .collect();
    assert_eq!(listed, unmapped_decoys, "{what}: unmapped frames");
    for a in &r.allocations {
        if let Some(pa) = a.pa {
            assert!(
                !unmapped_decoys.contains(&pa.0),
                "{what}: unmapped decoy listed"
            );
        }
    }
    // Per-tag live counts agree with the list and the tracker.
    let found_live = r
        .allocations
        .iter()
        .filter(|a| a.state == AllocationState::Allocated && a.in_dump)
        .count();
    assert_eq!(found_live, live_in_dump, "{what}: live allocations");
    let by_tag: u64 = r.tags.iter().map(|t| t.allocated - t.not_in_dump).sum();
    assert_eq!(by_tag as usize, live_in_dump, "{what}: per-tag counts");
    for t in &r.tags {
        let diff: u64 = m
            .truth
            .tags
            .iter()
            .filter(|u| u.tag == t.tag.to_string())
            .map(|u| u.diff)
            .sum();
        if let Some(tr) = t.tracker {
            assert_eq!(tr.diff, diff, "{what}: tracker diff of {}", t.tag);
        }
    }
}

/// The tags of the kit's small scenario.
pub const SMALL_TAGS: &[&str] = &[
    "Leak", "File", "Ntfx", "MmSt", "Irp ", "NSbf", "FsFl", "LkBf", "CM", "Proc", "CaAl", "MmLd",
];
