//! `!poolfind` at memory bandwidth: every allocation carrying a set of
//! tags, from three sources as `!poolfind` combines them (pool.md §3-5):
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
//!    pool.md §4.5), which alone says whether a header is live;
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
use super::tracker::{TrackerOptions, read_pool_usage};
use crate::addr::{KernelVa, PAGE_SIZE, Pfn, PhysAddr};
use crate::memory::{Memory, MemoryExt, PageFile};
use crate::pagemap::{PageMap, PageMapOptions, PageMapStats, VaRange};
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
    /// scanned, so the resident set stays small however big the dump is.
    pub release_scanned: bool,
    /// Read the big-page table.
    pub big_pool: bool,
    /// Read the tag tracker for the per-tag live counts.
    pub tracker: bool,
    /// Bounds on the page-table walk.
    pub pagemap: PageMapOptions,
    /// Stop keeping headers after this many (a hostile dump can be full
    /// of them); the rest are counted.
    pub max_results: usize,
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
    fn start(&self, total_bytes: u64);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// Why nothing could be searched.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("no tag to search for")]
    NoPatterns,
    #[error("tag pattern `{0}` matches no four-character tag")]
    EmptyPattern(String),
    #[error("the symbols lack the _POOL_HEADER layout: {0}")]
    Symbol(#[from] SymbolError),
    #[error("cannot scan with {what}: {source}")]
    Scan {
        what: String,
        #[source]
        source: ScanError,
    },
    #[error("cannot start {threads} scan threads: {why}")]
    Threads { threads: usize, why: String },
}

/// Which allocator made the small allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllocatorFamily {
    /// Chained pool pages (Win7 to 1809).
    Legacy,
    /// The kernel segment heap (19H1+, and 1809 with it enabled).
    SegmentHeap,
}

/// Which allocator holds an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// A chunk of a legacy pool page.
    LegacyPage,
    /// A segment-heap LFH block.
    Lfh,
    /// A segment-heap VS chunk.
    Vs,
    /// A big-page table entry (whole pages, or a segment-heap allocation
    /// of 0xFE1+ bytes): no header.
    BigPool,
    /// A segment-heap-era header the heap metadata could not confirm (its
    /// segment header is not in the dump, or the heap keys are missing).
    Unverified,
}

impl std::fmt::Display for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Allocator::LegacyPage => "legacy page",
            Allocator::Lfh => "LFH",
            Allocator::Vs => "VS",
            Allocator::BigPool => "big pool",
            Allocator::Unverified => "unverified",
        })
    }
}

/// Allocated, free, or not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllocationState {
    Allocated,
    /// Freed; its header (or big-page entry) keeps the stale tag.
    Free,
    /// A segment-heap header without heap metadata to decide: allocated
    /// or recently freed.
    Unknown,
}

impl std::fmt::Display for AllocationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AllocationState::Allocated => "Allocated",
            AllocationState::Free => "Free",
            AllocationState::Unknown => "Unknown",
        })
    }
}

/// The pool an allocation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolKind {
    NonPaged,
    /// NonPagedPoolNx (Windows 8+): from the big-page entry's POOL_TYPE,
    /// the owning heap, or the page's NX bit (a header never holds it).
    NonPagedNx,
    Paged,
}

impl PoolKind {
    pub fn class(self) -> PoolClass {
        match self {
            PoolKind::Paged => PoolClass::Paged,
            _ => PoolClass::NonPaged,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::NonPaged => "NonPaged",
            PoolKind::NonPagedNx => "NonPagedNx",
            PoolKind::Paged => "Paged",
        }
    }
}

/// One allocation with a wanted tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundAllocation {
    /// The address the allocator returned (after the header, if any).
    pub va: KernelVa,
    /// The `_POOL_HEADER` (for a cache-aligned allocation, the second,
    /// aligned one); `None` for big-page entries.
    pub header: Option<KernelVa>,
    /// Physical address of the header (or of the first byte); `None`
    /// when the page is not in the dump.
    pub pa: Option<PhysAddr>,
    /// The tag without PROTECTED_POOL.
    pub tag: PoolTag,
    /// The header's tag carried PROTECTED_POOL (Win7 object tags).
    pub protected: bool,
    /// `!poolfind`'s size: BlockSize × 16, header included; for a
    /// big-page entry, NumberOfBytes.
    pub bytes: u64,
    pub pool: PoolKind,
    pub session: bool,
    /// The header's PoolType byte, or the big-page entry's POOL_TYPE.
    pub pool_type: u32,
    pub state: AllocationState,
    pub allocator: Allocator,
    /// False for a big-page entry whose pages the dump does not hold
    /// (paged out, or a freed entry whose pages were released).
    pub in_dump: bool,
}

