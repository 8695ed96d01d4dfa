//! Pool allocations as the kernel lays them out.
//!
//! * Legacy allocator (Win7 to 1809): 4 KiB pool pages carved into chunks,
//!   each with a `_POOL_HEADER` whose PreviousSize chains to its neighbour
//!   (pool.md §4.3); freed chunks keep their tag with PoolType 0;
//!   allocations above 0xFF0 bytes take whole pages and live only in the
//!   big-page table.
//! * Segment heap (19H1+, pool.md §4.4-4.5): 1 MiB page segments with
//!   range descriptors; LFH subsegments (blocks up to 0x200 bytes, each a
//!   header and data, a 2-bit-per-block bitmap); VS subsegments (an encoded
//!   `_HEAP_VS_CHUNK_HEADER` in front of each chunk, then the pool header);
//!   allocations of 0xFE1 bytes or more have no header and are tracked in
//!   the big-page table only.

use std::collections::BTreeMap;

use crate::builds::Allocator;
use crate::layout::StructBuf;
use crate::machine::Machine;
use crate::phys::{MB, PAGE64};
use crate::tag::{tag_string, tag_value};

use crate::scenario::PoolKind;
use crate::truth::{Allocation, AllocatorKind};

/// Segment-heap allocations of this many bytes or more have no header
/// (x64, pool.md §3.2).
pub const SEG_HEAP_BIG: u64 = 0xFE1;
/// Legacy allocations above this size take whole pages.
pub const LEGACY_BIG: u64 = 0xFF0;
/// Largest block the kernel pool's LFH buckets serve.
const LFH_MAX_BLOCK: u64 = 0x200;
/// Header-less allocations up to this size stay in VS subsegments; larger
/// ones get their own pages.
const VS_BIG_MAX: u64 = 0xE000;
const VS_SUBSEGMENT_PAGES: u64 = 16;
/// Chunks in a VS subsegment start after its 0x28-byte header.
const VS_FIRST_CHUNK: u64 = 0x30;
const SEGMENT_PAGES: u64 = 256;
/// The page segment's first two pages hold its header and 256 range
/// descriptors.
const SEGMENT_HEADER_PAGES: u64 = 2;
pub const SEGMENT_SIGNATURE_KEY: u64 = 0xA2E6_4EAD_A2E6_4EAD;
pub const RANGE_LFH: u64 = 0x0B;
pub const RANGE_VS: u64 = 0x0F;
/// Legacy paged pool is split over this many descriptors (PoolIndex 1..=n).
pub const PAGED_POOLS: u64 = 4;

/// One allocation request.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub key: u32,
    pub header_tag: u32,
    pub kind: PoolKind,
    pub size: u64,
    pub live: bool,
    pub cache_aligned: bool,
}

#[derive(Default)]
pub(crate) struct PoolState {
    legacy: BTreeMap<PoolKind, LegacyPage>,
    deferred_frees: BTreeMap<PoolKind, Vec<Req>>,
    pub segments: BTreeMap<PoolKind, Vec<Segment>>,
    lfh: BTreeMap<(PoolKind, u64), usize>,
    pub lfh_subs: Vec<LfhSub>,
    vs: BTreeMap<PoolKind, usize>,
    pub vs_subs: Vec<VsSub>,
    pub big: Vec<BigRec>,
    /// Segments linked into their heaps' lists (the running machine adds
    /// segments after the build wrote them).
    pub segments_linked: usize,
}

struct LegacyPage {
    va: u64,
    used: u64,
    last_units: u64,
    last_header: u64,
    last_free: bool,
    pool_index: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub va: u64,
    next_page: u64,
}

pub(crate) struct LfhSub {
    pub va: u64,
    pub block: u64,
    pub first: u64,
    pub count: u64,
    pub next: u64,
    pub allocated: Vec<bool>,
}

pub(crate) struct VsSub {
    pub va: u64,
    pub seg: u64,
    pub off: u64,
    pub prev_units: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct BigRec {
    pub va: u64,
    pub key: u32,
    pub pool_type: u32,
    pub bytes: u64,
    pub freed: bool,
}

fn round16(n: u64) -> u64 {
    n.div_ceil(16) * 16
}

impl Machine {
    /// An allocation the kernel made for itself (loader entries): live,
    /// nonpaged, charged to the tracker like any other.
    pub(crate) fn kernel_alloc(&mut self, tag: &str, size: u64) -> u64 {
        let key = tag_value(tag);
        let req = Req {
            key,
            header_tag: key,
            kind: self.nx_kind(),
            size,
            live: true,
            cache_aligned: false,
        };
        let a = self.place(req);
        a.va
    }

