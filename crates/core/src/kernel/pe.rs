//! The identity of a PE image mapped in kernel memory: its CodeView (RSDS)
//! record names the PDB that describes it.
//!
//! Only the headers (SizeOfHeaders bytes), the debug directory and the
//! CodeView record are read, never the whole image: a dump may lack most
//! of nt's pages, and a hostile image must not make us read megabytes.
//! goblin parses the headers and the CodeView record; the image is in its
//! mapped layout, so RVAs are not resolved through the section table
//! (docs/testdata-nt.md).

use goblin::pe::debug::{CodeviewPDB70DebugInfo, IMAGE_DEBUG_TYPE_CODEVIEW, ImageDebugDirectory};
use goblin::pe::header::Header;
use goblin::pe::options::ParseOptions;
use serde::Serialize;

use crate::addr::KernelVa;
use crate::bytes::{Le, escape_ascii};
use crate::memory::{Memory, MemoryError};

/// Headers larger than this are not a real image's.
pub const MAX_HEADERS: u32 = 0x1_0000;
/// e_lfanew beyond this is not a real image's (MemProcFS uses 0x800).
pub const MAX_E_LFANEW: u32 = 0x800;
/// Debug directory entries read at most (nt has about six).
pub const MAX_DEBUG_ENTRIES: u32 = 64;
/// Longest PDB name kept (MAX_PATH).
pub const MAX_PDB_NAME: usize = 260;
const DEBUG_ENTRY_SIZE: u32 = 0x1C;
/// RSDS, GUID, age, then the name.
const CV_FIXED: u32 = 24;

pub use pooldump_symbols::Guid;

/// A CodeView RSDS record: which PDB matches the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeView {
    /// The PDB file name as the image records it (`ntkrnlmp.pdb`), capped
    /// at 260 bytes, non-printable bytes escaped as `\xNN`. Hostile: check
    /// [`CodeView::name_is_clean`] before building a path from it.
    pub pdb_name: String,
    /// The RSDS record's GUID: with `age`, the PDB's identity on a symbol server.
    pub guid: Guid,
    /// The RSDS record's Age.
    pub age: u32,
    /// Symbol-store key: GUID compact form then the age in hex
    /// (`3177D31000BA7590DED335936C93E3741`).
    pub store_key: String,
    /// The raw name was printable ASCII, within the cap, and without a
    /// `..` component.
    pub name_is_clean: bool,
}

/// A path with a `..` component (either separator).
fn climbs(name: &[u8]) -> bool {
    name.split(|&c| c == b'\\' || c == b'/').any(|c| c == b"..")
}

impl CodeView {
    fn new(raw_name: &[u8], guid: Guid, age: u32) -> Self {
        let raw_name = &raw_name[..raw_name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(raw_name.len())];
        let capped = &raw_name[..raw_name.len().min(MAX_PDB_NAME)];
        let printable = capped.iter().all(|c| (0x20..0x7F).contains(c));
        Self {
            pdb_name: escape_ascii(capped),
            guid,
            age,
            store_key: pooldump_symbols::store::pdb_key(&guid, age),
            name_is_clean: printable
                && capped.len() == raw_name.len()
                && !capped.is_empty()
                && !climbs(capped),
        }
    }

    /// The recorded name has a `..` component (`..\..\evil`): no linker
    /// writes one, and its last component is not what it pretends to be.
    pub fn name_climbs(&self) -> bool {
        climbs(self.pdb_name.as_bytes())
    }

    /// The name is one nt's PDB has carried (ntkrnlmp.pdb, ntoskrnl.pdb,
    /// ntkrnlpa.pdb, ntkrpamp.pdb).
    pub fn is_nt(&self) -> bool {
        let n = self.pdb_name.to_ascii_lowercase();
        let base = n.rsplit(['\\', '/']).next().unwrap_or(&n);
        matches!(
            base,
            "ntkrnlmp.pdb" | "ntoskrnl.pdb" | "ntkrnlpa.pdb" | "ntkrpamp.pdb"
        )
    }
}

/// What the headers of a mapped image say about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeImage {
    /// Where the image is mapped (its DllBase).
    pub base: KernelVa,
    /// COFF Machine (0x8664 for x64).
    pub machine: u16,
    /// TimeDateStamp from the COFF header (seconds since 1970; a build hash on reproducible
    /// builds).
    pub time_date_stamp: u32,
    /// SizeOfImage from the optional header, in bytes.
    pub size_of_image: u32,
    /// SizeOfHeaders from the optional header, in bytes.
    pub size_of_headers: u32,
    /// The CodeView RSDS record; None when the image has no debug directory or no readable record
    /// (`warnings` says why).
    pub codeview: Option<CodeView>,
    /// What was odd: not x64, no debug directory, a PDB name that cannot be a file name.
    pub warnings: Vec<String>,
}

