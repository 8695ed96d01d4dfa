//! The fuzz harnesses (`targets::<name>::run(bytes)`), one per target in
//! fuzz_targets/, and the memory models they share: hostile bytes
//! presented as physical memory (so the page-table walk reads them) or as
//! kernel virtual memory (so the pool walkers read them).
//!
//! Plain Rust on purpose (no libFuzzer, no `arbitrary`): the root test
//! `tests/fuzz_regressions.rs` includes this file and replays every
//! committed crasher through the same harness on stable.

pub mod targets {
    pub mod cab_store;
    pub mod callsites;
    pub mod dump_open;
    pub mod hittag;
    pub mod isf;
    pub mod kdnet_datagram;
    pub mod kdnet_packet;
    pub mod page_walk;
    pub mod pdb_layouts;
    pub mod pool_walkers;
    pub mod pooltag;
    pub mod relabel_map;
    pub mod snapshot_json;
    pub mod stack_unwind;
    pub mod text_import;
    pub mod triage;
}

use pooldump_core::memory::{PageSize, Translation};
use pooldump_core::{KernelVa, Memory, MemoryError, PhysAddr, PxeLevel};

pub const PAGE: usize = 4096;

/// Physical memory made of the input's 4 KiB pages: frame `n` is page
/// `n % pages` for `n < frames`, and absent above. Every entry the walk
/// follows lands in fuzzed bytes, loops and self-maps included.
pub struct PagedPhys<'a> {
    pub data: &'a [u8],
    pub frames: u64,
    pub dtb: PhysAddr,
}

impl<'a> PagedPhys<'a> {
    pub fn new(data: &'a [u8], frames: u64, dtb_pfn: u64) -> Self {
        Self {
            data,
            frames,
            dtb: PhysAddr(dtb_pfn << 12),
        }
    }

    fn pages(&self) -> u64 {
        (self.data.len() / PAGE) as u64
    }
}

impl Memory for PagedPhys<'_> {
    fn describe(&self) -> String {
        "fuzzed physical memory".into()
    }
    fn kernel_dtb(&self) -> PhysAddr {
        self.dtb
    }
    fn read_physical(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        let absent = || MemoryError::not_in_source(pa);
        let pages = self.pages();
        let mut done = 0usize;
        while done < buf.len() {
            let cur = pa.0.checked_add(done as u64).ok_or_else(absent)?;
            let pfn = cur / PAGE as u64;
            if pages == 0 || pfn >= self.frames {
                return Err(absent());
            }
            let page = (pfn % pages) as usize * PAGE;
            let at = (cur % PAGE as u64) as usize;
            let n = (PAGE - at).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&self.data[page + at..page + at + n]);
            done += n;
        }
        Ok(())
    }
}

/// Kernel virtual memory where every canonical kernel address reads the
/// input cyclically (`data[va % len]`), except pages that a hole pattern
/// marks not present. Any pointer or size the walkers read is fuzzed
/// bytes, and any pointer they follow lands in fuzzed bytes again.
pub struct CyclicVirt<'a> {
    pub data: &'a [u8],
    /// Pages whose number modulo `hole_every` is 0 are not present (0: no
    /// holes).
    pub hole_every: u64,
}

impl CyclicVirt<'_> {
    fn check(&self, va: u64) -> Result<(), MemoryError> {
        let kva = KernelVa(va);
        if !kva.is_kernel() || self.data.is_empty() {
            return Err(MemoryError::NotPresent {
                va: kva,
                level: PxeLevel::Pml4e,
            });
        }
        if self.hole_every != 0 && (va >> 12).is_multiple_of(self.hole_every) {
            return Err(MemoryError::page_not_present(kva));
        }
        Ok(())
    }

    fn fill(&self, va: u64, buf: &mut [u8]) {
        let n = self.data.len();
        let mut at = (va % n as u64) as usize;
        let mut done = 0;
        while done < buf.len() {
            let k = (n - at).min(buf.len() - done);
            buf[done..done + k].copy_from_slice(&self.data[at..at + k]);
            done += k;
            at = 0;
        }
    }
}

