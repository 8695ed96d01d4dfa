//! Session paged pool: the pages of one session's pool, mapped only in
//! that session's address space, and the allocations in them.
//!
//! On the legacy allocator (Win7 to 1809) a session's paged pool is carved
//! as the kernel's own paged pool is: 4 KiB pages of chunks whose
//! `_POOL_HEADER`s chain through PreviousSize, the rest of each page one
//! free chunk (docs/pool-structures.md §4). What differs is where the pages
//! are (between `_MM_SESSION_SPACE.PagedPoolStart` and `PagedPoolEnd`,
//! the same addresses in every session and other frames in each) and the
//! header's PoolType: PagedPoolSession (0x21) as `(POOL_TYPE & 0x6D) | 2`,
//! so 0x23.
//!
//! From 19H1 on a session's paged pool is a segment heap of its own: a
//! `_SEGMENT_HEAP` in session space whose 1 MiB page segments lie in the
//! session's pool range, signed for that heap's segment context like the
//! kernel's own (docs/pool-structures.md §5). The kit lays it out with the
//! kernel pool's own writers, swapped onto the session's address space and
//! pool state, and last of all, so that the frames the rest of the machine
//! was given keep their numbers. `_MM_SESSION_SPACE.HeapState` is left
//! null: what it points at is not documented, and a reader must not need
//! it (segments name their heap through their signatures).

use crate::machine::{Machine, Region};
use crate::paging::{AddressSpace, Prot};
use crate::phys::{MB, PAGE64};
use crate::pool::Req;
use crate::pool::state::PoolState;
use crate::scenario::PoolKind;
use crate::tag::tag_string;
use crate::truth::{Allocation, AllocatorKind};

/// POOL_TYPE PagedPoolSession.
const PAGED_POOL_SESSION: u64 = 0x21;
/// A chunk's header and body fit one page: BlockSize is 8 bits of
/// 16-byte units, and larger allocations take whole pages.
const MAX_CHUNK: u64 = 0xFF0;

/// Session pool: pages mapped in the session's address space, handed out
/// in order from its start.
pub(crate) struct SessionPool {
    pub(crate) asp: AddressSpace,
    pub(crate) next: u64,
}

impl SessionPool {
    /// Map fresh frames for `bytes` (whole pages) at the next free VA.
    pub(crate) fn alloc(&mut self, mc: &mut Machine, bytes: u64) -> u64 {
        let va = self.next;
        let pages = bytes.div_ceil(PAGE64);
        self.next += pages * PAGE64;
        for i in 0..pages {
            let f = mc.mem.alloc();
            self.asp.map(&mut mc.mem, va + i * PAGE64, f, Prot::Data);
        }
        va
    }
}

/// A session whose blocks go to its own segment heap once the rest of the
/// machine is built.
pub(crate) struct PendingSessionHeap {
    /// Its index in the ground truth's sessions.
    pub(crate) index: usize,
    pub(crate) pool: SessionPool,
    /// The end of its pool range (`PagedPoolEnd` + 1).
    pub(crate) end: u64,
    pub(crate) blocks: Vec<(u32, u64)>,
    pub(crate) rng: fastrand::Rng,
}

/// The page being carved.
struct OpenPage {
    va: u64,
    used: u64,
    last_units: u64,
}

