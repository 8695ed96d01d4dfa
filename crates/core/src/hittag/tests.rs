//! The analyzer on stops of the kit's running machine: every PoolHitTag
//! break and every other break is compared with what the simulated CPU
//! recorded (its shadow stack, the pool call in progress, the size the
//! driver requested), on legacy and segment-heap builds.

use super::*;
use crate::stack::{StackModule, SymbolizerOptions};
use crate::symbols::SymbolPath;
use crate::testutil::KitMemory as Live;
use pooldump_kit::run::{Runtime, StopKind, WorkItem, Workload};
use pooldump_kit::{Machine, NtBuild, Scenario};

fn self_check(limit: u64) -> WorkItem {
    WorkItem {
        name: "self-check".into(),
        driver: "leakydrv.sys".into(),
        kind: 6,
        flags: 0,
        length: limit,
        context: 0,
        every_ms: 7_000,
        start_ms: 3_000,
        burst: 1,
    }
}

fn analyzer(m: &Machine, symbols: &std::path::Path) -> HitAnalyzer<'static> {
    let modules = m
        .truth
        .kernel
        .modules
        .iter()
        .enumerate()
        .map(|(i, md)| StackModule::new(&md.base_name, KernelVa(md.base), md.size as u32, i == 0))
        .collect();
    let sym = Symbolizer::new(SymbolizerOptions {
        symbol_path: SymbolPath::parse(&symbols.display().to_string(), symbols),
        ..SymbolizerOptions::default()
    });
    HitAnalyzer::with_walker(StackWalker::from_modules(modules), sym)
}

#[test]
fn every_stop_is_what_the_cpu_did() {
    for build in [
        NtBuild::Win10_19041,
        NtBuild::Win7_7601,
        NtBuild::Win10_17763,
        NtBuild::Win11_22000,
    ] {
        let mut m = Machine::build(&Scenario::small(build, 21));
        let dir = tempfile::tempdir().unwrap();
        m.write_symbol_store(dir.path()).unwrap();
        let mut w = Workload::leak();
        w.items.push(self_check(0));
        let mut rt = Runtime::new(&mut m, w);
        let hit_tag = m.sym_va("PoolHitTag").unwrap();
        m.asp
            .write_u32(&mut m.mem, hit_tag, u32::from_le_bytes(*b"Leak"));
        let mut a = analyzer(&m, dir.path());
        let mut table = HitTable::default();
        let (mut pool, mut other) = (0, 0);
        while let Some(stop) = rt.advance(&mut m, 90 * 1_000_000_000) {
            assert!(
                matches!(stop.kind, StopKind::Breakpoint),
                "{build:?}: {stop:?}"
            );
            let cpu = stop.cpu as usize;
            let truth = rt.truth.hits.last().unwrap().clone();
            let regs = Registers::from_context(&rt.context(cpu)).unwrap();
            let hit = a.analyze(&Live(&m), &regs);
            table.add(&hit);
            // The stack is the CPU's.
            let got: Vec<(u64, u64)> = hit
                .trace
                .frames
                .iter()
                .map(|f| (f.pc.0, f.child_sp.0))
                .collect();
            let want: Vec<(u64, u64)> = truth.frames.iter().map(|f| (f.pc, f.child_sp)).collect();
            assert_eq!(got, want, "{build:?}: {}", hit.trace.end);
            match (&hit.kind, truth.pool) {
                (HitKind::Pool { call, .. }, Some((op, tag, bytes, site))) => {
                    pool += 1;
                    assert_eq!(tag & 0x7FFF_FFFF, u32::from_le_bytes(*b"Leak"));
                    let want = match op {
                        pooldump_kit::run::PoolOp::Alloc => PoolCall::Alloc,
                        pooldump_kit::run::PoolOp::Free => PoolCall::Free,
                    };
                    assert_eq!(*call, want, "{build:?}");
                    let site = site.unwrap();
                    let base = m.truth.kernel.module(&site.module).unwrap().base;
                    let k = hit.site.unwrap();
                    assert_eq!(hit.trace.frames[k].pc.0, base + site.rva, "{build:?}");
                    if want == PoolCall::Alloc {
                        assert_eq!(hit.size, Some(bytes), "{build:?} at {}", hit.symbols[k]);
                    }
                }
                (HitKind::Other { reason }, None) => {
                    other += 1;
                    assert!(reason.contains("DbgBreakPoint"), "{build:?}: {reason}");
                }
                (k, t) => panic!("{build:?}: analysed {k:?}, the CPU did {t:?}"),
            }
            rt.resume_past_int3(&m, cpu);
        }
        assert!(
            pool > 50 && other > 5,
            "{build:?}: {pool} pool stops, {other} others"
        );
        let t = table.sorted();
        assert_eq!(t.pool_hits, pool);
        // The three allocation sites of 'Leak' and its two free sites.
        let names: Vec<&str> = t.sites.iter().map(|s| s.site.as_str()).collect();
        for want in [
            "leakydrv!LeakOneRecord+",
            "leakydrv!LkQueueWork+",
            "leakydrv!LkBurstAllocate",
            "leakydrv!LkTrimCache+",
            "leakydrv!LkWorkerRoutine+",
        ] {
            assert!(
                names.iter().any(|n| n.starts_with(want)),
                "{build:?}: {want} not in {names:?}"
            );
        }
    }
}

