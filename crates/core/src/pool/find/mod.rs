//! `!poolfind` at memory bandwidth: every allocation carrying a set of
//! tags, from three sources as `!poolfind` combines them (docs/pool-structures.md §3, §4, §5, §6):
//!
//! 1. the big-page table, the only place the tag of a segment-heap
//!    allocation of 0xFE1 bytes or more exists (it has no header);
//! 2. `_POOL_HEADER`s in memory: physical frames scanned in dump-file
//!    order by [`pooldump_scan`] over rayon workers, each hit mapped to its
//!    kernel virtual address through one walk of the page tables
//!    ([`PageMap`], restricted to the pool regions from MiVisibleState or
//!    the legacy pool variables where the symbols have them), validated
//!    with the build's allocator rules: legacy chaining (Win7-1809) or the
//!    segment heap's own metadata (19H1+: the page segment's signature,
//!    its range descriptors, the LFH block bitmap or the VS chunk header,
//!    docs/pool-structures.md §5), which alone says whether a header is live;
//! 3. headers in frames no pool address maps, reported apart (possibly
//!    freed memory), never mixed in.
//!
//! The tag tracker's live counts come alongside, so a user sees what the
//! dump does not hold (paged-out pool, missing frames).
//!
//! ```no_run
//! use pooldump_core::pool::TagPattern;
//! use pooldump_core::pool::find::{self, FindOptions};
//! # fn demo(t: &pooldump_core::Target<pooldump_core::CrashDump>) -> Result<(), Box<dyn std::error::Error>> {
//! let tags = [TagPattern::parse("Leak")?, TagPattern::parse("Lk0?")?];
//! let r = t.find(&tags, &FindOptions::default())?;
//! for a in r.allocations.iter().filter(|a| a.state == find::AllocationState::Allocated) {
//!     println!("{} {} {:#x} {}", a.va, a.tag, a.bytes, a.allocator);
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use pooldump_scan::{
    BitField, HeaderLayout, HeaderRole, HeaderState, PageHit, Rules, ScanError, Scanner, TagMask,
    TagSet,
};
use rayon::prelude::*;
use serde::Serialize;

/// The candidate engines, re-exported for callers of this module.
pub use pooldump_scan::Engine;

use super::PoolClass;
use super::bigpool::{BigPoolOptions, read_big_pool};
use super::filter::TagPattern;
use super::session::read_session_pool;
use super::tracker::{TrackerOptions, read_pool_usage};
use crate::addr::{KernelVa, PAGE_SIZE, Pfn, PhysAddr};
use crate::memory::{Memory, MemoryExt, PageFile};
use crate::pagemap::{PageMap, PageMapOptions, PageMapStats, VaRange};
use crate::processes::{ProcessList, ProcessWalkLimits, walk_processes};
use crate::symbols::{Field, KernelSymbols, SymbolError};
use crate::tag::PoolTag;

/// How to search.
#[derive(Clone)]
pub struct FindOptions<'a> {
    /// How candidates are found (docs/performance.md compares them).
    pub engine: Engine,
    /// Scan threads; `None` uses rayon's global pool (one per core).
    pub threads: Option<usize>,
    /// Bytes of consecutive frames one worker scans at a time.
    pub chunk_bytes: usize,
    /// Drop each run of a memory-mapped dump from the process once it is
    /// scanned, and the pages the header checks read elsewhere in it every
    /// 64 MiB scanned, so the resident set stays small however big the
    /// dump is and however many headers it holds.
    pub release_scanned: bool,
    /// Read the big-page table.
    pub big_pool: bool,
    /// Read the tag tracker for the per-tag live counts.
    pub tracker: bool,
    /// Bounds on the page-table walk.
    pub pagemap: PageMapOptions,
    /// Stop keeping headers after this many (a hostile dump can be full
    /// of them): the allocations found past it are counted in the per-tag
    /// totals and in `scan.dropped`, not kept, and a warning says so. A
    /// streaming search ([`crate::Target::find_with`]) keeps no
    /// allocations: for it this bounds only the unmapped headers.
    pub max_results: usize,
    /// Told how many bytes the frame scan will read and has read (a
    /// progress bar); None: nothing is told.
    pub progress: Option<&'a dyn ScanProgress>,
}

impl Default for FindOptions<'_> {
    fn default() -> Self {
        Self {
            engine: Engine::Auto,
            threads: None,
            chunk_bytes: 4 << 20,
            release_scanned: false,
            big_pool: true,
            tracker: true,
            pagemap: PageMapOptions::default(),
            max_results: 10_000_000,
            progress: None,
        }
    }
}

