//! Which kernel virtual address maps each physical frame: one walk of the
//! kernel's page tables (docs/pool-structures.md §6), so a scanner can read frames in
//! dump-file order at memory bandwidth and still report `!poolfind`'s
//! virtual addresses.
//!
//! The walk covers the kernel half (PML4 entries 256-511), restricted to
//! the given VA ranges (the pool regions) when they are known, and takes
//! 4 KiB, 2 MiB and 1 GiB pages and transition PTEs (the frame still holds
//! the page). A frame mapped at several addresses is kept once, at the
//! address of the mapping that starts lowest in physical memory (lowest VA
//! on ties); the others are counted as aliases.
//!
//! Page tables are outside input. The walk never enters a table twice (the
//! self-map and any entry pointing back up the hierarchy are skipped and
//! counted), reads at most [`PageMapOptions::max_tables`] tables and keeps
//! at most [`PageMapOptions::max_mappings`] runs, so hostile tables end it
//! quickly and in bounded memory; the stats say what was skipped.
//!
//! ```
//! # fn demo(mem: &dyn pooldump_core::Memory) {
//! use pooldump_core::pagemap::{PageMap, PageMapOptions, VaRange};
//! let pool = [VaRange::new(0xFFFF_A000_0000_0000, 0xFFFF_A07F_FFFF_FFFF)];
//! let map = PageMap::walk(mem, Some(&pool), &PageMapOptions::default());
//! if let Some(va) = map.va_of(pooldump_core::Pfn(0x1234)) {
//!     println!("frame 0x1234 is {va}");
//! }
//! println!("{} pages mapped, {} aliases", map.stats.mapped_pages, map.stats.alias_pages);
//! # }
//! ```

use std::collections::HashSet;

use serde::Serialize;

use crate::addr::{KernelVa, PAGE_SIZE, Pfn, PhysAddr};
use crate::memory::Memory;
use crate::memory::walk::{
    HUGE_MASK, LARGE_MASK, PFN_MASK, PTE_LARGE, PTE_NX, PTE_PRESENT, PTE_PROTOTYPE, PTE_TRANSITION,
    PTE_USER, PTE_WRITE,
};

/// Bounds on the walk.
#[derive(Debug, Clone)]
pub struct PageMapOptions {
    /// Page-table pages read at most (1 Mi tables map 2 TiB in 4 KiB pages).
    pub max_tables: u64,
    /// Mapping runs kept at most (each costs 40 bytes).
    pub max_mappings: u64,
}

impl Default for PageMapOptions {
    fn default() -> Self {
        Self {
            max_tables: 1 << 20,
            max_mappings: 1 << 24,
        }
    }
}

/// An inclusive range of kernel virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct VaRange {
    /// The first address in the range.
    pub start: KernelVa,
    /// The last address in the range.
    pub last: KernelVa,
}

impl VaRange {
    /// The range `start..=last`.
    pub const fn new(start: u64, last: u64) -> Self {
        Self {
            start: KernelVa(start),
            last: KernelVa(last),
        }
    }
    /// `bytes` from `start`, clamped to the top of the address space.
    pub fn from_base_size(start: u64, bytes: u64) -> Option<Self> {
        if bytes == 0 {
            return None;
        }
        Some(Self::new(start, start.saturating_add(bytes - 1)))
    }
    fn overlaps(&self, lo: u64, hi: u64) -> bool {
        self.start.0 <= hi && lo <= self.last.0
    }
}

/// A run of pages: `pages` frames from `pfn` mapped at `va` onwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mapping {
    /// The first page's virtual address.
    pub va: KernelVa,
    /// The first page's frame.
    pub pfn: Pfn,
    /// Consecutive 4 KiB pages, contiguous in both address spaces.
    pub pages: u64,
    /// The leaf entry's R/W bit (a transition PTE's saved protection).
    pub writable: bool,
    /// The leaf entry's NX bit.
    pub no_execute: bool,
    /// Transition PTEs: not valid, but the frame still holds the page.
    pub transition: bool,
    /// Mapped by a 2 MiB or 1 GiB page.
    pub large: bool,
    /// Session space, mapped by the page tables of this session's
    /// processes only ([`PageMap::add_session`]); `None` for the kernel's
    /// own mappings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<u32>,
}