/// NDIS's and the filter manager's pool routines call nt's for their
/// caller: a stack `nt, nt, ndis!NdisAllocateMemoryWithTagPriority,
/// miniport` has the miniport as the caller, and the wrapper's name as
/// the routine; a frame of another module that is no pool routine is the
/// caller.
#[test]
fn another_modules_pool_routine_is_not_the_caller() {
    assert_eq!(
        first_caller([(true, false), (true, false), (false, true), (false, false)]),
        Some(3)
    );
    assert_eq!(
        first_caller([(true, false), (false, false), (false, true)]),
        Some(1)
    );
    assert_eq!(first_caller([(true, false), (false, true)]), None);
    assert_eq!(first_caller([(true, false), (true, false)]), None);
    for (name, call) in [
        ("NdisAllocateMemoryWithTagPriority", PoolCall::Alloc),
        ("NdisFreeMemoryWithTag", PoolCall::Free),
        ("FltAllocatePoolAlignedWithTag", PoolCall::Alloc),
        ("FltFreePoolAlignedWithTag", PoolCall::Free),
        ("ExAllocatePool2", PoolCall::Alloc),
    ] {
        assert_eq!(pool_routine(name), Some(call), "{name}");
    }
    // A lookaside list's initialiser allocates nothing itself.
    assert_eq!(pool_routine("ExInitializeNPagedLookasideList"), None);
    assert_eq!(pool_routine("NdisAllocateNetBufferListPool"), None);
    assert_eq!(size_register("FltAllocatePoolAlignedWithTag"), Register::R8);
    assert_eq!(
        size_register("NdisAllocateMemoryWithTagPriority"),
        Register::RDX
    );
}

/// KMDF: kmdfdrv.sys allocates and frees through the framework's function
/// table, so two Wdf01000 frames stand between nt's and the driver's; the
/// framework also allocates with the driver's DriverPoolTag for requests
/// it dispatches from nt's worker thread. Every stop's site is the one the
/// CPU's stack says asked: the driver's frame where the driver called the
/// framework, the framework's where nt did.
#[test]
fn kmdf_drivers_calls_through_the_framework_are_their_own() {
    for build in [NtBuild::Win10_19041, NtBuild::Win10_17763] {
        let mut s = Scenario::small(build, 5);
        s.kmdf = true;
        let mut m = Machine::build(&s);
        let dir = tempfile::tempdir().unwrap();
        m.write_symbol_store(dir.path()).unwrap();
        let mut rt = Runtime::new(&mut m, Workload::kmdf());
        let hit_tag = m.sym_va("PoolHitTag").unwrap();
        m.asp
            .write_u32(&mut m.mem, hit_tag, u32::from_le_bytes(*b"KmDr"));
        let mut a = analyzer(&m, dir.path());
        let mut table = HitTable::default();
        while let Some(stop) = rt.advance(&mut m, 30 * 1_000_000_000) {
            let cpu = stop.cpu as usize;
            let truth = rt.truth.hits.last().unwrap().clone();
            let regs = Registers::from_context(&rt.context(cpu)).unwrap();
            let hit = a.analyze(&Live(&m), &regs);
            table.add(&hit);
            let (HitKind::Pool { call, .. }, Some((_, _, bytes, Some(site)))) =
                (&hit.kind, truth.pool.clone())
            else {
                panic!(
                    "{build:?}: analysed {:?}, the CPU did {:?}",
                    hit.kind, truth.pool
                );
            };
            let base = m.truth.kernel.module(&site.module).unwrap().base;
            let k = hit.site.unwrap();
            assert_eq!(hit.trace.frames[k].pc.0, base + site.rva, "{build:?}");
            // The bytes the framework asked nt for: the driver's size (a
            // stack argument of its call through the table) plus the
            // object's header, which the framework's allocator adds to
            // what it was passed.
            if *call == PoolCall::Alloc {
                assert_eq!(hit.size, Some(bytes), "{build:?} at {}", hit.symbols[k]);
            }
            rt.resume_past_int3(&m, cpu);
        }
        let t = table.sorted();
        let rows: Vec<(&str, u64, u64, Option<&str>)> = t
            .sites
            .iter()
            .map(|s| (s.site.as_str(), s.allocs, s.frees, s.through.as_deref()))
            .collect();
        let find = |prefix: &str| {
            rows.iter()
                .find(|r| r.0.starts_with(prefix))
                .unwrap_or_else(|| panic!("{build:?}: no {prefix} in {rows:?}"))
        };
        // The driver's calls, through the framework's entries.
        let read = find("kmdfdrv!KmEvtIoRead+");
        assert!(read.1 > 10 && read.2 == 0, "{build:?}: {read:?}");
        assert!(
            read.3
                .is_some_and(|t| t.starts_with("Wdf01000!imp_WdfMemoryCreate+")),
            "{build:?}: {read:?}"
        );
        let delete = find("kmdfdrv!KmFreeOldest+");
        assert!(delete.1 == 0 && delete.2 > 5, "{build:?}: {delete:?}");
        assert!(
            delete
                .3
                .is_some_and(|t| t.starts_with("Wdf01000!imp_WdfObjectDelete+")),
            "{build:?}: {delete:?}"
        );
        // The framework's own requests.
        let own = find("Wdf01000!FxPoolAllocate+");
        assert!(own.1 > 10 && own.3.is_none(), "{build:?}: {own:?}");
        assert!(find("Wdf01000!FxObjectFree+").2 > 10, "{build:?}");
        assert_eq!(rows.len(), 4, "{build:?}: {rows:?}");
    }
}
