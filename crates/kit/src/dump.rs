//! Crash-dump containers: the 64-bit DUMP_HEADER64 followed by a full-dump
//! run list (DumpType 1), a bitmap (DumpType 5, 'SDMP' kernel or 'FDMP'
//! complete; DumpType 6 'SDMP' kernel) or Windows 7's summary header and
//! bitmap (DumpType 2), as Windows writes MEMORY.DMP. Offsets follow
//! docs/testing.md, "Dump containers" and Volatility's crash64.json.

use std::io::{self, Write};

use crate::phys::{PAGE, Page, PhysMemory};

/// Which kind of dump file to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpKind {
    /// DumpType 1: every RAM frame, described by up to 42 runs.
    Full,
    /// DumpType 5 'SDMP': a bitmap of the frames the kernel wanted
    /// (what a BSOD writes as MEMORY.DMP for a kernel or automatic dump,
    /// Windows 8 to Windows 10).
    KernelBitmap,
    /// DumpType 6 'SDMP' (DUMP_TYPE_BITMAP_KERNEL): the same bitmap, as
    /// recent Windows 10 and 11 write a kernel or automatic dump.
    BitmapKernel,
    /// DumpType 2 'SDMP' (DUMP_TYPE_SUMMARY): Windows 7's kernel memory
    /// dump, a SUMMARY_DUMP64 with 32-bit fields and the bitmap at 0x2028.
    Summary,
    /// DumpType 5 'FDMP': a bitmap covering all RAM.
    CompleteBitmap,
}

impl DumpKind {
    pub fn dump_type(self) -> u32 {
        match self {
            DumpKind::Full => 1,
            DumpKind::Summary => 2,
            DumpKind::KernelBitmap | DumpKind::CompleteBitmap => 5,
            DumpKind::BitmapKernel => 6,
        }
    }
}

/// The header fields a real dump carries, supplied by the machine builder.
#[derive(Debug, Clone, Default)]
pub struct HeaderFields {
    pub build: u32,
    pub dtb: u64,
    pub pfn_database: u64,
    pub ps_loaded_module_list: u64,
    pub ps_active_process_head: u64,
    pub number_processors: u32,
    pub bugcheck_code: u32,
    pub bugcheck_parameters: [u64; 4],
    pub kd_debugger_data_block: u64,
    /// FILETIME of the crash.
    pub system_time: u64,
    /// 100 ns units since boot.
    pub system_up_time: u64,
    pub context_rip: u64,
    pub context_rsp: u64,
    /// The CONTEXT's Rax..R15 in encoding order (the Rsp slot is ignored:
    /// `context_rsp` is written there). Zero unless a test plants a thread
    /// (`crash_stack.rs`).
    pub context_gprs: [u64; 16],
    pub product_type: u32,
    pub suite_mask: u32,
}

pub const HEADER_SIZE: usize = 0x2000;
const MAX_RUNS: usize = 42;

