//! The analyzer on stops of the kit's running machine: every PoolHitTag
//! break and every other break is compared with what the simulated CPU
//! recorded (its shadow stack, the pool call in progress, the size the
//! driver requested), on legacy and segment-heap builds.

use super::*;
use crate::addr::PhysAddr;
use crate::memory::MemoryError;
use crate::stack::{StackModule, SymbolizerOptions};
use crate::symbols::SymbolPath;
use pooldump_kit::run::{Runtime, StopKind, WorkItem, Workload};
use pooldump_kit::{Machine, NtBuild, Scenario};

/// The running machine's memory as pooldump reads it.
struct Live<'a>(&'a Machine);

impl Memory for Live<'_> {
    fn describe(&self) -> String {
        "the kit's running machine".into()
    }
    fn kernel_dtb(&self) -> PhysAddr {
        PhysAddr(self.0.truth.kernel.dtb)
    }
    fn read_physical(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        if !self.0.mem.is_ram(pa.0 >> 12) {
            return Err(MemoryError::not_in_source(pa));
        }
        self.0.mem.read(pa.0, buf);
        Ok(())
    }
}

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
