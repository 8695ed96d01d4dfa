//! The synthetic machine: memory, page tables, nt and drivers mapped, the
//! globals the analysis reads, and the pool state of the scenario.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::drivers;
use crate::dump::{self, DumpKind, HeaderFields};
use crate::layout::{Manifest, StructBuf};
use crate::paging::{self, AddressSpace, Prot, sign_extend};
use crate::pe::PeImage;
use crate::phys::{PAGE, PhysMemory};
use crate::scenario::{PoolKind, Scenario};
use crate::truth::{GroundTruth, ModuleTruth, RegionTruth};

pub(crate) use crate::phys::{GB, MB, PAGE64};
pub use crate::tag::{tag_string, tag_value};
const SLOT: u64 = 1 << 39;
pub const KUSER_SHARED_DATA: u64 = 0xFFFF_F780_0000_0000;
pub const KUSER_SHARED_DATA_USER: u64 = 0x7FFE_0000;
/// 100 ns ticks between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX_EPOCH: u64 = 116_444_736_000_000_000;

/// A VA range pool pages are carved from.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    pub base: u64,
    pub size: u64,
    /// Next unreserved address.
    pub next: u64,
}

impl Region {
    fn new(base: u64, size: u64, first: u64) -> Self {
        Self {
            base,
            size,
            next: first,
        }
    }
    /// Reserve `bytes` of VA aligned to `align`.
    pub fn reserve(&mut self, bytes: u64, align: u64) -> u64 {
        let va = self.next.div_ceil(align) * align;
        self.next = va + bytes;
        assert!(
            self.next <= self.base.wrapping_add(self.size),
            "synthetic pool region exhausted"
        );
        va
    }
}

/// A synthetic Windows machine at the moment of the crash.
pub struct Machine {
    pub scenario: Scenario,
    pub m: &'static Manifest,
    pub mem: PhysMemory,
    pub asp: AddressSpace,
    pub rng: fastrand::Rng,
    pub kern_base: u64,
    pub truth: GroundTruth,
    pub(crate) nonpaged: Region,
    pub(crate) paged: Region,
    pub(crate) system_images: u64,
    /// VA range mapped by the 2 MiB page at the start of nonpaged pool.
    pub(crate) large_page: Option<(u64, u64)>,
    pub(crate) heap_key: u64,
    pub(crate) lfh_key: u64,
    pub(crate) quota_cookie: u64,
    pub(crate) header: HeaderFields,
    /// Per (tag value, paged): counters in first-use order.
    pub(crate) ledger: Ledger,
    /// Paged-pool pages (VA), candidates for paging out.
    pub(crate) paged_pages: Vec<u64>,
    /// Data pages of live allocations, where decoys can go.
    pub(crate) body_spots: Vec<(u64, u64)>,
    pub(crate) pool: crate::pool::state::PoolState,
    /// `_SEGMENT_HEAP` of each pool kind (segment-heap builds).
    pub(crate) heaps: std::collections::BTreeMap<PoolKind, u64>,
    /// Kernel stack page (context Rsp), also home to decoys.
    pub(crate) stack: u64,
    /// The bug-checking thread's stack (limit, base) after
    /// [`Machine::crash_with`]; a small dump saves it from Rsp to its base.
    pub(crate) crash_stack: Option<(u64, u64)>,
    /// Bulk page segments (segment-heap builds), in list order.
    pub(crate) bulk_segments: Vec<u64>,
    pub(crate) bulk_filler: Option<std::sync::Arc<crate::bulk::pages::BulkFiller>>,
    /// PML4s of the processes other than System.
    pub(crate) process_spaces: Vec<AddressSpace>,
}

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub order: Vec<(u32, bool)>,
    pub counts: BTreeMap<(u32, bool), LedgerEntry>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LedgerEntry {
    pub allocs: u64,
    pub frees: u64,
    pub bytes: u64,
}

