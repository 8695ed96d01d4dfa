//! DUMP_HEADER64 and the page layout that follows it, parsed and validated
//! as a checked view over the file's bytes.
//!
//! Layouts (crates-and-test-data.md §2): the 0x2000-byte header, then
//! either page data described by the run list inside the header (DumpType
//! 1), a bitmap header with one bit per PFN (5 and 6), or an RDMP header
//! with a list of PFN ranges (8, 9 and 0xA).
//!
//! Every size in these headers is hostile until checked against the file:
//! nothing here allocates or loops more than the file's length can back. A
//! run list holds at most 42 runs, a bitmap or an RDMP range list must lie
//! inside the file, and the page data they describe may run past the end
//! of the file only as far as the header's own RequiredDumpSpace says (a
//! dump whose writer stopped early, or a partial copy: see [`Truncation`]).

use serde::Serialize;

use crate::addr::{KernelVa, PAGE_SIZE, PhysAddr};
use crate::bytes::{Le, escape_ascii};

use super::time::{FileTime, UpTime};

/// Size of DUMP_HEADER64; page data or the secondary header starts here.
pub const HEADER_SIZE: usize = 0x2000;
/// The run list of a full dump lives in a 700-byte
/// PHYSICAL_MEMORY_DESCRIPTOR64: 16 bytes of counts, then 16-byte runs.
pub const MAX_RUNS: u32 = 42;
/// x64 physical addresses have at most 52 bits: PFNs stay below 2^40.
pub const PFN_LIMIT: u64 = 1 << 40;
/// More logical processors than any Windows build supports (2048 on
/// Windows 11 and Server 2022), with headroom.
pub const MAX_PROCESSORS: u32 = 4096;

/// DUMP_HEADER64 field offsets (crates-and-test-data.md §1.3, §2.1).
pub(crate) mod off {
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
    pub const RUN_COUNT: usize = 0x88;
    pub const RUN_PAGES: usize = 0x90;
    pub const RUNS: usize = 0x98;
    pub const CONTEXT: usize = 0x348;
    pub const CONTEXT_RSP: usize = CONTEXT + 0x98;
    pub const CONTEXT_RIP: usize = CONTEXT + 0xF8;
    pub const EXCEPTION_CODE: usize = 0xF00;
    pub const DUMP_TYPE: usize = 0xF98;
    pub const REQUIRED_DUMP_SPACE: usize = 0xFA0;
    pub const SYSTEM_TIME: usize = 0xFA8;
    pub const COMMENT: usize = 0xFB0;
    pub const COMMENT_LEN: usize = 128;
    pub const SYSTEM_UP_TIME: usize = 0x1030;
    pub const MINIDUMP_FIELDS: usize = 0x1038;
    pub const PRODUCT_TYPE: usize = 0x1040;
    pub const SUITE_MASK: usize = 0x1044;

    // Bitmap header, after DUMP_HEADER64 ("SDMPDUMP" or "FDMPDUMP" at 0x2000).
    pub const BMP_SIGNATURE: usize = 0x2000;
    pub const BMP_FIRST_PAGE: usize = 0x2020;
    pub const BMP_PRESENT_PAGES: usize = 0x2028;
    pub const BMP_BITS: usize = 0x2030;
    pub const BMP_BITMAP: usize = 0x2038;

    // RDMP header, after DUMP_HEADER64 (signature: "RDMPDUMP" at 0x2004).
    pub const RDMP_MARKER: usize = 0x2000;
    pub const RDMP_SIGNATURE: usize = 0x2004;
    pub const RDMP_METADATA_SIZE: usize = 0x2010;
    pub const RDMP_FIRST_PAGE: usize = 0x2018;
    pub const RDMP_RANGE_COUNT: usize = 0x2020;
    pub const RDMP_TOTAL_PAGES: usize = 0x2028;
    pub const RDMP_RANGES: usize = 0x2030;
}

