//! The walkers that follow pointers and sizes read from the target's
//! memory, on fuzzed kernel memory (every address reads the input
//! cyclically, with optional holes), with a real build's layouts from the
//! built-in table, or from the committed synthetic nt PDBs of segment-heap
//! builds (the built-in table has no segment-heap types; 19041 and
//! 22000.318, the latter also stated as 24H2's 26100): the pool tracker and its per-processor tables and
//! expansion table, the big-page table, the process list and session pool
//! (crates/core/src/pool, processes.rs) and `find`'s mapping of each
//! session's pool, the module list and KDBG (crates/core/src/kernel),
//! and `pool_at` (`!pool Addr`: find's frame scan of one page for every
//! tag, with the segment-heap checks, and the big-page table; through a
//! session's page tables as `pool --session N` reads) with the
//! listed blocks' contents (`!pool Addr 1`, and `find --bytes` on them).
use std::path::Path;
use std::sync::OnceLock;

use super::super::{CyclicVirt, u64_at};
use pooldump_core::KernelVa;
use pooldump_core::kernel::{WalkLimits, read_kdbg, read_pe_image, walk_loaded_modules};
use pooldump_core::pagemap::{PageMap, PageMapOptions};
use pooldump_core::pool::find::{
    ContentsOptions, FoundAllocation, PoolAtOptions, allocation_contents, map_session_pools,
    page_contents, pool_at,
};
use pooldump_core::pool::{
    BigPoolOptions, TrackerOptions, read_big_pool, read_pool_usage, read_session_pool,
};
use pooldump_core::processes::{ProcessWalkLimits, walk_processes};
use pooldump_core::symbols::fallback;
use pooldump_core::symbols::pdb::read_pdb_bytes;
use pooldump_core::symbols::{BuiltInMatch, KernelSymbols, SymbolSource};

/// Each built-in build's number and symbols, then the segment-heap
/// builds' from their PDBs.
fn symbols() -> &'static [(u32, KernelSymbols)] {
    static SYMS: OnceLock<Vec<(u32, KernelSymbols)>> = OnceLock::new();
    SYMS.get_or_init(|| {
        let mut all: Vec<(u32, KernelSymbols)> = fallback::builds()
            .iter()
            .filter_map(|b| {
                let syms = KernelSymbols::new(
                    b.identity()?,
                    SymbolSource::BuiltIn {
                        matched_by: BuiltInMatch::Guid,
                        build: b.build_string.clone(),
                        supplement: false,
                    },
                    b.layouts.clone(),
                );
                Some((b.build, syms))
            })
            .collect();
        for (builds, pdb) in SEGMENT_HEAP_PDBS {
            let (identity, layouts, _) =
                read_pdb_bytes(pdb, Path::new("ntkrnlmp.pdb"), "ntkrnlmp.pdb", None)
                    .expect("a committed PDB reads");
            for &build in builds {
                let source = SymbolSource::Pdb {
                    path: None,
                    origin: None,
                    layout_cache: None,
                    cache_hit: false,
                };
                let syms = KernelSymbols::new(identity.clone(), source, layouts.clone());
                all.push((build, syms));
            }
        }
        all
    })
}

/// The symbols input byte `b` picks: a built-in build below 0xF0 (by
/// `b` modulo their number, as before the PDB builds were added, so the
/// regression inputs keep theirs), else a PDB build.
pub fn pick(b: u8) -> &'static (u32, KernelSymbols) {
    let all = symbols();
    let builtin = fallback::builds()
        .iter()
        .filter(|b| b.identity().is_some())
        .count();
    assert!(builtin > 0 && all.len() > builtin, "the symbols load");
    if b < 0xF0 {
        &all[usize::from(b) % builtin]
    } else {
        &all[builtin + usize::from(b - 0xF0) % (all.len() - builtin)]
    }
}