/// A header in a frame no address in the pool regions maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnmappedHeader {
    pub pa: PhysAddr,
    pub tag: PoolTag,
    pub protected: bool,
    pub bytes: u64,
    pub pool_type: u32,
    /// Free for a legacy free chunk; otherwise what the header alone says.
    pub state: AllocationState,
    /// A kernel address outside the pool regions that maps the frame, if
    /// any (a second, unrestricted walk answers this).
    pub mapped_at: Option<KernelVa>,
}

/// The tracker's view of one tag (summed over both pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrackerCounts {
    /// Allocs − Frees: allocations still live.
    pub diff: u64,
    pub bytes: u64,
}

/// Per-tag totals (the `--tags-from` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagSummary {
    pub tag: PoolTag,
    /// Live allocations found (headers and big-page entries).
    pub allocated: u64,
    pub allocated_bytes: u64,
    pub free: u64,
    /// Segment-heap headers whose state is unknown.
    pub unknown: u64,
    /// Live big-page entries whose pages are not in the dump.
    pub not_in_dump: u64,
    pub tracker: Option<TrackerCounts>,
    /// Live per the tracker but not found: paged out, in frames missing
    /// from the dump, or in memory the scan cannot see.
    pub not_found: Option<u64>,
}

/// What the scan read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanStats {
    pub engine: &'static str,
    pub threads: usize,
    pub frames_scanned: u64,
    pub bytes_scanned: u64,
    /// Frames the dump describes but cannot give (past the end of a
    /// truncated file, or unreadable from the source).
    pub unreadable_frames: u64,
    /// Frames the pool regions map that the dump does not hold.
    pub mapped_frames_not_in_dump: Option<u64>,
    /// Pool pages whose PTE is not valid (paged out, demand zero).
    pub paged_out_pages: u64,
    /// Headers that passed the page-local rules.
    pub headers: u64,
    /// Segment-heap headers the heap metadata rejected (not at a block or
    /// chunk boundary, or in a range that holds no headers).
    pub rejected_by_heap: u64,
    /// First headers of cache-aligned pairs, reported once.
    pub duplicate_headers: u64,
    /// Headers not kept once `max_results` was reached.
    pub dropped: u64,
    pub scan_seconds: f64,
}

/// A pool region used to restrict the page-table walk.
#[derive(Debug, Clone, Serialize)]
pub struct PoolRegion {
    pub name: String,
    pub range: VaRange,
}

/// Big-page table figures.
#[derive(Debug, Clone, Serialize)]
pub struct BigPoolScan {
    pub table: KernelVa,
    pub size: u64,
    pub matched_live: u64,
    pub matched_freed: u64,
}

/// Everything `find` found.
#[derive(Debug, Clone, Serialize)]
pub struct FindReport {
    pub patterns: Vec<String>,
    pub allocator: AllocatorFamily,
    /// Allocations, sorted by address.
    pub allocations: Vec<FoundAllocation>,
    /// Headers in frames no pool address maps, sorted by physical address.
    pub unmapped: Vec<UnmappedHeader>,
    pub tags: Vec<TagSummary>,
    pub big_pool: Option<BigPoolScan>,
    /// `None` when the regions were unknown and the whole kernel half was
    /// walked.
    pub regions: Option<Vec<PoolRegion>>,
    pub scan: ScanStats,
    pub pagemap: PageMapStats,
    pub warnings: Vec<String>,
}

