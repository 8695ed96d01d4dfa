//! The physical-memory map of a dump: which PFN's 4 KiB live where in the
//! file.
//!
//! Stored as extents (a PFN range whose pages are packed consecutively in
//! the file), sorted by PFN for lookups. An extent costs 24 bytes however
//! many pages it spans, so the map is small even for a 1 TiB dump, and it
//! is plain data: `Send + Sync`, unlike kdmp-parser's parser.
//!
//! Pages the header describes but whose data lies past the end of a
//! truncated file stay in the map (lookups answer `Lookup::Truncated`).
//! For a bitmap dump those are every set bit from some PFN on; they are
//! answered from the bitmap in the file rather than stored, so a hostile
//! bitmap costs no memory.

use crate::addr::{PAGE_SIZE, Pfn};

use super::header::{PagePlan, PlanExtent, bit_runs, bitmap_bytes};

pub use crate::memory::PhysExtent;

/// Bitmap pages described from `from_pfn` on, all past the end of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BitmapTail {
    pub bitmap_offset: usize,
    pub bit_count: u64,
    pub from_pfn: u64,
}

/// Where a PFN's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// At this file offset, all 4 KiB inside the file.
    Backed(u64),
    /// Described, but (partly) past the end of the file.
    Truncated,
    /// Not part of the dump.
    Absent,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PhysMap {
    /// Sorted by PFN, non-overlapping, no empty extents.
    by_pfn: Vec<PhysExtent>,
    /// Indices into `by_pfn`, by ascending file offset.
    file_order: Vec<usize>,
    tail: Option<BitmapTail>,
    file_len: u64,
}

impl PhysMap {
    /// Build from extents (any order; they must not overlap, which the
    /// header parser checked) and an optional bitmap tail.
    pub fn new(mut extents: Vec<PhysExtent>, tail: Option<BitmapTail>, file_len: u64) -> Self {
        extents.retain(|e| e.pages > 0);
        extents.sort_by_key(|e| e.pfn);
        let by_pfn = coalesce(extents);
        let mut file_order: Vec<usize> = (0..by_pfn.len()).collect();
        file_order.sort_by_key(|&i| by_pfn[i].file_offset);
        Self {
            by_pfn,
            file_order,
            tail,
            file_len,
        }
    }

    pub fn lookup(&self, file: &[u8], pfn: u64) -> Lookup {
        let i = self.by_pfn.partition_point(|e| e.end_pfn() <= pfn);
        if let Some(e) = self.by_pfn.get(i)
            && e.pfn.0 <= pfn
        {
            let off = e.file_offset + (pfn - e.pfn.0) * PAGE_SIZE;
            return match off.checked_add(PAGE_SIZE) {
                Some(end) if end <= self.file_len => Lookup::Backed(off),
                _ => Lookup::Truncated,
            };
        }
        if let Some(t) = self.tail
            && pfn >= t.from_pfn
            && pfn < t.bit_count
        {
            let bitmap = bitmap_bytes(file, t.bitmap_offset, t.bit_count);
            if bitmap
                .get((pfn / 8) as usize)
                .is_some_and(|b| b & (1 << (pfn % 8)) != 0)
            {
                return Lookup::Truncated;
            }
        }
        Lookup::Absent
    }

    /// Extents in file order (including parts past the end of the file).
    pub fn extents_in_file_order(&self) -> impl Iterator<Item = PhysExtent> + '_ {
        self.file_order.iter().map(|&i| self.by_pfn[i])
    }

    /// Pages whose data is entirely in the file.
    pub fn backed_pages(&self) -> u64 {
        self.by_pfn
            .iter()
            .map(|e| (self.file_len.saturating_sub(e.file_offset) / PAGE_SIZE).min(e.pages))
            .sum()
    }
}

/// Merge neighbours that continue each other in both PFN and file offset.
/// Input sorted by PFN. Two maps are equal iff their coalesced forms are.
pub(crate) fn coalesce(sorted: impl IntoIterator<Item = PhysExtent>) -> Vec<PhysExtent> {
    let mut out: Vec<PhysExtent> = Vec::new();
    for e in sorted {
        if e.pages == 0 {
            continue;
        }
        if let Some(last) = out.last_mut()
            && last.end_pfn() == e.pfn.0
            && last.file_offset + last.pages * PAGE_SIZE == e.file_offset
        {
            last.pages += e.pages;
            continue;
        }
        out.push(e);
    }
    out
}

