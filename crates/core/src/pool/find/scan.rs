//! The frame scan: physical frames in dump-file order over rayon
//! workers, each hit mapped to its virtual address and checked.

use super::*;

// ----- the frame scan ----------------------------------------------------

pub(super) struct ScanRun<'a, M: Memory + ?Sized> {
    pub(super) mem: &'a M,
    pub(super) scanner: &'a Scanner,
    pub(super) patterns: &'a [TagPattern],
    pub(super) map: &'a PageMap,
    pub(super) ctx: &'a Ctx,
    pub(super) opts: &'a FindOptions<'a>,
    pub(super) kept: AtomicUsize,
    pub(super) dropped: AtomicU64,
    pub(super) found: std::sync::Mutex<Vec<(FoundAllocation, Option<u64>)>>,
}

#[derive(Default)]
pub(super) struct ScanOut {
    /// With the key that identifies one allocation's headers.
    pub(super) found: Vec<(FoundAllocation, Option<u64>)>,
    pub(super) unmapped: Vec<UnmappedHeader>,
    pub(super) frames: u64,
    pub(super) unreadable_frames: u64,
    pub(super) headers: u64,
    pub(super) rejected: u64,
    pub(super) duplicates: u64,
}

impl ScanOut {
    fn merge(mut self, o: ScanOut) -> ScanOut {
        self.found.extend(o.found);
        self.unmapped.extend(o.unmapped);
        self.frames += o.frames;
        self.unreadable_frames += o.unreadable_frames;
        self.headers += o.headers;
        self.rejected += o.rejected;
        self.duplicates += o.duplicates;
        self
    }
}

/// Scanned ranges of the dump's map, released in batches of 16 MiB (each
/// release is a syscall and a TLB shootdown; a batch bounds what a worker
/// keeps resident). What a worker holds when it ends is released on drop.
struct Release<'d> {
    dump: Option<&'d dyn PageFile>,
    start: usize,
    end: usize,
}

impl<'d> Release<'d> {
    const BATCH: usize = 16 << 20;

    fn new(dump: Option<&'d dyn PageFile>) -> Self {
        Self {
            dump,
            start: 0,
            end: 0,
        }
    }

