//! What is wrong with a dump header, and where.

/// What is wrong with a dump header. Each case says where; the file name
/// is added by [`DumpError`](crate::dump::DumpError).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error(
        "the file is {len} bytes, too small for a 64-bit kernel dump (its header alone is 8192 bytes)"
    )]
    /// The file ends before the 8 KiB DUMP_HEADER64.
    TooSmall {
        /// The file's length in bytes.
        len: u64,
    },
    #[error("not a kernel dump: this is a user-mode minidump (signature 'MDMP')")]
    /// A user-mode minidump ('MDMP'), not a kernel dump.
    UserMinidump,
    #[error("not a 64-bit kernel dump (signature 'PAGEDUMP' is a 32-bit dump)")]
    /// A 32-bit kernel dump ('PAGEDUMP'): pooldump reads 64-bit ones.
    Dump32,
    #[error(
        "not a kernel crash dump (signature '{found}' at offset 0; a 64-bit kernel dump starts with 'PAGEDU64')"
    )]
    /// The first 8 bytes are not 'PAGEDU64'.
    BadSignature {
        /// The bytes found, printable ASCII kept and the rest escaped.
        found: String,
    },
    #[error(
        "DumpType {value} ({name}) is not supported; kernel (5), full (1) and RDMP (8/9/10) dumps are"
    )]
    /// DumpType is one pooldump does not read.
    UnsupportedType {
        /// DumpType as stored.
        value: u32,
        /// Its name, or what is known of it.
        name: &'static str,
    },
    #[error(
        "MachineImageType {value:#x} ({name}) is not supported; pooldump reads x64 (0x8664) dumps"
    )]
    /// MachineImageType is not x64 (or, for a small dump, ARM64).
    UnsupportedMachine {
        /// MachineImageType as stored.
        value: u32,
        /// Its name, or what is known of it.
        name: &'static str,
    },
    #[error("the run list at 0x88 claims {count} runs; at most 42 fit in its 700 bytes")]
    /// PHYSICAL_MEMORY_DESCRIPTOR64.NumberOfRuns is more than its 700 bytes hold.
    TooManyRuns {
        /// NumberOfRuns as stored.
        count: u32,
    },
    #[error("{what} (PFN {base:#x}, {pages:#x} pages) goes past the 52-bit physical address space")]
    /// A run or range ends past the 52-bit physical address space.
    OutsidePhysicalSpace {
        /// Which run or range (`run 3`).
        what: String,
        /// Its first page frame number.
        base: u64,
        /// Its length in 4 KiB pages.
        pages: u64,
    },
    #[error("{what} (PFN {base:#x}, {pages:#x} pages) extends past the end of the file (file is {file_len} bytes{})", required_note(*required))]
    /// A run or range's data would end past the end of the file (a
    /// truncated copy).
    PastEndOfFile {
        /// Which run or range (`run 3`).
        what: String,
        /// Its first page frame number.
        base: u64,
        /// Its length in 4 KiB pages.
        pages: u64,
        /// The file's length in bytes.
        file_len: u64,
        /// The header's RequiredDumpSpace, in bytes (0: not stated).
        required: u64,
    },
    #[error("{a} and {b} both describe PFN {pfn:#x}")]
    /// Two runs or ranges claim the same physical page.
    Overlap {
        /// The first (`run 1`).
        a: String,
        /// The second.
        b: String,
        /// A page frame number both describe.
        pfn: u64,
    },
    #[error(
        "bitmap header at 0x2000 has signature '{found}' (expected 'SDMP' or 'FDMP' followed by 'DUMP')"
    )]
    /// A bitmap dump's header at 0x2000 lacks 'SDMP'/'FDMP' + 'DUMP'.
    BadBitmapSignature {
        /// The bytes found, escaped.
        found: String,
    },
    #[error(
        "the bitmap at 0x2038 claims {bits:#x} bits ({bytes:#x} bytes) but the file is {file_len} bytes"
    )]
    /// The page bitmap runs past the end of the file (or its header does).
    BitmapPastEndOfFile {
        /// The bitmap's size in bits (one per physical page; 0 when the
        /// header itself is cut short).
        bits: u64,
        /// The bitmap's size in bytes.
        bytes: u64,
        /// The file's length in bytes.
        file_len: u64,
    },
    #[error("the bitmap header's FirstPage {first_page:#x} {problem}")]
    /// The bitmap header's FirstPage (file offset of the first page's data)
    /// cannot be right.
    BadFirstPage {
        /// FirstPage as stored.
        first_page: u64,
        /// Why (inside the bitmap, past the end of the file).
        problem: String,
    },
    #[error("the bitmap marks {present} pages present; their data from FirstPage {first_page:#x} would end at {end}, past the end of the file (file is {file_len} bytes{})", required_note(*required))]
    /// The pages the bitmap marks present would end past the end of the
    /// file (a truncated copy).
    BitmapPagesPastEndOfFile {
        /// Pages whose bit is set.
        present: u64,
        /// FirstPage: the file offset of the first page's data.
        first_page: u64,
        /// Where their data would end (hex, or "beyond 2^64").
        end: String,
        /// The file's length in bytes.
        file_len: u64,
        /// The header's RequiredDumpSpace, in bytes (0: not stated).
        required: u64,
    },
    #[error("RDMP header at 0x2000 is not valid: {0}")]
    /// The RDMP header (DumpType 8/9/10) is not valid: the sentence says why.
    BadRdmp(String),
    #[error("DumpType 4 (small memory dump): the TRIAGE_DUMP64 header at 0x2000 is not valid: {0}")]
    /// The TRIAGE_DUMP64 header of a small memory dump is not valid: the
    /// sentence says why.
    BadTriage(String),
}

fn required_note(required: u64) -> String {
    if required == 0 {
        String::new()
    } else {
        format!("; the header's RequiredDumpSpace is {required}")
    }
}
