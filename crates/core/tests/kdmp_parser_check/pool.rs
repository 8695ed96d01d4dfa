//! Pool as kdmp-parser reads it: the big-page table (docs/pool-structures.md §3), the
//! header of every allocation in the dump (§4.2), and the chains of
//! legacy pool pages (§4.3).

use std::collections::BTreeSet;

use pooldump_kit::Machine;
use pooldump_kit::truth::{Allocation, AllocatorKind};

use crate::kd::{Field, Kd, Layout, PAGE, big_page_hash, tag_text};

/// The `_POOL_HEADER` fields the checks read, and its size.
struct HeaderFields {
    size: usize,
    prev: Field,
    block: Field,
    pool_type: Field,
    tag: Field,
}

impl HeaderFields {
    fn new(l: &Layout) -> Self {
        let ty = "_POOL_HEADER";
        Self {
            size: l.size_of(ty),
            prev: l.field(ty, "PreviousSize"),
            block: l.field(ty, "BlockSize"),
            pool_type: l.field(ty, "PoolType"),
            tag: l.field(ty, "PoolTag"),
        }
    }
}

pub(crate) fn check_big_pool(m: &Machine, l: &Layout, kd: &Kd, what: &str) {
    let t = &m.truth;
    let kb = t.kernel.kern_base;
    let ty = "_POOL_TRACKER_BIG_PAGES";
    let entry = l.size_of(ty);
    let (f_va, f_key, f_type, f_bytes) = (
        l.field(ty, "Va"),
        l.field(ty, "Key"),
        l.field(ty, "PoolType"),
        l.field(ty, "NumberOfBytes"),
    );
    let table = kd.u64(kb + l.rva("PoolBigPageTable"), "PoolBigPageTable");
    let size = kd.u64(kb + l.rva("PoolBigPageTableSize"), "PoolBigPageTableSize");
    let in_use = kd.u32(kb + l.rva("ExpPoolBigEntriesInUse"), "in use") as u64;
    assert!(
        size.is_power_of_two() && size <= 1 << 24,
        "{what}: size {size:#x}"
    );
    assert_eq!(
        (table, size, entry as u64, in_use),
        (
            t.big_pool.table_va,
            t.big_pool.table_size,
            t.big_pool.entry_size,
            t.big_pool.in_use
        ),
        "{what}: big-page table shape"
    );
    let bytes = kd.read(table, size as usize * entry, "the big-page table");
    let va_at = |i: u64| f_va.get(&bytes[i as usize * entry..]);
    let mut got = Vec::new();
    let mut live = 0;
    for i in 0..size {
        let e = &bytes[i as usize * entry..(i as usize + 1) * entry];
        let va = f_va.get(e);
        if va == 1 {
            // Never used.
            assert_eq!(f_key.get(e), 0, "{what}: unused entry {i} has a key");
            continue;
        }
        let freed = va & 1 == 1;
        let va = va & !1;
        if !freed {
            live += 1;
            // Inserted at the first free slot probing from the hash, so no
            // never-used slot lies on its probe path.
            let mut j = big_page_hash(va) & (size - 1);
            while j != i {
                assert_ne!(
                    va_at(j),
                    1,
                    "{what}: big entry {va:#x} at {i}, but {j} on its path was never used"
                );
                j = (j + 1) & (size - 1);
            }
        }
        got.push((
            i,
            va,
            tag_text(f_key.get(e) as u32),
            f_type.get(e) as u32,
            f_bytes.get(e),
            freed,
        ));
    }
    assert_eq!(
        live, in_use,
        "{what}: live entries vs ExpPoolBigEntriesInUse"
    );
    let want: Vec<_> = t
        .big_pool
        .entries
        .iter()
        .map(|e| (e.index, e.va, e.tag.clone(), e.pool_type, e.bytes, e.freed))
        .collect();
    assert_eq!(got, want, "{what}: big-page entries");
    check_big_allocations(m, what);
}

/// The truth's own big-pool entries: POOL_TYPE values, and every live
/// header-less allocation in the table.
fn check_big_allocations(m: &Machine, what: &str) {
    let t = &m.truth;
    // The table holds POOL_TYPE values (docs/pool-structures.md §3), not the header's
    // encoding: 0 nonpaged, 1 paged, 0x200 NonPagedPoolNx.
    for e in &t.big_pool.entries {
        assert!(
            [0, 1, 0x200].contains(&e.pool_type),
            "{what}: big entry {:#x} PoolType {:#x}",
            e.va,
            e.pool_type
        );
    }
    // Each live header-less allocation of the truth is in the table (a
    // freed one's entry may have been reused since).
    for a in &t.allocations {
        if a.live && matches!(a.allocator, AllocatorKind::Big | AllocatorKind::VsBig) {
            let pool_type = a.pool.pool_type();
            assert!(
                t.big_pool
                    .entries
                    .iter()
                    .any(|e| e.va == a.va && !e.freed && e.pool_type == pool_type),
                "{what}: big allocation {:#x} ({}) is not in the table",
                a.va,
                a.tag
            );
        }
    }
}

