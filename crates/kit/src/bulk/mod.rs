//! Bulk pool for benchmark-sized machines: gigabytes of pool pages holding
//! millions of allocations over thousands of tags, and tens of thousands
//! of big-pool allocations, generated page by page while the dump is
//! written so memory use does not grow with the dump.
//!
//! Each bulk page is one of a few hundred precomputed pattern pages (a
//! legacy chained pool page, or a one-page LFH subsegment inside 1 MiB
//! segments), chosen by a hash of the page index; the few VA-dependent
//! fields (LFH encoded offsets, list links, segment signatures) are patched
//! in as the page is generated. Counts per tag follow from the pattern
//! counts, so the tracker and the ground truth agree with the pages.
//!
//! This file lays the area out on the machine; `pages.rs` holds the
//! patterns and the page generator.

pub(crate) mod pages;

use std::sync::Arc;

use crate::builds::Allocator;
use crate::layout::StructBuf;
use crate::machine::Machine;
use crate::paging::Prot;
use crate::phys::{MB, PAGE, PAGE64, Page};
use crate::pool::format::RANGE_LFH;
use crate::pool::state::BigRec;
use crate::scenario::PoolKind;
use crate::tag::tag_string;
use crate::truth::{Allocation, AllocatorKind};

pub use crate::scenario::BulkSpec;
pub use crate::truth::BulkTruth;
pub use pages::BulkFiller;
use pages::{PATTERNS, Pattern, mix, pattern_pages};

/// A bulk tag: an upper-case letter then three of [a-z0-9].
fn bulk_tag(i: u32) -> u32 {
    const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = [0u8; 4];
    b[0] = b'A' + (i % 26) as u8;
    let mut r = i / 26;
    for c in b.iter_mut().skip(1) {
        *c = REST[(r % 36) as usize];
        r /= 36;
    }
    u32::from_le_bytes(b)
}

impl Machine {
    /// Lay out the scenario's bulk area (if any) and charge its tags.
    pub(crate) fn setup_bulk(&mut self) {
        let Some(spec) = self.scenario.bulk.clone() else {
            return;
        };
        let m = self.m;
        let segment_heap = self.scenario.build.allocator() == Allocator::SegmentHeap;
        let kind = self.nx_kind();
        let pool_type = ((kind.pool_type() & 0x6D) | 2) as u64;
        let mut rng = fastrand::Rng::with_seed(self.scenario.seed ^ 0xB01C);
        let tags = self.bulk_tags(spec.tags);
        let (patterns, lfh_raw) = pattern_pages(m, &mut rng, &tags, pool_type, segment_heap);
        let pool_bytes = spec.bytes.div_ceil(2 * MB) * 2 * MB;
        let pool_pages = pool_bytes / PAGE64;
        let big_pages = (spec.big_live as u64).div_ceil(512) * 512;
        let total = pool_pages + big_pages;
        let va = self.nonpaged.reserve(total * PAGE64, 2 * MB);
        let segments = if segment_heap { pool_pages / 256 } else { 0 };

        let (seg_header, context, ring_head, ring_prev_of_first) = if segment_heap {
            self.bulk_segment_header(kind)
        } else {
            ([Box::new([0u8; PAGE]), Box::new([0u8; PAGE])], 0, 0, 0)
        };
        let (live_total, freed_total) =
            self.charge_bulk_tags(&patterns, pool_pages, segment_heap, &tags, &mut rng);

        let pfn = self.mem.free_contiguous(total, 512);
        let filler = BulkFiller {
            va,
            pfn,
            pool_pages,
            seed: self.scenario.seed,
            segment_heap,
            patterns,
            lfh_encoded_off: if segment_heap {
                m.offset_of("_HEAP_LFH_SUBSEGMENT", "BlockOffsets") as usize
            } else {
                0
            },
            lfh_raw,
            lfh_key: self.lfh_key as u32,
            heap_keys: self.heap_keys,
            seg_header,
            seg_sig_off: if segment_heap {
                m.offset_of("_HEAP_PAGE_SEGMENT", "Signature") as usize
            } else {
                0
            },
            heap_key: self.heap_key,
            context,
            ring_head,
            ring_prev_of_first,
            segments,
        };
        self.map_bulk(Arc::new(filler), va, pfn, total, kind);
        self.bulk_segments = (0..segments).map(|j| va + j * MB).collect();
        let big_va = va + pool_pages * PAGE64;
        self.place_bulk_big(&spec, &tags, &mut rng, big_va, segment_heap, kind);
        self.truth.bulk = Some(BulkTruth {
            va,
            pfn,
            pool_pages,
            big_pages,
            live_allocations: live_total,
            freed_chunks: freed_total,
            tags: tags.len() as u64,
        });
        self.truth
            .pages
            .large_pages
            .extend((0..total / 512).map(|k| va + k * 2 * MB));
    }