impl Ledger {
    pub fn charge(&mut self, tag: u32, paged: bool, allocs: u64, frees: u64, bytes: u64) {
        let key = (tag, paged);
        if !self.counts.contains_key(&key) {
            self.order.push(key);
        }
        let e = self.counts.entry(key).or_default();
        e.allocs += allocs;
        e.frees += frees;
        e.bytes += bytes;
    }
}

impl Machine {
    /// Build the machine a scenario describes.
    pub fn build(s: &Scenario) -> Machine {
        let m = s.build.manifest();
        let mut rng = fastrand::Rng::with_seed(s.seed);
        let mut mem = PhysMemory::new(ram_bytes(s), rng.u64(..));
        let kaslr = s.build.has_kaslr_regions();
        // Windows puts the System process's PML4 low in physical memory;
        // Volatility's DTB scan looks there first (peers.md §4).
        let dtb_pfn = match s.build.number() {
            0..9200 => 0x187,
            9200..14393 => 0x1A7,
            _ => 0x1AD,
        };
        let self_map = if kaslr {
            pick_self_map(&mut rng)
        } else {
            0x1ED
        };
        let asp = AddressSpace::new(&mut mem, dtb_pfn, self_map);
        let mut mc = Machine {
            scenario: s.clone(),
            m,
            mem,
            asp,
            kern_base: 0,
            truth: GroundTruth::default(),
            nonpaged: Region::new(0, 0, 0),
            paged: Region::new(0, 0, 0),
            system_images: 0,
            large_page: None,
            heap_key: rng.u64(..),
            lfh_key: rng.u64(..),
            quota_cookie: rng.u64(..),
            header: HeaderFields::default(),
            ledger: Ledger::default(),
            paged_pages: Vec::new(),
            body_spots: Vec::new(),
            pool: Default::default(),
            heaps: Default::default(),
            stack: 0,
            crash_stack: None,
            bulk_segments: Vec::new(),
            bulk_filler: None,
            process_spaces: Vec::new(),
            rng,
        };
        mc.truth.build = s.build.name().to_string();
        mc.truth.build_number = m.build;
        mc.truth.seed = s.seed;
        mc.truth.cpus = s.cpus;
        mc.truth.kernel.dtb = dtb_pfn * PAGE64;
        mc.truth.kernel.self_map_index = self_map;
        mc.plan_regions();
        mc.map_nt();
        mc.map_kuser_shared_data();
        mc.stack = mc.pool_pages(mc.nx_kind(), 2, 1);
        mc.load_modules();
        mc.build_processes();
        mc.place_scenario_allocations();
        mc.finish_pool_pages();
        mc.setup_bulk();
        mc.build_big_pool_table();
        mc.build_tracker();
        mc.write_kernel_globals();
        mc.plant_decoys();
        mc.page_out();
        mc.share_kernel_half();
        mc.fill_header();
        mc
    }

    /// VA of an nt global.
    pub fn sym_va(&self, name: &str) -> Option<u64> {
        self.m.sym(name).map(|s| self.kern_base + s.rva)
    }

    pub(crate) fn write_va(&mut self, va: u64, bytes: &[u8]) {
        self.asp.write(&mut self.mem, va, bytes);
    }

    pub(crate) fn write_u64(&mut self, va: u64, v: u64) {
        self.write_va(va, &v.to_le_bytes());
    }

    /// Write an nt global if the build has it, sized as the PDB declares it.
    pub(crate) fn set_global(&mut self, name: &str, v: u64) {
        let Some(sym) = self.m.sym(name) else { return };
        let va = self.kern_base + sym.rva;
        let n = match sym.size {
            1 | 2 | 4 | 8 => sym.size as usize,
            _ => 8,
        };
        self.write_va(va, &v.to_le_bytes()[..n]);
        self.truth.symbols.insert(name.to_string(), va);
    }

    /// Map `pages` fresh pages (scattered frames) at `va`, skipping pages
    /// that are already mapped (inside the large page, or committed before).
    pub(crate) fn commit(&mut self, va: u64, pages: u64, prot: Prot) {
        for i in 0..pages {
            let p = va + i * PAGE64;
            if self.asp.translate(&self.mem, p).is_none() {
                let f = self.mem.alloc();
                self.asp.map(&mut self.mem, p, f, prot);
            }
        }
    }

