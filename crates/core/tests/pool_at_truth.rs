//! `pool_at` (`!pool Addr`) against the kit's ground truth on every
//! build: for the first, middle and last byte of sampled allocations of
//! each allocator the build has, the containing allocation is the one the
//! kit placed there, and the page's list is exactly the truth's
//! allocations overlapping that page; an address between allocations, an
//! unmapped one, one outside pool, a user-mode one and a non-canonical one
//! each get their own answer. The blocks' contents (`!pool Addr 1`) are
//! the bytes the kit wrote, read through its own page tables, and a page
//! the kit paged out is an unreadable range, not an error.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use pooldump_core::pagemap::{PageMap, PageMapOptions, VaRange};
use pooldump_core::pool::find::{
    Allocator, BlockContents, ContentsOptions, DEFAULT_HOLDER_BYTES, DEFAULT_OTHER_BYTES,
    MAX_BLOCK_BYTES, PageStatus, PoolAtError, PoolPage, PoolVerdict,
};
use pooldump_core::{CrashDump, KernelVa, Memory, MemoryError, PAGE_SIZE, Target};
use pooldump_kit::truth::AllocatorKind;
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};

/// An allocation as the dump shows it: where its block starts (header,
/// else first byte) and ends, what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    start: u64,
    end: u64,
    tag: String,
    allocated: bool,
    allocator: Allocator,
    /// An allocation of the truth (not a legacy page's closing free chunk).
    planted: bool,
}

/// Every allocation of the truth the dump can show: headers in the dump
/// (live, or freed with the stale header kept) and every big-page entry.
fn visible_blocks(m: &Machine) -> Vec<Block> {
    let mut out: Vec<Block> = m
        .truth
        .allocations
        .iter()
        .filter(|a| !matches!(a.allocator, AllocatorKind::Big | AllocatorKind::VsBig))
        .filter(|a| a.in_dump && (a.live || a.stale_header))
        .map(|a| {
            let start = a.header_va.unwrap_or(a.va);
            Block {
                start,
                end: start + a.block_bytes,
                tag: a.tag.clone(),
                allocated: a.live,
                allocator: match a.allocator {
                    AllocatorKind::LegacyPage => Allocator::LegacyPage,
                    AllocatorKind::Lfh => Allocator::Lfh,
                    _ => Allocator::Vs,
                },
                planted: true,
            }
        })
        .collect();
    out.extend(m.truth.big_pool.entries.iter().map(|e| Block {
        start: e.va,
        end: e.va + e.bytes,
        tag: e.tag.clone(),
        allocated: !e.freed,
        allocator: Allocator::BigPool,
        planted: true,
    }));
    // The kit ends each legacy page with one free chunk (tag 0) from its
    // last chunk to the page's end, as the allocator leaves it; the truth
    // lists the chunks placed, so the closing one is derived here.
    let mut legacy_ends: BTreeMap<u64, u64> = BTreeMap::new();
    for b in out.iter().filter(|b| b.allocator == Allocator::LegacyPage) {
        let e = legacy_ends.entry(b.start & !(PAGE_SIZE - 1)).or_default();
        *e = (*e).max(b.end);
    }
    for (page, end) in legacy_ends {
        if end < page + PAGE_SIZE {
            out.push(Block {
                start: end,
                end: page + PAGE_SIZE,
                tag: String::new(),
                allocated: false,
                allocator: Allocator::LegacyPage,
                planted: false,
            });
        }
    }
    out
}

/// The truth's blocks overlapping the page of `va`.
fn page_blocks(blocks: &[Block], va: u64) -> BTreeSet<u64> {
    let page = va & !(PAGE_SIZE - 1);
    blocks
        .iter()
        .filter(|b| b.start < page + PAGE_SIZE && b.end > page)
        .map(|b| b.start)
        .collect()
}