/// Why an image's headers could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeError {
    /// A part of the headers could not be read.
    #[error("cannot read the image's {what} at {va}: {cause}")]
    Unreadable {
        /// Which part (`DOS header`, `PE header`, `headers`, `CodeView record`).
        what: &'static str,
        /// The image's base.
        va: KernelVa,
        /// Why the read failed.
        cause: MemoryError,
    },
    /// The first two bytes are not 'MZ'.
    #[error("no image at {va} (it starts with {found:02x?}, not 'MZ')")]
    NotMz {
        /// The image's base.
        va: KernelVa,
        /// The two bytes found.
        found: [u8; 2],
    },
    /// The headers do not parse or point outside the image.
    #[error("the image at {va} has malformed headers: {detail}")]
    Malformed {
        /// The image's base.
        va: KernelVa,
        /// What is wrong.
        detail: String,
    },
}

/// Read the identity of the image mapped at `base`.
pub fn read_pe_image<M: Memory + ?Sized>(mem: &M, base: KernelVa) -> Result<PeImage, PeError> {
    let read = |what: &'static str, rva: u64, len: u32| -> Result<Vec<u8>, PeError> {
        let va = base.checked_add(rva).ok_or(PeError::Malformed {
            va: base,
            detail: format!("{what} RVA {rva:#x} wraps the address space"),
        })?;
        let mut buf = vec![0u8; len as usize];
        mem.read_virtual(va, &mut buf)
            .map_err(|cause| PeError::Unreadable { what, va, cause })?;
        Ok(buf)
    };
    parse_pe_image(base, read)
}