    /// Place every live and freed-in-memory allocation of the scenario, in
    /// a shuffled order so tags share pages as they do on a real system.
    pub(crate) fn place_scenario_allocations(&mut self) {
        let protected_ok = self.scenario.build.number() < 9200;
        let mut reqs = Vec::new();
        let tags = self.scenario.tags.clone();
        for t in &tags {
            let key = tag_value(&t.tag) & 0x7FFF_FFFF;
            let header_tag = if t.protected && protected_ok {
                key | 0x8000_0000
            } else {
                key
            };
            let kind = if t.pool == PoolKind::NonPagedNx && !self.scenario.build.has_nx_pool() {
                PoolKind::NonPaged
            } else {
                t.pool
            };
            // History: allocations made and freed long ago.
            let freed = t.freed.max(t.freed_in_memory as u64);
            self.ledger.charge(key, kind.is_paged(), freed, freed, 0);
            for i in 0..(t.live as u64 + t.freed_in_memory as u64) {
                let size = t.size.pick(&mut self.rng) as u64;
                reqs.push(Req {
                    key,
                    header_tag,
                    kind,
                    size,
                    live: i < t.live as u64,
                    cache_aligned: t.cache_aligned,
                });
            }
        }
        self.rng.shuffle(&mut reqs);
        for r in reqs {
            self.place(r);
        }
    }

    /// Place one allocation with the build's allocator; charge live ones.
    pub(crate) fn place(&mut self, r: Req) -> Allocation {
        let a = match self.scenario.build.allocator() {
            Allocator::Legacy if r.size > LEGACY_BIG => self.big_pages(&r),
            Allocator::Legacy => self.legacy_small(&r),
            Allocator::SegmentHeap if r.size >= SEG_HEAP_BIG && r.size <= VS_BIG_MAX => {
                self.vs_place(&r, false)
            }
            Allocator::SegmentHeap if r.size >= SEG_HEAP_BIG => self.big_pages(&r),
            Allocator::SegmentHeap if r.cache_aligned => self.vs_place(&r, true),
            Allocator::SegmentHeap if round16(r.size + 0x10) <= LFH_MAX_BLOCK => self.lfh_place(&r),
            Allocator::SegmentHeap => self.vs_place(&r, true),
        };
        let charged = match a.allocator {
            AllocatorKind::Big | AllocatorKind::VsBig => {
                if self.scenario.build.allocator() == Allocator::Legacy {
                    a.size.div_ceil(PAGE64) * PAGE64
                } else {
                    a.size
                }
            }
            _ => a.block_bytes,
        };
        if r.live {
            self.ledger.charge(r.key, r.kind.is_paged(), 1, 0, charged);
            self.note_body(&a);
        }
        self.truth.allocations.push(a.clone());
        a
    }

    fn note_body(&mut self, a: &Allocation) {
        if a.size >= 0x40 {
            self.body_spots.push((a.va, a.size));
        }
    }

    /// The header's PoolType byte: `(POOL_TYPE & 0x6D) | 2` (pool.md §4.2).
    fn header_pool_type(kind: PoolKind, cache_aligned: bool) -> u64 {
        let t = kind.pool_type() | if cache_aligned { 4 } else { 0 };
        ((t & 0x6D) | 2) as u64
    }

    fn pool_header(&self, prev: u64, index: u64, units: u64, pool_type: u64, tag: u32) -> Vec<u8> {
        let mut h = StructBuf::new(self.m, "_POOL_HEADER");
        h.set("PreviousSize", prev)
            .set("PoolIndex", index)
            .set("BlockSize", units)
            .set("PoolType", pool_type)
            .set("PoolTag", tag as u64);
        h.bytes
    }

    /// Fill the start of an allocation body with data, as a live object
    /// would have.
    fn fill_body(&mut self, va: u64, size: u64) {
        let n = size.min(48) as usize;
        let mut b = vec![0u8; n];
        self.rng.fill(&mut b);
        self.write_va(va, &b);
    }

    fn alloc_record(
        &self,
        r: &Req,
        va: u64,
        header: Option<u64>,
        block: u64,
        kind: AllocatorKind,
    ) -> Allocation {
        let first = header.unwrap_or(va);
        Allocation {
            va,
            header_va: header,
            extra_header_va: None,
            tag: tag_string(r.key),
            tag_value: r.key,
            pool: r.kind,
            size: r.size,
            block_bytes: block,
            live: r.live,
            stale_header: !r.live && header.is_some(),
            allocator: kind,
            pa: self.asp.translate(&self.mem, first),
            in_dump: true,
            protected: r.header_tag & 0x8000_0000 != 0,
        }
    }

    // ----- legacy -------------------------------------------------------

    fn legacy_small(&mut self, r: &Req) -> Allocation {
        let units = round16(r.size + 0x10) / 16;
        if !r.live && !self.legacy_free_fits(r.kind, units) {
            // A free chunk next to another free chunk would have coalesced,
            // and one that starts a page would have released it: keep it
            // for after the next live chunk so its stale header survives.
            self.pool
                .deferred_frees
                .entry(r.kind)
                .or_default()
                .push(r.clone());
            return self.legacy_deferred_placeholder(r);
        }
        let a = self.legacy_chunk(r, units);
        if r.live {
            let next = self
                .pool
                .deferred_frees
                .get(&r.kind)
                .and_then(|v| v.last())
                .cloned();
            if let Some(next) = next {
                let u = round16(next.size + 0x10) / 16;
                if self.legacy_free_fits(r.kind, u) {
                    self.pool.deferred_frees.get_mut(&r.kind).map(|v| v.pop());
                    let b = self.legacy_chunk(&next, u);
                    self.truth.allocations.push(b);
                }
            }
        }
        a
    }

