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

use crate::globals::{big_table_size, replay_big_table};
use crate::machine::{Machine, Region};
use crate::paging::{AddressSpace, Prot};
use crate::phys::{MB, PAGE64};
use crate::pool::state::{BigRec, PoolState};
use crate::pool::{LEGACY_BIG, Req};
use crate::scenario::PoolKind;
use crate::tag::tag_string;
use crate::truth::{Allocation, AllocatorKind, BigPoolTruth};

/// POOL_TYPE PagedPoolSession.
const PAGED_POOL_SESSION: u64 = 0x21;
/// A session's big-page table's entries before it grows (doubled once a
/// quarter full, as the kernel's own). Nothing public says what Windows
/// starts a session's table at; a reader takes the size the structure
/// gives.
const SESSION_BIG_TABLE: u64 = 64;

/// One allocation of a session's tags: its tag, the bytes asked for, and
/// whether it is live (a freed one is kept only as a big-page table's
/// stale entry).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionBlock {
    pub(crate) key: u32,
    pub(crate) size: u64,
    pub(crate) live: bool,
}

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
    /// Its `_MM_SESSION_SPACE`'s system-wide address.
    pub(crate) global_va: u64,
    pub(crate) pool: SessionPool,
    /// The end of its pool range (`PagedPoolEnd` + 1).
    pub(crate) end: u64,
    pub(crate) blocks: Vec<SessionBlock>,
    pub(crate) rng: fastrand::Rng,
}

/// The page being carved.
struct OpenPage {
    va: u64,
    used: u64,
    last_units: u64,
}

