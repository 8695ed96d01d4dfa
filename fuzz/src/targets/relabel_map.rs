//! A relabel map file (crates/core/src/relabel/map.rs), hostile when a
//! user is handed one: read, written back, and used as `relabel`,
//! `relabel --undo`, `find --relabel` and `analyze --relabel` use it,
//! against the kit's three drivers loaded in a small memory (and the first
//! of them as nt, for the kernel's identity) and against their files.
use pooldump_core::KernelVa;
use pooldump_core::kernel::{KernBaseSource, KernelIdentity, LoadedModule, read_pe_image};
use pooldump_core::pool::{PoolClass, TagUsage, TrackerSlot};
use pooldump_core::relabel::{self, RelabelMap};

use super::super::{DRIVERS, Regions, loaded_module, map_image};

const NT: u64 = 0xFFFF_F800_0000_0000;
/// Where the kit's drivers are loaded, one after another.
const DRIVER_BASE: u64 = 0xFFFF_F800_1000_0000;
const STRIDE: u64 = 0x10_0000;

/// The kit's drivers loaded as the harness loads them (seedgen makes
/// maps of them that fit).
pub struct Kit {
    /// The drivers' images, and the first again as nt.
    pub mem: Regions,
    /// nt, then the drivers.
    pub loaded: Vec<LoadedModule>,
    /// nt's identity (the first driver's PDB).
    pub kernel: Option<KernelIdentity>,
}

impl Kit {
    pub fn load() -> Self {
        let mut regions = Vec::new();
        let mut loaded = Vec::new();
        for (i, (name, file)) in DRIVERS.iter().enumerate() {
            let Some((size, image)) = map_image(file) else {
                continue;
            };
            let base = DRIVER_BASE + STRIDE * i as u64;
            if i == 0 {
                regions.push((NT, image.clone()));
                loaded.push(loaded_module("ntoskrnl.exe", NT, size));
            }
            regions.push((base, image));
            loaded.push(loaded_module(name, base, size));
        }
        let mem = Regions {
            regions,
            what: "the kit's drivers",
        };
        let kernel = read_pe_image(&mem, KernelVa(NT))
            .ok()
            .map(|image| KernelIdentity {
                kern_base: KernelVa(NT),
                found_by: KernBaseSource::LoadedModuleList,
                image,
                kdbg: None,
                ps_loaded_module_list: None,
                warnings: Vec::new(),
            });
        Self {
            mem,
            loaded,
            kernel,
        }
    }
}

pub fn run(data: &[u8]) {
    let Ok(map) = RelabelMap::from_json(data, "relabel.json") else {
        return;
    };
    let text = map.to_json();
    let back = RelabelMap::from_json(text.as_bytes(), "relabel.json");
    assert!(
        back.as_ref().is_ok_and(|b| *b == map),
        "a map does not read back as written: {back:?}"
    );

    let Kit {
        mem,
        loaded,
        kernel,
    } = Kit::load();

    // `relabel --undo` and the checks before any write.
    if let Some(kernel) = &kernel {
        let _ = map.check_target(kernel);
    }
    let _ = map.check_modules(&mem, &loaded);
    let _ = map.writes();
    let states = map.site_states(&mem, &loaded);
    let _ = map.undo_plan(&states);
    let _ = map.site_states(&mem, &[]);

    // `find --relabel` and `analyze --relabel`: the tracker's rows of the
    // map's tags (old and new) in both pools.
    let mut rows = Vec::new();
    for (i, s) in map.sites.iter().enumerate() {
        for tag in [s.new_tag, s.old_tag, map.tag] {
            rows.push(usage(tag, i as u64));
        }
        let _ = map.immediate_at(i, None);
        let _ = map.site_of(s.new_tag);
    }
    let _ = relabel::site_usage(&map, &rows);
    let _ = relabel::quiet_sites(&map, &rows[..rows.len() / 2]);

    // `callsites --image --patch`'s map applied to each driver file.
    for (_, file) in DRIVERS {
        let _ = relabel::patch_image(file, &map);
    }
}

fn usage(tag: pooldump_core::PoolTag, i: u64) -> TagUsage {
    TagUsage {
        tag,
        pool: if i.is_multiple_of(2) {
            PoolClass::NonPaged
        } else {
            PoolClass::Paged
        },
        allocs: i + 2,
        frees: 1,
        diff: i + 1,
        bytes: 0x40 * (i + 1),
        per_alloc: 0x40,
        slot: TrackerSlot::Hashed { index: i },
        clamped: false,
        driver: None,
        description: None,
    }
}