    /// Can a free chunk of `units` go next on the open page: after a live
    /// chunk, and without opening a new page?
    fn legacy_free_fits(&self, kind: PoolKind, units: u64) -> bool {
        self.pool
            .legacy
            .get(&kind)
            .is_some_and(|p| p.used > 0 && !p.last_free && p.used + units * 16 <= PAGE64)
    }

    /// Deferred frees are placed later; the placeholder is dropped by
    /// `place` callers through `finish_pool_pages`.
    fn legacy_deferred_placeholder(&mut self, r: &Req) -> Allocation {
        Allocation {
            va: 0,
            header_va: None,
            extra_header_va: None,
            tag: tag_string(r.key),
            tag_value: r.key,
            pool: r.kind,
            size: r.size,
            block_bytes: 0,
            live: false,
            stale_header: false,
            allocator: AllocatorKind::LegacyPage,
            pa: None,
            in_dump: false,
            protected: false,
        }
    }

    fn legacy_chunk(&mut self, r: &Req, units: u64) -> Allocation {
        let need_new = match self.pool.legacy.get(&r.kind) {
            None => true,
            Some(p) => p.used + units * 16 > PAGE64,
        };
        if need_new {
            self.close_legacy_page(r.kind);
            let va = self.pool_pages(r.kind, 1, 1);
            let pool_index = if r.kind.is_paged() {
                self.rng.u64(1..=PAGED_POOLS)
            } else {
                0
            };
            self.pool.legacy.insert(
                r.kind,
                LegacyPage {
                    va,
                    used: 0,
                    last_units: 0,
                    last_header: 0,
                    last_free: false,
                    pool_index,
                },
            );
        }
        let (h, prev, index) = {
            let p = &self.pool.legacy[&r.kind];
            (
                p.va + p.used,
                if p.used == 0 { 0 } else { p.last_units },
                p.pool_index,
            )
        };
        let ptype = if r.live {
            Self::header_pool_type(r.kind, false)
        } else {
            0
        };
        let hdr = self.pool_header(prev, index, units, ptype, r.header_tag);
        self.write_va(h, &hdr);
        if r.live {
            self.fill_body(h + 0x10, r.size);
        } else {
            // A free chunk's body starts with its free-list links.
            let link = self.nonpaged.base + self.rng.u64(0..0x100_0000) * 16;
            self.write_u64(h + 0x10, link);
            self.write_u64(h + 0x18, link + 0x20);
        }
        let p = self.pool.legacy.get_mut(&r.kind).expect("page exists");
        p.used += units * 16;
        p.last_units = units;
        p.last_header = h;
        p.last_free = !r.live;
        self.alloc_record(r, h + 0x10, Some(h), units * 16, AllocatorKind::LegacyPage)
    }

    /// The rest of a page becomes one free chunk (merged into a free
    /// predecessor, as the allocator coalesces).
    fn close_legacy_page(&mut self, kind: PoolKind) {
        let Some(p) = self.pool.legacy.remove(&kind) else {
            return;
        };
        let rest = PAGE64 - p.used;
        if rest == 0 {
            return;
        }
        if p.last_free {
            // Free chunks only follow live ones, so the merged chunk never
            // spans the whole page (BlockSize fits its 8 bits).
            let units = p.last_units + rest / 16;
            debug_assert!(units < 256);
            if let Some(a) = self
                .truth
                .allocations
                .iter_mut()
                .rev()
                .find(|a| a.header_va == Some(p.last_header))
            {
                a.block_bytes = units * 16;
            }
            let hdr = self.read_header_bytes(p.last_header);
            let mut h = StructBuf::new(self.m, "_POOL_HEADER");
            h.bytes.copy_from_slice(&hdr);
            h.set("BlockSize", units);
            let b = h.bytes;
            self.write_va(p.last_header, &b);
        } else {
            let hdr = self.pool_header(p.last_units, p.pool_index, rest / 16, 0, 0);
            self.write_va(p.va + p.used, &hdr);
        }
    }

    fn read_header_bytes(&self, va: u64) -> Vec<u8> {
        let mut b = vec![0u8; self.m.ty("_POOL_HEADER").size as usize];
        self.asp.read(&self.mem, va, &mut b);
        b
    }

