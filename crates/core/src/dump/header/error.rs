//! What is wrong with a dump header, and where.

/// What is wrong with a dump header. Each case says where; the file name
/// is added by [`DumpError`](crate::dump::DumpError).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The file ends before the 8 KiB DUMP_HEADER64.
    #[error(
        "the file is {len} bytes, too small for a 64-bit kernel dump (its header alone is 8192 bytes)"
    )]
    TooSmall {
        /// The file's length in bytes.
        len: u64,
    },
    /// A user-mode minidump ('MDMP'), not a kernel dump.
    #[error("not a kernel dump: this is a user-mode minidump (signature 'MDMP')")]
    UserMinidump,
    /// A cabinet file ('MSCF'), as Windows Error Reporting and support
    /// tools ship dumps: it must be expanded first.
    #[error(
        "this is a cabinet (.cab) file (signature 'MSCF'), not a dump: extract the dump from it first (`expand -F:* FILE.cab DIR` on Windows, `cabextract FILE.cab` or `7z x FILE.cab` elsewhere)"
    )]
    Cabinet,
    /// The page layout does not read, and the header says the dump's data
    /// is encrypted (Windows' dump encryption).
    #[error(
        "the dump's data is encrypted (Attributes {attributes:#x} has EncryptedDumpData, bit 8), and its page layout does not read ({layout}): pooldump reads only plain or decrypted dumps"
    )]
    Encrypted {
        /// The header's Attributes (DUMP_FILE_ATTRIBUTES).
        attributes: u32,
        /// Why the page layout did not read.
        layout: Box<HeaderError>,
    },
    /// A 32-bit kernel dump ('PAGEDUMP'): pooldump reads 64-bit ones.
    #[error("not a 64-bit kernel dump (signature 'PAGEDUMP' is a 32-bit dump)")]
    Dump32,
    /// The first 8 bytes are not 'PAGEDU64'.
    #[error(
        "not a kernel crash dump (signature '{found}' at offset 0; a 64-bit kernel dump starts with 'PAGEDU64')"
    )]
    BadSignature {
        /// The bytes found, printable ASCII kept and the rest escaped.
        found: String,
    },
    /// DumpType is one pooldump does not read.
    #[error(
        "DumpType {value} ({name}) is not supported; full (1), kernel summary (2), bitmap (5 and 6) and RDMP (8, 9 and 10) dumps are"
    )]
    UnsupportedType {
        /// DumpType as stored.
        value: u32,
        /// Its name, or what is known of it.
        name: &'static str,
    },
    /// MachineImageType is not x64 (or, for a small dump, ARM64).
    #[error(
        "MachineImageType {value:#x} ({name}) is not supported; pooldump reads x64 (0x8664) dumps"
    )]
    UnsupportedMachine {
        /// MachineImageType as stored.
        value: u32,
        /// Its name, or what is known of it.
        name: &'static str,
    },
    /// PHYSICAL_MEMORY_DESCRIPTOR64.NumberOfRuns is more than its 700 bytes hold.
    #[error("the run list at 0x88 claims {count} runs; at most 42 fit in its 700 bytes")]
    TooManyRuns {
        /// NumberOfRuns as stored.
        count: u32,
    },
    /// A run or range ends past the 52-bit physical address space.
    #[error("{what} (PFN {base:#x}, {pages:#x} pages) goes past the 52-bit physical address space")]
    OutsidePhysicalSpace {
        /// Which run or range (`run 3`).
        what: String,
        /// Its first page frame number.
        base: u64,
        /// Its length in 4 KiB pages.
        pages: u64,
    },
    /// A run or range's data would end past the end of the file (a
    /// truncated copy).
    #[error("{what} (PFN {base:#x}, {pages:#x} pages) extends past the end of the file (file is {file_len} bytes{})", required_note(*required))]
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
    /// Two runs or ranges claim the same physical page.
    #[error("{a} and {b} both describe PFN {pfn:#x}")]
    Overlap {
        /// The first (`run 1`).
        a: String,
        /// The second.
        b: String,
        /// A page frame number both describe.
        pfn: u64,
    },
    /// A bitmap dump's header at 0x2000 lacks 'SDMP'/'FDMP' + 'DUMP'.
    #[error(
        "bitmap header at 0x2000 has signature '{found}' (expected 'SDMP' or 'FDMP' followed by 'DUMP')"
    )]
    BadBitmapSignature {
        /// The bytes found, escaped.
        found: String,
    },
    /// The page bitmap runs past the end of the file (or its header does).
    #[error(
        "the bitmap at {at:#x} claims {bits:#x} bits ({bytes:#x} bytes) but the file is {file_len} bytes"
    )]
    BitmapPastEndOfFile {
        /// The bitmap's file offset.
        at: u64,
        /// The bitmap's size in bits (one per physical page; 0 when the
        /// header itself is cut short).
        bits: u64,
        /// The bitmap's size in bytes.
        bytes: u64,
        /// The file's length in bytes.
        file_len: u64,
    },
    /// The bitmap header's FirstPage (file offset of the first page's data)
    /// cannot be right.
    #[error("the bitmap header's FirstPage {first_page:#x} {problem}")]
    BadFirstPage {
        /// FirstPage as stored.
        first_page: u64,
        /// Why (inside the bitmap, past the end of the file).
        problem: String,
    },
    /// The pages the bitmap marks present would end past the end of the
    /// file (a truncated copy).
    #[error("the bitmap marks {present} pages present; their data from FirstPage {first_page:#x} would end at {end}, past the end of the file (file is {file_len} bytes{})", required_note(*required))]
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
    /// The RDMP header (DumpType 8/9/10) is not valid: the sentence says why.
    #[error("RDMP header at 0x2000 is not valid: {0}")]
    BadRdmp(String),
    /// The TRIAGE_DUMP64 header of a small memory dump is not valid: the
    /// sentence says why.
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
