use super::*;
use crate::{NtBuild, Scenario};

fn run_minutes(build: NtBuild, minutes: u64) -> (Machine, Runtime) {
    let mut m = Machine::build(&Scenario::small(build, 3));
    let mut rt = Runtime::new(&mut m, Workload::leak());
    let stop = rt.advance(&mut m, minutes * 60 * 1_000_000_000);
    assert_eq!(stop, None, "{:?} {:?}", rt.truth.invalid, rt.truth.bugcheck);
    (m, rt)
}

#[test]
fn the_leak_workload_runs_on_every_build() {
    for b in &NtBuild::ALL {
        let (_, rt) = run_minutes(*b, 2);
        assert!(rt.truth.invalid.is_empty(), "{b:?}: {:?}", rt.truth.invalid);
        eprintln!(
            "{b:?}: {} instructions, {:?}",
            rt.truth.instructions, rt.truth.tags
        );
    }
}

#[test]
fn pool_hit_tag_stops_the_machine_in_every_build() {
    for b in &NtBuild::ALL {
        let mut m = Machine::build(&Scenario::small(*b, 3));
        let mut rt = Runtime::new(&mut m, Workload::leak());
        let hit = m.sym_va("PoolHitTag").unwrap();
        m.asp
            .write_u32(&mut m.mem, hit, u32::from_le_bytes(*b"Leak"));
        let end = 60 * 1_000_000_000;
        let mut stops = 0;
        while let Some(s) = rt.advance(&mut m, end) {
            assert_eq!(s.kind, StopKind::Breakpoint, "{b:?}");
            stops += 1;
            rt.resume_past_int3(&m, s.cpu as usize);
        }
        let leak = u32::from_le_bytes(*b"Leak");
        let (allocs, frees, _) = rt.truth.tags[&(leak, false)];
        let pool_hits = rt.truth.hits.iter().filter(|h| h.pool_hit_tag).count() as u64;
        eprintln!("{b:?}: {stops} stops, {pool_hits} PoolHitTag, {allocs} allocs {frees} frees");
        assert_eq!(pool_hits, allocs + frees, "{b:?}");
        for h in rt.truth.hits.iter().filter(|h| h.pool_hit_tag) {
            let site = h.pool.as_ref().unwrap().3.as_ref().unwrap();
            assert_eq!(site.module, "leakydrv.sys", "{b:?} {h:?}");
        }
    }
}

/// A small machine of `build` whose driver touches `va` in a system
/// thread, and the bug check that follows.
fn crash_touching(build: NtBuild, va: u64) -> (Machine, BugCheck) {
    let mut m = Machine::build(&Scenario::small(build, 5));
    let bc = m
        .crash_with(WorkItem::touch(va), 10_000_000_000)
        .expect("a bug check");
    (m, bc)
}

#[test]
fn driver_faults_bug_check_as_windows_does() {
    for b in &NtBuild::ALL {
        // A NULL pointer in a system thread: an access violation nobody
        // handles, SYSTEM_THREAD_EXCEPTION_NOT_HANDLED with the records.
        let (m, bc) = crash_touching(*b, 0);
        assert_eq!(bc.code, 0x7E, "{b:?} {bc:?}");
        // ExceptionCode is a LONG: WinDbg shows the parameter as ffffffffc0000005.
        assert_eq!(bc.parameters[0], 0xFFFF_FFFF_C000_0005);
        let drv = m.truth.kernel.module("leakydrv.sys").unwrap().base;
        let touch_rva = crate::drivers::all()[0].info.functions["LkTouch"];
        assert!(
            (drv + touch_rva..drv + touch_rva + 0x20).contains(&bc.parameters[1]),
            "{b:?}: faulting address {:#x}",
            bc.parameters[1]
        );
        // The context record holds the faulting RIP and RSP.
        let mut ctx = vec![0u8; CONTEXT_LEN];
        m.asp.read(&m.mem, bc.parameters[3], &mut ctx);
        let rip = u64::from_le_bytes(ctx[0xF8..0x100].try_into().unwrap());
        assert_eq!(rip, bc.parameters[1]);
        let frame = bc
            .frames
            .iter()
            .find(|f| f.pc == rip)
            .expect("the faulting frame");
        let rsp = u64::from_le_bytes(ctx[0x98..0xA0].try_into().unwrap());
        assert_eq!(rsp, frame.child_sp);
        assert_eq!(m.header.bugcheck_code, 0x7E);

        // An unmapped system address: PAGE_FAULT_IN_NONPAGED_AREA.
        let (_, bc) = crash_touching(*b, 0xFFFF_8000_0000_1000);
        assert_eq!(bc.code, 0x50, "{b:?}");
        assert_eq!(bc.parameters[0], 0xFFFF_8000_0000_1000);
        assert_eq!(bc.parameters[1], 1, "a write");
    }
}