/// Progress of the frame scan, in bytes (called from the scan threads).
pub trait ScanProgress: Sync {
    /// The scan starts and will read `total_bytes`.
    fn start(&self, total_bytes: u64);
    /// `bytes` more were read (from any thread).
    fn advance(&self, bytes: u64);
    /// The scan is over.
    fn finish(&self);
}

/// Why nothing could be searched.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// No tag pattern was given.
    #[error("no tag to search for")]
    NoPatterns,
    /// A pattern (as given) that no four-character tag matches.
    #[error("tag pattern `{0}` matches no four-character tag")]
    EmptyPattern(String),
    /// The kernel's symbols lack _POOL_HEADER or one of its members.
    #[error("the symbols lack the _POOL_HEADER layout: {0}")]
    Symbol(#[from] SymbolError),
    /// The scanner refused the tags or the header layout.
    #[error("cannot scan with {what}: {source}")]
    Scan {
        /// What it was given (`the tags Leak, Ab*`, `the _POOL_HEADER of ...`).
        what: String,
        /// The scanner's reason.
        #[source]
        source: ScanError,
    },
    /// The scan's thread pool could not be built.
    #[error("cannot start {threads} scan threads: {why}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// The OS's or rayon's reason.
        why: String,
    },
    /// The [`FindSink`] returned `Break`.
    #[error("the receiver of the allocations stopped the search")]
    Stopped,
}

mod big;
mod collect;
mod contents;
mod page;
mod regions;
mod report;
mod scan;
mod segheap;
mod sessions;
mod sink;

use big::{big_entry, big_pool_matches, big_table, session_big_matches, session_big_table};
use collect::{finish_found, name_session_heaps};
pub use contents::*;
pub use page::*;
use regions::{map_pool, missing_frames, pool_regions};
pub use report::*;
use scan::{ScanOut, ScanRun};
use segheap::{Ctx, HeapVerdict};
pub use sessions::{SessionPoolMap, map_session_pools};
pub use sink::FindSink;
use sink::{BATCH, Found};

