//! The frame scan: physical frames in dump-file order over rayon
//! workers, each hit mapped to its virtual address and checked.

use super::*;
use crate::memory::ProcessSpace;

// ----- the frame scan ----------------------------------------------------

pub(super) struct ScanRun<'a, M: Memory + ?Sized> {
    pub(super) mem: &'a M,
    pub(super) scanner: &'a Scanner,
    pub(super) patterns: &'a [TagPattern],
    pub(super) map: &'a PageMap,
    /// The sessions whose pools `map` holds, with the page tables each is
    /// read through.
    pub(super) sessions: &'a [SessionPoolMap],
    pub(super) ctx: &'a Ctx,
    pub(super) opts: &'a FindOptions<'a>,
    pub(super) kept: AtomicUsize,
    pub(super) dropped: AtomicU64,
    pub(super) found: &'a Found<'a>,
    /// Bytes scanned so far, to release the dump's other pages now and
    /// then ([`ScanRun::release_metadata`]).
    pub(super) scanned: AtomicU64,
}

/// The scan's counts and unmapped headers; the allocations go to
/// [`ScanRun::found`] as they are found.
#[derive(Default)]
pub(super) struct ScanOut {
    pub(super) unmapped: Vec<UnmappedHeader>,
    pub(super) frames: u64,
    pub(super) unreadable_frames: u64,
    pub(super) headers: u64,
    pub(super) rejected: u64,
    pub(super) duplicates: u64,
    /// The allocations found once `max_results` were kept: counted, not
    /// listed.
    pub(super) past_cap: Tally,
}

impl ScanOut {
    fn merge(mut self, o: ScanOut) -> ScanOut {
        self.unmapped.extend(o.unmapped);
        self.frames += o.frames;
        self.unreadable_frames += o.unreadable_frames;
        self.headers += o.headers;
        self.rejected += o.rejected;
        self.duplicates += o.duplicates;
        add_tally(&mut self.past_cap, o.past_cap);
        self
    }
}

/// Scanned ranges of the dump's map, released in batches of 16 MiB (each
/// release is a syscall and a TLB shootdown; a batch bounds what a worker
/// keeps resident). What a worker holds when it ends is released on drop.
#[derive(Default)]
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