/// The kinds of 64-bit kernel dump pooldump reads (the DumpType field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpType {
    /// 1: every physical page, described by a run list in the header.
    Full,
    /// 5: a bitmap dump, 'SDMP' (kernel/automatic: what a BSOD writes as
    /// MEMORY.DMP) or 'FDMP' (complete).
    Bitmap,
    /// 6: a bitmap dump written while the system runs (Task Manager's live
    /// kernel memory dump).
    LiveKernelBitmap,
    /// 8: RDMP kernel memory (`.dump /k`).
    RdmpKernel,
    /// 9: RDMP kernel and user memory (`.dump /ka`).
    RdmpKernelAndUser,
    /// 0xA: RDMP complete memory (`.dump /f`).
    RdmpComplete,
}

impl DumpType {
    /// The numeric DumpType value.
    pub const fn value(self) -> u32 {
        match self {
            DumpType::Full => 1,
            DumpType::Bitmap => 5,
            DumpType::LiveKernelBitmap => 6,
            DumpType::RdmpKernel => 8,
            DumpType::RdmpKernelAndUser => 9,
            DumpType::RdmpComplete => 0xA,
        }
    }

    fn from_value(v: u32) -> Option<Self> {
        Some(match v {
            1 => DumpType::Full,
            5 => DumpType::Bitmap,
            6 => DumpType::LiveKernelBitmap,
            8 => DumpType::RdmpKernel,
            9 => DumpType::RdmpKernelAndUser,
            0xA => DumpType::RdmpComplete,
            _ => return None,
        })
    }

    /// WinDbg's name for an unsupported DumpType value, for messages.
    fn unsupported_name(v: u32) -> &'static str {
        match v {
            0 => "invalid",
            2 => "summary dump",
            3 => "header-only dump",
            4 => "small memory dump",
            7 => "automatic dump",
            _ => "unknown type",
        }
    }
}

impl std::fmt::Display for DumpType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DumpType::Full => "full memory dump",
            DumpType::Bitmap => "bitmap dump",
            DumpType::LiveKernelBitmap => "live kernel bitmap dump",
            DumpType::RdmpKernel => "RDMP kernel memory dump",
            DumpType::RdmpKernelAndUser => "RDMP kernel and user memory dump",
            DumpType::RdmpComplete => "RDMP complete memory dump",
        })
    }
}

/// The signature of a bitmap header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BitmapKind {
    /// 'SDMP': kernel (or automatic) memory dump.
    Sdmp,
    /// 'FDMP': complete memory dump.
    Fdmp,
}

/// One run of a full dump's run list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PhysRun {
    pub base_page: u64,
    pub page_count: u64,
}

/// How the page data after the header is described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "format", rename_all = "kebab-case")]
pub enum PageLayout {
    /// DumpType 1: a run list; data starts at 0x2000.
    Runs {
        runs: Vec<PhysRun>,
        /// NumberOfPages as the descriptor states it (not trusted).
        declared_pages: u64,
    },
    /// DumpType 5/6: a bitmap of present PFNs.
    Bitmap {
        kind: BitmapKind,
        /// File offset of the first page's data (FirstPage).
        first_page: u64,
        /// Bitmap length in bits (highest PFN + 1, or more).
        bit_count: u64,
        /// Present-page count as the header states it (not trusted).
        declared_pages: u64,
    },
    /// DumpType 8/9/0xA: an RDMP range list.
    Rdmp {
        metadata_size: u64,
        first_page_offset: u64,
        /// Number of PFN ranges before the list's terminator.
        ranges: u64,
        /// TotalNumberOfPages (complete RDMP dumps only).
        total_pages: Option<u64>,
    },
}

/// A dump whose page data runs past the end of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Truncation {
    /// Pages the header describes whose 4 KiB are not all in the file.
    pub missing_pages: u64,
    /// File size the page data needs.
    pub needed_bytes: u64,
}

/// BugCheck code and parameters as KeBugCheckEx received them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BugCheck {
    pub code: u32,
    pub parameters: [u64; 4],
}