fn check_inside(t: &Target<CrashDump>, blocks: &[Block], b: &Block, va: u64, what: &str) {
    let p = t.pool_at(KernelVa(va)).unwrap();
    let name = format!("{what}: {va:#x} in {} at {:#x}", b.tag, b.start);
    assert_eq!(p.verdict, PoolVerdict::InAllocation, "{name}: {p:?}");
    let c = p.containing.as_ref().unwrap();
    assert_eq!(c.extent(), b.start..b.end, "{name}");
    assert_eq!(c.tag.to_string(), b.tag, "{name}");
    assert_eq!(c.allocator, b.allocator, "{name}");
    assert_eq!(c.state, common::state_of(b.allocated), "{name}");
    assert!(p.allocations.contains(c), "{name}: not in the page's list");
    let listed: Vec<u64> = p.allocations.iter().map(|a| a.extent().start).collect();
    assert!(listed.is_sorted(), "{name}: not by address");
    let listed: BTreeSet<u64> = listed.into_iter().collect();
    assert_eq!(listed.len(), p.allocations.len(), "{name}: listed twice");
    let want = page_blocks(blocks, va);
    let extra: Vec<_> = p
        .allocations
        .iter()
        .filter(|a| !want.contains(&a.extent().start))
        .collect();
    assert_eq!(
        listed, want,
        "{name}: the page's allocations; extra {extra:#?}"
    );
    assert!(
        !p.warnings
            .iter()
            .any(|w| w.message.contains("segment heap")),
        "{name}: {:?}",
        p.warnings
    );
}

/// Up to `n` blocks of each allocator, live and freed, and as many that
/// cross a page boundary if any do (the kit places none: its VS and LFH
/// blocks stay in one page), spread over the list.
fn samples(blocks: &[Block], n: usize) -> Vec<&Block> {
    let mut by: BTreeMap<(Allocator, bool, bool), Vec<&Block>> = BTreeMap::new();
    for b in blocks.iter().filter(|b| b.planted) {
        let crosses = b.start / PAGE_SIZE != (b.end - 1) / PAGE_SIZE;
        by.entry((b.allocator, b.allocated, crosses))
            .or_default()
            .push(b);
    }
    let mut out = Vec::new();
    for list in by.values() {
        let step = list.len().div_ceil(n).max(1);
        out.extend(list.iter().step_by(step).copied());
    }
    out
}

/// A byte of a sampled page that no allocation of the truth covers, live
/// or freed, header or not.
fn gap(m: &Machine, blocks: &[Block], t: &Target<CrashDump>) -> Option<u64> {
    let mut all: Vec<(u64, u64)> = m
        .truth
        .allocations
        .iter()
        // Big allocations are their entries' bytes, among the blocks.
        .filter(|a| !matches!(a.allocator, AllocatorKind::Big | AllocatorKind::VsBig))
        .map(|a| {
            let start = a.extra_header_va.or(a.header_va).unwrap_or(a.va);
            (start, a.va + a.block_bytes.max(a.size))
        })
        .collect();
    all.extend(blocks.iter().map(|b| (b.start, b.end)));
    all.sort_unstable();
    blocks
        .iter()
        .flat_map(|b| {
            let page = (b.end - 1) & !(PAGE_SIZE - 1);
            (page..page + PAGE_SIZE).step_by(16)
        })
        .find(|va| {
            !all.iter().any(|(s, e)| s <= va && va < e) && t.mem.translate(KernelVa(*va)).is_ok()
        })
}

/// The middle of a mapped page of a pool region that no allocation of the
/// truth, nor a decoy, touches.
fn empty_pool_page(m: &Machine, blocks: &[Block], t: &Target<CrashDump>) -> Option<u64> {
    let pools: Vec<VaRange> = m
        .truth
        .regions
        .iter()
        .filter(|r| r.name.ends_with("NonPagedPool") || r.name.ends_with("PagedPool"))
        .filter(|r| !r.name.contains("WorkingSet"))
        .filter_map(|r| VaRange::from_base_size(r.base, r.size))
        .collect();
    let map = PageMap::walk(&t.mem, Some(&pools), &PageMapOptions::default());
    let used = |page: u64| {
        blocks
            .iter()
            .any(|b| b.start < page + PAGE_SIZE && b.end > page)
            || m.truth
                .allocations
                .iter()
                .any(|a| a.va & !(PAGE_SIZE - 1) == page)
            || m.truth
                .decoys
                .iter()
                .any(|d| d.va.is_some_and(|v| v & !(PAGE_SIZE - 1) == page))
    };
    map.mappings()
        .iter()
        .flat_map(|r| (0..r.pages).map(move |i| r.va.0 + i * PAGE_SIZE))
        .find(|page| !used(*page) && !used(page.wrapping_sub(PAGE_SIZE)))
        .map(|page| page + PAGE_SIZE / 2)
}

