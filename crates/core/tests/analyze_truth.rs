//! `analyze`'s numbers against the kit's ground truth, for every layout
//! family: per-CPU sums, the expansion table, the overflow slot, 32-bit
//! wrap, and the big-page table with freed entries.

mod common;

use std::collections::BTreeMap;

use pooldump_core::Target;
use pooldump_core::pool::{BigPoolOptions, PoolClass, TrackerOptions, TrackerSlot};
use pooldump_kit::{DumpKind, Machine, NtBuild, PoolKind, Scenario};

type Row = (String, &'static str, u64, u64, u64);

/// (tag, "Paged"|"Nonp") -> (Allocs, Frees, Bytes)
type Rows = BTreeMap<(String, &'static str), (u64, u64, u64)>;

fn expected_rows(m: &Machine) -> Rows {
    let mut out = BTreeMap::new();
    for r in &m.truth.tags {
        if r.slot == pooldump_kit::truth::TrackerSlot::Overflow {
            continue;
        }
        let pool = if r.pool == "Paged" { "Paged" } else { "Nonp" };
        // What the kernel's snapshot reports: wrapped counters, Allocs
        // clamped to Frees.
        let (a, f) = (r.reported_allocs, r.reported_frees);
        out.insert((r.tag.clone(), pool), (a.max(f), f, r.bytes));
    }
    out
}

fn actual_rows(t: &Target<pooldump_core::CrashDump>) -> (Rows, Vec<Row>) {
    let u = t.pool_usage(&TrackerOptions::default()).unwrap();
    let mut map = BTreeMap::new();
    let mut overflow = Vec::new();
    for r in &u.rows {
        let pool = r.pool.poolmon();
        if r.slot == TrackerSlot::Overflow {
            overflow.push((r.tag_text(), pool, r.allocs, r.frees, r.bytes));
            continue;
        }
        map.insert((r.tag.to_string(), pool), (r.allocs, r.frees, r.bytes));
    }
    (map, overflow)
}

#[test]
fn per_tag_usage_matches_the_truth_for_every_build() {
    for b in NtBuild::ALL {
        for cpus in [1, 3] {
            let mut s = Scenario::small(b, 11 + cpus as u64);
            s.cpus = cpus;
            let m = Machine::build(&s);
            let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
            let (got, _) = actual_rows(&t);
            let want = expected_rows(&m);
            assert_eq!(got, want, "{b} with {cpus} CPUs");
        }
    }
}

/// Windows 7 writes a kernel memory dump as DumpType 2, a SUMMARY_DUMP64
/// with 32-bit fields and its bitmap at 0x2028; recent Windows 10 and 11
/// write DumpType 6. Each reads as the same pages, and the same per-tag
/// usage, as the machine's DumpType 5 kernel bitmap dump.
#[test]
fn summary_and_type_6_kernel_dumps_read_as_the_bitmap_dump() {
    use pooldump_core::dump::{DumpType, MapCheck, PageLayout};
    for (build, kind, dump_type, bitmap_at) in [
        (
            NtBuild::Win7_7601,
            DumpKind::Summary,
            DumpType::Summary,
            0x2028,
        ),
        (
            NtBuild::Win11_22000,
            DumpKind::BitmapKernel,
            DumpType::KernelBitmap,
            0x2038,
        ),
    ] {
        let m = Machine::build(&Scenario::small(build, 5));
        let (_d1, t) = common::open(&m, kind);
        let (_d2, bitmap) = common::open(&m, DumpKind::KernelBitmap);
        let what = format!("{build} {kind:?}");
        let h = t.mem.header();
        assert_eq!(h.dump_type, dump_type, "{what}");
        assert!(h.warnings.is_empty(), "{what}: {:?}", h.warnings);
        assert!(
            matches!(h.layout, PageLayout::Bitmap { bitmap_offset, .. } if bitmap_offset == bitmap_at),
            "{what}: {:?}",
            h.layout
        );
        let pages = |t: &Target<pooldump_core::CrashDump>| -> Vec<(u64, Vec<u8>)> {
            t.mem
                .physical_pages()
                .map(|(pfn, bytes)| (pfn.0, bytes.to_vec()))
                .collect()
        };
        assert_eq!(pages(&t), pages(&bitmap), "{what}: pages");
        assert_eq!(actual_rows(&t), actual_rows(&bitmap), "{what}: usage");
        assert_eq!(actual_rows(&t).0, expected_rows(&m), "{what}: truth");
        let check = t.mem.check_with_kdmp_parser();
        match kind {
            // kdmp-parser has no reader for DumpType 2.
            DumpKind::Summary => assert!(
                matches!(&check, MapCheck::Rejected(why) if why.contains("DumpType 2")),
                "{what}: {check:?}"
            ),
            _ => assert!(matches!(check, MapCheck::Same { .. }), "{what}: {check:?}"),
        }
    }
}

#[test]
fn expansion_and_overflow_are_counted() {
    let mut s = Scenario::small(NtBuild::Win11_22000, 4);
    s.hot_tags = false;
    s.tracker.size_log2 = Some(6);
    s.tracker.expansion_capacity = 20;
    s.tags.extend(
        (0..80).map(|i| common::fixed_tag(&format!("E{i:03}"), PoolKind::NonPagedNx, 1, 0x50, 7)),
    );
    let m = Machine::build(&s);
    let (_dir, t) = common::open(&m, DumpKind::Full);
    let (got, overflow) = actual_rows(&t);
    assert_eq!(got, expected_rows(&m));
    let o = m.truth.tracker.overflow.expect("the scenario overflows");
    let ov: Vec<_> = overflow.iter().filter(|r| r.1 == "Nonp").collect();
    assert_eq!(ov.len(), 1);
    assert_eq!((ov[0].2, ov[0].3, ov[0].4), (o.allocs, o.frees, o.bytes));
    let u = t.pool_usage(&TrackerOptions::default()).unwrap();
    assert_eq!(u.tracker.expansion_used, 20);
}

#[test]
fn wrapped_32_bit_counters_give_the_live_count() {
    let mut s = Scenario::small(NtBuild::Win7_7601, 3);
    s.tags
        .push(common::wrapping_tag(PoolKind::NonPaged, 3, 0x30));
    let m = Machine::build(&s);
    let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
    let u = t.pool_usage(&TrackerOptions::default()).unwrap();
    let r = u.rows.iter().find(|r| r.tag.to_string() == "Wrap").unwrap();
    assert_eq!(r.diff, 3);
    assert_eq!(r.allocs, 5_000_000_003 % (1 << 32));
    assert_eq!(u.tracker.counter_bits, 32);
}

#[test]
fn big_pool_matches_the_truth_live_and_freed() {
    for b in NtBuild::ALL {
        let m = Machine::build(&Scenario::small(b, 21));
        let (_dir, t) = common::open(&m, DumpKind::KernelBitmap);
        let bp = t
            .big_pool(&BigPoolOptions {
                include_freed: true,
                ..Default::default()
            })
            .unwrap();
        let mut got: Vec<_> = bp
            .entries
            .iter()
            .map(|e| {
                (
                    e.index,
                    e.va.0,
                    e.tag.to_string(),
                    e.pool_type,
                    e.bytes,
                    e.freed,
                )
            })
            .collect();
        let mut want: Vec<_> = m
            .truth
            .big_pool
            .entries
            .iter()
            .map(|e| (e.index, e.va, e.tag.clone(), e.pool_type, e.bytes, e.freed))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{b}");
        assert_eq!(bp.in_use, Some(m.truth.big_pool.in_use));
        assert!(bp.warnings.is_empty(), "{b}: {:?}", bp.warnings);
        let paged = bp
            .entries
            .iter()
            .filter(|e| e.pool == PoolClass::Paged)
            .count();
        assert!(paged > 0, "{b}: the scenario has paged big allocations");
    }
}