/// The fields of the DUMP_HEADER64 (and its secondary header) that
/// pooldump uses or shows. All are as the file states them; the page
/// layout has been checked against the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DumpHeader {
    pub dump_type: DumpType,
    /// 0xF for a free build, 0xC for a checked one.
    pub major_version: u32,
    /// The build number (19041, 22621, ...).
    pub minor_version: u32,
    /// The kernel's PML4 as the header states it (CR3 at the crash).
    pub directory_table_base: PhysAddr,
    pub pfn_database: KernelVa,
    pub ps_loaded_module_list: KernelVa,
    pub ps_active_process_head: KernelVa,
    /// 0x8664 (checked).
    pub machine_image_type: u32,
    pub number_processors: u32,
    pub bug_check: BugCheck,
    pub kd_debugger_data_block: KernelVa,
    /// Stack and instruction pointer of the CONTEXT record.
    pub context_rsp: u64,
    pub context_rip: u64,
    pub exception_code: u32,
    pub required_dump_space: u64,
    pub system_time: FileTime,
    pub system_up_time: UpTime,
    pub product_type: u32,
    pub suite_mask: u32,
    /// The Comment field when it holds text rather than the "PAGE" fill.
    pub comment: Option<String>,
    pub layout: PageLayout,
    /// Pages the layout describes (present in the file or not).
    pub described_pages: u64,
    /// Set when some described pages lie past the end of the file.
    pub truncation: Option<Truncation>,
    /// Things that look wrong but do not stop the dump from being read.
    pub warnings: Vec<String>,
}

impl DumpHeader {
    /// The build number (DUMP_HEADER64.MinorVersion).
    pub fn build(&self) -> u32 {
        self.minor_version
    }
}

/// What is wrong with a dump header. Each case says where; the file name
/// is added by [`super::DumpError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error(
        "the file is {len} bytes, too small for a 64-bit kernel dump (its header alone is 8192 bytes)"
    )]
    TooSmall { len: u64 },
    #[error("not a kernel dump: this is a user-mode minidump (signature 'MDMP')")]
    UserMinidump,
    #[error("not a 64-bit kernel dump (signature 'PAGEDUMP' is a 32-bit dump)")]
    Dump32,
    #[error(
        "not a kernel crash dump (signature '{found}' at offset 0; a 64-bit kernel dump starts with 'PAGEDU64')"
    )]
    BadSignature { found: String },
    #[error(
        "DumpType {value} ({name}) is not supported; kernel (5), full (1) and RDMP (8/9/10) dumps are"
    )]
    UnsupportedType { value: u32, name: &'static str },
    #[error(
        "MachineImageType {value:#x} ({name}) is not supported; pooldump reads x64 (0x8664) dumps"
    )]
    UnsupportedMachine { value: u32, name: &'static str },
    #[error("the run list at 0x88 claims {count} runs; at most 42 fit in its 700 bytes")]
    TooManyRuns { count: u32 },
    #[error("{what} (PFN {base:#x}, {pages:#x} pages) goes past the 52-bit physical address space")]
    OutsidePhysicalSpace { what: String, base: u64, pages: u64 },
    #[error("{what} (PFN {base:#x}, {pages:#x} pages) extends past the end of the file (file is {file_len} bytes{})", required_note(*required))]
    PastEndOfFile {
        what: String,
        base: u64,
        pages: u64,
        file_len: u64,
        required: u64,
    },
    #[error("{a} and {b} both describe PFN {pfn:#x}")]
    Overlap { a: String, b: String, pfn: u64 },
    #[error(
        "bitmap header at 0x2000 has signature '{found}' (expected 'SDMP' or 'FDMP' followed by 'DUMP')"
    )]
    BadBitmapSignature { found: String },
    #[error(
        "the bitmap at 0x2038 claims {bits:#x} bits ({bytes:#x} bytes) but the file is {file_len} bytes"
    )]
    BitmapPastEndOfFile {
        bits: u64,
        bytes: u64,
        file_len: u64,
    },
    #[error("the bitmap header's FirstPage {first_page:#x} {problem}")]
    BadFirstPage { first_page: u64, problem: String },
    #[error("the bitmap marks {present} pages present; their data from FirstPage {first_page:#x} would end at {end}, past the end of the file (file is {file_len} bytes{})", required_note(*required))]
    BitmapPagesPastEndOfFile {
        present: u64,
        first_page: u64,
        end: String,
        file_len: u64,
        required: u64,
    },
    #[error("RDMP header at 0x2000 is not valid: {0}")]
    BadRdmp(String),
    #[error("DumpType 4 (small memory dump): the TRIAGE_DUMP64 header at 0x2000 is not valid: {0}")]
    BadTriage(String),
}

fn required_note(required: u64) -> String {
    if required == 0 {
        String::new()
    } else {
        format!("; the header's RequiredDumpSpace is {required}")
    }
}