/// The allocators whose blocks every kit machine of `b` holds.
fn allocators_of(b: NtBuild) -> BTreeSet<Allocator> {
    if b.allocator() == pooldump_kit::builds::Allocator::SegmentHeap {
        [Allocator::Lfh, Allocator::Vs, Allocator::BigPool].into()
    } else {
        [Allocator::LegacyPage, Allocator::BigPool].into()
    }
}

#[test]
fn every_build_shows_the_allocation_and_its_page() {
    for b in NtBuild::ALL {
        let m = Machine::build(&Scenario::small(b, 11));
        let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
        let blocks = visible_blocks(&m);
        let what = b.to_string();
        let kinds: BTreeSet<Allocator> = blocks.iter().map(|b| b.allocator).collect();
        let sampled = samples(&blocks, 4);
        for blk in &sampled {
            if blk.allocator == Allocator::BigPool && blk.allocated {
                // Whether a big allocation's page is in the dump is the
                // page's business: its entry covers it either way.
                if t.mem.translate(KernelVa(blk.start)).is_err() {
                    continue;
                }
            }
            if blk.allocator == Allocator::BigPool && !blk.allocated {
                continue;
            }
            let mid = blk.start + (blk.end - blk.start) / 2;
            for va in [blk.start, mid, blk.end - 1] {
                check_inside(&t, &blocks, blk, va, &what);
            }
        }
        let met: BTreeSet<Allocator> = sampled.iter().map(|b| b.allocator).collect();
        assert_eq!(met, kinds, "{what}: allocators sampled");
        assert!(kinds.is_superset(&allocators_of(b)), "{what}: {kinds:?}");

        // Between allocations: a gap in a page with allocations (segment
        // heap metadata; legacy pages are chained end to end), or a pool
        // page without any.
        let gaps = [gap(&m, &blocks, &t), empty_pool_page(&m, &blocks, &t)];
        assert!(gaps.iter().any(Option::is_some), "{what}: no gap met");
        for va in gaps.into_iter().flatten() {
            let p = t.pool_at(KernelVa(va)).unwrap();
            // 8.1's symbols lack the nonpaged pool bounds: an empty page
            // is not known to be pool.
            let want = if b == NtBuild::Win81_9600 && p.allocations.is_empty() {
                PoolVerdict::NoAllocation
            } else {
                PoolVerdict::BetweenAllocations
            };
            assert_eq!(p.verdict, want, "{what}: {va:#x} {p:?}");
            assert!(p.containing.is_none());
            let listed: BTreeSet<u64> = p.allocations.iter().map(|a| a.extent().start).collect();
            assert_eq!(
                listed,
                page_blocks(&blocks, va),
                "{what}: gap {va:#x}'s page"
            );
        }

        others(&t, b, &what);
    }
}

