//! The segment heap's page segments and heaps: 1 MiB segments whose first
//! pages hold the header and one range descriptor per page, the signature
//! that ties a segment to its heap's segment context, each pool's
//! `_SEGMENT_HEAP`, and ExPoolState pointing at them (docs/pool-structures.md §5).

use crate::builds::Allocator;
use crate::layout::StructBuf;
use crate::machine::Machine;
use crate::phys::{MB, PAGE64};
use crate::scenario::PoolKind;

use super::state::{Req, Segment};
use crate::truth::Allocation;

const SEGMENT_PAGES: u64 = 256;
/// The page segment's first two pages hold its header and 256 range
/// descriptors.
const SEGMENT_HEADER_PAGES: u64 = 2;

impl Machine {
    /// `n` pages of a page segment of `kind`'s heap, with their range
    /// descriptor written.
    pub(super) fn segment_pages(&mut self, kind: PoolKind, n: u64, range_flags: u64) -> u64 {
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

    /// Page-segment headers: the signature that ties each segment to its
    /// heap's segment context (docs/pool-structures.md §5).
    pub(super) fn write_segment_headers(&mut self) {
        let segs: Vec<(PoolKind, Vec<Segment>)> = self
            .pool
            .segments
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (kind, list) in segs {
            let ctx = self.heap_context_va(kind);
            for s in list {
                let sig = ctx ^ self.heap_key ^ s.va ^ self.heap_keys.segment_signature_key();
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
        for k in kinds {
            self.write_heap(k);
        }
        self.write_heap_manager_state(&kinds);
    }

    /// The `_SEGMENT_HEAP` of pool `k`: its two segment contexts, the first with
    /// the heap's segments linked in a ring through SegmentListHead.
    fn write_heap(&mut self, k: PoolKind) {
        let ctx_stride = {
            let (_, f) = self.m.field_path("_SEGMENT_HEAP", "SegContexts");
            f.element_size.unwrap_or(0xC0)
        };
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

    /// ExPoolState.HeapManager.Globals -> RtlpHpHeapGlobals {HeapKey,
    /// LfhKey}; one pool node with the heaps by index (0 NonPaged,
    /// 1 NonPagedNx, 2 Paged).
    fn write_heap_manager_state(&mut self, kinds: &[PoolKind; 3]) {
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

    /// Lay out `reqs` in a heap of their own: the one [`Machine::pool`]
    /// and [`Machine::heaps`] hold for paged pool (a session's, swapped in
    /// by `session_pool.rs`), then write its subsegment and segment
    /// headers and its `_SEGMENT_HEAP`. Requests of 0xFE1 bytes and more
    /// are placed without a header and recorded in [`Machine::pool`]'s
    /// big allocations, for the heap's big-page table.
    pub(crate) fn fill_own_heap(&mut self, reqs: &[Req]) -> Vec<Allocation> {
        let out: Vec<Allocation> = reqs.iter().map(|r| self.place_block(r)).collect();
        self.close_vs_sub(PoolKind::Paged);
        self.write_subsegment_headers();
        self.write_heap(PoolKind::Paged);
        out
    }

    // The running machine (run/pool.rs) frees and seals through these.

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
