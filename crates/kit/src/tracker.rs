//! The pool tag tracker as the kernel keeps it (docs/pool-structures.md §2): a global
//! PoolTrackTable hashed by tag, one index-aligned copy per processor in
//! ExPoolTagTables whose counters sum to the truth, an unhashed expansion
//! table for tags that found no slot, and the keyless overflow slot.

use crate::layout::StructBuf;
use crate::machine::Machine;
use crate::phys::PAGE64;
use crate::tag::{tag_string, tag_value};
use crate::truth::{Counters, TagUsage, TrackerSlot};

/// The tracker hash (docs/pool-structures.md §2); the kernel hard-codes its value for
/// 'Pool' (0x040DEDA5).
pub fn tag_hash(tag: u32) -> u32 {
    let h = 40543u64 * tag as u64;
    (h as u32) ^ ((h >> 32) as u32)
}

/// The big-page table hash (docs/pool-structures.md §3).
pub fn big_page_hash(va: u64) -> u32 {
    let h = 40543u64 * ((va >> 12) as u32) as u64;
    (h as u32) ^ ((h >> 32) as u32)
}

/// Tags ExpSeedHotTags writes at boot. The real list is not public; these
/// are tags every Windows system uses from boot on (docs/pool-structures.md §2 names
/// Pool, File, Proc, Thre, MmSt, the Ntfs family and 'BIG ').
pub const HOT_TAGS: [&str; 64] = [
    "Pool", "File", "Proc", "Thre", "MmSt", "Ntfx", "Ntff", "NtFs", "Ntfr", "NtfF", "BIG ", "Irp ",
    "MmCa", "MmCi", "MmSe", "MmRe", "CM31", "CM25", "CM16", "CM29", "CM53", "Toke", "Even", "Muta",
    "Sema", "Key ", "ObNm", "ObDi", "ObHd", "ObSq", "Vad ", "VadS", "VadF", "SeAt", "SeTd", "Se  ",
    "Io  ", "IoNm", "IoFc", "Mdl ", "FMfc", "FMsl", "FMfn", "FSim", "FIcs", "Driv", "Devi", "Symb",
    "Port", "ALPC", "AlMs", "EtwB", "EtwR", "Wait", "Time", "Sect", "Cont", "KeFR", "PsIn", "PsCa",
    "SmMs", "Nb04", "TcpE", "NDnd",
];

struct Split {
    allocs: Vec<u64>,
    frees: Vec<u64>,
    bytes: Vec<u64>,
}

impl Machine {
    /// Partition a tag's counters over the CPUs the way activity spreads:
    /// allocations and frees land on different processors, so a CPU's
    /// frees can exceed its allocations and its byte count can go negative
    /// (wrapping, as the kernel's SIZE_T does).
    fn split(&mut self, c: Counters) -> Split {
        let n = self.scenario.cpus.max(1) as usize;
        let part = |rng: &mut fastrand::Rng, total: u64| -> Vec<u64> {
            let w: Vec<f64> = (0..n).map(|_| 0.2 + rng.f64()).collect();
            let sum: f64 = w.iter().sum();
            let mut v: Vec<u64> = w
                .iter()
                .map(|x| ((total as f64) * x / sum).floor() as u64)
                .collect();
            let rest = total - v.iter().sum::<u64>().min(total);
            v[0] += rest;
            v
        };
        let allocs = part(&mut self.rng, c.allocs);
        let frees = part(&mut self.rng, c.frees);
        let live = c.allocs - c.frees;
        let avg = c.bytes.checked_div(live).unwrap_or(0x40);
        let mut bytes: Vec<u64> = (0..n)
            .map(|i| {
                let d = allocs[i] as i128 - frees[i] as i128;
                (d * avg as i128) as u64
            })
            .collect();
        let others = bytes[1..].iter().fold(0u64, |a, b| a.wrapping_add(*b));
        bytes[0] = c.bytes.wrapping_sub(others);
        Split {
            allocs,
            frees,
            bytes,
        }
    }

