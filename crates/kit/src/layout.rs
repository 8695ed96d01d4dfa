//! The ground-truth manifest of each committed nt build
//! (`testdata/nt/<build>/layout.json`): struct layouts copied from the real
//! build's symbol table, and the RVAs of the globals in the synthetic image.
//!
//! The kit places data with these layouts; pooldump must find the same
//! layouts independently in the PDB. Nothing here reads the PDB.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub family: String,
    pub build: u32,
    pub build_string: String,
    pub isf: String,
    pub pdb: PdbInfo,
    pub image: ImageInfo,
    pub symbols: BTreeMap<String, Symbol>,
    pub types: BTreeMap<String, TypeInfo>,
    #[serde(default)]
    pub enums: BTreeMap<String, BTreeMap<String, i64>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PdbInfo {
    pub file: String,
    pub name: String,
    pub guid: String,
    pub age: u32,
    pub store_key: String,
    pub has_global_data_records: bool,
}

/// The identity fields of a PDB (drivers' manifests carry only these).
#[derive(Debug, Clone, Deserialize)]
pub struct PdbInfoLite {
    pub name: String,
    pub guid: String,
    pub age: u32,
    pub store_key: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageInfo {
    pub file: String,
    pub image_base: u64,
    pub size_of_image: u64,
    pub timestamp: u32,
    pub entry_rva: u64,
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Section {
    pub name: String,
    pub rva: u64,
    pub virtual_size: u64,
    pub raw_size: u64,
    pub characteristics: u32,
}

impl Section {
    pub const EXECUTE: u32 = 0x2000_0000;
    pub const WRITE: u32 = 0x8000_0000;
}

#[derive(Debug, Clone, Deserialize)]
pub struct Symbol {
    pub rva: u64,
    #[serde(default)]
    pub size: u64,
    pub kind: String,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default, rename = "type")]
    pub ty: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TypeInfo {
    pub size: u64,
    pub fields: BTreeMap<String, Field>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Field {
    pub offset: u64,
    pub size: u64,
    #[serde(default)]
    pub bit_position: Option<u32>,
    #[serde(default)]
    pub bit_length: Option<u32>,
    #[serde(default, rename = "type")]
    pub ty: Option<String>,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub element_size: Option<u64>,
}

impl Field {
    /// A pointer-typed member (the manifest says "pointer").
    pub fn is_pointer(&self) -> bool {
        self.ty.as_deref() == Some("pointer")
    }
}

impl Manifest {
    pub fn ty(&self, name: &str) -> &TypeInfo {
        self.types
            .get(name)
            .unwrap_or_else(|| panic!("{}: type {name} is not in the manifest", self.family))
    }

    pub fn has_type(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }

    pub fn sym(&self, name: &str) -> Option<&Symbol> {
        self.symbols.get(name)
    }

    pub fn rva(&self, name: &str) -> u64 {
        self.sym(name)
            .unwrap_or_else(|| panic!("{}: symbol {name} is not in the manifest", self.family))
            .rva
    }

    pub fn enum_value(&self, en: &str, name: &str) -> Option<i64> {
        self.enums.get(en)?.get(name).copied()
    }

    /// Byte offset of a dotted field path (`Vs.SystemVaRegions`), with
    /// `[i]` indexing into arrays (`SystemVaRegions[3].BaseAddress`).
    pub fn offset_of(&self, ty: &str, path: &str) -> u64 {
        self.field_path(ty, path).0
    }

    /// Offset and final field of a dotted path.
    pub fn field_path(&self, ty: &str, path: &str) -> (u64, Field) {
        let mut cur = ty.to_string();
        let mut off = 0u64;
        let mut last = None;
        for part in path.split('.') {
            let (name, idx) = match part.split_once('[') {
                Some((n, rest)) => (
                    n,
                    Some(
                        rest.trim_end_matches(']')
                            .parse::<u64>()
                            .expect("array index"),
                    ),
                ),
                None => (part, None),
            };
            let t = self.ty(&cur);
            let f = t
                .fields
                .get(name)
                .unwrap_or_else(|| panic!("{}: {cur} has no field {name}", self.family))
                .clone();
            off += f.offset;
            if let Some(i) = idx {
                let es = f.element_size.expect("indexed field is an array");
                assert!(
                    i < f.count.unwrap_or(0),
                    "{cur}.{name}[{i}] is out of bounds"
                );
                off += i * es;
            }
            if let Some(t) = &f.ty {
                cur = t.clone();
            }
            last = Some(f);
        }
        (off, last.expect("non-empty path"))
    }
}

/// A struct instance being filled in, with named-field setters that honour
/// bitfields.
pub struct StructBuf<'m> {
    m: &'m Manifest,
    ty: String,
    pub bytes: Vec<u8>,
}

impl<'m> StructBuf<'m> {
    pub fn new(m: &'m Manifest, ty: &str) -> Self {
        let size = m.ty(ty).size as usize;
        Self {
            m,
            ty: ty.to_string(),
            bytes: vec![0; size],
        }
    }

    /// Set a field (or a dotted path) to `v`, truncated to the field or
    /// bitfield width.
    pub fn set(&mut self, path: &str, v: u64) -> &mut Self {
        let (off, f) = self.m.field_path(&self.ty, path);
        let off = off as usize;
        let unit = match f.count {
            Some(_) => f.element_size.unwrap_or(f.size),
            None => f.size,
        } as usize;
        assert!(
            unit <= 8,
            "{}.{path} is {unit} bytes; set it with set_bytes",
            self.ty
        );
        let mut cur = [0u8; 8];
        cur[..unit].copy_from_slice(&self.bytes[off..off + unit]);
        let mut word = u64::from_le_bytes(cur);
        match (f.bit_position, f.bit_length) {
            (Some(pos), Some(len)) => {
                let mask = if len >= 64 {
                    u64::MAX
                } else {
                    (1u64 << len) - 1
                } << pos;
                word = (word & !mask) | ((v << pos) & mask);
            }
            _ => word = v,
        }
        self.bytes[off..off + unit].copy_from_slice(&word.to_le_bytes()[..unit]);
        self
    }

    /// Set a field only if the build has it.
    pub fn set_if(&mut self, path: &str, v: u64) -> &mut Self {
        if self
            .m
            .ty(&self.ty)
            .fields
            .contains_key(path.split(['.', '[']).next().unwrap_or(path))
        {
            self.set(path, v);
        }
        self
    }

    pub fn set_bytes(&mut self, path: &str, b: &[u8]) -> &mut Self {
        let off = self.m.offset_of(&self.ty, path) as usize;
        self.bytes[off..off + b.len()].copy_from_slice(b);
        self
    }
}