    /// `n` bulk tags (at least one) that no scenario tag and no hot tag
    /// uses.
    fn bulk_tags(&self, n: u32) -> Vec<u32> {
        let taken: std::collections::HashSet<u32> =
            self.ledger.order.iter().map(|(t, _)| *t).collect();
        (0..)
            .map(bulk_tag)
            .filter(|t| {
                !taken.contains(t) && !crate::tracker::HOT_TAGS.contains(&tag_string(*t).as_str())
            })
            .take(n.max(1) as usize)
            .collect()
    }

    /// Segment-header pages: descriptors 2..255 each a one-page LFH range.
    /// Returns the two pages, the heap's segment context, and the segment
    /// list's head and the entry the first bulk segment follows.
    fn bulk_segment_header(&mut self, kind: PoolKind) -> ([Box<Page>; 2], u64, u64, u64) {
        let m = self.m;
        let mut seg_header = [Box::new([0u8; PAGE]), Box::new([0u8; PAGE])];
        let dsize = m.ty("_HEAP_PAGE_RANGE_DESCRIPTOR").size as usize;
        let mut d = StructBuf::new(m, "_HEAP_PAGE_RANGE_DESCRIPTOR");
        d.set("RangeFlags", RANGE_LFH)
            .set("UnitSize", 1)
            .set("CommittedPageCount", 1);
        for idx in 2..256usize {
            let at = idx * dsize;
            let (pg, o) = (at / PAGE, at % PAGE);
            seg_header[pg][o..o + dsize].copy_from_slice(&d.bytes);
        }
        let context = self.heap_context_va(kind);
        let heap = self.heaps[&kind];
        let ring_head = heap
            + m.offset_of("_SEGMENT_HEAP", "SegContexts")
            + m.offset_of("_HEAP_SEG_CONTEXT", "SegmentListHead");
        let ring_prev_of_first = self
            .pool
            .segments
            .get(&kind)
            .and_then(|v| v.last())
            .map_or(ring_head, |s| s.va);
        (seg_header, context, ring_head, ring_prev_of_first)
    }

    /// Count what the pages hold and charge each tag: the live and freed
    /// chunks the patterns put there, and some history. Returns the live
    /// and freed totals.
    fn charge_bulk_tags(
        &mut self,
        patterns: &[Pattern],
        pool_pages: u64,
        segment_heap: bool,
        tags: &[u32],
        rng: &mut fastrand::Rng,
    ) -> (u64, u64) {
        let mut live_per_tag: std::collections::HashMap<u32, (u64, u64, u64)> = Default::default();
        let filler_probe = |page: u64| (mix(self.scenario.seed ^ page) % PATTERNS as u64) as usize;
        let mut per_pattern = vec![0u64; PATTERNS];
        for i in 0..pool_pages {
            if segment_heap && i % 256 < 2 {
                continue;
            }
            per_pattern[filler_probe(i)] += 1;
        }
        let (mut live_total, mut freed_total) = (0u64, 0u64);
        for (p, n) in patterns.iter().zip(&per_pattern) {
            for c in &p.chunks {
                let e = live_per_tag.entry(c.tag).or_default();
                if c.live {
                    e.0 += n;
                    e.2 += n * c.block_bytes as u64;
                    live_total += n;
                } else {
                    e.1 += n;
                    freed_total += n;
                }
            }
        }
        for t in tags {
            let (live, freed, bytes) = live_per_tag.get(t).copied().unwrap_or_default();
            let history = rng.u64(0..=live * 4 + 16);
            self.ledger
                .charge(*t, false, live + freed + history, freed + history, bytes);
        }
        (live_total, freed_total)
    }

