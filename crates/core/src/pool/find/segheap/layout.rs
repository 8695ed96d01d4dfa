//! Where the segment heap's metadata is: the layouts the checks read
//! (from the PDB), the heaps of ExPoolState's pool nodes and their
//! segment contexts, and the two keys (docs/pool-structures.md §5).

use super::*;

pub(super) struct HeapLayout {
    pub(super) seg_signature: u64,
    pub(super) desc_array: u64,
    pub(super) desc_size: u64,
    pub(super) desc_count: u64,
    pub(super) range_flags: Field,
    pub(super) unit_size: Field,
    pub(super) lfh_encoded: u64,
    pub(super) lfh_block_count: Field,
    pub(super) lfh_bitmap: u64,
    pub(super) vs_size: Field,
    pub(super) vs_signature: Field,
    pub(super) vs_first_chunk: u64,
    pub(super) chunk_header: u64,
    pub(super) chunk_size: Field,
    pub(super) chunk_allocated: Field,
    /// `_SEGMENT_HEAP.Signature`, and its `SegContexts` array.
    pub(super) heap_signature: u64,
    pub(super) contexts: u64,
    pub(super) context_size: u64,
    pub(super) context_count: u64,
    /// `_HEAP_SEG_CONTEXT`'s members.
    pub(super) ctx_mask: u64,
    pub(super) ctx_shift: u64,
    pub(super) ctx_first: u64,
    /// `_HEAP_SEG_CONTEXT.Heap`, the context's own heap: without it a
    /// segment of a heap no pool node holds cannot be vouched for.
    pub(super) ctx_heap: Option<u64>,
}

impl HeapLayout {
    pub(super) fn new(s: &KernelSymbols) -> Result<Self, SymbolError> {
        let desc = s.field("_HEAP_PAGE_SEGMENT", "DescArray")?;
        let vs = s.require_type_size("_HEAP_VS_SUBSEGMENT")?;
        let ctxs = s.field("_SEGMENT_HEAP", "SegContexts")?;
        let ctx = |m: &str| s.field("_HEAP_SEG_CONTEXT", m).map(|f| f.offset);
        Ok(Self {
            heap_signature: s.field("_SEGMENT_HEAP", "Signature")?.offset,
            contexts: ctxs.offset,
            context_size: ctxs.element_size.unwrap_or(0),
            context_count: ctxs.count.unwrap_or(2).min(8),
            ctx_mask: ctx("SegmentMask")?,
            ctx_shift: ctx("UnitShift")?,
            ctx_first: ctx("FirstDescriptorIndex")?,
            ctx_heap: ctx("Heap").ok(),
            seg_signature: s.field("_HEAP_PAGE_SEGMENT", "Signature")?.offset,
            desc_array: desc.offset,
            desc_size: s.require_type_size("_HEAP_PAGE_RANGE_DESCRIPTOR")?,
            desc_count: desc.count.unwrap_or(256).min(4096),
            range_flags: s.field("_HEAP_PAGE_RANGE_DESCRIPTOR", "RangeFlags")?,
            unit_size: s.field("_HEAP_PAGE_RANGE_DESCRIPTOR", "UnitSize")?,
            lfh_encoded: s.field("_HEAP_LFH_SUBSEGMENT", "BlockOffsets")?.offset,
            lfh_block_count: s.field("_HEAP_LFH_SUBSEGMENT", "BlockCount")?,
            lfh_bitmap: s.field("_HEAP_LFH_SUBSEGMENT", "BlockBitmap")?.offset,
            vs_size: s.field("_HEAP_VS_SUBSEGMENT", "Size")?,
            vs_signature: s.field("_HEAP_VS_SUBSEGMENT", "Signature")?,
            vs_first_chunk: vs.div_ceil(16) * 16,
            chunk_header: s.type_size("_HEAP_VS_CHUNK_HEADER").unwrap_or(0x10),
            chunk_size: s.field("_HEAP_VS_CHUNK_HEADER_SIZE", "UnsafeSize")?,
            chunk_allocated: s.field("_HEAP_VS_CHUNK_HEADER_SIZE", "Allocated")?,
        })
    }
}

pub(super) const POOL_STATE: &str = "_EX_POOL_HEAP_MANAGER_STATE";

pub(super) fn e(e: SymbolError) -> String {
    e.to_string()
}

/// The segment contexts of the heaps in ExPoolState's pool nodes.
pub(super) struct HeapContexts {
    pub(super) contexts: HashMap<u64, SegCtx>,
    /// Their segment masks, each once.
    pub(super) masks: Vec<u64>,
    /// Heaps that carry the segment heap's signature.
    pub(super) signed: u32,
}