/// Header offsets (DUMP_HEADER64).
pub mod off {
    pub const SIGNATURE: usize = 0x0;
    pub const VALID_DUMP: usize = 0x4;
    pub const MAJOR_VERSION: usize = 0x8;
    pub const MINOR_VERSION: usize = 0xC;
    pub const DIRECTORY_TABLE_BASE: usize = 0x10;
    pub const PFN_DATABASE: usize = 0x18;
    pub const PS_LOADED_MODULE_LIST: usize = 0x20;
    pub const PS_ACTIVE_PROCESS_HEAD: usize = 0x28;
    pub const MACHINE_IMAGE_TYPE: usize = 0x30;
    pub const NUMBER_PROCESSORS: usize = 0x34;
    pub const BUGCHECK_CODE: usize = 0x38;
    pub const BUGCHECK_PARAMETERS: usize = 0x40;
    pub const KD_DEBUGGER_DATA_BLOCK: usize = 0x80;
    pub const PHYSICAL_MEMORY_BLOCK: usize = 0x88;
    pub const CONTEXT: usize = 0x348;
    pub const EXCEPTION: usize = 0xF00;
    pub const DUMP_TYPE: usize = 0xF98;
    pub const REQUIRED_DUMP_SPACE: usize = 0xFA0;
    pub const SYSTEM_TIME: usize = 0xFA8;
    pub const COMMENT: usize = 0xFB0;
    pub const SYSTEM_UP_TIME: usize = 0x1030;
    pub const MINIDUMP_FIELDS: usize = 0x1038;
    pub const SECONDARY_DATA_STATE: usize = 0x103C;
    pub const PRODUCT_TYPE: usize = 0x1040;
    pub const SUITE_MASK: usize = 0x1044;
    pub const WRITER_STATUS: usize = 0x1048;
    pub const KD_SECONDARY_VERSION: usize = 0x104D;
    pub const ATTRIBUTES: usize = 0x1050;
    pub const BOOT_ID: usize = 0x1054;
    /// Bitmap header ('SDMP'/'FDMP') right after the dump header.
    pub const BMP_SIGNATURE: usize = 0x2000;
    pub const BMP_VALID_DUMP: usize = 0x2004;
    pub const BMP_FIRST_PAGE: usize = 0x2020;
    pub const BMP_PAGES: usize = 0x2028;
    pub const BMP_BITS: usize = 0x2030;
    pub const BMP_BITMAP: usize = 0x2038;
    /// SUMMARY_DUMP64 (DumpType 2): 32-bit fields after the signature.
    pub const SUM_DUMP_OPTIONS: usize = 0x2008;
    pub const SUM_HEADER_SIZE: usize = 0x200C;
    pub const SUM_BITMAP_SIZE: usize = 0x2010;
    pub const SUM_PAGES: usize = 0x2014;
    pub const SUM_SIZE_OF_BITMAP: usize = 0x2018;
    pub const SUM_BITMAP: usize = 0x2028;
}