    /// Build and write the tracker tables; record the expected rows.
    pub(crate) fn build_tracker(&mut self) {
        let keys = self.tracker_keys();
        let cpus = self.scenario.cpus.max(1) as usize;
        let mut tables = TrackerTables::new(self.m, &keys, cpus);
        let mut overflow = Counters::default();
        let mut rows = Vec::new();
        for ((tag, paged), slot) in &keys.where_of {
            let e = self.ledger.counts[&(*tag, *paged)];
            let c = Counters {
                allocs: e.allocs,
                frees: e.frees,
                bytes: e.bytes,
            };
            self.charge_tag(&mut tables, *tag, *paged, *slot, c);
            if let TrackerSlot::Overflow = slot {
                overflow.allocs += c.allocs;
                overflow.frees += c.frees;
                overflow.bytes = overflow.bytes.wrapping_add(c.bytes);
            }
            rows.push(tag_row(*tag, *paged, c, *slot, tables.counter_bits));
        }
        let (vas, exp_va, exp_size) = self.write_tracker_tables(&keys, &tables);

        let t = &mut self.truth.tracker;
        t.entry_size = tables.entry;
        t.size = keys.size;
        t.mask = keys.mask;
        t.table_va = vas[0];
        t.per_cpu_vas = vas;
        t.expansion_va = exp_va;
        t.expansion_size = exp_size;
        t.expansion_tags = keys.expansion.iter().map(|k| tag_string(*k)).collect();
        t.overflow = (overflow != Counters::default()).then_some(overflow);
        t.counter_bits = tables.counter_bits;
        t.hot_tags = keys.hot;
        self.truth.tags = rows;
    }

    /// The table's size and where every key goes, inserted as the kernel
    /// first saw them: hot tags at boot, then everything in ledger order.
    fn tracker_keys(&self) -> TrackerKeys {
        let log2 = self
            .scenario
            .tracker
            .size_log2
            .unwrap_or(if self.m.build < 15063 { 11 } else { 12 });
        let n = 1u64 << log2;
        let mut keys = TrackerKeys {
            n,
            size: n + 1,
            mask: n - 1,
            slots: vec![0; (n + 1) as usize],
            expansion: Vec::new(),
            capacity: self.scenario.tracker.expansion_capacity as usize,
            hot: Vec::new(),
            where_of: Vec::new(),
        };
        if self.scenario.hot_tags {
            for t in HOT_TAGS {
                if matches!(keys.place(tag_value(t)), TrackerSlot::Hashed { .. }) {
                    keys.hot.push(t.to_string());
                }
            }
        }
        for (tag, paged) in &self.ledger.order {
            let slot = keys.place(*tag);
            keys.where_of.push(((*tag, *paged), slot));
        }
        keys
    }

    /// Charge one tag's counters to its slot: spread over the CPUs' copies
    /// of a hashed slot or of the overflow slot, whole to an expansion
    /// entry.
    fn charge_tag(
        &mut self,
        tables: &mut TrackerTables,
        tag: u32,
        paged: bool,
        slot: TrackerSlot,
        c: Counters,
    ) {
        let m = self.m;
        let cpus = tables.cpu_tables.len();
        match slot {
            TrackerSlot::Hashed { index } => {
                let s = self.split(c);
                for cpu in 0..cpus {
                    if s.allocs[cpu] == 0 && s.frees[cpu] == 0 && cpu != 0 {
                        continue;
                    }
                    let buf = &mut tables.cpu_tables[cpu][index as usize];
                    if cpu != 0 {
                        // A CPU copies the key from the global slot the
                        // first time it charges the tag.
                        buf.set("Key", tag as u64);
                    }
                    add_counters(m, buf, paged, s.allocs[cpu], s.frees[cpu], s.bytes[cpu]);
                }
            }
            TrackerSlot::Expansion { index } => {
                let buf = &mut tables.expansion[index as usize];
                add_counters(m, buf, paged, c.allocs, c.frees, c.bytes)
            }
            TrackerSlot::Overflow => {
                let s = self.split(c);
                for (cpu, table) in tables.cpu_tables.iter_mut().enumerate() {
                    let buf = table.last_mut().expect("the table has its overflow slot");
                    add_counters(m, buf, paged, s.allocs[cpu], s.frees[cpu], s.bytes[cpu]);
                }
            }
        }
    }

