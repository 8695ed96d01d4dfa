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

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::builds::Allocator;
use crate::layout::{Manifest, StructBuf};
use crate::machine::Machine;
use crate::paging::Prot;
use crate::phys::{MB, PAGE64};
use crate::phys::{PAGE, Page, PageFiller};
use crate::pool::{BigRec, RANGE_LFH, SEGMENT_SIGNATURE_KEY};
use crate::scenario::PoolKind;
use crate::tag::tag_string;
use crate::truth::{Allocation, AllocatorKind};

pub use crate::scenario::BulkSpec;

/// What the bulk area holds, for tests and benchmarks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BulkTruth {
    pub va: u64,
    pub pfn: u64,
    /// Pages of small allocations (segment headers included).
    pub pool_pages: u64,
    /// Pages of big allocations, after the pool pages.
    pub big_pages: u64,
    pub live_allocations: u64,
    pub freed_chunks: u64,
    pub tags: u64,
}

const PATTERNS: usize = 512;

/// One chunk of a pattern page.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    offset: u16,
    tag: u32,
    block_bytes: u16,
    size: u16,
    live: bool,
}

struct Pattern {
    page: Box<Page>,
    chunks: Vec<Chunk>,
}

/// Everything a page generator needs, shared by rayon workers.
pub struct BulkFiller {
    va: u64,
    pfn: u64,
    pool_pages: u64,
    seed: u64,
    segment_heap: bool,
    patterns: Vec<Pattern>,
    /// LFH: BlockOffsets.EncodedData offset, and the raw (block | first << 16).
    lfh_encoded_off: usize,
    lfh_raw: Vec<u32>,
    lfh_key: u32,
    /// Segment heap: page 0 and page 1 of every segment header, with
    /// ListEntry and Signature patched per segment.
    seg_header: [Box<Page>; 2],
    seg_sig_off: usize,
    heap_key: u64,
    context: u64,
    ring_head: u64,
    ring_prev_of_first: u64,
    segments: u64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl BulkFiller {
    fn pattern_of(&self, page: u64) -> usize {
        (mix(self.seed ^ page) % PATTERNS as u64) as usize
    }

    /// Is page `i` of the pool area a segment-header page?
    fn is_seg_header(&self, i: u64) -> bool {
        self.segment_heap && i % 256 < 2
    }

    fn segment_va(&self, j: u64) -> u64 {
        self.va + j * MB
    }
}

impl PageFiller for BulkFiller {
    fn fill(&self, pfn: u64, out: &mut Page) {
        let i = pfn - self.pfn;
        let va = self.va + i * PAGE64;
        if i >= self.pool_pages {
            // A big allocation: data with no header.
            out.fill(0);
            for (k, q) in out[..64].chunks_exact_mut(8).enumerate() {
                q.copy_from_slice(&mix(va ^ k as u64).to_le_bytes());
            }
            return;
        }
        if self.is_seg_header(i) {
            let part = (i % 256) as usize;
            out.copy_from_slice(&*self.seg_header[part]);
            if part == 0 {
                let j = i / 256;
                let next = if j + 1 < self.segments {
                    self.segment_va(j + 1)
                } else {
                    self.ring_head
                };
                let prev = if j == 0 {
                    self.ring_prev_of_first
                } else {
                    self.segment_va(j - 1)
                };
                out[0..8].copy_from_slice(&next.to_le_bytes());
                out[8..16].copy_from_slice(&prev.to_le_bytes());
                let sig = self.context ^ self.heap_key ^ va ^ SEGMENT_SIGNATURE_KEY;
                out[self.seg_sig_off..self.seg_sig_off + 8].copy_from_slice(&sig.to_le_bytes());
            }
            return;
        }
        let p = self.pattern_of(i);
        out.copy_from_slice(&*self.patterns[p].page);
        if self.segment_heap {
            out[0..8].copy_from_slice(&va.to_le_bytes());
            out[8..16].copy_from_slice(&va.to_le_bytes());
            let enc = self.lfh_raw[p] ^ self.lfh_key ^ ((va as u32) >> 12);
            let o = self.lfh_encoded_off;
            out[o..o + 4].copy_from_slice(&enc.to_le_bytes());
        }
    }
}

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

fn header_bytes(m: &Manifest, prev: u64, units: u64, pool_type: u64, tag: u32) -> Vec<u8> {
    let mut h = StructBuf::new(m, "_POOL_HEADER");
    h.set("PreviousSize", prev)
        .set("BlockSize", units)
        .set("PoolType", pool_type)
        .set("PoolTag", tag as u64);
    h.bytes
}

/// A legacy nonpaged pool page: chained chunks, some free with stale tags
/// (never two free in a row: the allocator coalesces), the rest of the
/// page one free chunk.
fn legacy_pattern(m: &Manifest, rng: &mut fastrand::Rng, tags: &[u32], pool_type: u64) -> Pattern {
    let mut page = Box::new([0u8; PAGE]);
    let mut chunks = Vec::new();
    let mut used = 0u64;
    let mut prev = 0u64;
    let mut last_free = true;
    loop {
        let size = rng.u64(0x10..0x300);
        let units = (size + 0x10).div_ceil(16);
        if used + units * 16 > PAGE64 {
            break;
        }
        let live = last_free || rng.u8(..10) != 0;
        let tag = tags[rng.usize(..tags.len())];
        let h = header_bytes(m, prev, units, if live { pool_type } else { 0 }, tag);
        page[used as usize..used as usize + h.len()].copy_from_slice(&h);
        let body = used as usize + 0x10;
        for b in &mut page[body..body + (size as usize).min(24)] {
            *b = rng.u8(..);
        }
        chunks.push(Chunk {
            offset: used as u16,
            tag,
            block_bytes: (units * 16) as u16,
            size: size as u16,
            live,
        });
        used += units * 16;
        prev = units;
        last_free = !live;
    }
    if used < PAGE64 {
        let h = header_bytes(m, prev, (PAGE64 - used) / 16, 0, 0);
        page[used as usize..used as usize + h.len()].copy_from_slice(&h);
    }
    Pattern { page, chunks }
}

/// A one-page LFH subsegment: header, 2-bit bitmap, blocks of one size.
fn lfh_pattern(
    m: &Manifest,
    rng: &mut fastrand::Rng,
    tags: &[u32],
    pool_type: u64,
) -> (Pattern, u32) {
    let block = rng.u64(2..=0x20) * 16;
    let mut count = (PAGE64 - 0x30) / block;
    while (0x30 + (2 * count).div_ceil(8)).div_ceil(16) * 16 + count * block > PAGE64 {
        count -= 1;
    }
    let first = (0x30 + (2 * count).div_ceil(8)).div_ceil(16) * 16;
    let mut page = Box::new([0u8; PAGE]);
    let mut chunks = Vec::new();
    let mut bitmap = vec![0u8; (2 * count).div_ceil(8) as usize];
    let used = rng.u64(count / 2..=count);
    let mut live_n = 0;
    for j in 0..used {
        let live = rng.u8(..10) != 0;
        let tag = tags[rng.usize(..tags.len())];
        let off = first + j * block;
        let h = header_bytes(m, 0, block / 16, pool_type, tag);
        page[off as usize..off as usize + h.len()].copy_from_slice(&h);
        if live {
            bitmap[(2 * j / 8) as usize] |= 1 << ((2 * j) % 8);
            live_n += 1;
        }
        let size = block - 0x10 - rng.u64(0..16).min(block - 0x10 - 1);
        chunks.push(Chunk {
            offset: off as u16,
            tag,
            block_bytes: block as u16,
            size: size as u16,
            live,
        });
    }
    let mut h = StructBuf::new(m, "_HEAP_LFH_SUBSEGMENT");
    h.set("FreeCount", count - live_n).set("BlockCount", count);
    let bm = m.offset_of("_HEAP_LFH_SUBSEGMENT", "BlockBitmap") as usize;
    page[..bm].copy_from_slice(&h.bytes[..bm]);
    page[bm..bm + bitmap.len()].copy_from_slice(&bitmap);
    (Pattern { page, chunks }, (block | (first << 16)) as u32)
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
        let taken: std::collections::HashSet<u32> =
            self.ledger.order.iter().map(|(t, _)| *t).collect();
        let tags: Vec<u32> = (0..)
            .map(bulk_tag)
            .filter(|t| {
                !taken.contains(t) && !crate::tracker::HOT_TAGS.contains(&tag_string(*t).as_str())
            })
            .take(spec.tags.max(1) as usize)
            .collect();
        let mut lfh_raw = Vec::new();
        let patterns: Vec<Pattern> = (0..PATTERNS)
            .map(|_| {
                if segment_heap {
                    let (p, raw) = lfh_pattern(m, &mut rng, &tags, pool_type);
                    lfh_raw.push(raw);
                    p
                } else {
                    legacy_pattern(m, &mut rng, &tags, pool_type)
                }
            })
            .collect();
        let pool_bytes = spec.bytes.div_ceil(2 * MB) * 2 * MB;
        let pool_pages = pool_bytes / PAGE64;
        let big_pages = (spec.big_live as u64).div_ceil(512) * 512;
        let total = pool_pages + big_pages;
        let va = self.nonpaged.reserve(total * PAGE64, 2 * MB);
        let segments = if segment_heap { pool_pages / 256 } else { 0 };

        // Segment-header pages: descriptors 2..255 each a one-page LFH range.
        let mut seg_header = [Box::new([0u8; PAGE]), Box::new([0u8; PAGE])];
        let mut ring_head = 0;
        let mut ring_prev_of_first = 0;
        let mut context = 0;
        if segment_heap {
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
            context = self.heap_context_va(kind);
            let heap = self.heaps[&kind];
            ring_head = heap
                + m.offset_of("_SEGMENT_HEAP", "SegContexts")
                + m.offset_of("_HEAP_SEG_CONTEXT", "SegmentListHead");
            ring_prev_of_first = self
                .pool
                .segments
                .get(&kind)
                .and_then(|v| v.last())
                .map_or(ring_head, |s| s.va);
        }

        // Count what the pages hold.
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
        for t in &tags {
            let (live, freed, bytes) = live_per_tag.get(t).copied().unwrap_or_default();
            let history = rng.u64(0..=live * 4 + 16);
            self.ledger
                .charge(*t, false, live + freed + history, freed + history, bytes);
        }

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
        let filler = Arc::new(filler);
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
        self.bulk_segments = (0..segments).map(|j| va + j * MB).collect();

        // Big allocations: one page each, live; freed ones left only in the
        // table, at addresses now unmapped.
        let big_va = va + pool_pages * PAGE64;
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