/// The same from any reader of the image by RVA (`read(what, rva, len)`):
/// the image in memory, or an image file (the stack walker's module
/// images read through a page cache). `base` names the image in messages.
/// The reader is asked for at most [`MAX_HEADERS`] bytes at a time.
pub fn parse_pe_image(
    base: KernelVa,
    mut read: impl FnMut(&'static str, u64, u32) -> Result<Vec<u8>, PeError>,
) -> Result<PeImage, PeError> {
    let malformed = |detail: String| PeError::Malformed { va: base, detail };

    let dos = read("DOS header", 0, 0x40)?;
    let dos = Le(&dos);
    if dos.bytes(0, 2) != Some(b"MZ") {
        return Err(PeError::NotMz {
            va: base,
            found: dos.array(0).unwrap_or([0; 2]),
        });
    }
    let e_lfanew = dos.u32(0x3C).unwrap_or(0);
    if !(0x40..=MAX_E_LFANEW).contains(&e_lfanew) {
        return Err(malformed(format!("e_lfanew {e_lfanew:#x} is out of range")));
    }
    // PE signature, COFF header (0x14), then SizeOfHeaders at optional
    // header +0x3C (the same offset in PE32 and PE32+).
    let probe = read("PE header", 0, e_lfanew + 0x18 + 0x40)?;
    let probe = Le(&probe);
    if probe.bytes(e_lfanew as usize, 4) != Some(b"PE\0\0") {
        return Err(malformed("no 'PE' signature at e_lfanew".into()));
    }
    let size_of_optional = u32::from(probe.u16(e_lfanew as usize + 0x14).unwrap_or(0));
    let min_headers = e_lfanew + 0x18 + size_of_optional;
    let size_of_headers = probe.u32(e_lfanew as usize + 0x18 + 0x3C).unwrap_or(0);
    if size_of_headers < min_headers || size_of_headers > MAX_HEADERS {
        return Err(malformed(format!(
            "SizeOfHeaders {size_of_headers:#x} is out of range ({min_headers:#x}..={MAX_HEADERS:#x})"
        )));
    }
    let headers = read("headers", 0, size_of_headers)?;
    let header = Header::parse(&headers).map_err(|e| malformed(e.to_string()))?;
    let opt = header
        .optional_header
        .ok_or_else(|| malformed("no optional header".into()))?;

    let mut image = PeImage {
        base,
        machine: header.coff_header.machine,
        time_date_stamp: header.coff_header.time_date_stamp,
        size_of_image: opt.windows_fields.size_of_image,
        size_of_headers,
        codeview: None,
        warnings: Vec::new(),
    };
    if image.machine != goblin::pe::header::COFF_MACHINE_X86_64 {
        image.warnings.push(format!(
            "COFF Machine is {:#x}, not x64 (0x8664)",
            image.machine
        ));
    }
    match opt.data_directories.get_debug_table() {
        None => image
            .warnings
            .push("the image has no debug directory".into()),
        Some(dd) => match read_codeview(&mut read, dd.virtual_address, dd.size, &image) {
            Ok(cv) => image.codeview = Some(cv),
            Err(w) => image.warnings.push(w),
        },
    }
    if let Some(cv) = &image.codeview
        && !cv.name_is_clean
    {
        image.warnings.push(if cv.name_climbs() {
            format!(
                "the PDB name '{}' climbs directories with '..': it is not used as a file name",
                cv.pdb_name
            )
        } else {
            format!(
                "the PDB name '{}' is empty, too long or not printable",
                cv.pdb_name
            )
        });
    }
    Ok(image)
}

/// Find and parse the CodeView record; a message on failure.
fn read_codeview(
    read: &mut impl FnMut(&'static str, u64, u32) -> Result<Vec<u8>, PeError>,
    dir_rva: u32,
    dir_size: u32,
    image: &PeImage,
) -> Result<CodeView, String> {
    let in_image =
        |rva: u32, len: u32| u64::from(rva) + u64::from(len) <= u64::from(image.size_of_image);
    let entries = (dir_size / DEBUG_ENTRY_SIZE).min(MAX_DEBUG_ENTRIES);
    if entries == 0 || !in_image(dir_rva, entries * DEBUG_ENTRY_SIZE) {
        return Err(format!(
            "the debug directory (RVA {dir_rva:#x}, {dir_size:#x} bytes) is empty or outside the image"
        ));
    }
    let dir = read(
        "debug directory",
        u64::from(dir_rva),
        entries * DEBUG_ENTRY_SIZE,
    )
    .map_err(|e| e.to_string())?;
    let idd = (0..entries as usize)
        .filter_map(|i| debug_entry(Le(&dir), i * DEBUG_ENTRY_SIZE as usize))
        .find(|e| e.data_type == IMAGE_DEBUG_TYPE_CODEVIEW)
        .ok_or("the debug directory has no CodeView entry")?;
    let size = idd.size_of_data;
    if !(CV_FIXED..=CV_FIXED + 0x400).contains(&size) || !in_image(idd.address_of_raw_data, size) {
        return Err(format!(
            "the CodeView record (RVA {:#x}, {size:#x} bytes) is implausible",
            idd.address_of_raw_data
        ));
    }
    let cv = read("CodeView record", u64::from(idd.address_of_raw_data), size)
        .map_err(|e| e.to_string())?;
    // The record was read on its own: point goblin at offset 0 of it.
    let mut opts = ParseOptions::default();
    opts.resolve_rva = false;
    opts.parse_attribute_certificates = false;
    opts.parse_mode = goblin::options::ParseMode::Permissive;
    let local = ImageDebugDirectory {
        address_of_raw_data: 0,
        pointer_to_raw_data: 0,
        ..idd
    };
    match CodeviewPDB70DebugInfo::parse_with_opts(&cv, &local, &opts) {
        Ok(Some(info)) => Ok(CodeView::new(info.filename, Guid(info.signature), info.age)),
        Ok(None) => Err(format!(
            "the CodeView record is not RSDS (it starts with '{}')",
            escape_ascii(cv.get(..4).unwrap_or(&[]))
        )),
        Err(e) => Err(format!("the CodeView record is malformed: {e}")),
    }
}

fn debug_entry(b: Le, at: usize) -> Option<ImageDebugDirectory> {
    Some(ImageDebugDirectory {
        characteristics: b.u32(at)?,
        time_date_stamp: b.u32(at + 4)?,
        major_version: b.u16(at + 8)?,
        minor_version: b.u16(at + 10)?,
        data_type: b.u32(at + 12)?,
        size_of_data: b.u32(at + 16)?,
        address_of_raw_data: b.u32(at + 20)?,
        pointer_to_raw_data: b.u32(at + 24)?,
    })
}

#[cfg(test)]
pub(crate) mod test_image {
    //! A minimal mapped PE32+ image with an RSDS record.

    use crate::testutil::{put_pe_headers, put32};

    pub const GUID: [u8; 16] = [
        0x10, 0xD3, 0x77, 0x31, 0xBA, 0x00, 0x90, 0x75, 0xDE, 0xD3, 0x35, 0x93, 0x6C, 0x93, 0xE3,
        0x74,
    ];

    /// Two pages: headers at 0, the debug directory and RSDS at 0x1000.
    pub fn image(pdb_name: &[u8], age: u32) -> Vec<u8> {
        let mut img = vec![0u8; 0x2000];
        // One section; TimeDateStamp 0x5F001234.
        let opt = put_pe_headers(&mut img, 1, 0x5F00_1234, 0x1_4000_0000, 0x2000);
        let dd = opt + 112;
        put32(&mut img, dd + 6 * 8, 0x1000); // debug directory RVA
        put32(&mut img, dd + 6 * 8 + 4, 0x1C);
        // Section table: one .rdata section.
        let sec = opt + 0xF0;
        img[sec..sec + 6].copy_from_slice(b".rdata");
        put32(&mut img, sec + 8, 0x1000);
        put32(&mut img, sec + 12, 0x1000);
        put32(&mut img, sec + 16, 0x200);
        put32(&mut img, sec + 20, 0x400);
        // Debug directory entry -> RSDS at 0x1100.
        let cv_size = 24 + pdb_name.len() as u32 + 1;
        put32(&mut img, 0x1000 + 12, 2);
        put32(&mut img, 0x1000 + 16, cv_size);
        put32(&mut img, 0x1000 + 20, 0x1100);
        put32(&mut img, 0x1000 + 24, 0x500);
        img[0x1100..0x1104].copy_from_slice(b"RSDS");
        img[0x1104..0x1114].copy_from_slice(&GUID);
        put32(&mut img, 0x1114, age);
        img[0x1118..0x1118 + pdb_name.len()].copy_from_slice(pdb_name);
        img
    }
}
