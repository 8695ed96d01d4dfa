//! What the library's tests against the kit share (`mod common;`): a kit
//! machine written out as pooldump reads it and opened through the
//! library's front door, and the tag specs the scenarios add.

#![allow(dead_code)] // each test binary uses its own subset

pub mod check;

use pooldump_core::pool::TagPattern;
use pooldump_core::pool::find::{Allocator, Engine, FindOptions, FindReport};
use pooldump_core::symbols::SymbolOptions;
use pooldump_core::{CrashDump, Target};
use pooldump_kit::truth::AllocatorKind;
use pooldump_kit::{DumpKind, Machine, NtBuild, PoolKind, Scenario, SizeSpec, TagSpec};

/// The machine's dump (of `kind`) and symbol store written into a new
/// temporary directory and opened with pooldump, symbols from that store
/// alone; the directory lives as long as the caller keeps it.
pub fn open(m: &Machine, kind: DumpKind) -> (tempfile::TempDir, Target<CrashDump>) {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("MEMORY.DMP");
    m.write_dump_file(kind, &dump).unwrap();
    let symbols = dir.path().join("symbols");
    m.write_symbol_store(&symbols).unwrap();
    let t = Target::open_dump(&dump, &SymbolOptions::local_store(&symbols)).unwrap();
    (dir, t)
}

/// The kit's small scenario with 64 MiB of RAM (full dumps stay small).
pub fn small_64mib(build: NtBuild, seed: u64) -> Scenario {
    let mut s = Scenario::small(build, seed);
    s.ram_mib = 64;
    s
}

/// The machine of `s` with 30% of its pool pages paged out (a pagefile
/// PTE) and 30% in transition (on the standby list); it has some of each.
pub fn with_paged_out_and_transition_pages(mut s: Scenario) -> Machine {
    s.paged_out = 0.3;
    s.transition = 0.3;
    let m = Machine::build(&s);
    assert!(!m.truth.pages.paged_out.is_empty() && !m.truth.pages.transition.is_empty());
    m
}

/// `Wrap`: `live` allocations of `bytes` in `pool` after 5,000,000,000
/// made and freed, so that 32-bit tracker counters (Windows 7's 0x28-byte
/// entries) wrap.
pub fn wrapping_tag(pool: PoolKind, live: u32, bytes: u32) -> TagSpec {
    fixed_tag("Wrap", pool, live, bytes, 5_000_000_000)
}

/// A tag with `live` allocations of `bytes` each in `pool`, and `freed`
/// made and freed before the dump, none of them left in memory; neither
/// protected nor cache aligned.
pub fn fixed_tag(tag: &str, pool: PoolKind, live: u32, bytes: u32, freed: u64) -> TagSpec {
    TagSpec {
        tag: tag.into(),
        pool,
        live,
        size: SizeSpec::Fixed(bytes),
        freed,
        freed_in_memory: 0,
        protected: false,
        cache_aligned: false,
    }
}

/// The state `find` gives an allocation the truth says is live (else freed).
pub fn state_of(live: bool) -> pooldump_core::pool::find::AllocationState {
    use pooldump_core::pool::find::AllocationState;
    if live {
        AllocationState::Allocated
    } else {
        AllocationState::Free
    }
}

/// `find` of `tags` with `engine` and the default options.
pub fn run(t: &Target<CrashDump>, tags: &[&str], engine: Engine) -> FindReport {
    let patterns: Vec<TagPattern> = tags.iter().map(|s| TagPattern::parse(s).unwrap()).collect();
    let opts = FindOptions {
        engine,
        ..FindOptions::default()
    };
    t.find(&patterns, &opts).unwrap()
}

/// The allocator find reports for one the kit placed.
pub fn allocator_of(k: AllocatorKind) -> Allocator {
    match k {
        AllocatorKind::LegacyPage => Allocator::LegacyPage,
        AllocatorKind::Lfh => Allocator::Lfh,
        AllocatorKind::Vs => Allocator::Vs,
        AllocatorKind::Big | AllocatorKind::VsBig => Allocator::BigPool,
    }
}
