//! The pool tag tracker (docs/pool-structures.md §2): the global PoolTrackTable holds every
//! key but only processor 0's counters; each other processor counts in its
//! own index-aligned table in ExPoolTagTables. The kernel's own snapshot
//! (ExpGetPoolTagInfoTarget) sums them, appends the unhashed expansion
//! table, and clamps Allocs to at least Frees; so does this module. Tools
//! that read only PoolTrackTable see processor 0 alone.

use crate::warning::{Warning, WarningKind};

use super::read::{Array, describe_missing, nt_var, read_array, read_nt_var};
pub use super::usage::{
    Counters, PoolMonRow, PoolUsage, TagUsage, Totals, TrackerInfo, TrackerSlot,
};
use super::{PoolClass, PoolError};
use crate::addr::KernelVa;
use crate::memory::Memory;
use crate::symbols::{Field, KernelSymbols};
use crate::tag::PoolTag;

/// Bounds on sizes read from memory.
#[derive(Debug, Clone)]
pub struct TrackerOptions {
    /// Largest PoolTrackTableSize accepted (the kernel's default is 2049 or
    /// 4097; registry overrides stay far below this).
    pub max_entries: u64,
    /// Largest number of per-processor tables read.
    pub max_cpus: u64,
    /// Largest PoolTrackTableExpansionSize accepted.
    pub max_expansion: u64,
    /// Keep rows whose counters are all zero (boot-seeded hot tags).
    pub include_zero: bool,
    /// Largest number of entries the sessions' own big-page tables hold
    /// together ([`crate::pool::read_session_pool`]): one bound for all of
    /// them, so a hostile process list cannot multiply it. 0 reads none
    /// (`SessionUsage::big_pages` stays `None`, and nothing is said).
    pub max_session_big_entries: u64,
}

impl Default for TrackerOptions {
    fn default() -> Self {
        Self {
            max_entries: (1 << 20) + 1,
            max_cpus: 4096,
            max_expansion: 1 << 20,
            include_zero: false,
            max_session_big_entries: super::BigPoolOptions::default().max_entries,
        }
    }
}

/// The six counters of an entry, in layout order.
pub(super) struct EntryLayout {
    pub size: u64,
    key: Field,
    counters: [Field; 6],
    pub counter_mask: u64,
}

/// Each class's three counters (allocs, frees, bytes) start at this
/// index of [`EntryLayout::values`]: the entry's own order.
const CLASSES: [(PoolClass, usize); 2] = [(PoolClass::NonPaged, 0), (PoolClass::Paged, 3)];

impl EntryLayout {
    pub fn new(syms: &KernelSymbols) -> Result<Self, PoolError> {
        let t = "_POOL_TRACKER_TABLE";
        let f = |n: &str| syms.field(t, n);
        let counters = [
            f("NonPagedAllocs")?,
            f("NonPagedFrees")?,
            f("NonPagedBytes")?,
            f("PagedAllocs")?,
            f("PagedFrees")?,
            f("PagedBytes")?,
        ];
        // The count counters' width: 32 or 64 bits, by build.
        let bits = (counters[0].size * 8).min(64) as u32;
        Ok(Self {
            size: syms.require_type_size(t)?,
            key: f("Key")?,
            counter_mask: if bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            },
            counters,
        })
    }
    pub fn key(&self, e: &[u8]) -> u32 {
        self.key.read_u64(e).unwrap_or(0) as u32
    }
    pub fn values(&self, e: &[u8]) -> [u64; 6] {
        self.counters.each_ref().map(|f| f.read_u64(e).unwrap_or(0))
    }
    /// Add `v` into `acc`, wrapping as the kernel's counters do.
    pub fn add(&self, acc: &mut [u64; 6], v: [u64; 6]) {
        for (i, x) in v.into_iter().enumerate() {
            // Bytes are SIZE_T on every build.
            let m = if i % 3 == 2 {
                u64::MAX
            } else {
                self.counter_mask
            };
            acc[i] = acc[i].wrapping_add(x) & m;
        }
    }
}