/// A small machine of build `b` set up by `set`, which loads `module`,
/// ready to run `workload`.
fn running(
    b: NtBuild,
    seed: u64,
    set: impl Fn(&mut Scenario),
    workload: Workload,
    module: &str,
) -> (Machine, Runtime) {
    let mut s = Scenario::small(b, seed);
    set(&mut s);
    let mut m = Machine::build(&s);
    assert!(m.truth.kernel.module(module).is_some(), "{b:?}: {module}");
    let rt = Runtime::new(&mut m, workload);
    (m, rt)
}

/// Set PoolHitTag to `tag` and run until `secs` simulated seconds, past
/// every break; the tag's ULONG.
fn watch_until(m: &mut Machine, rt: &mut Runtime, tag: &str, secs: u64) -> u32 {
    let hit = m.sym_va("PoolHitTag").unwrap();
    let tag = u32::from_le_bytes(tag.as_bytes().try_into().unwrap());
    m.asp.write_u32(&mut m.mem, hit, tag);
    while let Some(st) = rt.advance(m, secs * 1_000_000_000) {
        assert_eq!(st.kind, StopKind::Breakpoint);
        rt.resume_past_int3(m, st.cpu as usize);
    }
    tag
}

/// The network pair: nicmini.sys allocates through ndis.sys's exported
/// routine, which calls nt's pool; PoolHitTag stops name the miniport's
/// frame as the site (ndis.sys allocates for its caller), allocations and
/// frees alike, on both allocators.
#[test]
fn the_miniport_allocates_through_ndis() {
    for b in [NtBuild::Win10_19041, NtBuild::Win10_17763] {
        let (mut m, mut rt) = running(b, 3, |s| s.ndis = true, Workload::network(), "ndis.sys");
        let tag = watch_until(&mut m, &mut rt, "NmRx", 30);
        let (allocs, frees, bytes) = rt.truth.tags[&(tag, false)];
        assert!(allocs > frees && frees > 10, "{b:?}: {allocs} {frees}");
        // Charged bytes: each block with its header, rounded.
        assert!(bytes >= (allocs - frees) as i64 * 0x5F8, "{b:?}: {bytes}");
        let mut ops = std::collections::BTreeSet::new();
        for h in rt.truth.hits.iter().filter(|h| h.pool_hit_tag) {
            let (op, _, _, site) = h.pool.clone().unwrap();
            assert_eq!(site.unwrap().module, "nicmini.sys", "{b:?} {h:?}");
            ops.insert(format!("{op:?}"));
        }
        assert_eq!(ops.len(), 2, "{b:?}: {ops:?}");
    }
}

/// The KMDF pair: kmdfdrv.sys allocates and frees through the framework's
/// function table (two framework frames, then the driver's), and the
/// framework allocates with the driver's DriverPoolTag for requests it
/// dispatches from nt's worker thread. The site is the driver's frame
/// where the driver called the framework, the framework's where nt did.
#[test]
fn the_kmdf_driver_allocates_through_the_framework() {
    for b in [NtBuild::Win10_19041, NtBuild::Win10_17763] {
        let (mut m, mut rt) = running(b, 5, |s| s.kmdf = true, Workload::kmdf(), "Wdf01000.sys");
        for (secs, tag, want) in [
            (
                30,
                "KmDr",
                &[
                    ("Alloc", "Wdf01000.sys"),
                    ("Alloc", "kmdfdrv.sys"),
                    ("Free", "Wdf01000.sys"),
                    ("Free", "kmdfdrv.sys"),
                ][..],
            ),
            (
                60,
                "KmBf",
                &[("Alloc", "kmdfdrv.sys"), ("Free", "kmdfdrv.sys")][..],
            ),
        ] {
            rt.truth.hits.clear();
            let tag = watch_until(&mut m, &mut rt, tag, secs);
            let (allocs, frees, _) = rt.truth.tags[&(tag, false)];
            assert!(allocs > frees && frees > 10, "{b:?}: {allocs} {frees}");
            let mut seen = std::collections::BTreeSet::new();
            for h in rt.truth.hits.iter().filter(|h| h.pool_hit_tag) {
                let (op, _, _, site) = h.pool.clone().unwrap();
                seen.insert((format!("{op:?}"), site.unwrap().module));
            }
            let want: std::collections::BTreeSet<(String, String)> = want
                .iter()
                .map(|(o, m)| (o.to_string(), m.to_string()))
                .collect();
            assert_eq!(seen, want, "{b:?}");
        }
    }
}
