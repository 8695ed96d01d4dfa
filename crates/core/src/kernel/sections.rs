//! The section table of a PE image, from its headers in memory or from an
//! image file, and the sections that can carry a pool tag as evidence of
//! who allocates it: code and read-only data.
//!
//! Reading only those (instead of SizeOfImage bytes) is what keeps the
//! Mapped_Driver search cheap over KDNET: writable data, the BSS, the
//! exception and relocation tables, resources and discarded INIT code hold
//! no tag that says anything about the driver, and nt's writable data alone
//! can be megabytes.

use goblin::pe::header::Header;
use goblin::pe::section_table::{
    IMAGE_SCN_CNT_CODE, IMAGE_SCN_CNT_INITIALIZED_DATA, IMAGE_SCN_MEM_DISCARDABLE,
    IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_WRITE, SectionTable,
};

use crate::addr::KernelVa;
use crate::kernel::pe::{PeError, read_pe_image};
use crate::memory::Memory;

/// PE/COFF allows at most 96 sections.
pub const MAX_SECTIONS: usize = 96;

/// One entry of an image's section table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SectionHeader {
    /// The 8-byte name, NULs trimmed, non-printable bytes escaped.
    pub name: String,
    /// VirtualAddress: the section's RVA once mapped.
    pub rva: u32,
    /// VirtualSize: its size once mapped, in bytes (0 from some linkers; see
    /// [`SectionHeader::mapped_size`]).
    pub virtual_size: u32,
    /// PointerToRawData: where its data is in the file.
    pub raw_offset: u32,
    /// SizeOfRawData: bytes of data in the file (file-aligned).
    pub raw_size: u32,
    /// Characteristics: the IMAGE_SCN_* flags (code, execute, read, write, ...).
    pub characteristics: u32,
}

impl SectionHeader {
    fn from_goblin(s: &SectionTable) -> Self {
        let raw = &s.name[..s.name.iter().position(|&c| c == 0).unwrap_or(8)];
        Self {
            name: crate::bytes::escape_ascii(raw),
            rva: s.virtual_address,
            virtual_size: s.virtual_size,
            raw_offset: s.pointer_to_raw_data,
            raw_size: s.size_of_raw_data,
            characteristics: s.characteristics,
        }
    }

    /// IMAGE_SCN_MEM_EXECUTE or IMAGE_SCN_CNT_CODE.
    pub fn is_code(&self) -> bool {
        self.characteristics & (IMAGE_SCN_MEM_EXECUTE | IMAGE_SCN_CNT_CODE) != 0
    }

    /// The bytes the loader maps: VirtualSize, or SizeOfRawData when a
    /// linker left VirtualSize 0 (as [`crate::stack::ImageFile::read_rva`]
    /// maps them).
    pub fn mapped_size(&self) -> u32 {
        if self.virtual_size != 0 {
            self.virtual_size
        } else {
            self.raw_size
        }
    }

    /// The file offset of `rva` when it lies in this section's raw data.
    pub fn file_offset(&self, rva: u32) -> Option<u32> {
        let off = rva.checked_sub(self.rva)?;
        (off < self.raw_size.min(self.mapped_size())).then(|| self.raw_offset.checked_add(off))?
    }

    fn contains(&self, rva: u32) -> bool {
        rva >= self.rva && u64::from(rva) < u64::from(self.rva) + u64::from(self.mapped_size())
    }
}

/// What the headers say about an image's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionLayout {
    /// TimeDateStamp from the COFF header.
    pub time_date_stamp: u32,
    /// SizeOfImage from the optional header, in bytes.
    pub size_of_image: u32,
    /// The section table, in table order (at most [`MAX_SECTIONS`]).
    pub sections: Vec<SectionHeader>,
    /// RVAs of the exception, base-relocation, resource and security
    /// directories: tables, not code or constants.
    pub tables: Vec<u32>,
}

impl SectionLayout {
    /// Parse the headers of an image (mapped, or the start of its file:
    /// the headers are the same bytes).
    pub fn parse(headers: &[u8]) -> Result<Self, String> {
        let h = Header::parse(headers).map_err(|e| e.to_string())?;
        let opt = h.optional_header.ok_or("no optional header")?;
        let n = usize::from(h.coff_header.number_of_sections);
        if n > MAX_SECTIONS {
            return Err(format!("{n} sections (PE allows {MAX_SECTIONS})"));
        }
        let mut off = h.dos_header.pe_pointer as usize
            + 4
            + goblin::pe::header::SIZEOF_COFF_HEADER
            + usize::from(h.coff_header.size_of_optional_header);
        let sections = h
            .coff_header
            .sections(headers, &mut off)
            .map_err(|e| format!("the section table: {e}"))?;
        let dd = &opt.data_directories;
        let tables = [
            dd.get_exception_table(),
            dd.get_base_relocation_table(),
            dd.get_resource_table(),
            dd.get_certificate_table(),
        ]
        .into_iter()
        .flatten()
        .filter(|d| d.size > 0)
        .map(|d| d.virtual_address)
        .collect();
        Ok(Self {
            time_date_stamp: h.coff_header.time_date_stamp,
            size_of_image: opt.windows_fields.size_of_image,
            sections: sections.iter().map(SectionHeader::from_goblin).collect(),
            tables,
        })
    }

