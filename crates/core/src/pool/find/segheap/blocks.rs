//! The verdicts on one header: an LFH block of its subsegment, or a VS
//! chunk of its subsegment (docs/pool-structures.md §5).

use super::*;

impl SegHeap {
    /// An LFH block: `sub`'s encoded offsets must put a block of the
    /// header's size at `va`; the bitmap says whether it is allocated.
    /// `guess`: `sub` is only the hit's page, so the subsegment must fit it.
    pub(super) fn lfh<M: Memory + ?Sized>(
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
        let (block, first) = keys::decode_lfh(enc, self.lfh_key, self.derivation.lfh_shift(sub));
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
    pub(super) fn vs<M: Memory + ?Sized>(
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
    /// block does and its Allocated byte must be 0 or 1. With bounds, the
    /// chunk must also be a link of the subsegment's chunk chain (where
    /// the chain could be walked), and a header at a page's start with no
    /// chunk header in front of it may have moved there: the chunk the
    /// chain puts across that page start must hold it, to the chunk's end.
    pub(super) fn vs_chunk<M: Memory + ?Sized>(
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
        // Saturating: a block that ends the top page ends at 2^64.
        let block_end = va.saturating_add(hit.header.block_size as u64 * unit);
        let in_front = || {
            if let Some((lo, hi)) = bounds
                && (chunk < lo || chunk >= hi)
            {
                return None;
            }
            let q = match c.slice(chunk, 8) {
                Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
                None => mem.read_u64(KernelVa(chunk)).ok()?,
            };
            let (size, allocated_byte) = self.decode_chunk(chunk, q);
            let end = chunk.wrapping_add(size);
            let fits = match bounds {
                Some((_, hi)) => size >= 2 * unit && end <= hi && block_end <= end,
                None => size >= 2 * unit && block_end == end && allocated_byte <= 1,
            };
            if !fits {
                return None;
            }
            // Allocation data can decode as a chunk header too: where the
            // chain was walked, the chunk must be one of its links.
            if let Some(b) = bounds
                && self.vs_chain(mem, c.space, b).starts_at(chunk) == Some(false)
            {
                return None;
            }
            Some((chunk, allocated_byte))
        };
        // A pool header that would have crossed a page starts the next
        // page instead, inside its chunk: no chunk header is in front of
        // it, and only the subsegment's chunk chain finds its chunk.
        let moved = || {
            let (lo, hi) = bounds?;
            if first_header % PAGE_SIZE != 0 {
                return None;
            }
            let (start, size, allocated_byte) =
                self.vs_chain(mem, c.space, (lo, hi)).across(first_header)?;
            // The first page start after the chunk header, and a block
            // that runs to the chunk's end (or its last 16 bytes, as
            // MemProcFS allows).
            let end = start + size;
            let first_page = (start / PAGE_SIZE + 1) * PAGE_SIZE;
            (first_header == first_page && block_end <= end && end - block_end <= unit)
                .then_some((start, allocated_byte))
        };
        let Some((chunk, allocated_byte)) = in_front().or_else(moved) else {
            return HeapVerdict::Rejected;
        };
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

    /// A VS chunk header's `q` (as memory holds it, at `chunk`), decoded:
    /// the chunk's bytes and its Allocated byte.
    pub(super) fn decode_chunk(&self, chunk: u64, q: u64) -> (u64, u64) {
        let dec = (q ^ chunk ^ self.heap_key).to_le_bytes();
        let size = self.l.chunk_size.read_u64(&dec).unwrap_or(0) * 16;
        let allocated_byte = self.l.chunk_allocated.read_u64(&dec).unwrap_or(0);
        (size, allocated_byte)
    }
}
