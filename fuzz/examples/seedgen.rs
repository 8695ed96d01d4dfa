//! Seeds that need pooldump's own code to make (run by seed.sh):
//!
//! `seedgen kdnet-packets IN OUT`: open each datagram file in IN with
//! windbg-uncut's key (8.8.8.8 and the data key its handshake agreed,
//! kdnet.md §3.5) and write each payload to OUT, the decrypted KD packets
//! and control messages the kdnet_packet target starts from.
//!
//! `seedgen cab FILE OUT`: FILE in an MSZIP cabinet, as a compressed
//! symbol-store file (`.pd_`) holds it, for the cab_store target.
//!
//! `seedgen segment-heap OUT`: pool_walkers inputs whose 64 KiB of memory
//! (repeated over the whole address space: every address reads byte
//! `va % 0x10000`) holds a working segment heap for each segment-heap PDB
//! build: ExPoolState with one pool node, a signed `_SEGMENT_HEAP` and its
//! contexts, a page segment on their lists signed with the build's key
//! (and one with the other key), an LFH subsegment and a VS subsegment
//! with tagged pool headers, and the keys. Random bytes never pass the
//! heap's signature checks, so without these the walkers' segment-heap
//! code is not reached.
//!
//! `seedgen hittag-stops OUT`: the hittag target's inputs from real stops
//! of the kit's running KMDF machine (PoolHitTag 'KmDr'): each stop's
//! CONTEXT, its stack from RSP, and the bases of nt, Wdf01000.sys and
//! kmdfdrv.sys, so the analysis starts from stacks that reach the driver
//! through the framework and the framework from nt's worker thread.
//!
//! `seedgen relabel-maps OUT`: relabel maps of every allocation tag of the
//! kit's drivers, made as `relabel` makes them on a target (plan_on_target's
//! steps over the relabel_map harness's memory: kernel identity, module
//! bases) and as `callsites --image --patch` makes them from a file, for the
//! relabel_map target.
#[path = "seedgen/hittag.rs"]
mod hittag;
#[path = "seedgen/segheap.rs"]
mod segheap;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use pooldump_core::callsites::{self, ImageMemory, scan_module, tag_sites};
use pooldump_core::hittag::PoolCall;
use pooldump_core::kernel::ModuleList;
use pooldump_core::relabel::{self, MapModule, TagChooser, TargetIdentity};
use pooldump_core::stack::{StackWalker, Symbolizer, SymbolizerOptions};
use pooldump_core::{KernelVa, PoolTag};
use pooldump_fuzz::DRIVERS;
use pooldump_fuzz::targets::relabel_map::Kit;

use pooldump_kdnet::KdnetKey;
use pooldump_kdnet::datagram::{self, DataKey};

const DATA_KEY: [u8; 32] = [
    0x6b, 0xd9, 0x1c, 0x57, 0xbd, 0x6a, 0x55, 0x1a, 0xd3, 0x0b, 0x50, 0x9c, 0x05, 0xc0, 0xc9, 0x5b,
    0x32, 0xcc, 0x5e, 0x47, 0xa0, 0x86, 0x69, 0x07, 0xea, 0xf0, 0xb1, 0x58, 0x33, 0x84, 0xf6, 0x60,
];

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("kdnet-packets") if args.len() == 4 => {
            kdnet_packets(Path::new(&args[2]), Path::new(&args[3]))
        }
        Some("cab") if args.len() == 4 => cab(Path::new(&args[2]), Path::new(&args[3])),
        Some("relabel-maps") if args.len() == 3 => relabel_maps(Path::new(&args[2])),
        Some("segment-heap") if args.len() == 3 => segheap::seeds(Path::new(&args[2])),
        Some("hittag-stops") if args.len() == 3 => hittag::stops(Path::new(&args[2])),
        _ => Err(
            "usage: seedgen kdnet-packets IN OUT | seedgen cab FILE OUT | seedgen relabel-maps OUT \
             | seedgen segment-heap OUT | seedgen hittag-stops OUT"
                .into(),
        ),
    }
}

