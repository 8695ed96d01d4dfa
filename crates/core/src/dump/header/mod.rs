//! DUMP_HEADER64 and the page layout that follows it, parsed and validated
//! as a checked view over the file's bytes.
//!
//! Layouts (docs/testing.md, "Dump containers"): the 0x2000-byte header, then
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
//!
//! This file holds the header's public face (the [`DumpHeader`] and its
//! parts, the field offsets); `parse.rs` reads and validates it,
//! `plan.rs` is the validated page layout the physical map is built from,
//! and `error.rs` says what is wrong with a header ([`HeaderError`]).

mod error;
mod parse;
mod plan;

use serde::Serialize;

use crate::addr::{KernelVa, PhysAddr};

use super::time::{FileTime, UpTime};

pub use error::HeaderError;
pub(crate) use parse::parse;
pub(crate) use plan::{PagePlan, PlanExtent, bit_runs, bitmap_bytes};

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

/// DUMP_HEADER64 field offsets (docs/design.md, "kdmp-parser and pooldump's own header reader").
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
    pub const ATTRIBUTES: usize = 0x1050;

    // Bitmap header, after DUMP_HEADER64 ("SDMPDUMP" or "FDMPDUMP" at 0x2000).
    pub const BMP_SIGNATURE: usize = 0x2000;
    pub const BMP_FIRST_PAGE: usize = 0x2020;
    pub const BMP_PRESENT_PAGES: usize = 0x2028;
    pub const BMP_BITS: usize = 0x2030;
    pub const BMP_BITMAP: usize = 0x2038;

    // SUMMARY_DUMP64 of a DumpType 2 dump: 32-bit fields after the same
    // 'SDMP' 'DUMP' signature, the bitmap at 0x2028 (docs/dump-formats.md).
    pub const SUM_HEADER_SIZE: usize = 0x200C;
    pub const SUM_BITMAP_SIZE: usize = 0x2010;
    pub const SUM_PAGES: usize = 0x2014;
    pub const SUM_SIZE_OF_BITMAP: usize = 0x2018;
    pub const SUM_BITMAP: usize = 0x2028;

    // RDMP header, after DUMP_HEADER64 (signature: "RDMPDUMP" at 0x2004).
    pub const RDMP_MARKER: usize = 0x2000;
    pub const RDMP_SIGNATURE: usize = 0x2004;
    pub const RDMP_METADATA_SIZE: usize = 0x2010;
    pub const RDMP_FIRST_PAGE: usize = 0x2018;
    pub const RDMP_RANGE_COUNT: usize = 0x2020;
    pub const RDMP_TOTAL_PAGES: usize = 0x2028;
    pub const RDMP_RANGES: usize = 0x2030;
}