impl Memory for CyclicVirt<'_> {
    fn describe(&self) -> String {
        "fuzzed virtual memory".into()
    }
    fn kernel_dtb(&self) -> PhysAddr {
        PhysAddr(0x1AD000)
    }
    fn read_physical(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        if self.data.is_empty() {
            return Err(MemoryError::not_in_source(pa));
        }
        self.fill(pa.0, buf);
        Ok(())
    }
    fn translate(&self, va: KernelVa) -> Result<Translation, MemoryError> {
        self.check(va.0)?;
        Ok(Translation {
            pa: PhysAddr(va.0 & 0x0000_FFFF_FFFF_FFFF),
            page_size: PageSize::Small,
            writable: true,
            no_execute: false,
            user: false,
            transition: false,
        })
    }
    fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), MemoryError> {
        let n = self.read_virtual_partial(va, buf)?;
        if n < buf.len() {
            return Err(MemoryError::page_not_present(KernelVa(
                va.0.wrapping_add(n as u64) & !0xFFF,
            )));
        }
        Ok(())
    }
    fn read_virtual_partial(&self, va: KernelVa, buf: &mut [u8]) -> Result<usize, MemoryError> {
        let mut done = 0usize;
        while done < buf.len() {
            let cur = va.0.wrapping_add(done as u64);
            if let Err(e) = self.check(cur) {
                if done == 0 {
                    return Err(e);
                }
                return Ok(done);
            }
            let n = (PAGE - (cur as usize % PAGE)).min(buf.len() - done);
            self.fill(cur, &mut buf[done..done + n]);
            done += n;
        }
        Ok(done)
    }
}

/// The kit's driver files (testdata/drivers), with their BaseDllNames:
/// real images with code, imports, .pdata and unwind infos.
pub const DRIVERS: [(&str, &[u8]); 3] = [
    (
        "leakydrv.sys",
        include_bytes!("../../testdata/drivers/leakydrv.sys"),
    ),
    (
        "fsfilt.sys",
        include_bytes!("../../testdata/drivers/fsfilt.sys"),
    ),
    (
        "netsim.sys",
        include_bytes!("../../testdata/drivers/netsim.sys"),
    ),
];

/// A PE file as the loader maps it (headers, then each section at its RVA,
/// zero-filled), at most 1 MiB, and its SizeOfImage; None when the file's
/// headers do not parse.
pub fn map_image(file: &[u8]) -> Option<(u32, Vec<u8>)> {
    let parsed = pooldump_core::stack::ImageFile::parse("driver.sys", file.to_vec()).ok()?;
    let size = parsed.size_of_image();
    let len = size.min(1 << 20);
    let mut image = vec![0u8; len as usize];
    for page in (0..len).step_by(PAGE) {
        let n = (len - page).min(PAGE as u32) as usize;
        let _ = parsed.read_rva(page, &mut image[page as usize..page as usize + n]);
    }
    Some((size, image))
}

/// A loader entry (`_KLDR_DATA_TABLE_ENTRY`) for an image at `base`.
pub fn loaded_module(name: &str, base: u64, size: u32) -> pooldump_core::kernel::LoadedModule {
    pooldump_core::kernel::LoadedModule {
        entry: KernelVa(0xFFFF_C000_0000_0000),
        base: KernelVa(base),
        size,
        entry_point: KernelVa(base),
        name: name.into(),
        full_name: None,
    }
}

/// Kernel virtual memory made of a few byte ranges, each at its address
/// (the first that holds an address wins); every other address is not
/// present and there is no physical memory.
pub struct Regions {
    pub regions: Vec<(u64, Vec<u8>)>,
    pub what: &'static str,
}

impl Regions {
    fn slice(&self, va: u64) -> Option<(&[u8], usize)> {
        self.regions.iter().find_map(|(base, bytes)| {
            let off = va.checked_sub(*base)?;
            (off < bytes.len() as u64).then_some((bytes.as_slice(), off as usize))
        })
    }
}

impl Memory for Regions {
    fn describe(&self) -> String {
        self.what.into()
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

/// Fixed-width fields read off the front of an input (zeros past its
/// end), so a harness decodes its input by hand without `arbitrary`.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        let s = self.take(N);
        b[..s.len()].copy_from_slice(s);
        b
    }
    /// A count byte, then that many (offset u32, byte) patches.
    pub fn patches(&mut self) -> Vec<(u32, u8)> {
        let n = usize::from(self.u8());
        (0..n).map(|_| (self.u32(), self.u8())).collect()
    }
}

/// Write each patch's byte at its offset modulo the length (256 at most).
pub fn patch(bytes: &mut [u8], patches: &[(u32, u8)]) {
    if bytes.is_empty() {
        return;
    }
    for &(at, b) in patches.iter().take(256) {
        let i = at as usize % bytes.len();
        bytes[i] = b;
    }
}

/// A little-endian u64 from `data` at `at`, 0 past the end.
pub fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = data.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}
