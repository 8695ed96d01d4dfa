//! What a search returns: the allocations, the per-tag totals and the
//! scan's statistics.

use super::*;

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
    /// In use: no free-list or heap metadata says otherwise.
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
    /// NonPagedPool (executable nonpaged on Windows 8+).
    NonPaged,
    /// NonPagedPoolNx (Windows 8+): from the big-page entry's POOL_TYPE,
    /// the owning heap, or the page's NX bit (a header never holds it).
    NonPagedNx,
    /// PagedPool.
    Paged,
}

impl PoolKind {
    /// The tracker's class (NonPagedNx counts as NonPaged, as PoolTrackTable does).
    pub fn class(self) -> PoolClass {
        match self {
            PoolKind::Paged => PoolClass::Paged,
            _ => PoolClass::NonPaged,
        }
    }
    /// `NonPaged`, `NonPagedNx` or `Paged`, as the CLI prints it.
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
    /// The pool the allocation came from.
    pub pool: PoolKind,
    /// Session pool: the session bit (0x20) of the PoolType.
    pub session: bool,
    /// The session whose page tables map the allocation (its address is
    /// in that session's space, which only its processes map); `None`
    /// outside session space.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<u32>,
    /// The header's PoolType byte, or the big-page entry's POOL_TYPE.
    pub pool_type: u32,
    /// Allocated, free, or not known.
    pub state: AllocationState,
    /// Which allocator's rules found it.
    pub allocator: Allocator,
    /// False for a big-page entry whose pages the dump does not hold
    /// (paged out, or a freed entry whose pages were released).
    pub in_dump: bool,
}

impl FoundAllocation {
    /// The bytes the allocation occupies: from its header (or, without
    /// one, its first byte) for [`Self::bytes`], clamped to the top of the
    /// address space.
    pub fn extent(&self) -> std::ops::Range<u64> {
        let start = self.header.unwrap_or(self.va).0;
        start..start.saturating_add(self.bytes)
    }
}

/// A header in a frame no address in the pool regions maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnmappedHeader {
    /// Physical address of the header.
    pub pa: PhysAddr,
    /// The tag without PROTECTED_POOL.
    pub tag: PoolTag,
    /// The tag carried PROTECTED_POOL (bit 31).
    pub protected: bool,
    /// BlockSize × 16, header included.
    pub bytes: u64,
    /// The header's PoolType byte.
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
    /// The tracker's bytes still allocated (PoolMon's Bytes), for the tag.
    pub bytes: u64,
}

/// Per-tag totals (the `--tags-from` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagSummary {
    /// The tag (without PROTECTED_POOL).
    pub tag: PoolTag,
    /// Live allocations found (headers and big-page entries).
    pub allocated: u64,
    /// Bytes of those live allocations (as [`FoundAllocation::bytes`] counts them).
    pub allocated_bytes: u64,
    /// Freed chunks and entries still carrying the tag.
    pub free: u64,
    /// Segment-heap headers whose state is unknown.
    pub unknown: u64,
    /// Live big-page entries whose pages are not in the dump.
    pub not_in_dump: u64,
    /// The tracker's figures for the tag; None when the tracker was not read (or could not be).
    pub tracker: Option<TrackerCounts>,
    /// Live per the tracker but not found: paged out, in frames missing
    /// from the dump, or in memory the scan cannot see.
    pub not_found: Option<u64>,
}

/// What the scan read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanStats {
    /// The candidate engine that ran (`memmem`, `stride`, `aho-corasick`).
    pub engine: &'static str,
    /// Scan threads used.
    pub threads: usize,
    /// Physical frames scanned.
    pub frames_scanned: u64,
    /// `frames_scanned` × 4 KiB.
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
    /// Headers not kept once `max_results` was reached (a streaming
    /// search keeps no allocations, so only unmapped headers count).
    pub dropped: u64,
    /// Wall-clock seconds of the frame scan.
    pub scan_seconds: f64,
}

/// A pool region used to restrict the page-table walk.
#[derive(Debug, Clone, Serialize)]
pub struct PoolRegion {
    /// The region's name (`PagedPool`, `NonPagedPool`, or a MI_VISIBLE_STATE.SystemVaRegions
    /// entry's).
    pub name: String,
    /// Its virtual address range.
    pub range: VaRange,
}

/// Big-page table figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BigPoolScan {
    /// nt!PoolBigPageTable's address (a session's:
    /// `_MM_SESSION_SPACE.PoolTrackBigPages`).
    pub table: KernelVa,
    /// Its entries (nt!PoolBigPageTableSize, `PoolTrackBigPagesSize`).
    pub size: u64,
    /// Live entries whose tag matched.
    pub matched_live: u64,
    /// Freed entries whose tag matched (the stale tag is kept; the address's low bit is set).
    pub matched_freed: u64,
}

/// Everything `find` found.
#[derive(Debug, Clone, Serialize)]
pub struct FindReport {
    /// The tag patterns searched for, as given.
    pub patterns: Vec<String>,
    /// The allocator family of this kernel (legacy pool pages or segment heap).
    pub allocator: AllocatorFamily,
    /// Allocations, sorted by address; empty from a streaming search
    /// ([`crate::Target::find_with`]), which hands them to its sink.
    pub allocations: Vec<FoundAllocation>,
    /// Headers in frames no pool address maps, sorted by physical address.
    pub unmapped: Vec<UnmappedHeader>,
    /// Per-tag totals, by tag.
    pub tags: Vec<TagSummary>,
    /// Big-page table figures; None when it was not read (`big_pool: false`) or could not be.
    pub big_pool: Option<BigPoolScan>,
    /// `None` when the regions were unknown and the whole kernel half was
    /// walked.
    pub regions: Option<Vec<PoolRegion>>,
    /// Each session's paged pool, mapped through its own processes' page
    /// tables for the scan.
    pub sessions: Vec<SessionPoolMap>,
    /// What the frame scan read.
    pub scan: ScanStats,
    /// What the page-table walk found.
    pub pagemap: PageMapStats,
    /// What could not be read or checked; the search went on without it.
    pub warnings: Vec<crate::warning::Warning>,
}

/// Per-tag totals being counted, allocation by allocation (the sorted
/// search counts its list, a streaming one each batch as it passes).
pub(super) type Tally = BTreeMap<PoolTag, TagSummary>;

fn blank(tag: PoolTag) -> TagSummary {
    TagSummary {
        tag,
        allocated: 0,
        allocated_bytes: 0,
        free: 0,
        unknown: 0,
        not_in_dump: 0,
        tracker: None,
        not_found: None,
    }
}

/// Add the totals of `from` to `into`.
pub(super) fn add_tally(into: &mut Tally, from: Tally) {
    for (tag, f) in from {
        let s = into.entry(tag).or_insert_with(|| blank(tag));
        s.allocated += f.allocated;
        s.allocated_bytes += f.allocated_bytes;
        s.free += f.free;
        s.unknown += f.unknown;
        s.not_in_dump += f.not_in_dump;
    }
}

/// Count `a` in its tag's totals.
pub(super) fn tally(by: &mut Tally, a: &FoundAllocation) {
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

/// Per-tag totals: every tag found (counted in `by`), in the tracker, or
/// named exactly.
pub(super) fn summarize(
    patterns: &[TagPattern],
    mut by: Tally,
    tracker: Option<&BTreeMap<PoolTag, TrackerCounts>>,
) -> Vec<TagSummary> {
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