    /// Reserve VA in the nonpaged region without committing it (kernel
    /// stacks, with their guard pages).
    pub(crate) fn nonpaged_reserve(&mut self, bytes: u64) -> u64 {
        self.nonpaged.reserve(bytes, PAGE64)
    }

    pub(crate) fn prot_for(&self, kind: PoolKind) -> Prot {
        match kind {
            PoolKind::NonPaged => Prot::DataExec,
            PoolKind::NonPagedNx | PoolKind::Paged => Prot::Data,
        }
    }

    /// Pool pages for `kind`: nonpaged NX allocations come from the large
    /// page while it has room.
    pub(crate) fn pool_pages(&mut self, kind: PoolKind, pages: u64, align: u64) -> u64 {
        let large_kind = if self.scenario.build.has_nx_pool() {
            PoolKind::NonPagedNx
        } else {
            PoolKind::NonPaged
        };
        if kind == large_kind
            && let Some((lo, hi)) = self.large_page
        {
            let va = lo.div_ceil(align) * align;
            if va + pages * PAGE64 <= hi {
                self.large_page = Some((va + pages * PAGE64, hi));
                return va;
            }
        }
        let region = if kind.is_paged() {
            &mut self.paged
        } else {
            &mut self.nonpaged
        };
        let va = region.reserve(pages * PAGE64, align);
        let prot = self.prot_for(kind);
        self.commit(va, pages, prot);
        if kind.is_paged() {
            self.paged_pages.extend((0..pages).map(|i| va + i * PAGE64));
        }
        va
    }

