//! The big-page table's part of a search: the entries whose tag is
//! wanted, as allocations (big pages carry no pool header).

use super::*;
use crate::memory::ProcessSpace;
use crate::pool::SessionBigBudget;

/// The big-page table's entries (live and freed) whose tag is wanted.
/// Whether a live entry's page is in the dump is known by reading a byte
/// of it, which maps the kernel's fault-around window (64 KiB) of the
/// dump: with `release`, the dump's map is dropped every 256 entries, so
/// the resident set does not grow with the entries matched (1,500 of them
/// used to add 70 MB on the 4 GiB bench dump, docs/performance.md).
pub(super) fn big_pool_matches<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    wanted: &TagSet,
    release: Option<&dyn PageFile>,
    warnings: &mut Vec<String>,
) -> (Vec<FoundAllocation>, Option<BigPoolScan>) {
    let max_entries = BigPoolOptions::default().max_entries;
    let Some(t) = big_table(mem, syms, kern_base, max_entries, warnings) else {
        return (Vec::new(), None);
    };
    let (mut found, mut live, mut freed) = (Vec::new(), 0, 0);
    for e in t.entries.iter().filter(|e| wanted.contains(e.tag.value())) {
        if e.freed {
            freed += 1;
        } else {
            live += 1;
        }
        found.push(big_entry(mem, e, None));
        if let Some(f) = release
            && found.len() % 256 == 0
        {
            f.release_file_range(0, f.file_bytes().len());
        }
    }
    if let Some(f) = release {
        f.release_file_range(0, f.file_bytes().len());
    }
    let scan = BigPoolScan {
        table: t.table,
        size: t.size,
        matched_live: live,
        matched_freed: freed,
    };
    (found, Some(scan))
}

/// Each session's own big-page table (`PoolTrackBigPages`, read through
/// the page tables its pool was mapped through): the entries whose tag is
/// wanted, as allocations of that session, and the table's figures in
/// [`SessionPoolMap::big_pages`]. Session pool's big allocations are
/// tracked there, never in PoolBigPageTable.
pub(super) fn session_big_matches<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    sessions: &mut [SessionPoolMap],
    wanted: &TagSet,
    warnings: &mut Vec<String>,
) -> Vec<FoundAllocation> {
    let mut found = Vec::new();
    let mut budget = SessionBigBudget::new(BigPoolOptions::default().max_entries);
    for s in sessions.iter_mut() {
        let view = ProcessSpace::new(mem, s.dtb);
        let Some(t) = session_big_table(&view, syms, s, &mut budget, warnings) else {
            continue;
        };
        let (mut live, mut freed) = (0, 0);
        for e in t.entries.iter().filter(|e| wanted.contains(e.tag.value())) {
            if e.freed {
                freed += 1;
            } else {
                live += 1;
            }
            found.push(big_entry(&view, e, Some(s.session_id)));
        }
        s.big_pages = Some(BigPoolScan {
            table: t.table,
            size: t.size,
            matched_live: live,
            matched_freed: freed,
        });
    }
    found
}

/// Session `s`'s big-page table through `view` (its page tables), live
/// and freed entries, within what `budget` has left; what went wrong goes
/// to `warnings`, and `None` when it has none or it could not be read.
pub(super) fn session_big_table<M: Memory + ?Sized>(
    view: &M,
    syms: &KernelSymbols,
    s: &SessionPoolMap,
    budget: &mut SessionBigBudget,
    warnings: &mut Vec<String>,
) -> Option<crate::pool::BigPoolTable> {
    let id = s.session_id;
    match budget.read(view, syms, s.session_space, true) {
        Ok(t) => {
            let t = t?;
            warnings.extend(
                t.warnings
                    .iter()
                    .map(|w| format!("session {id}'s big-page table: {w}")),
            );
            Some(t)
        }
        Err(e) => {
            warnings.push(format!(
                "session {id}'s big-page table could not be read: {e}"
            ));
            None
        }
    }
}

/// The big-page table (at most `max_entries`), live and freed entries;
/// what went wrong reading it as warnings.
pub(super) fn big_table<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    max_entries: u64,
    warnings: &mut Vec<String>,
) -> Option<crate::pool::BigPoolTable> {
    let opts = BigPoolOptions {
        include_freed: true,
        max_entries,
    };
    match read_big_pool(mem, syms, kern_base, &opts) {
        Ok(t) => {
            warnings.extend(t.warnings.iter().map(|w| format!("big-page table: {w}")));
            Some(t)
        }
        Err(e) => {
            warnings.push(format!("the big-page table could not be read: {e}"));
            None
        }
    }
}

/// A big-page entry as an allocation (of session `session_id`'s table,
/// read through `mem`, that session's page tables): in the dump when its
/// first byte reads.
pub(super) fn big_entry<M: Memory + ?Sized>(
    mem: &M,
    e: &crate::pool::BigPoolEntry,
    session_id: Option<u32>,
) -> FoundAllocation {
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
        session_id,
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
