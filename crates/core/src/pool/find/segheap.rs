//! The segment heap's own metadata (19H1+): whether a header found in a
//! frame is a live LFH block, a VS chunk or neither.

use super::*;

// ----- the segment heap --------------------------------------------------

/// What the allocator context needs: the family, and for the segment
/// heap its keys, contexts and layouts (docs/pool-structures.md §5).
pub(super) struct Ctx {
    pub(super) family: AllocatorFamily,
    /// Only with a working segment heap.
    pub(super) heap: Option<SegHeap>,
    /// Windows 8+ has NonPagedPoolNx: an NX nonpaged page means Nx.
    pub(super) has_nx_pool: bool,
}

impl Ctx {
    pub(super) fn new<M: Memory + ?Sized>(
        mem: &M,
        syms: &KernelSymbols,
        kern_base: KernelVa,
        build: Option<u32>,
        warnings: &mut Vec<String>,
    ) -> Self {
        let has_nx_pool = build.is_none_or(|b| b >= 9200);
        match SegHeap::read(mem, syms, kern_base, build) {
            Ok(Some(h)) => Ctx {
                family: AllocatorFamily::SegmentHeap,
                heap: Some(h),
                has_nx_pool,
            },
            Ok(None) => Ctx {
                family: AllocatorFamily::Legacy,
                heap: None,
                has_nx_pool,
            },
            Err(why) => {
                let seg = build.is_some_and(|b| b >= 18362);
                if seg {
                    warnings.push(format!(
                        "the segment heap's metadata could not be read ({why}): headers are reported unverified, allocated or recently freed"
                    ));
                }
                Ctx {
                    family: if seg {
                        AllocatorFamily::SegmentHeap
                    } else {
                        AllocatorFamily::Legacy
                    },
                    heap: None,
                    has_nx_pool,
                }
            }
        }
    }
}

/// Descriptor flags of a page range (docs/pool-structures.md §5).
const RANGE_LFH: u64 = 0x0B;
const RANGE_VS: u64 = 0x0F;
const SEGMENT_HEAP_SIGNATURE: u64 = 0xDDEE_DDEE;
/// The segment signature's static key before 24H2 (MemProcFS).
const SEGMENT_KEY: u64 = 0xA2E6_4EAD_A2E6_4EAD;
const VS_SIGNATURE_KEY: u64 = 0x2BED;

struct HeapLayout {
    seg_signature: u64,
    desc_array: u64,
    desc_size: u64,
    desc_count: u64,
    range_flags: Field,
    unit_size: Field,
    lfh_encoded: u64,
    lfh_block_count: Field,
    lfh_bitmap: u64,
    vs_size: Field,
    vs_signature: Field,
    vs_first_chunk: u64,
    chunk_header: u64,
    chunk_size: Field,
    chunk_allocated: Field,
    /// `_SEGMENT_HEAP.Signature`, and its `SegContexts` array.
    heap_signature: u64,
    contexts: u64,
    context_size: u64,
    context_count: u64,
    /// `_HEAP_SEG_CONTEXT`'s members.
    ctx_mask: u64,
    ctx_shift: u64,
    ctx_first: u64,
    /// `_HEAP_SEG_CONTEXT.Heap`, the context's own heap: without it a
    /// segment of a heap no pool node holds cannot be vouched for.
    ctx_heap: Option<u64>,
}

