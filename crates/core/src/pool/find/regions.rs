//! Where pool lives (the regions the page-table walk is restricted to),
//! and which of its frames the dump lacks.

use super::*;

/// Pool regions from the symbols (docs/pool-structures.md §6): MiVisibleState's
/// SystemVaRegions indexed by `_MI_ASSIGNED_REGION_TYPES` (1607+), else
/// the legacy pool variables. `None` unless both nonpaged and paged pool
/// are known: the walk then takes the whole kernel half.
pub(super) fn pool_regions<M: Memory + ?Sized>(
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
        // Win7/8.1 (docs/pool-structures.md §6): the legacy pool variables.
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
pub(super) fn missing_frames(file: &dyn PageFile, map: &PageMap) -> u64 {
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