/// A run of pages in the file: `pages` PFNs from `pfn`, whose data is
/// packed from `file_offset`. `index` is the run or range number in the
/// header, for patching and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlanExtent {
    pub index: usize,
    pub pfn: u64,
    pub pages: u64,
    pub file_offset: u64,
}

/// The validated page layout, in file order: what the physical map is
/// built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PagePlan {
    /// Full and RDMP dumps: a bounded list (≤ 42 runs, or one entry per 16
    /// bytes of RDMP metadata inside the file).
    Extents {
        extents: Vec<PlanExtent>,
        /// For RDMP: the number of 16-byte range slots (MetadataSize / 16).
        range_slots: u64,
    },
    /// Bitmap dumps: the bitmap stays in the file and is walked on demand.
    Bitmap {
        bitmap_offset: usize,
        bit_count: u64,
        first_page: u64,
    },
}

/// Result of [`parse`]: the typed header and the page plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub header: DumpHeader,
    pub plan: PagePlan,
}

/// Parse and validate the header of the dump whose complete contents are
/// `file`.
pub(crate) fn parse(file: &[u8]) -> Result<Parsed, HeaderError> {
    let b = Le(file);
    let file_len = file.len() as u64;
    check_signature(file)?;
    if file.len() < HEADER_SIZE {
        return Err(HeaderError::TooSmall { len: file_len });
    }
    // The header is all there from here on: reads below cannot fail, but
    // go through the checked view anyway.
    let u32_at = |o: usize| b.u32(o).unwrap_or(0);
    let u64_at = |o: usize| b.u64(o).unwrap_or(0);

    let type_value = u32_at(off::DUMP_TYPE);
    let dump_type = DumpType::from_value(type_value).ok_or(HeaderError::UnsupportedType {
        value: type_value,
        name: DumpType::unsupported_name(type_value),
    })?;
    let machine = u32_at(off::MACHINE_IMAGE_TYPE);
    if machine != 0x8664 {
        return Err(HeaderError::UnsupportedMachine {
            value: machine,
            name: machine_name(machine),
        });
    }

    let required_dump_space = u64_at(off::REQUIRED_DUMP_SPACE);
    // Page data may run past the end of the file only as far as the
    // header's own RequiredDumpSpace: a dump whose writer stopped early
    // still says how big it meant to be. Beyond that a size is corrupt.
    let limit = file_len.max(required_dump_space);
    let ctx = Ctx {
        file,
        file_len,
        limit,
        required: if required_dump_space > file_len {
            required_dump_space
        } else {
            0
        },
    };

    let mut warnings = Vec::new();
    let (layout, plan) = match dump_type {
        DumpType::Full => parse_runs(&ctx, &mut warnings)?,
        DumpType::Bitmap | DumpType::LiveKernelBitmap => parse_bitmap(&ctx, &mut warnings)?,
        DumpType::RdmpKernel | DumpType::RdmpKernelAndUser | DumpType::RdmpComplete => {
            parse_rdmp(&ctx, dump_type, &mut warnings)?
        }
    };
    let (described_pages, needed_bytes) = plan_extent_totals(file, &plan);
    let backed = backed_pages(file, &plan);
    let truncation = (backed < described_pages).then(|| Truncation {
        missing_pages: described_pages - backed,
        needed_bytes,
    });
    if let Some(t) = truncation {
        warnings.push(format!(
            "the file is truncated: {} of {described_pages} described pages are missing (file is {file_len} bytes, the page data needs {})",
            t.missing_pages, t.needed_bytes
        ));
    }

    let dtb = u64_at(off::DIRECTORY_TABLE_BASE);
    if dtb == 0 {
        warnings.push("the header's DirectoryTableBase is 0".into());
    }
    // Shown as is; anything that sizes per-processor work from it must
    // bound it (pool.md §2.3 caps the per-CPU tracker walk at 4096).
    let processors = u32_at(off::NUMBER_PROCESSORS);
    if processors == 0 || processors > MAX_PROCESSORS {
        warnings.push(format!(
            "the header's NumberProcessors {processors} is implausible (Windows runs 1 to {MAX_PROCESSORS} processors)"
        ));
    }

    let header = DumpHeader {
        dump_type,
        major_version: u32_at(off::MAJOR_VERSION),
        minor_version: u32_at(off::MINOR_VERSION),
        directory_table_base: PhysAddr(dtb),
        pfn_database: KernelVa(u64_at(off::PFN_DATABASE)),
        ps_loaded_module_list: KernelVa(u64_at(off::PS_LOADED_MODULE_LIST)),
        ps_active_process_head: KernelVa(u64_at(off::PS_ACTIVE_PROCESS_HEAD)),
        machine_image_type: machine,
        number_processors: processors,
        bug_check: BugCheck {
            code: u32_at(off::BUGCHECK_CODE),
            parameters: std::array::from_fn(|i| u64_at(off::BUGCHECK_PARAMETERS + 8 * i)),
        },
        kd_debugger_data_block: KernelVa(u64_at(off::KD_DEBUGGER_DATA_BLOCK)),
        context_rsp: u64_at(off::CONTEXT_RSP),
        context_rip: u64_at(off::CONTEXT_RIP),
        exception_code: u32_at(off::EXCEPTION_CODE),
        required_dump_space,
        system_time: FileTime(u64_at(off::SYSTEM_TIME)),
        system_up_time: UpTime(u64_at(off::SYSTEM_UP_TIME)),
        product_type: u32_at(off::PRODUCT_TYPE),
        suite_mask: u32_at(off::SUITE_MASK),
        comment: comment(b.bytes(off::COMMENT, off::COMMENT_LEN).unwrap_or(&[])),
        layout,
        described_pages,
        truncation,
        warnings,
    };
    Ok(Parsed { header, plan })
}