impl HeapLayout {
    fn new(s: &KernelSymbols) -> Result<Self, SymbolError> {
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

const POOL_STATE: &str = "_EX_POOL_HEAP_MANAGER_STATE";

fn e(e: SymbolError) -> String {
    e.to_string()
}

/// The segment contexts of the heaps in ExPoolState's pool nodes.
struct HeapContexts {
    contexts: HashMap<u64, SegCtx>,
    /// Their segment masks, each once.
    masks: Vec<u64>,
    /// Heaps that carry the segment heap's signature.
    signed: u32,
}

/// Read every heap of ExPoolState's `pools` pool nodes (at `state`), and
/// the segment contexts of those that carry the signature.
fn heap_contexts<M: Memory + ?Sized>(
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
fn is_segment_heap<M: Memory + ?Sized>(mem: &M, heap: u64, l: &HeapLayout) -> bool {
    KernelVa(heap).is_kernel()
        && mem
            .read_u32(KernelVa(heap.wrapping_add(l.heap_signature)))
            .ok()
            == Some(SEGMENT_HEAP_SIGNATURE as u32)
}

/// The segment context at `ctx` and its segment mask, if its unit shift,
/// segment size and descriptor count are a segment heap's: a segment is
/// 1 MiB or 16 MiB of 4 KiB or 64 KiB units.
fn read_context<M: Memory + ?Sized>(
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
fn heap_keys<M: Memory + ?Sized>(
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

#[derive(Clone, Copy)]
struct SegCtx {
    kind: Option<PoolKind>,
    unit_shift: u32,
    first_desc: u64,
}

struct Segment {
    ctx: SegCtx,
    /// Per unit index: (first unit of its range, flags); `None` outside
    /// any range.
    ranges: Vec<Option<(u16, u8)>>,
}

pub(super) struct SegHeap {
    heap_key: u64,
    lfh_key: u64,
    sig_key: u64,
    /// 24H2 derives the LFH shift from the whole VA (docs/pool-structures.md §5).
    lfh_shift_full: bool,
    contexts: HashMap<u64, SegCtx>,
    masks: Vec<u64>,
    l: HeapLayout,
    /// Contexts of heaps no pool node holds (a session's own paged pool),
    /// met through their segments' signatures and checked once, with
    /// their heap.
    met: Mutex<HashMap<At, Option<(SegCtx, u64)>>>,
    segments: Mutex<HashMap<At, Option<Arc<Segment>>>>,
    vs_subs: Mutex<HashMap<At, Option<u64>>>,
    lfh_pages: Mutex<HashMap<At, Option<Arc<Vec<u8>>>>>,
}

/// An address and the session whose space it is in (`None`: the kernel's
/// own): sessions' pools share their addresses, not their contents.
type At = (Option<u32>, u64);

/// A segment-heap verdict on a header.
pub(super) enum HeapVerdict {
    Found {
        allocator: Allocator,
        state: AllocationState,
        kind: Option<PoolKind>,
        /// Headers of one allocation share this (the VS chunk).
        key: u64,
    },
    /// In a segment, but not at a block or chunk boundary.
    Rejected,
    /// No segment this heap knows holds the address.
    NoSegment,
}

impl SegHeap {
    /// `Ok(None)`: the build uses the legacy allocator.
    fn read<M: Memory + ?Sized>(
        mem: &M,
        s: &KernelSymbols,
        kern_base: KernelVa,
        build: Option<u32>,
    ) -> Result<Option<Self>, String> {
        // From 19H1 on the pool is the segment heap: what is missing is an
        // error. Before, the build did not use it.
        let legacy_or = |why: String| {
            if build.is_some_and(|b| b >= 18362) {
                Err(why)
            } else {
                Ok(None)
            }
        };
        let Some(state_rva) = s.symbol_rva("ExPoolState") else {
            return legacy_or("the symbols lack ExPoolState".into());
        };
        let state = kern_base.0.wrapping_add(state_rva);
        let pools_f = s.field(POOL_STATE, "NumberOfPools").map_err(e)?;
        let pools = mem
            .read_u32(KernelVa(state + pools_f.offset))
            .map_err(|e| format!("ExPoolState.NumberOfPools: {e}"))?;
        // docs/pool-structures.md §5: 1809 has the types, but uses the heap only when a
        // pool node holds a signed heap.
        if !(1..=64).contains(&pools) {
            return legacy_or(format!("ExPoolState.NumberOfPools is {pools}"));
        }
        let l = HeapLayout::new(s).map_err(e)?;
        let found = heap_contexts(mem, s, state, pools, &l)?;
        if found.signed == 0 {
            return legacy_or("no pool node holds a heap with the 0xDDEEDDEE signature".into());
        }
        let (heap_key, lfh_key) = heap_keys(mem, s, kern_base, state)?;
        let new_keys = build.is_some_and(|b| b >= 26100);
        Ok(Some(SegHeap {
            heap_key,
            lfh_key,
            sig_key: if new_keys { 0 } else { SEGMENT_KEY },
            lfh_shift_full: new_keys,
            contexts: found.contexts,
            masks: found.masks,
            l,
            met: Mutex::new(HashMap::new()),
            segments: Mutex::new(HashMap::new()),
            vs_subs: Mutex::new(HashMap::new()),
            lfh_pages: Mutex::new(HashMap::new()),
        }))
    }

    /// The page segment at `seg` (in `space`), if its signature names a
    /// known context.
    fn segment<M: Memory + ?Sized>(
        &self,
        mem: &M,
        space: Option<u32>,
        seg: u64,
        mask: u64,
    ) -> Option<Arc<Segment>> {
        let at = (space, seg);
        if let Some(s) = self.segments.lock().expect("not poisoned").get(&at) {
            return s.clone();
        }
        let s = self.read_segment(mem, space, seg, mask).map(Arc::new);
        self.segments
            .lock()
            .expect("not poisoned")
            .insert(at, s.clone());
        s
    }

    fn read_segment<M: Memory + ?Sized>(
        &self,
        mem: &M,
        space: Option<u32>,
        seg: u64,
        mask: u64,
    ) -> Option<Segment> {
        let sig = mem.read_u64(KernelVa(seg + self.l.seg_signature)).ok()?;
        let owner = sig ^ self.heap_key ^ seg ^ self.sig_key;
        let ctx = match self.contexts.get(&owner) {
            Some(c) => *c,
            None => self.met_context(mem, space?, owner, mask)?,
        };
        let mut d = vec![0u8; (self.l.desc_count * self.l.desc_size) as usize];
        mem.read_virtual(KernelVa(seg + self.l.desc_array), &mut d)
            .ok()?;
        let n = self.l.desc_count;
        let mut ranges = vec![None; n as usize];
        let mut i = ctx.first_desc;
        while i < n {
            let e = &d[(i * self.l.desc_size) as usize..((i + 1) * self.l.desc_size) as usize];
            let flags = self.l.range_flags.read_u64(e).unwrap_or(0);
            let units = self.l.unit_size.read_u64(e).unwrap_or(0).max(1);
            let end = (i + units).min(n);
            for k in i..end {
                ranges[k as usize] = Some((i as u16, flags as u8));
            }
            i = end;
        }
        Some(Segment { ctx, ranges })
    }

    /// A segment in a session's space whose signature names a context no
    /// pool node holds: a session's paged pool is a segment heap of its
    /// own (19H1+), reached from `_MM_SESSION_SPACE` by a pointer whose
    /// target type the symbols do not give. The context is taken when it
    /// vouches for itself: a segment context of `mask`'s segments (the
    /// checks the pool nodes' contexts pass), inside the `SegContexts` of
    /// the `_SEGMENT_HEAP` its `Heap` member names, which carries the
    /// heap signature. A hostile segment can only name memory that passes
    /// all of these.
    fn met_context<M: Memory + ?Sized>(
        &self,
        mem: &M,
        session: u32,
        owner: u64,
        mask: u64,
    ) -> Option<SegCtx> {
        let at = (Some(session), owner);
        if let Some(c) = self.met.lock().expect("not poisoned").get(&at) {
            return c.map(|(c, _)| c);
        }
        let l = &self.l;
        let vouched = || -> Option<(SegCtx, u64)> {
            let heap = mem
                .read_u64(KernelVa(owner.wrapping_add(l.ctx_heap?)))
                .ok()?;
            let index = owner
                .checked_sub(heap.wrapping_add(l.contexts))
                .filter(|d| l.context_size > 0 && d % l.context_size == 0)?
                / l.context_size;
            if index >= l.context_count || !is_segment_heap(mem, heap, l) {
                return None;
            }
            let (ctx, own_mask) = read_context(mem, owner, Some(PoolKind::Paged), l)?;
            (own_mask == mask).then_some((ctx, heap))
        };
        let c = vouched();
        self.met.lock().expect("not poisoned").insert(at, c);
        c.map(|(c, _)| c)
    }

    /// The heaps met through a session's segments ([`SegHeap::met_context`]):
    /// (session, `_SEGMENT_HEAP`), each once, in order.
    pub(super) fn met_heaps(&self) -> Vec<(u32, u64)> {
        let met = self.met.lock().expect("not poisoned");
        let mut out: Vec<(u32, u64)> = met
            .iter()
            .filter_map(|((session, _), c)| Some(((*session)?, c.as_ref()?.1)))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Classify the header at `va` (its page's bytes are `page`, mapped at
    /// `page_va`), in `space`: `None` for the kernel's own mappings, a
    /// session's id for its session pool, read through `mem`, that
    /// session's address space.
    pub(super) fn classify<M: Memory + ?Sized>(
        &self,
        mem: &M,
        space: Option<u32>,
        va: u64,
        hit: &PageHit,
        page: &[u8],
        page_va: u64,
    ) -> HeapVerdict {
        for &mask in &self.masks {
            let seg = va & mask;
            let Some(s) = self.segment(mem, space, seg, mask) else {
                continue;
            };
            let unit = (va - seg) >> s.ctx.unit_shift;
            let Some(Some((first, flags))) = s.ranges.get(unit as usize).copied() else {
                return HeapVerdict::Rejected;
            };
            let sub = seg + ((first as u64) << s.ctx.unit_shift);
            let kind = s.ctx.kind;
            let c = Candidate {
                space,
                va,
                hit,
                page,
                page_va,
            };
            return match flags as u64 {
                RANGE_LFH => self.lfh(mem, sub, &c, kind, false),
                RANGE_VS => {
                    let mut end = unit;
                    while s
                        .ranges
                        .get(end as usize + 1)
                        .copied()
                        .flatten()
                        .map(|r| r.0)
                        == Some(first)
                    {
                        end += 1;
                    }
                    let range_end = seg + ((end + 1) << s.ctx.unit_shift);
                    self.vs(mem, sub, range_end, &c, kind)
                }
                // Large allocations and free ranges hold no pool headers.
                _ => HeapVerdict::Rejected,
            };
        }
        // No segment header to go by (paged out, or not in the dump): the
        // subsegment's own encoded fields can still vouch for the header,
        // under stricter checks since nothing bounds the subsegment.
        let c = Candidate {
            space,
            va,
            hit,
            page,
            page_va,
        };
        let lfh = self.lfh(mem, page_va, &c, None, true);
        if matches!(lfh, HeapVerdict::Found { .. }) {
            return lfh;
        }
        let vs = self.vs_chunk(mem, None, &c, None);
        if matches!(vs, HeapVerdict::Found { .. }) {
            return vs;
        }
        HeapVerdict::NoSegment
    }

    /// An LFH block: `sub`'s encoded offsets must put a block of the
    /// header's size at `va`; the bitmap says whether it is allocated.
    /// `guess`: `sub` is only the hit's page, so the subsegment must fit it.
    fn lfh<M: Memory + ?Sized>(
        &self,
        mem: &M,
        sub: u64,
        c: &Candidate<'_>,
        kind: Option<PoolKind>,
        guess: bool,
    ) -> HeapVerdict {
        let (va, hit) = (c.va, c.hit);
        // The subsegment header usually shares the hit's page; otherwise
        // read (and keep) its page.
        let cached;
        let hdr: &[u8] = if let Some(b) = c.slice(sub, PAGE_SIZE) {
            b
        } else {
            let got = {
                let mut pages = self.lfh_pages.lock().expect("not poisoned");
                pages
                    .entry((c.space, sub))
                    .or_insert_with(|| {
                        let mut b = vec![0u8; PAGE_SIZE as usize];
                        mem.read_virtual(KernelVa(sub), &mut b)
                            .ok()
                            .map(|()| Arc::new(b))
                    })
                    .clone()
            };
            let Some(p) = got else {
                return HeapVerdict::Rejected;
            };
            cached = p;
            &cached[..]
        };
        let l = &self.l;
        let Some(enc) = hdr
            .get(l.lfh_encoded as usize..l.lfh_encoded as usize + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        else {
            return HeapVerdict::Rejected;
        };
        let shift = if self.lfh_shift_full {
            (sub >> 12) as u32
        } else {
            (sub as u32) >> 12
        };
        let dec = enc ^ self.lfh_key as u32 ^ shift;
        let (block, first) = ((dec & 0xFFFF) as u64, (dec >> 16) as u64);
        let count = l.lfh_block_count.read_u64(hdr).unwrap_or(0);
        let unit = 16u64;
        if block < unit || block % unit != 0 || va < sub + first || first < l.lfh_bitmap {
            return HeapVerdict::Rejected;
        }
        if guess && first + count * block > PAGE_SIZE {
            return HeapVerdict::Rejected;
        }
        let rel = va - sub - first;
        if !rel.is_multiple_of(block)
            || rel / block >= count
            || hit.header.block_size as u64 * unit != block
        {
            return HeapVerdict::Rejected;
        }
        let idx = rel / block;
        let Some(&bits) = hdr.get((l.lfh_bitmap + 2 * idx / 8) as usize) else {
            return HeapVerdict::Rejected;
        };
        let allocated = bits >> ((2 * idx) % 8) & 1 == 1;
        HeapVerdict::Found {
            allocator: Allocator::Lfh,
            state: if allocated {
                AllocationState::Allocated
            } else {
                AllocationState::Free
            },
            kind,
            key: va,
        }
    }

    /// A VS block: `sub`'s subsegment (its size from its encoded header,
    /// kept per subsegment) must end inside the page range, and the chunk
    /// must lie in it.
    fn vs<M: Memory + ?Sized>(
        &self,
        mem: &M,
        sub: u64,
        range_end: u64,
        c: &Candidate<'_>,
        kind: Option<PoolKind>,
    ) -> HeapVerdict {
        let l = &self.l;
        let sub_end = {
            let known = self
                .vs_subs
                .lock()
                .expect("not poisoned")
                .get(&(c.space, sub))
                .copied();
            let end = match known {
                Some(e) => e,
                None => {
                    let mut b = vec![0u8; l.vs_first_chunk as usize];
                    let e = mem.read_virtual(KernelVa(sub), &mut b).ok().and_then(|()| {
                        let size = l.vs_size.read_u64(&b)?;
                        let sig = l.vs_signature.read_u64(&b)?;
                        let mask = (1u64 << l.vs_signature.bit_length.unwrap_or(15)) - 1;
                        (sig == (size ^ VS_SIGNATURE_KEY) & mask).then_some(sub + size * 16)
                    });
                    self.vs_subs
                        .lock()
                        .expect("not poisoned")
                        .insert((c.space, sub), e);
                    e
                }
            };
            match end {
                Some(e) if e <= range_end => e,
                _ => return HeapVerdict::Rejected,
            }
        };
        self.vs_chunk(mem, Some((sub + l.vs_first_chunk, sub_end)), c, kind)
    }

    /// A VS chunk: the decoded chunk header in front of the (first) pool
    /// header must hold the pool block. `bounds` is the subsegment's chunk
    /// area when known; without it the chunk must end exactly where the
    /// block does and its Allocated byte must be 0 or 1.
    fn vs_chunk<M: Memory + ?Sized>(
        &self,
        mem: &M,
        bounds: Option<(u64, u64)>,
        c: &Candidate<'_>,
        kind: Option<PoolKind>,
    ) -> HeapVerdict {
        let (va, hit) = (c.va, c.hit);
        let l = &self.l;
        let unit = 16u64;
        let first_header = if hit.role == HeaderRole::CacheAlignedSecond {
            va.wrapping_sub(hit.header.previous_size as u64 * unit)
        } else {
            va
        };
        let chunk = first_header.wrapping_sub(l.chunk_header);
        if let Some((lo, hi)) = bounds
            && (chunk < lo || chunk >= hi)
        {
            return HeapVerdict::Rejected;
        }
        let q = match c.slice(chunk, 8) {
            Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
            None => match mem.read_u64(KernelVa(chunk)) {
                Ok(q) => q,
                Err(_) => return HeapVerdict::Rejected,
            },
        };
        let dec = (q ^ chunk ^ self.heap_key).to_le_bytes();
        let size = l.chunk_size.read_u64(&dec).unwrap_or(0) * unit;
        let allocated_byte = l.chunk_allocated.read_u64(&dec).unwrap_or(0);
        // Saturating: a block that ends the top page ends at 2^64.
        let block_end = va.saturating_add(hit.header.block_size as u64 * unit);
        let end = chunk.wrapping_add(size);
        let fits = match bounds {
            Some((_, hi)) => size >= 2 * unit && end <= hi && block_end <= end,
            None => size >= 2 * unit && block_end == end && allocated_byte <= 1,
        };
        if !fits {
            return HeapVerdict::Rejected;
        }
        HeapVerdict::Found {
            allocator: Allocator::Vs,
            state: if allocated_byte & 1 == 1 {
                AllocationState::Allocated
            } else {
                AllocationState::Free
            },
            kind,
            key: chunk,
        }
    }
}

/// The header being classified: where it is, what the scan saw there, and
/// the page it is on (to read heap metadata without a translation when it
/// shares the page).
struct Candidate<'a> {
    /// The session whose space `va` is in, if any.
    space: Option<u32>,
    va: u64,
    hit: &'a PageHit,
    page: &'a [u8],
    page_va: u64,
}

impl Candidate<'_> {
    fn slice(&self, va: u64, len: u64) -> Option<&[u8]> {
        let off = va.checked_sub(self.page_va)?;
        let end = off.checked_add(len)?;
        if end > self.page.len() as u64 {
            return None;
        }
        Some(&self.page[off as usize..end as usize])
    }
}
