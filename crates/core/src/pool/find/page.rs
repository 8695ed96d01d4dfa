//! `!pool Addr`: the allocation that holds an address and the others in
//! its page, found with the search's own machinery (no second header
//! parser): the frame scan of [`find_allocations`] over just the page and
//! the one before it (a segment-heap VS chunk or LFH block can start
//! there and reach into the page) with a pattern every tag matches, each
//! header checked by the build's allocator rules, plus the big-page
//! table's entries that cover the page. WinDbg's `!pool` reads the page's
//! legacy header chain, which the segment heap (19H1+) does not have.
//!
//! ```no_run
//! use pooldump_core::KernelVa;
//! use pooldump_core::pool::find::PoolVerdict;
//! # fn demo(t: &pooldump_core::Target<pooldump_core::CrashDump>) -> Result<(), Box<dyn std::error::Error>> {
//! let p = t.pool_at("ffffc60c`c0117040".parse::<KernelVa>()?)?;
//! if let Some(a) = &p.containing {
//!     println!("{} {} {:#x} {} {}", a.va, a.tag, a.bytes, a.state, a.allocator);
//! } else {
//!     assert_ne!(p.verdict, PoolVerdict::InAllocation);
//! }
//! # Ok(()) }
//! ```

use super::collect::name_session_heaps;
use super::sessions::{current_session_note, session_by_id};
use super::*;
use crate::memory::{MemoryError, ProcessSpace, PxeLevel};

/// Why the address could not be looked at.
#[derive(Debug, thiserror::Error)]
pub enum PoolAtError {
    /// Bits 48-63 are not copies of bit 47: no page table maps it.
    #[error("{va} is not a canonical address (bits 48-63 must repeat bit 47)")]
    NonCanonical {
        /// The address asked about.
        va: KernelVa,
    },
    /// A user-mode address: pool is in the kernel half.
    #[error("{va} is a user-mode address: pool lives at ffff8000`00000000 and above")]
    UserAddress {
        /// The address asked about.
        va: KernelVa,
    },
    /// The source failed (a live target's transport), not the address.
    #[error("reading {va}: {source}")]
    Read {
        /// The address asked about.
        va: KernelVa,
        /// The source's failure.
        #[source]
        source: MemoryError,
    },
    /// The scan could not be set up (the symbols lack `_POOL_HEADER`).
    #[error(transparent)]
    Find(#[from] FindError),
    /// [`PoolAtOptions::session`] names a session the process list does
    /// not hold, or the sessions cannot be read.
    #[error("session {id}: {why}")]
    Session {
        /// The session asked for.
        id: u32,
        /// What is wrong: the sessions there are, or why none can be read.
        why: String,
    },
}

/// Where the address's page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum PageStatus {
    /// In the source: the address is at physical `pa`.
    Resident {
        /// The address's physical address.
        pa: PhysAddr,
    },
    /// Not mapped: the entry at `level` is not present (never mapped, or
    /// paged out).
    NotMapped {
        /// The first paging level whose entry is not present.
        level: PxeLevel,
    },
    /// Mapped, but the source does not hold the page (at `pa`) or a page
    /// table on the way to it (`pa` unknown).
    NotInDump {
        /// The address's physical address, when the walk reached it.
        pa: Option<PhysAddr>,
    },
}

/// What the address is, in a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolVerdict {
    /// Inside [`PoolPage::containing`].
    InAllocation,
    /// In a pool page (a pool region's, or one holding allocations), but in
    /// none of its allocations: heap metadata, a gap, a freed chunk whose
    /// header is gone.
    BetweenAllocations,
    /// Readable, but outside every pool region, and no allocation covers it.
    NotPool,
    /// The page is not mapped, and no big-page entry covers it.
    NotMapped,
    /// The page is not in the dump, and no big-page entry covers it.
    NotInDump,
    /// Readable and in no allocation; the symbols do not say where pool
    /// is, so whether this is pool is not known.
    NoAllocation,
}

/// `!pool Addr`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct PoolPage {
    /// The address asked about.
    pub va: KernelVa,
    /// The start of its 4 KiB page.
    pub page: KernelVa,
    /// Where the page is.
    pub status: PageStatus,
    /// The pool region holding the address (`NonPagedPool`, `PagedPool`,
    /// ...), if any.
    pub region: Option<String>,
    /// The symbols say where pool is (all builds but 8.1's).
    pub regions_known: bool,
    /// The kernel's small-allocation allocator.
    pub allocator: AllocatorFamily,
    /// What the address is.
    pub verdict: PoolVerdict,
    /// The allocation holding the address (an allocated one before a freed
    /// one that overlaps it).
    pub containing: Option<FoundAllocation>,
    /// Every allocation overlapping the page, `containing` among them, by
    /// address (of the header, else the first byte): headers of any tag
    /// and state, and big-page entries, live and freed.
    pub allocations: Vec<FoundAllocation>,
    /// The session whose page tables the address was read through
    /// ([`PoolAtOptions::session`]); its `mapped_pages` are those of the
    /// two pages looked at.
    pub session: Option<SessionPoolMap>,
    /// What could not be read or checked.
    pub warnings: Vec<crate::warning::Warning>,
}

