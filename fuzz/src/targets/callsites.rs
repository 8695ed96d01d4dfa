//! Reading driver images taken from a dump or a live target (hostile
//! bytes): the call-site scan (`pooldump callsites`, `relabel`, `analyze
//! --relabel`), its names (hittag's `module!function+0xoff`), both
//! Mapped_Driver searches (the tag's bytes in code and read-only data, and
//! the tag reaching a pool routine), and making, checking and applying a
//! relabel map against the image.
//!
//! The image is one of the kit's drivers (testdata/drivers) as the loader
//! maps it, with fuzzed bytes patched in, or the input's own bytes as the
//! whole mapped image; it sits at a kernel address (or at a fuzzed one, as
//! a hostile loader entry's DllBase gives it) in a small memory, behind a
//! loaded-module list whose nt entry is not mapped. The file (patched
//! separately) is also read as `callsites --image FILE --patch OUT` reads
//! one.
use std::sync::Arc;

use pooldump_core::callsites::{self, ImageMemory, TagSite, scan_module, tag_sites};
use pooldump_core::kernel::{LoadedModule, ModuleList};
use pooldump_core::pool::attribution::{ImageCache, attribute_tags_with};
use pooldump_core::relabel::{self, MapModule, RelabelMap, TagChooser};
use pooldump_core::stack::{StackWalker, Symbolizer, SymbolizerOptions};
use pooldump_core::{KernelVa, Memory, PoolTag};

use super::super::{Bytes, DRIVERS, Regions, loaded_module, map_image, patch};

const BASE: u64 = 0xFFFF_F800_1000_0000;
/// Where a second loader entry maps the same image (a tag in two drivers).
const SECOND: u64 = 0xFFFF_F800_2000_0000;
const NT: u64 = 0xFFFF_F800_0000_0000;
/// Tags the kit's drivers pass to pool routines, and one nobody uses.
const FIXED_TAGS: [&[u8; 4]; 4] = [b"Leak", b"FsFl", b"NSbf", b"None"];

struct Input {
    driver: u8,
    flags: u8,
    base: u64,
    size: u32,
    tags: [u32; 2],
    name: Vec<u8>,
    patches: Vec<(u32, u8)>,
    file_patches: Vec<(u32, u8)>,
    rest: Vec<u8>,
}

impl Input {
    fn decode(data: &[u8]) -> Self {
        let mut b = Bytes(data);
        let driver = b.u8();
        let flags = b.u8();
        let base = b.u64();
        let size = b.u32();
        let tags = [b.u32(), b.u32()];
        let name = if flags & 8 != 0 {
            let n = usize::from(b.u8() % 64);
            b.take(n).to_vec()
        } else {
            Vec::new()
        };
        let patches = b.patches();
        let file_patches = b.patches();
        Self {
            driver,
            flags,
            base,
            size,
            tags,
            name,
            patches,
            file_patches,
            rest: b.0.to_vec(),
        }
    }
}

