//! Pool allocations as the kernel lays them out.
//!
//! * Legacy allocator (Win7 to 1809): 4 KiB pool pages carved into chunks,
//!   each with a `_POOL_HEADER` whose PreviousSize chains to its neighbour
//!   (docs/pool-structures.md §4); freed chunks keep their tag with PoolType 0;
//!   allocations above 0xFE0 bytes take whole pages and live only in the
//!   big-page table.
//! * Segment heap (19H1+, docs/pool-structures.md §5): 1 MiB page segments with
//!   range descriptors; LFH subsegments (blocks up to 0x200 bytes, each a
//!   header and data, a 2-bit-per-block bitmap); VS subsegments (an encoded
//!   `_HEAP_VS_CHUNK_HEADER` in front of each chunk, then the pool header);
//!   allocations of 0xFE1 bytes or more have no header and are tracked in
//!   the big-page table only.
//!
//! This file places one allocation with the build's allocator and holds
//! what every allocator shares (pool headers, big pages, the allocation
//! record); `legacy.rs`, `segment_heap.rs`, `lfh.rs` and `vs.rs` each add
//! one allocator's methods to [`Machine`]; `state.rs` is what placement
//! remembers between calls (the machine holds it), and `format.rs` the
//! constants of the formats.

mod legacy;
mod lfh;
mod segment_heap;
mod vs;

pub(crate) mod format;
pub(crate) mod state;

use crate::builds::Allocator;
use crate::layout::StructBuf;
use crate::machine::Machine;
use crate::phys::PAGE64;
use crate::tag::{tag_string, tag_value};

use crate::scenario::PoolKind;
use crate::truth::{Allocation, AllocatorKind};

use format::round16;
pub use format::{LEGACY_BIG, PAGED_POOLS, SEG_HEAP_BIG};
use state::BigRec;
pub(crate) use state::Req;

/// Largest block the kernel pool's LFH buckets serve.
const LFH_MAX_BLOCK: u64 = 0x200;
/// Header-less allocations up to this size stay in VS subsegments; larger
/// ones get their own pages.
const VS_BIG_MAX: u64 = 0xE000;

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
        let a = self.place_block(&r);
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

    /// Lay out one allocation with the build's allocator, in the pool
    /// [`Machine::pool`] places into; nothing is charged or recorded.
    pub(crate) fn place_block(&mut self, r: &Req) -> Allocation {
        match self.scenario.build.allocator() {
            Allocator::Legacy if r.size > LEGACY_BIG => self.big_pages(r),
            Allocator::Legacy => self.legacy_small(r),
            Allocator::SegmentHeap if r.size >= SEG_HEAP_BIG && r.size <= VS_BIG_MAX => {
                self.vs_place(r, false)
            }
            Allocator::SegmentHeap if r.size >= SEG_HEAP_BIG => self.big_pages(r),
            Allocator::SegmentHeap if r.cache_aligned => self.vs_place(r, true),
            Allocator::SegmentHeap if round16(r.size + 0x10) <= LFH_MAX_BLOCK => self.lfh_place(r),
            Allocator::SegmentHeap => self.vs_place(r, true),
        }
    }

    fn note_body(&mut self, a: &Allocation) {
        if a.size >= 0x40 {
            self.body_spots.push((a.va, a.size));
        }
    }

    /// The header's PoolType byte: `(POOL_TYPE & 0x6D) | 2`
    /// (docs/pool-structures.md §4); a session's heap adds the session
    /// bit (PagedPoolSession is 0x21).
    fn header_pool_type(&self, kind: PoolKind, cache_aligned: bool) -> u64 {
        let session = if self.pool.session { 0x20 } else { 0 };
        let t = u64::from(kind.pool_type()) | if cache_aligned { 4 } else { 0 } | session;
        Self::in_use_pool_type(t)
    }

    /// The POOL_TYPE a big-page entry stores: a session's heap adds the
    /// session bit (PagedPoolSession is 0x21).
    pub(crate) fn big_pool_type(&self, kind: PoolKind) -> u32 {
        kind.pool_type() | if self.pool.session { 0x20 } else { 0 }
    }

    /// An allocated header's PoolType byte for the POOL_TYPE `t`.
    pub(crate) fn in_use_pool_type(t: u64) -> u64 {
        (t & 0x6D) | 2
    }

    pub(crate) fn pool_header(
        &self,
        prev: u64,
        index: u64,
        units: u64,
        pool_type: u64,
        tag: u32,
    ) -> Vec<u8> {
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
            pool_type: self.big_pool_type(r.kind),
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
        self.write_subsegment_headers();
    }

    /// Every LFH and VS subsegment's header and every page segment's
    /// signature, now that their contents are known.
    pub(super) fn write_subsegment_headers(&mut self) {
        for i in 0..self.pool.lfh_subs.len() {
            self.write_lfh_header(i);
        }
        for i in 0..self.pool.vs_subs.len() {
            self.write_vs_sub_header(i);
        }
        self.write_segment_headers();
    }
}
