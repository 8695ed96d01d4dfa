//! The dump read with nothing but kdmp-parser and the committed
//! ground-truth manifests: the layouts (`testdata/nt/<build>/layout.json`,
//! parsed here with serde_json), a virtual reader in pieces that never
//! cross a 4 KiB boundary, and the kernel's hashes and tag display.

use kdmp_parser::gxa::{Gpa, Gva, Gxa};
use kdmp_parser::parse::KernelDumpParser;
use kdmp_parser::{phys, virt};
use pooldump_kit::NtBuild;
use serde_json::Value;

pub(crate) const PAGE: u64 = 0x1000;

/// `testdata/nt/<build>/layout.json`.
pub(crate) struct Layout {
    v: Value,
    pub family: String,
}

/// A struct member: byte offset and size of its storage unit, and for a
/// bitfield its position and length in that unit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub offset: usize,
    pub size: usize,
    pub bits: Option<(u32, u32)>,
}

impl Field {
    pub(crate) fn get(&self, entry: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..self.size].copy_from_slice(&entry[self.offset..self.offset + self.size]);
        let v = u64::from_le_bytes(w);
        match self.bits {
            Some((pos, len)) => (v >> pos) & mask(len),
            None => v,
        }
    }

    /// Width in bits of the value.
    pub(crate) fn width(&self) -> u32 {
        self.bits.map_or(self.size as u32 * 8, |(_, len)| len)
    }
}

pub(crate) fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

impl Layout {
    pub(crate) fn load(build: NtBuild) -> Layout {
        let path = crate::support::repo_root()
            .join("testdata/nt")
            .join(build.name())
            .join("layout.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let family = v["family"].as_str().unwrap_or("?").to_string();
        Layout { v, family }
    }

    pub(crate) fn sym(&self, name: &str) -> Option<&Value> {
        self.v["symbols"].get(name)
    }

    pub(crate) fn rva(&self, name: &str) -> u64 {
        self.sym(name)
            .and_then(|s| s["rva"].as_u64())
            .unwrap_or_else(|| panic!("{}: no symbol {name}", self.family))
    }

    pub(crate) fn size_of(&self, ty: &str) -> usize {
        self.v["types"][ty]["size"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no type {ty}", self.family)) as usize
    }

    pub(crate) fn field(&self, ty: &str, name: &str) -> Field {
        let f = &self.v["types"][ty]["fields"][name];
        let offset = f["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no field {ty}.{name}", self.family));
        let bits = match (f["bit_position"].as_u64(), f["bit_length"].as_u64()) {
            (Some(p), Some(l)) => Some((p as u32, l as u32)),
            _ => None,
        };
        Field {
            offset: offset as usize,
            size: f["size"].as_u64().expect("field size") as usize,
            bits,
        }
    }
}

/// kdmp-parser's virtual reader, used in pieces that never cross a 4 KiB
/// boundary (see the module comment).
pub(crate) struct Kd<'p> {
    pub parser: &'p KernelDumpParser,
    pub virt: virt::Reader<'p>,
}

impl<'p> Kd<'p> {
    pub(crate) fn new(parser: &'p KernelDumpParser) -> Self {
        Self {
            parser,
            virt: virt::Reader::new(parser),
        }
    }

    pub(crate) fn try_read(
        &self,
        va: u64,
        len: usize,
    ) -> Result<Vec<u8>, kdmp_parser::error::Error> {
        let mut out = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let cur = va + done as u64;
            let n = ((PAGE - cur % PAGE) as usize).min(len - done);
            self.virt
                .read_exact(Gva::new(cur), &mut out[done..done + n])?;
            done += n;
        }
        Ok(out)
    }

    pub(crate) fn read(&self, va: u64, len: usize, what: &str) -> Vec<u8> {
        self.try_read(va, len)
            .unwrap_or_else(|e| panic!("kdmp-parser cannot read {what} at {va:#x}: {e}"))
    }

    pub(crate) fn u64(&self, va: u64, what: &str) -> u64 {
        u64::from_le_bytes(self.read(va, 8, what).try_into().expect("8 bytes"))
    }

    pub(crate) fn u32(&self, va: u64, what: &str) -> u32 {
        u32::from_le_bytes(self.read(va, 4, what).try_into().expect("4 bytes"))
    }

    pub(crate) fn translate(&self, va: u64) -> Option<u64> {
        self.virt
            .translate(Gva::new(va))
            .ok()
            .map(|t| t.gpa().u64())
    }

    /// One whole physical page.
    pub(crate) fn page(&self, pfn: u64) -> Vec<u8> {
        let mut b = vec![0u8; PAGE as usize];
        phys::Reader::new(self.parser)
            .read_exact(Gpa::new(pfn * PAGE), &mut b)
            .unwrap_or_else(|e| panic!("kdmp-parser cannot read PFN {pfn:#x}: {e}"));
        b
    }
}

/// PoolMon's display of a tag: the four bytes in memory order, escaping
/// non-printables as `\xNN`.
pub(crate) fn tag_text(v: u32) -> String {
    v.to_le_bytes()
        .iter()
        .map(|&b| {
            if (0x20..0x7F).contains(&b) {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// The tracker hash (docs/pool-structures.md §2).
pub(crate) fn tracker_hash(key: u32) -> u64 {
    let h = 40543u64 * key as u64;
    ((h as u32) ^ ((h >> 32) as u32)) as u64
}

/// The big-page table hash (docs/pool-structures.md §3).
pub(crate) fn big_page_hash(va: u64) -> u64 {
    let h = 40543u64 * ((va >> 12) as u32) as u64;
    ((h as u32) ^ ((h >> 32) as u32)) as u64
}
