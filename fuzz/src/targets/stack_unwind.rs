//! The x64 unwinder (crates/core/src/stack) on a fuzzed stack: a real
//! driver image (the kit's committed drivers, with .pdata and unwind
//! infos) mapped at a kernel address with fuzzed bytes patched into it, a
//! fuzzed stack, fuzzed registers and CONTEXT; optionally the image also
//! comes as a (patched) file from an image locator, as the symbol path
//! serves it.
use std::sync::Arc;

use pooldump_core::KernelVa;
use pooldump_core::stack::{
    DataDirectory, ImageFile, ImageLocator, ImageRequest, ReadStats, Reg, Registers, StackModule,
    StackWalker, WalkLimits,
};

use super::super::{Bytes, DRIVERS, Regions, map_image, patch};

const BASE: u64 = 0xFFFF_F800_1000_0000;
const STACK: u64 = 0xFFFF_D000_0001_0000;

/// The input, decoded by hand from the bytes (fixed-width fields, then
/// length-prefixed parts) so the harness needs no `arbitrary`.
struct Input {
    driver: u8,
    rip_rva: u32,
    rsp_offset: u16,
    nonvolatiles: [u64; 4],
    context: Option<Vec<u8>>,
    locator: bool,
    patches: Vec<(u32, u8)>,
    file_patches: Vec<(u32, u8)>,
    stack: Vec<u8>,
}

impl Input {
    fn decode(data: &[u8]) -> Self {
        let mut b = Bytes(data);
        let driver = b.u8();
        let flags = b.u8();
        let rip_rva = b.u32();
        let rsp_offset = b.u16();
        let nonvolatiles = [b.u64(), b.u64(), b.u64(), b.u64()];
        let context = (flags & 1 == 1).then(|| {
            let n = usize::from(b.u16());
            b.take(n).to_vec()
        });
        let patches = b.patches();
        let file_patches = b.patches();
        Self {
            driver,
            rip_rva,
            rsp_offset,
            nonvolatiles,
            context,
            locator: flags & 2 == 2,
            patches,
            file_patches,
            stack: b.0.to_vec(),
        }
    }
}

struct Locator(Arc<[u8]>);

impl ImageLocator for Locator {
    fn locate(&self, req: &ImageRequest<'_>) -> Result<Option<ImageFile>, String> {
        let _ = req.store_key();
        ImageFile::parse("fuzz.sys", Arc::clone(&self.0))
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

pub fn run(data: &[u8]) {
    let input = Input::decode(data);
    let file = DRIVERS[input.driver as usize % DRIVERS.len()].1;
    // The image as the loader maps it, from the unpatched file.
    let Some((size, mut image)) = map_image(file) else {
        return;
    };
    let size = size.min(1 << 20);
    patch(&mut image, &input.patches);
    let mut stack = input.stack;
    stack.truncate(0x4000);
    let mem = Regions {
        regions: vec![(BASE, image), (STACK, stack)],
        what: "fuzzed stack",
    };

    let mut walker = StackWalker::from_modules(vec![StackModule::new(
        "driver.sys",
        KernelVa(BASE),
        size,
        false,
    )])
    .with_limits(WalkLimits {
        max_frames: 64,
        max_stack_bytes: 0x8000,
        max_frame_size: 0x10_0000,
    });
    if input.locator {
        let mut f = file.to_vec();
        patch(&mut f, &input.file_patches);
        walker = walker.with_image_locator(Arc::new(Locator(f.into())));
    }
    let rip = BASE + u64::from(input.rip_rva % size.max(1));
    let mut regs = Registers::new(rip, STACK + u64::from(input.rsp_offset));
    if let Some(ctx) = &input.context
        && let Ok(r) = Registers::from_context(ctx)
    {
        regs = r;
        regs.rip = rip;
    }
    for (r, v) in [Reg::Rbx, Reg::Rbp, Reg::Rsi, Reg::Rdi]
        .into_iter()
        .zip(input.nonvolatiles)
    {
        regs.set(r, Some(v));
    }
    let trace = walker.walk(&mem, &regs);
    let _ = format!("{}", trace.end);
    let mut stats = ReadStats::default();
    let _ = walker.runtime_functions(&mem, 0, &mut stats);
    let _ = walker.unwind_summaries(&mem, 0);
    let _ = walker.function_at(&mem, 0, input.rip_rva, &mut stats);
    let _ = walker.chain_root(&mem, 0, input.rip_rva, &mut stats);
    for which in [DataDirectory::Import, DataDirectory::LoadConfig] {
        let _ = walker.data_directory(&mem, 0, which, &mut stats);
    }
    let _ = walker.sections(&mem, 0, &mut stats);
}
