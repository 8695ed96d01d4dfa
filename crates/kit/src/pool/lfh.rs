//! The segment heap's LFH subsegments: one page of blocks of one size,
//! each a pool header and data, behind a header with a 2-bit-per-block
//! bitmap and an encoded BlockOffsets (docs/pool-structures.md §5).

use crate::layout::StructBuf;
use crate::machine::Machine;
use crate::phys::PAGE64;
use crate::truth::{Allocation, AllocatorKind};

use super::format::{RANGE_LFH, round16};
use super::state::{LfhSub, Req};

impl Machine {
    pub(super) fn lfh_place(&mut self, r: &Req) -> Allocation {
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
            self.header_pool_type(r.kind, false),
            r.header_tag,
        );
        self.write_va(h, &hdr);
        if r.live {
            self.fill_body(h + 0x10, r.size);
        }
        self.alloc_record(r, h + 0x10, Some(h), block, AllocatorKind::Lfh)
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
        let encoded =
            (block | (first << 16)) as u32 ^ self.lfh_key as u32 ^ self.heap_keys.lfh_shift(va);
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

    // The running machine (run/pool.rs) frees and seals through these.

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
}
