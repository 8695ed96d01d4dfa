//! The pool tag tracker decoded as docs/pool-structures.md §2 says (every processor's
//! copy summed per index, plus the expansion table) and compared with
//! `truth.tags`; keys must sit where the kernel's hash puts them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use pooldump_kit::Machine;
use pooldump_kit::truth::TrackerSlot;

use crate::kd::{Field, Kd, Layout, mask, tag_text, tracker_hash};

/// Counters of one pool type: (allocs, frees, bytes).
type Counts = (u64, u64, u64);

/// Summed counters by (tag, paged).
type Rows = BTreeMap<(u32, bool), Counts>;

/// One tracker entry's counters by pool type, and its key.
struct TrackerFields {
    key: Field,
    nonpaged: [Field; 3],
    paged: [Field; 3],
}

impl TrackerFields {
    fn new(l: &Layout) -> Self {
        let f = |n: &str| l.field("_POOL_TRACKER_TABLE", n);
        Self {
            key: f("Key"),
            nonpaged: [f("NonPagedAllocs"), f("NonPagedFrees"), f("NonPagedBytes")],
            paged: [f("PagedAllocs"), f("PagedFrees"), f("PagedBytes")],
        }
    }

    /// Add `entry`'s counters into `acc` (nonpaged, paged), each wrapping
    /// at its own field width as the kernel's counters do.
    fn add(&self, acc: &mut [Counts; 2], entry: &[u8]) {
        for (i, fs) in [&self.nonpaged, &self.paged].into_iter().enumerate() {
            let add = |a: u64, f: &Field| a.wrapping_add(f.get(entry)) & mask(f.width());
            acc[i] = (
                add(acc[i].0, &fs[0]),
                add(acc[i].1, &fs[1]),
                add(acc[i].2, &fs[2]),
            );
        }
    }
}

/// The hashed tables as the dump holds them: one copy per processor
/// (the first is PoolTrackTable), their entry size and slot count.
struct Tables {
    copies: Vec<Vec<u8>>,
    entry: usize,
    size: u64,
    mask: u64,
    fields: TrackerFields,
}

impl Tables {
    fn key_at(&self, table: &[u8], i: usize) -> u32 {
        self.fields.key.get(&table[i * self.entry..]) as u32
    }
}

/// Decode the tracker as docs/pool-structures.md §2 says and compare it with
/// `truth.tags`; check that keys sit where the kernel's hash puts them.
pub(crate) fn check_tracker(m: &Machine, l: &Layout, kd: &Kd, what: &str) {
    let t = &m.truth;
    let tables = read_tables(m, l, kd, what);
    let mut got: Rows = BTreeMap::new();
    let mut where_is: HashMap<u32, TrackerSlot> = HashMap::new();
    let overflow = sum_hashed(&tables, &mut got, &mut where_is, what);
    sum_expansion(m, l, kd, &tables, &mut got, &mut where_is, what);
    let cw = tables.fields.nonpaged[0].width();
    let (want, want_overflow) = truth_rows(m, cw, &where_is, what);
    assert_eq!(got, want, "{what}: summed tracker rows (tag, paged)");
    assert_eq!(overflow, want_overflow, "{what}: the overflow slot");
    let hot: BTreeSet<&String> = t.tracker.hot_tags.iter().collect();
    for tag in hot {
        assert!(
            where_is.keys().any(|&k| &tag_text(k) == tag),
            "{what}: hot tag {tag} is not in the table"
        );
    }
}

