//! `seedgen segment-heap OUT`: see the crate docs. Each seed is the
//! pool_walkers input: a 16-byte head (the build's byte, no holes, flags,
//! `pool_at`'s address and KernBase bits), then the 64 KiB memory image.

use std::path::Path;

use pooldump_core::symbols::{Field, KernelSymbols};
use pooldump_fuzz::targets::pool_walkers::pick;

const IMAGE: usize = 0x10000;
/// Where the heap, the keys and the segment's subsegments sit in the
/// image: clear of each other and of ExPoolState's fields in both builds
/// (its 0x86940 bytes wrap the image; the fields read fall at 0x480,
/// 0x3D60 and 0x3D80 for 22000, 0xB680, 0xEF50 and 0xEF80 for 19041).
/// KernBase keeps its low 16 bits 0 (the head's bits leave them so).
const HEAP: u64 = 0xFFFF_A000_0000_C000;
const GLOBALS: u64 = 0xFFFF_A000_0000_CC00;
/// A page segment is 1 MiB-aligned: its header is at image offset 0.
const SEGMENT: u64 = 0xFFFF_B123_4560_0000;
const HEAP_KEY: u64 = 0x1234_5678_9ABC_DEF1;
const LFH_KEY: u64 = 0x0FED_CBA9_8765_4321;
const STATIC_KEY: u64 = 0xA2E6_4EAD_A2E6_4EAD;
const LFH_UNIT: u64 = 2;
const VS_UNIT: u64 = 8;

struct Image<'s> {
    b: Vec<u8>,
    s: &'s KernelSymbols,
}

impl Image<'_> {
    fn put(&mut self, va: u64, bytes: &[u8]) {
        for (i, &x) in bytes.iter().enumerate() {
            self.b[(va as usize + i) % IMAGE] = x;
        }
    }

    fn field(&self, ty: &str, member: &str) -> Result<Field, String> {
        self.s
            .field(ty, member)
            .map_err(|e| format!("{ty}.{member}: {e}"))
    }

    /// `value` into `ty.member` of the structure at `base` (bitfields
    /// read-modify-written in their storage unit).
    fn set(&mut self, base: u64, ty: &str, member: &str, value: u64) -> Result<(), String> {
        let f = self.field(ty, member)?;
        let size = f.size.clamp(1, 8) as usize;
        let at = base + f.offset;
        let mut unit = [0u8; 8];
        for (i, u) in unit.iter_mut().enumerate().take(size) {
            *u = self.b[(at as usize + i) % IMAGE];
        }
        let old = u64::from_le_bytes(unit);
        let new = match (f.bit_position, f.bit_length) {
            (Some(p), Some(n)) if n < 64 => {
                let mask = ((1u64 << n) - 1) << p;
                (old & !mask) | ((value << p) & mask)
            }
            _ => value,
        };
        self.put(at, &new.to_le_bytes()[..size]);
        Ok(())
    }

    /// A `_POOL_HEADER` of `units` 16-byte units, tagged `Fuzz`, at `va`.
    fn pool_header(&mut self, va: u64, units: u64) -> Result<(), String> {
        self.set(va, "_POOL_HEADER", "BlockSize", units)?;
        self.set(va, "_POOL_HEADER", "PoolType", 2)?;
        self.set(
            va,
            "_POOL_HEADER",
            "PoolTag",
            u64::from(u32::from_le_bytes(*b"Fuzz")),
        )
    }
}

/// One seed per segment-heap build, with the build's own keys, and one
/// with the other derivation of both.
pub fn seeds(out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let mut n = 0;
    for b in 0xF0..=0xFFu8 {
        let (build, syms) = pick(b);
        let name = format!("segment-heap-{build}");
        if out.join(&name).exists() {
            continue;
        }
        let new_keys = *build >= 26100;
        // pool_at's address: the LFH subsegment's second block, or a VS
        // chunk on the subsegment's second page.
        let lfh_va = SEGMENT + LFH_UNIT * 0x1000 + 0x80 + 0x40 + 0x10;
        let vs_va = SEGMENT + (VS_UNIT + 1) * 0x1000 + 0x40;
        for (suffix, swapped, va) in [
            ("", false, lfh_va),
            ("-other-keys", true, lfh_va),
            ("-vs", false, vs_va),
        ] {
            let img = image(syms, new_keys != swapped)?;
            let mut head = [0u8; 16];
            head[0] = b;
            head[2] = 1;
            head[4..12].copy_from_slice(&(va & 0x0000_7FFF_FFFF_FFF0).to_le_bytes());
            // KernBase keeps its low 16 bits 0 whatever bytes 8..16 hold.
            let mut seed = head.to_vec();
            seed.extend_from_slice(&img);
            std::fs::write(out.join(format!("{name}{suffix}")), seed).map_err(|e| e.to_string())?;
            n += 1;
        }
    }
    eprintln!("{n} segment-heap seeds");
    Ok(())
}