fn check_signature(file: &[u8]) -> Result<(), HeaderError> {
    let len = file.len() as u64;
    if file.starts_with(b"MDMP") {
        return Err(HeaderError::UserMinidump);
    }
    if file.len() < 8 {
        if b"PAGEDU64".starts_with(file) || b"PAGEDUMP".starts_with(file) {
            return Err(HeaderError::TooSmall { len });
        }
        return Err(HeaderError::BadSignature {
            found: escape_ascii(file),
        });
    }
    match &file[..8] {
        b"PAGEDU64" => Ok(()),
        b"PAGEDUMP" => Err(HeaderError::Dump32),
        other => Err(HeaderError::BadSignature {
            found: escape_ascii(other),
        }),
    }
}

fn machine_name(m: u32) -> &'static str {
    match m {
        0x14C => "x86",
        0x1C4 => "ARM",
        0xAA64 => "ARM64",
        0x200 => "IA64",
        _ => "unknown",
    }
}

/// Windows fills unused header bytes with "PAGE"; a comment is only
/// present when the field holds something else.
fn comment(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    let text = &raw[..end];
    if text.is_empty() || text.chunks(4).all(|c| b"PAGE".starts_with(c)) {
        return None;
    }
    Some(escape_ascii(text))
}

struct Ctx<'a> {
    file: &'a [u8],
    file_len: u64,
    /// How far page data may extend: max(file length, RequiredDumpSpace).
    limit: u64,
    /// RequiredDumpSpace when it exceeds the file (for messages), else 0.
    required: u64,
}

impl Ctx<'_> {
    /// Check one run or range and return where its data ends in the file.
    fn check_extent(
        &self,
        what: impl Fn() -> String,
        pfn: u64,
        pages: u64,
        file_offset: u64,
    ) -> Result<u64, HeaderError> {
        if pfn.checked_add(pages).is_none_or(|end| end > PFN_LIMIT) {
            return Err(HeaderError::OutsidePhysicalSpace {
                what: what(),
                base: pfn,
                pages,
            });
        }
        match pages
            .checked_mul(PAGE_SIZE)
            .and_then(|n| file_offset.checked_add(n))
        {
            Some(end) if end <= self.limit => Ok(end),
            _ => Err(HeaderError::PastEndOfFile {
                what: what(),
                base: pfn,
                pages,
                file_len: self.file_len,
                required: self.required,
            }),
        }
    }
}

