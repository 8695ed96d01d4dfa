//! Where things live: KernBase, the system images, the pool regions and
//! the PFN database; from Windows 10 1607 on, randomised 512 GiB system VA
//! regions, one PML4 slot each.

use std::collections::BTreeMap;

use crate::layout::Manifest;
use crate::paging::{Prot, sign_extend};
use crate::phys::{GB, MB, PAGE64};
use crate::truth::RegionTruth;

use super::{Machine, Region, SLOT};

impl Machine {
    /// Where things live: KernBase, the pool regions and, from Windows 10
    /// 1607 on, randomised 512 GiB system VA regions.
    pub(super) fn plan_regions(&mut self) {
        let build = self.scenario.build.number();
        let max_pfn = self.mem.max_pfn();
        let rng = &mut self.rng;
        let mut regions: Vec<RegionTruth> = Vec::new();
        let (kern_base, images, np_base, np_first, pp_base, pp_first, pfn_db);
        if build < 9200 {
            // Windows 7: fixed x64 layout (docs/pool-structures.md §6).
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
            let slot_of = assign_region_slots(self.m, self.asp.self_map, rng, &mut regions);
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
            self.map_initial_large_page();
        }
    }

    /// Nonpaged pool's first pages sit in a 2 MiB large page, as Windows
    /// maps its initial nonpaged pool.
    fn map_initial_large_page(&mut self) {
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

/// Every assigned region gets its own PML4 slot; the page tables sit under
/// the self-map and system images at 0xFFFFF800`... Returns each region's
/// slot, by name, and records the regions.
fn assign_region_slots(
    m: &Manifest,
    self_map: u64,
    rng: &mut fastrand::Rng,
    regions: &mut Vec<RegionTruth>,
) -> BTreeMap<String, u64> {
    let en = m
        .enums
        .get("_MI_ASSIGNED_REGION_TYPES")
        .cloned()
        .unwrap_or_default();
    let mut used = vec![self_map, 0x1EF, 0x1F0];
    let mut slot_of = BTreeMap::new();
    let mut names: Vec<(&String, &i64)> = en.iter().collect();
    names.sort_by_key(|(_, v)| **v);
    for (name, _) in &names {
        if name.ends_with("Maximum") {
            continue;
        }
        let slot = match name.as_str() {
            "AssignedRegionPageTables" => self_map,
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
    slot_of
}