/// The map a validated plan describes, split into what the file backs and
/// what lies past its end, plus the edits that show kdmp-parser only the
/// backed part (so it never allocates for pages the file cannot hold).
#[derive(Debug, Clone, Default)]
pub(crate) struct PlannedMap {
    /// Backed pages, coalesced, sorted by PFN.
    pub backed: Vec<PhysExtent>,
    /// Described pages past the end of the file (full and RDMP dumps).
    pub truncated: Vec<PhysExtent>,
    pub tail: Option<BitmapTail>,
    /// `(file offset, bytes)` overlays for kdmp-parser's view of the file.
    pub clamp: Vec<(u64, Vec<u8>)>,
}

pub(crate) fn plan_map(file: &[u8], plan: &PagePlan, complete_rdmp: bool) -> PlannedMap {
    let mut out = PlannedMap::default();
    match plan {
        PagePlan::Extents {
            extents,
            range_slots,
        } => plan_extents(
            &mut out,
            file.len() as u64,
            extents,
            *range_slots,
            complete_rdmp,
        ),
        PagePlan::Bitmap {
            bitmap_offset,
            bit_count,
            first_page,
        } => plan_bitmap(&mut out, file, *bitmap_offset, *bit_count, *first_page),
    }
    out.backed.sort_by_key(|e| e.pfn);
    out.backed = coalesce(std::mem::take(&mut out.backed));
    out
}

/// A run-based dump (full or RDMP): each run as far as the file holds it;
/// the first run cut short is where kdmp-parser's view is clamped.
fn plan_extents(
    out: &mut PlannedMap,
    len: u64,
    extents: &[PlanExtent],
    range_slots: u64,
    complete_rdmp: bool,
) {
    use super::header::off;
    let fits =
        |file_offset: u64, pages: u64| (len.saturating_sub(file_offset) / PAGE_SIZE).min(pages);
    let mut backed_total = 0u64;
    let mut clamped = false;
    for e in extents {
        let n = fits(e.file_offset, e.pages);
        backed_total += n;
        out.backed.push(PhysExtent {
            pfn: Pfn(e.pfn),
            pages: n,
            file_offset: e.file_offset,
        });
        if n < e.pages {
            out.truncated.push(PhysExtent {
                pfn: Pfn(e.pfn + n),
                pages: e.pages - n,
                file_offset: e.file_offset + n * PAGE_SIZE,
            });
            if !clamped {
                clamped = true;
                let i = e.index as u64;
                if range_slots == 0 {
                    // Full dump: stop the run list after this run,
                    // shortened to what the file holds.
                    out.clamp
                        .push((off::RUN_COUNT as u64, (i as u32 + 1).to_le_bytes().to_vec()));
                    out.clamp
                        .push((off::RUNS as u64 + 16 * i + 8, n.to_le_bytes().to_vec()));
                } else {
                    // RDMP: shorten this range and terminate the
                    // list after it (a PFN of 0 ends it).
                    let slot = off::RDMP_RANGES as u64 + 16 * i;
                    out.clamp.push((slot + 8, n.to_le_bytes().to_vec()));
                    if i + 1 < range_slots {
                        out.clamp.push((slot + 16, 0u64.to_le_bytes().to_vec()));
                    }
                }
            }
        }
    }
    if clamped && complete_rdmp {
        out.clamp.push((
            off::RDMP_TOTAL_PAGES as u64,
            backed_total.to_le_bytes().to_vec(),
        ));
    }
}

/// A bitmap dump: the pages the bitmap names, in order, as far as the file
/// holds them.
fn plan_bitmap(
    out: &mut PlannedMap,
    file: &[u8],
    bitmap_offset: usize,
    bit_count: u64,
    first_page: u64,
) {
    use super::header::off;
    let len = file.len() as u64;
    let bitmap = bitmap_bytes(file, bitmap_offset, bit_count);
    let mut left = len.saturating_sub(first_page) / PAGE_SIZE;
    let mut offset = first_page;
    for (pfn, pages) in bit_runs(bitmap, bit_count) {
        let n = pages.min(left);
        if n > 0 {
            out.backed.push(PhysExtent {
                pfn: Pfn(pfn),
                pages: n,
                file_offset: offset,
            });
            offset += n * PAGE_SIZE;
            left -= n;
        }
        if n < pages {
            let from_pfn = pfn + n;
            out.tail = Some(BitmapTail {
                bitmap_offset,
                bit_count,
                from_pfn,
            });
            // kdmp-parser walks the bitmap only up to the first
            // page the file does not hold.
            out.clamp
                .push((off::BMP_BITS as u64, from_pfn.to_le_bytes().to_vec()));
            break;
        }
    }
}