/// The tracker's shape against the truth, and every processor's copy of
/// the hashed table (ExPoolTagTables: K = min(array bound,
/// KeNumberProcessors, header)).
fn read_tables(m: &Machine, l: &Layout, kd: &Kd, what: &str) -> Tables {
    let t = &m.truth;
    let kb = t.kernel.kern_base;
    let entry = l.size_of("_POOL_TRACKER_TABLE");
    let size = kd.u64(kb + l.rva("PoolTrackTableSize"), "PoolTrackTableSize");
    let tmask = kd.u64(kb + l.rva("PoolTrackTableMask"), "PoolTrackTableMask");
    let global = kd.u64(kb + l.rva("PoolTrackTable"), "PoolTrackTable");
    assert!(
        size > 2 && (size - 1).is_power_of_two(),
        "{what}: PoolTrackTableSize {size:#x} is not 2^n + 1"
    );
    assert_eq!(tmask, size - 2, "{what}: PoolTrackTableMask is Size - 2");
    assert_eq!(
        (size, tmask, global, entry as u64),
        (
            t.tracker.size,
            t.tracker.mask,
            t.tracker.table_va,
            t.tracker.entry_size
        ),
        "{what}: tracker shape"
    );
    let bound = l.sym("ExPoolTagTables").and_then(|s| s["count"].as_u64());
    let cpus = kd.u32(kb + l.rva("KeNumberProcessors"), "KeNumberProcessors") as u64;
    let k = bound
        .expect("ExPoolTagTables has a count")
        .min(cpus)
        .min(kd.parser.headers().number_processors as u64)
        .min(4096);
    assert_eq!(k, t.cpus as u64, "{what}: processors");
    let tables_va = kb + l.rva("ExPoolTagTables");
    let mut copies = Vec::new();
    for cpu in 0..k {
        let va = kd.u64(tables_va + 8 * cpu, "ExPoolTagTables[i]");
        if cpu == 0 {
            assert_eq!(va, global, "{what}: ExPoolTagTables[0] is PoolTrackTable");
        }
        assert_eq!(
            Some(&va),
            t.tracker.per_cpu_vas.get(cpu as usize),
            "{what}: ExPoolTagTables[{cpu}]"
        );
        copies.push(kd.read(va, size as usize * entry, "a tracker table"));
    }
    Tables {
        copies,
        entry,
        size,
        mask: tmask,
        fields: TrackerFields::new(l),
    }
}

/// Sum every processor's copy per index into `got`; the key comes from
/// the global table, falling back to the per-CPU key. Returns the
/// overflow slot's counters.
fn sum_hashed(
    tables: &Tables,
    got: &mut Rows,
    where_is: &mut HashMap<u32, TrackerSlot>,
    what: &str,
) -> [Counts; 2] {
    let (size, entry, global) = (tables.size, tables.entry, &tables.copies[0]);
    let mut overflow = [(0, 0, 0); 2];
    for i in 0..size as usize {
        let gkey = tables.key_at(global, i);
        let mut acc = [(0, 0, 0); 2];
        let mut key = gkey;
        for (cpu, table) in tables.copies.iter().enumerate() {
            let ck = tables.key_at(table, i);
            if cpu > 0 && ck != 0 {
                assert!(
                    gkey == 0 || ck == gkey,
                    "{what}: CPU {cpu} slot {i} key {} differs from the global {}",
                    tag_text(ck),
                    tag_text(gkey)
                );
                if key == 0 {
                    key = ck;
                }
            }
            tables
                .fields
                .add(&mut acc, &table[i * entry..(i + 1) * entry]);
        }
        if i == size as usize - 1 {
            assert_eq!(gkey, 0, "{what}: the overflow slot has a key");
            overflow = acc;
            continue;
        }
        if key == 0 {
            assert_eq!(acc, [(0, 0, 0); 2], "{what}: keyless slot {i} has counts");
            continue;
        }
        assert_eq!(key, gkey, "{what}: slot {i} has a per-CPU key only");
        // Linear probing from the hash: every slot from the hash up to
        // this one is taken.
        let mut j = tracker_hash(key) & tables.mask;
        while j != i as u64 {
            assert_ne!(
                tables.key_at(global, j as usize),
                0,
                "{what}: {} sits at {i} but slot {j} on its probe path is empty",
                tag_text(key)
            );
            j = (j + 1) & tables.mask;
        }
        let slot = TrackerSlot::Hashed { index: i as u64 };
        record(got, where_is, key, slot, acc, || {
            format!("{what}: {} is in the table twice", tag_text(key))
        });
    }
    overflow
}