    /// Where things live: KernBase, the pool regions and, from Windows 10
    /// 1607 on, randomised 512 GiB system VA regions.
    fn plan_regions(&mut self) {
        let build = self.scenario.build.number();
        let max_pfn = self.mem.max_pfn();
        let rng = &mut self.rng;
        let mut regions: Vec<RegionTruth> = Vec::new();
        let (kern_base, images, np_base, np_first, pp_base, pp_first, pfn_db);
        if build < 9200 {
            // Windows 7: fixed x64 layout (pool.md §5).
            kern_base = 0xFFFF_F800_0260_0000 + rng.u64(0..0x400) * PAGE64;
            images = 0xFFFF_F880_00C0_0000;
            pfn_db = 0xFFFF_FA80_0000_0000;
            np_base = pfn_db + (max_pfn * 0x30).div_ceil(2 * MB) * 2 * MB;
            np_first = np_base;
            pp_base = 0xFFFF_F8A0_0000_0000;
            pp_first = pp_base;
        } else if build < 14393 {
            kern_base = 0xFFFF_F800_0000_0000
                + (rng.u64(0..8) << 32)
                + rng.u64(0x100..0x3F00) * 0x10_0000
                + rng.u64(0..0x100) * PAGE64;
            images = 0xFFFF_F800_0000_0000
                + (rng.u64(0..8) << 32)
                + 0x8000_0000
                + rng.u64(0..0x100) * 0x10_0000;
            pfn_db = 0xFFFF_FA80_0000_0000;
            np_base = 0xFFFF_E000_0000_0000 + rng.u64(0..0x100) * GB;
            np_first = np_base;
            pp_base = 0xFFFF_C000_0000_0000 + rng.u64(0..0x100) * GB;
            pp_first = pp_base;
        } else {
            kern_base =
                0xFFFF_F800_0000_0000 + (rng.u64(0..8) << 32) + rng.u64(0x10..0x7C0) * 0x20_0000;
            images = kern_base + 0x1000_0000 + rng.u64(0..0x40) * 0x20_0000;
            // Every assigned region gets its own PML4 slot; the page tables
            // sit under the self-map and system images at 0xFFFFF800`...
            let en = self
                .m
                .enums
                .get("_MI_ASSIGNED_REGION_TYPES")
                .cloned()
                .unwrap_or_default();
            let mut used = vec![self.asp.self_map, 0x1EF, 0x1F0];
            let mut slot_of = BTreeMap::new();
            let mut names: Vec<(&String, &i64)> = en.iter().collect();
            names.sort_by_key(|(_, v)| **v);
            for (name, _) in &names {
                if name.ends_with("Maximum") {
                    continue;
                }
                let slot = match name.as_str() {
                    "AssignedRegionPageTables" => self.asp.self_map,
                    "AssignedRegionSystemImages" => 0x1F0,
                    _ => loop {
                        let s = rng.u64(0x100..0x1EF);
                        if !used.contains(&s) {
                            used.push(s);
                            break s;
                        }
                    },
                };
                slot_of.insert((*name).clone(), slot);
                let base = sign_extend(slot * SLOT);
                regions.push(RegionTruth {
                    name: (*name).clone(),
                    base,
                    size: SLOT,
                });
            }
            let base_of = |n: &str| sign_extend(slot_of[n] * SLOT);
            np_base = base_of("AssignedRegionNonPagedPool");
            pp_base = base_of("AssignedRegionPagedPool");
            pfn_db = base_of("AssignedRegionPfnDatabase");
            np_first = np_base + rng.u64(0..0x40) * GB;
            pp_first = pp_base + rng.u64(0..0x40) * GB;
        }
        if build < 14393 {
            regions.push(RegionTruth {
                name: "NonPagedPool".into(),
                base: np_base,
                size: 128 * GB,
            });
            regions.push(RegionTruth {
                name: "PagedPool".into(),
                base: pp_base,
                size: 128 * GB,
            });
        }
        self.kern_base = kern_base;
        self.system_images = images;
        self.nonpaged = Region::new(
            np_base,
            if build < 14393 { 128 * GB } else { SLOT },
            np_first,
        );
        self.paged = Region::new(
            pp_base,
            if build < 14393 { 128 * GB } else { SLOT },
            pp_first,
        );
        self.truth.regions = regions;
        self.truth.symbols.insert("<PfnDatabase>".into(), pfn_db);
        if self.scenario.large_pages {
            // Nonpaged pool's first pages sit in a 2 MiB large page, as
            // Windows maps its initial nonpaged pool.
            let va = self.nonpaged.reserve(2 * MB, 2 * MB);
            let pfn = self.mem.alloc_contiguous(512, 512);
            let prot = if self.scenario.build.has_nx_pool() {
                Prot::Data
            } else {
                Prot::DataExec
            };
            self.asp.map_large(&mut self.mem, va, pfn, prot);
            self.large_page = Some((va, va + 2 * MB));
            self.truth.pages.large_pages.push(va);
        }
    }

    /// Map nt at KernBase in its in-memory layout, with the protections of
    /// its sections.
    fn map_nt(&mut self) {
        let files = self.scenario.build.files();
        let pe = PeImage::parse(files.image);
        let base = self.kern_base;
        self.map_image(&pe, base);
        let k = &mut self.truth.kernel;
        k.kern_base = base;
        k.size_of_image = pe.size_of_image;
        k.pdb_name = self.m.pdb.name.clone();
        k.pdb_guid = self.m.pdb.guid.clone();
        k.pdb_age = self.m.pdb.age;
        k.store_key = self.m.pdb.store_key.clone();
    }

