//! A module's image, read by RVA as little as the unwinder and the
//! symbolizer need: a page at a time, each page once.
//!
//! The bytes come from the image mapped in memory (a dump, or a live target
//! where every read is a round trip), or from an image file that an
//! [`ImageLocator`] finds (a symbol store holds images as
//! `<name>/<TimeDateStamp><SizeOfImage>/<name>`). The walker asks the
//! locator first, so a module whose image file is at hand costs only its
//! header page from memory (none when the caller knows its TimeDateStamp).
//!
//! Every length and RVA here comes from hostile headers: reads are checked
//! against SizeOfImage, and a module never caches more than
//! [`MAX_CACHED_PAGES`] pages.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use goblin::pe::header::Header;
use serde::Serialize;

use crate::addr::{KernelVa, PAGE_SIZE};
use crate::bytes::Le;
use crate::kernel::pe::MAX_HEADERS;
use crate::kernel::sections::MAX_SECTIONS;
pub use crate::kernel::sections::SectionHeader;
use crate::memory::{Memory, MemoryError};

/// Pages one module keeps at most (16 MiB): a hostile exception directory
/// or unwind info cannot make a walk read an unbounded amount.
pub const MAX_CACHED_PAGES: usize = 4096;

const PAGE: usize = PAGE_SIZE as usize;

/// A module the walker knows: where it is mapped and what it is called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackModule {
    /// BaseDllName (`ntoskrnl.exe`).
    pub name: String,
    /// The name WinDbg prints before `!`: the file name without its
    /// extension, `nt` for the kernel.
    pub short_name: String,
    /// Where the image is mapped (DllBase).
    pub base: KernelVa,
    /// SizeOfImage, in bytes: the mapped range from `base`.
    pub size: u32,
    /// The image's TimeDateStamp when the caller knows it (a small memory
    /// dump's module list has it): an image file can then be located
    /// without reading the headers from memory.
    pub time_date_stamp: Option<u32>,
}

impl StackModule {
    /// `is_kernel`: the module is nt (the first entry of
    /// PsLoadedModuleList), printed as `nt` whatever its file name.
    pub fn new(name: &str, base: KernelVa, size: u32, is_kernel: bool) -> Self {
        Self {
            name: name.to_string(),
            short_name: short_name(name, is_kernel),
            base,
            size,
            time_date_stamp: None,
        }
    }

    /// Whether `va` lies in the module's mapped range.
    pub fn contains(&self, va: KernelVa) -> bool {
        va >= self.base && va.0 - self.base.0 < u64::from(self.size)
    }
}

/// `leakydrv.sys` → `leakydrv`; nt's image names → `nt`. Characters a
/// WinDbg module name cannot hold become `_`.
fn short_name(name: &str, is_kernel: bool) -> String {
    let lower = name.to_ascii_lowercase();
    let nt_names = [
        "ntoskrnl.exe",
        "ntkrnlmp.exe",
        "ntkrnlpa.exe",
        "ntkrpamp.exe",
    ];
    if is_kernel || nt_names.contains(&lower.as_str()) {
        return "nt".into();
    }
    let stem = match name.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => s,
        _ => name,
    };
    let s: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

/// Which image file a module wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest<'a> {
    /// BaseDllName (`leakydrv.sys`): hostile, check it before using it as a
    /// path component.
    pub name: &'a str,
    /// The image's TimeDateStamp (from the module's PE header).
    pub time_date_stamp: u32,
    /// The image's SizeOfImage, in bytes.
    pub size_of_image: u32,
}

impl ImageRequest<'_> {
    /// The symbol-store key: `<TimeDateStamp><SizeOfImage>` in upper-case
    /// hex, the stamp 8 digits wide, the size without leading zeros.
    pub fn store_key(&self) -> String {
        pooldump_symbols::store::image_key(self.time_date_stamp, self.size_of_image)
    }
}