fn kdnet_packets(input: &Path, out: &Path) -> Result<(), String> {
    let key: KdnetKey = "8.8.8.8".parse().map_err(|e| format!("{e}"))?;
    let dk = DataKey(DATA_KEY);
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let mut n = 0;
    for entry in std::fs::read_dir(input).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let wire = std::fs::read(&path).map_err(|e| e.to_string())?;
        if let Ok(d) = datagram::open(&wire, &key, Some(&dk)) {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            std::fs::write(out.join(name), d.payload()).map_err(|e| e.to_string())?;
            n += 1;
        }
    }
    eprintln!("seedgen: {n} payloads from {}", input.display());
    Ok(())
}

fn cab(input: &Path, out: &Path) -> Result<(), String> {
    let data = std::fs::read(input).map_err(|e| e.to_string())?;
    let name = input
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut b = cab::CabinetBuilder::new();
    b.add_folder(cab::CompressionType::MsZip).add_file(name);
    let mut w = b
        .build(std::io::Cursor::new(Vec::new()))
        .map_err(|e| e.to_string())?;
    while let Some(mut f) = w.next_file().map_err(|e| e.to_string())? {
        f.write_all(&data).map_err(|e| e.to_string())?;
    }
    let bytes = w.finish().map_err(|e| e.to_string())?.into_inner();
    std::fs::write(out, bytes).map_err(|e| e.to_string())
}

fn relabel_maps(out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let mut n = 0;
    let mut write = |name: String, map: &relabel::RelabelMap| -> Result<(), String> {
        n += 1;
        std::fs::write(out.join(name), map.to_json()).map_err(|e| e.to_string())
    };
    let alloc_tags = |sites: &[callsites::TagSite]| -> Vec<PoolTag> {
        let mut t: Vec<PoolTag> = sites
            .iter()
            .filter(|s| s.kind == PoolCall::Alloc)
            .map(|s| s.tag)
            .collect();
        t.sort();
        t.dedup();
        t
    };
    // On a target: the kit loaded as the harness loads it.
    let kit = Kit::load();
    let list = ModuleList {
        head: KernelVa(0),
        modules: kit.loaded.clone(),
        complete: true,
        warnings: Vec::new(),
    };
    let mut names = Symbolizer::new(SymbolizerOptions::default());
    let found = callsites::call_sites(&kit.mem, &list, &[], &[], &mut names);
    let identity = kit
        .kernel
        .as_ref()
        .and_then(|k| TargetIdentity::of(k, Some(19041)));
    let modules: Vec<MapModule> = kit.loaded[1..]
        .iter()
        .filter_map(|m| MapModule::read(&kit.mem, m).ok())
        .collect();
    for tag in alloc_tags(&found.sites) {
        let mut chooser = TagChooser::new(found.sites.iter().map(|s| s.tag), None);
        let map = relabel::plan(tag, identity.clone(), &modules, &found.sites, &mut chooser)
            .map_err(|e| e.to_string())?;
        write(format!("target-{tag}.json"), &map)?;
    }
    // From a file, as `callsites --image FILE --patch OUT` does.
    for (name, file) in DRIVERS {
        let img = ImageMemory::from_bytes(name, Arc::from(file)).map_err(|e| e.to_string())?;
        let mut walker = StackWalker::from_modules(vec![img.module()]);
        let scans = vec![scan_module(&mut walker, &img, 0).map_err(|e| e.to_string())?];
        let (sites, _) = tag_sites(&scans, &[], &mut walker, &mut names, &img);
        let module = MapModule {
            name: img.name().to_string(),
            base: None,
            time_date_stamp: img.image().time_date_stamp(),
            size_of_image: img.image().size_of_image(),
        };
        for tag in alloc_tags(&sites) {
            let mut chooser = TagChooser::new(sites.iter().map(|s| s.tag), None);
            let map = relabel::plan(
                tag,
                None,
                std::slice::from_ref(&module),
                &sites,
                &mut chooser,
            )
            .map_err(|e| e.to_string())?;
            write(format!("file-{name}-{tag}.json"), &map)?;
        }
    }
    eprintln!("seedgen: {n} relabel maps");
    Ok(())
}