    pub(crate) fn map_image(&mut self, pe: &PeImage, base: u64) {
        // Drivers import from ntoskrnl.exe only; nt is mapped first.
        let nt_exports: Vec<(String, u64)> = if self.kern_base != 0 && base != self.kern_base {
            PeImage::parse(self.scenario.build.files().image).exports()
        } else {
            Vec::new()
        };
        let kern_base = self.kern_base;
        let resolve = |dll: &str, name: &str| -> Option<u64> {
            if !dll.eq_ignore_ascii_case("ntoskrnl.exe") {
                return None;
            }
            nt_exports
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, rva)| kern_base + rva)
        };
        let img = pe.loaded(base, &resolve);
        let hdr_pages = pe.size_of_headers.div_ceil(PAGE64);
        self.commit(base, hdr_pages, Prot::ReadOnly);
        for s in &pe.sections {
            let c = s.characteristics;
            let prot = match (c & 0x2000_0000 != 0, c & 0x8000_0000 != 0) {
                (true, true) => Prot::DataExec,
                (true, false) => Prot::Code,
                (false, true) => Prot::Data,
                (false, false) => Prot::ReadOnly,
            };
            let pages = s.virtual_size.max(s.raw_size).div_ceil(PAGE64);
            self.commit(base + s.rva, pages, prot);
        }
        for p in (0..pe.size_of_image).step_by(PAGE) {
            if self.asp.translate(&self.mem, base + p).is_some() {
                let end = (p + PAGE64).min(img.len() as u64) as usize;
                self.write_va(base + p, &img[p as usize..end]);
            }
        }
    }

    /// KUSER_SHARED_DATA: one frame, mapped at its fixed kernel address and
    /// at 0x7FFE0000 for user mode.
    fn map_kuser_shared_data(&mut self) {
        let f = self.mem.alloc();
        self.asp
            .map(&mut self.mem, KUSER_SHARED_DATA, f, Prot::Data);
        self.asp
            .map(&mut self.mem, KUSER_SHARED_DATA_USER, f, Prot::UserReadOnly);
        let s = &self.scenario;
        let interrupt_time = s.uptime_secs * 10_000_000;
        let system_time = FILETIME_UNIX_EPOCH + s.unix_time * 10_000_000;
        let (major, minor) = match s.build.number() {
            0..9200 => (6, 1),
            9200..10240 => (6, 3),
            _ => (10, 0),
        };
        let ram_pages: u64 = self.mem.runs().iter().map(|r| r.end - r.start).sum();
        let mut k = StructBuf::new(self.m, "_KUSER_SHARED_DATA");
        let ksys = |k: &mut StructBuf, field: &str, v: u64| {
            k.set(&format!("{field}.LowPart"), v & 0xFFFF_FFFF)
                .set(&format!("{field}.High1Time"), v >> 32)
                .set(&format!("{field}.High2Time"), v >> 32);
        };
        ksys(&mut k, "InterruptTime", interrupt_time);
        ksys(&mut k, "SystemTime", system_time);
        k.set_if("NtBuildNumber", s.build.number() as u64)
            .set("NtMajorVersion", major)
            .set("NtMinorVersion", minor)
            .set("NtProductType", 1)
            .set("NumberOfPhysicalPages", ram_pages)
            .set_if("ActiveProcessorCount", s.cpus as u64);
        // TickCount ticks every 15.625 ms.
        let ticks = s.uptime_secs * 64;
        if self
            .m
            .ty("_KUSER_SHARED_DATA")
            .fields
            .contains_key("TickCountQuad")
        {
            k.set("TickCountQuad", ticks);
        }
        let bytes = k.bytes;
        self.write_va(KUSER_SHARED_DATA, &bytes);
        self.truth.kernel.interrupt_time = interrupt_time;
        self.truth.kernel.system_time = system_time;
    }

    /// Advance KUSER_SHARED_DATA's clocks to `elapsed_ns` after the
    /// machine started running, as the clock interrupt does on every tick:
    /// InterruptTime, SystemTime (KSYSTEM_TIME: LowPart, High1Time,
    /// High2Time) and the tick count (every 15.625 ms).
    pub(crate) fn set_clock(&mut self, elapsed_ns: u64) {
        let s = &self.scenario;
        let elapsed_100ns = elapsed_ns / 100;
        let interrupt_time = s.uptime_secs * 10_000_000 + elapsed_100ns;
        let system_time = FILETIME_UNIX_EPOCH + s.unix_time * 10_000_000 + elapsed_100ns;
        let ticks = s.uptime_secs * 64 + elapsed_ns / 15_625_000;
        let ty = self.m.ty("_KUSER_SHARED_DATA");
        let has_tick_quad = ty.fields.contains_key("TickCountQuad");
        for (field, v) in [
            ("InterruptTime", interrupt_time),
            ("SystemTime", system_time),
        ] {
            let at = KUSER_SHARED_DATA + self.m.offset_of("_KUSER_SHARED_DATA", field);
            // High2Time, LowPart, High1Time: the order the kernel writes.
            self.asp.write_u32(&mut self.mem, at + 8, (v >> 32) as u32);
            self.asp.write_u32(&mut self.mem, at, v as u32);
            self.asp.write_u32(&mut self.mem, at + 4, (v >> 32) as u32);
        }
        if has_tick_quad {
            let at = KUSER_SHARED_DATA + self.m.offset_of("_KUSER_SHARED_DATA", "TickCountQuad");
            self.asp.write_u64(&mut self.mem, at, ticks);
        }
        self.truth.kernel.interrupt_time = interrupt_time;
        self.truth.kernel.system_time = system_time;
    }

    /// PsLoadedModuleList: nt first, then the synthetic drivers, each entry
    /// a pool allocation tagged MmLd as the loader makes it.
    fn load_modules(&mut self) {
        let head = self
            .sym_va("PsLoadedModuleList")
            .expect("every build has PsLoadedModuleList");
        let mut modules = vec![ModuleTruth {
            base_name: "ntoskrnl.exe".into(),
            full_name: r"\SystemRoot\system32\ntoskrnl.exe".into(),
            base: self.kern_base,
            size: self.truth.kernel.size_of_image,
            pdb_name: self.m.pdb.name.clone(),
            pdb_guid: self.m.pdb.guid.clone(),
            pdb_age: self.m.pdb.age,
            tags: vec![],
        }];
        if self.scenario.drivers {
            let mut next = self.system_images;
            for d in drivers::all() {
                let pe = PeImage::parse(d.image);
                let align = if self.scenario.build.has_kaslr_regions() {
                    0x20_0000
                } else {
                    0x1_0000
                };
                let base = next.div_ceil(align) * align;
                next = base + pe.size_of_image + self.rng.u64(1..16) * 0x1_0000;
                self.map_image(&pe, base);
                modules.push(ModuleTruth {
                    base_name: d.info.file.clone(),
                    full_name: format!(r"\SystemRoot\system32\drivers\{}", d.info.file),
                    base,
                    size: pe.size_of_image,
                    pdb_name: d.info.pdb.name.clone(),
                    pdb_guid: d.info.pdb.guid.clone(),
                    pdb_age: d.info.pdb.age,
                    tags: d.info.tags.clone(),
                });
            }
        }
        // Win7 and 8.1 symbol tables call the loader entry
        // _LDR_DATA_TABLE_ENTRY; the kernel-only name came with Windows 10.
        let ldr = if self.m.has_type("_KLDR_DATA_TABLE_ENTRY") {
            "_KLDR_DATA_TABLE_ENTRY"
        } else {
            "_LDR_DATA_TABLE_ENTRY"
        };
        let entry_size = self.m.ty(ldr).size;
        let mut entries = Vec::new();
        for md in &modules {
            let full: Vec<u8> = md
                .full_name
                .encode_utf16()
                .flat_map(|c| c.to_le_bytes())
                .collect();
            let base_off = full.len() as u64 - (md.base_name.len() as u64 * 2);
            let size = entry_size + full.len() as u64 + 2;
            let va = self.kernel_alloc("MmLd", size);
            let names = va + entry_size;
            let mut e = StructBuf::new(self.m, ldr);
            e.set("DllBase", md.base)
                .set("EntryPoint", md.base + 0x1000)
                .set("SizeOfImage", md.size)
                .set("FullDllName.Length", full.len() as u64)
                .set("FullDllName.MaximumLength", full.len() as u64 + 2)
                .set("FullDllName.Buffer", names)
                .set("BaseDllName.Length", md.base_name.len() as u64 * 2)
                .set(
                    "BaseDllName.MaximumLength",
                    md.base_name.len() as u64 * 2 + 2,
                )
                .set("BaseDllName.Buffer", names + base_off)
                .set_if("LoadCount", 1)
                .set_if("Flags", 0x0900_4000);
            let mut bytes = e.bytes;
            bytes.extend_from_slice(&full);
            bytes.extend_from_slice(&[0, 0]);
            self.write_va(va, &bytes);
            entries.push(va);
        }
        // Link the ring through the head.
        let links = self.m.offset_of(ldr, "InLoadOrderLinks");
        let mut ring = vec![head];
        ring.extend(entries.iter().map(|e| e + links));
        for i in 0..ring.len() {
            let flink = ring[(i + 1) % ring.len()];
            let blink = ring[(i + ring.len() - 1) % ring.len()];
            self.write_u64(ring[i], flink);
            self.write_u64(ring[i] + 8, blink);
        }
        self.truth.kernel.ps_loaded_module_list = head;
        self.truth.kernel.modules = modules;
    }

    /// The dump header, context and bugcheck.
    fn fill_header(&mut self) {
        let s = &self.scenario;
        let stack = self.stack;
        let rip = self
            .sym_va("KeBugCheckEx")
            .unwrap_or(self.kern_base + self.m.image.entry_rva);
        self.header = HeaderFields {
            build: s.build.number(),
            dtb: self.asp.pml4 * PAGE64,
            pfn_database: self.truth.symbols["<PfnDatabase>"],
            ps_loaded_module_list: self.truth.kernel.ps_loaded_module_list,
            ps_active_process_head: self.sym_va("PsActiveProcessHead").unwrap_or(0),
            number_processors: s.cpus,
            bugcheck_code: s.bugcheck.code,
            bugcheck_parameters: s.bugcheck.parameters,
            kd_debugger_data_block: self.truth.kernel.kd_debugger_data_block,
            system_time: self.truth.kernel.system_time,
            system_up_time: self.truth.kernel.interrupt_time,
            context_rip: rip,
            context_rsp: stack + 0x1F38,
            product_type: 1,
            suite_mask: 0x110,
            ..Default::default()
        };
    }

    pub(crate) fn nx_kind(&self) -> PoolKind {
        if self.scenario.build.has_nx_pool() {
            PoolKind::NonPagedNx
        } else {
            PoolKind::NonPaged
        }
    }

    /// Page out (or put in transition) the scenario's share of paged-pool
    /// pages, after everything has been written.
    fn page_out(&mut self) {
        let n = self.paged_pages.len();
        let out = (n as f64 * self.scenario.paged_out).round() as usize;
        let trans = (n as f64 * self.scenario.transition).round() as usize;
        let mut pages = self.paged_pages.clone();
        self.rng.shuffle(&mut pages);
        for (i, va) in pages.into_iter().take(out + trans).enumerate() {
            let pa = self
                .asp
                .translate(&self.mem, va)
                .expect("paged pool page is mapped");
            let pfn = pa / PAGE64;
            if i < out {
                // A pagefile PTE: PageFileLow in bits 1-4, the offset in
                // the high half, not valid, not transition.
                let pte = ((self.rng.u64(1..0x10_0000)) << 32) | (1 << 1) | (0x4 << 5);
                self.asp.set_pte(&mut self.mem, va, pte, false);
                self.mem.drop_frame(pfn);
                self.truth.pages.paged_out.push(va);
            } else {
                let pte = (pfn << 12) | paging::BIT11 | (0x4 << 5);
                self.asp.set_pte(&mut self.mem, va, pte, false);
                self.truth.pages.transition.push(va);
            }
        }
        let out: std::collections::HashSet<u64> =
            self.truth.pages.paged_out.iter().copied().collect();
        for a in &mut self.truth.allocations {
            let page = a.header_va.unwrap_or(a.va) & !(PAGE64 - 1);
            if out.contains(&page) {
                a.in_dump = false;
                a.pa = None;
            }
        }
    }

    /// Write a dump of the machine.
    pub fn write_dump<W: Write>(&self, kind: DumpKind, w: &mut W) -> io::Result<u64> {
        dump::write_dump(&self.mem, kind, &self.header, w)
    }

    pub fn dump_bytes(&self, kind: DumpKind) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_dump(kind, &mut v)
            .expect("writing to a Vec cannot fail");
        v
    }

    /// Write the dump to `path` (buffered).
    pub fn write_dump_file(&self, kind: DumpKind, path: &Path) -> io::Result<u64> {
        let mut w = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        let n = self.write_dump(kind, &mut w)?;
        w.flush()?;
        Ok(n)
    }

    /// Lay out a symbol store `dir/<pdb>/<GUID><AGE>/<pdb>` holding nt's PDB
    /// (and the drivers' PDBs), as symchk and WinDbg's cache do. Returns
    /// the path of nt's PDB.
    pub fn write_symbol_store(&self, dir: &Path) -> io::Result<PathBuf> {
        let files = self.scenario.build.files();
        let nt = store_put(dir, &self.m.pdb.name, &self.m.pdb.store_key, files.pdb)?;
        if self.scenario.drivers {
            for d in drivers::all() {
                store_put(dir, &d.info.pdb.name, &d.info.pdb.store_key, d.pdb)?;
            }
        }
        Ok(nt)
    }

    /// Put nt's and the drivers' image files in the symbol store at `dir`
    /// as WinDbg finds binaries: `<file>/<TimeDateStamp><SizeOfImage>/
    /// <file>` (8 hex digits, then the size without leading zeros), under
    /// the names the loaded-module list gives them. Returns the paths.
    pub fn write_image_files(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut images: Vec<(&str, &[u8])> = Vec::new();
        if let Some(nt) = self.truth.kernel.modules.first() {
            images.push((&nt.base_name, self.scenario.build.files().image));
        }
        if self.scenario.drivers {
            for d in drivers::all() {
                images.push((&d.info.file, d.image));
            }
        }
        let mut out = Vec::new();
        for (name, bytes) in images {
            let (stamp, size) = pe_identity(bytes).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{name}: not a PE image"),
                )
            })?;
            out.push(store_put(
                dir,
                name,
                &format!("{stamp:08X}{size:X}"),
                bytes,
            )?);
        }
        Ok(out)
    }
}