fn put32(h: &mut [u8], at: usize, v: u32) {
    h[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(h: &mut [u8], at: usize, v: u64) {
    h[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Build the 0x2000-byte DUMP_HEADER64.
pub(crate) fn header(
    f: &HeaderFields,
    dump_type: u32,
    runs: Option<(&[(u64, u64)], u64)>,
    file_size: u64,
) -> Vec<u8> {
    // Windows fills the whole header with "PAGE" before setting fields; the
    // unused parts of a real header still say PAGE.
    let mut h: Vec<u8> = b"PAGE".iter().copied().cycle().take(HEADER_SIZE).collect();
    h[off::VALID_DUMP..off::VALID_DUMP + 4].copy_from_slice(b"DU64");
    put32(&mut h, off::MAJOR_VERSION, 0xF);
    put32(&mut h, off::MINOR_VERSION, f.build);
    put64(&mut h, off::DIRECTORY_TABLE_BASE, f.dtb);
    put64(&mut h, off::PFN_DATABASE, f.pfn_database);
    put64(&mut h, off::PS_LOADED_MODULE_LIST, f.ps_loaded_module_list);
    put64(
        &mut h,
        off::PS_ACTIVE_PROCESS_HEAD,
        f.ps_active_process_head,
    );
    put32(&mut h, off::MACHINE_IMAGE_TYPE, 0x8664);
    put32(&mut h, off::NUMBER_PROCESSORS, f.number_processors);
    put32(&mut h, off::BUGCHECK_CODE, f.bugcheck_code);
    put32(&mut h, off::BUGCHECK_CODE + 4, 0);
    for (i, p) in f.bugcheck_parameters.iter().enumerate() {
        put64(&mut h, off::BUGCHECK_PARAMETERS + 8 * i, *p);
    }
    // +0x60 VersionUser (32 bytes) is zero in real dumps; +0x80 the KDBG.
    h[0x60..0x80].fill(0);
    put64(
        &mut h,
        off::KD_DEBUGGER_DATA_BLOCK,
        f.kd_debugger_data_block,
    );
    if let Some((runs, pages)) = runs {
        let d = off::PHYSICAL_MEMORY_BLOCK;
        h[d..d + 700].fill(0);
        put32(&mut h, d, runs.len() as u32);
        put64(&mut h, d + 8, pages);
        for (i, (base, count)) in runs.iter().enumerate() {
            put64(&mut h, d + 0x10 + 16 * i, *base);
            put64(&mut h, d + 0x18 + 16 * i, *count);
        }
    }
    write_context(&mut h[off::CONTEXT..off::CONTEXT + 0x4D0], f);
    write_exception(&mut h[off::EXCEPTION..off::EXCEPTION + 0x98], f);
    put32(&mut h, off::DUMP_TYPE, dump_type);
    put32(&mut h, off::DUMP_TYPE + 4, 0);
    put64(&mut h, off::REQUIRED_DUMP_SPACE, file_size);
    put64(&mut h, off::SYSTEM_TIME, f.system_time);
    // Comment (128 bytes) stays "PAGE..." as in real dumps.
    put64(&mut h, off::SYSTEM_UP_TIME, f.system_up_time);
    put32(&mut h, off::MINIDUMP_FIELDS, 0);
    put32(&mut h, off::SECONDARY_DATA_STATE, 0);
    put32(&mut h, off::PRODUCT_TYPE, f.product_type);
    put32(&mut h, off::SUITE_MASK, f.suite_mask);
    // WriterStatus stays "PAGE"; KdSecondaryVersion is 0x41 in the dumps
    // quoted in volatility #741.
    h[off::KD_SECONDARY_VERSION] = 0x41;
    h[0x104C] = 0;
    h[0x104E] = 0;
    h[0x104F] = 0;
    put32(&mut h, off::ATTRIBUTES, 0);
    put32(&mut h, off::BOOT_ID, 0);
    h
}

/// CONTEXT (x64, 0x4D0 bytes) with the flags and segment selectors a
/// kernel-mode bugcheck context has.
fn write_context(c: &mut [u8], f: &HeaderFields) {
    c.fill(0);
    put32(c, 0x30, 0x0010_001F); // ContextFlags: CONTEXT_AMD64 | FULL | SEGMENTS
    put32(c, 0x34, 0x1F80); // MxCsr
    c[0x38..0x3A].copy_from_slice(&0x10u16.to_le_bytes()); // SegCs
    for at in [0x3A, 0x3C, 0x3E] {
        c[at..at + 2].copy_from_slice(&0x2Bu16.to_le_bytes()); // Ds, Es, Fs
    }
    c[0x40..0x42].copy_from_slice(&0x2Bu16.to_le_bytes()); // Gs
    c[0x42..0x44].copy_from_slice(&0x18u16.to_le_bytes()); // SegSs
    put32(c, 0x44, 0x282); // EFlags
    for (i, v) in f.context_gprs.iter().enumerate() {
        put64(c, 0x78 + 8 * i, *v);
    }
    put64(c, 0x98, f.context_rsp);
    put64(c, 0xF8, f.context_rip);
}

/// EXCEPTION_RECORD64: a breakpoint at the context's Rip, as KeBugCheck2
/// records it.
fn write_exception(e: &mut [u8], f: &HeaderFields) {
    e.fill(0);
    put32(e, 0, 0x8000_0003);
    put64(e, 0x10, f.context_rip);
}

/// Write a dump of `mem` to `w`. Returns the number of bytes written.
///
/// The page order is ascending PFN, as in both container formats; callers
/// that build large dumps should pass a buffered writer.
pub fn write_dump<W: Write>(
    mem: &PhysMemory,
    kind: DumpKind,
    f: &HeaderFields,
    w: &mut W,
) -> io::Result<u64> {
    match kind {
        DumpKind::Full => {
            let runs: Vec<(u64, u64)> = mem
                .runs()
                .iter()
                .map(|r| (r.start, r.end - r.start))
                .collect();
            assert!(runs.len() <= MAX_RUNS, "a full dump holds at most 42 runs");
            let pages: u64 = runs.iter().map(|r| r.1).sum();
            let size = HEADER_SIZE as u64 + pages * PAGE as u64;
            w.write_all(&header(f, 1, Some((&runs, pages)), size))?;
            let all: Vec<u64> = mem.runs().iter().flat_map(|r| r.clone()).collect();
            write_pages(mem, &all, w)?;
            Ok(size)
        }
        DumpKind::KernelBitmap
        | DumpKind::BitmapKernel
        | DumpKind::CompleteBitmap
        | DumpKind::Summary => {
            let present: Vec<u64> = match kind {
                DumpKind::CompleteBitmap => mem.runs().iter().flat_map(|r| r.clone()).collect(),
                _ => mem.present_pfns(),
            };
            // Volatility reads the bitmap as u32 words: keep the bit count
            // a multiple of 32 (docs/testing.md, "Dump containers").
            let bits = mem.max_pfn().div_ceil(32) * 32;
            let bitmap_bytes = (bits / 8) as usize;
            let bitmap_at = if kind == DumpKind::Summary {
                off::SUM_BITMAP
            } else {
                off::BMP_BITMAP
            };
            let first_page = (bitmap_at + bitmap_bytes).div_ceil(PAGE) * PAGE;
            let size = first_page as u64 + present.len() as u64 * PAGE as u64;
            let mut h = header(f, kind.dump_type(), None, size);
            h.resize(first_page, 0);
            let sig: &[u8; 4] = if kind == DumpKind::CompleteBitmap {
                b"FDMP"
            } else {
                b"SDMP"
            };
            h[off::BMP_SIGNATURE..off::BMP_SIGNATURE + 4].copy_from_slice(sig);
            h[off::BMP_VALID_DUMP..off::BMP_VALID_DUMP + 4].copy_from_slice(b"DUMP");
            if kind == DumpKind::Summary {
                // All 32-bit: a summary dump of more than 2^32 frames or a
                // 4 GiB header cannot be written.
                let u32_of = |v: u64| u32::try_from(v).expect("summary dump fields are 32-bit");
                put32(&mut h, off::SUM_DUMP_OPTIONS, 1); // DUMP_SUMMARY_VALID_KERNEL_VA
                put32(&mut h, off::SUM_HEADER_SIZE, u32_of(first_page as u64));
                put32(&mut h, off::SUM_BITMAP_SIZE, u32_of(bits));
                put32(&mut h, off::SUM_PAGES, u32_of(present.len() as u64));
                put32(&mut h, off::SUM_SIZE_OF_BITMAP, u32_of(bits));
            } else {
                put64(&mut h, off::BMP_FIRST_PAGE, first_page as u64);
                put64(&mut h, off::BMP_PAGES, present.len() as u64);
                put64(&mut h, off::BMP_BITS, bits);
            }
            for &p in &present {
                h[bitmap_at + (p / 8) as usize] |= 1 << (p % 8);
            }
            w.write_all(&h)?;
            write_pages(mem, &present, w)?;
            Ok(size)
        }
    }
}

/// Write frames in the given order, filling procedural ones in parallel a
/// chunk at a time so multi-GiB dumps stream in bounded memory.
fn write_pages<W: Write>(mem: &PhysMemory, pfns: &[u64], w: &mut W) -> io::Result<()> {
    use rayon::prelude::*;
    const CHUNK: usize = 4096;
    let mut buf = vec![0u8; CHUNK * PAGE];
    for chunk in pfns.chunks(CHUNK) {
        let out = &mut buf[..chunk.len() * PAGE];
        out.par_chunks_mut(PAGE)
            .zip(chunk.par_iter())
            .for_each(|(page, &pfn)| {
                let page: &mut Page = page.try_into().expect("page-sized chunk");
                mem.frame_into(pfn, page);
            });
        w.write_all(out)?;
    }
    Ok(())
}