fn image(s: &KernelSymbols, new_keys: bool) -> Result<Vec<u8>, String> {
    let mut m = Image {
        b: vec![0u8; IMAGE],
        s,
    };
    let state_rva = s.symbol_rva("ExPoolState").ok_or("no ExPoolState")?;
    let state = 0xFFFF_F800_0000_0000 + state_rva;
    let st = "_EX_POOL_HEAP_MANAGER_STATE";
    m.set(state, st, "NumberOfPools", 1)?;
    m.set(state, st, "HeapManager.Globals", GLOBALS)?;
    m.set(GLOBALS, "_RTLP_HP_HEAP_GLOBALS", "HeapKey", HEAP_KEY)?;
    m.set(GLOBALS, "_RTLP_HP_HEAP_GLOBALS", "LfhKey", LFH_KEY)?;
    let node = m.field(st, "PoolNode")?;
    let heaps = m.field("_EX_HEAP_POOL_NODE", "Heaps")?;
    for j in 0..heaps.count.unwrap_or(4).min(4) {
        m.put(
            state + node.offset + heaps.offset + 8 * j,
            &HEAP.to_le_bytes(),
        );
    }
    m.set(HEAP, "_SEGMENT_HEAP", "Signature", 0xDDEE_DDEE)?;
    let ctxs = m.field("_SEGMENT_HEAP", "SegContexts")?;
    let ctx_size = ctxs.element_size.ok_or("SegContexts has no element size")?;
    let sc = "_HEAP_SEG_CONTEXT";
    let list_head = m.field(sc, "SegmentListHead")?.offset;
    let entry = m.field("_HEAP_PAGE_SEGMENT", "ListEntry")?.offset;
    let first_ctx = HEAP + ctxs.offset;
    for c in 0..ctxs.count.unwrap_or(2).min(2) {
        let ctx = first_ctx + c * ctx_size;
        m.set(ctx, sc, "SegmentMask", !0xF_FFFF)?;
        m.set(ctx, sc, "UnitShift", 12)?;
        m.set(ctx, sc, "FirstDescriptorIndex", 2)?;
        let _ = m.set(ctx, sc, "Heap", HEAP);
        // The first context lists the segment; the second is empty.
        let flink = if c == 0 {
            SEGMENT + entry
        } else {
            ctx + list_head
        };
        m.put(ctx + list_head, &flink.to_le_bytes());
        m.put(ctx + list_head + 8, &flink.to_le_bytes());
    }
    // The segment: back to the first context's list head, signed.
    m.put(SEGMENT + entry, &(first_ctx + list_head).to_le_bytes());
    m.put(SEGMENT + entry + 8, &(first_ctx + list_head).to_le_bytes());
    let key = if new_keys { 0 } else { STATIC_KEY };
    m.set(
        SEGMENT,
        "_HEAP_PAGE_SEGMENT",
        "Signature",
        first_ctx ^ HEAP_KEY ^ SEGMENT ^ key,
    )?;
    let desc = m.field("_HEAP_PAGE_SEGMENT", "DescArray")?.offset;
    let desc_size = s
        .type_size("_HEAP_PAGE_RANGE_DESCRIPTOR")
        .ok_or("no _HEAP_PAGE_RANGE_DESCRIPTOR")?;
    let rd = "_HEAP_PAGE_RANGE_DESCRIPTOR";
    for (unit, flags, size) in [(LFH_UNIT, 0x0B, 1), (VS_UNIT, 0x0F, 2)] {
        let d = SEGMENT + desc + unit * desc_size;
        m.set(d, rd, "RangeFlags", flags)?;
        m.set(d, rd, "UnitSize", size)?;
    }
    lfh(&mut m, new_keys)?;
    vs(&mut m)?;
    page_tables(&mut m);
    Ok(m.b)
}

