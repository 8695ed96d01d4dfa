//! The bulk area's pages: a few hundred precomputed pattern pages (a legacy
//! chained pool page, or a one-page LFH subsegment), and the
//! [`BulkFiller`] that generates page `i` of the area from the pattern a
//! hash of `i` picks, patching in the few VA-dependent fields (LFH encoded
//! offsets, list links, segment signatures).

use crate::layout::{Manifest, StructBuf};
use crate::phys::{MB, PAGE64};
use crate::phys::{PAGE, Page, PageFiller};
use crate::pool::format::HeapKeyDerivation;

pub(super) const PATTERNS: usize = 512;

/// One chunk of a pattern page.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunk {
    pub offset: u16,
    pub tag: u32,
    pub block_bytes: u16,
    pub size: u16,
    pub live: bool,
}

pub(super) struct Pattern {
    pub page: Box<Page>,
    pub chunks: Vec<Chunk>,
}

/// Everything a page generator needs, shared by rayon workers.
pub struct BulkFiller {
    pub(super) va: u64,
    pub(super) pfn: u64,
    pub(super) pool_pages: u64,
    pub(super) seed: u64,
    pub(super) segment_heap: bool,
    pub(super) patterns: Vec<Pattern>,
    /// LFH: BlockOffsets.EncodedData offset, and the raw (block | first << 16).
    pub(super) lfh_encoded_off: usize,
    pub(super) lfh_raw: Vec<u32>,
    pub(super) lfh_key: u32,
    pub(super) heap_keys: HeapKeyDerivation,
    /// Segment heap: page 0 and page 1 of every segment header, with
    /// ListEntry and Signature patched per segment.
    pub(super) seg_header: [Box<Page>; 2],
    pub(super) seg_sig_off: usize,
    pub(super) heap_key: u64,
    pub(super) context: u64,
    pub(super) ring_head: u64,
    pub(super) ring_prev_of_first: u64,
    pub(super) segments: u64,
}

pub(super) fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl BulkFiller {
    pub(super) fn pattern_of(&self, page: u64) -> usize {
        (mix(self.seed ^ page) % PATTERNS as u64) as usize
    }

    /// Is page `i` of the pool area a segment-header page?
    pub(super) fn is_seg_header(&self, i: u64) -> bool {
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
                let sig =
                    self.context ^ self.heap_key ^ va ^ self.heap_keys.segment_signature_key();
                out[self.seg_sig_off..self.seg_sig_off + 8].copy_from_slice(&sig.to_le_bytes());
            }
            return;
        }
        let p = self.pattern_of(i);
        out.copy_from_slice(&*self.patterns[p].page);
        if self.segment_heap {
            out[0..8].copy_from_slice(&va.to_le_bytes());
            out[8..16].copy_from_slice(&va.to_le_bytes());
            let enc = self.lfh_raw[p] ^ self.lfh_key ^ self.heap_keys.lfh_shift(va);
            let o = self.lfh_encoded_off;
            out[o..o + 4].copy_from_slice(&enc.to_le_bytes());
        }
    }
}

fn header_bytes(m: &Manifest, prev: u64, units: u64, pool_type: u64, tag: u32) -> Vec<u8> {
    let mut h = StructBuf::new(m, "_POOL_HEADER");
    h.set("PreviousSize", prev)
        .set("BlockSize", units)
        .set("PoolType", pool_type)
        .set("PoolTag", tag as u64);
    h.bytes
}

/// The area's pattern pages: LFH subsegments on segment-heap builds (with
/// each one's raw BlockOffsets), legacy pool pages before.
pub(super) fn pattern_pages(
    m: &Manifest,
    rng: &mut fastrand::Rng,
    tags: &[u32],
    pool_type: u64,
    segment_heap: bool,
) -> (Vec<Pattern>, Vec<u32>) {
    let mut lfh_raw = Vec::new();
    let patterns: Vec<Pattern> = (0..PATTERNS)
        .map(|_| {
            if segment_heap {
                let (p, raw) = lfh_pattern(m, rng, tags, pool_type);
                lfh_raw.push(raw);
                p
            } else {
                legacy_pattern(m, rng, tags, pool_type)
            }
        })
        .collect();
    (patterns, lfh_raw)
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