impl Mapping {
    fn end_pfn(&self) -> u64 {
        self.pfn.0 + self.pages
    }
}

/// What the walk saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PageMapStats {
    /// The VA ranges walked (`None`: the whole kernel half).
    pub ranges: Option<Vec<VaRange>>,
    /// Paging-structure pages read.
    pub tables_read: u64,
    /// Table pages the source does not hold (whatever they map is unknown).
    pub tables_unreadable: u64,
    /// Entries pointing at the PML4 (the self-map, or a hostile copy).
    pub self_references: u64,
    /// Entries pointing at a table already walked (a loop or a shared
    /// table; Windows shares none in kernel space).
    pub tables_revisited: u64,
    /// Entries with the user bit in kernel space, skipped.
    pub user_entries: u64,
    /// Distinct frames mapped (each once).
    pub mapped_pages: u64,
    /// Further mappings of frames already mapped elsewhere.
    pub alias_pages: u64,
    /// Transition PTEs mapped (their frames still hold the pages).
    pub transition_pages: u64,
    /// Non-present, non-transition PTEs (paged out, demand-zero,
    /// prototype): their contents are not in memory.
    pub not_present_pages: u64,
    /// Non-present entries above the PTE level (a page table paged out).
    pub not_present_tables: u64,
    /// A bound was reached: the map is partial.
    pub truncated: Option<String>,
}

/// Frames to kernel virtual addresses.
#[derive(Debug, Clone, Default)]
pub struct PageMap {
    /// Disjoint in PFN, sorted by PFN.
    by_pfn: Vec<Mapping>,
    /// What the walk that built the map saw.
    pub stats: PageMapStats,
}

const KERNEL_HALF: u64 = 0xFFFF_8000_0000_0000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Pml4,
    Pdpt,
    Pd,
    Pt,
}

impl Level {
    const fn shift(self) -> u32 {
        match self {
            Level::Pml4 => 39,
            Level::Pdpt => 30,
            Level::Pd => 21,
            Level::Pt => 12,
        }
    }
    const fn below(self) -> Option<Level> {
        match self {
            Level::Pml4 => Some(Level::Pdpt),
            Level::Pdpt => Some(Level::Pd),
            Level::Pd => Some(Level::Pt),
            Level::Pt => None,
        }
    }
}

struct Walker<'a, M: Memory + ?Sized> {
    mem: &'a M,
    pml4: u64,
    ranges: Vec<VaRange>,
    /// Without known pool regions, take only writable pages: pool is data.
    writable_only: bool,
    opts: &'a PageMapOptions,
    visited: HashSet<u64>,
    out: Vec<Mapping>,
    stats: PageMapStats,
}

impl PageMap {
    /// Walk the kernel page tables of `mem` (its kernel DTB).
    pub fn walk<M: Memory + ?Sized>(
        mem: &M,
        ranges: Option<&[VaRange]>,
        opts: &PageMapOptions,
    ) -> PageMap {
        let pml4 = mem.kernel_dtb().0 & PFN_MASK;
        let mut ranges_v: Vec<VaRange> = match ranges {
            Some(r) => r
                .iter()
                .filter(|r| r.start.0 <= r.last.0)
                .map(|r| VaRange::new(r.start.0.max(KERNEL_HALF), r.last.0))
                .filter(|r| r.start.0 <= r.last.0)
                .collect(),
            None => vec![VaRange::new(KERNEL_HALF, u64::MAX)],
        };
        ranges_v.sort();
        let mut w = Walker {
            mem,
            pml4,
            ranges: ranges_v,
            writable_only: ranges.is_none(),
            opts,
            visited: HashSet::new(),
            out: Vec::new(),
            stats: PageMapStats {
                ranges: ranges.map(|r| r.to_vec()),
                ..Default::default()
            },
        };
        w.visited.insert(pml4 >> 12);
        w.table(pml4, Level::Pml4, 0, true);
        let mut stats = w.stats;
        let by_pfn = primary(w.out, &mut stats);
        PageMap { by_pfn, stats }
    }

