//! Minimal reading of the committed PE files, to lay them out in memory as
//! the loader does (sections at their RVAs). The kit trusts these files: it
//! built them.

pub struct PeImage<'a> {
    pub file: &'a [u8],
    pub size_of_image: u64,
    pub size_of_headers: u64,
    pub entry_rva: u64,
    pub timestamp: u32,
    pub sections: Vec<PeSection>,
    /// File offset of OptionalHeader.ImageBase.
    pub image_base_offset: usize,
}

pub struct PeSection {
    pub name: String,
    pub rva: u64,
    pub virtual_size: u64,
    pub raw_offset: u64,
    pub raw_size: u64,
    pub characteristics: u32,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

impl<'a> PeImage<'a> {
    pub fn parse(file: &'a [u8]) -> Self {
        assert_eq!(&file[..2], b"MZ");
        let pe = u32_at(file, 0x3C) as usize;
        assert_eq!(&file[pe..pe + 4], b"PE\0\0");
        let coff = pe + 4;
        let nsec = u16_at(file, coff + 2) as usize;
        let timestamp = u32_at(file, coff + 4);
        let opt_size = u16_at(file, coff + 16) as usize;
        let opt = coff + 20;
        assert_eq!(u16_at(file, opt), 0x20B, "PE32+ expected");
        let entry_rva = u32_at(file, opt + 16) as u64;
        let size_of_image = u32_at(file, opt + 56) as u64;
        let size_of_headers = u32_at(file, opt + 60) as u64;
        let sec0 = opt + opt_size;
        let sections = (0..nsec)
            .map(|i| {
                let s = sec0 + 40 * i;
                let name = String::from_utf8_lossy(&file[s..s + 8])
                    .trim_end_matches('\0')
                    .to_string();
                PeSection {
                    name,
                    virtual_size: u32_at(file, s + 8) as u64,
                    rva: u32_at(file, s + 12) as u64,
                    raw_size: u32_at(file, s + 16) as u64,
                    raw_offset: u32_at(file, s + 20) as u64,
                    characteristics: u32_at(file, s + 36),
                }
            })
            .collect();
        PeImage {
            file,
            size_of_image,
            size_of_headers,
            entry_rva,
            timestamp,
            sections,
            image_base_offset: opt + 24,
        }
    }

    /// The image as the loader maps it, with OptionalHeader.ImageBase set
    /// to the load address (as the kernel's loader leaves it).
    pub fn mapped(&self, load_base: u64) -> Vec<u8> {
        let mut img = vec![0u8; self.size_of_image as usize];
        let h = self.size_of_headers as usize;
        img[..h].copy_from_slice(&self.file[..h]);
        img[self.image_base_offset..self.image_base_offset + 8]
            .copy_from_slice(&load_base.to_le_bytes());
        for s in &self.sections {
            let n = s.raw_size.min(s.virtual_size.max(s.raw_size)) as usize;
            let n = n.min(self.file.len() - s.raw_offset as usize);
            let dst = s.rva as usize;
            let n = n.min(img.len() - dst);
            img[dst..dst + n]
                .copy_from_slice(&self.file[s.raw_offset as usize..s.raw_offset as usize + n]);
        }
        img
    }

    /// The section holding `rva`.
    pub fn section_of(&self, rva: u64) -> Option<&PeSection> {
        self.sections.iter().find(|s| {
            rva >= s.rva && rva < s.rva + s.virtual_size.max(s.raw_size).div_ceil(0x1000) * 0x1000
        })
    }
}