    /// Whole pages with no header, recorded for the big-page table. Freed
    /// big allocations leave only their stale table entry: the pages are
    /// released.
    fn big_pages(&mut self, r: &Req) -> Allocation {
        let pages = r.size.div_ceil(PAGE64);
        let va = if r.live {
            let va = self.pool_pages(r.kind, pages, 1);
            self.fill_body(va, r.size);
            va
        } else {
            let region = if r.kind.is_paged() {
                &mut self.paged
            } else {
                &mut self.nonpaged
            };
            region.reserve(pages * PAGE64, PAGE64)
        };
        let legacy = self.scenario.build.allocator() == Allocator::Legacy;
        let bytes = if legacy { pages * PAGE64 } else { r.size };
        self.pool.big.push(BigRec {
            va,
            key: r.key,
            pool_type: r.kind.pool_type(),
            bytes,
            freed: !r.live,
        });
        let mut a = self.alloc_record(r, va, None, pages * PAGE64, AllocatorKind::Big);
        a.stale_header = false;
        if !r.live {
            a.pa = None;
            a.in_dump = false;
        }
        a
    }

    // ----- segment heap -------------------------------------------------

    /// `n` pages of a page segment of `kind`'s heap, with their range
    /// descriptor written.
    fn segment_pages(&mut self, kind: PoolKind, n: u64, range_flags: u64) -> u64 {
        let need_new = match self.pool.segments.get(&kind).and_then(|v| v.last()) {
            None => true,
            Some(s) => s.next_page + n > SEGMENT_PAGES,
        };
        if need_new {
            let va = self.new_segment(kind);
            self.pool.segments.entry(kind).or_default().push(Segment {
                va,
                next_page: SEGMENT_HEADER_PAGES,
            });
        }
        let seg = self
            .pool
            .segments
            .get_mut(&kind)
            .and_then(|v| v.last_mut())
            .expect("segment");
        let first = seg.next_page;
        seg.next_page += n;
        let seg_va = seg.va;
        let va = seg_va + first * PAGE64;
        let prot = self.prot_for(kind);
        self.commit(va, n, prot);
        if kind.is_paged() {
            self.paged_pages.extend((0..n).map(|i| va + i * PAGE64));
        }
        let desc_size = self.m.ty("_HEAP_PAGE_RANGE_DESCRIPTOR").size;
        for i in 0..n {
            let mut d = StructBuf::new(self.m, "_HEAP_PAGE_RANGE_DESCRIPTOR");
            if i == 0 {
                d.set("RangeFlags", range_flags)
                    .set("UnitSize", n)
                    .set("CommittedPageCount", n);
            } else {
                d.set("UnitOffset", i);
            }
            let b = d.bytes;
            self.write_va(seg_va + (first + i) * desc_size, &b);
        }
        va
    }

    /// A 1 MiB page segment: header and descriptors in its first pages.
    fn new_segment(&mut self, kind: PoolKind) -> u64 {
        let large_kind = self.nx_kind();
        let mut va = None;
        if kind == large_kind
            && let Some((lo, hi)) = self.large_page
        {
            let v = lo.div_ceil(MB) * MB;
            if v + MB <= hi {
                self.large_page = Some((v + MB, hi));
                va = Some(v);
            }
        }
        let va = va.unwrap_or_else(|| {
            let region = if kind.is_paged() {
                &mut self.paged
            } else {
                &mut self.nonpaged
            };
            region.reserve(MB, MB)
        });
        let prot = self.prot_for(kind);
        self.commit(va, SEGMENT_HEADER_PAGES, prot);
        if kind.is_paged() {
            self.paged_pages
                .extend((0..SEGMENT_HEADER_PAGES).map(|i| va + i * PAGE64));
        }
        va
    }

    fn lfh_place(&mut self, r: &Req) -> Allocation {
        let block = round16(r.size + 0x10);
        let key = (r.kind, block);
        let idx = match self.pool.lfh.get(&key) {
            Some(&i) if self.pool.lfh_subs[i].next < self.pool.lfh_subs[i].count => i,
            _ => {
                let va = self.segment_pages(r.kind, 1, RANGE_LFH);
                // The header and its 2-bit-per-block bitmap come first;
                // blocks fill the rest of the page.
                let mut count = (PAGE64 - 0x30) / block;
                while round16(0x30 + (2 * count).div_ceil(8)) + count * block > PAGE64 {
                    count -= 1;
                }
                let first = round16(0x30 + (2 * count).div_ceil(8));
                self.pool.lfh_subs.push(LfhSub {
                    va,
                    block,
                    first,
                    count,
                    next: 0,
                    allocated: vec![false; count as usize],
                });
                let i = self.pool.lfh_subs.len() - 1;
                self.pool.lfh.insert(key, i);
                i
            }
        };
        let sub = &mut self.pool.lfh_subs[idx];
        let slot = sub.next;
        sub.next += 1;
        sub.allocated[slot as usize] = r.live;
        let h = sub.va + sub.first + slot * block;
        let hdr = self.pool_header(
            0,
            0,
            block / 16,
            Self::header_pool_type(r.kind, false),
            r.header_tag,
        );
        self.write_va(h, &hdr);
        if r.live {
            self.fill_body(h + 0x10, r.size);
        }
        self.alloc_record(r, h + 0x10, Some(h), block, AllocatorKind::Lfh)
    }