/// The expansion table: unhashed, scanned from 0 to the first empty key,
/// and used only once every hashed slot is taken.
fn sum_expansion(
    m: &Machine,
    l: &Layout,
    kd: &Kd,
    tables: &Tables,
    got: &mut Rows,
    where_is: &mut HashMap<u32, TrackerSlot>,
    what: &str,
) {
    let t = &m.truth;
    let kb = t.kernel.kern_base;
    let entry = tables.entry;
    let exp_va = kd.u64(kb + l.rva("PoolTrackTableExpansion"), "expansion");
    let exp_size = kd.u64(kb + l.rva("PoolTrackTableExpansionSize"), "expansion size");
    assert_eq!(
        (exp_va, exp_size),
        (t.tracker.expansion_va, t.tracker.expansion_size),
        "{what}: expansion table"
    );
    let mut exp_keys = Vec::new();
    if exp_va != 0 {
        let table = kd.read(exp_va, exp_size as usize * entry, "the expansion table");
        for i in 0..exp_size as usize {
            let key = tables.key_at(&table, i);
            if key == 0 {
                break;
            }
            let mut acc = [(0, 0, 0); 2];
            tables
                .fields
                .add(&mut acc, &table[i * entry..(i + 1) * entry]);
            let slot = TrackerSlot::Expansion { index: i as u64 };
            record(got, where_is, key, slot, acc, || {
                format!(
                    "{what}: {} is in the hashed table and the expansion table",
                    tag_text(key)
                )
            });
            exp_keys.push(tag_text(key));
        }
        assert!(
            (0..tables.size as usize - 1).all(|i| tables.key_at(&tables.copies[0], i) != 0),
            "{what}: keys in the expansion table while the hashed table has room"
        );
    }
    assert_eq!(exp_keys, t.tracker.expansion_tags, "{what}: expansion keys");
}

/// What the truth says the tracker holds: every row's counters where its
/// slot says (`cw` is the counters' width in bits), and the overflow
/// slot's sums.
fn truth_rows(
    m: &Machine,
    cw: u32,
    where_is: &HashMap<u32, TrackerSlot>,
    what: &str,
) -> (Rows, [Counts; 2]) {
    let mut want: Rows = BTreeMap::new();
    let mut want_overflow = [(0u64, 0u64, 0u64); 2];
    for row in &m.truth.tags {
        let paged = match row.pool.as_str() {
            "Paged" => true,
            "Nonp" => false,
            other => panic!("{what}: pool {other:?}"),
        };
        let c = (row.reported_allocs, row.reported_frees, row.bytes);
        assert_eq!(
            (row.reported_allocs, row.reported_frees),
            (row.allocs & mask(cw), row.frees & mask(cw)),
            "{what}: {} reported counters are the totals at {cw} bits",
            row.tag
        );
        match row.slot {
            TrackerSlot::Overflow => {
                let o = &mut want_overflow[paged as usize];
                *o = (
                    o.0.wrapping_add(c.0) & mask(cw),
                    o.1.wrapping_add(c.1) & mask(cw),
                    o.2.wrapping_add(c.2),
                );
            }
            slot => {
                assert_eq!(
                    where_is.get(&row.tag_value),
                    Some(&slot),
                    "{what}: {} slot",
                    row.tag
                );
                if c != (0, 0, 0) {
                    want.insert((row.tag_value, paged), c);
                }
            }
        }
    }
    (want, want_overflow)
}

/// Count `key`'s counters `acc` into `got`, noting in `where_is` that it
/// sits at `slot`; a key found a second time fails with `twice()`.
fn record(
    got: &mut Rows,
    where_is: &mut HashMap<u32, TrackerSlot>,
    key: u32,
    slot: TrackerSlot,
    acc: [Counts; 2],
    twice: impl FnOnce() -> String,
) {
    if where_is.insert(key, slot).is_some() {
        panic!("{}", twice());
    }
    for (paged, c) in [(false, acc[0]), (true, acc[1])] {
        if c != (0, 0, 0) {
            got.insert((key, paged), c);
        }
    }
}
