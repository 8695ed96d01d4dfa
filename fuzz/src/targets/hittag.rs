//! PoolHitTag analysis (crates/core/src/hittag) on a fuzzed stop: three
//! modules mapped from committed images (the kit's 19041 nt, KMDF's
//! framework Wdf01000.sys and drivers, chosen by the input) at fuzzed
//! bases, fuzzed bytes patched into the third, a fuzzed stack at a fuzzed
//! address and fuzzed registers. What a stop's analysis does with them:
//! the stack walk, the frame that called the pool and the site past
//! KMDF's framework, the caller's code decoded from its function's start,
//! its import table, and the size argument traced through up to two
//! callers' code (each caller's call target read from memory); then the
//! table that counts hits. A second stop on the same analyzer goes
//! through its caches.
//!
//! `seedgen hittag-stops` writes real stops of the kit's KMDF machine in
//! this format, so the analysis starts from stacks that reach the drivers.
use pooldump_core::KernelVa;
use pooldump_core::hittag::{HitAnalyzer, HitTable};
use pooldump_core::stack::{
    Reg, Registers, StackModule, StackWalker, Symbolizer, SymbolizerOptions, WalkLimits,
};

use super::super::{Bytes, Regions, map_image, patch};

/// The images a module may be mapped from.
pub const IMAGES: [(&str, &[u8]); 4] = [
    (
        "ntoskrnl.exe",
        include_bytes!("../../../testdata/nt/win10-19041/ntoskrnl.exe"),
    ),
    (
        "Wdf01000.sys",
        include_bytes!("../../../testdata/drivers/Wdf01000.sys"),
    ),
    (
        "kmdfdrv.sys",
        include_bytes!("../../../testdata/drivers/kmdfdrv.sys"),
    ),
    (
        "leakydrv.sys",
        include_bytes!("../../../testdata/drivers/leakydrv.sys"),
    ),
];

/// The modules' names, in module-list order (nt first), whatever image
/// each is mapped from.
pub const NAMES: [&str; 3] = ["ntoskrnl.exe", "Wdf01000.sys", "kmdfdrv.sys"];

/// The input, decoded by hand (fixed-width fields, then length-prefixed
/// parts, then the stack).
pub struct Input {
    /// Two bits per module: which of [`IMAGES`] it is mapped from.
    pub picks: u8,
    /// Each module's base.
    pub bases: [u64; 3],
    /// Where the stack bytes are.
    pub stack_va: u64,
    /// A CONTEXT record (the stop's registers).
    pub context: Vec<u8>,
    /// Bytes patched into the third module's image.
    pub patches: Vec<(u32, u8)>,
    /// The stack's bytes.
    pub stack: Vec<u8>,
}

impl Input {
    pub fn decode(data: &[u8]) -> Self {
        let mut b = Bytes(data);
        let picks = b.u8();
        let bases = [b.u64(), b.u64(), b.u64()];
        let stack_va = b.u64();
        let n = usize::from(b.u16());
        let context = b.take(n).to_vec();
        let patches = b.patches();
        Self {
            picks,
            bases,
            stack_va,
            context,
            patches,
            stack: b.0.to_vec(),
        }
    }

    /// The bytes that decode to `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.picks];
        for v in self.bases.iter().chain([&self.stack_va]) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.context.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.context);
        out.push(self.patches.len() as u8);
        for &(at, v) in &self.patches {
            out.extend_from_slice(&at.to_le_bytes());
            out.push(v);
        }
        out.extend_from_slice(&self.stack);
        out
    }
}

pub fn run(data: &[u8]) {
    let input = Input::decode(data);
    let Ok(regs) = Registers::from_context(&input.context) else {
        return;
    };
    let mut regions = Vec::new();
    let mut modules = Vec::new();
    for (i, (name, base)) in NAMES.iter().zip(input.bases).enumerate() {
        let file = IMAGES[usize::from(input.picks >> (2 * i)) % IMAGES.len()].1;
        let Some((size, mut image)) = map_image(file) else {
            return;
        };
        if i == 2 {
            patch(&mut image, &input.patches);
        }
        modules.push(StackModule::new(name, KernelVa(base), size, i == 0));
        regions.push((base, image));
    }
    let mut stack = input.stack;
    stack.truncate(0x8000);
    regions.push((input.stack_va, stack));
    let mem = Regions {
        regions,
        what: "fuzzed stop",
    };
    let walker = StackWalker::from_modules(modules).with_limits(WalkLimits {
        max_frames: 64,
        max_stack_bytes: 0x8000,
        max_frame_size: 0x10_0000,
    });
    let mut a = HitAnalyzer::with_walker(walker, Symbolizer::new(SymbolizerOptions::default()));
    let mut table = HitTable::default();
    let hit = a.analyze(&mem, &regs);
    table.add(&hit);
    // The same stop again, through the analyzer's caches, and one a frame
    // further up the stack.
    table.add(&a.analyze(&mem, &regs));
    if let Some(f) = hit.trace.frames.get(1) {
        let mut up = regs;
        up.rip = f.pc.0;
        up.set(Reg::Rsp, Some(f.child_sp.0));
        table.add(&a.analyze(&mem, &up));
    }
    let _ = format!("{:?}", table.sorted());
}