    fn new_vs_sub(&mut self, kind: PoolKind) -> usize {
        let va = self.segment_pages(kind, VS_SUBSEGMENT_PAGES, RANGE_VS);
        let seg = va & !(MB - 1);
        self.pool.vs_subs.push(VsSub {
            va,
            seg,
            off: VS_FIRST_CHUNK,
            prev_units: 0,
        });
        let i = self.pool.vs_subs.len() - 1;
        self.pool.vs.insert(kind, i);
        i
    }

    /// Write a VS chunk header, encoded with the chunk's address and the
    /// heap key (pool.md §4.5).
    pub(crate) fn vs_chunk_header(
        &mut self,
        c: u64,
        seg: u64,
        units: u64,
        prev_units: u64,
        allocated: bool,
    ) {
        let mut s = StructBuf::new(self.m, "_HEAP_VS_CHUNK_HEADER_SIZE");
        s.set("UnsafeSize", units)
            .set("UnsafePrevSize", prev_units)
            .set("Allocated", allocated as u64);
        let decoded = u64::from_le_bytes(s.bytes[..8].try_into().expect("8 bytes"));
        let encoded = decoded ^ c ^ self.heap_key;
        self.write_u64(c, encoded);
        // Page offset of the chunk in its segment, obfuscated with the
        // chunk address and heap key (the exact obfuscation is not
        // documented; analysis must not depend on it).
        let page = (c - seg) >> 12;
        let enc_off = (page ^ c ^ self.heap_key) & 0xFF;
        self.write_va(c + 8, &(enc_off as u32).to_le_bytes());
    }

    /// A free chunk: its header says not allocated and a free-tree node
    /// overwrites the 0x18 bytes after the first header qword, where a
    /// stale pool header would sit.
    fn vs_free_chunk(&mut self, c: u64, seg: u64, units: u64, prev_units: u64) {
        self.vs_chunk_header(c, seg, units, prev_units, false);
        if units >= 2 {
            let parent = c.wrapping_add(self.rng.u64(1..64) * 0x1000) & !0xF;
            self.write_u64(c + 8, 0);
            self.write_u64(c + 0x10, 0);
            self.write_u64(c + 0x18, parent);
        }
    }

    /// Place a chunk in a VS subsegment. With a header, the pool header
    /// and data never straddle a page: the chunk moves so the header starts
    /// the next page and the gap becomes a free chunk.
    fn vs_place(&mut self, r: &Req, with_header: bool) -> Allocation {
        let size16 = round16(r.size);
        let ca = r.cache_aligned && with_header;
        loop {
            let i = match self.pool.vs.get(&r.kind) {
                Some(&i) => i,
                None => self.new_vs_sub(r.kind),
            };
            let (va, seg, off, prev) = {
                let s = &self.pool.vs_subs[i];
                (s.va, s.seg, s.off, s.prev_units)
            };
            let mut c = va + off;
            let layout = |c: u64| -> (u64, u64) {
                // (body bytes after the chunk header, data address)
                let h1 = c + 0x10;
                if ca {
                    let data = (h1 + 0x20 + 0x10).div_ceil(0x40) * 0x40;
                    (data + size16 - h1, data)
                } else if with_header {
                    (0x10 + size16, h1 + 0x10)
                } else {
                    (size16, c + 0x10)
                }
            };
            let (mut body, mut data) = layout(c);
            let mut gap_prev = prev;
            if with_header && body <= PAGE64 && (c + 0x10) % PAGE64 + body > PAGE64 {
                let newc = ((c + 0x10) / PAGE64 + 1) * PAGE64 - 0x10;
                let gap_units = (newc - c) / 16;
                if newc + 0x10 + body <= va + VS_SUBSEGMENT_PAGES * PAGE64 {
                    self.vs_free_chunk(c, seg, gap_units, prev);
                    gap_prev = gap_units;
                    c = newc;
                    (body, data) = layout(c);
                }
            }
            let units = (0x10 + body) / 16;
            if c + units * 16 > va + VS_SUBSEGMENT_PAGES * PAGE64 {
                self.close_vs_sub(r.kind);
                continue;
            }
            self.vs_chunk_header(c, seg, units, gap_prev, r.live);
            let pool_type = Self::header_pool_type(r.kind, false);
            let mut a;
            if with_header {
                let h1 = c + 0x10;
                if ca {
                    // Two headers: the chunk's, without CacheAligned, then
                    // one just below the aligned data, with it, whose
                    // PreviousSize is the distance back to the first
                    // (pool.md §4.4). A pointer to the second, XORed with
                    // the quota cookie, follows the first.
                    let h2 = data - 0x10;
                    let first = self.pool_header(0, 0, (h2 - h1) / 16, pool_type, r.header_tag);
                    self.write_va(h1, &first);
                    self.write_u64(h1 + 0x10, h2 ^ self.quota_cookie);
                    let blocks = (c + units * 16 - h2) / 16;
                    let ptype2 = Self::header_pool_type(r.kind, true);
                    let second = self.pool_header((h2 - h1) / 16, 0, blocks, ptype2, r.header_tag);
                    self.write_va(h2, &second);
                    a = self.alloc_record(r, data, Some(h2), blocks * 16, AllocatorKind::Vs);
                    a.extra_header_va = Some(h1);
                } else {
                    let hdr = self.pool_header(0, 0, body / 16, pool_type, r.header_tag);
                    self.write_va(h1, &hdr);
                    a = self.alloc_record(r, data, Some(h1), body, AllocatorKind::Vs);
                }
            } else {
                a = self.alloc_record(r, data, None, units * 16, AllocatorKind::VsBig);
                self.pool.big.push(BigRec {
                    va: data,
                    key: r.key,
                    pool_type: r.kind.pool_type(),
                    bytes: r.size,
                    freed: !r.live,
                });
            }
            if r.live {
                self.fill_body(data, r.size);
            } else {
                // The chunk is free: the free-tree node overwrites what
                // followed the header, stale pool header included.
                self.vs_free_chunk(c, seg, units, gap_prev);
                a.stale_header = false;
            }
            let s = &mut self.pool.vs_subs[i];
            s.off = c + units * 16 - va;
            s.prev_units = units;
            return a;
        }
    }

