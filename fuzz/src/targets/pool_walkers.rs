//! The walkers that follow pointers and sizes read from the target's
//! memory, on fuzzed kernel memory (every address reads the input
//! cyclically, with optional holes), with a real build's layouts from the
//! built-in table: the pool tracker and its per-processor tables and
//! expansion table, the big-page table, the process list and session pool
//! (crates/core/src/pool, processes.rs) and `find`'s mapping of each
//! session's pool, the module list and KDBG (crates/core/src/kernel),
//! and `pool_at` (`!pool Addr`: find's frame scan of one page for every
//! tag, with the segment-heap checks, and the big-page table; through a
//! session's page tables as `pool --session N` reads) with the
//! listed blocks' contents (`!pool Addr 1`, and `find --bytes` on them).
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
use pooldump_core::symbols::{BuiltInMatch, KernelSymbols, SymbolSource};

/// Each built-in build's number and symbols.
fn symbols() -> &'static [(u32, KernelSymbols)] {
    static SYMS: OnceLock<Vec<(u32, KernelSymbols)>> = OnceLock::new();
    SYMS.get_or_init(|| {
        fallback::builds()
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
            .collect()
    })
}

pub fn run(data: &[u8]) {
    if data.len() < 16 {
        return;
    }
    let (head, body) = data.split_at(16);
    let all = symbols();
    assert!(!all.is_empty(), "the built-in table loads");
    let (build, syms) = &all[head[0] as usize % all.len()];
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
