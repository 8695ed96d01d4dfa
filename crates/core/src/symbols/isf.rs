//! Volatility 3 symbol tables (ISF, `.json` or `.json.xz`) as a symbol
//! source: many users already have ISF packs for their builds
//! (JPCERTCC/Windows-Symbol-Tables, Volatility's own symbol packs).
//!
//! An ISF carries what pooldump needs: symbol RVAs (`symbols.*.address`),
//! struct/union layouts (`user_types`), enums and base types, plus the PDB
//! GUID and age in `metadata.windows.pdb`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::PdbIdentity;
use super::layout::{FieldLayout, Layouts, TypeLayout};
use crate::kernel::Guid;

/// An ISF's JSON larger than this is refused (real ntkrnlmp ISFs are
/// 4-12 MB): a hostile `.xz` must not decompress without bound.
pub const MAX_ISF_JSON: u64 = 256 << 20;

/// Why an ISF could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IsfError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid xz: {detail}")]
    Xz { path: PathBuf, detail: String },
    #[error("{path} decompresses to more than {MAX_ISF_JSON} bytes; refusing it")]
    TooLarge { path: PathBuf },
    #[error("{path} is not a Volatility ISF: {detail}")]
    Malformed { path: PathBuf, detail: String },
}

#[derive(Deserialize)]
struct Isf {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    base_types: BTreeMap<String, BaseType>,
    #[serde(default)]
    user_types: BTreeMap<String, UserType>,
    #[serde(default)]
    enums: BTreeMap<String, IsfEnum>,
    #[serde(default)]
    symbols: BTreeMap<String, IsfSymbol>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    windows: Option<WindowsMeta>,
}

#[derive(Deserialize)]
struct WindowsMeta {
    pdb: Option<PdbMeta>,
}

#[derive(Deserialize)]
struct PdbMeta {
    #[serde(rename = "GUID")]
    guid: String,
    age: u32,
    database: String,
}

#[derive(Deserialize)]
struct BaseType {
    size: u64,
}

#[derive(Deserialize)]
struct UserType {
    kind: String,
    size: u64,
    #[serde(default)]
    fields: BTreeMap<String, IsfField>,
}

#[derive(Deserialize)]
struct IsfField {
    offset: u64,
    #[serde(rename = "type")]
    ty: IsfType,
}

#[derive(Deserialize)]
struct IsfType {
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    subtype: Option<Box<IsfType>>,
    #[serde(default, rename = "type")]
    inner: Option<Box<IsfType>>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    bit_position: Option<u32>,
    #[serde(default)]
    bit_length: Option<u32>,
}

#[derive(Deserialize)]
struct IsfEnum {
    base: String,
    #[serde(default)]
    constants: BTreeMap<String, i64>,
}

#[derive(Deserialize)]
struct IsfSymbol {
    address: u64,
    #[serde(default, rename = "type")]
    ty: Option<IsfType>,
}

