//! The pool while the machine runs: what nt's allocator does for each
//! ExAllocatePoolWithTag and ExFreePoolWithTag the simulated CPU executes.
//!
//! Blocks are carved by the same placement code that lays out the machine
//! at build time (legacy pool pages, LFH and VS subsegments of the segment
//! heap, big pages), and every structure a reader checks is kept whole
//! after each call: the free chunk that ends an open legacy page, the LFH
//! bitmap and free count, the free chunk that ends an open VS subsegment,
//! the subsegment and segment headers, the big-page table entry and
//! ExpPoolBigEntriesInUse. The tracker row of the processor that made the
//! call is charged in memory as the kernel does (docs/pool-structures.md §2).

use std::collections::BTreeMap;

use crate::builds::Allocator;
use crate::layout::StructBuf;
use crate::machine::Machine;
use crate::phys::PAGE64;
use crate::pool::{LEGACY_BIG, Req, SEG_HEAP_BIG};
use crate::scenario::PoolKind;
use crate::tracker::{big_page_hash, tag_hash};
use crate::truth::AllocatorKind;

/// A block the running machine handed out.
#[derive(Debug, Clone)]
pub struct LiveBlock {
    pub tag: u32,
    pub kind: PoolKind,
    pub size: u64,
    /// Bytes the tracker was charged.
    pub charged: u64,
    pub allocator: AllocatorKind,
    pub header_va: Option<u64>,
}

/// The running pool's own state, beside the build-time placement state.
#[derive(Debug, Default)]
pub struct RunPool {
    pub live: BTreeMap<u64, LiveBlock>,
    /// Allocations refused (pool or big-page table exhausted).
    pub failures: u64,
}

/// POOL_TYPE values the kernel accepts, reduced to the three pools the kit
/// models (session and must-succeed bits are not modelled).
pub fn pool_kind_of(pool_type: u32, has_nx: bool) -> Option<PoolKind> {
    match pool_type & !0x24 {
        1 | 3 => Some(PoolKind::Paged),
        // NonPagedPool is executable nonpaged pool on every build.
        0 | 2 => Some(PoolKind::NonPaged),
        0x200 if has_nx => Some(PoolKind::NonPagedNx),
        0x200 => Some(PoolKind::NonPaged),
        _ => None,
    }
}

impl Machine {
    fn read_u64_va(&self, va: u64) -> u64 {
        self.asp.read_u64(&self.mem, va)
    }

    fn read_u32_va(&self, va: u64) -> u32 {
        let mut b = [0u8; 4];
        self.asp.read(&self.mem, va, &mut b);
        u32::from_le_bytes(b)
    }

    /// Carve a block for the running machine. Returns (address, charged
    /// bytes), or None when it cannot be had.
    pub(crate) fn run_allocate(
        &mut self,
        pool: &mut RunPool,
        pool_type: u32,
        size: u64,
        tag: u32,
    ) -> Option<(u64, u64)> {
        let kind = pool_kind_of(pool_type, self.scenario.build.has_nx_pool())?;
        if size == 0 || size > 64 << 20 {
            pool.failures += 1;
            return None;
        }
        let req = Req {
            key: tag & 0x7FFF_FFFF,
            header_tag: tag,
            kind,
            size,
            live: true,
            cache_aligned: pool_type & 4 != 0,
        };
        let legacy = self.scenario.build.allocator() == Allocator::Legacy;
        let big = if legacy {
            size > LEGACY_BIG
        } else {
            size >= SEG_HEAP_BIG
        };
        if big && !self.big_table_has_room() {
            pool.failures += 1;
            return None;
        }
        let before = self.pool.big.len();
        let a = self.place_unrecorded(req);
        self.seal_open_pool(kind, a.header_va.unwrap_or(a.va));
        let charged = match a.allocator {
            AllocatorKind::Big if legacy => size.div_ceil(PAGE64) * PAGE64,
            AllocatorKind::Big | AllocatorKind::VsBig => size,
            _ => a.block_bytes,
        };
        if self.pool.big.len() > before {
            // The placement queued a big-page record for the build-time
            // table; the running kernel inserts it now instead.
            let rec = self.pool.big.pop().expect("just pushed");
            self.big_table_insert(rec.va, rec.key, rec.pool_type, rec.bytes);
        }
        pool.live.insert(
            a.va,
            LiveBlock {
                tag,
                kind,
                size,
                charged,
                allocator: a.allocator,
                header_va: a.header_va,
            },
        );
        Some((a.va, charged))
    }