/// Finds image files for modules, so their unwind data and exports are
/// read from disk instead of from the target. The symbol-store lookup
/// plugs in here; the walker checks that the file's TimeDateStamp and
/// SizeOfImage are the ones asked for.
pub trait ImageLocator: Send + Sync {
    /// The image file for `req`, `Ok(None)` when there is none, `Err` (a
    /// message, kept as a note) when looking failed.
    fn locate(&self, req: &ImageRequest<'_>) -> Result<Option<ImageFile>, String>;
}

/// A PE image file, read by RVA through its section table.
pub struct ImageFile {
    origin: String,
    bytes: Arc<[u8]>,
    size_of_headers: u32,
    size_of_image: u32,
    time_date_stamp: u32,
    /// (rva, virtual size, file offset, raw size).
    sections: Vec<(u32, u32, u32, u32)>,
}

impl fmt::Debug for ImageFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageFile")
            .field("origin", &self.origin)
            .field("size_of_image", &self.size_of_image)
            .field("time_date_stamp", &self.time_date_stamp)
            .finish_non_exhaustive()
    }
}

impl ImageFile {
    /// Parse a PE file's headers; `origin` (its path) names it in messages.
    pub fn parse(
        origin: impl Into<String>,
        bytes: impl Into<Arc<[u8]>>,
    ) -> Result<Self, ImageError> {
        let origin = origin.into();
        let bytes: Arc<[u8]> = bytes.into();
        let bad = |detail: String| ImageError::Malformed {
            image: origin.clone(),
            detail,
        };
        let h = headers_of(&bytes).map_err(&bad)?;
        let b = Le(&bytes);
        let mut sections = Vec::new();
        for i in 0..h.sections.min(MAX_SECTIONS) {
            let at = h.section_table + 40 * i;
            let (Some(vsize), Some(rva), Some(raw_size), Some(raw_off)) = (
                b.u32(at + 8),
                b.u32(at + 12),
                b.u32(at + 16),
                b.u32(at + 20),
            ) else {
                return Err(bad(format!("section {i} lies past the end of the file")));
            };
            sections.push((rva, vsize, raw_off, raw_size));
        }
        Ok(Self {
            origin,
            bytes,
            size_of_headers: h.size_of_headers,
            size_of_image: h.size_of_image,
            time_date_stamp: h.time_date_stamp,
            sections,
        })
    }

    /// Where the file came from (its path or store location), as given to [`ImageFile::parse`].
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// TimeDateStamp from the file's PE header.
    pub fn time_date_stamp(&self) -> u32 {
        self.time_date_stamp
    }
    /// SizeOfImage from the file's PE header, in bytes.
    pub fn size_of_image(&self) -> u32 {
        self.size_of_image
    }

    /// The bytes at `rva` as the loader maps them: headers, section data,
    /// zeros where a section's virtual size exceeds its raw data.
    pub fn read_rva(&self, rva: u32, buf: &mut [u8]) -> Result<(), ImageError> {
        let end = u64::from(rva) + buf.len() as u64;
        if end > u64::from(self.size_of_image) {
            return Err(ImageError::OutsideImage {
                image: self.origin.clone(),
                rva: u64::from(rva),
                len: buf.len() as u64,
                size_of_image: self.size_of_image,
            });
        }
        buf.fill(0);
        let mut copy = |region_rva: u32, region_len: u32, file_off: u32| {
            // The overlap of [rva, end) with the region, copied from the file.
            let lo = u64::from(rva).max(u64::from(region_rva));
            let hi = end.min(u64::from(region_rva) + u64::from(region_len));
            if lo >= hi {
                return;
            }
            let src = u64::from(file_off) + (lo - u64::from(region_rva));
            let n = (hi - lo) as usize;
            let Some(s) = usize::try_from(src)
                .ok()
                .and_then(|s| self.bytes.get(s..s.checked_add(n)?))
            else {
                return;
            };
            let d = (lo - u64::from(rva)) as usize;
            buf[d..d + n].copy_from_slice(s);
        };
        copy(0, self.size_of_headers, 0);
        for &(srva, vsize, raw_off, raw_size) in &self.sections {
            // The loader maps min(raw, virtual) bytes of a section and
            // zeros the rest (a section with no virtual size maps its raw
            // size).
            let n = if vsize == 0 {
                raw_size
            } else {
                raw_size.min(vsize)
            };
            copy(srva, n, raw_off);
        }
        Ok(())
    }
}

