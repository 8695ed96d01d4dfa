//! The x64 unwinder (crates/core/src/stack) on a fuzzed stack: a real
//! driver image (the kit's committed drivers, with .pdata and unwind
//! infos) mapped at a kernel address with fuzzed bytes patched into it, a
//! fuzzed stack, fuzzed registers and CONTEXT; optionally the image also
//! comes as a (patched) file from an image locator, as the symbol path
//! serves it.
use std::sync::Arc;

use pooldump_core::memory::Translation;
use pooldump_core::stack::{
    ImageFile, ImageLocator, ImageRequest, ReadStats, Reg, Registers, StackModule, StackWalker,
    WalkLimits,
};
use pooldump_core::{KernelVa, Memory, MemoryError, PhysAddr};

const DRIVERS: [&[u8]; 3] = [
    include_bytes!("../../../testdata/drivers/leakydrv.sys"),
    include_bytes!("../../../testdata/drivers/fsfilt.sys"),
    include_bytes!("../../../testdata/drivers/netsim.sys"),
];
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

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let s = self.take(2);
        b[..s.len()].copy_from_slice(s);
        u16::from_le_bytes(b)
    }
    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let s = self.take(4);
        b[..s.len()].copy_from_slice(s);
        u32::from_le_bytes(b)
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let s = self.take(8);
        b[..s.len()].copy_from_slice(s);
        u64::from_le_bytes(b)
    }
    fn patches(&mut self) -> Vec<(u32, u8)> {
        let n = usize::from(self.u8());
        (0..n).map(|_| (self.u32(), self.u8())).collect()
    }
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

struct Mem {
    image: Vec<u8>,
    stack: Vec<u8>,
}

impl Mem {
    fn slice(&self, va: u64) -> Option<(&[u8], usize)> {
        if va >= BASE && va - BASE < self.image.len() as u64 {
            return Some((&self.image, (va - BASE) as usize));
        }
        if va >= STACK && va - STACK < self.stack.len() as u64 {
            return Some((&self.stack, (va - STACK) as usize));
        }
        None
    }
}

impl Memory for Mem {
    fn describe(&self) -> String {
        "fuzzed stack".into()
    }
    fn kernel_dtb(&self) -> PhysAddr {
        PhysAddr(0x1AD000)
    }
    fn read_physical(&self, pa: PhysAddr, _: &mut [u8]) -> Result<(), MemoryError> {
        Err(MemoryError::not_in_source(pa))
    }
    fn translate(&self, va: KernelVa) -> Result<Translation, MemoryError> {
        Err(MemoryError::page_not_present(va))
    }
    fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), MemoryError> {
        let n = self.read_virtual_partial(va, buf)?;
        if n < buf.len() {
            return Err(MemoryError::page_not_present(KernelVa(
                va.0.wrapping_add(n as u64),
            )));
        }
        Ok(())
    }
    fn read_virtual_partial(&self, va: KernelVa, buf: &mut [u8]) -> Result<usize, MemoryError> {
        let Some((src, at)) = self.slice(va.0) else {
            return Err(MemoryError::page_not_present(va));
        };
        let n = buf.len().min(src.len() - at);
        buf[..n].copy_from_slice(&src[at..at + n]);
        Ok(n)
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

fn patch(bytes: &mut [u8], patches: &[(u32, u8)]) {
    if bytes.is_empty() {
        return;
    }
    for &(at, b) in patches.iter().take(256) {
        let i = at as usize % bytes.len();
        bytes[i] = b;
    }
}

pub fn run(data: &[u8]) {
    let input = Input::decode(data);
    let file = DRIVERS[input.driver as usize % DRIVERS.len()];
    // The image as the loader maps it, from the unpatched file.
    let Ok(parsed) = ImageFile::parse("driver.sys", file.to_vec()) else {
        return;
    };
    let size = parsed.size_of_image().min(1 << 20);
    let mut image = vec![0u8; size as usize];
    for page in (0..size).step_by(0x1000) {
        let n = (size - page).min(0x1000) as usize;
        let _ = parsed.read_rva(page, &mut image[page as usize..page as usize + n]);
    }
    patch(&mut image, &input.patches);
    let mut stack = input.stack;
    stack.truncate(0x4000);
    let mem = Mem { image, stack };

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
    let _ = walker.import_directory(&mem, 0, &mut stats);
    let _ = walker.sections(&mem, 0, &mut stats);
}