/// Committed synthetic nt PDBs (testdata/nt) with the segment heap's
/// types, and the build numbers each is read as.
const SEGMENT_HEAP_PDBS: [(&[u32], &[u8]); 2] = [
    (
        &[19041],
        include_bytes!("../../../testdata/nt/win10-19041/ntkrnlmp.pdb"),
    ),
    (
        &[22000, 26100],
        include_bytes!("../../../testdata/nt/win11-22000-318/ntkrnlmp.pdb"),
    ),
];

pub fn run(data: &[u8]) {
    if data.len() < 16 {
        return;
    }
    let (head, body) = data.split_at(16);
    let (build, syms) = pick(head[0]);
    let mem = CyclicVirt {
        data: body,
        hole_every: u64::from(head[1] % 8),
    };
    let kern_base = KernelVa(0xFFFF_F800_0000_0000 | (u64_at(head, 8) & 0x0000_07FF_FFE0_0000));
    // Small bounds keep one run fast; the bounds themselves are what the
    // CLI passes, only smaller.
    let tracker = TrackerOptions {
        max_entries: 1 << 12,
        max_cpus: 8,
        max_expansion: 1 << 12,
        include_zero: head[2] & 1 == 1,
        max_session_big_entries: 1 << 14,
    };
    let _ = read_pool_usage(&mem, syms, kern_base, &tracker);
    let big = BigPoolOptions {
        max_entries: 1 << 14,
        include_freed: head[2] & 2 == 2,
    };
    let _ = read_big_pool(&mem, syms, kern_base, &big);
    let limits = ProcessWalkLimits { max_processes: 16 };
    if let Ok(procs) = walk_processes(&mem, syms, kern_base, &limits) {
        let _ = read_session_pool(&mem, syms, kern_base, &procs, &tracker);
        // find's mapping of every session's pool through its processes'
        // page tables, on a map a first walk began.
        let opts = PageMapOptions {
            max_tables: 256,
            max_mappings: 1 << 12,
        };
        let mut map = PageMap::default();
        let mut notes = Vec::new();
        let _ = map_session_pools(&mem, syms, &procs, &mut map, &opts, &mut notes);
        let _ = map.frame_runs();
    }
    if let Ok((layout, _)) = syms.kldr_layout() {
        let head_va = KernelVa(0xFFFF_F800_0000_0000 | u64_at(head, 0) & 0xFFFF_FFF8);
        let list = walk_loaded_modules(
            &mem,
            head_va,
            &layout,
            &WalkLimits {
                max_modules: 64,
                ..Default::default()
            },
        );
        let _ = list.find(kern_base);
    }
    let _ = read_kdbg(&mem, kern_base, None);
    // An address in the kernel half, in the input's pages.
    let va = KernelVa(0xFFFF_8000_0000_0000 | (u64_at(head, 4) & 0x0000_7FFF_FFFF_FFF0));
    // Every page of this memory reads, so a table's claimed size is all
    // there: bound it as the big-page walk above is bounded.
    // Through the source's own tables, or (`pool --session N`) through a
    // session the fuzzed process list names.
    let opts = PoolAtOptions {
        max_big_entries: big.max_entries,
        session: (head[2] & 2 == 2).then_some(u32::from(head[3] & 3)),
    };
    if let Ok(page) = pool_at(&mem, syms, kern_base, Some(*build), va, &opts) {
        // `!pool Addr 1`: the listed blocks' bytes, by the default lengths
        // or a fuzzed one up to far past the per-block bound.
        let contents = ContentsOptions {
            bytes: (head[2] & 8 == 8).then(|| u64::from(head[3]) << (head[2] >> 4)),
            holder_only: head[2] & 4 == 4,
        };
        let _ = page_contents(&mem, &page, &contents);
        // `find --bytes`: a few of the blocks, as listed and as session
        // pool (read through the header's physical page).
        for a in page.allocations.iter().take(4) {
            let bytes = u64::from(head[1]) << (head[2] & 0xF);
            let _ = allocation_contents(&mem, a, bytes);
            let session = FoundAllocation {
                session: true,
                ..a.clone()
            };
            let _ = allocation_contents(&mem, &session, bytes);
        }
    }
    let _ = read_pe_image(&mem, kern_base);
}
