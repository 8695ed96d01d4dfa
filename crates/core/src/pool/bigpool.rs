//! PoolBigPageTable (docs/pool-structures.md §3): allocations too big for a pool page
//! (legacy) or of 0xFE1 bytes and more (segment heap, which writes no
//! pool header for them: this table is the only place their tag exists).
//!
//! Bit 0 of `Va` is the free flag. Never-used entries hold `Va == 1`;
//! freed ones keep `Va | 1`, their stale key and size. Only entries with a
//! clear free bit and a kernel address are live (MemProcFS counts freed
//! entries as live; Volatility before #706 did too).

use serde::Serialize;

use crate::warning::{Warning, WarningKind};

use super::read::{describe_missing, read_nt_var};
use super::{PoolClass, PoolError};
use crate::addr::KernelVa;
use crate::memory::{Memory, MemoryExt};
use crate::symbols::{Field, KernelSymbols};
use crate::tag::PoolTag;

/// How PoolBigPageTable is read.
#[derive(Debug, Clone)]
pub struct BigPoolOptions {
    /// Largest PoolBigPageTableSize accepted (2^18 is a busy server).
    pub max_entries: u64,
    /// Keep freed entries (`--show-free`); they are never counted as live.
    pub include_freed: bool,
}

impl Default for BigPoolOptions {
    fn default() -> Self {
        Self {
            max_entries: 1 << 22,
            include_freed: false,
        }
    }
}

/// One entry of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BigPoolEntry {
    /// The entry's index in the table.
    pub index: u64,
    /// The allocation (free bit cleared).
    pub va: KernelVa,
    /// Key: the tag as the allocator stored it.
    pub tag: PoolTag,
    /// The POOL_TYPE value as stored (0 NonPagedPool, 1 PagedPool, 0x200
    /// NonPagedPoolNx; 0x20 session, 4 cache-aligned, 8 quota).
    pub pool_type: u32,
    /// Paged when bit 0 of the POOL_TYPE is set, else nonpaged.
    pub pool: PoolClass,
    /// NonPagedPoolNx.
    pub nx: bool,
    /// Session pool (POOL_TYPE bit 0x20).
    pub session: bool,
    /// NumberOfBytes: the allocation's size as the table records it.
    pub bytes: u64,
    /// The free bit (bit 0 of `Va`) is set: a freed entry with a stale tag and size.
    pub freed: bool,
}

/// PoolBigPageTable as read: where it is, its live and freed entries, and what went wrong.
#[derive(Debug, Clone, Serialize)]
pub struct BigPoolTable {
    /// nt!PoolBigPageTable: the table's address.
    pub table: KernelVa,
    /// nt!PoolBigPageTableSize: its entries.
    pub size: u64,
    /// The size of one POOL_TRACKER_BIG_PAGES entry, in bytes, from the symbols.
    pub entry_size: u64,
    /// nt!ExpPoolBigEntriesInUse, when readable.
    pub in_use: Option<u64>,
    /// Live entries (free bit clear, kernel address).
    pub live_count: u64,
    /// Freed entries (free bit set, a tag still there).
    pub freed_count: u64,
    /// NumberOfBytes summed over the live entries.
    pub live_bytes: u64,
    /// Live entries, then freed ones if asked for, in table order.
    pub entries: Vec<BigPoolEntry>,
    /// Entries skipped and pages that could not be read.
    pub warnings: Vec<Warning>,
}

struct Layout {
    size: u64,
    va: Field,
    key: Field,
    pool_type: Field,
    bytes: Field,
}

impl Layout {
    fn new(syms: &KernelSymbols) -> Result<Self, PoolError> {
        let t = "_POOL_TRACKER_BIG_PAGES";
        Ok(Layout {
            size: syms.require_type_size(t)?,
            va: syms.field(t, "Va")?,
            key: syms.field(t, "Key")?,
            pool_type: syms.field(t, "PoolType")?,
            bytes: syms.field(t, "NumberOfBytes")?,
        })
    }

    /// The entry at `index` (its bytes `e`), or `None` for a slot never
    /// used or one holding no kernel address (said in `warnings`).
    fn entry(&self, e: &[u8], index: u64, warnings: &mut Vec<String>) -> Option<BigPoolEntry> {
        let raw_va = self.va.read_u64(e).unwrap_or(1);
        let key = self.key.read_u64(e).unwrap_or(0) as u32;
        if raw_va & 1 == 1 && (key == 0 || raw_va == 1) {
            return None; // never used
        }
        let freed = raw_va & 1 == 1;
        let va = KernelVa(raw_va & !1);
        if !freed && !va.is_kernel() {
            if raw_va != 0 || key != 0 {
                warnings.push(format!(
                    "big-page entry {index} holds {} (not a kernel address); skipped",
                    KernelVa(raw_va)
                ));
            }
            return None;
        }
        let pool_type = self.pool_type.read_u64(e).unwrap_or(0) as u32;
        Some(BigPoolEntry {
            index,
            va,
            tag: PoolTag(key),
            pool_type,
            pool: if pool_type & 1 == 1 {
                PoolClass::Paged
            } else {
                PoolClass::NonPaged
            },
            nx: pool_type & 1 == 0 && pool_type & 0x200 != 0,
            session: pool_type & 0x20 != 0,
            bytes: self.bytes.read_u64(e).unwrap_or(0),
            freed,
        })
    }
}

