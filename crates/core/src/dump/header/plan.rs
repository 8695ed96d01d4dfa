//! The validated page layout, in file order: runs or RDMP ranges as
//! extents, or the bitmap walked where it lies; and what it adds up to
//! (pages described, pages the file backs, the file size it needs).

use crate::addr::PAGE_SIZE;

use super::{HEADER_SIZE, Truncation};

/// A run of pages in the file: `pages` PFNs from `pfn`, whose data is
/// packed from `file_offset`. `index` is the run or range number in the
/// header, for patching and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlanExtent {
    pub index: usize,
    pub pfn: u64,
    pub pages: u64,
    pub file_offset: u64,
}

/// The validated page layout, in file order: what the physical map is
/// built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PagePlan {
    /// Full and RDMP dumps: a bounded list (≤ 42 runs, or one entry per 16
    /// bytes of RDMP metadata inside the file).
    Extents {
        extents: Vec<PlanExtent>,
        /// For RDMP: the number of 16-byte range slots (MetadataSize / 16).
        range_slots: u64,
    },
    /// Bitmap dumps: the bitmap stays in the file and is walked on demand.
    Bitmap {
        bitmap_offset: usize,
        bit_count: u64,
        first_page: u64,
    },
}

/// The bitmap's bytes (its length was checked against the file).
pub(crate) fn bitmap_bytes(file: &[u8], at: usize, bit_count: u64) -> &[u8] {
    let n = usize::try_from(bit_count.div_ceil(8)).unwrap_or(usize::MAX);
    let end = at.saturating_add(n).min(file.len());
    file.get(at..end).unwrap_or(&[])
}

/// Set bits among the first `bit_count` bits (unused bits of the last byte
/// are ignored, as kdmp-parser ignores them).
pub(super) fn popcount(bitmap: &[u8], bit_count: u64) -> u64 {
    let mut n: u64 = bitmap.iter().map(|b| u64::from(b.count_ones())).sum();
    let rem = bit_count % 8;
    if rem != 0
        && let Some(&last) = bitmap.last()
    {
        n -= u64::from((last & !((1u8 << rem) - 1)).count_ones());
    }
    n
}

/// Iterate the set bits of a bitmap as maximal runs `(first_pfn, pages)`.
pub(crate) fn bit_runs(bitmap: &[u8], bit_count: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut pfn = 0u64;
    std::iter::from_fn(move || {
        let bit = |p: u64| -> bool {
            p < bit_count
                && bitmap
                    .get((p / 8) as usize)
                    .is_some_and(|b| b & (1 << (p % 8)) != 0)
        };
        // Skip clear bits a byte at a time where possible.
        while pfn < bit_count && !bit(pfn) {
            if pfn.is_multiple_of(8) && bitmap.get((pfn / 8) as usize) == Some(&0) {
                pfn += 8;
            } else {
                pfn += 1;
            }
        }
        if pfn >= bit_count {
            return None;
        }
        let start = pfn;
        while pfn < bit_count && bit(pfn) {
            if pfn.is_multiple_of(8)
                && pfn + 8 <= bit_count
                && bitmap.get((pfn / 8) as usize) == Some(&0xFF)
            {
                pfn += 8;
            } else {
                pfn += 1;
            }
        }
        Some((start, pfn - start))
    })
}

/// Where the page data lies in the file, in file order: (file offset,
/// pages) per extent; a bitmap's present pages are packed into one run.
fn file_runs(file: &[u8], plan: &PagePlan) -> Vec<(u64, u64)> {
    match plan {
        PagePlan::Extents { extents, .. } => {
            extents.iter().map(|e| (e.file_offset, e.pages)).collect()
        }
        PagePlan::Bitmap {
            bitmap_offset,
            bit_count,
            first_page,
        } => {
            let present = popcount(bitmap_bytes(file, *bitmap_offset, *bit_count), *bit_count);
            vec![(*first_page, present)]
        }
    }
}

/// (pages described, file size the page data needs).
pub(super) fn plan_extent_totals(file: &[u8], plan: &PagePlan) -> (u64, u64) {
    let runs = file_runs(file, plan);
    let pages = runs.iter().map(|&(_, pages)| pages).sum();
    let end = runs.last().map_or(HEADER_SIZE as u64, |&(offset, pages)| {
        offset + pages * PAGE_SIZE
    });
    (pages, end)
}

/// Pages whose 4 KiB of data are entirely inside the file.
pub(crate) fn backed_pages(file: &[u8], plan: &PagePlan) -> u64 {
    let len = file.len() as u64;
    file_runs(file, plan)
        .into_iter()
        .map(|(offset, pages)| (len.saturating_sub(offset) / PAGE_SIZE).min(pages))
        .sum()
}

/// Pages the plan describes, and the truncation if the file holds fewer
/// (with its warning).
pub(super) fn truncation(
    file: &[u8],
    plan: &PagePlan,
    warnings: &mut Vec<String>,
) -> (u64, Option<Truncation>) {
    let file_len = file.len() as u64;
    let (described_pages, needed_bytes) = plan_extent_totals(file, plan);
    let backed = backed_pages(file, plan);
    let truncation = (backed < described_pages).then(|| Truncation {
        missing_pages: described_pages - backed,
        needed_bytes,
    });
    if let Some(t) = truncation {
        warnings.push(format!(
            "the file is truncated: {} of {described_pages} described pages are missing (file is {file_len} bytes, the page data needs {})",
            t.missing_pages, t.needed_bytes
        ));
    }
    (described_pages, truncation)
}