/// Find every allocation whose tag matches one of `patterns`
/// ([`crate::Target::find`] is the front door). `build` (the dump header's,
/// or the live target's) picks the segment heap's key derivations.
/// Physical memory is scanned in bulk from the source's
/// [`Memory::page_file`] when it has one (a dump's pages in file order),
/// else frame run by frame run through [`Memory::read_physical`].
///
/// With a `sink`, the allocations go to it as the scan finds them instead
/// of being collected and sorted ([`crate::Target::find_with`]): memory
/// does not grow with the number of results, the report's `allocations`
/// stay empty and its per-tag totals count what the sink received.
// Long: the steps of one search in order, each a call; splitting it would
// only pass their results around.
pub fn find_allocations<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    build: Option<u32>,
    patterns: &[TagPattern],
    opts: &FindOptions<'_>,
    sink: Option<&dyn FindSink>,
) -> Result<FindReport, FindError> {
    let found = match sink {
        Some(sink) => Found::streamed(sink),
        None => Found::Kept(Mutex::default()),
    };
    let file = mem.page_file();
    let mut warnings = Vec::new();
    let (masks, scanner, ctx) = scan_setup(
        mem,
        syms,
        kern_base,
        build,
        patterns,
        opts.engine,
        &mut warnings,
    )?;
    // One membership test for the big-page table and the tracker too: a
    // 64-tag search must not cost 64 pattern matches per entry.
    let wanted = TagSet::new(&masks);

    // Where pool lives, and which address maps each frame.
    let (regions, region_notes) = pool_regions(mem, syms, kern_base);
    warnings.extend(region_notes);
    let ranges: Option<Vec<VaRange>> = regions
        .as_ref()
        .map(|r| r.iter().map(|r| r.range).collect());
    // The processes: a session's pool is read through their page tables,
    // and its tracker too.
    let procs = walk_processes(mem, syms, kern_base, &ProcessWalkLimits::default());
    let (map, mut sessions) = map_pool(mem, syms, regions.as_deref(), &procs, opts, &mut warnings);
    warnings.extend(page_map_notes(&map));

    let (big, big_pool) = if opts.big_pool {
        let release = file.filter(|_| opts.release_scanned);
        let (mut big, scan) =
            big_pool_matches(mem, syms, kern_base, &wanted, release, &mut warnings);
        big.extend(session_big_matches(
            mem,
            syms,
            &mut sessions,
            &wanted,
            &mut warnings,
        ));
        (big, scan)
    } else {
        (Vec::new(), None)
    };

    let threads = opts.threads.unwrap_or_else(rayon::current_num_threads);
    let (out, dropped, scan_seconds) = scan_frames(
        mem,
        file,
        &scanner,
        patterns,
        &map,
        &sessions,
        &ctx,
        opts,
        &found,
        &mut warnings,
    )?;
    let (found, mut totals, duplicate_headers) = finish_found(found, big, out.duplicates)?;
    add_tally(&mut totals, out.past_cap);
    let met = ctx.heap.as_ref().map(|h| h.met_heaps()).unwrap_or_default();
    name_session_heaps(&mut sessions, met, &mut warnings);

    let mut unmapped = out.unmapped;
    unmapped.sort_by_key(|u| u.pa);
    if !unmapped.is_empty() && ranges.is_some() {
        locate_unmapped(mem, &mut unmapped, &opts.pagemap);
    }

    let mapped_frames_not_in_dump = file.map(|f| missing_frames(f, &map));
    if let Some(n) = mapped_frames_not_in_dump.filter(|n| *n > 0) {
        warnings.push(format!(
            "{n} frame(s) mapped in the pool regions are not in the dump: allocations there are not found"
        ));
    }

    let tracker = if opts.tracker {
        tracker_counts(
            mem,
            syms,
            kern_base,
            procs.as_ref().ok(),
            &wanted,
            &mut warnings,
        )
    } else {
        None
    };
    let tags = summarize(patterns, totals, tracker.as_ref());

    Ok(FindReport {
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        allocator: ctx.family,
        allocations: found,
        unmapped,
        tags,
        big_pool,
        regions,
        sessions,
        scan: ScanStats {
            engine: scanner.engine().name(),
            threads,
            frames_scanned: out.frames,
            bytes_scanned: out.frames * PAGE_SIZE,
            unreadable_frames: out.unreadable_frames,
            mapped_frames_not_in_dump,
            paged_out_pages: map.stats.not_present_pages,
            headers: out.headers,
            rejected_by_heap: out.rejected,
            duplicate_headers,
            dropped,
            scan_seconds,
        },
        pagemap: map.stats.clone(),
        warnings: crate::warning::Warning::all(crate::warning::WarningKind::Find, warnings),
    })
}

/// The scanner's masks for `patterns`, the scanner (the build's
/// `_POOL_HEADER` and allocator rules) and the allocator context.
fn scan_setup<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    build: Option<u32>,
    patterns: &[TagPattern],
    engine: Engine,
    warnings: &mut Vec<String>,
) -> Result<(Vec<TagMask>, Scanner, Ctx), FindError> {
    let masks = all_masks(patterns)?;
    let layout = header_layout(syms)?;
    let ctx = Ctx::new(mem, syms, kern_base, build, warnings);
    let rules = match ctx.family {
        AllocatorFamily::Legacy => Rules::Legacy,
        AllocatorFamily::SegmentHeap => Rules::SegmentHeap,
    };
    let scanner =
        Scanner::new(&masks, layout, rules, engine).map_err(|source| FindError::Scan {
            what: format!("the tags {}", join(patterns)),
            source,
        })?;
    Ok((masks, scanner, ctx))
}

/// Every header (any tag) in the frames `map` names, read through
/// [`Memory::read_physical`] and checked as [`find_allocations`] checks
/// them, deduplicated and sorted as it sorts them: `!pool`'s scan of one
/// page and the one before it ([`page::pool_at`]); frames `map` gives to
/// a session in `sessions` are checked through its page tables. Returns
/// them, the kernel's allocator family and the sessions' heaps met
/// ([`SessionPoolMap::heap`]).
fn scan_mapped<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    build: Option<u32>,
    map: &PageMap,
    sessions: &[SessionPoolMap],
    warnings: &mut Vec<String>,
) -> Result<PageScan, FindError> {
    let any = [TagPattern::parse("*").expect("`*` is a pattern")];
    let opts = FindOptions {
        big_pool: false,
        tracker: false,
        ..FindOptions::default()
    };
    let (_, scanner, ctx) = scan_setup(mem, syms, kern_base, build, &any, opts.engine, warnings)?;
    let found = Found::Kept(Mutex::default());
    // No page file: only the frames the map names are read.
    let (out, _, _) = scan_frames(
        mem, None, &scanner, &any, map, sessions, &ctx, &opts, &found, warnings,
    )?;
    let (found, _, _) = finish_found(found, Vec::new(), out.duplicates)?;
    let heaps = ctx.heap.as_ref().map(|h| h.met_heaps()).unwrap_or_default();
    Ok(PageScan {
        found,
        family: ctx.family,
        heaps,
    })
}

