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
        let m = self.m;
        let ety = "_POOL_TRACKER_TABLE";
        let entry = m.ty(ety).size;
        let log2 = self
            .scenario
            .tracker
            .size_log2
            .unwrap_or(if m.build < 15063 { 11 } else { 12 });
        let n = 1u64 << log2;
        let (size, mask) = (n + 1, n - 1);
        let cpus = self.scenario.cpus.max(1) as usize;

        // Insert keys as the kernel first saw them: hot tags at boot, then
        // everything in ledger order.
        let mut slots: Vec<u32> = vec![0; size as usize];
        let mut expansion: Vec<u32> = Vec::new();
        let capacity = self.scenario.tracker.expansion_capacity as usize;
        let mut hot = Vec::new();
        let place = |key: u32, slots: &mut Vec<u32>, expansion: &mut Vec<u32>| -> TrackerSlot {
            let mut i = (tag_hash(key) as u64 & mask) as usize;
            for _ in 0..n {
                if slots[i] == key {
                    return TrackerSlot::Hashed { index: i as u64 };
                }
                if slots[i] == 0 {
                    slots[i] = key;
                    return TrackerSlot::Hashed { index: i as u64 };
                }
                i = (i + 1) & mask as usize;
            }
            if let Some(j) = expansion.iter().position(|k| *k == key) {
                return TrackerSlot::Expansion { index: j as u64 };
            }
            if expansion.len() < capacity {
                expansion.push(key);
                return TrackerSlot::Expansion {
                    index: expansion.len() as u64 - 1,
                };
            }
            TrackerSlot::Overflow
        };
        if self.scenario.hot_tags {
            for t in HOT_TAGS {
                let k = tag_value(t);
                if matches!(
                    place(k, &mut slots, &mut expansion),
                    TrackerSlot::Hashed { .. }
                ) {
                    hot.push(t.to_string());
                }
            }
        }
        let order = self.ledger.order.clone();
        let mut where_of = Vec::new();
        for (tag, paged) in &order {
            where_of.push(((*tag, *paged), place(*tag, &mut slots, &mut expansion)));
        }

        // Per-CPU counters, index-aligned with the global table.
        let counter_bits = (m.ty(ety).fields["NonPagedAllocs"].size * 8) as u32;
        let mut cpu_tables: Vec<Vec<StructBuf>> = Vec::new();
        let fields = |paged: bool| {
            if paged {
                ("PagedAllocs", "PagedFrees", "PagedBytes")
            } else {
                ("NonPagedAllocs", "NonPagedFrees", "NonPagedBytes")
            }
        };
        let mut touched: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); cpus];
        for _ in 0..cpus {
            cpu_tables.push((0..size).map(|_| StructBuf::new(m, ety)).collect());
        }
        for (i, k) in slots.iter().enumerate() {
            if *k != 0 {
                cpu_tables[0][i].set("Key", *k as u64);
            }
        }
        let mut exp_entries: Vec<StructBuf> = expansion
            .iter()
            .map(|k| {
                let mut e = StructBuf::new(m, ety);
                e.set("Key", *k as u64);
                e
            })
            .collect();
        let mut overflow = Counters::default();
        let mut rows = Vec::new();
        for ((tag, paged), slot) in where_of {
            let e = self.ledger.counts[&(tag, paged)];
            let c = Counters {
                allocs: e.allocs,
                frees: e.frees,
                bytes: e.bytes,
            };
            let (fa, ff, fb) = fields(paged);
            let add = |buf: &mut StructBuf, a: u64, f: u64, b: u64| {
                let cur = |buf: &StructBuf, name: &str| read_field(m, buf, name);
                let (ca, cf, cb) = (cur(buf, fa), cur(buf, ff), cur(buf, fb));
                buf.set(fa, ca.wrapping_add(a))
                    .set(ff, cf.wrapping_add(f))
                    .set(fb, cb.wrapping_add(b));
            };
            match slot {
                TrackerSlot::Hashed { index } => {
                    let s = self.split(c);
                    for cpu in 0..cpus {
                        if s.allocs[cpu] == 0 && s.frees[cpu] == 0 && cpu != 0 {
                            continue;
                        }
                        let buf = &mut cpu_tables[cpu][index as usize];
                        if cpu != 0 {
                            // A CPU copies the key from the global slot the
                            // first time it charges the tag.
                            buf.set("Key", tag as u64);
                            touched[cpu].insert(index as usize);
                        }
                        add(buf, s.allocs[cpu], s.frees[cpu], s.bytes[cpu]);
                    }
                }
                TrackerSlot::Expansion { index } => {
                    add(&mut exp_entries[index as usize], c.allocs, c.frees, c.bytes)
                }
                TrackerSlot::Overflow => {
                    let s = self.split(c);
                    for (cpu, table) in cpu_tables.iter_mut().enumerate() {
                        let buf = &mut table[size as usize - 1];
                        add(buf, s.allocs[cpu], s.frees[cpu], s.bytes[cpu]);
                    }
                    overflow.allocs += c.allocs;
                    overflow.frees += c.frees;
                    overflow.bytes = overflow.bytes.wrapping_add(c.bytes);
                }
            }
            let wrap = |v: u64| {
                if counter_bits >= 64 {
                    v
                } else {
                    v & ((1u64 << counter_bits) - 1)
                }
            };
            rows.push(TagUsage {
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
            });
        }

        // Write the tables: each its own allocation of Size * entry bytes.
        let pages = (size * entry).div_ceil(PAGE64);
        let nx = self.nx_kind();
        let mut vas = Vec::new();
        for table in &cpu_tables {
            let va = self.pool_pages(nx, pages, 1);
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.bytes.iter().copied()).collect();
            self.write_va(va, &bytes);
            vas.push(va);
        }
        let (exp_va, exp_size) = if exp_entries.is_empty() {
            (0, 0)
        } else {
            // The expansion table grows a page at a time.
            let pages = (exp_entries.len() as u64 * entry).div_ceil(PAGE64);
            let va = self.pool_pages(nx, pages, 1);
            let bytes: Vec<u8> = exp_entries
                .iter()
                .flat_map(|e| e.bytes.iter().copied())
                .collect();
            self.write_va(va, &bytes);
            (va, pages * PAGE64 / entry)
        };
        self.set_global("PoolTrackTable", vas[0]);
        self.set_global("PoolTrackTableSize", size);
        self.set_global("PoolTrackTableMask", mask);
        self.set_global("PoolTrackTableExpansion", exp_va);
        self.set_global("PoolTrackTableExpansionSize", exp_size);
        if let Some(base) = self.sym_va("ExPoolTagTables") {
            for (i, va) in vas.iter().enumerate() {
                self.write_u64(base + 8 * i as u64, *va);
            }
            self.truth.symbols.insert("ExPoolTagTables".into(), base);
        }
        let t = &mut self.truth.tracker;
        t.entry_size = entry;
        t.size = size;
        t.mask = mask;
        t.table_va = vas[0];
        t.per_cpu_vas = vas;
        t.expansion_va = exp_va;
        t.expansion_size = exp_size;
        t.expansion_tags = expansion.iter().map(|k| tag_string(*k)).collect();
        t.overflow = (overflow != Counters::default()).then_some(overflow);
        t.counter_bits = counter_bits;
        t.hot_tags = hot;
        self.truth.tags = rows;
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