    /// Add the mappings of one session's space, walked through the page
    /// tables of one of its processes (`walk` over a
    /// [`ProcessSpace`](crate::memory::ProcessSpace)), as session `id`'s.
    /// Where a frame is mapped twice, a session's mapping is kept; the
    /// walks' counts add up.
    pub fn add_session(&mut self, walk: PageMap, id: u32) {
        self.merge([(walk, Some(id))]);
    }

    /// [`Self::add_session`] for many sessions at once: `(walk, id)` each,
    /// merged in one pass however many there are.
    pub fn add_sessions(&mut self, walks: impl IntoIterator<Item = (PageMap, u32)>) {
        self.merge(walks.into_iter().map(|(w, id)| (w, Some(id))));
    }

    /// Add the mappings of another walk of the kernel's own tables.
    pub fn add(&mut self, walk: PageMap) {
        self.merge([(walk, None)]);
    }

    fn merge(&mut self, walks: impl IntoIterator<Item = (PageMap, Option<u32>)>) {
        let mut all = std::mem::take(&mut self.by_pfn);
        for (walk, session) in walks {
            all.extend(walk.by_pfn.into_iter().map(|m| Mapping { session, ..m }));
            self.add_stats(walk.stats);
        }
        self.stats.mapped_pages = 0;
        self.by_pfn = primary(all, &mut self.stats);
    }

    /// Count another walk's figures in.
    fn add_stats(&mut self, w: PageMapStats) {
        let s = &mut self.stats;
        s.tables_read += w.tables_read;
        s.tables_unreadable += w.tables_unreadable;
        s.self_references += w.self_references;
        s.tables_revisited += w.tables_revisited;
        s.user_entries += w.user_entries;
        s.alias_pages += w.alias_pages;
        s.transition_pages += w.transition_pages;
        s.not_present_pages += w.not_present_pages;
        s.not_present_tables += w.not_present_tables;
        if s.truncated.is_none() {
            s.truncated = w.truncated;
        }
        if let (Some(r), Some(wr)) = (&mut s.ranges, w.ranges) {
            for x in wr {
                if !r.contains(&x) {
                    r.push(x);
                }
            }
        }
    }

    /// The mappings, one per frame run, sorted by PFN.
    pub fn mappings(&self) -> &[Mapping] {
        &self.by_pfn
    }

    /// The mapping that holds `pfn`.
    pub fn lookup(&self, pfn: Pfn) -> Option<&Mapping> {
        let i = self.by_pfn.partition_point(|m| m.end_pfn() <= pfn.0);
        self.by_pfn.get(i).filter(|m| m.pfn.0 <= pfn.0)
    }

    /// The virtual address of the start of frame `pfn`.
    pub fn va_of(&self, pfn: Pfn) -> Option<KernelVa> {
        self.lookup(pfn)
            .map(|m| KernelVa(m.va.0 + (pfn.0 - m.pfn.0) * PAGE_SIZE))
    }

    /// Runs of mapped frames, by PFN, merged where the frames are
    /// consecutive (whatever their addresses).
    pub fn frame_runs(&self) -> Vec<(Pfn, u64)> {
        let mut runs: Vec<(Pfn, u64)> = Vec::new();
        for m in &self.by_pfn {
            match runs.last_mut() {
                Some((p, n)) if p.0 + *n == m.pfn.0 => *n += m.pages,
                _ => runs.push((m.pfn, m.pages)),
            }
        }
        runs
    }
}