/// What [`scan_mapped`] found.
pub(super) struct PageScan {
    pub(super) found: Vec<FoundAllocation>,
    pub(super) family: AllocatorFamily,
    /// (session, `_SEGMENT_HEAP`) met through the sessions' segments.
    pub(super) heaps: Vec<(u32, u64)>,
}

/// The frame scan, on `opts.threads` threads, its allocations going to
/// `found`: its counts, how many results past `max_results`
/// it dropped, and its time in seconds. With `file` (the source's
/// [`Memory::page_file`]) every frame of it is scanned in bulk, else the
/// frames `map` names, read through [`Memory::read_physical`]. A frame
/// `map` gives to a session in `sessions` is checked through that
/// session's page tables.
#[allow(clippy::too_many_arguments)]
fn scan_frames<M: Memory + ?Sized>(
    mem: &M,
    file: Option<&dyn PageFile>,
    scanner: &Scanner,
    patterns: &[TagPattern],
    map: &PageMap,
    sessions: &[SessionPoolMap],
    ctx: &Ctx,
    opts: &FindOptions<'_>,
    found: &Found<'_>,
    warnings: &mut Vec<String>,
) -> Result<(ScanOut, u64, f64), FindError> {
    let scan = ScanRun {
        mem,
        scanner,
        patterns,
        map,
        sessions,
        ctx,
        opts,
        kept: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
        found,
        scanned: AtomicU64::new(0),
    };
    let started = Instant::now();
    let out = match opts.threads {
        Some(n) if n != rayon::current_num_threads() => thread_pool(n)?.install(|| scan.run(file)),
        _ => scan.run(file),
    };
    let seconds = started.elapsed().as_secs_f64();
    let dropped = scan.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        warnings.push(format!(
            "{dropped} more header(s) matched once {} were kept (the first the scan met, so which ones varies from run to run): the allocations among them are counted in the per-tag totals, none is listed",
            opts.max_results
        ));
    }
    if out.unreadable_frames > 0 {
        warnings.push(format!(
            "{} frame(s) the dump describes could not be read (truncated or damaged file): what they hold is missing",
            out.unreadable_frames
        ));
    }
    Ok((out, dropped, seconds))
}

/// Frames outside the pool map may still be mapped elsewhere in the
/// kernel: say where, so only truly unmapped frames read as freed.
fn locate_unmapped<M: Memory + ?Sized>(
    mem: &M,
    unmapped: &mut [UnmappedHeader],
    opts: &PageMapOptions,
) {
    let all = PageMap::walk(mem, None, opts);
    for u in unmapped {
        u.mapped_at = all
            .va_of(u.pa.pfn())
            .map(|va| KernelVa(va.0 + u.pa.page_offset()));
    }
}

/// Every pattern's masks; a pattern that expands to none is an error.
fn all_masks(patterns: &[TagPattern]) -> Result<Vec<TagMask>, FindError> {
    if patterns.is_empty() {
        return Err(FindError::NoPatterns);
    }
    let mut masks = Vec::new();
    for p in patterns {
        let m = pattern_masks(p);
        if m.is_empty() {
            return Err(FindError::EmptyPattern(p.to_string()));
        }
        masks.extend(m);
    }
    Ok(masks)
}

/// What the page-table walk could not do, as warnings.
fn page_map_notes(map: &PageMap) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(why) = &map.stats.truncated {
        notes.push(format!(
            "the page-table walk stopped early ({why}): frames it did not reach count as unmapped"
        ));
    }
    if map.stats.tables_unreadable > 0 {
        notes.push(format!(
            "{} page-table page(s) are not in the dump: the pool they map is missing",
            map.stats.tables_unreadable
        ));
    }
    notes
}