    /// The rest of a VS subsegment is one free chunk.
    fn close_vs_sub(&mut self, kind: PoolKind) {
        let Some(i) = self.pool.vs.remove(&kind) else {
            return;
        };
        let (va, seg, off, prev) = {
            let s = &self.pool.vs_subs[i];
            (s.va, s.seg, s.off, s.prev_units)
        };
        let end = va + VS_SUBSEGMENT_PAGES * PAGE64;
        if va + off < end {
            self.vs_free_chunk(va + off, seg, (end - va - off) / 16, prev);
        }
    }

    /// Close open pages and write the subsegment headers now that their
    /// contents are known.
    pub(crate) fn finish_pool_pages(&mut self) {
        // Frees still waiting for a live neighbour stay history only (the
        // allocator would have coalesced or released them).
        let kinds: Vec<PoolKind> = self.pool.deferred_frees.keys().copied().collect();
        for k in kinds {
            let waiting = self.pool.deferred_frees.remove(&k).unwrap_or_default();
            for r in waiting {
                let u = round16(r.size + 0x10) / 16;
                if self.legacy_free_fits(k, u) {
                    let b = self.legacy_chunk(&r, u);
                    self.truth.allocations.push(b);
                }
            }
        }
        self.truth.allocations.retain(|a| a.va != 0);
        for k in [PoolKind::NonPaged, PoolKind::NonPagedNx, PoolKind::Paged] {
            self.close_legacy_page(k);
            self.close_vs_sub(k);
        }
        for i in 0..self.pool.lfh_subs.len() {
            self.write_lfh_header(i);
        }
        for i in 0..self.pool.vs_subs.len() {
            let s = &self.pool.vs_subs[i];
            let (va, units) = (s.va, VS_SUBSEGMENT_PAGES * PAGE64 / 16);
            let mut h = StructBuf::new(self.m, "_HEAP_VS_SUBSEGMENT");
            h.set("ListEntry.Flink", va)
                .set("ListEntry.Blink", va)
                .set("CommitBitmap", (1 << VS_SUBSEGMENT_PAGES) - 1)
                .set("Size", units)
                .set("Signature", units ^ 0x2BED)
                .set("FullCommit", 1);
            let b = h.bytes;
            self.write_va(va, &b);
        }
        self.write_segment_headers();
    }

    pub(crate) fn write_lfh_header(&mut self, i: usize) {
        let (va, block, first, count, bitmap, free) = {
            let s = &self.pool.lfh_subs[i];
            let mut bm = vec![0u8; (2 * s.count).div_ceil(8) as usize];
            for (j, &a) in s.allocated.iter().enumerate() {
                if a {
                    bm[(2 * j) / 8] |= 1 << ((2 * j) % 8);
                }
            }
            let live = s.allocated.iter().filter(|a| **a).count() as u64;
            (s.va, s.block, s.first, s.count, bm, s.count - live)
        };
        let mut h = StructBuf::new(self.m, "_HEAP_LFH_SUBSEGMENT");
        let encoded = (block | (first << 16)) as u32 ^ self.lfh_key as u32 ^ ((va as u32) >> 12);
        h.set("ListEntry.Flink", va)
            .set("ListEntry.Blink", va)
            .set("FreeCount", free)
            .set("BlockCount", count)
            .set("BlockOffsets.EncodedData", encoded as u64);
        let mut b = h.bytes;
        let bm_off = self.m.offset_of("_HEAP_LFH_SUBSEGMENT", "BlockBitmap") as usize;
        b.truncate(bm_off);
        b.extend_from_slice(&bitmap);
        self.write_va(va, &b);
    }