/// Read the tracker and sum it as the kernel does.
pub fn read_pool_usage<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    opts: &TrackerOptions,
) -> Result<PoolUsage, PoolError> {
    let r = TrackerRead {
        mem,
        syms,
        kern_base,
        opts,
        layout: EntryLayout::new(syms)?,
    };
    let mut warnings = Vec::new();
    let (table, size, mask) = r.table_head(&mut warnings)?;
    let (global, mut sums) = r.global_table(table, size, &mut warnings)?;
    let (processors, per_cpu_tables) = r.per_cpu_tables(table, size, &mut sums, &mut warnings);
    let mut rows = r.hashed_rows(&global, &sums, size, &mut warnings);
    // The expansion table: unhashed, scanned from 0 to the first empty key.
    let (expansion, expansion_size, expansion_used) = read_expansion(
        mem,
        syms,
        kern_base,
        &r.layout,
        opts,
        &mut rows,
        &mut warnings,
    )?;
    warn_clamped(&rows, &mut warnings);
    let totals = totals(&rows);
    rows.sort_by_key(|r| (r.tag.bytes(), r.pool));
    let counter_mask = r.layout.counter_mask;
    Ok(PoolUsage {
        rows,
        totals,
        tracker: TrackerInfo {
            table,
            size,
            mask,
            entry_size: r.layout.size,
            counter_bits: if counter_mask == u64::MAX {
                64
            } else {
                counter_mask.count_ones()
            },
            processors,
            per_cpu_tables,
            expansion,
            expansion_size,
            expansion_used,
        },
        warnings: Warning::all(WarningKind::Tracker, warnings),
    })
}

/// The global tracker's keys and, per slot, the counters summed over the
/// processors read so far.
struct Sums {
    keys: Vec<u32>,
    counters: Vec<[u64; 6]>,
}

/// What reading one kernel's tracker needs at every step.
struct TrackerRead<'a, M: ?Sized> {
    mem: &'a M,
    syms: &'a KernelSymbols,
    kern_base: KernelVa,
    opts: &'a TrackerOptions,
    layout: EntryLayout,
}