/// A PE file's TimeDateStamp and SizeOfImage.
fn pe_identity(b: &[u8]) -> Option<(u32, u32)> {
    let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let nt = u32_at(0x3C)? as usize;
    (b.get(nt..nt + 4)? == b"PE\0\0").then_some(())?;
    Some((u32_at(nt + 8)?, u32_at(nt + 0x18 + 0x38)?))
}

fn store_put(dir: &Path, name: &str, key: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    let d = dir.join(name).join(key);
    std::fs::create_dir_all(&d)?;
    let p = d.join(name);
    std::fs::write(&p, bytes)?;
    Ok(p)
}

/// RAM for the scenario: what it asks for, grown when a bulk area would not
/// fit in one physical run (the PCI hole splits RAM at 3 GiB; bulk pool is
/// mapped with large pages over contiguous frames).
fn ram_bytes(s: &Scenario) -> u64 {
    let asked = s.ram_mib * MB;
    match &s.bulk {
        // The run above 4 GiB holds RAM - 3 GiB: keep 1 GiB spare beyond
        // the bulk area for everything else.
        Some(b) if b.bytes + GB > 3 * GB => asked.max(b.bytes + 4 * GB),
        Some(b) => asked.max(b.bytes + GB),
        None => asked,
    }
}

/// Windows 10 1607+ picks the self-map slot at random in the kernel half,
/// away from KUSER_SHARED_DATA (0x1EF) and the system-image slots above.
fn pick_self_map(rng: &mut fastrand::Rng) -> u64 {
    rng.u64(0x100..0x1EF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_and_print() {
        assert_eq!(tag_value("Abc"), 0x2063_6241);
        assert_eq!(tag_value("Pro\\xe3"), u32::from_le_bytes(*b"Pro\xe3"));
        assert_eq!(tag_string(tag_value("CM")), "CM  ");
        assert_eq!(tag_string(u32::from_le_bytes(*b"Pro\xe3")), "Pro\\xe3");
    }
}
