//! The segment heap's own metadata (19H1+): whether a header found in a
//! frame is a live LFH block, a VS chunk or neither.

use super::*;

mod blocks;
mod chain;
mod keys;
mod layout;

use layout::{HeapLayout, POOL_STATE, e, heap_contexts, heap_keys, is_segment_heap, read_context};

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
        match SegHeap::read(mem, syms, kern_base, build, warnings) {
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
const VS_SIGNATURE_KEY: u64 = 0x2BED;

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
    /// How the keys are mixed into segment signatures and LFH offsets.
    derivation: keys::Derivation,
    contexts: HashMap<u64, SegCtx>,
    masks: Vec<u64>,
    l: HeapLayout,
    /// Contexts of heaps no pool node holds (a session's own paged pool),
    /// met through their segments' signatures and checked once, with
    /// their heap.
    met: Mutex<HashMap<At, Option<(SegCtx, u64)>>>,
    segments: Mutex<HashMap<At, Option<Arc<Segment>>>>,
    vs_subs: Mutex<HashMap<At, Option<u64>>>,
    /// Per VS subsegment (by its first chunk), its chunk chain.
    vs_chains: Mutex<HashMap<At, Arc<chain::VsChain>>>,
    lfh_pages: Mutex<HashMap<At, Option<Arc<Vec<u8>>>>>,
}

/// A VS chunk spanning a page start: its address, bytes and Allocated
/// byte.
type ChunkSpan = (u64, u64, u64);

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
        warnings: &mut Vec<String>,
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
        let probed = keys::probe(
            mem,
            build,
            &keys::ProbeInput {
                heap_key,
                lfh_key,
                contexts: &found.contexts,
                l: &l,
                list_head: s
                    .field("_HEAP_SEG_CONTEXT", "SegmentListHead")
                    .ok()
                    .map(|f| f.offset),
                list_entry: s
                    .field("_HEAP_PAGE_SEGMENT", "ListEntry")
                    .ok()
                    .map(|f| f.offset),
            },
        );
        warnings.extend(probed.warnings);
        Ok(Some(SegHeap {
            heap_key,
            lfh_key,
            derivation: probed.derivation,
            contexts: found.contexts,
            masks: found.masks,
            l,
            met: Mutex::new(HashMap::new()),
            segments: Mutex::new(HashMap::new()),
            vs_subs: Mutex::new(HashMap::new()),
            vs_chains: Mutex::new(HashMap::new()),
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
        let owner = sig ^ self.heap_key ^ seg ^ self.derivation.signature_key;
        let ctx = match self.contexts.get(&owner) {
            Some(c) => *c,
            None => self.met_context(mem, space?, owner, mask)?,
        };
        let ranges = keys::read_ranges(mem, &self.l, seg, ctx.first_desc)?;
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
        let c = Candidate {
            space,
            va,
            hit,
            page,
            page_va,
        };
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