impl Machine {
    /// Place `blocks` ((tag, bytes asked for), in the order given) in
    /// legacy pool pages of session pool `pool`; returns them as placed.
    /// Blocks too large for a pool page are left out (whole-page session
    /// allocations live in the session's big-page table, which the kit
    /// does not fill).
    pub(crate) fn place_session_blocks(
        &mut self,
        pool: &mut SessionPool,
        blocks: &[(u32, u64)],
        rng: &mut fastrand::Rng,
    ) -> Vec<Allocation> {
        let ptype = Self::in_use_pool_type(PAGED_POOL_SESSION);
        let mut out = Vec::new();
        let mut page: Option<OpenPage> = None;
        for &(key, size) in blocks {
            let block = (size + 0x10).div_ceil(16) * 16;
            if block > MAX_CHUNK {
                continue;
            }
            if page.as_ref().is_none_or(|p| p.used + block > PAGE64) {
                if let Some(p) = page.take() {
                    self.close_session_page(pool, &p);
                }
                page = Some(OpenPage {
                    va: pool.alloc(self, PAGE64),
                    used: 0,
                    last_units: 0,
                });
            }
            let p = page.as_mut().expect("a page is open");
            let h = p.va + p.used;
            // Session paged pool has one descriptor: PoolIndex 0.
            let hdr = self.pool_header(p.last_units, 0, block / 16, ptype, key);
            pool.asp.write(&mut self.mem, h, &hdr);
            let mut body = vec![0u8; size.min(48) as usize];
            rng.fill(&mut body);
            pool.asp.write(&mut self.mem, h + 0x10, &body);
            p.used += block;
            p.last_units = block / 16;
            out.push(Allocation {
                va: h + 0x10,
                header_va: Some(h),
                extra_header_va: None,
                tag: tag_string(key),
                tag_value: key,
                pool: PoolKind::Paged,
                size,
                block_bytes: block,
                live: true,
                stale_header: false,
                allocator: AllocatorKind::LegacyPage,
                pa: pool.asp.translate(&self.mem, h),
                in_dump: true,
                protected: false,
            });
        }
        if let Some(p) = page {
            self.close_session_page(pool, &p);
        }
        out
    }

    /// Lay out each pending session's segment heap and record its
    /// allocations in the ground truth.
    pub(crate) fn place_session_heaps(&mut self) {
        for p in std::mem::take(&mut self.pending_session_heaps) {
            let (heap, allocations) = self.place_session_heap(p.pool, p.end, &p.blocks, p.rng);
            let truth = &mut self.truth.sessions[p.index];
            truth.allocations = allocations;
            truth.heap_va = Some(heap);
        }
    }

    /// One session's heap: its `_SEGMENT_HEAP` on a page of its pool,
    /// segments after it. Returns the heap's address and its allocations. The kernel pool's writers run with the
    /// machine's address space, pool state, heaps, paged region and
    /// generator swapped for the session's, and everything is put back
    /// after.
    fn place_session_heap(
        &mut self,
        mut pool: SessionPool,
        end: u64,
        blocks: &[(u32, u64)],
        rng: fastrand::Rng,
    ) -> (u64, Vec<Allocation>) {
        let heap_bytes = self.m.ty("_SEGMENT_HEAP").size.div_ceil(PAGE64) * PAGE64;
        let heap = pool.alloc(self, heap_bytes);
        let segments = Region {
            base: pool.next,
            size: end - pool.next,
            next: pool.next.div_ceil(MB) * MB,
        };
        let mut saved = SwappedPool {
            asp: pool.asp,
            pool: PoolState::for_session(),
            heaps: [(PoolKind::Paged, heap)].into_iter().collect(),
            paged: segments,
            paged_pages: Vec::new(),
            rng,
        };
        self.swap_pool(&mut saved);
        let reqs: Vec<Req> = blocks
            .iter()
            .map(|&(key, size)| Req {
                key,
                header_tag: key,
                kind: PoolKind::Paged,
                size,
                live: true,
                cache_aligned: false,
            })
            .collect();
        let out = self.fill_own_heap(&reqs);
        self.swap_pool(&mut saved);
        (heap, out)
    }

    fn swap_pool(&mut self, s: &mut SwappedPool) {
        std::mem::swap(&mut self.asp, &mut s.asp);
        std::mem::swap(&mut self.pool, &mut s.pool);
        std::mem::swap(&mut self.heaps, &mut s.heaps);
        std::mem::swap(&mut self.paged, &mut s.paged);
        std::mem::swap(&mut self.paged_pages, &mut s.paged_pages);
        std::mem::swap(&mut self.rng, &mut s.rng);
    }

    /// The rest of a page: one free chunk (PoolType 0, no tag).
    fn close_session_page(&mut self, pool: &SessionPool, p: &OpenPage) {
        let rest = PAGE64 - p.used;
        if rest > 0 {
            let hdr = self.pool_header(p.last_units, 0, rest / 16, 0, 0);
            pool.asp.write(&mut self.mem, p.va + p.used, &hdr);
        }
    }
}

/// What the pool writers use, while a session's heap is laid out.
struct SwappedPool {
    asp: AddressSpace,
    pool: PoolState,
    heaps: std::collections::BTreeMap<PoolKind, u64>,
    paged: Region,
    paged_pages: Vec<u64>,
    rng: fastrand::Rng,
}
