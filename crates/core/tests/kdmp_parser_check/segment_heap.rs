//! The segment heap as docs/pool-structures.md §5 decodes it, with its constants rather
//! than the manifest's offsets (so this also checks the manifest against
//! docs/pool-structures.md §5): heap keys from ExPoolState, range descriptors, LFH bitmaps,
//! encoded VS chunk headers and page-segment signatures.

use std::collections::BTreeSet;

use pooldump_kit::truth::{Allocation, AllocatorKind};
use pooldump_kit::{Machine, PoolKind};

use crate::kd::{Kd, Layout, PAGE};

const MB: u64 = 1 << 20;

/// What ExPoolState says: the heap keys, and the pool node's heaps.
struct Heaps {
    heap_key: u64,
    lfh_key: u64,
    /// Offset of SegContexts in `_SEGMENT_HEAP`.
    ctx_off: u64,
    /// PoolNode[0].Heaps[]: 0 NonPaged, 1 NonPagedNx, 2 Paged.
    heaps: Vec<u64>,
}

impl Heaps {
    fn of(&self, k: PoolKind) -> u64 {
        match k {
            PoolKind::NonPaged => self.heaps[0],
            PoolKind::NonPagedNx => self.heaps[1],
            PoolKind::Paged => self.heaps[2],
        }
    }
}

/// Reads of heap metadata: one on a paged-out page cannot be checked
/// (`None`); anything else must read.
struct Metadata<'a> {
    kd: &'a Kd<'a>,
    paged_out: BTreeSet<u64>,
    what: &'a str,
}

impl Metadata<'_> {
    fn read(&self, va: u64, n: usize) -> Option<Vec<u8>> {
        match self.kd.try_read(va, n) {
            Ok(b) => Some(b),
            Err(_) if self.paged_out.contains(&(va & !(PAGE - 1))) => None,
            Err(e) => panic!("{}: heap metadata at {va:#x}: {e}", self.what),
        }
    }

    /// The subsegment holding `va`: its range descriptor (0x20 bytes from
    /// the segment base, one per page; RangeFlags +0x18, UnitOffset +0x1F
    /// back to the first page of the range) and its flags.
    fn subsegment(&self, va: u64) -> Option<(u64, u8)> {
        let seg = va & !(MB - 1);
        let idx = (va - seg) >> 12;
        let d = self.read(seg + idx * 0x20, 0x20)?;
        let first = if d[0x18] == 0 {
            idx - d[0x1F] as u64
        } else {
            idx
        };
        let d = self.read(seg + first * 0x20, 0x20)?;
        Some((seg + first * PAGE, d[0x18]))
    }
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8"))
}