/// The pool header of every allocation whose header is in the dump.
pub(crate) fn check_pool_headers(m: &Machine, l: &Layout, kd: &Kd, what: &str) {
    let f = HeaderFields::new(l);
    let mut checked = 0;
    for a in &m.truth.allocations {
        let Some(h) = a.header_va else { continue };
        if !a.in_dump || !(a.live || a.stale_header) {
            continue;
        }
        assert_eq!(a.va, h + 0x10, "{what}: data follows the header");
        let b = kd.read(h, f.size, "a pool header");
        let tag = f.tag.get(&b) as u32;
        let want_tag = a.tag_value | if a.protected { 0x8000_0000 } else { 0 };
        assert_eq!(
            tag_text(tag),
            tag_text(want_tag),
            "{what}: header {h:#x} tag"
        );
        let cache_aligned = a.extra_header_va.is_some();
        let pool_type = a.pool.pool_type() | if cache_aligned { 4 } else { 0 };
        let want_type = if a.live || a.allocator != AllocatorKind::LegacyPage {
            // Live, or a segment-heap block whose stale header survives.
            (pool_type & 0x6D) | 2
        } else {
            // A free legacy chunk.
            0
        };
        assert_eq!(
            f.pool_type.get(&b),
            want_type as u64,
            "{what}: header {h:#x} ({}) PoolType",
            a.tag
        );
        // A free legacy chunk includes the free space it coalesced with;
        // the truth records the merged size.
        assert_eq!(
            f.block.get(&b) * 16,
            a.block_bytes,
            "{what}: header {h:#x} ({}) BlockSize",
            a.tag
        );
        if a.allocator != AllocatorKind::LegacyPage {
            assert_eq!(
                f.prev.get(&b),
                if cache_aligned {
                    (h - a.extra_header_va.unwrap_or(h)) / 16
                } else {
                    0
                },
                "{what}: segment-heap header {h:#x} PreviousSize"
            );
        }
        if let Some(first) = a.extra_header_va {
            check_first_header(kd, &f, first, h, a, what);
        }
        assert_eq!(
            kd.translate(h),
            a.pa,
            "{what}: header {h:#x} physical address"
        );
        checked += 1;
    }
    assert!(checked > 50, "{what}: only {checked} headers checked");
}

/// The first of a cache-aligned allocation's two headers (docs/pool-structures.md §5):
/// the same tag, CacheAligned clear, its block ending at the second
/// header `h`.
fn check_first_header(kd: &Kd, f: &HeaderFields, first: u64, h: u64, a: &Allocation, what: &str) {
    let fb = kd.read(first, f.size, "a first cache-aligned header");
    let want_tag = a.tag_value | if a.protected { 0x8000_0000 } else { 0 };
    assert_eq!(f.tag.get(&fb) as u32, want_tag, "{what}: first header tag");
    assert_eq!(
        f.pool_type.get(&fb),
        ((a.pool.pool_type() & 0x6D) | 2) as u64,
        "{what}: first header {first:#x} PoolType (CacheAligned clear)"
    );
    assert_eq!(
        first + f.block.get(&fb) * 16,
        h,
        "{what}: the first header's block ends at the second"
    );
}

/// Legacy pool pages (docs/pool-structures.md §4): the headers tile each page, every
/// PreviousSize equals the BlockSize before it, and only the first is 0.
pub(crate) fn check_legacy_chains(m: &Machine, l: &Layout, kd: &Kd, what: &str) {
    let ty = "_POOL_HEADER";
    let (f_prev, f_block, f_type, f_index) = (
        l.field(ty, "PreviousSize"),
        l.field(ty, "BlockSize"),
        l.field(ty, "PoolType"),
        l.field(ty, "PoolIndex"),
    );
    // PoolIndex names the pool descriptor: 1..=ExpNumberOfPagedPools for
    // paged pool, below ExpNumberOfNonPagedPools for nonpaged (§4.3.6).
    let kb = m.truth.kernel.kern_base;
    let count = |name: &str| l.sym(name).map(|_| kd.u32(kb + l.rva(name), name) as u64);
    let (paged_pools, nonpaged_pools) = (
        count("ExpNumberOfPagedPools"),
        count("ExpNumberOfNonPagedPools"),
    );
    let pages: BTreeSet<u64> = m
        .truth
        .allocations
        .iter()
        .filter(|a| a.allocator == AllocatorKind::LegacyPage && a.in_dump)
        .filter_map(|a| a.header_va)
        .map(|h| h & !(PAGE - 1))
        .collect();
    for page in pages {
        let b = kd.read(page, PAGE as usize, "a legacy pool page");
        let mut at = 0u64;
        let mut prev = 0u64;
        while at < PAGE {
            let h = &b[at as usize..];
            let (ps, bs, pt) = (f_prev.get(h), f_block.get(h), f_type.get(h));
            assert_eq!(ps, prev, "{what}: {:#x} PreviousSize", page + at);
            assert!(bs > 0, "{what}: {:#x} BlockSize 0", page + at);
            assert!(
                pt == 0 || (pt & 2 != 0 && pt & 0x90 == 0),
                "{what}: {:#x} PoolType {pt:#x}",
                page + at
            );
            let index = f_index.get(h);
            match (pt, pt & 1 == 1) {
                (0, _) => {}
                (_, true) => assert!(
                    paged_pools.is_none_or(|n| (1..=n).contains(&index)),
                    "{what}: {:#x} paged PoolIndex {index}",
                    page + at
                ),
                (_, false) => assert!(
                    nonpaged_pools.is_none_or(|n| index < n.max(1)),
                    "{what}: {:#x} nonpaged PoolIndex {index}",
                    page + at
                ),
            }
            prev = bs;
            at += bs * 16;
        }
        assert_eq!(at, PAGE, "{what}: the chunks of {page:#x} overrun the page");
    }
}