/// The kinds of 64-bit kernel dump pooldump reads (the DumpType field,
/// named as in the SDK's `DUMP_TYPE`; docs/dump-formats.md says which
/// Windows writes which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpType {
    /// 1 (DUMP_TYPE_FULL): every physical page, described by a run list in
    /// the header.
    Full,
    /// 2 (DUMP_TYPE_SUMMARY): a kernel summary dump, what Windows 7 and
    /// Server 2008 R2 write as MEMORY.DMP for a kernel memory dump: an
    /// 'SDMP' header with 32-bit fields and a bitmap of the pages present.
    Summary,
    /// 5 (DUMP_TYPE_BITMAP_FULL): a bitmap dump, 'SDMP' (a kernel or
    /// automatic dump of Windows 8 to Windows 10) or 'FDMP' (complete or
    /// active).
    Bitmap,
    /// 6 (DUMP_TYPE_BITMAP_KERNEL): the same bitmap format, written by
    /// recent Windows 10 and 11 for kernel and automatic dumps, and by
    /// Task Manager's live kernel memory dump.
    KernelBitmap,
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
            DumpType::Summary => 2,
            DumpType::Bitmap => 5,
            DumpType::KernelBitmap => 6,
            DumpType::RdmpKernel => 8,
            DumpType::RdmpKernelAndUser => 9,
            DumpType::RdmpComplete => 0xA,
        }
    }

    fn from_value(v: u32) -> Option<Self> {
        Some(match v {
            1 => DumpType::Full,
            2 => DumpType::Summary,
            5 => DumpType::Bitmap,
            6 => DumpType::KernelBitmap,
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
            DumpType::Summary => "kernel summary dump",
            DumpType::Bitmap => "bitmap dump",
            DumpType::KernelBitmap => "kernel bitmap dump",
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
    /// The first page frame number of the run.
    pub base_page: u64,
    /// Pages in the run (4 KiB each); their data follows the previous run's in the file.
    pub page_count: u64,
}

/// How the page data after the header is described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "format", rename_all = "kebab-case")]
pub enum PageLayout {
    /// DumpType 1: a run list; data starts at 0x2000.
    Runs {
        /// PHYSICAL_MEMORY_DESCRIPTOR64.Run[], in file order.
        runs: Vec<PhysRun>,
        /// NumberOfPages as the descriptor states it (not trusted).
        declared_pages: u64,
    },
    /// DumpType 2, 5 and 6: a bitmap of present PFNs.
    Bitmap {
        /// 'SDMP' or 'FDMP'.
        kind: BitmapKind,
        /// File offset of the bitmap: 0x2038 after the bitmap header, 0x2028
        /// after a DumpType 2 SUMMARY_DUMP64.
        bitmap_offset: u64,
        /// File offset of the first page's data (FirstPage).
        first_page: u64,
        /// Bitmap length in bits (highest PFN + 1, or more).
        bit_count: u64,
        /// Present-page count as the header states it (not trusted).
        declared_pages: u64,
    },
    /// DumpType 8/9/0xA: an RDMP range list.
    Rdmp {
        /// MetadataSize: bytes of range descriptors from 0x2020 (a multiple of 16, at least 0x20).
        metadata_size: u64,
        /// FirstPageOffset: where the first page's data is in the file (MetadataSize + 0x2020).
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
    /// BugCheckCode (0x0A, 0x139, ...).
    pub code: u32,
    /// BugCheckParameter1..4; their meaning depends on the code.
    pub parameters: [u64; 4],
}

/// The fields of the DUMP_HEADER64 (and its secondary header) that
/// pooldump uses or shows. All are as the file states them; the page
/// layout has been checked against the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DumpHeader {
    /// DumpType, as pooldump names the kinds it reads.
    pub dump_type: DumpType,
    /// 0xF for a free build, 0xC for a checked one.
    pub major_version: u32,
    /// The build number (19041, 22621, ...).
    pub minor_version: u32,
    /// The kernel's PML4 as the header states it (CR3 at the crash).
    pub directory_table_base: PhysAddr,
    /// PfnDataBase: the virtual address of the PFN database (nt!MmPfnDatabase).
    pub pfn_database: KernelVa,
    /// PsLoadedModuleList: the head of the loaded-module list.
    pub ps_loaded_module_list: KernelVa,
    /// PsActiveProcessHead: the head of the process list.
    pub ps_active_process_head: KernelVa,
    /// 0x8664 (checked).
    pub machine_image_type: u32,
    /// NumberProcessors.
    pub number_processors: u32,
    /// The bug check code and parameters.
    pub bug_check: BugCheck,
    /// KdDebuggerDataBlock: where the KDBG is in kernel memory.
    pub kd_debugger_data_block: KernelVa,
    /// Stack and instruction pointer of the CONTEXT record.
    pub context_rsp: u64,
    /// Rip of the CONTEXT record (the instruction pointer at the crash).
    pub context_rip: u64,
    /// Exception.ExceptionCode (an NTSTATUS, or 0x80000003 for a manual crash).
    pub exception_code: u32,
    /// RequiredDumpSpace: the file size the writer announced, in bytes (0 when not stated).
    pub required_dump_space: u64,
    /// SystemTime: when the machine crashed.
    pub system_time: FileTime,
    /// SystemUpTime: how long it had been running.
    pub system_up_time: UpTime,
    /// ProductType (1 workstation, 2 domain controller, 3 server).
    pub product_type: u32,
    /// SuiteMask (the VER_SUITE_* bits).
    pub suite_mask: u32,
    /// Attributes (DUMP_FILE_ATTRIBUTES: HiberCrash, InsufficientDumpfileSize,
    /// LiveDumpGeneratedDump, ...; 0 in older dumps, or the "PAGE" fill).
    pub attributes: u32,
    /// The Comment field when it holds text rather than the "PAGE" fill.
    pub comment: Option<String>,
    /// How the page data after the header is laid out (run list, bitmap or RDMP ranges), checked
    /// against the file.
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