/// The segment heap of segment-heap builds (19H1 on): every block in the
/// dump, then every VS subsegment.
pub(crate) fn check_segment_heap(m: &Machine, l: &Layout, kd: &Kd, what: &str) {
    let t = &m.truth;
    if t.build_number < 18362 {
        return;
    }
    let heaps = read_heaps(m, l, kd, what);
    let md = Metadata {
        kd,
        paged_out: t.pages.paged_out.iter().copied().collect(),
        what,
    };
    let mut vs_subs = BTreeSet::new();
    let mut checked = 0;
    for a in &t.allocations {
        if a.in_dump && check_block(&md, &heaps, a, &mut vs_subs) {
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "{what}: {checked} segment-heap blocks checked"
    );
    for sub in vs_subs {
        check_vs_subsegment(&md, heaps.heap_key, sub);
    }
}

/// ExPoolState: its first qword points at RtlpHpHeapGlobals {HeapKey,
/// LfhKey}; NumberOfPools, and the pool node's heaps, each signed.
fn read_heaps(m: &Machine, l: &Layout, kd: &Kd, what: &str) -> Heaps {
    let t = &m.truth;
    let kb = t.kernel.kern_base;
    let state = kb + l.rva("ExPoolState");
    let globals = kd.u64(state, "ExPoolState.HeapManager.Globals");
    assert_eq!(
        globals,
        kb + l.rva("RtlpHpHeapGlobals"),
        "{what}: ExPoolState's first qword points at RtlpHpHeapGlobals"
    );
    let heap_key = kd.u64(globals, "HeapKey");
    let lfh_key = kd.u64(globals + 8, "LfhKey");
    let pools_off = l
        .field("_EX_POOL_HEAP_MANAGER_STATE", "NumberOfPools")
        .offset as u64;
    let node_off = l.field("_EX_POOL_HEAP_MANAGER_STATE", "PoolNode").offset as u64;
    let ctx_off = l.field("_SEGMENT_HEAP", "SegContexts").offset as u64;
    // docs/pool-structures.md §5's table.
    match t.build_number {
        19041 => assert_eq!((pools_off, node_off, ctx_off), (0x38D0, 0x3900, 0x100)),
        22000 => assert_eq!((pools_off, node_off, ctx_off), (0x38E0, 0x3900, 0x140)),
        _ => {}
    }
    let pools = kd.u32(state + pools_off, "NumberOfPools");
    assert!((1..=64).contains(&pools), "{what}: NumberOfPools {pools}");
    let heaps: Vec<u64> = (0..3)
        .map(|i| kd.u64(state + node_off + 8 * i, "PoolNode[0].Heaps[i]"))
        .collect();
    for &h in &heaps {
        assert_eq!(kd.u32(h + 0x10, "_SEGMENT_HEAP.Signature"), 0xDDEE_DDEE);
    }
    Heaps {
        heap_key,
        lfh_key,
        ctx_off,
        heaps,
    }
}

/// One segment-heap block: its segment's signature, then its LFH bitmap
/// bit or its encoded VS chunk header. VS subsegments are collected in
/// `vs_subs`. Returns whether the block was checked.
fn check_block(
    md: &Metadata<'_>,
    heaps: &Heaps,
    a: &Allocation,
    vs_subs: &mut BTreeSet<u64>,
) -> bool {
    let what = md.what;
    let chunk = match (a.allocator, a.extra_header_va, a.header_va) {
        (AllocatorKind::Lfh, _, Some(h)) => h,
        (AllocatorKind::Vs, Some(first), _) => first - 0x10,
        (AllocatorKind::Vs, None, Some(h)) => h - 0x10,
        (AllocatorKind::VsBig, _, _) => a.va - 0x10,
        _ => return false,
    };
    // The page segment ties back to its heap's first segment context.
    let seg = chunk & !(MB - 1);
    if let Some(sh) = md.read(seg, 0x18) {
        let ctx = u64_at(&sh, 0x10) ^ heaps.heap_key ^ seg ^ 0xA2E6_4EAD_A2E6_4EAD;
        assert_eq!(
            ctx,
            heaps.of(a.pool) + heaps.ctx_off,
            "{what}: segment {seg:#x} signature"
        );
    }
    let Some((sub, flags)) = md.subsegment(chunk) else {
        return false;
    };
    if a.allocator == AllocatorKind::Lfh {
        assert_eq!(flags, 0x0B, "{what}: LFH range flags at {sub:#x}");
        let Some(hdr) = md.read(sub, 0x30) else {
            return false;
        };
        let enc = u32::from_le_bytes(hdr[0x28..0x2C].try_into().expect("4"));
        let dec = enc ^ heaps.lfh_key as u32 ^ ((sub as u32) >> 12);
        let (block, first) = ((dec & 0xFFFF) as u64, (dec >> 16) as u64);
        assert_eq!(block, a.block_bytes, "{what}: LFH block size at {sub:#x}");
        let rel = chunk - sub - first;
        assert_eq!(rel % block, 0, "{what}: LFH block {chunk:#x} misaligned");
        let i = rel / block;
        let Some(bm) = md.read(sub + 0x30 + (2 * i) / 8, 1) else {
            return false;
        };
        let allocated = (bm[0] >> ((2 * i) % 8)) & 1 == 1;
        assert_eq!(allocated, a.live, "{what}: LFH bitmap for {chunk:#x}");
    } else {
        assert_eq!(flags, 0x0F, "{what}: VS range flags at {sub:#x}");
        vs_subs.insert(sub);
        // A header that would have crossed a page starts the next page
        // inside its chunk: the chunk is the one the chain puts across it.
        let first = chunk + 0x10;
        let chunk = if a.allocator == AllocatorKind::Vs && first % 0x1000 == 0 {
            match vs_chunk_across(md, heaps.heap_key, sub, first) {
                Some(c) => c,
                None => return false,
            }
        } else {
            chunk
        };
        let Some(c) = md.read(chunk, 8) else {
            return false;
        };
        let q = u64_at(&c, 0) ^ chunk ^ heaps.heap_key;
        let (size, allocated) = (((q >> 16) & 0xFFFF) * 16, (q >> 48) & 0xFF);
        let want = match (a.allocator, a.extra_header_va, a.header_va) {
            (AllocatorKind::VsBig, _, _) => a.block_bytes,
            // Cache-aligned: the chunk header (and the unused bytes before
            // a moved header), the first header's block, then the second
            // header's block.
            (_, Some(first), Some(second)) => (first - chunk) + (second - first) + a.block_bytes,
            _ => (first - chunk) + a.block_bytes,
        };
        assert_eq!(size, want, "{what}: VS chunk {chunk:#x} size");
        assert_eq!(
            allocated & 1 == 1,
            a.live,
            "{what}: VS chunk {chunk:#x} busy"
        );
    }
    true
}

/// The chunk of VS subsegment `sub` that holds `at` past its header,
/// found by walking its chunks from the first; None when a chunk on the
/// way is not in the dump.
fn vs_chunk_across(md: &Metadata<'_>, heap_key: u64, sub: u64, at: u64) -> Option<u64> {
    let mut c = sub + 0x30;
    while c < at {
        let q = u64_at(&md.read(c, 8)?, 0) ^ c ^ heap_key;
        let size = ((q >> 16) & 0xFFFF) * 16;
        assert!(size > 0, "{}: VS chunk {c:#x} has size 0", md.what);
        if at < c + size {
            return Some(c);
        }
        c += size;
    }
    None
}

/// A VS subsegment: its signature, and chunks that tile it with
/// UnsafePrevSize chaining.
fn check_vs_subsegment(md: &Metadata<'_>, heap_key: u64, sub: u64) {
    let what = md.what;
    let Some(h) = md.read(sub, 0x28) else { return };
    let size = u16::from_le_bytes([h[0x20], h[0x21]]) as u64;
    let sig = u16::from_le_bytes([h[0x22], h[0x23]]) as u64 & 0x7FFF;
    assert_eq!(
        sig,
        (size ^ 0x2BED) & 0x7FFF,
        "{what}: VS subsegment {sub:#x}"
    );
    let end = sub + size * 16;
    let (mut c, mut prev, mut whole) = (sub + 0x30, 0, true);
    while c < end {
        let Some(b) = md.read(c, 8) else {
            whole = false;
            break;
        };
        let q = u64_at(&b, 0) ^ c ^ heap_key;
        let units = (q >> 16) & 0xFFFF;
        assert_eq!(
            (q >> 32) & 0xFFFF,
            prev,
            "{what}: VS chunk {c:#x} prev size"
        );
        assert!(units > 0, "{what}: VS chunk {c:#x} has size 0");
        prev = units;
        c += units * 16;
    }
    if whole {
        assert_eq!(c, end, "{what}: VS chunks do not tile {sub:#x}");
    }
}
