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

/// Resume as WinDbg does: step over a hard-coded int3.
fn step_over(m: &Machine, rt: &mut Runtime, cpu: usize) {
    let mut ctx = rt.context(cpu);
    let rip = u64::from_le_bytes(ctx[0xF8..0x100].try_into().unwrap());
    let mut b = [0u8; 1];
    m.asp.read(&m.mem, rip, &mut b);
    if b[0] == 0xCC {
        ctx[0xF8..0x100].copy_from_slice(&(rip + 1).to_le_bytes());
        assert!(rt.set_context(cpu, &ctx));
    }
    rt.resume();
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
            step_over(&m, &mut rt, s.cpu as usize);
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