fn parse_runs(
    ctx: &Ctx,
    warnings: &mut Vec<String>,
) -> Result<(PageLayout, PagePlan), HeaderError> {
    let b = Le(ctx.file);
    let count = b.u32(off::RUN_COUNT).unwrap_or(0);
    if count > MAX_RUNS {
        return Err(HeaderError::TooManyRuns { count });
    }
    let declared_pages = b.u64(off::RUN_PAGES).unwrap_or(0);
    let mut runs = Vec::with_capacity(count as usize);
    let mut extents = Vec::with_capacity(count as usize);
    let mut offset = HEADER_SIZE as u64;
    for i in 0..count as usize {
        let base_page = b.u64(off::RUNS + 16 * i).unwrap_or(0);
        let page_count = b.u64(off::RUNS + 16 * i + 8).unwrap_or(0);
        let end = ctx.check_extent(|| format!("run {i}"), base_page, page_count, offset)?;
        runs.push(PhysRun {
            base_page,
            page_count,
        });
        extents.push(PlanExtent {
            index: i,
            pfn: base_page,
            pages: page_count,
            file_offset: offset,
        });
        offset = end;
    }
    check_overlaps(&extents, "run")?;
    let total: u64 = runs.iter().map(|r| r.page_count).sum();
    if total != declared_pages {
        warnings.push(format!(
            "the run list's NumberOfPages is {declared_pages} but its runs hold {total} pages"
        ));
    }
    if count == 0 {
        warnings.push("the run list is empty: the dump holds no pages".into());
    }
    Ok((
        PageLayout::Runs {
            runs,
            declared_pages,
        },
        PagePlan::Extents {
            extents,
            range_slots: 0,
        },
    ))
}

fn parse_bitmap(
    ctx: &Ctx,
    warnings: &mut Vec<String>,
) -> Result<(PageLayout, PagePlan), HeaderError> {
    let b = Le(ctx.file);
    let sig = b.bytes(off::BMP_SIGNATURE, 8).unwrap_or(&[]);
    let kind = match sig {
        b"SDMPDUMP" => BitmapKind::Sdmp,
        b"FDMPDUMP" => BitmapKind::Fdmp,
        _ => {
            return Err(HeaderError::BadBitmapSignature {
                found: escape_ascii(sig),
            });
        }
    };
    let (Some(first_page), Some(declared_pages), Some(bit_count)) = (
        b.u64(off::BMP_FIRST_PAGE),
        b.u64(off::BMP_PRESENT_PAGES),
        b.u64(off::BMP_BITS),
    ) else {
        return Err(HeaderError::BitmapPastEndOfFile {
            bits: 0,
            bytes: 0,
            file_len: ctx.file_len,
        });
    };
    // The bitmap itself must be in the file: this bounds every later loop
    // over it by the file's length.
    let bytes = bit_count.div_ceil(8);
    let bitmap_end = (off::BMP_BITMAP as u64).checked_add(bytes);
    if bitmap_end.is_none_or(|e| e > ctx.file_len) {
        return Err(HeaderError::BitmapPastEndOfFile {
            bits: bit_count,
            bytes,
            file_len: ctx.file_len,
        });
    }
    let bitmap_end = bitmap_end.unwrap_or(u64::MAX);
    if first_page < bitmap_end {
        return Err(HeaderError::BadFirstPage {
            first_page,
            problem: format!("lies inside the bitmap, which ends at {bitmap_end:#x}"),
        });
    }
    if first_page > ctx.file_len {
        return Err(HeaderError::BadFirstPage {
            first_page,
            problem: format!(
                "is past the end of the file (file is {} bytes)",
                ctx.file_len
            ),
        });
    }
    let bitmap = bitmap_bytes(ctx.file, off::BMP_BITMAP, bit_count);
    let present = popcount(bitmap, bit_count);
    match present
        .checked_mul(PAGE_SIZE)
        .and_then(|n| first_page.checked_add(n))
    {
        Some(end) if end <= ctx.limit => {}
        end => {
            return Err(HeaderError::BitmapPagesPastEndOfFile {
                present,
                first_page,
                end: end.map_or_else(|| "beyond 2^64".into(), |e| format!("{e:#x}")),
                file_len: ctx.file_len,
                required: ctx.required,
            });
        }
    }
    if present != declared_pages {
        warnings.push(format!(
            "the bitmap header says {declared_pages} pages are present but the bitmap marks {present}"
        ));
    }
    Ok((
        PageLayout::Bitmap {
            kind,
            first_page,
            bit_count,
            declared_pages,
        },
        PagePlan::Bitmap {
            bitmap_offset: off::BMP_BITMAP,
            bit_count,
            first_page,
        },
    ))
}

