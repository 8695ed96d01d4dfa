//! Where pool lives (the regions the page-table walk is restricted to),
//! which address maps each of its frames, and which of them the dump
//! lacks.

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
    let var = |name: &str| crate::pool::read::nt_var(syms, kern_base, name).ok();
    let mut regions = if let (Some(ptr), Some(en)) = (
        var("MiVisibleState"),
        syms.enum_values("_MI_ASSIGNED_REGION_TYPES"),
    ) {
        match mem.read_u64(ptr) {
            Ok(vs) if KernelVa(vs).is_kernel() => assigned_regions(mem, syms, vs, en),
            _ => {
                notes.push("MiVisibleState is unreadable: the pool regions are unknown".into());
                Vec::new()
            }
        }
    } else {
        legacy_regions(&|name: &str| var(name).and_then(|va| mem.read_u64(va).ok()))
    };
    let has = |name: &str| regions.iter().any(|r| r.name == name);
    if has("NonPagedPool") && has("PagedPool") {
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

/// The pool regions among `MiVisibleState` (at `vs`)'s SystemVaRegions,
/// named by `_MI_ASSIGNED_REGION_TYPES` (`en`) without its
/// `AssignedRegion` prefix: nonpaged, paged, special and session pool
/// (and 19041+'s SecureNonPagedPool), never a working set's list.
fn assigned_regions<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    vs: u64,
    en: &std::collections::BTreeMap<String, i64>,
) -> Vec<PoolRegion> {
    let pool = ["NonPagedPool", "PagedPool", "Session", "SpecialPool"];
    let mut regions = Vec::new();
    for (name, idx) in en {
        let Some(short) = name.strip_prefix("AssignedRegion") else {
            continue;
        };
        // 1607's WorkingSetPagedPool (and WorkingSetSystemCache) region
        // holds that system working set's list, not its pages: not pool.
        if short.starts_with("WorkingSet") || !pool.iter().any(|p| short.contains(p)) {
            continue;
        }
        let field = |member: &str| {
            let path = format!("SystemVaRegions[{idx}].{member}");
            let f = syms.field("_MI_VISIBLE_STATE", &path).ok()?;
            // `vs` is read from the target: near 2^64 the sum overflows.
            let at = vs.checked_add(f.offset)?;
            Some(mem.read_u64(KernelVa(at)).unwrap_or(0))
        };
        let (Some(b), Some(s)) = (field("BaseAddress"), field("NumberOfBytes")) else {
            continue;
        };
        if !KernelVa(b).is_kernel() {
            continue;
        }
        if let Some(range) = VaRange::from_base_size(b, s) {
            regions.push(PoolRegion {
                name: short.to_string(),
                range,
            });
        }
    }
    regions
}

/// Win7/8.1 (docs/pool-structures.md §6): the legacy pool variables, read
/// by `read`.
fn legacy_regions(read: &dyn Fn(&str) -> Option<u64>) -> Vec<PoolRegion> {
    let np_start = read("MmNonPagedPoolStart").or_else(|| read("MiNonPagedPoolStartAligned"));
    let np_end = read("MiNonPagedPoolEnd");
    let pp_end = read("MmPagedPoolEnd");
    let pp_start = read("MiPagedPoolStart").or_else(|| {
        let size = read("MmSizeOfPagedPoolInBytes")?;
        Some(pp_end?.checked_sub(size)?.wrapping_add(1))
    });
    [
        ("NonPagedPool", np_start, np_end),
        ("PagedPool", pp_start, pp_end),
    ]
    .into_iter()
    .filter_map(|(name, start, end)| {
        let (s, e) = (start?, end?);
        (KernelVa(s).is_kernel() && s <= e).then(|| PoolRegion {
            name: name.into(),
            range: VaRange::new(s, e),
        })
    })
    .collect()
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

/// Which address maps each pool frame: the kernel's own tables over the
/// pool regions, and each session's paged pool through its own processes'
/// tables ([`map_session_pools`]). Without any session mapped that way, the
/// dump's own tables are walked over the Session region as before (they
/// map the current session's).
pub(super) fn map_pool<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    regions: Option<&[PoolRegion]>,
    procs: &Result<ProcessList, SymbolError>,
    opts: &FindOptions<'_>,
    warnings: &mut Vec<String>,
) -> (PageMap, Vec<SessionPoolMap>) {
    let is_session = |r: &&PoolRegion| r.name == "Session";
    let kernel: Option<Vec<VaRange>> = regions.map(|r| {
        r.iter()
            .filter(|r| !is_session(r))
            .map(|r| r.range)
            .collect()
    });
    let mut map = PageMap::walk(mem, kernel.as_deref(), &opts.pagemap);
    let sessions = match procs {
        Ok(procs) => map_session_pools(mem, syms, procs, &mut map, &opts.pagemap, warnings),
        Err(e) => {
            warnings.push(format!(
                "the process list cannot be read ({e}): session pool is found only where the dump's own page tables map it"
            ));
            Vec::new()
        }
    };
    let session_space: Vec<VaRange> = regions
        .into_iter()
        .flatten()
        .filter(is_session)
        .map(|r| r.range)
        .collect();
    if sessions.is_empty() && !session_space.is_empty() {
        map.add(PageMap::walk(mem, Some(&session_space), &opts.pagemap));
    }
    (map, sessions)
}