    /// Page-segment headers: the signature that ties each segment to its
    /// heap's segment context (pool.md §4.5).
    fn write_segment_headers(&mut self) {
        let segs: Vec<(PoolKind, Vec<Segment>)> = self
            .pool
            .segments
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (kind, list) in segs {
            let ctx = self.heap_context_va(kind);
            for s in list {
                let sig = ctx ^ self.heap_key ^ s.va ^ SEGMENT_SIGNATURE_KEY;
                self.write_u64(
                    s.va + self.m.offset_of("_HEAP_PAGE_SEGMENT", "Signature"),
                    sig,
                );
            }
        }
    }

    /// Address of the segment context of `kind`'s heap (allocated on first
    /// use, filled in by the kernel-globals pass).
    pub(crate) fn heap_context_va(&mut self, kind: PoolKind) -> u64 {
        if let Some(&va) = self.heaps.get(&kind) {
            return va + self.m.offset_of("_SEGMENT_HEAP", "SegContexts");
        }
        let size = self.m.ty("_SEGMENT_HEAP").size;
        let pages = size.div_ceil(PAGE64);
        let nx = self.nx_kind();
        let va = self.pool_pages(nx, pages, 1);
        self.heaps.insert(kind, va);
        va + self.m.offset_of("_SEGMENT_HEAP", "SegContexts")
    }

    /// Write each `_SEGMENT_HEAP` and ExPoolState's pool node pointing at
    /// them (segment-heap builds).
    pub(crate) fn write_heaps(&mut self) {
        if self.scenario.build.allocator() != Allocator::SegmentHeap {
            return;
        }
        let kinds = [PoolKind::NonPaged, PoolKind::NonPagedNx, PoolKind::Paged];
        for k in kinds {
            self.heap_context_va(k);
        }
        let ctx_stride = {
            let (_, f) = self.m.field_path("_SEGMENT_HEAP", "SegContexts");
            f.element_size.unwrap_or(0xC0)
        };
        for k in kinds {
            let heap = self.heaps[&k];
            let ctx0 = heap + self.m.offset_of("_SEGMENT_HEAP", "SegContexts");
            let mut segs: Vec<u64> = self
                .pool
                .segments
                .get(&k)
                .map(|v| v.iter().map(|s| s.va).collect())
                .unwrap_or_default();
            let explicit = segs.len();
            if k == self.nx_kind() {
                // Bulk segments follow; their links are generated with
                // their pages.
                segs.extend(self.bulk_segments.iter().copied());
            }
            let mut h = StructBuf::new(self.m, "_SEGMENT_HEAP");
            h.set("Signature", 0xDDEE_DDEE);
            let mut hb = h.bytes;
            let ctx_off = self.m.offset_of("_SEGMENT_HEAP", "SegContexts") as usize;
            for c in 0..2u64 {
                let ctx = ctx0 + c * ctx_stride;
                let head = ctx + self.m.offset_of("_HEAP_SEG_CONTEXT", "SegmentListHead");
                let list: &[u64] = if c == 0 { &segs } else { &[] };
                let mut sc = StructBuf::new(self.m, "_HEAP_SEG_CONTEXT");
                // Context 0 serves 4 KiB units in 1 MiB segments; context 1
                // the large-unit segments (unused here).
                sc.set(
                    "SegmentMask",
                    if c == 0 { !(MB - 1) } else { !((16 * MB) - 1) },
                )
                .set("UnitShift", if c == 0 { 12 } else { 16 })
                .set("FirstDescriptorIndex", SEGMENT_HEADER_PAGES)
                .set("SegmentCount", list.len() as u64)
                .set("Heap", heap);
                // SegmentListHead and each segment's ListEntry form a ring.
                let ring: Vec<u64> = std::iter::once(head).chain(list.iter().copied()).collect();
                let flink = ring[1 % ring.len()];
                let blink = ring[ring.len() - 1];
                sc.set("SegmentListHead.Flink", flink)
                    .set("SegmentListHead.Blink", blink);
                let o = ctx_off + (c * ctx_stride) as usize;
                hb[o..o + sc.bytes.len()].copy_from_slice(&sc.bytes);
                for (j, s) in list
                    .iter()
                    .enumerate()
                    .take(if c == 0 { explicit } else { 0 })
                {
                    let n = ring[(j + 2) % ring.len()];
                    let p = ring[j];
                    self.write_u64(*s, n);
                    self.write_u64(*s + 8, p);
                }
            }
            self.write_va(heap, &hb);
        }
        // ExPoolState.HeapManager.Globals -> RtlpHpHeapGlobals {HeapKey,
        // LfhKey}; one pool node with the heaps by index (0 NonPaged,
        // 1 NonPagedNx, 2 Paged).
        let Some(state) = self.sym_va("ExPoolState") else {
            return;
        };
        if let Some(g) = self.sym_va("RtlpHpHeapGlobals") {
            self.write_u64(state, g);
            let (hk, lk) = (self.heap_key, self.lfh_key);
            self.write_u64(g, hk);
            self.write_u64(g + 8, lk);
        }
        let pools_off = self
            .m
            .offset_of("_EX_POOL_HEAP_MANAGER_STATE", "NumberOfPools");
        self.write_va(state + pools_off, &1u32.to_le_bytes());
        let node = state + self.m.offset_of("_EX_POOL_HEAP_MANAGER_STATE", "PoolNode");
        for (i, k) in kinds.iter().enumerate() {
            let h = self.heaps[k];
            self.write_u64(node + 8 * i as u64, h);
        }
    }

