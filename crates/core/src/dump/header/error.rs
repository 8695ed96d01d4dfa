//! What is wrong with a dump header, and where.

/// What is wrong with a dump header. Each case says where; the file name
/// is added by [`DumpError`](crate::dump::DumpError).
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