/// An unmapped address, one outside pool, a user-mode and a
/// non-canonical one.
fn others(t: &Target<CrashDump>, b: NtBuild, what: &str) {
    // The bottom of the kernel half: no PML4 entry in the kit.
    let hole = KernelVa(0xFFFF_8000_0000_0000);
    assert!(matches!(
        t.mem.translate(hole),
        Err(MemoryError::NotPresent { .. })
    ));
    let p = t.pool_at(hole).unwrap();
    assert_eq!(p.verdict, PoolVerdict::NotMapped, "{what}: {p:?}");
    assert!(matches!(p.status, PageStatus::NotMapped { .. }), "{what}");
    assert!(p.containing.is_none() && p.allocations.is_empty(), "{what}");

    // nt's image: mapped, not pool.
    let p: PoolPage = t.pool_at(t.kern_base()).unwrap();
    let want = if b == NtBuild::Win81_9600 {
        // 8.1's symbols lack the nonpaged pool bounds.
        PoolVerdict::NoAllocation
    } else {
        PoolVerdict::NotPool
    };
    assert_eq!(p.verdict, want, "{what}: {p:?}");
    assert!(matches!(p.status, PageStatus::Resident { .. }), "{what}");
    assert_eq!(p.regions_known, b != NtBuild::Win81_9600, "{what}");

    // The last page of the address space (its end is 2^64).
    let p = t.pool_at(KernelVa(u64::MAX)).unwrap();
    assert_eq!(p.page, KernelVa(0xFFFF_FFFF_FFFF_F000), "{what}");
    assert!(p.containing.is_none(), "{what}: {p:?}");

    let e = t.pool_at(KernelVa(0x0000_8000_0000_1000)).unwrap_err();
    assert!(matches!(e, PoolAtError::NonCanonical { .. }), "{what}: {e}");
    assert!(e.to_string().contains("not a canonical address"), "{e}");
    let e = t.pool_at(KernelVa(0x7FFE_0000)).unwrap_err();
    assert!(matches!(e, PoolAtError::UserAddress { .. }), "{what}: {e}");
}

#[test]
fn paged_out_pages_are_not_mapped_but_big_entries_still_cover_them() {
    let m = common::with_paged_out_and_transition_pages(Scenario::small(NtBuild::Win10_19041, 12));
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let blocks = visible_blocks(&m);
    let mut not_mapped = 0;
    for page in &m.truth.pages.paged_out {
        let p = t.pool_at(KernelVa(*page + 0x10)).unwrap();
        assert_eq!(
            p.status,
            PageStatus::NotMapped {
                level: pooldump_core::PxeLevel::Pte
            },
            "{page:#x}"
        );
        // Only the big-page table speaks for a page that is not there.
        assert!(
            p.allocations
                .iter()
                .all(|a| a.allocator == Allocator::BigPool),
            "{page:#x}: {p:?}"
        );
        match &p.containing {
            Some(c) => {
                let b = blocks
                    .iter()
                    .find(|b| b.start == c.va.0 && b.allocator == Allocator::BigPool)
                    .expect("a big-page entry of the truth");
                assert!(b.start <= page + 0x10 && page + 0x10 < b.end);
            }
            None => {
                not_mapped += 1;
                assert_eq!(p.verdict, PoolVerdict::NotMapped);
            }
        }
    }
    assert!(not_mapped > 0);
}

/// The bytes at `va` as the kit's own page walk reads its memory: `None`
/// for a byte whose page the kit's tables do not map (paged out, never
/// mapped) or that is in transition (the page walk pooldump shares with
/// Windows reads those; the kit's does not), each page's state named.
fn kit_bytes(m: &Machine, va: u64, len: usize) -> Vec<Result<u8, &'static str>> {
    let transition: BTreeSet<u64> = m.truth.pages.transition.iter().copied().collect();
    m.asp
        .read_mapped(&m.mem, va, len)
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let page = (va + i as u64) & !(PAGE_SIZE - 1);
            if transition.contains(&page) {
                return Err("transition");
            }
            b.ok_or("not mapped")
        })
        .collect()
}

