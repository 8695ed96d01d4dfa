//! An independent reader agrees with the kit.
//!
//! kdmp-parser (a crash-dump crate nobody on this project wrote) opens
//! every dump the kit writes, and the pool state is decoded here with
//! nothing but kdmp-parser's readers and the committed ground-truth
//! manifests (`testdata/nt/<build>/layout.json`, parsed here with
//! serde_json). pooldump-core is deliberately not used: this is what shows
//! the kit's dumps are what the kit's truth says, so that pooldump's own
//! tests, which compare pooldump against that truth, compare against
//! something real.
//!
//! Decoding follows pool.md: tracker tables summed over every processor's
//! copy plus the expansion table (§2.3, §2.4), the big-page table with its
//! free bit (§3.2), pool headers as `(POOL_TYPE & 0x6D) | 2` (§4.2), and
//! the placement rules the kernel's hashes and the legacy allocator's
//! PreviousSize chain imply (§2.2, §3.2, §4.3).
//!
//! kdmp-parser workarounds (crates-and-test-data.md §1.10 and §1.4):
//! * physical reads are page-aligned and at most one page long, because
//!   `phys::Reader::read_exact` returns wrong bytes for unaligned reads
//!   that cross more than one page boundary;
//! * virtual reads are split at every 4 KiB boundary too: inside a 2 MiB
//!   large page `virt::Reader::read_exact` hands the physical reader one
//!   unaligned multi-page read and hits the same bug;
//! * no dump here has a corrupt module list (kdmp-parser would hang or
//!   panic on one; `hazards.rs` covers pooldump on those).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::path::PathBuf;

use kdmp_parser::gxa::{Gpa, Gva, Gxa};
use kdmp_parser::map::MappedFileReader;
use kdmp_parser::parse::KernelDumpParser;
use kdmp_parser::structs::{DumpType, KdDebuggerData64};
use kdmp_parser::{phys, virt};
use pooldump_core::dump::MapCheck;
use pooldump_kit::truth::{AllocatorKind, TrackerSlot};
use pooldump_kit::{DumpKind, Machine, NtBuild, PoolKind, Scenario, SizeSpec, TagSpec};
use serde_json::Value;

const PAGE: u64 = 0x1000;
const KINDS: [DumpKind; 3] = [
    DumpKind::Full,
    DumpKind::KernelBitmap,
    DumpKind::CompleteBitmap,
];

// ----- the manifest, read without the kit's or pooldump's parsers -------

/// `testdata/nt/<build>/layout.json`.
struct Layout {
    v: Value,
    family: String,
}

/// A struct member: byte offset and size of its storage unit, and for a
/// bitfield its position and length in that unit.
#[derive(Debug, Clone, Copy)]
struct Field {
    offset: usize,
    size: usize,
    bits: Option<(u32, u32)>,
}

impl Field {
    fn get(&self, entry: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..self.size].copy_from_slice(&entry[self.offset..self.offset + self.size]);
        let v = u64::from_le_bytes(w);
        match self.bits {
            Some((pos, len)) => (v >> pos) & mask(len),
            None => v,
        }
    }

    /// Width in bits of the value.
    fn width(&self) -> u32 {
        self.bits.map_or(self.size as u32 * 8, |(_, len)| len)
    }
}

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

impl Layout {
    fn load(build: NtBuild) -> Layout {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/nt")
            .join(build.name())
            .join("layout.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let family = v["family"].as_str().unwrap_or("?").to_string();
        Layout { v, family }
    }

    fn sym(&self, name: &str) -> Option<&Value> {
        self.v["symbols"].get(name)
    }

    fn rva(&self, name: &str) -> u64 {
        self.sym(name)
            .and_then(|s| s["rva"].as_u64())
            .unwrap_or_else(|| panic!("{}: no symbol {name}", self.family))
    }

    fn size_of(&self, ty: &str) -> usize {
        self.v["types"][ty]["size"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no type {ty}", self.family)) as usize
    }

    fn field(&self, ty: &str, name: &str) -> Field {
        let f = &self.v["types"][ty]["fields"][name];
        let offset = f["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no field {ty}.{name}", self.family));
        let bits = match (f["bit_position"].as_u64(), f["bit_length"].as_u64()) {
            (Some(p), Some(l)) => Some((p as u32, l as u32)),
            _ => None,
        };
        Field {
            offset: offset as usize,
            size: f["size"].as_u64().expect("field size") as usize,
            bits,
        }
    }
}

// ----- reading through kdmp-parser ----------------------------------------

/// kdmp-parser's virtual reader, used in pieces that never cross a 4 KiB
/// boundary (see the module comment).
struct Kd<'p> {
    parser: &'p KernelDumpParser,
    virt: virt::Reader<'p>,
}

impl<'p> Kd<'p> {
    fn new(parser: &'p KernelDumpParser) -> Self {
        Self {
            parser,
            virt: virt::Reader::new(parser),
        }
    }