    // ----- the running machine (crates/kit/src/run) -----------------------

    /// End the open legacy page of `kind` with a free chunk, as the
    /// allocator leaves it between calls (the page stays open).
    pub(crate) fn seal_legacy_page(&mut self, kind: PoolKind) {
        let Some(p) = self.pool.legacy.get(&kind) else {
            return;
        };
        let rest = PAGE64 - p.used;
        if rest == 0 || p.last_free {
            return;
        }
        let (at, prev, index) = (p.va + p.used, p.last_units, p.pool_index);
        let hdr = self.pool_header(prev, index, rest / 16, 0, 0);
        self.write_va(at, &hdr);
    }

    /// Free a legacy chunk: PoolType 0, the tag and sizes kept.
    pub(crate) fn legacy_release(&mut self, header: u64) {
        let raw = self.read_header_bytes(header);
        let mut h = StructBuf::new(self.m, "_POOL_HEADER");
        h.bytes.copy_from_slice(&raw);
        h.set("PoolType", 0);
        let b = h.bytes;
        self.write_va(header, &b);
    }

    /// Free an LFH block: its bitmap bits and the free count.
    pub(crate) fn lfh_release(&mut self, header: u64) {
        let Some(i) = self
            .pool
            .lfh_subs
            .iter()
            .position(|s| s.va <= header && header < s.va + PAGE64)
        else {
            return;
        };
        let s = &mut self.pool.lfh_subs[i];
        let slot = ((header - s.va - s.first) / s.block) as usize;
        if let Some(a) = s.allocated.get_mut(slot) {
            *a = false;
        }
        self.write_lfh_header(i);
    }

    /// Free a VS chunk (`chunk` is its chunk header).
    pub(crate) fn vs_release(&mut self, chunk: u64) {
        let size = self.m.ty("_HEAP_VS_CHUNK_HEADER_SIZE").size as usize;
        let encoded = self.asp.read_u64(&self.mem, chunk);
        let decoded = encoded ^ chunk ^ self.heap_key;
        let mut s = StructBuf::new(self.m, "_HEAP_VS_CHUNK_HEADER_SIZE");
        s.bytes[..8.min(size)].copy_from_slice(&decoded.to_le_bytes()[..8.min(size)]);
        let field = |name: &str| -> u64 {
            let (off, f) = self.m.field_path("_HEAP_VS_CHUNK_HEADER_SIZE", name);
            let mut w = [0u8; 8];
            let unit = f.size as usize;
            w[..unit].copy_from_slice(&s.bytes[off as usize..off as usize + unit]);
            let v = u64::from_le_bytes(w);
            match (f.bit_position, f.bit_length) {
                (Some(p), Some(l)) => (v >> p) & ((1u64 << l) - 1),
                _ => v,
            }
        };
        let (units, prev) = (field("UnsafeSize"), field("UnsafePrevSize"));
        let seg = chunk & !(MB - 1);
        self.vs_free_chunk(chunk, seg, units, prev);
    }

    /// End the open VS subsegment of `kind` with a free chunk and keep its
    /// subsegment header current (the subsegment stays open).
    pub(crate) fn seal_vs_sub(&mut self, kind: PoolKind) {
        let Some(&i) = self.pool.vs.get(&kind) else {
            return;
        };
        let (va, seg, off, prev) = {
            let s = &self.pool.vs_subs[i];
            (s.va, s.seg, s.off, s.prev_units)
        };
        let end = va + VS_SUBSEGMENT_PAGES * PAGE64;
        if va + off < end {
            self.vs_free_chunk(va + off, seg, (end - va - off) / 16, prev);
        }
        self.write_vs_sub_header(i);
    }

    fn write_vs_sub_header(&mut self, i: usize) {
        let va = self.pool.vs_subs[i].va;
        let units = VS_SUBSEGMENT_PAGES * PAGE64 / 16;
        let mut h = StructBuf::new(self.m, "_HEAP_VS_SUBSEGMENT");
        h.set("ListEntry.Flink", va)
            .set("ListEntry.Blink", va)
            .set("CommitBitmap", (1 << VS_SUBSEGMENT_PAGES) - 1)
            .set("Size", units)
            .set("Signature", units ^ 0x2BED)
            .set("FullCommit", 1);
        let b = h.bytes;
        self.write_va(va, &b);
    }

    /// Segment signatures, and the heaps' segment lists when a segment was
    /// added since they were last written.
    pub(crate) fn seal_segments(&mut self) {
        let n: usize = self.pool.segments.values().map(|v| v.len()).sum();
        if n != self.pool.segments_linked {
            self.write_segment_headers();
            self.write_heaps();
            self.pool.segments_linked = n;
        }
    }
}