pub fn run(data: &[u8]) {
    let input = Input::decode(data);
    // The file: a kit driver, or the input's remaining bytes.
    let k = usize::from(input.driver) % (DRIVERS.len() + 1);
    let (kit_name, file) = match DRIVERS.get(k) {
        Some((n, f)) => (*n, f.to_vec()),
        None => ("fuzz.sys", input.rest.clone()),
    };
    let mut file = file;
    file.truncate(1 << 20);
    // The mapped image: the file as the loader maps it, else its raw bytes.
    let (soi, mut image) = map_image(&file).unwrap_or_else(|| (file.len() as u32, file.clone()));
    patch(&mut image, &input.patches);
    patch(&mut file, &input.file_patches);

    let base = if input.flags & 1 != 0 {
        input.base
    } else {
        BASE
    };
    let size = if input.flags & 2 != 0 {
        input.size
    } else {
        soi
    };
    let name = if input.flags & 8 != 0 {
        String::from_utf8_lossy(&input.name).into_owned()
    } else {
        kit_name.to_string()
    };
    let mut modules = vec![
        loaded_module("ntoskrnl.exe", NT, 0x1000),
        loaded_module(&name, base, size),
    ];
    let mut regions = vec![(base, image.clone())];
    if input.flags & 4 != 0 {
        modules.push(loaded_module("second.sys", SECOND, size));
        regions.push((SECOND, image));
    }
    let mem = Regions {
        regions,
        what: "fuzzed driver image",
    };
    let list = ModuleList {
        head: KernelVa(0xFFFF_F800_0040_0000),
        modules: modules.clone(),
        complete: true,
        warnings: Vec::new(),
    };
    let mut tags: Vec<PoolTag> = FIXED_TAGS
        .iter()
        .map(|t| PoolTag(u32::from_le_bytes(**t)))
        .collect();
    tags.extend(input.tags.iter().map(|&t| PoolTag(t)));

    // `pooldump callsites` on a dump: every tag, then the tags asked for
    // (named again through a fresh walker, as `relabel` does).
    let wanted = if input.flags & 16 != 0 {
        vec![name.clone()]
    } else {
        Vec::new()
    };
    let mut names = Symbolizer::new(SymbolizerOptions::default());
    let found = callsites::call_sites(&mem, &list, &[], &wanted, &mut names);
    let mut walker = StackWalker::new(&list);
    let (sites, _) = tag_sites(&found.scans, &tags, &mut walker, &mut names, &mem);
    for s in &found.scans {
        for c in &s.calls {
            let _ = callsites::site_name(&mut walker, &mut names, &mem, c.call, c.return_address);
        }
    }

    // Mapped_Driver, both ways: the tag reaching a pool routine, and the
    // tag's bytes in code and read-only data (from memory, and from the
    // patched file where its headers match).
    let _ = callsites::attribute_tags(&mem, &modules, &tags);
    let files = |_: &str, _: u32, _: u32| Some(file.clone());
    let cache = ImageCache::default();
    let _ = attribute_tags_with(&mem, &modules, &tags, &cache, None);
    let _ = attribute_tags_with(&mem, &modules, &tags, &ImageCache::default(), Some(&files));

    // `relabel` on the target: a map for a tag its code passes, checked
    // and read back through the same memory.
    let relabelled = |sites: &[TagSite]| -> Option<PoolTag> {
        let pick = usize::from(input.flags >> 5);
        sites.get(pick % sites.len().max(1)).map(|s| s.tag)
    };
    let mut loaded: Vec<MapModule> = Vec::new();
    for m in &modules[1..] {
        if let Ok(mm) = MapModule::read(&mem, m) {
            loaded.push(mm);
        }
    }
    let all = found
        .sites
        .iter()
        .chain(&sites)
        .cloned()
        .collect::<Vec<_>>();
    if let Some(tag) = relabelled(&all) {
        let taken = all.iter().map(|s| s.tag);
        let mut chooser = TagChooser::new(taken, None);
        if let Ok(map) = relabel::plan(tag, None, &loaded, &all, &mut chooser) {
            check_map(&map, &mem, &modules, &file);
        }
    }

    // `callsites --image FILE --patch OUT`: the file mapped at its
    // ImageBase, scanned, relabelled and patched.
    let Ok(img) = ImageMemory::from_bytes("fuzz.sys", Arc::from(file.as_slice())) else {
        return;
    };
    let mut walker = StackWalker::from_modules(vec![img.module()]);
    let mut names = Symbolizer::new(SymbolizerOptions::default());
    let Ok(scan) = scan_module(&mut walker, &img, 0) else {
        return;
    };
    let scans = vec![scan];
    let (sites, _) = tag_sites(&scans, &[], &mut walker, &mut names, &img);
    let Some(tag) = relabelled(&sites) else {
        return;
    };
    let taken = scans
        .iter()
        .flat_map(|s| s.calls.iter())
        .flat_map(|c| c.tags.iter().flatten().map(|v| v.tag));
    let mut chooser = TagChooser::new(taken, None);
    let module = MapModule {
        name: img.name().to_string(),
        base: None,
        time_date_stamp: img.image().time_date_stamp(),
        size_of_image: img.image().size_of_image(),
    };
    if let Ok(map) = relabel::plan(tag, None, &[module], &sites, &mut chooser) {
        check_map(&map, &img, &[], img.file_bytes());
    }
}

/// What `relabel`, `relabel --undo`, `find --relabel` and `analyze
/// --relabel` do with a map: write it and read it back, check it against
/// the modules, read each site's bytes, plan the undo, patch the file.
fn check_map<M: Memory>(map: &RelabelMap, mem: &M, loaded: &[LoadedModule], file: &[u8]) {
    let text = map.to_json();
    let back = RelabelMap::from_json(text.as_bytes(), "relabel.json");
    assert!(
        back.as_ref().is_ok_and(|b| b == map),
        "a map does not read back as written: {back:?}"
    );
    let _ = map.writes();
    let _ = map.check_modules(mem, loaded);
    let states = map.site_states(mem, loaded);
    let _ = map.undo_plan(&states);
    for s in map.alloc_sites() {
        let _ = map.site_of(s.new_tag);
    }
    let _ = relabel::patch_image(file, map);
    let _ = relabel::pe_checksum(file);
}
