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
    /// OptionalHeader.ImageBase as linked.
    pub image_base: u64,
    /// Data directories (RVA, size): 0 exports, 1 imports, 5 base relocations.
    pub directories: Vec<(u64, u64)>,
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
        let image_base = u64::from_le_bytes(file[opt + 24..opt + 32].try_into().unwrap());
        let ndirs = (u32_at(file, opt + 108) as usize).min(16);
        let directories = (0..ndirs)
            .map(|i| {
                let d = opt + 112 + 8 * i;
                (u32_at(file, d) as u64, u32_at(file, d + 4) as u64)
            })
            .collect();
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
            image_base,
            directories,
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

    /// The image as the loader leaves it at `load_base`: mapped, base
    /// relocations applied (IMAGE_REL_BASED_DIR64) and the import address
    /// table bound through `resolve(dll, name)`. An import `resolve` does not
    /// know keeps the address of its hint/name entry, as an unbound IAT
    /// holds (calling it would fault).
    pub fn loaded(&self, load_base: u64, resolve: &dyn Fn(&str, &str) -> Option<u64>) -> Vec<u8> {
        let mut img = self.mapped(load_base);
        self.relocate(&mut img, load_base);
        self.bind_imports(&mut img, resolve);
        img
    }

    fn directory(&self, i: usize) -> Option<(usize, usize)> {
        self.directories
            .get(i)
            .filter(|d| d.0 != 0 && d.1 != 0)
            .map(|d| (d.0 as usize, d.1 as usize))
    }

    fn relocate(&self, img: &mut [u8], load_base: u64) {
        let delta = load_base.wrapping_sub(self.image_base);
        let Some((rva, size)) = self.directory(5) else {
            return;
        };
        let mut at = rva;
        while at + 8 <= rva + size {
            let page = u32_at(img, at) as usize;
            let block = u32_at(img, at + 4) as usize;
            if block < 8 {
                break;
            }
            for e in (at + 8..at + block).step_by(2) {
                let v = u16_at(img, e);
                match v >> 12 {
                    0 => {}
                    10 => {
                        let o = page + (v & 0xFFF) as usize;
                        let old = u64::from_le_bytes(img[o..o + 8].try_into().unwrap());
                        img[o..o + 8].copy_from_slice(&old.wrapping_add(delta).to_le_bytes());
                    }
                    t => panic!("relocation type {t} in a committed image"),
                }
            }
            at += block;
        }
    }

    fn bind_imports(&self, img: &mut [u8], resolve: &dyn Fn(&str, &str) -> Option<u64>) {
        let Some((rva, _)) = self.directory(1) else {
            return;
        };
        let cstr = |img: &[u8], o: usize| -> String {
            let end = img[o..]
                .iter()
                .position(|b| *b == 0)
                .map_or(img.len(), |n| o + n);
            String::from_utf8_lossy(&img[o..end]).into_owned()
        };
        let mut d = rva;
        loop {
            let ilt = u32_at(img, d) as usize;
            let name = u32_at(img, d + 12) as usize;
            let iat = u32_at(img, d + 16) as usize;
            if name == 0 {
                break;
            }
            let dll = cstr(img, name);
            let lookup = if ilt != 0 { ilt } else { iat };
            for i in 0.. {
                let e =
                    u64::from_le_bytes(img[lookup + 8 * i..lookup + 8 * i + 8].try_into().unwrap());
                if e == 0 {
                    break;
                }
                assert!(e >> 63 == 0, "import by ordinal in a committed image");
                let func = cstr(img, (e & 0x7FFF_FFFF) as usize + 2);
                if let Some(va) = resolve(&dll, &func) {
                    let o = iat + 8 * i;
                    img[o..o + 8].copy_from_slice(&va.to_le_bytes());
                }
            }
            d += 20;
        }
    }

    /// Exported names and their RVAs.
    pub fn exports(&self) -> Vec<(String, u64)> {
        let Some((rva, _)) = self.directory(0) else {
            return Vec::new();
        };
        let img = self.mapped(self.image_base);
        let n = u32_at(&img, rva + 24) as usize;
        let funcs = u32_at(&img, rva + 28) as usize;
        let names = u32_at(&img, rva + 32) as usize;
        let ords = u32_at(&img, rva + 36) as usize;
        (0..n)
            .map(|i| {
                let name_rva = u32_at(&img, names + 4 * i) as usize;
                let end = img[name_rva..].iter().position(|b| *b == 0).unwrap_or(0);
                let name = String::from_utf8_lossy(&img[name_rva..name_rva + end]).into_owned();
                let ord = u16_at(&img, ords + 2 * i) as usize;
                (name, u32_at(&img, funcs + 4 * ord) as u64)
            })
            .collect()
    }

    /// The section holding `rva`.
    pub fn section_of(&self, rva: u64) -> Option<&PeSection> {
        self.sections.iter().find(|s| {
            rva >= s.rva && rva < s.rva + s.virtual_size.max(s.raw_size).div_ceil(0x1000) * 0x1000
        })
    }
}
