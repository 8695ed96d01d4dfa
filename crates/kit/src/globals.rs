//! nt's globals, the debugger data block, the big-page table and decoys.

use crate::builds::Allocator;
use crate::kdbg;
use crate::layout::{Manifest, StructBuf};
use crate::machine::Machine;
use crate::phys::PAGE64;
use crate::pool::state::BigRec;
use crate::tag::{tag_string, tag_value};

use crate::pool::PAGED_POOLS;
use crate::tracker::big_page_hash;
use crate::truth::{BigEntry, Decoy};

impl Machine {
    /// PoolBigPageTable: the big allocations replayed through the
    /// kernel's insert and free ([`replay_big_table`]).
    pub(crate) fn build_big_pool_table(&mut self) {
        let recs = self.pool.big.clone();
        let live = recs.iter().filter(|r| !r.freed).count() as u64;
        let size = big_table_size(self.scenario.big_pool.table_size, live);
        let (bytes, entries) = replay_big_table(self.m, &recs, size, &mut self.rng);
        let entry = self.m.ty("_POOL_TRACKER_BIG_PAGES").size;
        let nx = self.nx_kind();
        let va = self.pool_pages(nx, (size * entry).div_ceil(PAGE64), 1);
        self.write_va(va, &bytes);
        self.set_global("PoolBigPageTable", va);
        self.set_global("PoolBigPageTableSize", size);
        self.set_global("ExpPoolBigEntriesInUse", live);
        self.set_global("ExpBigTableExpansionFailed", 0);
        let t = &mut self.truth.big_pool;
        t.table_va = va;
        t.table_size = size;
        t.entry_size = entry;
        t.in_use = live;
        t.entries = entries;
    }

    /// Everything else the analysis reads from nt's data.
    pub(crate) fn write_kernel_globals(&mut self) {
        let s = self.scenario.clone();
        self.set_global("KeNumberProcessors", s.cpus as u64);
        // WRK pool.c initialises PoolHitTag to 0xffffff0f.
        self.set_global("PoolHitTag", 0xFFFF_FF0F);
        let flags = if s.build.allocator() == Allocator::SegmentHeap {
            0x20
        } else {
            0
        };
        self.set_global("ExpPoolFlags", flags);
        self.set_global("ExpPoolQuotaCookie", self.quota_cookie);
        let range_start = if s.build.number() < 9200 {
            0xFFFF_0800_0000_0000
        } else {
            0xFFFF_8000_0000_0000
        };
        self.set_global("MmSystemRangeStart", range_start);
        let pfn_db = self.truth.symbols["<PfnDatabase>"];
        self.set_global("MmPfnDatabase", pfn_db);
        self.truth.symbols.insert(
            "PsLoadedModuleList".into(),
            self.truth.kernel.ps_loaded_module_list,
        );
        // Legacy pool bounds and descriptors.
        let (np, pp) = (self.nonpaged.clone(), self.paged.clone());
        self.set_global("MmNonPagedPoolStart", np.base);
        self.set_global("MiNonPagedPoolStartAligned", np.base);
        self.set_global("MiNonPagedPoolEnd", np.base + np.size - 1);
        self.set_global("MmMaximumNonPagedPoolInBytes", np.size);
        self.set_global("MiPagedPoolStart", pp.base);
        self.set_global("MmPagedPoolEnd", pp.base + pp.size - 1);
        self.set_global("MmSizeOfPagedPoolInBytes", pp.size);
        self.set_global("ExpNumberOfPagedPools", PAGED_POOLS);
        self.set_global("ExpNumberOfNonPagedPools", 1);
        self.write_processor_blocks();
        self.write_visible_state();
        self.write_heaps();
        self.pool.segments_linked = self.pool.segments.values().map(|v| v.len()).sum();
        self.write_kdbg();
    }

    /// KiProcessorBlock[i] points at each CPU's PRCB, whose Number is i.
    fn write_processor_blocks(&mut self) {
        let Some(base) = self.sym_va("KiProcessorBlock") else {
            return;
        };
        let number = self.m.offset_of("_KPRCB", "Number");
        let nx = self.nx_kind();
        for i in 0..self.scenario.cpus as u64 {
            // The PRCB sits at +0x180 in the KPCR; only its first page is
            // mapped here, enough for Number.
            let kpcr = self.pool_pages(nx, 1, 1);
            let prcb = kpcr + 0x180;
            if 0x180 + number + 4 <= PAGE64 {
                self.write_va(prcb + number, &(i as u32).to_le_bytes());
            }
            self.write_u64(base + 8 * i, prcb);
        }
        self.truth.symbols.insert("KiProcessorBlock".into(), base);
    }