    /// Write the tables, each its own allocation of Size * entry bytes, and
    /// the globals that find them; returns the per-CPU tables' VAs and the
    /// expansion table's VA and size.
    fn write_tracker_tables(
        &mut self,
        keys: &TrackerKeys,
        tables: &TrackerTables,
    ) -> (Vec<u64>, u64, u64) {
        let entry = tables.entry;
        let pages = (keys.size * entry).div_ceil(PAGE64);
        let nx = self.nx_kind();
        let mut vas = Vec::new();
        for table in &tables.cpu_tables {
            let va = self.pool_pages(nx, pages, 1);
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.bytes.iter().copied()).collect();
            self.write_va(va, &bytes);
            vas.push(va);
        }
        let (exp_va, exp_size) = if tables.expansion.is_empty() {
            (0, 0)
        } else {
            // The expansion table grows a page at a time.
            let pages = (tables.expansion.len() as u64 * entry).div_ceil(PAGE64);
            let va = self.pool_pages(nx, pages, 1);
            let bytes: Vec<u8> = tables
                .expansion
                .iter()
                .flat_map(|e| e.bytes.iter().copied())
                .collect();
            self.write_va(va, &bytes);
            (va, pages * PAGE64 / entry)
        };
        self.set_global("PoolTrackTable", vas[0]);
        self.set_global("PoolTrackTableSize", keys.size);
        self.set_global("PoolTrackTableMask", keys.mask);
        self.set_global("PoolTrackTableExpansion", exp_va);
        self.set_global("PoolTrackTableExpansionSize", exp_size);
        if let Some(base) = self.sym_va("ExPoolTagTables") {
            for (i, va) in vas.iter().enumerate() {
                self.write_u64(base + 8 * i as u64, *va);
            }
            self.truth.symbols.insert("ExPoolTagTables".into(), base);
        }
        (vas, exp_va, exp_size)
    }
}

/// The tracker's geometry and where each key went.
struct TrackerKeys {
    /// Hashed slots (Size - 1; the last slot is the overflow slot).
    n: u64,
    size: u64,
    mask: u64,
    /// The key of each slot of the global table (0: free).
    slots: Vec<u32>,
    /// Keys of the expansion table, in insertion order.
    expansion: Vec<u32>,
    capacity: usize,
    /// Hot tags that found a hashed slot.
    hot: Vec<String>,
    /// Every (tag, paged) of the ledger, in ledger order, with its slot.
    where_of: Vec<((u32, bool), TrackerSlot)>,
}

impl TrackerKeys {
    /// Insert `key` (or find it): linear probing from its hash, then the
    /// expansion table while it has room, then the overflow slot.
    fn place(&mut self, key: u32) -> TrackerSlot {
        let mask = self.mask;
        let slots = &mut self.slots;
        let mut i = (tag_hash(key) as u64 & mask) as usize;
        for _ in 0..self.n {
            if slots[i] == key {
                return TrackerSlot::Hashed { index: i as u64 };
            }
            if slots[i] == 0 {
                slots[i] = key;
                return TrackerSlot::Hashed { index: i as u64 };
            }
            i = (i + 1) & mask as usize;
        }
        if let Some(j) = self.expansion.iter().position(|k| *k == key) {
            return TrackerSlot::Expansion { index: j as u64 };
        }
        if self.expansion.len() < self.capacity {
            self.expansion.push(key);
            return TrackerSlot::Expansion {
                index: self.expansion.len() as u64 - 1,
            };
        }
        TrackerSlot::Overflow
    }
}