    /// The sections that can hold a tag as evidence: code, and
    /// initialized read-only data, neither discarded after boot nor one of
    /// the image's tables; each within SizeOfImage.
    pub fn evidence(&self) -> impl Iterator<Item = &SectionHeader> {
        self.sections.iter().filter(|s| {
            let c = s.characteristics;
            let code = c & (IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_EXECUTE) != 0;
            let rodata = c & IMAGE_SCN_CNT_INITIALIZED_DATA != 0 && c & IMAGE_SCN_MEM_WRITE == 0;
            (code || rodata)
                && c & IMAGE_SCN_MEM_DISCARDABLE == 0
                && !self.tables.iter().any(|&t| s.contains(t))
                && s.mapped_size() > 0
                && u64::from(s.rva) + u64::from(s.mapped_size()) <= u64::from(self.size_of_image)
        })
    }

    /// Whether `other` (an image file's headers) describes the same image
    /// as this one (the headers in memory): the same TimeDateStamp,
    /// SizeOfImage and sections.
    pub fn same_image(&self, other: &SectionLayout) -> bool {
        self.time_date_stamp == other.time_date_stamp
            && self.size_of_image == other.size_of_image
            && self.sections.len() == other.sections.len()
            && self.sections.iter().zip(&other.sections).all(|(a, b)| {
                a.name == b.name
                    && a.rva == b.rva
                    && a.virtual_size == b.virtual_size
                    && a.characteristics == b.characteristics
            })
    }
}

/// Read the headers of the image mapped at `base` and parse its section
/// table.
pub fn read_section_layout<M: Memory + ?Sized>(
    mem: &M,
    base: KernelVa,
) -> Result<SectionLayout, PeError> {
    // read_pe_image checks the DOS and PE headers and bounds
    // SizeOfHeaders.
    let image = read_pe_image(mem, base)?;
    let mut headers = vec![0u8; image.size_of_headers as usize];
    mem.read_virtual(base, &mut headers)
        .map_err(|cause| PeError::Unreadable {
            what: "headers",
            va: base,
            cause,
        })?;
    SectionLayout::parse(&headers).map_err(|detail| PeError::Malformed { va: base, detail })
}

/// A section's bytes from an image file: SizeOfRawData from its file
/// offset, zero-filled to the mapped size; `None` if the file is too short.
pub fn file_section(file: &[u8], s: &SectionHeader) -> Option<Vec<u8>> {
    let mapped = s.mapped_size() as usize;
    let raw = (s.raw_size as usize).min(mapped);
    let start = s.raw_offset as usize;
    let bytes = file.get(start..start.checked_add(raw)?)?;
    let mut v = Vec::with_capacity(mapped);
    v.extend_from_slice(bytes);
    v.resize(mapped, 0);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::pe::test_image;

    #[test]
    fn the_test_image_has_one_read_only_section() {
        let img = test_image::image(b"x.pdb", 1);
        let l = SectionLayout::parse(&img[..0x400]).unwrap();
        assert_eq!(l.time_date_stamp, 0x5F00_1234);
        assert_eq!(l.size_of_image, 0x2000);
        assert_eq!(l.sections.len(), 1);
        assert_eq!(l.sections[0].name, ".rdata");
        assert!(l.same_image(&l.clone()));
        let mut other = l.clone();
        other.time_date_stamp += 1;
        assert!(!l.same_image(&other));
    }

    #[test]
    fn evidence_is_code_and_read_only_data_only() {
        let sec = |name: &str, rva, characteristics| SectionHeader {
            name: name.into(),
            rva,
            virtual_size: 0x800,
            raw_offset: 0,
            raw_size: 0x800,
            characteristics,
        };
        let l = SectionLayout {
            time_date_stamp: 0,
            size_of_image: 0x8000,
            sections: vec![
                sec(".text", 0x1000, 0x6000_0020),
                sec(".rdata", 0x2000, 0x4000_0040),
                sec(".data", 0x3000, 0xC000_0040),
                sec(".pdata", 0x4000, 0x4000_0040),
                sec("INIT", 0x5000, 0x6200_0020),
                sec("PAGE", 0x6000, 0x6000_0020),
                // Beyond SizeOfImage: hostile.
                sec("EVIL", 0x7C00, 0x6000_0020),
            ],
            tables: vec![0x4000],
        };
        let names: Vec<&str> = l.evidence().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".text", ".rdata", "PAGE"]);
    }

    #[test]
    fn file_sections_are_bounded_and_zero_filled() {
        let s = SectionHeader {
            name: ".text".into(),
            rva: 0x1000,
            virtual_size: 8,
            raw_offset: 2,
            raw_size: 4,
            characteristics: 0x20,
        };
        assert_eq!(
            file_section(&[9, 9, 1, 2, 3, 4], &s),
            Some(vec![1, 2, 3, 4, 0, 0, 0, 0])
        );
        assert_eq!(file_section(&[9, 9, 1], &s), None);
        let hostile = SectionHeader {
            raw_offset: u32::MAX,
            ..s
        };
        assert_eq!(file_section(&[0; 16], &hostile), None);
    }
}
