//! What a finished scan hands to the report: the kept allocations made
//! one per block (a cache-aligned pair's two headers, a block seen through
//! two mappings) and sorted, the per-tag totals, and the sessions' heaps.

use super::*;

/// Each session's own heap, from the (session, heap) pairs the scan met
/// through the sessions' segments.
pub(super) fn name_session_heaps(
    sessions: &mut [SessionPoolMap],
    met: Vec<(u32, u64)>,
    warnings: &mut Vec<String>,
) {
    for (id, va) in met {
        let Some(s) = sessions.iter_mut().find(|s| s.session_id == id) else {
            continue;
        };
        match s.heap {
            None => s.heap = Some(KernelVa(va)),
            // A session has one paged pool: a second heap is a segment
            // that lied, or a heap that is not its pool.
            Some(first) => warnings.push(format!(
                "session {id}'s segments name two heaps, {first} and {}: both were used to check its headers",
                KernelVa(va)
            )),
        }
    }
}

/// The allocations of a finished scan: kept ones deduplicated, with the
/// big-page entries, sorted and counted; streamed ones (only counted)
/// followed by the big-page entries. Returns them, the per-tag totals and
/// the duplicate headers.
pub(super) fn finish_found(
    found: Found<'_>,
    big: Vec<FoundAllocation>,
    duplicates: u64,
) -> Result<(Vec<FoundAllocation>, Tally, u64), FindError> {
    if found.is_streamed() {
        for b in big.chunks(BATCH) {
            found.stream(b);
        }
        if found.stopped() {
            return Err(FindError::Stopped);
        }
        let (_, totals) = found.into_parts();
        return Ok((Vec::new(), totals, duplicates));
    }
    let (kept, _) = found.into_parts();
    let (mut found, duplicates) = deduplicated(kept, duplicates);
    found.extend(big);
    // By address; the rest only orders entries that share one (a freed
    // and a live big-page entry), the same way on every run.
    // Sessions' pools share their addresses: the session orders those.
    found.par_sort_unstable_by_key(|a| {
        (
            a.va,
            a.session_id,
            a.header,
            a.bytes,
            a.pool_type,
            a.tag.value(),
        )
    });
    let mut totals = Tally::new();
    for a in &found {
        tally(&mut totals, a);
    }
    Ok((found, totals, duplicates))
}

/// The scan's results with the second copy of each allocation whose two
/// headers (cache-aligned pairs on different pages) both matched removed;
/// returns them and the number of duplicates (`already` counted by the
/// scan itself).
fn deduplicated(
    mut scanned: Vec<(FoundAllocation, Option<u64>)>,
    already: u64,
) -> (Vec<FoundAllocation>, u64) {
    let mut duplicates = already;
    // The tie-breakers make the order, so the copy kept, the same on
    // every run (the sort is parallel and unstable).
    scanned.par_sort_unstable_by_key(|(a, key)| {
        (
            a.session_id,
            key.unwrap_or(a.va.0),
            a.header,
            a.va,
            a.pool_type,
        )
    });
    // In place: results can be hundreds of thousands, and each copy of
    // them is memory the user pays for.
    let mut last_key = None;
    let mut kept = 0usize;
    for i in 0..scanned.len() {
        // Sessions' pools share their addresses: a key is one session's.
        let key = scanned[i].1.map(|k| (scanned[i].0.session_id, k));
        if let Some(k) = key {
            if last_key == Some(k) && kept > 0 {
                duplicates += 1;
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
    // Collected in place (the standard library reuses the allocation).
    let found = scanned.into_iter().map(|(a, _)| a).collect();
    (found, duplicates)
}