    /// Release a block. Returns its tag as memory holds it (header or
    /// big-page table), with the charged bytes and the POOL_TYPE, or None
    /// when `va` is not a live block of the running machine.
    pub(crate) fn run_free(&mut self, pool: &mut RunPool, va: u64) -> Option<(u32, u64, u32)> {
        let b = pool.live.remove(&va)?;
        let tag = match b.allocator {
            AllocatorKind::Big | AllocatorKind::VsBig => {
                let key = self.big_table_remove(va).unwrap_or(b.tag);
                if b.allocator == AllocatorKind::VsBig {
                    self.vs_release(va - 0x10);
                }
                key
            }
            AllocatorKind::LegacyPage => {
                let h = b.header_va.expect("legacy blocks have a header");
                let tag = self.read_u32_va(h + 4);
                self.legacy_release(h);
                tag
            }
            AllocatorKind::Lfh => {
                let h = b.header_va.expect("LFH blocks have a header");
                let tag = self.read_u32_va(h + 4);
                self.lfh_release(h);
                tag
            }
            AllocatorKind::Vs => {
                let h = b.header_va.expect("VS blocks have a header");
                let tag = self.read_u32_va(h + 4);
                let chunk = self.pool.vs_moved.remove(&h).unwrap_or(h - 0x10);
                self.vs_release(chunk);
                tag
            }
        };
        Some((tag, b.charged, b.kind.pool_type()))
    }

    /// Charge (`sign` 1) or credit (`sign` -1) one allocation of `key` in
    /// processor `cpu`'s tracker table, as ExpInsertPoolTracker /
    /// ExpRemovePoolTracker do: probe from the tag's hash; an empty
    /// per-processor slot takes the global table's key at the same index,
    /// or the new key is written into both.
    pub(crate) fn run_charge_tracker(
        &mut self,
        cpu: u32,
        key: u32,
        bytes: u64,
        pool_type: u32,
        sign: i64,
    ) {
        let key = key & 0x7FFF_FFFF;
        let (Some(size_va), Some(mask_va), Some(global_va), Some(tables_va)) = (
            self.sym_va("PoolTrackTableSize"),
            self.sym_va("PoolTrackTableMask"),
            self.sym_va("PoolTrackTable"),
            self.sym_va("ExPoolTagTables"),
        ) else {
            return;
        };
        let size = self.read_u64_va(size_va);
        let mask = self.read_u64_va(mask_va);
        let global = self.read_u64_va(global_va);
        let mine = self.read_u64_va(tables_va + 8 * cpu as u64);
        let table = if mine == 0 { global } else { mine };
        let ety = "_POOL_TRACKER_TABLE";
        let entry = self.m.ty(ety).size;
        let mut idx = tag_hash(key) as u64 & mask;
        let mut slot = None;
        for _ in 0..=mask {
            let e = table + idx * entry;
            let k = self.read_u32_va(e);
            if k == key {
                slot = Some(e);
                break;
            }
            if k == 0 {
                let g = self.read_u32_va(global + idx * entry);
                if g == 0 {
                    // A new key: into the global table and this CPU's.
                    self.asp.write_u32(&mut self.mem, global + idx * entry, key);
                    self.asp.write_u32(&mut self.mem, e, key);
                    slot = Some(e);
                    break;
                }
                self.asp.write_u32(&mut self.mem, e, g);
                if g == key {
                    slot = Some(e);
                    break;
                }
            }
            idx = (idx + 1) & mask;
        }
        // A full table: the keyless overflow slot at Size-1.
        let e = slot.unwrap_or(table + (size - 1) * entry);
        let paged = pool_type & 1 == 1;
        let (fa, ff, fb) = if paged {
            ("PagedAllocs", "PagedFrees", "PagedBytes")
        } else {
            ("NonPagedAllocs", "NonPagedFrees", "NonPagedBytes")
        };
        let field = |m: &Machine, name: &str| -> (u64, u64) {
            let f = &m.m.ty(ety).fields[name];
            (f.offset, f.size)
        };
        let add = |m: &mut Machine, name: &str, delta: u64| {
            let (off, sz) = field(m, name);
            let mut b = [0u8; 8];
            m.asp.read(&m.mem, e + off, &mut b[..sz as usize]);
            let v = u64::from_le_bytes(b).wrapping_add(delta);
            m.asp
                .write(&mut m.mem, e + off, &v.to_le_bytes()[..sz as usize]);
        };
        if sign > 0 {
            add(self, fa, 1);
            add(self, fb, bytes);
        } else {
            add(self, ff, 1);
            add(self, fb, bytes.wrapping_neg());
        }
    }