/// PoolBigPageTable and its size, checked.
fn table_head<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    opts: &BigPoolOptions,
) -> Result<(KernelVa, u64), PoolError> {
    let read64 = |name: &str| read_nt_var(mem, syms, kern_base, name, 8);
    let table = KernelVa(read64("PoolBigPageTable")?);
    let size = read64("PoolBigPageTableSize")?;
    if !table.is_kernel() {
        return Err(PoolError::BadPointer {
            what: super::read::var_label(syms, "PoolBigPageTable"),
            va: table,
        });
    }
    if size == 0 || size > opts.max_entries {
        return Err(PoolError::Implausible {
            what: super::read::var_label(syms, "PoolBigPageTableSize"),
            value: size,
            limit: opts.max_entries,
        });
    }
    Ok((table, size))
}

/// Walk the big-page table.
pub fn read_big_pool<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    opts: &BigPoolOptions,
) -> Result<BigPoolTable, PoolError> {
    let l = Layout::new(syms)?;
    let (table, size) = table_head(mem, syms, kern_base, opts)?;
    let in_use = read_nt_var(mem, syms, kern_base, "ExpPoolBigEntriesInUse", 4).ok();
    let names = TableNames {
        what: "big-page table",
        table: "PoolBigPageTable",
        size: "PoolBigPageTableSize",
        in_use: "ExpPoolBigEntriesInUse",
    };
    Ok(walk_table(mem, &l, table, size, in_use, &names, opts))
}

/// A session's own big-page table (`_MM_SESSION_SPACE.PoolTrackBigPages`,
/// its `PoolTrackBigPagesSize` entries and `PoolBigEntriesInUse`): where
/// session pool's big allocations are tracked, apart from
/// PoolBigPageTable (docs/pool-structures.md §3). `session` is the
/// session's `_MM_SESSION_SPACE` (`EPROCESS.Session`) and `mem` reads
/// through the page tables of one of its processes: the table is in
/// session space. `Ok(None)` when the session has no table (a null
/// pointer and size).
pub fn read_session_big_pages<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    session: KernelVa,
    opts: &BigPoolOptions,
) -> Result<Option<BigPoolTable>, PoolError> {
    session_big_pages(mem, syms, session, opts, u64::MAX).map_err(|e| match e {
        Refused::Pool(e) => e,
        Refused::Budget { .. } => unreachable!("no budget to exceed"),
    })
}

/// The entries the sessions' own big-page tables may hold together: one
/// bound for all of them, so that a hostile process list cannot multiply
/// it by its sessions.
#[derive(Debug)]
pub(crate) struct SessionBigBudget {
    total: u64,
    left: u64,
}

impl SessionBigBudget {
    pub(crate) fn new(total: u64) -> Self {
        Self { total, left: total }
    }

    /// Session `session`'s table (see [`read_session_big_pages`]), live
    /// entries and, with `include_freed`, freed ones, within what is left
    /// of the budget; why it was not read, as a sentence.
    pub(crate) fn read<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        syms: &KernelSymbols,
        session: KernelVa,
        include_freed: bool,
    ) -> Result<Option<BigPoolTable>, String> {
        let opts = BigPoolOptions {
            max_entries: self.total,
            include_freed,
        };
        match session_big_pages(mem, syms, session, &opts, self.left) {
            Ok(t) => {
                self.left -= t.as_ref().map_or(0, |t| t.size);
                Ok(t)
            }
            Err(Refused::Pool(e)) => Err(e.to_string()),
            Err(Refused::Budget { size }) => Err(format!(
                "its {size:#x} entries are more than the {:#x} left of the {:#x} the sessions' big-page tables may hold together; not read",
                self.left, self.total
            )),
        }
    }
}

/// Why a session's table was not read.
enum Refused {
    Pool(PoolError),
    /// More entries than the budget has left.
    Budget {
        size: u64,
    },
}

impl From<PoolError> for Refused {
    fn from(e: PoolError) -> Self {
        Refused::Pool(e)
    }
}

impl From<crate::symbols::SymbolError> for Refused {
    fn from(e: crate::symbols::SymbolError) -> Self {
        Refused::Pool(e.into())
    }
}

