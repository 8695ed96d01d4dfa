//! The synthetic machine: memory, page tables, nt and drivers mapped, the
//! globals the analysis reads, and the pool state of the scenario.
//!
//! This file holds [`Machine`], the order [`Machine::build`] builds it in,
//! and the primitives every builder uses (writing memory, committing
//! pages, pool pages from the regions). Each phase adds its methods from
//! its own file: `regions.rs` plans the VA layout, `images.rs` maps nt
//! and the drivers and lists them, `kuser.rs` keeps KUSER_SHARED_DATA and
//! its clocks, `files.rs` writes dumps, symbol stores and image files. The
//! pool, tracker, bulk area, globals and processes are the crate's other
//! modules; they build on this one and it names none of them.

mod files;
mod images;
mod kuser;
mod regions;

use std::collections::BTreeMap;

use crate::dump::HeaderFields;
use crate::layout::Manifest;
use crate::paging::{self, AddressSpace, Prot};
use crate::phys::PhysMemory;
use crate::scenario::{PoolKind, Scenario};
use crate::truth::GroundTruth;

pub(crate) use crate::phys::{GB, MB, PAGE64};
pub use crate::tag::{tag_string, tag_value};

const SLOT: u64 = 1 << 39;
pub const KUSER_SHARED_DATA: u64 = 0xFFFF_F780_0000_0000;
pub const KUSER_SHARED_DATA_USER: u64 = 0x7FFE_0000;

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
    /// How the keys are mixed into segment signatures and LFH offsets.
    pub(crate) heap_keys: crate::pool::format::HeapKeyDerivation,
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
    /// Sessions whose pool is a segment heap, placed last
    /// ([`Machine::place_session_heaps`]).
    pub(crate) pending_session_heaps: Vec<crate::session_pool::PendingSessionHeap>,
    /// What the drivers mapped so far export: (file, routine, address),
    /// for the imports of those mapped after them.
    pub(crate) driver_exports: Vec<(String, String, u64)>,
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
        // Volatility's DTB scan looks there first (as Volatility and WinDbg do).
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
            heap_keys: s.heap_key_derivation(),
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
            pending_session_heaps: Vec::new(),
            driver_exports: Vec::new(),
            rng,
        };
        mc.truth.build = s.build.name().to_string();
        mc.truth.build_number = s.build_number();
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
        mc.place_session_heaps();
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

    /// The dump header, context and bugcheck.
    fn fill_header(&mut self) {
        let s = &self.scenario;
        let stack = self.stack;
        let rip = self
            .sym_va("KeBugCheckEx")
            .unwrap_or(self.kern_base + self.m.image.entry_rva);
        self.header = HeaderFields {
            build: s.build_number(),
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