/// What one scan worker reuses from chunk to chunk.
#[derive(Default)]
struct Worker<'d> {
    hits: Vec<PageHit>,
    /// Chunks read through the memory interface.
    buf: Vec<u8>,
    release: Release<'d>,
    /// Allocations not yet handed on, with their keys.
    batch: Vec<(FoundAllocation, Option<u64>)>,
    /// The same without the keys, for a sink.
    plain: Vec<FoundAllocation>,
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
                || Worker {
                    release: Release::new(file.filter(|_| self.opts.release_scanned)),
                    ..Worker::default()
                },
                |w, c| {
                    let mut o = ScanOut::default();
                    if self.found.stopped() {
                        return o;
                    }
                    match (file, c.file_offset) {
                        (Some(d), Some(off)) => {
                            let off = off as usize;
                            let len = (c.pages * PAGE_SIZE) as usize;
                            let bytes = &d.file_bytes()[off..off + len];
                            self.chunk(c.pfn, bytes, w, &mut o);
                            w.release.add(off, len);
                            if self.opts.release_scanned {
                                self.release_metadata(d, len as u64);
                            }
                        }
                        _ => self.read_chunk(*c, w, &mut o),
                    }
                    self.found.deliver(&mut w.batch, &mut w.plain);
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
        out.unreadable_frames += file.and_then(|f| f.pages_past_end()).unwrap_or(unreadable);
        out
    }

    /// Every so often, drop the whole dump's map from the process. The
    /// scan releases what it scanned as it goes, but each header's checks
    /// read page tables and heap metadata elsewhere in the dump, and every
    /// such read maps the kernel's fault-around window (64 KiB): without
    /// this, the resident set grows with the number of headers found. The
    /// pages stay in the page cache; what is still in use faults back in.
    fn release_metadata(&self, d: &dyn PageFile, bytes: u64) {
        const EVERY: u64 = 64 << 20;
        let before = self.scanned.fetch_add(bytes, Ordering::Relaxed);
        if (before + bytes) / EVERY != before / EVERY {
            d.release_file_range(0, d.file_bytes().len());
        }
    }

    /// Read a chunk through the memory interface, page by page where the
    /// whole run cannot be read.
    fn read_chunk(&self, c: Chunk, w: &mut Worker<'_>, o: &mut ScanOut) {
        let len = (c.pages * PAGE_SIZE) as usize;
        let mut buf = std::mem::take(&mut w.buf);
        buf.resize(len, 0);
        let pa = |pfn: u64| PhysAddr(pfn * PAGE_SIZE);
        if self.mem.read_physical(pa(c.pfn), &mut buf[..len]).is_ok() {
            self.chunk(c.pfn, &buf, w, o);
            w.buf = buf;
            return;
        }
        for i in 0..c.pages {
            let page = &mut buf[..PAGE_SIZE as usize];
            if self.mem.read_physical(pa(c.pfn + i), page).is_ok() {
                self.chunk(c.pfn + i, page, w, o);
            } else {
                o.unreadable_frames += 1;
            }
        }
        w.buf = buf;
    }

    /// Scan the frames from `pfn` held in `bytes`.
    // Long: the per-hit path, kept in one loop body on purpose (it is the
    // hot loop; each step uses the ones before).
    fn chunk(&self, pfn: u64, bytes: &[u8], w: &mut Worker<'_>, o: &mut ScanOut) {
        o.frames += bytes.len() as u64 / PAGE_SIZE;
        let mut hits = std::mem::take(&mut w.hits);
        hits.clear();
        self.scanner.scan(bytes, &mut hits);
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
            // A header in the last bytes of the address space has no data
            // after it: not an allocation.
            let Some(data_va) = va.checked_add(unit) else {
                o.rejected += 1;
                continue;
            };
            let (mut allocator, mut state, mut heap_kind, mut key) =
                (Allocator::LegacyPage, header_state, None, None);
            if self.ctx.family == AllocatorFamily::SegmentHeap {
                allocator = Allocator::Unverified;
                if let Some(heap) = &self.ctx.heap {
                    let verdict = match self.session_space(m.session) {
                        Some(space) => heap.classify(&space, m.session, va, hit, page, page_va),
                        None => heap.classify(self.mem, None, va, hit, page, page_va),
                    };
                    match verdict {
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
            // Each allocation once, by its second header, also when its
            // two headers are on two pages: so that what is counted past
            // `max_results` is not counted twice either.
            if key.is_some()
                && in_page + h.block_size as u64 * unit == PAGE_SIZE
                && hit.role == HeaderRole::Single
                && self.pair_continues(m.session, va, h)
            {
                o.duplicates += 1;
                continue;
            }
            let a = FoundAllocation {
                va: KernelVa(data_va),
                header: Some(KernelVa(va)),
                pa: Some(pa),
                tag: PoolTag(h.tag_unprotected()),
                protected: h.protected(),
                bytes: h.block_size as u64 * unit,
                pool,
                session: h.session(),
                session_id: m.session,
                pool_type: h.pool_type as u32,
                state,
                allocator,
                in_dump: true,
            };
            if !self.found.is_streamed() && !self.keep() {
                tally(&mut o.past_cap, &a);
                continue;
            }
            if w.batch.len() >= BATCH {
                self.found.deliver(&mut w.batch, &mut w.plain);
            }
            w.batch.push((a, key));
        }
        w.hits = hits;
    }

    /// Whether the header at `va`, whose block ends at its page's end, is
    /// the first of a cache-aligned pair whose second header starts the
    /// next page: the same test the scanner makes when both are on one
    /// page ([`pooldump_scan::check`]). The sorted search finds such pairs
    /// by their shared key once everything is collected; a streaming one
    /// cannot wait, so it looks at the next page and reports the pair
    /// once, by its second header.
    fn pair_continues(&self, session: Option<u32>, va: u64, h: &pooldump_scan::PoolHeader) -> bool {
        use pooldump_scan::header::pool_type::IN_USE;
        let layout = self.scanner.layout();
        // A block that ends the top page has no next page.
        let Some(next_va) = va.checked_add(h.block_size as u64 * layout.unit() as u64) else {
            return false;
        };
        let mut b = [0u8; 64];
        let Some(b) = b.get_mut(..layout.size) else {
            return false;
        };
        let read = match self.session_space(session) {
            Some(space) => space.read_virtual(KernelVa(next_va), b),
            None => self.mem.read_virtual(KernelVa(next_va), b),
        };
        if read.is_err() {
            return false;
        }
        let n = layout.decode(b);
        n.cache_aligned()
            && n.previous_size == h.block_size
            && n.tag_unprotected() == h.tag_unprotected()
            && n.pool_type & IN_USE != 0
    }

    /// The address space of session `id`'s pool: the page tables it was
    /// mapped through.
    fn session_space(&self, id: Option<u32>) -> Option<ProcessSpace<'_, M>> {
        let id = id?;
        let s = self.sessions.iter().find(|s| s.session_id == id)?;
        Some(ProcessSpace::new(self.mem, s.dtb))
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
