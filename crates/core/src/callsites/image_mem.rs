//! A driver file as memory: its sections mapped at its preferred ImageBase,
//! as the loader would map them, so the code that reads modules from a
//! dump (the stack walker's image cache, the symbolizer, the call-site
//! scan) reads a file the same way.

use std::path::Path;
use std::sync::Arc;

use crate::addr::{KernelVa, PhysAddr};
use crate::memory::{Memory, MemoryError, Translation};
use crate::stack::{ImageError, ImageFile, StackModule};

/// Files larger than this are refused (a driver is a few MiB).
pub const MAX_IMAGE_FILE: u64 = 512 << 20;

/// A PE file mapped at its ImageBase.
pub struct ImageMemory {
    file: ImageFile,
    name: String,
    base: u64,
    bytes: Arc<[u8]>,
}

/// Why an image file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes is more than the {MAX_IMAGE_FILE} a driver image may have")]
    TooLarge { path: String, size: u64 },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{path}: not an x64 PE image: {detail}")]
    NotPe { path: String, detail: String },
}

impl ImageMemory {
    /// Read and parse the file at `path`.
    pub fn open(path: &Path) -> Result<Self, ImageFileError> {
        let p = path.display().to_string();
        let io = |source| ImageFileError::Io {
            path: p.clone(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_IMAGE_FILE {
            return Err(ImageFileError::TooLarge { path: p, size });
        }
        // The length above is 0 for a device or a pipe: the read itself is
        // capped too.
        let bytes: Arc<[u8]> = crate::input::read_capped(path, MAX_IMAGE_FILE, "a driver image")
            .map_err(|e| match e {
                crate::input::ReadError::Io { source, .. } => io(source),
                crate::input::ReadError::TooLarge { .. } => ImageFileError::TooLarge {
                    path: p.clone(),
                    size: MAX_IMAGE_FILE + 1,
                },
            })?
            .into();
        Self::from_bytes(&p, bytes)
    }

    /// Parse `bytes`; `origin` names them in messages.
    pub fn from_bytes(origin: &str, bytes: Arc<[u8]>) -> Result<Self, ImageFileError> {
        let not_pe = |detail: String| ImageFileError::NotPe {
            path: origin.to_string(),
            detail,
        };
        let h = goblin::pe::header::Header::parse(&bytes).map_err(|e| not_pe(e.to_string()))?;
        let opt = h
            .optional_header
            .ok_or_else(|| not_pe("there is no optional header".into()))?;
        if h.coff_header.machine != goblin::pe::header::COFF_MACHINE_X86_64 {
            return Err(not_pe(format!(
                "machine {:#x}, not x64 (0x8664)",
                h.coff_header.machine
            )));
        }
        let base = opt.windows_fields.image_base;
        let file = ImageFile::parse(origin, bytes.clone())?;
        if base.checked_add(u64::from(file.size_of_image())).is_none() || base & 0xFFF != 0 {
            return Err(not_pe(format!("ImageBase {base:#x} is not usable")));
        }
        let name = Path::new(origin)
            .file_name()
            .map_or_else(|| origin.to_string(), |n| n.to_string_lossy().into_owned());
        Ok(Self {
            file,
            name,
            base,
            bytes,
        })
    }

    /// The image as the one module of a stack walker.
    pub fn module(&self) -> StackModule {
        let mut m = StackModule::new(
            &self.name,
            KernelVa(self.base),
            self.file.size_of_image(),
            false,
        );
        m.time_date_stamp = Some(self.file.time_date_stamp());
        m
    }

    /// The address the image is placed at: its ImageBase.
    pub fn base(&self) -> KernelVa {
        KernelVa(self.base)
    }

    /// The file's name (the last component of the path it was opened from).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's bytes.
    pub fn file_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The parsed PE file.
    pub fn image(&self) -> &ImageFile {
        &self.file
    }

    fn rva(&self, va: KernelVa, len: usize) -> Result<u32, MemoryError> {
        let outside = MemoryError::page_not_present(va);
        let off = va.0.checked_sub(self.base).ok_or(outside.clone())?;
        let end = off.checked_add(len as u64).ok_or(outside.clone())?;
        if end > u64::from(self.file.size_of_image()) {
            return Err(outside);
        }
        Ok(off as u32)
    }
}

impl Memory for ImageMemory {
    fn describe(&self) -> String {
        self.file.origin().to_string()
    }
    /// An image file has no page tables.
    fn kernel_dtb(&self) -> PhysAddr {
        PhysAddr(0)
    }
    fn read_physical(&self, pa: PhysAddr, _buf: &mut [u8]) -> Result<(), MemoryError> {
        Err(MemoryError::not_in_source(pa))
    }
    fn translate(&self, va: KernelVa) -> Result<Translation, MemoryError> {
        Err(MemoryError::page_not_present(va))
    }
    fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), MemoryError> {
        let rva = self.rva(va, buf.len())?;
        self.file
            .read_rva(rva, buf)
            .map_err(|e| MemoryError::Transport(e.to_string()))
    }
    fn read_virtual_partial(&self, va: KernelVa, buf: &mut [u8]) -> Result<usize, MemoryError> {
        let avail = (u64::from(self.file.size_of_image()))
            .saturating_sub(va.0.wrapping_sub(self.base))
            .min(buf.len() as u64) as usize;
        if avail == 0 {
            return Err(MemoryError::page_not_present(va));
        }
        self.read_virtual(va, &mut buf[..avail]).map(|()| avail)
    }
}