/// Find every allocation whose tag matches one of `patterns`
/// ([`crate::Target::find`] is the front door). `build` (the dump header's,
/// or the live target's) picks the segment heap's key derivations.
/// Physical memory is scanned in bulk from the source's
/// [`Memory::page_file`] when it has one (a dump's pages in file order),
/// else frame run by frame run through [`Memory::read_physical`].
pub fn find_allocations<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    build: Option<u32>,
    patterns: &[TagPattern],
    opts: &FindOptions<'_>,
) -> Result<FindReport, FindError> {
    let file = mem.page_file();
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
    // One membership test for the big-page table and the tracker too: a
    // 64-tag search must not cost 64 pattern matches per entry.
    let wanted = TagSet::new(&masks);
    let layout = header_layout(syms)?;
    let mut warnings = Vec::new();
    let ctx = Ctx::new(mem, syms, kern_base, build, &mut warnings);
    let rules = match ctx.family {
        AllocatorFamily::Legacy => Rules::Legacy,
        AllocatorFamily::SegmentHeap => Rules::SegmentHeap,
    };
    let scanner =
        Scanner::new(&masks, layout, rules, opts.engine).map_err(|source| FindError::Scan {
            what: format!("the tags {}", join(patterns)),
            source,
        })?;

    // Where pool lives, and which address maps each frame.
    let (regions, region_notes) = pool_regions(mem, syms, kern_base);
    warnings.extend(region_notes);
    let ranges: Option<Vec<VaRange>> = regions
        .as_ref()
        .map(|r| r.iter().map(|r| r.range).collect());
    let map = PageMap::walk(mem, ranges.as_deref(), &opts.pagemap);
    if let Some(why) = &map.stats.truncated {
        warnings.push(format!(
            "the page-table walk stopped early ({why}): frames it did not reach count as unmapped"
        ));
    }
    if map.stats.tables_unreadable > 0 {
        warnings.push(format!(
            "{} page-table page(s) are not in the dump: the pool they map is missing",
            map.stats.tables_unreadable
        ));
    }

    // The big-page table.
    let mut found: Vec<FoundAllocation> = Vec::new();
    let mut big_pool = None;
    if opts.big_pool {
        match read_big_pool(
            mem,
            syms,
            kern_base,
            &BigPoolOptions {
                include_freed: true,
                ..Default::default()
            },
        ) {
            Ok(t) => {
                warnings.extend(t.warnings.iter().map(|w| format!("big-page table: {w}")));
                let (mut live, mut freed) = (0, 0);
                for e in t.entries.iter().filter(|e| wanted.contains(e.tag.value())) {
                    if e.freed {
                        freed += 1;
                    } else {
                        live += 1;
                    }
                    found.push(big_entry(mem, e));
                }
                big_pool = Some(BigPoolScan {
                    table: t.table,
                    size: t.size,
                    matched_live: live,
                    matched_freed: freed,
                });
            }
            Err(e) => warnings.push(format!("the big-page table could not be read: {e}")),
        }
    }

    // The frame scan.
    let threads = opts.threads.unwrap_or_else(rayon::current_num_threads);
    let scan = ScanRun {
        mem,
        scanner: &scanner,
        patterns,
        map: &map,
        ctx: &ctx,
        opts,
        kept: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
        found: Default::default(),
    };
    let started = Instant::now();
    let out = match opts.threads {
        Some(n) if n != rayon::current_num_threads() => thread_pool(n)?.install(|| scan.run(file)),
        _ => scan.run(file),
    };
    let scan_seconds = started.elapsed().as_secs_f64();
    let dropped = scan.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        warnings.push(format!(
            "{dropped} more header(s) matched after the first {}; they are not listed",
            opts.max_results
        ));
    }
    if out.unreadable_frames > 0 {
        warnings.push(format!(
            "{} frame(s) the dump describes could not be read (truncated or damaged file): what they hold is missing",
            out.unreadable_frames
        ));
    }

    // Cache-aligned pairs whose headers sit on different pages meet here.
    let mut duplicate_headers = out.duplicates;
    // In place: results can be hundreds of thousands, and each copy of
    // them is memory the user pays for.
    let mut scanned = out.found;
    // The tie-breakers make the order, so the copy kept, the same on
    // every run (the sort is parallel and unstable).
    scanned
        .par_sort_unstable_by_key(|(a, key)| (key.unwrap_or(a.va.0), a.header, a.va, a.pool_type));
    let mut last_key = None;
    let mut kept = 0usize;
    for i in 0..scanned.len() {
        let key = scanned[i].1;
        if let Some(k) = key {
            if last_key == Some(k) && kept > 0 {
                duplicate_headers += 1;
                if scanned[i].0.pool_type & 4 != 0 {
                    scanned.swap(kept - 1, i);
                }
                continue;
            }
            last_key = Some(k);
        }
        scanned.swap(kept, i);
        kept += 1;
    }
    scanned.truncate(kept);
    // Collected in place (the standard library reuses the allocation),
    // then the big-page entries joined: no second copy of the results.
    let mut all: Vec<FoundAllocation> = scanned.into_iter().map(|(a, _)| a).collect();
    all.append(&mut found);
    let mut found = all;
    found.par_sort_unstable_by_key(|a| (a.va, a.header));

    let mut unmapped = out.unmapped;
    unmapped.sort_by_key(|u| u.pa);
    if !unmapped.is_empty() && ranges.is_some() {
        // Frames outside the pool map may still be mapped elsewhere in the
        // kernel: say where, so only truly unmapped frames read as freed.
        let all = PageMap::walk(mem, None, &opts.pagemap);
        for u in &mut unmapped {
            u.mapped_at = all
                .va_of(u.pa.pfn())
                .map(|va| KernelVa(va.0 + u.pa.page_offset()));
        }
    }

    let mapped_frames_not_in_dump = file.map(|f| missing_frames(f, &map));
    if let Some(n) = mapped_frames_not_in_dump.filter(|n| *n > 0) {
        warnings.push(format!(
            "{n} frame(s) mapped in the pool regions are not in the dump: allocations there are not found"
        ));
    }

    let tracker = if opts.tracker {
        match read_pool_usage(mem, syms, kern_base, &TrackerOptions::default()) {
            Ok(u) => {
                let mut by_tag: BTreeMap<PoolTag, TrackerCounts> = BTreeMap::new();
                for r in u.rows.iter().filter(|r| wanted.contains(r.tag.value())) {
                    let e = by_tag
                        .entry(r.tag)
                        .or_insert(TrackerCounts { diff: 0, bytes: 0 });
                    e.diff += r.diff;
                    e.bytes += r.bytes;
                }
                Some(by_tag)
            }
            Err(e) => {
                warnings.push(format!("the tag tracker could not be read: {e}"));
                None
            }
        }
    } else {
        None
    };
    let tags = summarize(patterns, &found, tracker.as_ref());

    Ok(FindReport {
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        allocator: ctx.family,
        allocations: found,
        unmapped,
        tags,
        big_pool,
        regions,
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
        warnings,
    })
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