    /// Back the area with `filler`'s procedural frames from `pfn` on,
    /// mapped with large pages at `va`.
    fn map_bulk(&mut self, filler: Arc<BulkFiller>, va: u64, pfn: u64, total: u64, kind: PoolKind) {
        self.mem.add_procedural(pfn..pfn + total, filler.clone());
        self.bulk_filler = Some(filler);
        let prot = if kind == PoolKind::NonPaged {
            Prot::DataExec
        } else {
            Prot::Data
        };
        for k in 0..total / 512 {
            self.asp
                .map_large(&mut self.mem, va + k * 2 * MB, pfn + k * 512, prot);
        }
    }

    /// Big allocations: one page each, live; freed ones left only in the
    /// table, at addresses now unmapped.
    fn place_bulk_big(
        &mut self,
        spec: &BulkSpec,
        tags: &[u32],
        rng: &mut fastrand::Rng,
        big_va: u64,
        segment_heap: bool,
        kind: PoolKind,
    ) {
        for j in 0..spec.big_live as u64 {
            let tag = tags[rng.usize(..tags.len())];
            let bytes = if segment_heap {
                rng.u64(0xFE1..=0x1000)
            } else {
                PAGE64
            };
            self.pool.big.push(BigRec {
                va: big_va + j * PAGE64,
                key: tag,
                pool_type: kind.pool_type(),
                bytes,
                freed: false,
            });
            self.ledger.charge(tag, false, 1, 0, bytes);
        }
        let freed_base = self
            .nonpaged
            .reserve(spec.big_freed as u64 * PAGE64, PAGE64);
        for j in 0..spec.big_freed as u64 {
            let tag = tags[rng.usize(..tags.len())];
            self.pool.big.push(BigRec {
                va: freed_base + j * PAGE64,
                key: tag,
                pool_type: kind.pool_type(),
                bytes: PAGE64,
                freed: true,
            });
            self.ledger.charge(tag, false, 1, 1, 0);
        }
    }

    /// Every small allocation in the bulk area (computed, not stored).
    pub fn bulk_allocations(&self) -> Vec<Allocation> {
        let Some(b) = &self.truth.bulk else {
            return Vec::new();
        };
        let f = self.bulk_filler.as_ref().expect("bulk filler");
        let mut out = Vec::new();
        for i in 0..b.pool_pages {
            if f.is_seg_header(i) {
                continue;
            }
            let page_va = b.va + i * PAGE64;
            for c in &f.patterns[f.pattern_of(i)].chunks {
                let h = page_va + c.offset as u64;
                out.push(Allocation {
                    va: h + 0x10,
                    header_va: Some(h),
                    extra_header_va: None,
                    tag: tag_string(c.tag),
                    tag_value: c.tag,
                    pool: self.nx_kind(),
                    size: c.size as u64,
                    block_bytes: c.block_bytes as u64,
                    live: c.live,
                    stale_header: !c.live,
                    allocator: if f.segment_heap {
                        AllocatorKind::Lfh
                    } else {
                        AllocatorKind::LegacyPage
                    },
                    pa: Some((b.pfn + i) * PAGE64 + c.offset as u64),
                    in_dump: true,
                    protected: false,
                });
            }
        }
        out
    }
}
