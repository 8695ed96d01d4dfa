//! The segment heap's VS subsegments: chunks of any size behind an encoded
//! `_HEAP_VS_CHUNK_HEADER`, a pool header after it when the allocation has
//! one, and free chunks whose free-tree node overwrites what followed the
//! chunk header (docs/pool-structures.md §5).

use crate::layout::StructBuf;
use crate::machine::Machine;
use crate::phys::{MB, PAGE64};
use crate::scenario::PoolKind;
use crate::truth::{Allocation, AllocatorKind};

use super::format::{RANGE_VS, round16};
use super::state::{BigRec, Req, VsSub};

const VS_SUBSEGMENT_PAGES: u64 = 16;
/// Chunks in a VS subsegment start after its 0x28-byte header.
const VS_FIRST_CHUNK: u64 = 0x30;

impl Machine {
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
    /// heap key (docs/pool-structures.md §5).
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
    /// and data never straddle a page: when they would, the pool header
    /// starts the next page inside the same chunk, the bytes between the
    /// chunk header and it unused.
    pub(super) fn vs_place(&mut self, r: &Req, with_header: bool) -> Allocation {
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
            let c = va + off;
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
            // Bytes of the chunk between its header and the pool header:
            // none, unless the block would cross a page.
            let mut lead = 0;
            if with_header && body <= PAGE64 && (c + 0x10) % PAGE64 + body > PAGE64 {
                let moved = ((c + 0x10) / PAGE64 + 1) * PAGE64 - 0x10;
                if moved + 0x10 + body <= va + VS_SUBSEGMENT_PAGES * PAGE64 {
                    // One chunk still, whose pool header starts the next
                    // page; the bytes before it are unused, and no chunk
                    // header sits in front of the pool header (MemProcFS
                    // reads real dumps so). The draw stands for the one
                    // the gap's free chunk once took, so the rest of the
                    // machine keeps its layout.
                    if (moved - c) / 16 >= 2 {
                        self.rng.u64(1..64);
                    }
                    lead = moved - c;
                    (body, data) = layout(moved);
                }
            }
            let units = (0x10 + lead + body) / 16;
            if c + units * 16 > va + VS_SUBSEGMENT_PAGES * PAGE64 {
                self.close_vs_sub(r.kind);
                continue;
            }
            self.vs_chunk_header(c, seg, units, prev, r.live);
            let mut a = self.vs_headers(r, c + lead, units - lead / 16, body, data, with_header);
            if lead > 0 {
                self.pool.vs_moved.insert(c + lead + 0x10, c);
            }
            if r.live {
                self.fill_body(data, r.size);
            } else {
                // The chunk is free: the free-tree node overwrites what
                // followed the header, the stale pool header too unless
                // it was moved past those bytes.
                self.vs_free_chunk(c, seg, units, prev);
                a.stale_header = lead > 0;
            }
            let s = &mut self.pool.vs_subs[i];
            s.off = c + units * 16 - va;
            s.prev_units = units;
            return a;
        }
    }

    /// Write the pool header of the VS chunk at `c` (two for a
    /// cache-aligned one), or record a header-less one for the big-page
    /// table, and return its record.
    fn vs_headers(
        &mut self,
        r: &Req,
        c: u64,
        units: u64,
        body: u64,
        data: u64,
        with_header: bool,
    ) -> Allocation {
        let ca = r.cache_aligned && with_header;
        let pool_type = self.header_pool_type(r.kind, false);
        let mut a;
        if with_header {
            let h1 = c + 0x10;
            if ca {
                // Two headers: the chunk's, without CacheAligned, then
                // one just below the aligned data, with it, whose
                // PreviousSize is the distance back to the first
                // (docs/pool-structures.md §5). A pointer to the second, XORed with
                // the quota cookie, follows the first.
                let h2 = data - 0x10;
                let first = self.pool_header(0, 0, (h2 - h1) / 16, pool_type, r.header_tag);
                self.write_va(h1, &first);
                self.write_u64(h1 + 0x10, h2 ^ self.quota_cookie);
                let blocks = (c + units * 16 - h2) / 16;
                let ptype2 = self.header_pool_type(r.kind, true);
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
                pool_type: self.big_pool_type(r.kind),
                bytes: r.size,
                freed: !r.live,
            });
        }
        a
    }

    /// Close the open VS subsegment of `kind`: the rest of it is one free
    /// chunk.
    pub(super) fn close_vs_sub(&mut self, kind: PoolKind) {
        let Some(i) = self.pool.vs.remove(&kind) else {
            return;
        };
        self.free_vs_rest(i);
    }

    /// The rest of VS subsegment `i`, after its last chunk, becomes one
    /// free chunk.
    fn free_vs_rest(&mut self, i: usize) {
        let (va, seg, off, prev) = {
            let s = &self.pool.vs_subs[i];
            (s.va, s.seg, s.off, s.prev_units)
        };
        let end = va + VS_SUBSEGMENT_PAGES * PAGE64;
        if va + off < end {
            self.vs_free_chunk(va + off, seg, (end - va - off) / 16, prev);
        }
    }

    // The running machine (run/pool.rs) frees and seals through these.

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
        self.free_vs_rest(i);
        self.write_vs_sub_header(i);
    }

    pub(super) fn write_vs_sub_header(&mut self, i: usize) {
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
}