/// Bounds on what [`pool_at`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolAtOptions {
    /// Read at most this many big-page table entries (the table is read
    /// whole to find the entries that cover the page), as
    /// [`BigPoolOptions::max_entries`].
    pub max_big_entries: u64,
    /// Read the address through the page tables of a process of this
    /// session (`_MM_SESSION_SPACE.SessionId`), as WinDbg's `!session -s N`
    /// then `!pool` does: session space maps to other frames in each
    /// session. `None`: the source's own tables (a dump's, one process's).
    pub session: Option<u32>,
}

impl Default for PoolAtOptions {
    fn default() -> Self {
        Self {
            max_big_entries: BigPoolOptions::default().max_entries,
            session: None,
        }
    }
}

/// The allocation holding `va` and the others in its page
/// ([`crate::Target::pool_at`] is the front door); with
/// [`PoolAtOptions::session`], through that session's page tables.
pub fn pool_at<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    build: Option<u32>,
    va: KernelVa,
    opts: &PoolAtOptions,
) -> Result<PoolPage, PoolAtError> {
    if !va.is_canonical() {
        return Err(PoolAtError::NonCanonical { va });
    }
    if !va.is_kernel() {
        return Err(PoolAtError::UserAddress { va });
    }
    let mut session = opts
        .session
        .map(|id| session_by_id(mem, syms, kern_base, id))
        .transpose()?;
    let mut warnings = Vec::new();
    let page = va.page_align();
    // The page's last byte: `page + 0x1000` overflows for the top page.
    let page_last = page.0 | (PAGE_SIZE - 1);
    let (regions_known, region) = region_of(mem, syms, kern_base, va, &mut warnings);
    let region = region.as_ref();
    let status = match &session {
        Some(s) => page_status(&ProcessSpace::new(mem, s.dtb), va)?,
        None => page_status(mem, va)?,
    };
    if session.is_none() && region.is_some_and(|r| r.name == "Session") {
        warnings.push(current_session_note(mem, syms, kern_base, va));
    }

    let mut found = Vec::new();
    let in_pool = !regions_known || region.is_some();
    let allocator = if matches!(status, PageStatus::Resident { .. }) && in_pool {
        // The page before too, where it is in the same region.
        let first = region.map_or(0, |r| r.range.start.0);
        let lo = page.0.saturating_sub(PAGE_SIZE).max(first);
        let walk = VaRange::new(lo, page_last);
        let pools = Pools {
            mem,
            syms,
            kern_base,
            build,
        };
        let scan = pools.scan_range(walk, session.as_mut(), &mut warnings)?;
        found = scan.found;
        scan.family
    } else {
        Ctx::new(mem, syms, kern_base, build, &mut warnings).family
    };
    found.extend(big_on_page(
        mem,
        syms,
        kern_base,
        session.as_ref(),
        page,
        opts,
        &mut warnings,
    ));

    let (allocations, containing) = on_page(found, va);
    let verdict = match (&containing, status) {
        (Some(_), _) => PoolVerdict::InAllocation,
        (None, PageStatus::NotMapped { .. }) => PoolVerdict::NotMapped,
        (None, PageStatus::NotInDump { .. }) => PoolVerdict::NotInDump,
        (None, PageStatus::Resident { .. }) if region.is_some() || !allocations.is_empty() => {
            PoolVerdict::BetweenAllocations
        }
        (None, PageStatus::Resident { .. }) if regions_known => PoolVerdict::NotPool,
        (None, PageStatus::Resident { .. }) => PoolVerdict::NoAllocation,
    };
    Ok(PoolPage {
        va,
        page,
        status,
        region: region.map(|r| r.name.clone()),
        regions_known,
        allocator,
        verdict,
        containing,
        allocations,
        session,
        warnings: crate::warning::Warning::all(crate::warning::WarningKind::Find, warnings),
    })
}