/// What the headers of an image give the walker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Headers {
    pub size_of_image: u32,
    pub size_of_headers: u32,
    pub time_date_stamp: u32,
    /// IMAGE_DIRECTORY_ENTRY_EXCEPTION: the RUNTIME_FUNCTION table.
    pub exception: Option<(u32, u32)>,
    pub export: Option<(u32, u32)>,
    /// IMAGE_DIRECTORY_ENTRY_IMPORT: the import descriptors.
    pub import: Option<(u32, u32)>,
    /// IMAGE_DIRECTORY_ENTRY_LOAD_CONFIG: where CFG's dispatch pointer is.
    pub load_config: Option<(u32, u32)>,
    section_table: usize,
    sections: usize,
}

/// Parse PE headers from bytes that start at the image's first byte.
pub(crate) fn headers_of(bytes: &[u8]) -> Result<Headers, String> {
    let b = Le(bytes);
    if b.bytes(0, 2) != Some(b"MZ") {
        return Err(format!(
            "it does not start with 'MZ' ({:02x?})",
            b.bytes(0, 2).unwrap_or(&[])
        ));
    }
    let e_lfanew = b.u32(0x3C).unwrap_or(0) as usize;
    if !(0x40..=crate::kernel::pe::MAX_E_LFANEW as usize).contains(&e_lfanew) {
        return Err(format!("e_lfanew {e_lfanew:#x} is out of range"));
    }
    let header = Header::parse(bytes).map_err(|e| e.to_string())?;
    let opt = header
        .optional_header
        .ok_or_else(|| "there is no optional header".to_string())?;
    let dir = |d: Option<&goblin::pe::data_directories::DataDirectory>| {
        d.filter(|d| d.virtual_address != 0 && d.size != 0)
            .map(|d| (d.virtual_address, d.size))
    };
    Ok(Headers {
        size_of_image: opt.windows_fields.size_of_image,
        size_of_headers: opt.windows_fields.size_of_headers,
        time_date_stamp: header.coff_header.time_date_stamp,
        exception: dir(opt.data_directories.get_exception_table()),
        export: dir(opt.data_directories.get_export_table()),
        import: dir(opt.data_directories.get_import_table()),
        load_config: dir(opt.data_directories.get_load_config_table()),
        section_table: e_lfanew + 4 + 20 + usize::from(header.coff_header.size_of_optional_header),
        sections: usize::from(header.coff_header.number_of_sections),
    })
}

/// Parse `n` section headers from `table` (40 bytes each).
pub(crate) fn parse_sections(table: &[u8], n: usize) -> Vec<SectionHeader> {
    table
        .chunks_exact(40)
        .take(n.min(MAX_SECTIONS))
        .map(|c| {
            let b = Le(c);
            let raw = &c[..8];
            let end = raw.iter().position(|&x| x == 0).unwrap_or(8);
            SectionHeader {
                name: crate::bytes::escape_ascii(&raw[..end]),
                virtual_size: b.u32(8).unwrap_or(0),
                rva: b.u32(12).unwrap_or(0),
                raw_size: b.u32(16).unwrap_or(0),
                raw_offset: b.u32(20).unwrap_or(0),
                characteristics: b.u32(36).unwrap_or(0),
            }
        })
        .collect()
}

/// Why a module's image bytes could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// A read past SizeOfImage.
    #[error(
        "{image}: {len:#x} bytes at RVA {rva:#x} lie outside the image (SizeOfImage {size_of_image:#x})"
    )]
    OutsideImage {
        /// The module's name or the file's path.
        image: String,
        /// Where the read starts.
        rva: u64,
        /// Bytes asked for.
        len: u64,
        /// The image's SizeOfImage.
        size_of_image: u32,
    },
    /// A page of the mapped image could not be read (paged out, or not in
    /// the dump).
    #[error("{image}: cannot read the page at RVA {rva:#x}: {cause}")]
    Unreadable {
        /// The module's name.
        image: String,
        /// The page's RVA.
        rva: u32,
        /// Why the read failed.
        cause: MemoryError,
    },
    /// The PE headers do not parse or do not fit the bytes.
    #[error("{image}: the headers are malformed: {detail}")]
    Malformed {
        /// The module's name or the file's path.
        image: String,
        /// What is wrong.
        detail: String,
    },
    /// The image, from where it is loaded, would run past the end of the
    /// address space (a hostile DllBase or ImageBase, or SizeOfImage).
    #[error(
        "{image}: loaded at {base:#x} with SizeOfImage {size_of_image:#x}, it would end past the top of the address space"
    )]
    PastAddressSpace {
        /// The module's name or the file's path.
        image: String,
        /// Where it is loaded.
        base: u64,
        /// Its SizeOfImage.
        size_of_image: u32,
    },
    /// The module has read its [`MAX_CACHED_PAGES`] pages already.
    #[error("{image}: more than {MAX_CACHED_PAGES} pages were asked for; the rest is refused")]
    Budget {
        /// The module's name.
        image: String,
    },
}