fn big_entry<M: Memory + ?Sized>(mem: &M, e: &super::BigPoolEntry) -> FoundAllocation {
    let pa = if e.freed {
        None
    } else {
        mem.translate(e.va).ok().map(|t| t.pa).filter(|pa| {
            let mut b = [0u8; 1];
            mem.read_physical(*pa, &mut b).is_ok()
        })
    };
    FoundAllocation {
        va: e.va,
        header: None,
        pa,
        tag: e.tag.unprotected(),
        protected: false,
        bytes: e.bytes,
        pool: match e.pool {
            PoolClass::Paged => PoolKind::Paged,
            PoolClass::NonPaged if e.nx => PoolKind::NonPagedNx,
            PoolClass::NonPaged => PoolKind::NonPaged,
        },
        session: e.session,
        pool_type: e.pool_type,
        state: if e.freed {
            AllocationState::Free
        } else {
            AllocationState::Allocated
        },
        allocator: Allocator::BigPool,
        in_dump: pa.is_some(),
    }
}

/// Pool regions from the symbols (pool.md §5): MiVisibleState's
/// SystemVaRegions indexed by `_MI_ASSIGNED_REGION_TYPES` (1607+), else
/// the legacy pool variables. `None` unless both nonpaged and paged pool
/// are known: the walk then takes the whole kernel half.
fn pool_regions<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
) -> (Option<Vec<PoolRegion>>, Vec<String>) {
    let mut notes = Vec::new();
    let var = |name: &str| {
        syms.symbol_rva(name)
            .map(|rva| KernelVa(kern_base.0.wrapping_add(rva)))
    };
    let read = |name: &str| var(name).and_then(|va| mem.read_u64(va).ok());
    let mut regions: Vec<PoolRegion> = Vec::new();
    let mut have = (false, false);
    if let (Some(ptr), Some(en)) = (
        var("MiVisibleState"),
        syms.enum_values("_MI_ASSIGNED_REGION_TYPES"),
    ) {
        match mem.read_u64(ptr) {
            Ok(vs) if KernelVa(vs).is_kernel() => {
                for (name, idx) in en {
                    let pool = ["NonPagedPool", "PagedPool", "Session", "SpecialPool"];
                    let Some(short) = name.strip_prefix("AssignedRegion") else {
                        continue;
                    };
                    if !pool.iter().any(|p| short.contains(p)) {
                        continue;
                    }
                    let base = syms.field(
                        "_MI_VISIBLE_STATE",
                        &format!("SystemVaRegions[{idx}].BaseAddress"),
                    );
                    let size = syms.field(
                        "_MI_VISIBLE_STATE",
                        &format!("SystemVaRegions[{idx}].NumberOfBytes"),
                    );
                    let (Ok(b), Ok(s)) = (base, size) else {
                        continue;
                    };
                    let b = mem.read_u64(KernelVa(vs + b.offset)).unwrap_or(0);
                    let s = mem.read_u64(KernelVa(vs + s.offset)).unwrap_or(0);
                    if !KernelVa(b).is_kernel() {
                        continue;
                    }
                    if let Some(range) = VaRange::from_base_size(b, s) {
                        have.0 |= short == "NonPagedPool";
                        have.1 |= short == "PagedPool";
                        regions.push(PoolRegion {
                            name: short.to_string(),
                            range,
                        });
                    }
                }
            }
            _ => notes.push("MiVisibleState is unreadable: the pool regions are unknown".into()),
        }
    } else {
        // Win7/8.1 (pool.md §5): the legacy pool variables.
        let np_start = read("MmNonPagedPoolStart").or_else(|| read("MiNonPagedPoolStartAligned"));
        let np_end = read("MiNonPagedPoolEnd");
        if let (Some(s), Some(e)) = (np_start, np_end)
            && KernelVa(s).is_kernel()
            && s <= e
        {
            have.0 = true;
            regions.push(PoolRegion {
                name: "NonPagedPool".into(),
                range: VaRange::new(s, e),
            });
        }
        let pp_end = read("MmPagedPoolEnd");
        let pp_start = read("MiPagedPoolStart").or_else(|| {
            let size = read("MmSizeOfPagedPoolInBytes")?;
            Some(pp_end?.checked_sub(size)?.wrapping_add(1))
        });
        if let (Some(s), Some(e)) = (pp_start, pp_end)
            && KernelVa(s).is_kernel()
            && s <= e
        {
            have.1 = true;
            regions.push(PoolRegion {
                name: "PagedPool".into(),
                range: VaRange::new(s, e),
            });
        }
    }
    if have.0 && have.1 {
        regions.sort_by_key(|r| r.range);
        (Some(regions), notes)
    } else {
        notes.push(
            "the pool regions are not in the symbols: the whole kernel half was walked (writable pages only)"
                .into(),
        );
        (None, notes)
    }
}