/// The tag tracker's live counts for the wanted tags, summed over pools.
fn tracker_counts<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    procs: Option<&ProcessList>,
    wanted: &TagSet,
    warnings: &mut Vec<String>,
) -> Option<BTreeMap<PoolTag, TrackerCounts>> {
    let mut by_tag: BTreeMap<PoolTag, TrackerCounts> = BTreeMap::new();
    let mut add = |rows: &[crate::pool::TagUsage]| {
        for r in rows.iter().filter(|r| wanted.contains(r.tag.value())) {
            let e = by_tag
                .entry(r.tag)
                .or_insert(TrackerCounts { diff: 0, bytes: 0 });
            // Counters from the target: a hostile table's sum saturates.
            e.diff = e.diff.saturating_add(r.diff);
            e.bytes = e.bytes.saturating_add(r.bytes);
        }
    };
    match read_pool_usage(mem, syms, kern_base, &TrackerOptions::default()) {
        Ok(u) => add(&u.rows),
        Err(e) => {
            warnings.push(format!("the tag tracker could not be read: {e}"));
            return None;
        }
    }
    // Session pool is counted in each session's own table, not the
    // global one (`!poolused 8`'s rows): the scan finds those allocations
    // too. A kernel without session trackers simply has none to add.
    // Their rows only: the sessions' big-page tables are read by the
    // search itself.
    let rows_only = TrackerOptions {
        max_session_big_entries: 0,
        ..TrackerOptions::default()
    };
    if let Some(procs) = procs
        && let Ok(sessions) = read_session_pool(mem, syms, kern_base, procs, &rows_only)
    {
        for s in &sessions.sessions {
            add(&s.rows);
        }
    }
    Some(by_tag)
}

/// A pool of `n` scan threads, built once per size: starting threads for
/// every search costs more than scanning a GiB does.
fn thread_pool(n: usize) -> Result<Arc<rayon::ThreadPool>, FindError> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let n = n.clamp(1, 1024);
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .expect("not poisoned");
    if let Some(p) = pools.get(&n) {
        return Ok(Arc::clone(p));
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("pooldump-find-{i}"))
        .build()
        .map_err(|e| FindError::Threads {
            threads: n,
            why: e.to_string(),
        })?;
    let p = Arc::new(p);
    pools.insert(n, Arc::clone(&p));
    Ok(p)
}

fn join(p: &[TagPattern]) -> String {
    p.iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The scanner's masks for a pattern. `TagPattern` stays the authority:
/// every hit is checked against it again.
fn pattern_masks(p: &TagPattern) -> Vec<TagMask> {
    if let Some(t) = p.exact() {
        return vec![TagMask::exact(t.value())];
    }
    let text = p.as_str().as_bytes();
    if text.contains(&b'*') {
        return TagMask::expand_glob(text);
    }
    // `?` patterns, padded with spaces as TagPattern pads them.
    let mut b = [Some(b' '); 4];
    for (i, c) in text.iter().take(4).enumerate() {
        b[i] = (*c != b'?').then_some(*c);
    }
    vec![TagMask::from_bytes(b)]
}

/// `_POOL_HEADER` from the symbols.
fn header_layout(syms: &KernelSymbols) -> Result<HeaderLayout, FindError> {
    let t = "_POOL_HEADER";
    let size = syms.require_type_size(t)? as usize;
    let f = |name: &str| -> Result<BitField, FindError> {
        let f = syms.field(t, name)?;
        Ok(BitField {
            offset: f.offset as usize,
            unit_size: f.size as usize,
            bit_position: f.bit_position.unwrap_or(0),
            bit_length: f.bit_length.unwrap_or((f.size * 8).min(64) as u32),
        })
    };
    let l = HeaderLayout {
        size,
        previous_size: f("PreviousSize")?,
        pool_index: f("PoolIndex")?,
        block_size: f("BlockSize")?,
        pool_type: f("PoolType")?,
        pool_tag: f("PoolTag")?,
    };
    l.validate().map_err(|e| FindError::Scan {
        what: format!("the _POOL_HEADER of {}", syms.identity),
        source: ScanError::Layout(e),
    })?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_become_masks() {
        let p = |s: &str| pattern_masks(&TagPattern::parse(s).unwrap());
        assert_eq!(
            p("Leak"),
            vec![TagMask::exact(u32::from_le_bytes(*b"Leak"))]
        );
        assert_eq!(p("CM"), vec![TagMask::exact(u32::from_le_bytes(*b"CM  "))]);
        assert_eq!(
            p("0x6b61654c"),
            vec![TagMask::exact(u32::from_le_bytes(*b"Leak"))]
        );
        assert_eq!(
            p("Lk?1"),
            vec![TagMask::from_bytes([
                Some(b'L'),
                Some(b'k'),
                None,
                Some(b'1')
            ])]
        );
        assert_eq!(p("*x").len(), 1);
        assert!(p("toolong*").is_empty());
    }
}