/// Where a module image's bytes come from.
#[derive(Debug, Clone)]
pub enum ImageOrigin {
    /// The image mapped in the target's memory.
    Memory,
    /// An image file (its path or store location).
    File(String),
}

impl fmt::Display for ImageOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageOrigin::Memory => f.write_str("memory"),
            ImageOrigin::File(p) => write!(f, "image file {p}"),
        }
    }
}

/// Bytes read to get images and stacks, for a bench or a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadStats {
    /// Reads of target memory.
    pub reads: u64,
    /// Bytes read.
    pub bytes: u64,
}

impl ReadStats {
    /// Add another count to this one.
    pub fn add(&mut self, o: &ReadStats) {
        self.reads += o.reads;
        self.bytes += o.bytes;
    }
}

/// One module's image, read lazily by page.
pub(crate) struct ModuleImage {
    name: String,
    base: KernelVa,
    file: Option<Arc<ImageFile>>,
    pub headers: Headers,
    pages: HashMap<u32, Result<Box<[u8]>, MemoryError>>,
}

impl ModuleImage {
    /// Open a module: the image file the locator gives for it (when its
    /// identity matches), else the image in memory. Only the header page
    /// is read from memory, and not even that when the caller knows the
    /// TimeDateStamp and a file is found.
    pub fn open<M: Memory + ?Sized>(
        mem: &M,
        module: &StackModule,
        locator: Option<&dyn ImageLocator>,
        stats: &mut ReadStats,
        notes: &mut Vec<String>,
    ) -> Result<Self, ImageError> {
        let mut img = Self {
            name: module.name.clone(),
            base: module.base,
            file: None,
            headers: Headers {
                size_of_image: module.size,
                size_of_headers: PAGE_SIZE as u32,
                time_date_stamp: 0,
                exception: None,
                export: None,
                import: None,
                load_config: None,
                section_table: 0,
                sections: 0,
            },
            pages: HashMap::new(),
        };
        let want = |stamp| ImageRequest {
            name: &module.name,
            time_date_stamp: stamp,
            size_of_image: module.size,
        };
        if let (Some(loc), Some(stamp)) = (locator, module.time_date_stamp)
            && img.try_file(loc, &want(stamp), notes)
        {
            return Ok(img);
        }
        let headers = img.read_headers_from_memory(mem, stats)?;
        img.headers = headers;
        if let Some(loc) = locator
            && module.time_date_stamp.is_none()
            && img.try_file(loc, &want(headers.time_date_stamp), notes)
        {
            return Ok(img);
        }
        Ok(img)
    }

    fn try_file(
        &mut self,
        loc: &dyn ImageLocator,
        req: &ImageRequest<'_>,
        notes: &mut Vec<String>,
    ) -> bool {
        match loc.locate(req) {
            Ok(Some(f)) => {
                if f.time_date_stamp != req.time_date_stamp || f.size_of_image != req.size_of_image
                {
                    notes.push(format!(
                        "{}: the image file {} is TimeDateStamp {:#x} SizeOfImage {:#x}, not {:#x} {:#x}; reading the image from memory",
                        self.name, f.origin, f.time_date_stamp, f.size_of_image, req.time_date_stamp, req.size_of_image
                    ));
                    return false;
                }
                match headers_of(&f.bytes) {
                    Ok(h) => {
                        self.headers = h;
                        self.pages.clear();
                        self.file = Some(Arc::new(f));
                        true
                    }
                    Err(e) => {
                        notes.push(format!("{}: the image file {}: {e}", self.name, f.origin));
                        false
                    }
                }
            }
            Ok(None) => false,
            Err(e) => {
                notes.push(format!("{}: looking for its image file: {e}", self.name));
                false
            }
        }
    }