/// Frames the page map names that the dump does not hold: both lists
/// sorted by PFN, intersected in one sweep.
fn missing_frames(file: &dyn PageFile, map: &PageMap) -> u64 {
    let file_len = file.file_bytes().len() as u64;
    let mut present: Vec<(u64, u64)> = file
        .page_runs()
        .into_iter()
        .map(|e| {
            let backed = (file_len.saturating_sub(e.file_offset) / PAGE_SIZE).min(e.pages);
            (e.pfn.0, e.pfn.0 + backed)
        })
        .filter(|(a, b)| a < b)
        .collect();
    present.sort_unstable();
    let mut missing = 0;
    let mut j = 0;
    for m in map.mappings() {
        let (mut lo, hi) = (m.pfn.0, m.pfn.0 + m.pages);
        while lo < hi {
            while j < present.len() && present[j].1 <= lo {
                j += 1;
            }
            match present.get(j) {
                Some(&(a, b)) if a <= lo => lo = b.min(hi),
                Some(&(a, _)) => {
                    let to = a.min(hi);
                    missing += to - lo;
                    lo = to;
                }
                None => {
                    missing += hi - lo;
                    lo = hi;
                }
            }
        }
    }
    missing
}

/// Per-tag totals: every tag found, in the tracker, or named exactly.
fn summarize(
    patterns: &[TagPattern],
    found: &[FoundAllocation],
    tracker: Option<&BTreeMap<PoolTag, TrackerCounts>>,
) -> Vec<TagSummary> {
    let mut by: BTreeMap<PoolTag, TagSummary> = BTreeMap::new();
    let blank = |tag| TagSummary {
        tag,
        allocated: 0,
        allocated_bytes: 0,
        free: 0,
        unknown: 0,
        not_in_dump: 0,
        tracker: None,
        not_found: None,
    };
    for p in patterns {
        if let Some(t) = p.exact() {
            by.entry(t.unprotected())
                .or_insert_with(|| blank(t.unprotected()));
        }
    }
    if let Some(t) = tracker {
        for tag in t.keys() {
            by.entry(*tag).or_insert_with(|| blank(*tag));
        }
    }
    for a in found {
        let s = by.entry(a.tag).or_insert_with(|| blank(a.tag));
        match a.state {
            AllocationState::Allocated => {
                s.allocated += 1;
                s.allocated_bytes += a.bytes;
                if !a.in_dump {
                    s.not_in_dump += 1;
                }
            }
            AllocationState::Free => s.free += 1,
            AllocationState::Unknown => s.unknown += 1,
        }
    }
    for s in by.values_mut() {
        if let Some(t) = tracker {
            let c = t
                .get(&s.tag)
                .copied()
                .unwrap_or(TrackerCounts { diff: 0, bytes: 0 });
            s.tracker = Some(c);
            let seen = s.allocated - s.not_in_dump + s.unknown;
            s.not_found = Some(c.diff.saturating_sub(seen));
        }
    }
    by.into_values().collect()
}