    fn try_read(&self, va: u64, len: usize) -> Result<Vec<u8>, kdmp_parser::error::Error> {
        let mut out = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let cur = va + done as u64;
            let n = ((PAGE - cur % PAGE) as usize).min(len - done);
            self.virt
                .read_exact(Gva::new(cur), &mut out[done..done + n])?;
            done += n;
        }
        Ok(out)
    }

    fn read(&self, va: u64, len: usize, what: &str) -> Vec<u8> {
        self.try_read(va, len)
            .unwrap_or_else(|e| panic!("kdmp-parser cannot read {what} at {va:#x}: {e}"))
    }

    fn u64(&self, va: u64, what: &str) -> u64 {
        u64::from_le_bytes(self.read(va, 8, what).try_into().expect("8 bytes"))
    }

    fn u32(&self, va: u64, what: &str) -> u32 {
        u32::from_le_bytes(self.read(va, 4, what).try_into().expect("4 bytes"))
    }

    fn translate(&self, va: u64) -> Option<u64> {
        self.virt
            .translate(Gva::new(va))
            .ok()
            .map(|t| t.gpa().u64())
    }

    /// One whole physical page.
    fn page(&self, pfn: u64) -> Vec<u8> {
        let mut b = vec![0u8; PAGE as usize];
        phys::Reader::new(self.parser)
            .read_exact(Gpa::new(pfn * PAGE), &mut b)
            .unwrap_or_else(|e| panic!("kdmp-parser cannot read PFN {pfn:#x}: {e}"));
        b
    }
}