impl<M: Memory + ?Sized> TrackerRead<'_, M> {
    fn var(&self, name: &str, width: usize) -> Result<u64, PoolError> {
        read_nt_var(self.mem, self.syms, self.kern_base, name, width)
    }

    /// PoolTrackTable, its size and mask, checked.
    fn table_head(&self, warnings: &mut Vec<String>) -> Result<(KernelVa, u64, u64), PoolError> {
        let table = KernelVa(self.var("PoolTrackTable", 8)?);
        let size = self.var("PoolTrackTableSize", 8)?;
        let mask = self
            .var("PoolTrackTableMask", 8)
            .unwrap_or(size.saturating_sub(2));
        if !table.is_kernel() {
            return Err(PoolError::BadPointer {
                what: super::read::var_label(self.syms, "PoolTrackTable"),
                va: table,
            });
        }
        if !(2..=self.opts.max_entries).contains(&size) {
            return Err(PoolError::Implausible {
                what: super::read::var_label(self.syms, "PoolTrackTableSize"),
                value: size,
                limit: self.opts.max_entries,
            });
        }
        if !(size - 1).is_power_of_two() || mask != size - 2 {
            warnings.push(format!(
                "PoolTrackTableSize {size:#x} and PoolTrackTableMask {mask:#x} are not the kernel's 2^n+1 / 2^n-1 pair"
            ));
        }
        Ok((table, size, mask))
    }

    /// The global table: every key, and processor 0's counters. Processor
    /// 0's counters live only here: without an entry, the sum over
    /// processors would be a wrong number, so an unreadable global entry
    /// drops its row rather than guessing.
    fn global_table(
        &self,
        table: KernelVa,
        size: u64,
        warnings: &mut Vec<String>,
    ) -> Result<(Array, Sums), PoolError> {
        let global = read_array(self.mem, table, size, self.layout.size);
        if global.missing_count() == size {
            let source = global
                .first_error
                .clone()
                .expect("a missing entry has an error");
            return Err(PoolError::Unreadable {
                what: format!("PoolTrackTable ({size} entries)"),
                va: table,
                source,
            });
        }
        if !global.missing.is_empty() {
            warnings.push(format!(
                "PoolTrackTable at {table}: {} are not in the dump; those slots' tags are left out",
                describe_missing(&global)
            ));
        }
        let entry = |i| global.entry(i, self.layout.size);
        let sums = Sums {
            keys: (0..size).map(|i| self.layout.key(entry(i))).collect(),
            counters: (0..size).map(|i| self.layout.values(entry(i))).collect(),
        };
        Ok((global, sums))
    }

    /// Add ExPoolTagTables[1..K] into `sums`: the number of processors and
    /// the tables read (processor 0's is the global table).
    fn per_cpu_tables(
        &self,
        table: KernelVa,
        size: u64,
        sums: &mut Sums,
        warnings: &mut Vec<String>,
    ) -> (u64, Vec<KernelVa>) {
        let max_cpus = self.opts.max_cpus;
        let processors = self.var("KeNumberProcessors", 4).unwrap_or(1);
        let bound = self
            .syms
            .array_bound("ExPoolTagTables", 8)
            .unwrap_or(max_cpus);
        let k = processors.min(bound).min(max_cpus).max(1);
        if processors > bound.min(max_cpus) {
            warnings.push(format!(
                "KeNumberProcessors is {processors} but ExPoolTagTables holds {bound}: reading {k} per-processor tables"
            ));
        }
        let mut per_cpu_tables = vec![table];
        let Ok(arr) = nt_var(self.syms, self.kern_base, "ExPoolTagTables") else {
            warnings.push(
                "the symbols lack ExPoolTagTables: only processor 0's counts are shown".into(),
            );
            return (processors, per_cpu_tables);
        };
        let ptrs = read_array(self.mem, arr, k, 8);
        if ptrs.missing_count() > 0 {
            warnings.push(format!(
                "ExPoolTagTables at {arr}: {}; those processors' counts are missing",
                describe_missing(&ptrs)
            ));
        }
        let ptr = |cpu| {
            KernelVa(u64::from_le_bytes(
                ptrs.entry(cpu, 8).try_into().expect("8 bytes"),
            ))
        };
        if !ptrs.is_missing(0) && ptr(0) != table {
            warnings.push(format!(
                "ExPoolTagTables[0] is {} but PoolTrackTable is {table}",
                ptr(0)
            ));
        }
        for cpu in (1..k).filter(|&cpu| !ptrs.is_missing(cpu)) {
            let p = ptr(cpu);
            if p.0 == 0 {
                continue;
            }
            if !p.is_kernel() || p == table {
                warnings.push(format!(
                    "ExPoolTagTables[{cpu}] is {p}, not a per-processor table; skipped"
                ));
                continue;
            }
            let t = read_array(self.mem, p, size, self.layout.size);
            if t.missing_count() == size {
                warnings.push(format!("processor {cpu}'s tracker table at {p} is not in the dump; its counts are missing"));
                continue;
            }
            if !t.missing.is_empty() {
                warnings.push(format!(
                    "processor {cpu}'s tracker table at {p}: {} are not in the dump",
                    describe_missing(&t)
                ));
            }
            add_cpu_table(&self.layout, &t, size, &mut sums.keys, &mut sums.counters);
            per_cpu_tables.push(p);
        }
        (processors, per_cpu_tables)
    }

    /// The rows of the hashed table: every keyed slot the global table
    /// holds, and the keyless overflow slot.
    fn hashed_rows(
        &self,
        global: &Array,
        sums: &Sums,
        size: u64,
        warnings: &mut Vec<String>,
    ) -> Vec<TagUsage> {
        let mut rows = Vec::new();
        let overflow = size - 1;
        for i in 0..size {
            let slot = if i == overflow {
                TrackerSlot::Overflow
            } else {
                TrackerSlot::Hashed { index: i }
            };
            let key = sums.keys[i as usize];
            if global.is_missing(i) || (key == 0 && slot != TrackerSlot::Overflow) {
                continue;
            }
            push_rows(
                &mut rows,
                PoolTag(key),
                slot,
                sums.counters[i as usize],
                self.layout.counter_mask,
                self.opts.include_zero,
            );
        }
        if sums.keys[overflow as usize] != 0 {
            warnings.push(format!(
                "the overflow slot (index {overflow}) has a key ({}); the kernel never hashes to it",
                PoolTag(sums.keys[overflow as usize])
            ));
        }
        rows
    }
}