/// The big-page entries (live and freed) covering `page`: the kernel's
/// table's and, with a session, that session's own table's, read through
/// its page tables.
fn big_on_page<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    session: Option<&SessionPoolMap>,
    page: KernelVa,
    opts: &PoolAtOptions,
    warnings: &mut Vec<String>,
) -> Vec<FoundAllocation> {
    let page_last = page.0 | (PAGE_SIZE - 1);
    let covers = |e: &&crate::pool::BigPoolEntry| {
        e.va.0 <= page_last && e.va.0.saturating_add(e.bytes) > page.0
    };
    let mut found = Vec::new();
    if let Some(t) = big_table(mem, syms, kern_base, opts.max_big_entries, warnings) {
        found.extend(
            t.entries
                .iter()
                .filter(covers)
                .map(|e| big_entry(mem, e, None)),
        );
    }
    if let Some(s) = session {
        let view = ProcessSpace::new(mem, s.dtb);
        let mut budget = crate::pool::SessionBigBudget::new(opts.max_big_entries);
        if let Some(t) = session_big_table(&view, syms, s, &mut budget, warnings) {
            let id = Some(s.session_id);
            found.extend(
                t.entries
                    .iter()
                    .filter(covers)
                    .map(|e| big_entry(&view, e, id)),
            );
        }
    }
    found
}

/// Whether the symbols say where pool is, and the pool region holding
/// `va`, if any.
fn region_of<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    va: KernelVa,
    warnings: &mut Vec<String>,
) -> (bool, Option<PoolRegion>) {
    // The search's notes on the regions speak of its walk: say it here.
    let (regions, _) = pool_regions(mem, syms, kern_base);
    let Some(regions) = regions else {
        warnings.push(format!(
            "the pool regions are not in the symbols: whether {va} is pool is not known"
        ));
        return (false, None);
    };
    let region = regions
        .into_iter()
        .find(|r| r.range.start <= va && va <= r.range.last);
    (true, region)
}

/// Of `found`, those overlapping `va`'s page, by address, and the one
/// holding `va` (an allocated one before a freed one that overlaps it).
fn on_page(
    found: Vec<FoundAllocation>,
    va: KernelVa,
) -> (Vec<FoundAllocation>, Option<FoundAllocation>) {
    let page = va.page_align().0;
    let page_last = page | (PAGE_SIZE - 1);
    let mut allocations: Vec<FoundAllocation> = found
        .into_iter()
        .filter(|a| a.extent().start <= page_last && a.extent().end > page)
        .collect();
    allocations.sort_by_key(|a| (a.extent().start, a.va, a.bytes, a.state));
    let containing = allocations
        .iter()
        .filter(|a| a.extent().contains(&va.0))
        .min_by_key(|a| (a.state != AllocationState::Allocated, a.bytes))
        .cloned();
    (allocations, containing)
}

/// The kernel `pool_at` reads.
struct Pools<'a, M: ?Sized> {
    mem: &'a M,
    syms: &'a KernelSymbols,
    kern_base: KernelVa,
    build: Option<u32>,
}

impl<M: Memory + ?Sized> Pools<'_, M> {
    /// Find's scan of the frames mapping `range`: through the source's own
    /// page tables, or through `session`'s, whose mapped pages and heap
    /// are filled in.
    fn scan_range(
        &self,
        range: VaRange,
        session: Option<&mut SessionPoolMap>,
        warnings: &mut Vec<String>,
    ) -> Result<PageScan, FindError> {
        let walk = [range];
        let opts = PageMapOptions::default();
        let map = match &session {
            Some(s) => {
                let mut map = PageMap::default();
                let space = ProcessSpace::new(self.mem, s.dtb);
                map.add_session(PageMap::walk(&space, Some(&walk), &opts), s.session_id);
                map
            }
            None => PageMap::walk(self.mem, Some(&walk), &opts),
        };
        warnings.extend(page_map_notes(&map));
        let sessions = Vec::from_iter(session.as_deref().cloned());
        let (mem, syms, base, build) = (self.mem, self.syms, self.kern_base, self.build);
        let mut scan = scan_mapped(mem, syms, base, build, &map, &sessions, warnings)?;
        if let Some(s) = session {
            s.mapped_pages = map.mappings().iter().map(|m| m.pages).sum();
            let met = std::mem::take(&mut scan.heaps);
            name_session_heaps(std::slice::from_mut(s), met, warnings);
        }
        Ok(scan)
    }
}

/// Where `va`'s page is; an error only when the source itself failed.
fn page_status<M: Memory + ?Sized>(mem: &M, va: KernelVa) -> Result<PageStatus, PoolAtError> {
    match mem.translate(va) {
        Ok(t) => {
            let mut b = [0u8; 1];
            match mem.read_physical(t.pa, &mut b) {
                Ok(()) => Ok(PageStatus::Resident { pa: t.pa }),
                Err(source @ MemoryError::Transport(_)) => Err(PoolAtError::Read { va, source }),
                Err(_) => Ok(PageStatus::NotInDump { pa: Some(t.pa) }),
            }
        }
        Err(MemoryError::NotPresent { level, .. }) => Ok(PageStatus::NotMapped { level }),
        Err(
            MemoryError::NotInSource { .. }
            | MemoryError::Truncated { .. }
            | MemoryError::NotCaptured { .. },
        ) => Ok(PageStatus::NotInDump { pa: None }),
        Err(source) => Err(PoolAtError::Read { va, source }),
    }
}
