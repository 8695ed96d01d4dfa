//! An independent reader agrees with the kit.
//!
//! kdmp-parser (a crash-dump crate nobody on this project wrote) opens
//! every dump the kit writes, and the pool state is decoded here with
//! nothing but kdmp-parser's readers and the committed ground-truth
//! manifests (`testdata/nt/<build>/layout.json`, parsed here with
//! serde_json). pooldump-core is deliberately not used: this is what shows
//! the kit's dumps are what the kit's truth says, so that pooldump's own
//! tests, which compare pooldump against that truth, compare against
//! something real.
//!
//! Decoding follows docs/pool-structures.md: tracker tables summed over every processor's
//! copy plus the expansion table (§2.3, §2.4), the big-page table with its
//! free bit (§3.2), pool headers as `(POOL_TYPE & 0x6D) | 2` (§4.2), and
//! the placement rules the kernel's hashes and the legacy allocator's
//! PreviousSize chain imply (§2.2, §3.2, §4.3).
//!
//! kdmp-parser workarounds (docs/design.md, "kdmp-parser and pooldump's own header reader"):
//! * physical reads are page-aligned and at most one page long, because
//!   `phys::Reader::read_exact` returns wrong bytes for unaligned reads
//!   that cross more than one page boundary;
//! * virtual reads are split at every 4 KiB boundary too: inside a 2 MiB
//!   large page `virt::Reader::read_exact` hands the physical reader one
//!   unaligned multi-page read and hits the same bug;
//! * no dump here has a corrupt module list (kdmp-parser would hang or
//!   panic on one; `tests/cli/hazards.rs` covers pooldump on those).
//!
//! This file holds the tests and what they share; `kd.rs` reads the dump
//! (layouts, kdmp-parser's reader, the kernel's hashes), `headers.rs`
//! checks the header, physical memory, modules, KDBG and pages,
//! `tracker.rs` the tag tracker, `pool.rs` the big-page table, pool
//! headers and legacy chains, `segment_heap.rs` the segment heap.

#[path = "../common/mod.rs"]
mod common;
#[path = "../../../../tests/support/prereq.rs"]
mod support;

mod headers;
mod kd;
mod pool;
mod segment_heap;
mod tracker;

use std::io::Cursor;

use kdmp_parser::map::MappedFileReader;
use kdmp_parser::parse::KernelDumpParser;
use pooldump_core::dump::MapCheck;
use pooldump_kit::truth::TrackerSlot;
use pooldump_kit::{DumpKind, Machine, NtBuild, PoolKind};

use headers::{check_header, check_kdbg, check_modules, check_pages, check_physmem};
use kd::{Kd, Layout};
use pool::{check_big_pool, check_legacy_chains, check_pool_headers};
use segment_heap::check_segment_heap;
use tracker::check_tracker;

const KINDS: [DumpKind; 4] = [
    DumpKind::Full,
    DumpKind::KernelBitmap,
    DumpKind::BitmapKernel,
    DumpKind::CompleteBitmap,
];

fn open(bytes: Vec<u8>, what: &str) -> KernelDumpParser {
    KernelDumpParser::with_reader(Cursor::new(bytes))
        .unwrap_or_else(|e| panic!("kdmp-parser rejects {what}: {e}"))
}

/// Everything kdmp-parser can say about one dump, against the truth.
fn check_dump(m: &Machine, layout: &Layout, kind: DumpKind, p: &KernelDumpParser) {
    let what = format!("{} {kind:?}", layout.family);
    check_header(m, kind, p, &what);
    check_physmem(m, kind, p, &what);
    check_modules(m, p, &what);
    let kd = Kd::new(p);
    check_kdbg(m, layout, &kd, &what);
    check_tracker(m, layout, &kd, &what);
    check_big_pool(m, layout, &kd, &what);
    check_pool_headers(m, layout, &kd, &what);
    check_legacy_chains(m, layout, &kd, &what);
    check_segment_heap(m, layout, &kd, &what);
    check_pages(m, &kd, &what);
}

#[test]
fn every_build_and_dump_kind_reads_back() {
    for build in NtBuild::ALL {
        let layout = Layout::load(build);
        let m = Machine::build(&common::small_64mib(build, 11));
        for kind in KINDS {
            let what = format!("{build} {kind:?}");
            let bytes = m.dump_bytes(kind);
            // pooldump's own reading of the header gives kdmp-parser's map.
            let ours = pooldump_core::CrashDump::from_bytes(&what, bytes.clone())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                matches!(ours.check_with_kdmp_parser(), MapCheck::Same { runs } if runs > 0),
                "{what}: {:?}",
                ours.check_with_kdmp_parser()
            );
            let p = open(bytes, &what);
            check_dump(&m, &layout, kind, &p);
        }
    }
}

#[test]
fn a_dump_file_opens_through_the_mapped_reader() {
    let dir = tempfile::tempdir().expect("temp dir");
    for build in [NtBuild::Win7_7601, NtBuild::Win11_22000] {
        let m = Machine::build(&common::small_64mib(build, 5));
        let path = dir.path().join(format!("{build}.dmp"));
        m.write_dump_file(DumpKind::KernelBitmap, &path)
            .expect("write the dump");
        let reader = MappedFileReader::new(&path).expect("map the dump");
        let p = KernelDumpParser::with_reader(reader)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check_dump(&m, &Layout::load(build), DumpKind::KernelBitmap, &p);
    }
}

/// A tiny tracker (64 hashed slots, all taken by the boot-time hot tags),
/// a small expansion table and a counter that wraps 32 bits: every slot
/// kind of docs/pool-structures.md §2
#[test]
fn expansion_overflow_and_wrapped_counters() {
    for build in NtBuild::ALL {
        let mut s = common::small_64mib(build, 23);
        s.tracker.size_log2 = Some(6);
        s.tracker.expansion_capacity = 3;
        s.tags.push(common::wrapping_tag(PoolKind::Paged, 2, 0x40));
        let m = Machine::build(&s);
        let slots: Vec<&TrackerSlot> = m.truth.tags.iter().map(|r| &r.slot).collect();
        for want in ["hashed", "expansion", "overflow"] {
            assert!(
                slots.iter().any(|s| match s {
                    TrackerSlot::Hashed { .. } => want == "hashed",
                    TrackerSlot::Expansion { .. } => want == "expansion",
                    TrackerSlot::Overflow => want == "overflow",
                }),
                "{build}: the scenario has no {want} tag"
            );
        }
        let p = open(m.dump_bytes(DumpKind::KernelBitmap), build.name());
        check_dump(&m, &Layout::load(build), DumpKind::KernelBitmap, &p);
    }
}

#[test]
fn paged_out_and_transition_pages() {
    for build in [NtBuild::Win81_9600, NtBuild::Win10_19041] {
        let m = common::with_paged_out_and_transition_pages(common::small_64mib(build, 31));
        assert!(m.truth.allocations.iter().any(|a| !a.in_dump));
        let p = open(m.dump_bytes(DumpKind::KernelBitmap), build.name());
        check_dump(&m, &Layout::load(build), DumpKind::KernelBitmap, &p);
    }
}