fn parse_rdmp(
    ctx: &Ctx,
    dump_type: DumpType,
    warnings: &mut Vec<String>,
) -> Result<(PageLayout, PagePlan), HeaderError> {
    let b = Le(ctx.file);
    let bad = |m: String| Err(HeaderError::BadRdmp(m));
    let marker = b.u32(off::RDMP_MARKER).unwrap_or(0);
    let sig = b.bytes(off::RDMP_SIGNATURE, 8).unwrap_or(&[]);
    if marker != 0x40 || sig != b"RDMPDUMP" {
        return bad(format!(
            "expected marker 0x40 and 'RDMPDUMP', found {marker:#x} and '{}'",
            escape_ascii(sig)
        ));
    }
    let metadata_size = b.u64(off::RDMP_METADATA_SIZE).unwrap_or(0);
    let first_page_offset = b.u64(off::RDMP_FIRST_PAGE).unwrap_or(0);
    // kdmp-parser computes `metadata_size - 0x20` and
    // `first_page_offset - 0x2040` unchecked (spec §1.10.4): these checks
    // must come first.
    if metadata_size < 0x20 || metadata_size % 16 != 0 {
        return bad(format!(
            "MetadataSize {metadata_size:#x} must be a non-zero multiple of 16 and at least 0x20"
        ));
    }
    if metadata_size.checked_add(0x2020) != Some(first_page_offset) {
        return bad(format!(
            "FirstPageOffset {first_page_offset:#x} must equal MetadataSize {metadata_size:#x} + 0x2020"
        ));
    }
    if first_page_offset > ctx.file_len {
        return bad(format!(
            "its range list (up to FirstPageOffset {first_page_offset:#x}) extends past the end of the file (file is {} bytes)",
            ctx.file_len
        ));
    }
    let complete = dump_type == DumpType::RdmpComplete;
    let total_pages = complete.then(|| b.u64(off::RDMP_TOTAL_PAGES).unwrap_or(0));

    // Mirror kdmp-parser's walk exactly (its map is cross-checked against
    // this plan): up to MetadataSize/16 slots from 0x2030, ending at the
    // first PFN 0, and for complete dumps when TotalNumberOfPages is
    // reached. The slot count is bounded by the file (checked above); a
    // slot read past the end reads as zero, as the reader pads it.
    let range_slots = metadata_size / 16;
    let mut extents = Vec::new();
    let mut offset = first_page_offset;
    let mut page_count = 0u64;
    for i in 0..range_slots {
        if let Some(total) = total_pages {
            if page_count == total {
                break;
            }
            if page_count > total {
                return bad(format!(
                    "its ranges hold more than TotalNumberOfPages ({total}) pages"
                ));
            }
        }
        let at = off::RDMP_RANGES as u64 + 16 * i;
        let read = |o: u64| usize::try_from(o).ok().and_then(|o| b.u64(o)).unwrap_or(0);
        let pfn = read(at);
        let pages = read(at + 8);
        if pfn == 0 {
            break;
        }
        let end = ctx.check_extent(|| format!("RDMP range {i}"), pfn, pages, offset)?;
        extents.push(PlanExtent {
            index: i as usize,
            pfn,
            pages,
            file_offset: offset,
        });
        offset = end;
        page_count = page_count.saturating_add(pages);
    }
    check_overlaps(&extents, "RDMP range")?;
    if let Some(total) = total_pages
        && page_count != total
    {
        warnings.push(format!(
            "the RDMP header's TotalNumberOfPages is {total} but its ranges hold {page_count} pages"
        ));
    }
    if complete {
        let declared = b.u32(off::RDMP_RANGE_COUNT).unwrap_or(0);
        if u64::from(declared) != extents.len() as u64 {
            warnings.push(format!(
                "the RDMP header's NumberOfRanges is {declared} but its list holds {}",
                extents.len()
            ));
        }
    }
    Ok((
        PageLayout::Rdmp {
            metadata_size,
            first_page_offset,
            ranges: extents.len() as u64,
            total_pages,
        },
        PagePlan::Extents {
            extents,
            range_slots,
        },
    ))
}