/// Page tables from the harness's DTB (0x1AD000) that map the segment's
/// pages where the image holds them, so the page scan (which walks the
/// tables, as for a dump) visits the subsegments. The tables sit at
/// physical 0x5000, 0x6000 and 0x7000: free in the image.
fn page_tables(m: &mut Image<'_>) {
    const PML4: u64 = 0x1AD000;
    let (pdpt, pd, pt) = (0x5000u64, 0x6000u64, 0x7000u64);
    let index = |shift: u32| (SEGMENT >> shift) & 0x1FF;
    m.put(PML4 + 8 * index(39), &(pdpt | 3).to_le_bytes());
    m.put(pdpt + 8 * index(30), &(pd | 3).to_le_bytes());
    m.put(pd + 8 * index(21), &(pt | 3).to_le_bytes());
    // The segment header, the LFH page and the VS pages, at their own
    // offsets (a physical address reads byte `pa % IMAGE` too).
    for page in [0, 1, LFH_UNIT, VS_UNIT, VS_UNIT + 1] {
        m.put(
            pt + 8 * (index(12) + page),
            &((page * 0x1000) | 3).to_le_bytes(),
        );
    }
}

/// An LFH subsegment of 0x40-byte blocks, every other one allocated.
fn lfh(m: &mut Image<'_>, new_keys: bool) -> Result<(), String> {
    let sub = SEGMENT + LFH_UNIT * 0x1000;
    let (block, first) = (0x40u64, 0x80u64);
    let count = (0x1000 - first) / block;
    let shift = if new_keys {
        (sub >> 12) as u32
    } else {
        (sub as u32) >> 12
    };
    let encoded = (block | first << 16) as u32 ^ LFH_KEY as u32 ^ shift;
    let ls = "_HEAP_LFH_SUBSEGMENT";
    m.set(sub, ls, "BlockOffsets", u64::from(encoded))?;
    m.set(sub, ls, "BlockCount", count)?;
    let bitmap = m.field(ls, "BlockBitmap")?.offset;
    for i in 0..count {
        if i % 2 == 1 {
            let at = sub + bitmap + 2 * i / 8;
            let old = m.b[at as usize % IMAGE];
            m.put(at, &[old | 1 << (2 * i % 8)]);
        }
        m.pool_header(sub + first + i * block, block / 16)?;
    }
    Ok(())
}

/// A VS subsegment of two pages: chunks of 0x100 bytes, each with its
/// encoded chunk header and a pool header behind it.
fn vs(m: &mut Image<'_>) -> Result<(), String> {
    let sub = SEGMENT + VS_UNIT * 0x1000;
    let vss = "_HEAP_VS_SUBSEGMENT";
    let units = 0x2000 / 16;
    m.set(sub, vss, "Size", units)?;
    m.set(sub, vss, "Signature", units ^ 0x2BED)?;
    let size = m.s.type_size(vss).ok_or("no _HEAP_VS_SUBSEGMENT")?;
    let first = size.div_ceil(16) * 16;
    let hdr = m.s.type_size("_HEAP_VS_CHUNK_HEADER").unwrap_or(0x10);
    let mut at = sub + first;
    let mut k = 0;
    while at + 0x100 <= sub + 0x2000 {
        // The raw size word, encoded with the key and the chunk's address.
        let mut raw = Image {
            b: vec![0u8; IMAGE],
            s: m.s,
        };
        raw.set(0, "_HEAP_VS_CHUNK_HEADER_SIZE", "UnsafeSize", 0x100 / 16)?;
        raw.set(0, "_HEAP_VS_CHUNK_HEADER_SIZE", "Allocated", k % 2)?;
        let q = u64::from_le_bytes(raw.b[..8].try_into().expect("8 bytes"));
        m.put(at, &(q ^ at ^ HEAP_KEY).to_le_bytes());
        m.pool_header(at + hdr, (0x100 - hdr) / 16)?;
        at += 0x100;
        k += 1;
    }
    Ok(())
}