impl<M: Memory + ?Sized> Walker<'_, M> {
    fn wants(&self, lo: u64, hi: u64) -> bool {
        self.ranges.iter().any(|r| r.overlaps(lo, hi))
    }

    fn stop(&mut self, why: String) {
        self.stats.truncated.get_or_insert(why);
    }

    /// Walk the table at physical `table` covering VAs from `base`.
    fn table(&mut self, table: u64, level: Level, base: u64, top: bool) {
        if self.stats.truncated.is_some() {
            return;
        }
        if self.stats.tables_read >= self.opts.max_tables {
            let n = self.opts.max_tables;
            self.stop(format!("read {n} page tables, the most allowed"));
            return;
        }
        self.stats.tables_read += 1;
        let mut page = vec![0u8; PAGE_SIZE as usize];
        if self.mem.read_physical(PhysAddr(table), &mut page).is_err() {
            self.stats.tables_unreadable += 1;
            return;
        }
        let span = 1u64 << level.shift();
        let first = if top { 256 } else { 0 };
        for i in first..512u64 {
            let lo = KernelVa::sign_extended(base + i * span).0;
            let hi = lo + (span - 1);
            if !self.wants(lo, hi) {
                continue;
            }
            let at = (i * 8) as usize;
            let e = u64::from_le_bytes(page[at..at + 8].try_into().expect("8 bytes"));
            if e == 0 {
                continue;
            }
            if e & PTE_PRESENT == 0 {
                if level == Level::Pt {
                    if e & (PTE_TRANSITION | PTE_PROTOTYPE) == PTE_TRANSITION {
                        self.leaf(lo, e & PFN_MASK, 1, e, true, false);
                    } else {
                        self.stats.not_present_pages += 1;
                    }
                } else {
                    self.stats.not_present_tables += 1;
                }
                continue;
            }
            if e & PTE_USER != 0 {
                self.stats.user_entries += 1;
                continue;
            }
            let large = e & PTE_LARGE != 0;
            match level {
                Level::Pt => self.leaf(lo, e & PFN_MASK, 1, e, false, false),
                Level::Pd if large => self.leaf(lo, e & LARGE_MASK, 512, e, false, true),
                Level::Pdpt if large => self.leaf(lo, e & HUGE_MASK, 512 * 512, e, false, true),
                _ => {
                    let next = e & PFN_MASK;
                    if next == self.pml4 {
                        self.stats.self_references += 1;
                        continue;
                    }
                    if !self.visited.insert(next >> 12) {
                        self.stats.tables_revisited += 1;
                        continue;
                    }
                    let below = level.below().expect("the PTE level has no tables below");
                    self.table(next, below, lo & 0x0000_FFFF_FFFF_FFFF, false);
                }
            }
            if self.stats.truncated.is_some() {
                return;
            }
        }
    }

    /// A leaf: `pages` frames from physical `pa` at `va`, clipped to the
    /// wanted ranges.
    fn leaf(&mut self, va: u64, pa: u64, pages: u64, e: u64, transition: bool, large: bool) {
        // A transition PTE keeps its protection in the software bits 5-9
        // (MM_READWRITE is 4; 5-7 are write-copy and execute variants).
        let writable = e & PTE_WRITE != 0 || (transition && (e >> 5) & 4 != 0);
        if self.writable_only && !writable {
            return;
        }
        let no_execute = e & PTE_NX != 0;
        let last = va + (pages * PAGE_SIZE - 1);
        let ranges = std::mem::take(&mut self.ranges);
        for r in &ranges {
            if !r.overlaps(va, last) {
                continue;
            }
            let lo = va.max(r.start.0);
            let hi = last.min(r.last.0);
            let skip = (lo - va) / PAGE_SIZE;
            let n = (hi - lo) / PAGE_SIZE + 1;
            let m = Mapping {
                va: KernelVa(lo - lo % PAGE_SIZE),
                pfn: Pfn(pa / PAGE_SIZE + skip),
                pages: n,
                writable,
                no_execute,
                transition,
                large,
                session: None,
            };
            if transition {
                self.stats.transition_pages += n;
            }
            self.push(m);
        }
        self.ranges = ranges;
    }

    fn push(&mut self, m: Mapping) {
        if let Some(p) = self.out.last_mut()
            && p.va.0 + p.pages * PAGE_SIZE == m.va.0
            && p.end_pfn() == m.pfn.0
            && (p.writable, p.no_execute, p.transition, p.large)
                == (m.writable, m.no_execute, m.transition, m.large)
        {
            p.pages += m.pages;
            return;
        }
        if self.out.len() as u64 >= self.opts.max_mappings {
            let n = self.opts.max_mappings;
            self.stop(format!("kept {n} mapping runs, the most allowed"));
            return;
        }
        self.out.push(m);
    }
}