/// Two runs or ranges that describe the same PFN make the map ambiguous
/// (kdmp-parser rejects duplicate runs, and asserts on duplicate ranges).
fn check_overlaps(extents: &[PlanExtent], noun: &str) -> Result<(), HeaderError> {
    let mut sorted: Vec<&PlanExtent> = extents.iter().filter(|e| e.pages > 0).collect();
    sorted.sort_by_key(|e| e.pfn);
    for w in sorted.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.pfn + a.pages > b.pfn {
            let (first, second) = if a.index < b.index { (a, b) } else { (b, a) };
            return Err(HeaderError::Overlap {
                a: format!("{noun} {}", first.index),
                b: format!("{noun} {}", second.index),
                pfn: b.pfn,
            });
        }
    }
    Ok(())
}

/// The bitmap's bytes (its length was checked against the file).
pub(crate) fn bitmap_bytes(file: &[u8], at: usize, bit_count: u64) -> &[u8] {
    let n = usize::try_from(bit_count.div_ceil(8)).unwrap_or(usize::MAX);
    let end = at.saturating_add(n).min(file.len());
    file.get(at..end).unwrap_or(&[])
}

/// Set bits among the first `bit_count` bits (unused bits of the last byte
/// are ignored, as kdmp-parser ignores them).
fn popcount(bitmap: &[u8], bit_count: u64) -> u64 {
    let mut n: u64 = bitmap.iter().map(|b| u64::from(b.count_ones())).sum();
    let rem = bit_count % 8;
    if rem != 0
        && let Some(&last) = bitmap.last()
    {
        n -= u64::from((last & !((1u8 << rem) - 1)).count_ones());
    }
    n
}

/// Iterate the set bits of a bitmap as maximal runs `(first_pfn, pages)`.
pub(crate) fn bit_runs(bitmap: &[u8], bit_count: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut pfn = 0u64;
    std::iter::from_fn(move || {
        let bit = |p: u64| -> bool {
            p < bit_count
                && bitmap
                    .get((p / 8) as usize)
                    .is_some_and(|b| b & (1 << (p % 8)) != 0)
        };
        // Skip clear bits a byte at a time where possible.
        while pfn < bit_count && !bit(pfn) {
            if pfn.is_multiple_of(8) && bitmap.get((pfn / 8) as usize) == Some(&0) {
                pfn += 8;
            } else {
                pfn += 1;
            }
        }
        if pfn >= bit_count {
            return None;
        }
        let start = pfn;
        while pfn < bit_count && bit(pfn) {
            if pfn.is_multiple_of(8)
                && pfn + 8 <= bit_count
                && bitmap.get((pfn / 8) as usize) == Some(&0xFF)
            {
                pfn += 8;
            } else {
                pfn += 1;
            }
        }
        Some((start, pfn - start))
    })
}

/// (pages described, file size the page data needs).
fn plan_extent_totals(file: &[u8], plan: &PagePlan) -> (u64, u64) {
    match plan {
        PagePlan::Extents { extents, .. } => {
            let pages = extents.iter().map(|e| e.pages).sum();
            let end = extents
                .last()
                .map_or(HEADER_SIZE as u64, |e| e.file_offset + e.pages * PAGE_SIZE);
            (pages, end)
        }
        PagePlan::Bitmap {
            bitmap_offset,
            bit_count,
            first_page,
        } => {
            let present = popcount(bitmap_bytes(file, *bitmap_offset, *bit_count), *bit_count);
            (present, first_page + present * PAGE_SIZE)
        }
    }
}

/// Pages whose 4 KiB of data are entirely inside the file.
pub(crate) fn backed_pages(file: &[u8], plan: &PagePlan) -> u64 {
    let len = file.len() as u64;
    let fits = |file_offset: u64, pages: u64| -> u64 {
        (len.saturating_sub(file_offset) / PAGE_SIZE).min(pages)
    };
    match plan {
        PagePlan::Extents { extents, .. } => {
            extents.iter().map(|e| fits(e.file_offset, e.pages)).sum()
        }
        PagePlan::Bitmap {
            bitmap_offset,
            bit_count,
            first_page,
        } => {
            let present = popcount(bitmap_bytes(file, *bitmap_offset, *bit_count), *bit_count);
            fits(*first_page, present)
        }
    }
}