/// Read an ISF file (`.json`, or `.json.xz` by content).
pub fn read_isf(path: &Path) -> Result<(Option<PdbIdentity>, Layouts, Vec<String>), IsfError> {
    let io = |source| IsfError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut head = [0u8; 6];
    let mut reader = std::io::BufReader::new(file);
    let n = read_prefix(&mut reader, &mut head).map_err(io)?;
    let json = if head[..n] == [0xFD, b'7', b'z', b'X', b'Z', 0] {
        let mut out = Capped {
            buf: Vec::new(),
            cap: MAX_ISF_JSON,
        };
        let mut chain = std::io::Cursor::new(&head[..n]).chain(reader);
        let mut buffered = std::io::BufReader::new(&mut chain);
        match lzma_rs::xz_decompress(&mut buffered, &mut out) {
            Ok(()) => out.buf,
            Err(_) if out.buf.len() as u64 >= MAX_ISF_JSON => {
                return Err(IsfError::TooLarge {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => {
                return Err(IsfError::Xz {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                });
            }
        }
    } else {
        let mut buf = head[..n].to_vec();
        reader
            .take(MAX_ISF_JSON + 1)
            .read_to_end(&mut buf)
            .map_err(io)?;
        if buf.len() as u64 > MAX_ISF_JSON {
            return Err(IsfError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        buf
    };
    parse_isf(&json).map_err(|detail| IsfError::Malformed {
        path: path.to_path_buf(),
        detail,
    })
}

fn read_prefix(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A writer that refuses to grow past `cap`.
struct Capped {
    buf: Vec<u8>,
    cap: u64,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() as u64 + data.len() as u64 > self.cap {
            return Err(std::io::Error::other("decompressed size cap reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parse ISF JSON text.
pub fn parse_isf(json: &[u8]) -> Result<(Option<PdbIdentity>, Layouts, Vec<String>), String> {
    let isf: Isf = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let mut warnings = Vec::new();
    let identity = match isf.metadata.windows.as_ref().and_then(|w| w.pdb.as_ref()) {
        Some(p) => match parse_guid(&p.guid) {
            Some(guid) => Some(PdbIdentity {
                name: p.database.clone(),
                guid,
                age: p.age,
            }),
            None => {
                warnings.push(format!("metadata GUID '{}' is malformed", p.guid));
                None
            }
        },
        None => None,
    };
    let mut out = Layouts::default();
    for (name, s) in &isf.symbols {
        out.symbols.insert(name.clone(), s.address);
        if let Some(t) = &s.ty {
            let mut f = FieldLayout::default();
            if describe(&isf, t, &mut f, 0).is_ok() {
                out.symbol_sizes.insert(name.clone(), f.size);
            }
        }
    }
    for (name, e) in &isf.enums {
        out.enums.insert(name.clone(), e.constants.clone());
    }
    for (name, u) in &isf.user_types {
        let mut t = TypeLayout {
            size: u.size,
            union: u.kind == "union",
            fields: Vec::with_capacity(u.fields.len()),
        };
        for (fname, f) in &u.fields {
            let mut fl = FieldLayout {
                name: fname.clone(),
                offset: f.offset,
                ..Default::default()
            };
            match describe(&isf, &f.ty, &mut fl, 0) {
                Ok(()) => t.fields.push(fl),
                Err(e) => warnings.push(format!("{name}.{fname}: {e}; skipped")),
            }
        }
        t.sort();
        out.types.insert(name.clone(), t);
    }
    Ok((identity, out, warnings))
}

/// `06564D3477822C7D97F04852CBD5AFD6` (Data1..3 big-endian text) into
/// Windows byte order.
pub fn parse_guid(s: &str) -> Option<Guid> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok();
    let mut text = [0u8; 16];
    for (i, b) in text.iter_mut().enumerate() {
        *b = byte(i)?;
    }
    let mut g = [0u8; 16];
    g[0..4].copy_from_slice(&[text[3], text[2], text[1], text[0]]);
    g[4..6].copy_from_slice(&[text[5], text[4]]);
    g[6..8].copy_from_slice(&[text[7], text[6]]);
    g[8..].copy_from_slice(&text[8..]);
    Some(Guid(g))
}

fn describe(isf: &Isf, t: &IsfType, f: &mut FieldLayout, depth: u32) -> Result<(), String> {
    if depth > 32 {
        return Err("type nesting too deep".into());
    }
    match t.kind.as_str() {
        "base" => {
            let name = t.name.clone().unwrap_or_default();
            f.size = isf
                .base_types
                .get(&name)
                .map(|b| b.size)
                .ok_or_else(|| format!("unknown base type '{name}'"))?;
            f.type_name = name;
        }
        "pointer" => {
            f.size = isf.base_types.get("pointer").map_or(8, |b| b.size);
            f.type_name = "pointer".into();
            f.pointee = t.subtype.as_deref().map(|s| match s.kind.as_str() {
                "base" | "struct" | "union" | "class" | "enum" => {
                    s.name.clone().unwrap_or_default()
                }
                other => other.to_string(),
            });
        }
        "struct" | "union" | "class" => {
            let name = t.name.clone().unwrap_or_default();
            f.size = isf.user_types.get(&name).map_or(0, |u| u.size);
            f.type_name = name;
        }
        "enum" => {
            let name = t.name.clone().unwrap_or_default();
            let e = isf
                .enums
                .get(&name)
                .ok_or_else(|| format!("unknown enum '{name}'"))?;
            f.size = isf.base_types.get(&e.base).map_or(4, |b| b.size);
            f.type_name = e.base.clone();
            f.enum_name = Some(name);
        }
        "bitfield" => {
            let inner = t.inner.as_deref().ok_or("bitfield without a type")?;
            describe(isf, inner, f, depth + 1)?;
            f.bit_position = t.bit_position;
            f.bit_length = t.bit_length;
        }
        "array" => {
            let sub = t.subtype.as_deref().ok_or("array without a subtype")?;
            let mut elem = FieldLayout::default();
            describe(isf, sub, &mut elem, depth + 1)?;
            let count = t.count.unwrap_or(0);
            f.count = Some(count);
            f.element_size = Some(elem.size);
            f.size = elem.size.saturating_mul(count);
            if sub.kind == "array" {
                f.type_name = "array".into();
            } else {
                f.type_name = elem.type_name;
                f.pointee = elem.pointee;
                f.enum_name = elem.enum_name;
            }
        }
        "function" => {
            f.size = 0;
            f.type_name = "function".into();
        }
        other => return Err(format!("unknown type kind '{other}'")),
    }
    Ok(())
}