    fn read_headers_from_memory<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        stats: &mut ReadStats,
    ) -> Result<Headers, ImageError> {
        let first = self.read(mem, 0, PAGE as u32, stats)?;
        let declared = Le(&first)
            .u32(0x3C)
            .and_then(|e| Le(&first).u32(e as usize + 24 + 0x3C));
        // Headers longer than a page (rare) are read whole, up to the cap.
        let len = match declared {
            Some(n) if n as usize > PAGE && n <= MAX_HEADERS => n,
            _ => PAGE as u32,
        };
        let bytes = if len as usize > PAGE {
            self.read(mem, 0, len, stats)?
        } else {
            first
        };
        let h = headers_of(&bytes).map_err(|detail| ImageError::Malformed {
            image: self.describe(),
            detail,
        })?;
        if h.size_of_image != self.headers.size_of_image {
            // The loader entry's size bounds reads; a header that
            // disagrees is noted by the caller through the warning path,
            // and the smaller bound wins.
            let mut h2 = h;
            h2.size_of_image = h.size_of_image.min(self.headers.size_of_image);
            return Ok(h2);
        }
        Ok(h)
    }

    /// The image's section table (read through the page cache).
    pub fn sections<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        stats: &mut ReadStats,
    ) -> Result<Vec<SectionHeader>, ImageError> {
        let (at, n) = (
            self.headers.section_table,
            self.headers.sections.min(MAX_SECTIONS),
        );
        if at == 0 || n == 0 {
            return Ok(Vec::new());
        }
        let at = u32::try_from(at).map_err(|_| ImageError::Malformed {
            image: self.describe(),
            detail: format!("the section table at {at:#x} is past 4 GiB"),
        })?;
        let table = self.read(mem, at, (40 * n) as u32, stats)?;
        Ok(parse_sections(&table, n))
    }

    pub fn origin(&self) -> ImageOrigin {
        match &self.file {
            Some(f) => ImageOrigin::File(f.origin.clone()),
            None => ImageOrigin::Memory,
        }
    }

    pub fn base(&self) -> KernelVa {
        self.base
    }

    pub fn describe(&self) -> String {
        format!("{} at {}", self.name, self.base)
    }

    /// `len` bytes at `rva` (checked against SizeOfImage).
    pub fn read<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        rva: u32,
        len: u32,
        stats: &mut ReadStats,
    ) -> Result<Vec<u8>, ImageError> {
        let end = u64::from(rva) + u64::from(len);
        if end > u64::from(self.headers.size_of_image) {
            return Err(ImageError::OutsideImage {
                image: self.describe(),
                rva: u64::from(rva),
                len: u64::from(len),
                size_of_image: self.headers.size_of_image,
            });
        }
        let mut out = vec![0u8; len as usize];
        if let Some(f) = &self.file {
            f.read_rva(rva, &mut out)?;
            return Ok(out);
        }
        let mut done = 0usize;
        while done < out.len() {
            let cur = rva + done as u32;
            let page = cur / PAGE as u32;
            let at = (cur % PAGE as u32) as usize;
            let n = (PAGE - at).min(out.len() - done);
            let bytes = self.page(mem, page, stats)?;
            out[done..done + n].copy_from_slice(&bytes[at..at + n]);
            done += n;
        }
        Ok(out)
    }

    fn page<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        page: u32,
        stats: &mut ReadStats,
    ) -> Result<&[u8], ImageError> {
        if !self.pages.contains_key(&page) {
            if self.pages.len() >= MAX_CACHED_PAGES {
                return Err(ImageError::Budget {
                    image: self.describe(),
                });
            }
            let va = self.base.wrapping_add(u64::from(page) * PAGE_SIZE);
            let mut buf = vec![0u8; PAGE].into_boxed_slice();
            stats.reads += 1;
            stats.bytes += PAGE_SIZE;
            let r = mem.read_virtual(va, &mut buf).map(|()| buf);
            self.pages.insert(page, r);
        }
        match &self.pages[&page] {
            Ok(b) => Ok(b),
            Err(cause) => Err(ImageError::Unreadable {
                image: self.describe(),
                rva: page * PAGE as u32,
                cause: cause.clone(),
            }),
        }
    }
}
