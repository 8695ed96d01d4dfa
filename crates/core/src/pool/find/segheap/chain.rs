//! A VS subsegment's chunk chain: its chunks laid end to end from the
//! first one (+0x30), each by its decoded size (docs/pool-structures.md
//! §5, as MemProcFS walks it). Walked once per subsegment, it says where
//! chunks start, so sixteen bytes of allocation data that happen to
//! decode as a chunk header are not taken for one, and which chunk spans
//! a page start, where a pool header that would have crossed a page was
//! moved.

use super::*;

/// Subsegments past this many bytes keep no chunk starts (a hostile size;
/// a page segment is 1 MiB): their headers get the in-front check alone.
const MAX_CHAIN_BYTES: u64 = 16 << 20;

/// The chunks of one VS subsegment whose chunk area is `lo..hi`, as far as
/// its chain could be walked.
pub(super) struct VsChain {
    lo: u64,
    /// The walk stopped here (a header that did not decode to a chunk in
    /// the subsegment, or a page that could not be read): chunk starts
    /// below it are known, past it nothing is.
    walked_to: u64,
    /// One bit per 16 bytes from `lo`: a chunk starts there.
    starts: Vec<u64>,
    /// The chunks that span a page start, in address order.
    across: Vec<ChunkSpan>,
}

impl VsChain {
    /// Walk the chain of `lo..hi` through `mem`, a page at a time.
    fn walk<M: Memory + ?Sized>(heap: &SegHeap, mem: &M, (lo, hi): (u64, u64)) -> VsChain {
        let units = hi.saturating_sub(lo).div_ceil(16) as usize;
        let mut chain = VsChain {
            lo,
            walked_to: lo,
            starts: Vec::new(),
            across: Vec::new(),
        };
        if hi.saturating_sub(lo) > MAX_CHAIN_BYTES {
            return chain;
        }
        chain.starts = vec![0u64; units.div_ceil(64)];
        let mut page = vec![0u8; PAGE_SIZE as usize];
        let mut page_va = None;
        let mut cur = lo;
        while cur < hi && hi - cur >= 0x20 {
            let this_page = cur & !(PAGE_SIZE - 1);
            if page_va != Some(this_page) {
                if mem.read_virtual(KernelVa(this_page), &mut page).is_err() {
                    break;
                }
                page_va = Some(this_page);
            }
            let off = (cur - this_page) as usize;
            let Some(q) = page
                .get(off..off + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            else {
                break;
            };
            let (size, allocated_byte) = heap.decode_chunk(cur, q);
            if size < 0x20 || size > hi - cur || allocated_byte > 1 {
                break;
            }
            let unit = ((cur - lo) / 16) as usize;
            chain.starts[unit / 64] |= 1 << (unit % 64);
            let end = cur + size;
            if cur / PAGE_SIZE != (end - 1) / PAGE_SIZE {
                chain.across.push((cur, size, allocated_byte));
            }
            cur = end;
        }
        chain.walked_to = cur;
        chain
    }

    /// Whether a chunk starts at `chunk`: `None` where the walk did not
    /// reach.
    pub(super) fn starts_at(&self, chunk: u64) -> Option<bool> {
        if chunk < self.lo || chunk >= self.walked_to {
            return None;
        }
        let unit = ((chunk - self.lo) / 16) as usize;
        Some(chunk.is_multiple_of(16) && self.starts[unit / 64] >> (unit % 64) & 1 == 1)
    }

    /// The chunk that holds the page start `page` past its first bytes.
    pub(super) fn across(&self, page: u64) -> Option<ChunkSpan> {
        self.across
            .iter()
            .find(|(start, size, _)| *start < page && page < start + size)
            .copied()
    }
}

impl SegHeap {
    /// The chain of the VS subsegment whose chunks lie in `lo..hi` (in
    /// `space`), walked on first use and kept.
    pub(super) fn vs_chain<M: Memory + ?Sized>(
        &self,
        mem: &M,
        space: Option<u32>,
        bounds: (u64, u64),
    ) -> Arc<VsChain> {
        let at = (space, bounds.0);
        if let Some(c) = self.vs_chains.lock().expect("not poisoned").get(&at) {
            return Arc::clone(c);
        }
        let chain = Arc::new(VsChain::walk(self, mem, bounds));
        self.vs_chains
            .lock()
            .expect("not poisoned")
            .entry(at)
            .or_insert(chain)
            .clone()
    }
}
