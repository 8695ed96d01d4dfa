//! Unit-test helpers: a tiny machine (physical pages + x64 page tables)
//! that is itself a [`Memory`] and can be written out as a dump, and an
//! allocation meter to prove hostile sizes cost no memory.
//!
//! The full synthetic-kernel generator is `pooldump-kit`; this is only
//! what the core's unit tests need, so most do not depend on it. Those
//! that run a kit machine read it through [`KitMemory`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use crate::addr::{PAGE_SIZE, PhysAddr};
use crate::memory::{Memory, MemoryError, walk};

pub const PAGE: usize = PAGE_SIZE as usize;

/// Physical pages and a kernel address space.
#[derive(Clone)]
pub struct Machine {
    pub pages: BTreeMap<u64, Vec<u8>>,
    pub dtb_pfn: u64,
    next_pfn: u64,
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine {
    pub fn new() -> Self {
        let mut m = Self {
            pages: BTreeMap::new(),
            dtb_pfn: 0x1AD,
            next_pfn: 0x200,
        };
        m.pages.insert(0x1AD, vec![0; PAGE]);
        m
    }

    pub fn alloc(&mut self) -> u64 {
        let pfn = self.next_pfn;
        self.next_pfn += 1;
        self.pages.insert(pfn, vec![0; PAGE]);
        pfn
    }

    fn entry(&self, table: u64, idx: u64) -> u64 {
        let p = &self.pages[&table];
        let at = (idx * 8) as usize;
        u64::from_le_bytes(p[at..at + 8].try_into().unwrap())
    }

    fn set_entry(&mut self, table: u64, idx: u64, v: u64) {
        let p = self.pages.get_mut(&table).unwrap();
        let at = (idx * 8) as usize;
        p[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Map the 4 KiB page at `va` to `pfn` (present, writable).
    pub fn map(&mut self, va: u64, pfn: u64) {
        let mut table = self.dtb_pfn;
        for shift in [39u32, 30, 21] {
            let idx = (va >> shift) & 0x1FF;
            let e = self.entry(table, idx);
            table = if e & 1 != 0 {
                (e & walk::PFN_MASK) >> 12
            } else {
                let t = self.alloc();
                self.set_entry(table, idx, (t << 12) | 3);
                t
            };
        }
        self.set_entry(table, (va >> 12) & 0x1FF, (pfn << 12) | 3);
    }

    /// Write `bytes` at `va`, mapping fresh pages where needed.
    pub fn write_virt(&mut self, va: u64, bytes: &[u8]) {
        let mut done = 0;
        while done < bytes.len() {
            let cur = va + done as u64;
            let pfn =
                match walk::translate(self, PhysAddr(self.dtb_pfn << 12), crate::KernelVa(cur)) {
                    Ok(t) => t.pa.0 >> 12,
                    Err(_) => {
                        let p = self.alloc();
                        self.map(cur & !0xFFF, p);
                        p
                    }
                };
            let at = (cur & 0xFFF) as usize;
            let n = (PAGE - at).min(bytes.len() - done);
            self.pages.get_mut(&pfn).unwrap()[at..at + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
        }
    }

    pub fn write_u64(&mut self, va: u64, v: u64) {
        self.write_virt(va, &v.to_le_bytes());
    }

    /// Runs of consecutive present PFNs.
    pub fn runs(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &pfn in self.pages.keys() {
            match runs.last_mut() {
                Some((b, n)) if *b + *n == pfn => *n += 1,
                _ => runs.push((pfn, 1)),
            }
        }
        runs
    }

    /// The dump whose headers are `h`: every page after them, in PFN
    /// order, and RequiredDumpSpace set to the file's size.
    fn with_pages(&self, mut h: Vec<u8>) -> Vec<u8> {
        for p in self.pages.values() {
            h.extend_from_slice(p);
        }
        let len = h.len() as u64;
        put64(&mut h, 0xFA0, len);
        h
    }

    /// A full (type 1) dump of every page.
    pub fn full_dump(&self, hdr: &HeaderSpec) -> Vec<u8> {
        let runs = self.runs();
        let mut h = hdr.build(1, self.dtb_pfn << 12);
        put32(&mut h, 0x88, runs.len() as u32);
        put64(&mut h, 0x90, self.pages.len() as u64);
        for (i, (b, n)) in runs.iter().enumerate() {
            put64(&mut h, 0x98 + 16 * i, *b);
            put64(&mut h, 0xA0 + 16 * i, *n);
        }
        self.with_pages(h)
    }

    /// A bitmap (type 5, 'SDMP') dump of every page.
    pub fn bitmap_dump(&self, hdr: &HeaderSpec) -> Vec<u8> {
        self.sdmp_dump(hdr, 5, 0x2038, |h, first_page, bits, pages| {
            put64(h, 0x2020, first_page);
            put64(h, 0x2028, pages);
            put64(h, 0x2030, bits);
        })
    }

    /// A kernel summary dump (type 2, Windows 7's SUMMARY_DUMP64: 32-bit
    /// fields, the bitmap at 0x2028) of every page.
    pub fn summary_dump(&self, hdr: &HeaderSpec) -> Vec<u8> {
        self.sdmp_dump(hdr, 2, 0x2028, |h, first_page, bits, pages| {
            put32(h, 0x2008, 1);
            put32(h, 0x200C, first_page as u32);
            put32(h, 0x2010, bits as u32);
            put32(h, 0x2014, pages as u32);
            put32(h, 0x2018, bits as u32);
        })
    }

    /// An 'SDMP' dump of every page with the bitmap at `bitmap_at`;
    /// `fields` writes the header's (first page, bits, pages).
    fn sdmp_dump(
        &self,
        hdr: &HeaderSpec,
        dump_type: u32,
        bitmap_at: usize,
        fields: impl FnOnce(&mut [u8], u64, u64, u64),
    ) -> Vec<u8> {
        let max = self.pages.keys().last().copied().unwrap_or(0) + 1;
        let bits = max.div_ceil(32) * 32;
        let first_page = (bitmap_at + bits as usize / 8).div_ceil(PAGE) * PAGE;
        let mut h = hdr.build(dump_type, self.dtb_pfn << 12);
        h.resize(first_page, 0);
        h[0x2000..0x2008].copy_from_slice(b"SDMPDUMP");
        fields(&mut h, first_page as u64, bits, self.pages.len() as u64);
        for &p in self.pages.keys() {
            h[bitmap_at + (p / 8) as usize] |= 1 << (p % 8);
        }
        self.with_pages(h)
    }

    /// An RDMP dump (type 8 or 0xA) of every page. Ranges cannot start at
    /// PFN 0 (a zero PFN ends the list).
    pub fn rdmp_dump(&self, hdr: &HeaderSpec, dump_type: u32) -> Vec<u8> {
        let runs = self.runs();
        let metadata_size = 0x1FE0u64;
        let first = metadata_size + 0x2020;
        let mut h = hdr.build(dump_type, self.dtb_pfn << 12);
        h.resize(first as usize, 0);
        put32(&mut h, 0x2000, 0x40);
        h[0x2004..0x200C].copy_from_slice(b"RDMPDUMP");
        put64(&mut h, 0x2010, metadata_size);
        put64(&mut h, 0x2018, first);
        if dump_type == 0xA {
            put32(&mut h, 0x2020, runs.len() as u32);
            put64(&mut h, 0x2028, self.pages.len() as u64);
        }
        for (i, (b, n)) in runs.iter().enumerate() {
            put64(&mut h, 0x2030 + 16 * i, *b);
            put64(&mut h, 0x2038 + 16 * i, *n);
        }
        self.with_pages(h)
    }
}

impl Memory for Machine {
    fn describe(&self) -> String {
        "test machine".into()
    }
    fn kernel_dtb(&self) -> PhysAddr {
        PhysAddr(self.dtb_pfn << 12)
    }
    fn read_physical(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        let mut done = 0;
        while done < buf.len() {
            let cur = pa.0 + done as u64;
            let page = self
                .pages
                .get(&(cur >> 12))
                .ok_or(MemoryError::not_in_source(PhysAddr(cur)))?;
            let at = (cur & 0xFFF) as usize;
            let n = (PAGE - at).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&page[at..at + n]);
            done += n;
        }
        Ok(())
    }
}

/// A kit machine's memory as pooldump reads it, running or not.
pub struct KitMemory<'a>(pub &'a pooldump_kit::Machine);

impl Memory for KitMemory<'_> {
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

/// Header fields the tests set; the rest is the "PAGE" fill.
#[derive(Clone, Debug)]
pub struct HeaderSpec {
    pub build: u32,
    pub ps_loaded_module_list: u64,
    pub kd_debugger_data_block: u64,
    pub machine: u32,
    pub bugcheck: u32,
    pub system_time: u64,
}

impl Default for HeaderSpec {
    fn default() -> Self {
        Self {
            build: 19041,
            ps_loaded_module_list: 0,
            kd_debugger_data_block: 0,
            machine: 0x8664,
            bugcheck: 0xD1,
            system_time: 0x01D6_42F0_0000_0000,
        }
    }
}

impl HeaderSpec {
    pub fn build(&self, dump_type: u32, dtb: u64) -> Vec<u8> {
        let mut h: Vec<u8> = b"PAGE".iter().copied().cycle().take(0x2000).collect();
        h[4..8].copy_from_slice(b"DU64");
        put32(&mut h, 0x8, 0xF);
        put32(&mut h, 0xC, self.build);
        put64(&mut h, 0x10, dtb);
        put64(&mut h, 0x18, 0xFFFF_D100_0000_0000);
        put64(&mut h, 0x20, self.ps_loaded_module_list);
        put64(&mut h, 0x28, 0);
        put32(&mut h, 0x30, self.machine);
        put32(&mut h, 0x34, 2);
        put32(&mut h, 0x38, self.bugcheck);
        put32(&mut h, 0x3C, 0);
        for i in 0..4 {
            put64(&mut h, 0x40 + 8 * i, 0x1000 + i as u64);
        }
        put64(&mut h, 0x80, self.kd_debugger_data_block);
        h[0x88..0x88 + 700].fill(0);
        h[0x348..0x348 + 0x4D0].fill(0);
        put64(&mut h, 0x348 + 0x98, 0xFFFF_F800_0000_1000);
        put64(&mut h, 0x348 + 0xF8, 0xFFFF_F800_0000_2000);
        put32(&mut h, 0xF98, dump_type);
        put64(&mut h, 0xFA0, 0);
        put64(&mut h, 0xFA8, self.system_time);
        put64(&mut h, 0x1030, 36_000_000_000);
        h
    }
}

/// The headers of a test driver image (x64 PE32+, native subsystem) in
/// `img`: the MZ stub, the PE signature at 0x80, the COFF header with
/// `sections` sections and `time_date_stamp`, and an optional header with
/// `image_base` and `size_of_image` (sections 0x1000-aligned in memory,
/// 0x200 in the file, 0x400 of headers, 16 data directories). Returns the
/// optional header's offset; its data directories start at +112 and the
/// section table at +0xF0, which the caller fills.
pub fn put_pe_headers(
    img: &mut [u8],
    sections: u16,
    time_date_stamp: u32,
    image_base: u64,
    size_of_image: u32,
) -> usize {
    img[0..2].copy_from_slice(b"MZ");
    put32(img, 0x3C, 0x80);
    img[0x80..0x84].copy_from_slice(b"PE\0\0");
    let coff = 0x84;
    img[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes()); // Machine
    img[coff + 2..coff + 4].copy_from_slice(&sections.to_le_bytes());
    put32(img, coff + 4, time_date_stamp);
    img[coff + 16..coff + 18].copy_from_slice(&0xF0u16.to_le_bytes()); // SizeOfOptionalHeader
    img[coff + 18..coff + 20].copy_from_slice(&0x22u16.to_le_bytes()); // Characteristics
    let opt = coff + 20;
    img[opt..opt + 2].copy_from_slice(&0x20Bu16.to_le_bytes()); // PE32+
    put64(img, opt + 24, image_base);
    put32(img, opt + 32, 0x1000); // SectionAlignment
    put32(img, opt + 36, 0x200); // FileAlignment
    put32(img, opt + 56, size_of_image);
    put32(img, opt + 60, 0x400); // SizeOfHeaders
    img[opt + 68..opt + 70].copy_from_slice(&1u16.to_le_bytes()); // Subsystem: native
    put32(img, opt + 108, 16); // NumberOfRvaAndSizes
    opt
}

pub fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Counts bytes allocated by the current thread while [`measure`] runs.
pub struct Meter;

thread_local! {
    static METERED: Cell<Option<u64>> = const { Cell::new(None) };
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only a
// const-initialised thread-local with no destructor.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size.saturating_sub(layout.size()));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count(n: usize) {
    let _ = METERED.try_with(|m| {
        if let Some(v) = m.get() {
            m.set(Some(v + n as u64));
        }
    });
}

#[global_allocator]
static METER: Meter = Meter;

/// Run `f` and return its result with the bytes it allocated (on this
/// thread; growth by realloc counted as the difference).
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, u64) {
    METERED.with(|m| m.set(Some(0)));
    let r = f();
    let n = METERED.with(|m| m.replace(None)).unwrap_or(0);
    (r, n)
}