/// [`read_session_big_pages`], refusing a table of more than `left`
/// entries before anything of it is read.
fn session_big_pages<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    session: KernelVa,
    opts: &BigPoolOptions,
    left: u64,
) -> Result<Option<BigPoolTable>, Refused> {
    let l = Layout::new(syms)?;
    let ss = "_MM_SESSION_SPACE";
    let (table_f, size_f) = (
        syms.field(ss, "PoolTrackBigPages")?,
        syms.field(ss, "PoolTrackBigPagesSize")?,
    );
    let at = |f: &Field| session.wrapping_add(f.offset);
    let what = |m: &str| format!("{ss}.{m} at {session}");
    let read = |f: &Field, m: &str| {
        mem.read_u64(at(f)).map_err(|source| PoolError::Unreadable {
            what: what(m),
            va: at(f),
            source,
        })
    };
    let table = KernelVa(read(&table_f, "PoolTrackBigPages")?);
    let size = read(&size_f, "PoolTrackBigPagesSize")?;
    if table.0 == 0 && size == 0 {
        return Ok(None);
    }
    if !table.is_kernel() {
        return Err(PoolError::BadPointer {
            what: what("PoolTrackBigPages"),
            va: table,
        }
        .into());
    }
    if size == 0 || size > opts.max_entries {
        return Err(PoolError::Implausible {
            what: what("PoolTrackBigPagesSize"),
            value: size,
            limit: opts.max_entries,
        }
        .into());
    }
    if size > left {
        return Err(Refused::Budget { size });
    }
    let in_use = syms
        .field(ss, "PoolBigEntriesInUse")
        .ok()
        .and_then(|f| mem.read_u32(at(&f)).ok())
        .map(u64::from);
    let names = TableNames {
        what: "session's big-page table",
        table: "PoolTrackBigPages",
        size: "PoolTrackBigPagesSize",
        in_use: "PoolBigEntriesInUse",
    };
    Ok(Some(walk_table(mem, &l, table, size, in_use, &names, opts)))
}

/// What a table's warnings call it, its size and its in-use count.
struct TableNames {
    /// What it is, in words.
    what: &'static str,
    table: &'static str,
    size: &'static str,
    in_use: &'static str,
}

/// The `size` entries at `table`, streamed a chunk at a time: memory
/// stays bounded by what is kept (live entries), not by the table.
fn walk_table<M: Memory + ?Sized>(
    mem: &M,
    l: &Layout,
    table: KernelVa,
    size: u64,
    in_use: Option<u64>,
    names: &TableNames,
    opts: &BigPoolOptions,
) -> BigPoolTable {
    let mut warnings = Vec::new();
    if !size.is_power_of_two() {
        warnings.push(format!(
            "{} {size:#x} is not a power of two as the kernel keeps it",
            names.size
        ));
    }
    let chunk_entries = (0x10_0000 / l.size).max(1);
    let mut entries = Vec::new();
    let (mut live_count, mut freed_count, mut live_bytes, mut unreadable) =
        (0u64, 0u64, 0u64, 0u64);
    let mut first_missing = None;
    let mut start = 0;
    while start < size {
        let n = chunk_entries.min(size - start);
        let va = table.wrapping_add(start * l.size);
        let a = super::read::read_array(mem, va, n, l.size);
        if !a.missing.is_empty() {
            unreadable += a.missing_count();
            first_missing
                .get_or_insert_with(|| format!("{} (from entry {start})", describe_missing(&a)));
        }
        for j in (0..n).filter(|&j| !a.is_missing(j)) {
            let Some(entry) = l.entry(a.entry(j, l.size), start + j, &mut warnings) else {
                continue;
            };
            if entry.freed {
                freed_count += 1;
                if !opts.include_freed {
                    continue;
                }
            } else {
                live_count += 1;
                live_bytes = live_bytes.wrapping_add(entry.bytes);
            }
            entries.push(entry);
        }
        start += n;
    }
    if let Some(m) = first_missing {
        warnings.push(format!(
            "{} at {table}: {unreadable} of {size} entries are not in the dump ({m})",
            names.table
        ));
    }
    if unreadable == size {
        warnings.push(format!("the whole {} is missing from the dump", names.what));
    }
    match in_use {
        Some(n) if n != live_count && unreadable == 0 => warnings.push(format!(
            "{} says {n} live entries but the table holds {live_count}",
            names.in_use
        )),
        _ => {}
    }
    entries.sort_by_key(|e| (e.freed, e.index));
    BigPoolTable {
        table,
        size,
        entry_size: l.size,
        in_use,
        live_count,
        freed_count,
        live_bytes,
        entries,
        warnings: Warning::all(WarningKind::BigPool, warnings),
    }
}