    // ----- placement -------------------------------------------------------

    /// Place without charging the build-time ledger or listing the block in
    /// the ground truth's allocations (the runtime keeps its own records).
    fn place_unrecorded(&mut self, r: Req) -> crate::truth::Allocation {
        let key = (r.key, r.kind.is_paged());
        let before = self.ledger.counts.get(&key).copied();
        let order = self.ledger.order.len();
        let n = self.truth.allocations.len();
        let a = self.place(r);
        self.truth.allocations.truncate(n);
        self.ledger.order.truncate(order);
        match before {
            Some(e) => {
                self.ledger.counts.insert(key, e);
            }
            None => {
                self.ledger.counts.remove(&key);
            }
        }
        a
    }

    /// Keep the open page or subsegment that now holds `at` well formed.
    fn seal_open_pool(&mut self, kind: PoolKind, at: u64) {
        match self.scenario.build.allocator() {
            Allocator::Legacy => self.seal_legacy_page(kind),
            Allocator::SegmentHeap => {
                if let Some(i) = self
                    .pool
                    .lfh_subs
                    .iter()
                    .position(|s| s.va <= at && at < s.va + PAGE64)
                {
                    self.write_lfh_header(i);
                }
                self.seal_vs_sub(kind);
                self.seal_segments();
            }
        }
    }

    fn big_table(&self) -> Option<(u64, u64, u64)> {
        let table = self.read_u64_va(self.sym_va("PoolBigPageTable")?);
        let size = self.read_u64_va(self.sym_va("PoolBigPageTableSize")?);
        let entry = self.m.ty("_POOL_TRACKER_BIG_PAGES").size;
        (table != 0 && size.is_power_of_two()).then_some((table, size, entry))
    }

    fn big_table_has_room(&self) -> bool {
        let Some((_, size, _)) = self.big_table() else {
            return false;
        };
        let used = self
            .sym_va("ExpPoolBigEntriesInUse")
            .map_or(0, |v| self.read_u32_va(v) as u64);
        used + 1 < size
    }

    /// ExpAddTagForBigPages: the first entry with the free bit, probing from
    /// the page hash.
    fn big_table_insert(&mut self, va: u64, key: u32, pool_type: u32, bytes: u64) {
        let Some((table, size, entry)) = self.big_table() else {
            return;
        };
        let mut idx = big_page_hash(va) as u64 & (size - 1);
        for _ in 0..size {
            let e = table + idx * entry;
            if self.read_u64_va(e) & 1 == 1 {
                let mut s = StructBuf::new(self.m, "_POOL_TRACKER_BIG_PAGES");
                s.set("Va", va)
                    .set("Key", key as u64)
                    .set("PoolType", pool_type as u64)
                    .set("NumberOfBytes", bytes);
                let b = s.bytes;
                self.write_va(e, &b);
                if let Some(g) = self.sym_va("ExpPoolBigEntriesInUse") {
                    let n = self.read_u32_va(g) + 1;
                    self.asp.write_u32(&mut self.mem, g, n);
                }
                return;
            }
            idx = (idx + 1) & (size - 1);
        }
        if let Some(g) = self.sym_va("ExpBigTableExpansionFailed") {
            let n = self.read_u32_va(g) + 1;
            self.asp.write_u32(&mut self.mem, g, n);
        }
    }

    /// ExpFindAndRemoveTagBigPages: set the free bit, keep key and size.
    fn big_table_remove(&mut self, va: u64) -> Option<u32> {
        let (table, size, entry) = self.big_table()?;
        let key_off = self.m.offset_of("_POOL_TRACKER_BIG_PAGES", "Key");
        let mut idx = big_page_hash(va) as u64 & (size - 1);
        for _ in 0..size {
            let e = table + idx * entry;
            if self.read_u64_va(e) == va {
                self.write_u64(e, va | 1);
                if let Some(g) = self.sym_va("ExpPoolBigEntriesInUse") {
                    let n = self.read_u32_va(g).saturating_sub(1);
                    self.asp.write_u32(&mut self.mem, g, n);
                }
                return Some(self.read_u32_va(e + key_off));
            }
            idx = (idx + 1) & (size - 1);
        }
        None
    }
}