/// Every block's contents as read are the kit's bytes from the block's
/// first byte after its header: the holder's body up to the default, the
/// others' first lines, and no byte the kit's tables do not map read.
fn check_contents(
    m: &Machine,
    p: &PoolPage,
    read: &[Option<BlockContents>],
    opts: &ContentsOptions,
    what: &str,
) {
    assert_eq!(read.len(), p.allocations.len(), "{what}");
    for (a, c) in p.allocations.iter().zip(read) {
        let holder = p.containing.as_ref() == Some(a);
        let Some(c) = c else {
            assert!(opts.holder_only && !holder, "{what}: {a:?} not read");
            continue;
        };
        let name = format!("{what}: {} {} at {}", a.allocator, a.tag, a.va);
        assert_eq!(c.va, a.va, "{name}");
        let body = a.extent().end - a.va.0;
        assert_eq!(c.body_bytes, body, "{name}");
        let asked = opts.bytes.unwrap_or(if holder {
            DEFAULT_HOLDER_BYTES
        } else {
            DEFAULT_OTHER_BYTES
        });
        let want_len = body.min(asked).min(MAX_BLOCK_BYTES);
        assert_eq!(c.bytes.len() as u64, want_len, "{name}");
        assert_eq!(c.cut.is_some(), want_len < body, "{name}");
        let truth = kit_bytes(m, a.va.0, c.bytes.len());
        for (i, t) in truth.iter().enumerate() {
            match t {
                Ok(b) => {
                    assert!(c.readable(i), "{name}: byte {i:#x} not read");
                    assert_eq!(c.bytes[i], *b, "{name}: byte {i:#x}");
                }
                Err("transition") => {}
                Err(_) => {
                    assert!(
                        !c.readable(i),
                        "{name}: byte {i:#x} read from an unmapped page"
                    );
                    assert_eq!(c.bytes[i], 0, "{name}");
                }
            }
        }
    }
}

#[test]
fn contents_are_the_bytes_the_kit_wrote() {
    for b in [
        NtBuild::Win7_7601,
        NtBuild::Win10_17763,
        NtBuild::Win10_19041,
        NtBuild::Win11_22000,
    ] {
        let m = Machine::build(&Scenario::small(b, 13));
        let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
        let blocks = visible_blocks(&m);
        let what = b.to_string();
        let mut met = BTreeSet::new();
        for blk in samples(&blocks, 3) {
            let va = blk.start + (blk.end - blk.start) / 2;
            if t.mem.translate(KernelVa(va)).is_err() {
                continue;
            }
            let p = t.pool_at(KernelVa(va)).unwrap();
            let Some(holder) = &p.containing else {
                continue;
            };
            met.insert(holder.allocator);
            for opts in [
                ContentsOptions::default(),
                ContentsOptions {
                    bytes: Some(0x30),
                    holder_only: true,
                },
                ContentsOptions {
                    bytes: Some(u64::MAX),
                    holder_only: false,
                },
            ] {
                let read = t.pool_contents(&p, &opts).unwrap();
                check_contents(&m, &p, &read, &opts, &what);
            }
        }
        assert!(met.is_superset(&allocators_of(b)), "{what}: {met:?}");
    }
}

#[test]
fn a_paged_out_page_of_a_big_block_is_unreadable_not_an_error() {
    let m = common::with_paged_out_and_transition_pages(Scenario::small(NtBuild::Win10_19041, 12));
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let opts = ContentsOptions {
        bytes: Some(MAX_BLOCK_BYTES),
        holder_only: true,
    };
    let mut met = 0;
    for page in &m.truth.pages.paged_out {
        let p = t.pool_at(KernelVa(*page + 0x10)).unwrap();
        let Some(c) = &p.containing else { continue };
        let read = t.pool_contents(&p, &opts).unwrap();
        check_contents(&m, &p, &read, &opts, &format!("{page:#x}"));
        let got = read.iter().flatten().next().unwrap();
        let hole = got
            .unreadable
            .iter()
            .find(|r| r.va.0 <= *page && *page < r.va.0 + r.bytes);
        if *page < c.va.0 + got.bytes.len() as u64 {
            let hole = hole.unwrap_or_else(|| panic!("{page:#x}: {:?}", got.unreadable));
            assert!(
                hole.reason.contains("not mapped (PTE not present)"),
                "{}",
                hole.reason
            );
            met += 1;
        }
    }
    assert!(met > 0, "no big block over a paged-out page");
}