/// Keep each frame once: sort by PFN, then cut every run down to the part
/// no earlier run covers.
fn primary(mut all: Vec<Mapping>, stats: &mut PageMapStats) -> Vec<Mapping> {
    // A session's mapping of a frame before the kernel's of the same
    // address (the dump's own tables map the current session too).
    all.sort_by_key(|m| (m.pfn, m.va, m.session.is_none()));
    let mut out: Vec<Mapping> = Vec::with_capacity(all.len());
    let mut covered = 0u64;
    for mut m in all {
        if m.end_pfn() <= covered {
            stats.alias_pages += m.pages;
            continue;
        }
        if m.pfn.0 < covered {
            let cut = covered - m.pfn.0;
            stats.alias_pages += cut;
            m.pfn.0 += cut;
            m.va.0 += cut * PAGE_SIZE;
            m.pages -= cut;
        }
        covered = m.end_pfn();
        stats.mapped_pages += m.pages;
        out.push(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Machine;

    const POOL: u64 = 0xFFFF_A000_0000_0000;

    fn set_pte(m: &mut Machine, va: u64, v: u64) {
        // Map first so the tables exist, then overwrite the PTE.
        let mut table = m.dtb_pfn;
        for shift in [39u32, 30, 21] {
            let idx = (va >> shift) & 0x1FF;
            let e = u64::from_le_bytes(
                m.pages[&table][(idx * 8) as usize..(idx * 8 + 8) as usize]
                    .try_into()
                    .unwrap(),
            );
            table = (e & PFN_MASK) >> 12;
        }
        let at = (((va >> 12) & 0x1FF) * 8) as usize;
        m.pages.get_mut(&table).unwrap()[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn frames_map_to_their_addresses_and_aliases_count_once() {
        let mut m = Machine::new();
        let a = m.alloc();
        let b = m.alloc();
        m.map(POOL, a);
        m.map(POOL + 0x1000, b);
        // The same frame again, higher up: an alias.
        m.map(POOL + 0x10_0000, a);
        // Outside the pool range: not in a restricted map.
        let c = m.alloc();
        m.map(0xFFFF_B000_0000_0000, c);
        let pool = [VaRange::from_base_size(POOL, 1 << 30).unwrap()];
        let map = PageMap::walk(&m, Some(&pool), &PageMapOptions::default());
        assert_eq!(map.va_of(Pfn(a)), Some(KernelVa(POOL)));
        assert_eq!(map.va_of(Pfn(b)), Some(KernelVa(POOL + 0x1000)));
        assert_eq!(map.va_of(Pfn(c)), None);
        assert_eq!((map.stats.mapped_pages, map.stats.alias_pages), (2, 1));
        let all = PageMap::walk(&m, None, &PageMapOptions::default());
        assert_eq!(all.va_of(Pfn(c)), Some(KernelVa(0xFFFF_B000_0000_0000)));
    }

    #[test]
    fn a_session_s_walk_names_its_frames_and_keeps_a_frame_both_map() {
        const SESSION: u64 = 0xFFFF_F900_C000_0000;
        let mut m = Machine::new();
        let (a, b) = (m.alloc(), m.alloc());
        m.map(POOL, a);
        m.map(SESSION, b);
        // The dump's own tables map the current session too.
        let mut map = PageMap::walk(&m, None, &PageMapOptions::default());
        let range = [VaRange::from_base_size(SESSION, 1 << 20).unwrap()];
        let session = PageMap::walk(&m, Some(&range), &PageMapOptions::default());
        let read = map.stats.tables_read + session.stats.tables_read;
        map.add_sessions([(session, 3)]);
        assert_eq!(map.lookup(Pfn(b)).unwrap().session, Some(3));
        assert_eq!(map.lookup(Pfn(a)).unwrap().session, None);
        assert_eq!(map.va_of(Pfn(b)), Some(KernelVa(SESSION)));
        assert_eq!((map.stats.mapped_pages, map.stats.alias_pages), (2, 1));
        assert_eq!(map.stats.tables_read, read);
    }

    #[test]
    fn transition_and_paged_out_ptes() {
        let mut m = Machine::new();
        let a = m.alloc();
        m.map(POOL, a);
        m.map(POOL + 0x1000, a);
        set_pte(&mut m, POOL + 0x1000, 0x4_0000_0082); // pagefile PTE
        let t = m.alloc();
        m.map(POOL + 0x2000, t);
        set_pte(&mut m, POOL + 0x2000, (t << 12) | PTE_TRANSITION | (4 << 5));
        let map = PageMap::walk(&m, None, &PageMapOptions::default());
        assert_eq!(map.stats.not_present_pages, 1);
        assert_eq!(map.stats.transition_pages, 1);
        assert_eq!(map.va_of(Pfn(t)), Some(KernelVa(POOL + 0x2000)));
    }

    #[test]
    fn loops_and_self_maps_end_quickly() {
        let mut m = Machine::new();
        let a = m.alloc();
        m.map(POOL, a);
        let pml4 = m.dtb_pfn;
        // A self-map in every free kernel slot, and every free PDPTE of the
        // pool's PDPT pointing at the PML4: a naive walker never ends.
        let pdpt = {
            let e = u64::from_le_bytes(
                m.pages[&pml4][((POOL >> 39) & 0x1FF) as usize * 8..][..8]
                    .try_into()
                    .unwrap(),
            );
            (e & PFN_MASK) >> 12
        };
        for i in 256..512usize {
            let p = m.pages.get_mut(&pml4).unwrap();
            if p[i * 8..i * 8 + 8] == [0; 8] {
                p[i * 8..i * 8 + 8].copy_from_slice(&((pml4 << 12) | 3).to_le_bytes());
            }
            let q = m.pages.get_mut(&pdpt).unwrap();
            if q[i * 8..i * 8 + 8] == [0; 8] {
                q[i * 8..i * 8 + 8].copy_from_slice(&((pml4 << 12) | 3).to_le_bytes());
            }
        }
        let map = PageMap::walk(&m, None, &PageMapOptions::default());
        assert_eq!(map.va_of(Pfn(a)), Some(KernelVa(POOL)));
        assert!(map.stats.self_references > 500);
        assert!(map.stats.tables_read < 10);
    }

    #[test]
    fn shared_tables_and_bounds() {
        let mut m = Machine::new();
        let a = m.alloc();
        m.map(POOL, a);
        // Every PDE of the pool's PD points at the same page table.
        let mut table = m.dtb_pfn;
        for shift in [39u32, 30] {
            let idx = (POOL >> shift) & 0x1FF;
            let e = u64::from_le_bytes(
                m.pages[&table][(idx * 8) as usize..][..8]
                    .try_into()
                    .unwrap(),
            );
            table = (e & PFN_MASK) >> 12;
        }
        let pd = table;
        let pde = m.pages[&pd][..8].to_vec();
        for i in 1..512usize {
            m.pages.get_mut(&pd).unwrap()[i * 8..i * 8 + 8].copy_from_slice(&pde);
        }
        let map = PageMap::walk(&m, None, &PageMapOptions::default());
        assert_eq!(map.stats.tables_revisited, 511);
        assert_eq!(map.stats.mapped_pages, 1);
        let tight = PageMapOptions {
            max_tables: 2,
            ..Default::default()
        };
        let map = PageMap::walk(&m, None, &tight);
        assert!(map.stats.truncated.is_some());
        assert_eq!(map.stats.tables_read, 2);
    }
}