impl Machine {
    /// Place `blocks` (in the order given) in legacy pool pages of session
    /// pool `pool`, those too large for a pool page in whole pages of it;
    /// returns them as placed, and the big ones for the session's
    /// big-page table.
    pub(crate) fn place_session_blocks(
        &mut self,
        pool: &mut SessionPool,
        blocks: &[SessionBlock],
        rng: &mut fastrand::Rng,
    ) -> (Vec<Allocation>, Vec<BigRec>) {
        let ptype = Self::in_use_pool_type(PAGED_POOL_SESSION);
        let mut out = Vec::new();
        let mut big = Vec::new();
        let mut page: Option<OpenPage> = None;
        for b in blocks {
            let (key, size) = (b.key, b.size);
            let block = (size + 0x10).div_ceil(16) * 16;
            if size > LEGACY_BIG {
                out.push(self.legacy_session_big(pool, b, rng, &mut big));
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
            out.push(session_allocation(
                b,
                h + 0x10,
                Some(h),
                block,
                AllocatorKind::LegacyPage,
                pool.asp.translate(&self.mem, h),
            ));
        }
        if let Some(p) = page {
            self.close_session_page(pool, &p);
        }
        (out, big)
    }

    /// A big session allocation on the legacy allocator: whole pages of
    /// session pool, no header (a freed one's pages are given back: its
    /// VA stays unmapped), recorded in `big` as the table records it (its
    /// bytes rounded up to pages).
    fn legacy_session_big(
        &mut self,
        pool: &mut SessionPool,
        b: &SessionBlock,
        rng: &mut fastrand::Rng,
        big: &mut Vec<BigRec>,
    ) -> Allocation {
        let bytes = b.size.div_ceil(PAGE64) * PAGE64;
        let va = if b.live {
            let va = pool.alloc(self, bytes);
            let mut body = vec![0u8; b.size.min(48) as usize];
            rng.fill(&mut body);
            pool.asp.write(&mut self.mem, va, &body);
            va
        } else {
            let va = pool.next;
            pool.next += bytes;
            va
        };
        big.push(BigRec {
            va,
            key: b.key,
            pool_type: PAGED_POOL_SESSION as u32,
            bytes,
            freed: !b.live,
        });
        let pa = pool.asp.translate(&self.mem, va);
        session_allocation(b, va, None, bytes, AllocatorKind::Big, pa)
    }

    /// Session `global_va`'s big-page table, after the big allocations
    /// `big`: `size` entries at `table_va` in its session space (through
    /// `asp`), and its `_MM_SESSION_SPACE`'s PoolTrackBigPages,
    /// PoolTrackBigPagesSize and PoolBigEntriesInUse.
    fn write_session_big_table(
        &mut self,
        asp: AddressSpace,
        global_va: u64,
        (table_va, size): (u64, u64),
        big: &[BigRec],
        rng: &mut fastrand::Rng,
    ) -> BigPoolTruth {
        let (bytes, entries) = replay_big_table(self.m, big, size, rng);
        asp.write(&mut self.mem, table_va, &bytes);
        let live = big.iter().filter(|r| !r.freed).count() as u64;
        let at = |f: &str| global_va + self.m.offset_of("_MM_SESSION_SPACE", f);
        let (table_f, size_f, used_f) = (
            at("PoolTrackBigPages"),
            at("PoolTrackBigPagesSize"),
            at("PoolBigEntriesInUse"),
        );
        self.write_u64(table_f, table_va);
        self.write_u64(size_f, size);
        self.write_va(used_f, &(live as u32).to_le_bytes());
        BigPoolTruth {
            table_va,
            table_size: size,
            entry_size: self.m.ty("_POOL_TRACKER_BIG_PAGES").size,
            in_use: live,
            entries,
        }
    }

    /// Room for a session's big-page table for `blocks`' live big ones,
    /// on fresh pages of `pool`: its address and entries.
    pub(crate) fn alloc_session_big_table(
        &mut self,
        pool: &mut SessionPool,
        blocks: &[SessionBlock],
    ) -> (u64, u64) {
        let live = blocks
            .iter()
            .filter(|b| b.live && self.session_big(b.size))
            .count() as u64;
        let size = big_table_size(SESSION_BIG_TABLE, live);
        let entry = self.m.ty("_POOL_TRACKER_BIG_PAGES").size;
        (pool.alloc(self, size * entry), size)
    }

    /// Place a legacy session's blocks and its big-page table; returns the
    /// allocations and the table.
    pub(crate) fn place_legacy_session(
        &mut self,
        pool: &mut SessionPool,
        global_va: u64,
        blocks: &[SessionBlock],
        rng: &mut fastrand::Rng,
    ) -> (Vec<Allocation>, BigPoolTruth) {
        let table = self.alloc_session_big_table(pool, blocks);
        let (allocations, big) = self.place_session_blocks(pool, blocks, rng);
        let truth = self.write_session_big_table(pool.asp, global_va, table, &big, rng);
        (allocations, truth)
    }

    /// Lay out each pending session's segment heap and big-page table, and
    /// record its allocations in the ground truth.
    pub(crate) fn place_session_heaps(&mut self) {
        for p in std::mem::take(&mut self.pending_session_heaps) {
            let placed = self.place_session_heap(p);
            let truth = &mut self.truth.sessions[placed.index];
            truth.allocations = placed.allocations;
            truth.heap_va = Some(placed.heap);
            truth.big_pool = Some(placed.big_pool);
        }
    }

    /// One session's heap: its big-page table and `_SEGMENT_HEAP` on pages
    /// of its pool, segments after them. The kernel pool's writers run
    /// with the machine's address space, pool state, heaps, paged region
    /// and generator swapped for the session's, and everything is put back
    /// after; the big allocations they recorded fill the session's table.
    fn place_session_heap(&mut self, p: PendingSessionHeap) -> PlacedSessionHeap {
        let PendingSessionHeap {
            index,
            global_va,
            mut pool,
            end,
            blocks,
            rng,
        } = p;
        let table = self.alloc_session_big_table(&mut pool, &blocks);
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
            .map(|b| Req {
                key: b.key,
                header_tag: b.key,
                kind: PoolKind::Paged,
                size: b.size,
                live: b.live,
                cache_aligned: false,
            })
            .collect();
        let mut allocations = self.fill_own_heap(&reqs);
        self.swap_pool(&mut saved);
        // A freed one is only its table's stale entry: no page of it is
        // named, as for the legacy allocator's.
        for a in allocations.iter_mut().filter(|a| !a.live) {
            (a.pa, a.in_dump) = (None, false);
        }
        let big = std::mem::take(&mut saved.pool.big);
        let big_pool =
            self.write_session_big_table(pool.asp, global_va, table, &big, &mut saved.rng);
        PlacedSessionHeap {
            index,
            heap,
            allocations,
            big_pool,
        }
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

/// A session's heap as laid out.
struct PlacedSessionHeap {
    /// The session's index in the ground truth.
    index: usize,
    heap: u64,
    allocations: Vec<Allocation>,
    big_pool: BigPoolTruth,
}

/// A session block's ground truth, placed at `va` (after its header at
/// `header`, if any) in `block_bytes`, its first byte at physical `pa`.
fn session_allocation(
    b: &SessionBlock,
    va: u64,
    header: Option<u64>,
    block_bytes: u64,
    allocator: AllocatorKind,
    pa: Option<u64>,
) -> Allocation {
    Allocation {
        va,
        header_va: header,
        extra_header_va: None,
        tag: tag_string(b.key),
        tag_value: b.key,
        pool: PoolKind::Paged,
        size: b.size,
        block_bytes,
        live: b.live,
        stale_header: false,
        allocator,
        pa: pa.filter(|_| b.live),
        in_dump: b.live,
        protected: false,
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