    /// MiVisibleState -> MiState.Vs, whose SystemVaRegions array is indexed
    /// by `_MI_ASSIGNED_REGION_TYPES` (docs/pool-structures.md §6).
    fn write_visible_state(&mut self) {
        let (Some(ptr), Some(state)) = (self.sym_va("MiVisibleState"), self.sym_va("MiState"))
        else {
            return;
        };
        let vs = state + self.m.offset_of("_MI_SYSTEM_INFORMATION", "Vs");
        self.write_u64(ptr, vs);
        self.truth.symbols.insert("MiVisibleState".into(), ptr);
        let regions = self.truth.regions.clone();
        for r in regions {
            let Some(idx) = self.m.enum_value("_MI_ASSIGNED_REGION_TYPES", &r.name) else {
                continue;
            };
            let at = vs
                + self.m.offset_of(
                    "_MI_VISIBLE_STATE",
                    &format!("SystemVaRegions[{idx}].BaseAddress"),
                );
            let sz = vs
                + self.m.offset_of(
                    "_MI_VISIBLE_STATE",
                    &format!("SystemVaRegions[{idx}].NumberOfBytes"),
                );
            self.write_u64(at, r.base);
            self.write_u64(sz, r.size);
        }
    }

    /// KdDebuggerDataBlock, decoded as a crash dump holds it, or encoded as
    /// a running system without a debugger keeps it.
    fn write_kdbg(&mut self) {
        let Some(sym) = self.m.sym("KdDebuggerDataBlock").cloned() else {
            return;
        };
        let va = self.kern_base + sym.rva;
        let size = kdbg::block_size(self.m.build).min(sym.size as usize);
        let mut b = vec![0u8; size];
        b[0..8].copy_from_slice(&va.to_le_bytes());
        b[8..16].copy_from_slice(&va.to_le_bytes());
        b[kdbg::OFF_OWNER_TAG..kdbg::OFF_OWNER_TAG + 4]
            .copy_from_slice(&kdbg::OWNER_TAG.to_le_bytes());
        b[kdbg::OFF_SIZE..kdbg::OFF_SIZE + 4].copy_from_slice(&(size as u32).to_le_bytes());
        b[kdbg::OFF_KERN_BASE..kdbg::OFF_KERN_BASE + 8]
            .copy_from_slice(&self.kern_base.to_le_bytes());
        for (name, off) in kdbg::FIELDS {
            if let Some(v) = self.sym_va(name) {
                b[*off..*off + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        let never = self.rng.u64(..);
        let always = self.rng.u64(..);
        self.set_global("KiWaitNever", never);
        self.set_global("KiWaitAlways", always);
        let encoded = self.scenario.kdbg_encoded;
        self.set_global("KdpDataBlockEncoded", encoded as u64);
        if encoded {
            let flag = self
                .sym_va("KdpDataBlockEncoded")
                .expect("symbol checked by set_global");
            kdbg::encode(&mut b, never, always, flag);
        }
        self.write_va(va, &b);
        self.truth.symbols.insert("KdDebuggerDataBlock".into(), va);
        self.truth.kernel.kd_debugger_data_block = va;
        self.truth.kernel.kdbg_encoded = encoded;
    }

    /// `tag` written at the mapped address `at` with no pool header in
    /// front, recorded in the truth as a decoy found in `place`.
    fn plant_mapped_decoy(&mut self, at: u64, tag: u32, place: &str) {
        self.write_va(at, &tag.to_le_bytes());
        let pa = self
            .asp
            .translate(&self.mem, at)
            .unwrap_or_else(|| panic!("the {place} decoy at {at:#x} is mapped"));
        self.truth.decoys.push(Decoy {
            tag: tag_string(tag),
            va: Some(at),
            pa,
            place: place.into(),
            well_formed: false,
        });
    }

    /// Tag bytes where no pool header is: in allocation bodies and on the
    /// kernel stack at header-like alignment but with impossible header
    /// fields in front, at odd alignments, and whole well-formed pool pages
    /// in frames no kernel address maps (memory freed and unmapped).
    pub(crate) fn plant_decoys(&mut self) {
        let n = self.scenario.decoys as usize;
        if n == 0 || self.scenario.tags.is_empty() {
            return;
        }
        let tags: Vec<u32> = self
            .scenario
            .tags
            .iter()
            .map(|t| tag_value(&t.tag))
            .collect();
        let spots = self.body_spots.clone();
        for i in 0..n {
            let tag = tags[self.rng.usize(..tags.len())];
            match i % 4 {
                0 | 1 if !spots.is_empty() => {
                    let (va, size) = spots[self.rng.usize(..spots.len())];
                    // Aligned like a PoolTag (A % 16 == 4) or deliberately not.
                    let aligned = i % 4 == 0;
                    let mut at = (va + 8).div_ceil(16) * 16 + 4;
                    if !aligned {
                        at += 5;
                    }
                    if at + 4 > va + size {
                        continue;
                    }
                    if aligned {
                        // PreviousSize 0x35, BlockSize 0: no allocator
                        // writes such a header.
                        self.write_va(at - 4, &[0x35, 0x00, 0x00, 0x00]);
                    }
                    self.plant_mapped_decoy(at, tag, "allocation-body");
                }
                2 => {
                    let at = self.stack + 0x800 + (i as u64 * 0x40) % 0x700 + 4;
                    self.write_va(at - 4, &[0x00, 0x00, 0x00, 0x00]);
                    self.plant_mapped_decoy(at, tag, "stack");
                }
                _ => {
                    // A frame nobody maps, holding a pool page as the
                    // allocator left it: a live-looking header in front.
                    let pfn = self.mem.alloc();
                    let hdr = {
                        let mut h = StructBuf::new(self.m, "_POOL_HEADER");
                        h.set("BlockSize", 0x10)
                            .set("PoolType", 2)
                            .set("PoolTag", tag as u64);
                        h.bytes
                    };
                    let pa = pfn * PAGE64;
                    self.mem.write(pa, &hdr);
                    let mut next = StructBuf::new(self.m, "_POOL_HEADER");
                    let legacy = self.scenario.build.allocator() == Allocator::Legacy;
                    next.set("PreviousSize", if legacy { 0x10 } else { 0 })
                        .set("BlockSize", 0xF0);
                    let nb = next.bytes;
                    self.mem.write(pa + 0x100, &nb);
                    self.truth.decoys.push(Decoy {
                        tag: tag_string(tag),
                        va: None,
                        pa: pa + 4,
                        place: "unmapped-frame".into(),
                        well_formed: true,
                    });
                }
            }
        }
    }
}

/// A big-page table's entries for `live` live allocations: `initial`
/// (a power of two, at least 16), doubled as ExpResizeBigPageTable does
/// once the table is a quarter full.
pub(crate) fn big_table_size(initial: u64, live: u64) -> u64 {
    let mut size = initial.next_power_of_two().max(16);
    while live > size / 4 {
        size *= 2;
    }
    size
}

/// A `size`-entry big-page table after the big allocations `recs`, in an
/// order drawn from `rng`, went through the kernel's insert (first entry
/// with the free bit, probing from the page hash) and free (set the free
/// bit, keep key and size): live entries, never-used `Va == 1` entries and
/// freed entries with stale keys exactly where the kernel would leave
/// them. Returns the table's bytes and its non-empty entries.
pub(crate) fn replay_big_table(
    m: &'static Manifest,
    recs: &[BigRec],
    size: u64,
    rng: &mut fastrand::Rng,
) -> (Vec<u8>, Vec<BigEntry>) {
    let mut events: Vec<(f64, usize, bool)> = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let t = rng.f64();
        events.push((t, i, false));
        if r.freed {
            events.push((t + (1.0 - t) * rng.f64() + 1e-9, i, true));
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut va_of: Vec<u64> = vec![1; size as usize];
    let mut rec_of: Vec<Option<usize>> = vec![None; size as usize];
    for (_, i, free) in events {
        let r = &recs[i];
        let mut idx = (big_page_hash(r.va) as u64 & (size - 1)) as usize;
        for _ in 0..size {
            if !free && va_of[idx] & 1 == 1 {
                va_of[idx] = r.va;
                rec_of[idx] = Some(i);
                break;
            }
            if free && va_of[idx] == r.va {
                va_of[idx] |= 1;
                break;
            }
            idx = (idx + 1) & (size as usize - 1);
        }
    }
    let ety = "_POOL_TRACKER_BIG_PAGES";
    let mut bytes = Vec::with_capacity((size * m.ty(ety).size) as usize);
    let mut entries = Vec::new();
    for idx in 0..size as usize {
        let mut e = StructBuf::new(m, ety);
        e.set("Va", va_of[idx]);
        if let Some(i) = rec_of[idx] {
            let r = &recs[i];
            e.set("Key", r.key as u64)
                .set("PoolType", r.pool_type as u64)
                .set("NumberOfBytes", r.bytes);
            entries.push(BigEntry {
                index: idx as u64,
                va: r.va,
                tag: tag_string(r.key),
                pool_type: r.pool_type,
                bytes: r.bytes,
                freed: va_of[idx] & 1 == 1,
            });
        }
        bytes.extend_from_slice(&e.bytes);
    }
    (bytes, entries)
}