/// PoolMon's display of a tag: the four bytes in memory order, escaping
/// non-printables as `\xNN`.
fn tag_text(v: u32) -> String {
    v.to_le_bytes()
        .iter()
        .map(|&b| {
            if (0x20..0x7F).contains(&b) {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// The tracker hash (pool.md §2.2).
fn tracker_hash(key: u32) -> u64 {
    let h = 40543u64 * key as u64;
    ((h as u32) ^ ((h >> 32) as u32)) as u64
}

/// The big-page table hash (pool.md §3.2).
fn big_page_hash(va: u64) -> u64 {
    let h = 40543u64 * ((va >> 12) as u32) as u64;
    ((h as u32) ^ ((h >> 32) as u32)) as u64
}

// ----- machines -----------------------------------------------------------

/// The kit's small scenario with 64 MiB of RAM, so full and complete dumps
/// stay small.
fn small(build: NtBuild, seed: u64) -> Scenario {
    let mut s = Scenario::small(build, seed);
    s.ram_mib = 64;
    s
}

fn open(bytes: Vec<u8>, what: &str) -> KernelDumpParser {
    KernelDumpParser::with_reader(Cursor::new(bytes))
        .unwrap_or_else(|e| panic!("kdmp-parser rejects {what}: {e}"))
}

// ----- the checks ---------------------------------------------------------

/// Everything kdmp-parser can say about one dump, against the truth.
fn check_dump(m: &Machine, layout: &Layout, kind: DumpKind, p: &KernelDumpParser) {
    let what = format!("{} {kind:?}", layout.family);
    check_header(m, kind, p, &what);
    check_physmem(m, kind, p, &what);
    check_modules(m, p, &what);
    let kd = Kd::new(p);
    check_kdbg(m, layout, &kd, &what);
    check_tracker(m, layout, &kd, &what);
    check_big_pool(m, layout, &kd, &what);
    check_pool_headers(m, layout, &kd, &what);
    check_legacy_chains(m, layout, &kd, &what);
    check_segment_heap(m, layout, &kd, &what);
    check_pages(m, &kd, &what);
}

fn check_header(m: &Machine, kind: DumpKind, p: &KernelDumpParser, what: &str) {
    let t = &m.truth;
    let h = p.headers();
    let want_type = match kind {
        DumpKind::Full => DumpType::Full,
        DumpKind::KernelBitmap | DumpKind::CompleteBitmap => DumpType::Bmp,
    };
    assert_eq!(p.dump_type(), want_type, "{what}: dump type");
    assert_eq!(h.directory_table_base, t.kernel.dtb, "{what}: DTB");
    assert_eq!(h.minor_version, t.build_number, "{what}: build");
    assert_eq!(h.major_version, 0xF, "{what}: free build");
    assert_eq!(h.machine_image_type, 0x8664, "{what}: machine");
    assert_eq!(h.number_processors, t.cpus, "{what}: processors");
    assert_eq!(
        h.bug_check_code, m.scenario.bugcheck.code,
        "{what}: bugcheck"
    );
    assert_eq!(
        h.bug_check_code_parameters, m.scenario.bugcheck.parameters,
        "{what}: bugcheck parameters"
    );
    assert_eq!(
        h.kd_debugger_data_block, t.kernel.kd_debugger_data_block,
        "{what}: KdDebuggerDataBlock"
    );
    assert_eq!(
        h.ps_loaded_module_list, t.kernel.ps_loaded_module_list,
        "{what}: PsLoadedModuleList"
    );
    assert_eq!(h.system_time as u64, t.kernel.system_time, "{what}: time");
}

/// Every RAM frame (full, complete) or every frame the kit populated
/// (kernel bitmap) is in the dump with the kit's bytes.
fn check_physmem(m: &Machine, kind: DumpKind, p: &KernelDumpParser, what: &str) {
    let ram: Vec<u64> = m.mem.runs().iter().flat_map(|r| r.clone()).collect();
    let populated: BTreeSet<u64> = ram
        .iter()
        .copied()
        .filter(|&f| m.mem.is_populated(f))
        .collect();
    let in_dump: BTreeSet<u64> = p.physmem().map(|(gpa, _)| gpa.u64() / PAGE).collect();
    match kind {
        DumpKind::KernelBitmap => assert_eq!(in_dump, populated, "{what}: pages in the dump"),
        _ => assert_eq!(
            in_dump,
            ram.iter().copied().collect::<BTreeSet<u64>>(),
            "{what}: pages in the dump"
        ),
    }
    let kd = Kd::new(p);
    let mut want = vec![0u8; PAGE as usize];
    for &pfn in &populated {
        m.mem.read(pfn * PAGE, &mut want);
        assert!(kd.page(pfn) == want, "{what}: PFN {pfn:#x} differs");
    }
    if kind != DumpKind::KernelBitmap
        && let Some(&empty) = ram.iter().find(|f| !populated.contains(f))
    {
        assert!(
            kd.page(empty).iter().all(|&b| b == 0),
            "{what}: unused PFN {empty:#x} is not zero"
        );
    }
}

fn check_modules(m: &Machine, p: &KernelDumpParser, what: &str) {
    let got: BTreeMap<(u64, u64), String> = p
        .kernel_modules()
        .map(|(r, name)| ((r.start.u64(), r.end.u64()), name.to_string()))
        .collect();
    let want: BTreeMap<(u64, u64), String> = m
        .truth
        .kernel
        .modules
        .iter()
        .map(|md| ((md.base, md.base + md.size), md.full_name.clone()))
        .collect();
    assert!(!want.is_empty(), "{what}: the truth has no modules");
    assert_eq!(got, want, "{what}: kernel modules");
}

fn check_kdbg(m: &Machine, layout: &Layout, kd: &Kd, what: &str) {
    let t = &m.truth;
    let kdbg: KdDebuggerData64 = kd
        .virt
        .read_struct(Gva::new(t.kernel.kd_debugger_data_block))
        .unwrap_or_else(|e| panic!("{what}: KDBG: {e}"));
    assert_eq!(
        kdbg.header.owner_tag,
        u32::from_le_bytes(*b"KDBG"),
        "{what}: OwnerTag"
    );
    assert_eq!(kdbg.kern_base, t.kernel.kern_base, "{what}: KernBase");
    assert_eq!(
        kdbg.ps_loaded_module_list, t.kernel.ps_loaded_module_list,
        "{what}: KDBG PsLoadedModuleList"
    );
    assert_eq!(
        kdbg.pool_track_table,
        t.kernel.kern_base + layout.rva("PoolTrackTable"),
        "{what}: KDBG PoolTrackTable holds the variable's address"
    );
    // nt's image is at KernBase.
    assert_eq!(
        &kd.read(kdbg.kern_base, 2, "nt's DOS header")[..],
        b"MZ",
        "{what}"
    );
}

/// Counters of one pool type: (allocs, frees, bytes).
type Counts = (u64, u64, u64);

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

/// Decode the tracker as pool.md §2.3 says and compare it with
/// `truth.tags`; check that keys sit where the kernel's hash puts them.
fn check_tracker(m: &Machine, l: &Layout, kd: &Kd, what: &str) {
    let t = &m.truth;
    let kb = t.kernel.kern_base;
    let entry = l.size_of("_POOL_TRACKER_TABLE");
    let tf = TrackerFields::new(l);
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
    // ExPoolTagTables: K = min(array bound, KeNumberProcessors, header).
    let bound = l.sym("ExPoolTagTables").and_then(|s| s["count"].as_u64());
    let cpus = kd.u32(kb + l.rva("KeNumberProcessors"), "KeNumberProcessors") as u64;
    let k = bound
        .expect("ExPoolTagTables has a count")
        .min(cpus)
        .min(kd.parser.headers().number_processors as u64)
        .min(4096);
    assert_eq!(k, t.cpus as u64, "{what}: processors");
    let tables_va = kb + l.rva("ExPoolTagTables");
    let mut tables = Vec::new();
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
        tables.push(kd.read(va, size as usize * entry, "a tracker table"));
    }
    let key_at = |table: &[u8], i: usize| tf.key.get(&table[i * entry..]) as u32;

    // Sum every processor's copy per index; the key comes from the global
    // table, falling back to the per-CPU key.
    let mut got: BTreeMap<(u32, bool), Counts> = BTreeMap::new();
    let mut where_is: HashMap<u32, TrackerSlot> = HashMap::new();
    let mut overflow = [(0, 0, 0); 2];
    for i in 0..size as usize {
        let gkey = key_at(&tables[0], i);
        let mut acc = [(0, 0, 0); 2];
        let mut key = gkey;
        for (cpu, table) in tables.iter().enumerate() {
            let ck = key_at(table, i);
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
            tf.add(&mut acc, &table[i * entry..(i + 1) * entry]);
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
        let mut j = tracker_hash(key) & tmask;
        while j != i as u64 {
            assert_ne!(
                key_at(&tables[0], j as usize),
                0,
                "{what}: {} sits at {i} but slot {j} on its probe path is empty",
                tag_text(key)
            );
            j = (j + 1) & tmask;
        }
        assert!(
            where_is
                .insert(key, TrackerSlot::Hashed { index: i as u64 })
                .is_none(),
            "{what}: {} is in the table twice",
            tag_text(key)
        );
        record(&mut got, key, acc);
    }

    // The expansion table: unhashed, scanned from 0 to the first empty key.
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
            let key = key_at(&table, i);
            if key == 0 {
                break;
            }
            let mut acc = [(0, 0, 0); 2];
            tf.add(&mut acc, &table[i * entry..(i + 1) * entry]);
            assert!(
                where_is
                    .insert(key, TrackerSlot::Expansion { index: i as u64 })
                    .is_none(),
                "{what}: {} is in the hashed table and the expansion table",
                tag_text(key)
            );
            exp_keys.push(tag_text(key));
            record(&mut got, key, acc);
        }
        // The kernel spills into the expansion table only once every
        // hashed slot is taken.
        assert!(
            (0..size as usize - 1).all(|i| key_at(&tables[0], i) != 0),
            "{what}: keys in the expansion table while the hashed table has room"
        );
    }
    assert_eq!(exp_keys, t.tracker.expansion_tags, "{what}: expansion keys");

    // Against the truth: every row's counters where its slot says.
    let mut want: BTreeMap<(u32, bool), Counts> = BTreeMap::new();
    let mut want_overflow = [(0u64, 0u64, 0u64); 2];
    let cw = tf.nonpaged[0].width();
    for row in &t.tags {
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

fn record(got: &mut BTreeMap<(u32, bool), Counts>, key: u32, acc: [Counts; 2]) {
    for (paged, c) in [(false, acc[0]), (true, acc[1])] {
        if c != (0, 0, 0) {
            got.insert((key, paged), c);
        }
    }
}

/// Decode PoolBigPageTable and compare it with `truth.big_pool`.
fn check_big_pool(m: &Machine, l: &Layout, kd: &Kd, what: &str) {
    let t = &m.truth;
    let kb = t.kernel.kern_base;
    let ty = "_POOL_TRACKER_BIG_PAGES";
    let entry = l.size_of(ty);
    let (f_va, f_key, f_type, f_bytes) = (
        l.field(ty, "Va"),
        l.field(ty, "Key"),
        l.field(ty, "PoolType"),
        l.field(ty, "NumberOfBytes"),
    );
    let table = kd.u64(kb + l.rva("PoolBigPageTable"), "PoolBigPageTable");
    let size = kd.u64(kb + l.rva("PoolBigPageTableSize"), "PoolBigPageTableSize");
    let in_use = kd.u32(kb + l.rva("ExpPoolBigEntriesInUse"), "in use") as u64;
    assert!(
        size.is_power_of_two() && size <= 1 << 24,
        "{what}: size {size:#x}"
    );
    assert_eq!(
        (table, size, entry as u64, in_use),
        (
            t.big_pool.table_va,
            t.big_pool.table_size,
            t.big_pool.entry_size,
            t.big_pool.in_use
        ),
        "{what}: big-page table shape"
    );
    let bytes = kd.read(table, size as usize * entry, "the big-page table");
    let va_at = |i: u64| f_va.get(&bytes[i as usize * entry..]);
    let mut got = Vec::new();
    let mut live = 0;
    for i in 0..size {
        let e = &bytes[i as usize * entry..(i as usize + 1) * entry];
        let va = f_va.get(e);
        if va == 1 {
            // Never used.
            assert_eq!(f_key.get(e), 0, "{what}: unused entry {i} has a key");
            continue;
        }
        let freed = va & 1 == 1;
        let va = va & !1;
        if !freed {
            live += 1;
            // Inserted at the first free slot probing from the hash, so no
            // never-used slot lies on its probe path.
            let mut j = big_page_hash(va) & (size - 1);
            while j != i {
                assert_ne!(
                    va_at(j),
                    1,
                    "{what}: big entry {va:#x} at {i}, but {j} on its path was never used"
                );
                j = (j + 1) & (size - 1);
            }
        }
        got.push((
            i,
            va,
            tag_text(f_key.get(e) as u32),
            f_type.get(e) as u32,
            f_bytes.get(e),
            freed,
        ));
    }
    assert_eq!(
        live, in_use,
        "{what}: live entries vs ExpPoolBigEntriesInUse"
    );
    let want: Vec<_> = t
        .big_pool
        .entries
        .iter()
        .map(|e| (e.index, e.va, e.tag.clone(), e.pool_type, e.bytes, e.freed))
        .collect();
    assert_eq!(got, want, "{what}: big-page entries");
    // The table holds POOL_TYPE values (pool.md §3.2), not the header's
    // encoding: 0 nonpaged, 1 paged, 0x200 NonPagedPoolNx.
    for e in &t.big_pool.entries {
        assert!(
            [0, 1, 0x200].contains(&e.pool_type),
            "{what}: big entry {:#x} PoolType {:#x}",
            e.va,
            e.pool_type
        );
    }
    // Each live header-less allocation of the truth is in the table (a
    // freed one's entry may have been reused since).
    for a in &t.allocations {
        if a.live && matches!(a.allocator, AllocatorKind::Big | AllocatorKind::VsBig) {
            let pool_type = a.pool.pool_type();
            assert!(
                t.big_pool
                    .entries
                    .iter()
                    .any(|e| e.va == a.va && !e.freed && e.pool_type == pool_type),
                "{what}: big allocation {:#x} ({}) is not in the table",
                a.va,
                a.tag
            );
        }
    }
}

/// The pool header of every allocation whose header is in the dump.
fn check_pool_headers(m: &Machine, l: &Layout, kd: &Kd, what: &str) {
    let ty = "_POOL_HEADER";
    let size = l.size_of(ty);
    let (f_prev, f_block, f_type, f_tag) = (
        l.field(ty, "PreviousSize"),
        l.field(ty, "BlockSize"),
        l.field(ty, "PoolType"),
        l.field(ty, "PoolTag"),
    );
    let mut checked = 0;
    for a in &m.truth.allocations {
        let Some(h) = a.header_va else { continue };
        if !a.in_dump || !(a.live || a.stale_header) {
            continue;
        }
        assert_eq!(a.va, h + 0x10, "{what}: data follows the header");
        let b = kd.read(h, size, "a pool header");
        let tag = f_tag.get(&b) as u32;
        let want_tag = a.tag_value | if a.protected { 0x8000_0000 } else { 0 };
        assert_eq!(
            tag_text(tag),
            tag_text(want_tag),
            "{what}: header {h:#x} tag"
        );
        let cache_aligned = a.extra_header_va.is_some();
        let pool_type = a.pool.pool_type() | if cache_aligned { 4 } else { 0 };
        let want_type = if a.live || a.allocator != AllocatorKind::LegacyPage {
            // Live, or a segment-heap block whose stale header survives.
            (pool_type & 0x6D) | 2
        } else {
            // A free legacy chunk.
            0
        };
        assert_eq!(
            f_type.get(&b),
            want_type as u64,
            "{what}: header {h:#x} ({}) PoolType",
            a.tag
        );
        // A free legacy chunk includes the free space it coalesced with;
        // the truth records the merged size.
        assert_eq!(
            f_block.get(&b) * 16,
            a.block_bytes,
            "{what}: header {h:#x} ({}) BlockSize",
            a.tag
        );
        if a.allocator != AllocatorKind::LegacyPage {
            assert_eq!(
                f_prev.get(&b),
                if cache_aligned {
                    (h - a.extra_header_va.unwrap_or(h)) / 16
                } else {
                    0
                },
                "{what}: segment-heap header {h:#x} PreviousSize"
            );
        }
        if let Some(first) = a.extra_header_va {
            let fb = kd.read(first, size, "a first cache-aligned header");
            assert_eq!(f_tag.get(&fb) as u32, want_tag, "{what}: first header tag");
            assert_eq!(
                f_type.get(&fb),
                ((a.pool.pool_type() & 0x6D) | 2) as u64,
                "{what}: first header {first:#x} PoolType (CacheAligned clear)"
            );
            assert_eq!(
                first + f_block.get(&fb) * 16,
                h,
                "{what}: the first header's block ends at the second"
            );
        }
        assert_eq!(
            kd.translate(h),
            a.pa,
            "{what}: header {h:#x} physical address"
        );
        checked += 1;
    }
    assert!(checked > 50, "{what}: only {checked} headers checked");
}

/// Legacy pool pages (pool.md §4.3): the headers tile each page, every
/// PreviousSize equals the BlockSize before it, and only the first is 0.
fn check_legacy_chains(m: &Machine, l: &Layout, kd: &Kd, what: &str) {
    let ty = "_POOL_HEADER";
    let (f_prev, f_block, f_type, f_index) = (
        l.field(ty, "PreviousSize"),
        l.field(ty, "BlockSize"),
        l.field(ty, "PoolType"),
        l.field(ty, "PoolIndex"),
    );
    // PoolIndex names the pool descriptor: 1..=ExpNumberOfPagedPools for
    // paged pool, below ExpNumberOfNonPagedPools for nonpaged (§4.3.6).
    let kb = m.truth.kernel.kern_base;
    let count = |name: &str| l.sym(name).map(|_| kd.u32(kb + l.rva(name), name) as u64);
    let (paged_pools, nonpaged_pools) = (
        count("ExpNumberOfPagedPools"),
        count("ExpNumberOfNonPagedPools"),
    );
    let pages: BTreeSet<u64> = m
        .truth
        .allocations
        .iter()
        .filter(|a| a.allocator == AllocatorKind::LegacyPage && a.in_dump)
        .filter_map(|a| a.header_va)
        .map(|h| h & !(PAGE - 1))
        .collect();
    for page in pages {
        let b = kd.read(page, PAGE as usize, "a legacy pool page");
        let mut at = 0u64;
        let mut prev = 0u64;
        while at < PAGE {
            let h = &b[at as usize..];
            let (ps, bs, pt) = (f_prev.get(h), f_block.get(h), f_type.get(h));
            assert_eq!(ps, prev, "{what}: {:#x} PreviousSize", page + at);
            assert!(bs > 0, "{what}: {:#x} BlockSize 0", page + at);
            assert!(
                pt == 0 || (pt & 2 != 0 && pt & 0x90 == 0),
                "{what}: {:#x} PoolType {pt:#x}",
                page + at
            );
            let index = f_index.get(h);
            match (pt, pt & 1 == 1) {
                (0, _) => {}
                (_, true) => assert!(
                    paged_pools.is_none_or(|n| (1..=n).contains(&index)),
                    "{what}: {:#x} paged PoolIndex {index}",
                    page + at
                ),
                (_, false) => assert!(
                    nonpaged_pools.is_none_or(|n| index < n.max(1)),
                    "{what}: {:#x} nonpaged PoolIndex {index}",
                    page + at
                ),
            }
            prev = bs;
            at += bs * 16;
        }
        assert_eq!(at, PAGE, "{what}: the chunks of {page:#x} overrun the page");
    }
}

/// The segment heap as pool.md §4.5 decodes it, with its constants rather
/// than the manifest's offsets (so this also checks the manifest against
/// pool.md): heap keys from ExPoolState, range descriptors, LFH bitmaps,
/// encoded VS chunk headers and page-segment signatures.
fn check_segment_heap(m: &Machine, l: &Layout, kd: &Kd, what: &str) {
    const MB: u64 = 1 << 20;
    let t = &m.truth;
    if t.build_number < 18362 {
        return;
    }
    let kb = t.kernel.kern_base;
    let state = kb + l.rva("ExPoolState");
    let globals = kd.u64(state, "ExPoolState.HeapManager.Globals");
    assert_eq!(
        globals,
        kb + l.rva("RtlpHpHeapGlobals"),
        "{what}: ExPoolState's first qword points at RtlpHpHeapGlobals"
    );
    let heap_key = kd.u64(globals, "HeapKey");
    let lfh_key = kd.u64(globals + 8, "LfhKey");
    let pools_off = l
        .field("_EX_POOL_HEAP_MANAGER_STATE", "NumberOfPools")
        .offset as u64;
    let node_off = l.field("_EX_POOL_HEAP_MANAGER_STATE", "PoolNode").offset as u64;
    let ctx_off = l.field("_SEGMENT_HEAP", "SegContexts").offset as u64;
    // pool.md §4.5's table.
    match t.build_number {
        19041 => assert_eq!((pools_off, node_off, ctx_off), (0x38D0, 0x3900, 0x100)),
        22000 => assert_eq!((pools_off, node_off, ctx_off), (0x38E0, 0x3900, 0x140)),
        _ => {}
    }
    let pools = kd.u32(state + pools_off, "NumberOfPools");
    assert!((1..=64).contains(&pools), "{what}: NumberOfPools {pools}");
    // PoolNode[0].Heaps[]: 0 NonPaged, 1 NonPagedNx, 2 Paged.
    let heaps: Vec<u64> = (0..3)
        .map(|i| kd.u64(state + node_off + 8 * i, "PoolNode[0].Heaps[i]"))
        .collect();
    for &h in &heaps {
        assert_eq!(kd.u32(h + 0x10, "_SEGMENT_HEAP.Signature"), 0xDDEE_DDEE);
    }
    let heap_of = |k: PoolKind| match k {
        PoolKind::NonPaged => heaps[0],
        PoolKind::NonPagedNx => heaps[1],
        PoolKind::Paged => heaps[2],
    };
    let paged_out: BTreeSet<u64> = t.pages.paged_out.iter().copied().collect();
    // Metadata on a paged-out page cannot be checked; anything else must
    // read.
    let read = |va: u64, n: usize| -> Option<Vec<u8>> {
        match kd.try_read(va, n) {
            Ok(b) => Some(b),
            Err(_) if paged_out.contains(&(va & !(PAGE - 1))) => None,
            Err(e) => panic!("{what}: heap metadata at {va:#x}: {e}"),
        }
    };
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    // The subsegment holding `va`: its range descriptor (0x20 bytes from
    // the segment base, one per page; RangeFlags +0x18, UnitOffset
    // +0x1F back to the first page of the range) and its flags.
    let subsegment = |va: u64| -> Option<(u64, u8)> {
        let seg = va & !(MB - 1);
        let idx = (va - seg) >> 12;
        let d = read(seg + idx * 0x20, 0x20)?;
        let first = if d[0x18] == 0 {
            idx - d[0x1F] as u64
        } else {
            idx
        };
        let d = read(seg + first * 0x20, 0x20)?;
        Some((seg + first * PAGE, d[0x18]))
    };
    let mut vs_subs = BTreeSet::new();
    let mut checked = 0;
    for a in &t.allocations {
        if !a.in_dump {
            continue;
        }
        let chunk = match (a.allocator, a.extra_header_va, a.header_va) {
            (AllocatorKind::Lfh, _, Some(h)) => h,
            (AllocatorKind::Vs, Some(first), _) => first - 0x10,
            (AllocatorKind::Vs, None, Some(h)) => h - 0x10,
            (AllocatorKind::VsBig, _, _) => a.va - 0x10,
            _ => continue,
        };
        // The page segment ties back to its heap's first segment context.
        let seg = chunk & !(MB - 1);
        if let Some(sh) = read(seg, 0x18) {
            let ctx = u64_at(&sh, 0x10) ^ heap_key ^ seg ^ 0xA2E6_4EAD_A2E6_4EAD;
            assert_eq!(
                ctx,
                heap_of(a.pool) + ctx_off,
                "{what}: segment {seg:#x} signature"
            );
        }
        let Some((sub, flags)) = subsegment(chunk) else {
            continue;
        };
        if a.allocator == AllocatorKind::Lfh {
            assert_eq!(flags, 0x0B, "{what}: LFH range flags at {sub:#x}");
            let Some(hdr) = read(sub, 0x30) else { continue };
            let enc = u32::from_le_bytes(hdr[0x28..0x2C].try_into().expect("4"));
            let dec = enc ^ lfh_key as u32 ^ ((sub as u32) >> 12);
            let (block, first) = ((dec & 0xFFFF) as u64, (dec >> 16) as u64);
            assert_eq!(block, a.block_bytes, "{what}: LFH block size at {sub:#x}");
            let rel = chunk - sub - first;
            assert_eq!(rel % block, 0, "{what}: LFH block {chunk:#x} misaligned");
            let i = rel / block;
            let Some(bm) = read(sub + 0x30 + (2 * i) / 8, 1) else {
                continue;
            };
            let allocated = (bm[0] >> ((2 * i) % 8)) & 1 == 1;
            assert_eq!(allocated, a.live, "{what}: LFH bitmap for {chunk:#x}");
        } else {
            assert_eq!(flags, 0x0F, "{what}: VS range flags at {sub:#x}");
            vs_subs.insert(sub);
            let Some(c) = read(chunk, 8) else { continue };
            let q = u64_at(&c, 0) ^ chunk ^ heap_key;
            let (size, allocated) = (((q >> 16) & 0xFFFF) * 16, (q >> 48) & 0xFF);
            let want = match (a.allocator, a.extra_header_va, a.header_va) {
                (AllocatorKind::VsBig, _, _) => a.block_bytes,
                // Cache-aligned: the chunk header, the first header's block,
                // then the second header's block.
                (_, Some(first), Some(second)) => 0x10 + (second - first) + a.block_bytes,
                _ => a.block_bytes + 0x10,
            };
            assert_eq!(size, want, "{what}: VS chunk {chunk:#x} size");
            assert_eq!(
                allocated & 1 == 1,
                a.live,
                "{what}: VS chunk {chunk:#x} busy"
            );
        }
        checked += 1;
    }
    assert!(
        checked > 20,
        "{what}: {checked} segment-heap blocks checked"
    );
    // Each VS subsegment: signature, and chunks that tile it with
    // UnsafePrevSize chaining.
    for sub in vs_subs {
        let Some(h) = read(sub, 0x28) else { continue };
        let size = u16::from_le_bytes([h[0x20], h[0x21]]) as u64;
        let sig = u16::from_le_bytes([h[0x22], h[0x23]]) as u64 & 0x7FFF;
        assert_eq!(
            sig,
            (size ^ 0x2BED) & 0x7FFF,
            "{what}: VS subsegment {sub:#x}"
        );
        let end = sub + size * 16;
        let (mut c, mut prev, mut whole) = (sub + 0x30, 0, true);
        while c < end {
            let Some(b) = read(c, 8) else {
                whole = false;
                break;
            };
            let q = u64_at(&b, 0) ^ c ^ heap_key;
            let units = (q >> 16) & 0xFFFF;
            assert_eq!(
                (q >> 32) & 0xFFFF,
                prev,
                "{what}: VS chunk {c:#x} prev size"
            );
            assert!(units > 0, "{what}: VS chunk {c:#x} has size 0");
            prev = units;
            c += units * 16;
        }
        if whole {
            assert_eq!(c, end, "{what}: VS chunks do not tile {sub:#x}");
        }
    }
}

/// Paged-out pages do not translate; transition pages do, to the frame
/// the kit left them in.
fn check_pages(m: &Machine, kd: &Kd, what: &str) {
    for &va in &m.truth.pages.paged_out {
        assert!(
            kd.try_read(va, 8).is_err(),
            "{what}: paged-out {va:#x} reads"
        );
    }
    for &va in &m.truth.pages.transition {
        assert!(
            kd.translate(va).is_some(),
            "{what}: transition page {va:#x} does not translate"
        );
    }
    for &va in &m.truth.pages.large_pages {
        let t = kd.virt.translate(Gva::new(va)).expect("large page");
        assert_eq!(
            t.page_kind,
            kdmp_parser::structs::PageKind::Large,
            "{what}: {va:#x}"
        );
    }
}

// ----- tests --------------------------------------------------------------

#[test]
fn every_build_and_dump_kind_reads_back() {
    for build in NtBuild::ALL {
        let layout = Layout::load(build);
        let m = Machine::build(&small(build, 11));
        for kind in KINDS {
            let what = format!("{build} {kind:?}");
            let bytes = m.dump_bytes(kind);
            // pooldump's own reading of the header gives kdmp-parser's map.
            let ours = pooldump_core::CrashDump::from_bytes(&what, bytes.clone())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                matches!(ours.check_with_kdmp_parser(), MapCheck::Same { runs } if runs > 0),
                "{what}: {:?}",
                ours.check_with_kdmp_parser()
            );
            let p = open(bytes, &what);
            check_dump(&m, &layout, kind, &p);
        }
    }
}

#[test]
fn a_dump_file_opens_through_the_mapped_reader() {
    let dir = tempfile::tempdir().expect("temp dir");
    for build in [NtBuild::Win7_7601, NtBuild::Win11_22000] {
        let m = Machine::build(&small(build, 5));
        let path = dir.path().join(format!("{build}.dmp"));
        m.write_dump_file(DumpKind::KernelBitmap, &path)
            .expect("write the dump");
        let reader = MappedFileReader::new(&path).expect("map the dump");
        let p = KernelDumpParser::with_reader(reader)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check_dump(&m, &Layout::load(build), DumpKind::KernelBitmap, &p);
    }
}

/// A tiny tracker (64 hashed slots, all taken by the boot-time hot tags),
/// a small expansion table and a counter that wraps 32 bits: every slot
/// kind of pool.md §2.2-2.4.
#[test]
fn expansion_overflow_and_wrapped_counters() {
    for build in NtBuild::ALL {
        let mut s = small(build, 23);
        s.tracker.size_log2 = Some(6);
        s.tracker.expansion_capacity = 3;
        s.tags.push(TagSpec {
            tag: "Wrap".into(),
            pool: PoolKind::Paged,
            live: 2,
            size: SizeSpec::Fixed(0x40),
            freed: 5_000_000_000,
            freed_in_memory: 0,
            protected: false,
            cache_aligned: false,
        });
        let m = Machine::build(&s);
        let slots: Vec<&TrackerSlot> = m.truth.tags.iter().map(|r| &r.slot).collect();
        for want in ["hashed", "expansion", "overflow"] {
            assert!(
                slots.iter().any(|s| match s {
                    TrackerSlot::Hashed { .. } => want == "hashed",
                    TrackerSlot::Expansion { .. } => want == "expansion",
                    TrackerSlot::Overflow => want == "overflow",
                }),
                "{build}: the scenario has no {want} tag"
            );
        }
        let p = open(m.dump_bytes(DumpKind::KernelBitmap), build.name());
        check_dump(&m, &Layout::load(build), DumpKind::KernelBitmap, &p);
    }
}

#[test]
fn paged_out_and_transition_pages() {
    for build in [NtBuild::Win81_9600, NtBuild::Win10_19041] {
        let mut s = small(build, 31);
        s.paged_out = 0.3;
        s.transition = 0.3;
        let m = Machine::build(&s);
        assert!(!m.truth.pages.paged_out.is_empty() && !m.truth.pages.transition.is_empty());
        assert!(m.truth.allocations.iter().any(|a| !a.in_dump));
        let p = open(m.dump_bytes(DumpKind::KernelBitmap), build.name());
        check_dump(&m, &Layout::load(build), DumpKind::KernelBitmap, &p);
    }
}