/// Say which rows had Allocs raised to Frees, as the kernel's snapshot does.
pub(super) fn warn_clamped(rows: &[TagUsage], warnings: &mut Vec<String>) {
    let clamped: Vec<String> = rows
        .iter()
        .filter(|r| r.clamped)
        .map(|r| format!("{} {}", r.tag_text(), r.pool))
        .collect();
    if !clamped.is_empty() {
        warnings.push(format!(
            "Allocs raised to Frees for {} row(s) as the kernel does (a wrapped 32-bit counter or a torn update): {}",
            clamped.len(),
            clamped.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
}

/// Sum one processor's table into the totals: every entry whose per-CPU
/// key is set (the kernel's rule), plus the keyless overflow slot, whose
/// charges are real even though the kernel's snapshot skips them on
/// processors other than 0.
fn add_cpu_table(
    layout: &EntryLayout,
    t: &Array,
    size: u64,
    keys: &mut [u32],
    sums: &mut [[u64; 6]],
) {
    for i in 0..size {
        if t.is_missing(i) {
            continue;
        }
        let e = t.entry(i, layout.size);
        let k = layout.key(e);
        if k == 0 && i != size - 1 {
            continue;
        }
        if keys[i as usize] == 0 && i != size - 1 {
            keys[i as usize] = k;
        }
        layout.add(&mut sums[i as usize], layout.values(e));
    }
}

fn read_expansion<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    layout: &EntryLayout,
    opts: &TrackerOptions,
    rows: &mut Vec<TagUsage>,
    warnings: &mut Vec<String>,
) -> Result<(KernelVa, u64, u64), PoolError> {
    let (ptr, size) = ("PoolTrackTableExpansion", "PoolTrackTableExpansionSize");
    if syms.symbol_rva(ptr).is_none() || syms.symbol_rva(size).is_none() {
        warnings.push(
            "the symbols lack PoolTrackTableExpansion: tags in the expansion table are missing"
                .into(),
        );
        return Ok((KernelVa(0), 0, 0));
    }
    let exp = KernelVa(read_nt_var(mem, syms, kern_base, ptr, 8)?);
    let n = read_nt_var(mem, syms, kern_base, size, 8)?;
    let used = read_expansion_table(
        mem,
        layout,
        exp,
        n,
        "nt!PoolTrackTableExpansion",
        opts,
        rows,
        warnings,
    )?;
    Ok((exp, n, used))
}

/// Read an unhashed expansion table of `n` entries at `exp` (scanned from
/// 0 to the first empty key) into `rows`; returns the entries in use.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_expansion_table<M: Memory + ?Sized>(
    mem: &M,
    layout: &EntryLayout,
    exp: KernelVa,
    n: u64,
    what: &str,
    opts: &TrackerOptions,
    rows: &mut Vec<TagUsage>,
    warnings: &mut Vec<String>,
) -> Result<u64, PoolError> {
    if exp.0 == 0 || n == 0 {
        return Ok(0);
    }
    if !exp.is_kernel() {
        return Err(PoolError::BadPointer {
            what: what.into(),
            va: exp,
        });
    }
    if n > opts.max_expansion {
        return Err(PoolError::Implausible {
            what: format!("{what}'s size"),
            value: n,
            limit: opts.max_expansion,
        });
    }
    let t = read_array(mem, exp, n, layout.size);
    if !t.missing.is_empty() {
        warnings.push(format!(
            "{what} at {exp}: {} are not in the dump",
            describe_missing(&t)
        ));
    }
    let mut used = 0;
    for i in 0..n {
        if t.is_missing(i) {
            continue;
        }
        let e = t.entry(i, layout.size);
        let k = layout.key(e);
        if k == 0 {
            break;
        }
        used += 1;
        let mut v = [0; 6];
        layout.add(&mut v, layout.values(e));
        push_rows(
            rows,
            PoolTag(k),
            TrackerSlot::Expansion { index: i },
            v,
            layout.counter_mask,
            opts.include_zero,
        );
    }
    Ok(used)
}

pub(super) fn push_rows(
    rows: &mut Vec<TagUsage>,
    tag: PoolTag,
    slot: TrackerSlot,
    v: [u64; 6],
    mask: u64,
    include_zero: bool,
) {
    for (class, at) in CLASSES {
        let (allocs, frees, bytes) = (v[at], v[at + 1], v[at + 2]);
        if allocs == 0
            && frees == 0
            && bytes == 0
            && !(include_zero && slot != TrackerSlot::Overflow)
        {
            continue;
        }
        let clamped = allocs < frees;
        let allocs = allocs.max(frees);
        let diff = (allocs - frees) & mask;
        rows.push(TagUsage {
            tag,
            pool: class,
            allocs,
            frees,
            diff,
            bytes,
            per_alloc: bytes.checked_div(diff).unwrap_or(0),
            slot,
            clamped,
            driver: None,
            description: None,
        });
    }
}

pub(super) fn totals(rows: &[TagUsage]) -> Totals {
    let mut t = Totals::default();
    let mut tags = std::collections::BTreeSet::new();
    for r in rows {
        let c = match r.pool {
            PoolClass::Paged => &mut t.paged,
            PoolClass::NonPaged => &mut t.nonpaged,
        };
        // Hostile counters can hold anything: a total saturates rather
        // than overflow (found by the pool_walkers fuzz target).
        c.allocs = c.allocs.saturating_add(r.allocs);
        c.frees = c.frees.saturating_add(r.frees);
        c.bytes = c.bytes.wrapping_add(r.bytes);
        if r.slot != TrackerSlot::Overflow {
            tags.insert(r.tag);
        }
    }
    t.tags = tags.len() as u64;
    t
}
