//! `seedgen hittag-stops OUT`: real PoolHitTag stops of the kit's KMDF
//! machine, in the hittag target's input format.

use std::path::Path;

use pooldump_core::stack::Registers;
use pooldump_fuzz::targets::hittag::{Input, NAMES};
use pooldump_kit::run::{Runtime, Workload};
use pooldump_kit::{Machine, NtBuild, Scenario};

/// Stops written at most.
const STOPS: usize = 16;
/// Stack bytes kept per stop at most (its mapped pages from RSP up).
const STACK_BYTES: u64 = 0x3000;

pub fn stops(out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut s = Scenario::small(NtBuild::Win10_19041, 5);
    s.kmdf = true;
    let mut m = Machine::build(&s);
    let mut rt = Runtime::new(&mut m, Workload::kmdf());
    let hit = m.sym_va("PoolHitTag").ok_or("nt has no PoolHitTag")?;
    m.asp
        .write_u32(&mut m.mem, hit, u32::from_le_bytes(*b"KmDr"));
    let mut bases = [0u64; 3];
    for (b, name) in bases.iter_mut().zip(NAMES) {
        *b = m
            .truth
            .kernel
            .module(name)
            .ok_or_else(|| format!("the KMDF machine has no {name}"))?
            .base;
    }
    let mut written = 0;
    while let Some(stop) = rt.advance(&mut m, 20 * 1_000_000_000) {
        let cpu = stop.cpu as usize;
        if written < STOPS {
            let context = rt.context(cpu);
            let regs = Registers::from_context(&context).map_err(|e| e.to_string())?;
            let rsp = regs.rsp();
            // The stack's mapped pages from RSP up.
            let mut stack = Vec::new();
            let mut va = rsp;
            while (va - rsp) < STACK_BYTES && m.asp.translate(&m.mem, va).is_some() {
                let n = (0x1000 - (va & 0xFFF)) as usize;
                let mut page = vec![0u8; n];
                m.asp.read(&m.mem, va, &mut page);
                stack.extend_from_slice(&page);
                va += n as u64;
            }
            let input = Input {
                // nt, Wdf01000.sys and kmdfdrv.sys from their own images.
                picks: 0x24,
                bases,
                stack_va: rsp,
                context,
                patches: Vec::new(),
                stack,
            };
            let path = out.join(format!("kit-kmdf-stop{written}"));
            std::fs::write(&path, input.encode())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            written += 1;
        }
        rt.resume_past_int3(&m, cpu);
    }
    if written == 0 {
        return Err("the KMDF machine never stopped on 'KmDr'".into());
    }
    Ok(())
}