/// The entries being filled: per-CPU tables, index-aligned with the global
/// one (CPU 0's), and the expansion table.
struct TrackerTables {
    /// `_POOL_TRACKER_TABLE`'s size.
    entry: u64,
    /// Bits of a counter (32 on older builds: the reported counts wrap).
    counter_bits: u32,
    cpu_tables: Vec<Vec<StructBuf<'static>>>,
    expansion: Vec<StructBuf<'static>>,
}

impl TrackerTables {
    /// Zeroed tables for `cpus` processors; CPU 0's and the expansion
    /// entries carry their keys.
    fn new(m: &'static crate::layout::Manifest, keys: &TrackerKeys, cpus: usize) -> Self {
        let ety = "_POOL_TRACKER_TABLE";
        let mut cpu_tables: Vec<Vec<StructBuf>> = Vec::new();
        for _ in 0..cpus {
            cpu_tables.push((0..keys.size).map(|_| StructBuf::new(m, ety)).collect());
        }
        for (i, k) in keys.slots.iter().enumerate() {
            if *k != 0 {
                cpu_tables[0][i].set("Key", *k as u64);
            }
        }
        let expansion = keys
            .expansion
            .iter()
            .map(|k| {
                let mut e = StructBuf::new(m, ety);
                e.set("Key", *k as u64);
                e
            })
            .collect();
        Self {
            entry: m.ty(ety).size,
            counter_bits: (m.ty(ety).fields["NonPagedAllocs"].size * 8) as u32,
            cpu_tables,
            expansion,
        }
    }
}

/// Add to the paged or nonpaged counters of a tracker entry (wrapping, as
/// the kernel's counters do).
fn add_counters(
    m: &crate::layout::Manifest,
    buf: &mut StructBuf,
    paged: bool,
    a: u64,
    f: u64,
    b: u64,
) {
    let (fa, ff, fb) = if paged {
        ("PagedAllocs", "PagedFrees", "PagedBytes")
    } else {
        ("NonPagedAllocs", "NonPagedFrees", "NonPagedBytes")
    };
    let cur = |buf: &StructBuf, name: &str| read_field(m, buf, name);
    let (ca, cf, cb) = (cur(buf, fa), cur(buf, ff), cur(buf, fb));
    buf.set(fa, ca.wrapping_add(a))
        .set(ff, cf.wrapping_add(f))
        .set(fb, cb.wrapping_add(b));
}

/// The row a tag's counters make in the truth, with the counts as a
/// `counter_bits`-bit tracker reports them.
pub(crate) fn tag_row(
    tag: u32,
    paged: bool,
    c: Counters,
    slot: TrackerSlot,
    counter_bits: u32,
) -> TagUsage {
    let wrap = |v: u64| {
        if counter_bits >= 64 {
            v
        } else {
            v & ((1u64 << counter_bits) - 1)
        }
    };
    TagUsage {
        tag: tag_string(tag),
        tag_value: tag,
        pool: if paged { "Paged".into() } else { "Nonp".into() },
        allocs: c.allocs,
        frees: c.frees,
        diff: c.allocs - c.frees,
        bytes: c.bytes,
        reported_allocs: wrap(c.allocs),
        reported_frees: wrap(c.frees),
        slot,
    }
}

fn read_field(m: &crate::layout::Manifest, buf: &StructBuf, name: &str) -> u64 {
    let f = &m.ty("_POOL_TRACKER_TABLE").fields[name];
    let o = f.offset as usize;
    let mut b = [0u8; 8];
    b[..f.size as usize].copy_from_slice(&buf.bytes[o..o + f.size as usize]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hash_matches_the_kernel_constant() {
        assert_eq!(tag_hash(0x6C6F_6F50), 0x040D_EDA5);
    }
}