// ----- the segment heap --------------------------------------------------

/// What the allocator context needs: the family, and for the segment
/// heap its keys, contexts and layouts (pool.md §4.5).
struct Ctx {
    family: AllocatorFamily,
    /// Only with a working segment heap.
    heap: Option<SegHeap>,
    /// Windows 8+ has NonPagedPoolNx: an NX nonpaged page means Nx.
    has_nx_pool: bool,
}

impl Ctx {
    fn new<M: Memory + ?Sized>(
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

/// Descriptor flags of a page range (pool.md §4.5).
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
}

impl HeapLayout {
    fn new(s: &KernelSymbols) -> Result<Self, SymbolError> {
        let desc = s.field("_HEAP_PAGE_SEGMENT", "DescArray")?;
        let vs = s.require_type_size("_HEAP_VS_SUBSEGMENT")?;
        Ok(Self {
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

struct SegHeap {
    heap_key: u64,
    lfh_key: u64,
    sig_key: u64,
    /// 24H2 derives the LFH shift from the whole VA (pool.md §4.5).
    lfh_shift_full: bool,
    contexts: HashMap<u64, SegCtx>,
    masks: Vec<u64>,
    l: HeapLayout,
    segments: Mutex<HashMap<u64, Option<Arc<Segment>>>>,
    vs_subs: Mutex<HashMap<u64, Option<u64>>>,
    lfh_pages: Mutex<HashMap<u64, Option<Arc<Vec<u8>>>>>,
}

/// A segment-heap verdict on a header.
enum HeapVerdict {
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
        let Some(state_rva) = s.symbol_rva("ExPoolState") else {
            return if build.is_some_and(|b| b >= 18362) {
                Err("the symbols lack ExPoolState".into())
            } else {
                Ok(None)
            };
        };
        let state = kern_base.0.wrapping_add(state_rva);
        let t = "_EX_POOL_HEAP_MANAGER_STATE";
        let e = |e: SymbolError| e.to_string();
        let pools_f = s.field(t, "NumberOfPools").map_err(e)?;
        let pools = mem
            .read_u32(KernelVa(state + pools_f.offset))
            .map_err(|e| format!("ExPoolState.NumberOfPools: {e}"))?;
        // pool.md §4.6: 1809 has the types, but uses the heap only when a
        // pool node holds a signed heap.
        if !(1..=64).contains(&pools) {
            return if build.is_some_and(|b| b >= 18362) {
                Err(format!("ExPoolState.NumberOfPools is {pools}"))
            } else {
                Ok(None)
            };
        }
        let node = s.field(t, "PoolNode").map_err(e)?;
        let node_size = node.element_size.unwrap_or(0);
        let heaps_f = s.field("_EX_HEAP_POOL_NODE", "Heaps").map_err(e)?;
        let heaps_n = heaps_f.count.unwrap_or(4).min(16);
        let sig = s.field("_SEGMENT_HEAP", "Signature").map_err(e)?;
        let ctxs = s.field("_SEGMENT_HEAP", "SegContexts").map_err(e)?;
        let ctx_size = ctxs.element_size.unwrap_or(0);
        let ctx_n = ctxs.count.unwrap_or(2).min(8);
        let mask_f = s.field("_HEAP_SEG_CONTEXT", "SegmentMask").map_err(e)?;
        let shift_f = s.field("_HEAP_SEG_CONTEXT", "UnitShift").map_err(e)?;
        let first_f = s
            .field("_HEAP_SEG_CONTEXT", "FirstDescriptorIndex")
            .map_err(e)?;
        let l = HeapLayout::new(s).map_err(e)?;

        let mut contexts = HashMap::new();
        let mut masks = Vec::new();
        let mut signed = 0;
        for n in 0..pools as u64 {
            for j in 0..heaps_n {
                let at = state + node.offset + n * node_size + heaps_f.offset + 8 * j;
                let Ok(heap) = mem.read_u64(KernelVa(at)) else {
                    continue;
                };
                if !KernelVa(heap).is_kernel() {
                    continue;
                }
                if mem.read_u32(KernelVa(heap + sig.offset)).ok()
                    != Some(SEGMENT_HEAP_SIGNATURE as u32)
                {
                    continue;
                }
                signed += 1;
                // Heap indexes in a pool node (pool.md §4.5).
                let kind = match j {
                    0 => Some(PoolKind::NonPaged),
                    1 => Some(PoolKind::NonPagedNx),
                    2 | 3 => Some(PoolKind::Paged),
                    _ => None,
                };
                for c in 0..ctx_n {
                    let ctx = heap + ctxs.offset + c * ctx_size;
                    let mask = mem.read_u64(KernelVa(ctx + mask_f.offset)).unwrap_or(0);
                    let shift = mem.read_u8(KernelVa(ctx + shift_f.offset)).unwrap_or(0) as u32;
                    let first = mem.read_u8(KernelVa(ctx + first_f.offset)).unwrap_or(0) as u64;
                    // A segment is 1 MiB or 16 MiB of 4 KiB or 64 KiB units.
                    let size = (!mask).wrapping_add(1);
                    if !(12..=16).contains(&shift)
                        || !size.is_power_of_two()
                        || !(1 << 20..=1 << 24).contains(&size)
                    {
                        continue;
                    }
                    if size >> shift > l.desc_count {
                        continue;
                    }
                    contexts.insert(
                        ctx,
                        SegCtx {
                            kind,
                            unit_shift: shift,
                            first_desc: first,
                        },
                    );
                    if !masks.contains(&mask) {
                        masks.push(mask);
                    }
                }
            }
        }
        if signed == 0 {
            return if build.is_some_and(|b| b >= 18362) {
                Err("no pool node holds a heap with the 0xDDEEDDEE signature".into())
            } else {
                Ok(None)
            };
        }
        // Keys: ExPoolState.HeapManager.Globals -> _RTLP_HP_HEAP_GLOBALS.
        let globals = s
            .field(t, "HeapManager.Globals")
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
        let new_keys = build.is_some_and(|b| b >= 26100);
        Ok(Some(SegHeap {
            heap_key,
            lfh_key,
            sig_key: if new_keys { 0 } else { SEGMENT_KEY },
            lfh_shift_full: new_keys,
            contexts,
            masks,
            l,
            segments: Mutex::new(HashMap::new()),
            vs_subs: Mutex::new(HashMap::new()),
            lfh_pages: Mutex::new(HashMap::new()),
        }))
    }

    /// The page segment at `seg`, if its signature names a known context.
    fn segment<M: Memory + ?Sized>(&self, mem: &M, seg: u64) -> Option<Arc<Segment>> {
        if let Some(s) = self.segments.lock().expect("not poisoned").get(&seg) {
            return s.clone();
        }
        let s = self.read_segment(mem, seg).map(Arc::new);
        self.segments
            .lock()
            .expect("not poisoned")
            .insert(seg, s.clone());
        s
    }

    fn read_segment<M: Memory + ?Sized>(&self, mem: &M, seg: u64) -> Option<Segment> {
        let sig = mem.read_u64(KernelVa(seg + self.l.seg_signature)).ok()?;
        let owner = sig ^ self.heap_key ^ seg ^ self.sig_key;
        let ctx = *self.contexts.get(&owner)?;
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

    /// Classify the header at `va` (its page's bytes are `page`, mapped at
    /// `page_va`).
    fn classify<M: Memory + ?Sized>(
        &self,
        mem: &M,
        va: u64,
        hit: &PageHit,
        page: &[u8],
        page_va: u64,
    ) -> HeapVerdict {
        for &mask in &self.masks {
            let seg = va & mask;
            let Some(s) = self.segment(mem, seg) else {
                continue;
            };
            let unit = (va - seg) >> s.ctx.unit_shift;
            let Some(Some((first, flags))) = s.ranges.get(unit as usize).copied() else {
                return HeapVerdict::Rejected;
            };
            let sub = seg + ((first as u64) << s.ctx.unit_shift);
            let kind = s.ctx.kind;
            let local = Local { page, page_va };
            return match flags as u64 {
                RANGE_LFH => self.lfh(mem, sub, va, hit, &local, kind, false),
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
                    self.vs(mem, sub, range_end, va, hit, &local, kind)
                }
                // Large allocations and free ranges hold no pool headers.
                _ => HeapVerdict::Rejected,
            };
        }
        // No segment header to go by (paged out, or not in the dump): the
        // subsegment's own encoded fields can still vouch for the header,
        // under stricter checks since nothing bounds the subsegment.
        let local = Local { page, page_va };
        let lfh = self.lfh(mem, page_va, va, hit, &local, None, true);
        if matches!(lfh, HeapVerdict::Found { .. }) {
            return lfh;
        }
        let vs = self.vs_chunk(mem, None, va, hit, &local, None);
        if matches!(vs, HeapVerdict::Found { .. }) {
            return vs;
        }
        HeapVerdict::NoSegment
    }

    /// An LFH block: `sub`'s encoded offsets must put a block of the
    /// header's size at `va`; the bitmap says whether it is allocated.
    /// `guess`: `sub` is only the hit's page, so the subsegment must fit it.
    #[allow(clippy::too_many_arguments)]
    fn lfh<M: Memory + ?Sized>(
        &self,
        mem: &M,
        sub: u64,
        va: u64,
        hit: &PageHit,
        local: &Local<'_>,
        kind: Option<PoolKind>,
        guess: bool,
    ) -> HeapVerdict {
        // The subsegment header usually shares the hit's page; otherwise
        // read (and keep) its page.
        let cached;
        let hdr: &[u8] = if let Some(b) = local.slice(sub, PAGE_SIZE) {
            b
        } else {
            let got = {
                let mut c = self.lfh_pages.lock().expect("not poisoned");
                c.entry(sub)
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

    #[allow(clippy::too_many_arguments)]
    fn vs<M: Memory + ?Sized>(
        &self,
        mem: &M,
        sub: u64,
        range_end: u64,
        va: u64,
        hit: &PageHit,
        local: &Local<'_>,
        kind: Option<PoolKind>,
    ) -> HeapVerdict {
        let l = &self.l;
        let sub_end = {
            let known = self
                .vs_subs
                .lock()
                .expect("not poisoned")
                .get(&sub)
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
                    self.vs_subs.lock().expect("not poisoned").insert(sub, e);
                    e
                }
            };
            match end {
                Some(e) if e <= range_end => e,
                _ => return HeapVerdict::Rejected,
            }
        };
        self.vs_chunk(
            mem,
            Some((sub + l.vs_first_chunk, sub_end)),
            va,
            hit,
            local,
            kind,
        )
    }

    /// A VS chunk: the decoded chunk header in front of the (first) pool
    /// header must hold the pool block. `bounds` is the subsegment's chunk
    /// area when known; without it the chunk must end exactly where the
    /// block does and its Allocated byte must be 0 or 1.
    fn vs_chunk<M: Memory + ?Sized>(
        &self,
        mem: &M,
        bounds: Option<(u64, u64)>,
        va: u64,
        hit: &PageHit,
        local: &Local<'_>,
        kind: Option<PoolKind>,
    ) -> HeapVerdict {
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
        let q = match local.slice(chunk, 8) {
            Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
            None => match mem.read_u64(KernelVa(chunk)) {
                Ok(q) => q,
                Err(_) => return HeapVerdict::Rejected,
            },
        };
        let dec = (q ^ chunk ^ self.heap_key).to_le_bytes();
        let size = l.chunk_size.read_u64(&dec).unwrap_or(0) * unit;
        let allocated_byte = l.chunk_allocated.read_u64(&dec).unwrap_or(0);
        let block_end = va + hit.header.block_size as u64 * unit;
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

/// The page a hit is on, to read heap metadata without a translation when
/// it shares the page.
struct Local<'a> {
    page: &'a [u8],
    page_va: u64,
}

impl Local<'_> {
    fn slice(&self, va: u64, len: u64) -> Option<&[u8]> {
        let off = va.checked_sub(self.page_va)?;
        let end = off.checked_add(len)?;
        if end > self.page.len() as u64 {
            return None;
        }
        Some(&self.page[off as usize..end as usize])
    }
}

// ----- the frame scan ----------------------------------------------------

struct ScanRun<'a, M: Memory + ?Sized> {
    mem: &'a M,
    scanner: &'a Scanner,
    patterns: &'a [TagPattern],
    map: &'a PageMap,
    ctx: &'a Ctx,
    opts: &'a FindOptions<'a>,
    kept: AtomicUsize,
    dropped: AtomicU64,
    found: std::sync::Mutex<Vec<(FoundAllocation, Option<u64>)>>,
}

#[derive(Default)]
struct ScanOut {
    /// With the key that identifies one allocation's headers.
    found: Vec<(FoundAllocation, Option<u64>)>,
    unmapped: Vec<UnmappedHeader>,
    frames: u64,
    unreadable_frames: u64,
    headers: u64,
    rejected: u64,
    duplicates: u64,
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
    fn run(&self, file: Option<&dyn PageFile>) -> ScanOut {
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