/// Read every heap of ExPoolState's `pools` pool nodes (at `state`), and
/// the segment contexts of those that carry the signature.
pub(super) fn heap_contexts<M: Memory + ?Sized>(
    mem: &M,
    s: &KernelSymbols,
    state: u64,
    pools: u32,
    l: &HeapLayout,
) -> Result<HeapContexts, String> {
    let node = s.field(POOL_STATE, "PoolNode").map_err(e)?;
    let node_size = node.element_size.unwrap_or(0);
    let heaps_f = s.field("_EX_HEAP_POOL_NODE", "Heaps").map_err(e)?;
    let heaps_n = heaps_f.count.unwrap_or(4).min(16);
    let mut out = HeapContexts {
        contexts: HashMap::new(),
        masks: Vec::new(),
        signed: 0,
    };
    for n in 0..u64::from(pools) {
        for j in 0..heaps_n {
            let at = state + node.offset + n * node_size + heaps_f.offset + 8 * j;
            let Ok(heap) = mem.read_u64(KernelVa(at)) else {
                continue;
            };
            if !is_segment_heap(mem, heap, l) {
                continue;
            }
            out.signed += 1;
            // Heap indexes in a pool node (docs/pool-structures.md §5).
            let kind = match j {
                0 => Some(PoolKind::NonPaged),
                1 => Some(PoolKind::NonPagedNx),
                2 | 3 => Some(PoolKind::Paged),
                _ => None,
            };
            for c in 0..l.context_count {
                let ctx = heap + l.contexts + c * l.context_size;
                let Some((seg, mask)) = read_context(mem, ctx, kind, l) else {
                    continue;
                };
                out.contexts.insert(ctx, seg);
                if !out.masks.contains(&mask) {
                    out.masks.push(mask);
                }
            }
        }
    }
    Ok(out)
}

/// Whether `heap` is a kernel address holding a `_SEGMENT_HEAP`'s
/// signature.
pub(super) fn is_segment_heap<M: Memory + ?Sized>(mem: &M, heap: u64, l: &HeapLayout) -> bool {
    KernelVa(heap).is_kernel()
        && mem
            .read_u32(KernelVa(heap.wrapping_add(l.heap_signature)))
            .ok()
            == Some(SEGMENT_HEAP_SIGNATURE as u32)
}

/// The segment context at `ctx` and its segment mask, if its unit shift,
/// segment size and descriptor count are a segment heap's: a segment is
/// 1 MiB or 16 MiB of 4 KiB or 64 KiB units.
pub(super) fn read_context<M: Memory + ?Sized>(
    mem: &M,
    ctx: u64,
    kind: Option<PoolKind>,
    l: &HeapLayout,
) -> Option<(SegCtx, u64)> {
    let at = |off: u64| KernelVa(ctx.wrapping_add(off));
    let mask = mem.read_u64(at(l.ctx_mask)).unwrap_or(0);
    let shift = mem.read_u8(at(l.ctx_shift)).unwrap_or(0) as u32;
    let first = mem.read_u8(at(l.ctx_first)).unwrap_or(0) as u64;
    let size = (!mask).wrapping_add(1);
    if !(12..=16).contains(&shift)
        || !size.is_power_of_two()
        || !(1 << 20..=1 << 24).contains(&size)
        || size >> shift > l.desc_count
    {
        return None;
    }
    let seg = SegCtx {
        kind,
        unit_shift: shift,
        first_desc: first,
    };
    Some((seg, mask))
}

/// HeapKey and LfhKey, from ExPoolState.HeapManager.Globals (an
/// `_RTLP_HP_HEAP_GLOBALS`), else from RtlpHpHeapGlobals.
pub(super) fn heap_keys<M: Memory + ?Sized>(
    mem: &M,
    s: &KernelSymbols,
    kern_base: KernelVa,
    state: u64,
) -> Result<(u64, u64), String> {
    let globals = s
        .field(POOL_STATE, "HeapManager.Globals")
        .ok()
        .and_then(|f| mem.read_u64(KernelVa(state + f.offset)).ok())
        .filter(|g| KernelVa(*g).is_kernel())
        .or_else(|| {
            s.symbol_rva("RtlpHpHeapGlobals")
                .map(|r| kern_base.0.wrapping_add(r))
        })
        .ok_or("the heap globals (HeapKey, LfhKey) cannot be found")?;
    let g = "_RTLP_HP_HEAP_GLOBALS";
    let hk = s.field(g, "HeapKey").map_err(e)?;
    let lk = s.field(g, "LfhKey").map_err(e)?;
    let heap_key = mem
        .read_u64(KernelVa(globals + hk.offset))
        .map_err(|e| format!("HeapKey: {e}"))?;
    let lfh_key = mem
        .read_u64(KernelVa(globals + lk.offset))
        .map_err(|e| format!("LfhKey: {e}"))?;
    Ok((heap_key, lfh_key))
}