    fn add(&mut self, off: usize, len: usize) {
        if self.dump.is_none() {
            return;
        }
        if off != self.end {
            self.flush();
            self.start = off;
        }
        self.end = off + len;
        if self.end - self.start >= Self::BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let Some(d) = self.dump
            && self.end > self.start
        {
            d.release_file_range(self.start, self.end - self.start);
        }
        self.start = self.end;
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A run of consecutive frames, and where its bytes are in the file.
#[derive(Clone, Copy)]
struct Chunk {
    pfn: u64,
    pages: u64,
    file_offset: Option<u64>,
}

impl<M: Memory + ?Sized> ScanRun<'_, M> {
    pub(super) fn run(&self, file: Option<&dyn PageFile>) -> ScanOut {
        let per = (self.opts.chunk_bytes as u64 / PAGE_SIZE).max(1);
        let mut chunks = Vec::new();
        let mut unreadable = 0;
        match file {
            Some(d) => {
                let len = d.file_bytes().len() as u64;
                for e in d.page_runs() {
                    let backed = (len.saturating_sub(e.file_offset) / PAGE_SIZE).min(e.pages);
                    unreadable += e.pages - backed;
                    let mut i = 0;
                    while i < backed {
                        let n = per.min(backed - i);
                        chunks.push(Chunk {
                            pfn: e.pfn.0 + i,
                            pages: n,
                            file_offset: Some(e.file_offset + i * PAGE_SIZE),
                        });
                        i += n;
                    }
                }
            }
            None => {
                for (pfn, pages) in self.map.frame_runs() {
                    let mut i = 0;
                    while i < pages {
                        let n = per.min(pages - i);
                        chunks.push(Chunk {
                            pfn: pfn.0 + i,
                            pages: n,
                            file_offset: None,
                        });
                        i += n;
                    }
                }
            }
        }
        let total: u64 = chunks.iter().map(|c| c.pages * PAGE_SIZE).sum();
        if let Some(p) = self.opts.progress {
            p.start(total);
        }
        let out = chunks
            .par_iter()
            .map_init(
                || {
                    let release = file.filter(|_| self.opts.release_scanned);
                    (Vec::new(), Vec::new(), Release::new(release))
                },
                |(hits, buf, release): &mut (Vec<PageHit>, Vec<u8>, Release<'_>), c| {
                    let mut o = ScanOut::default();
                    match (file, c.file_offset) {
                        (Some(d), Some(off)) => {
                            let off = off as usize;
                            let len = (c.pages * PAGE_SIZE) as usize;
                            let bytes = &d.file_bytes()[off..off + len];
                            self.chunk(c.pfn, bytes, hits, &mut o);
                            release.add(off, len);
                        }
                        _ => self.read_chunk(*c, buf, hits, &mut o),
                    }
                    // Results join one vector as they are found: one copy
                    // of them, grown in place, instead of a vector per
                    // chunk merged (two copies at the peak).
                    if !o.found.is_empty() {
                        let mut all = self.found.lock().unwrap_or_else(|e| e.into_inner());
                        all.append(&mut o.found);
                    }
                    if let Some(p) = self.opts.progress {
                        p.advance(c.pages * PAGE_SIZE);
                    }
                    o
                },
            )
            .reduce(ScanOut::default, ScanOut::merge);
        if let Some(p) = self.opts.progress {
            p.finish();
        }
        let mut out = out;
        out.found = std::mem::take(&mut *self.found.lock().unwrap_or_else(|e| e.into_inner()));
        out.unreadable_frames += file.and_then(|f| f.pages_past_end()).unwrap_or(unreadable);
        out
    }

    /// Read a chunk through the memory interface, page by page where the
    /// whole run cannot be read.
    fn read_chunk(&self, c: Chunk, buf: &mut Vec<u8>, hits: &mut Vec<PageHit>, o: &mut ScanOut) {
        let len = (c.pages * PAGE_SIZE) as usize;
        buf.resize(len, 0);
        let pa = |pfn: u64| PhysAddr(pfn * PAGE_SIZE);
        if self.mem.read_physical(pa(c.pfn), &mut buf[..len]).is_ok() {
            let bytes = std::mem::take(buf);
            self.chunk(c.pfn, &bytes, hits, o);
            *buf = bytes;
            return;
        }
        for i in 0..c.pages {
            let page = &mut buf[..PAGE_SIZE as usize];
            if self.mem.read_physical(pa(c.pfn + i), page).is_ok() {
                let bytes = page.to_vec();
                self.chunk(c.pfn + i, &bytes, hits, o);
            } else {
                o.unreadable_frames += 1;
            }
        }
    }

    /// Scan the frames from `pfn` held in `bytes`.
    // Long: the per-hit path, kept in one loop body on purpose (it is the
    // hot loop; each step uses the ones before).
    fn chunk(&self, pfn: u64, bytes: &[u8], hits: &mut Vec<PageHit>, o: &mut ScanOut) {
        o.frames += bytes.len() as u64 / PAGE_SIZE;
        hits.clear();
        self.scanner.scan(bytes, hits);
        for hit in hits.iter() {
            let h = &hit.header;
            // The masks are an exact expansion of the patterns.
            debug_assert!(self.patterns.iter().any(|p| p.matches(PoolTag(h.tag))));
            o.headers += 1;
            if hit.role == HeaderRole::CacheAlignedFirst {
                o.duplicates += 1;
                continue;
            }
            let frame = pfn + (hit.offset as u64) / PAGE_SIZE;
            let in_page = hit.offset as u64 % PAGE_SIZE;
            let page_start = hit.offset - in_page as usize;
            let page = &bytes[page_start..page_start + PAGE_SIZE as usize];
            let pa = PhysAddr(frame * PAGE_SIZE + in_page);
            let unit = self.scanner.layout().unit() as u64;
            let header_state = match hit.state {
                HeaderState::Allocated => AllocationState::Allocated,
                HeaderState::Free => AllocationState::Free,
                HeaderState::Unknown => AllocationState::Unknown,
            };
            let Some(m) = self.map.lookup(Pfn(frame)) else {
                if self.keep() {
                    o.unmapped.push(UnmappedHeader {
                        pa,
                        tag: PoolTag(h.tag_unprotected()),
                        protected: h.protected(),
                        bytes: h.block_size as u64 * unit,
                        pool_type: h.pool_type as u32,
                        state: header_state,
                        mapped_at: None,
                    });
                }
                continue;
            };
            let page_va = m.va.0 + (frame - m.pfn.0) * PAGE_SIZE;
            let va = page_va + in_page;
            let (mut allocator, mut state, mut heap_kind, mut key) =
                (Allocator::LegacyPage, header_state, None, None);
            if self.ctx.family == AllocatorFamily::SegmentHeap {
                allocator = Allocator::Unverified;
                if let Some(heap) = &self.ctx.heap {
                    match heap.classify(self.mem, va, hit, page, page_va) {
                        HeapVerdict::Found {
                            allocator: a,
                            state: s,
                            kind,
                            key: k,
                        } => {
                            allocator = a;
                            state = s;
                            heap_kind = kind;
                            key = Some(k);
                        }
                        HeapVerdict::Rejected => {
                            o.rejected += 1;
                            continue;
                        }
                        HeapVerdict::NoSegment => {}
                    }
                }
            }
            let pool = if h.paged() {
                PoolKind::Paged
            } else if heap_kind == Some(PoolKind::NonPagedNx)
                || (heap_kind.is_none() && self.ctx.has_nx_pool && m.no_execute)
            {
                PoolKind::NonPagedNx
            } else {
                PoolKind::NonPaged
            };
            if !self.keep() {
                continue;
            }
            o.found.push((
                FoundAllocation {
                    va: KernelVa(va + unit),
                    header: Some(KernelVa(va)),
                    pa: Some(pa),
                    tag: PoolTag(h.tag_unprotected()),
                    protected: h.protected(),
                    bytes: h.block_size as u64 * unit,
                    pool,
                    session: h.session(),
                    pool_type: h.pool_type as u32,
                    state,
                    allocator,
                    in_dump: true,
                },
                key,
            ));
        }
    }

    /// Room for one more result?
    fn keep(&self) -> bool {
        if self.kept.fetch_add(1, Ordering::Relaxed) < self.opts.max_results {
            true
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}
