//! Volatility 3 symbol tables (ISF, `.json` or `.json.xz`) as a symbol
//! source: many users already have ISF packs for their builds
//! (JPCERTCC/Windows-Symbol-Tables, Volatility's own symbol packs).
//!
//! An ISF carries what pooldump needs: symbol RVAs (`symbols.*.address`),
//! struct/union layouts (`user_types`), enums and base types, plus the PDB
//! GUID and age in `metadata.windows.pdb`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::guid::Guid;
use crate::layout::{FieldLayout, Layouts, TypeLayout};
use crate::source::PdbIdentity;
use crate::store::Attempt;

/// An ISF's JSON larger than this is refused (real ntkrnlmp ISFs are
/// 3-12 MB): a hostile `.xz` must not decompress without bound.
pub const MAX_ISF_JSON: u64 = 64 << 20;

/// Why an ISF could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IsfError {
    /// The file could not be opened or read.
    #[error("{path} cannot be read: {source}")]
    Io {
        /// The ISF file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The `.xz` stream is broken.
    #[error("{path} is not valid xz: {detail}")]
    Xz {
        /// The ISF file.
        path: PathBuf,
        /// What the decoder said.
        detail: String,
    },
    /// The JSON is larger than [`MAX_ISF_JSON`].
    #[error("{path} decompresses to more than {MAX_ISF_JSON} bytes; refusing it")]
    TooLarge {
        /// The ISF file.
        path: PathBuf,
    },
    /// The `.xz` stream asks for a dictionary larger than
    /// [`MAX_ISF_XZ_DICT_KB`]: refused before anything is decoded.
    #[error(
        "{path} asks for an xz dictionary larger than {} MiB (xz -9 uses 64 MiB, ISF packs 8 MiB); refusing it",
        MAX_ISF_XZ_DICT_KB >> 10
    )]
    XzDictionary {
        /// The ISF file.
        path: PathBuf,
    },
    /// The JSON is not an ISF pooldump can read.
    #[error("{path} is not a Volatility ISF: {detail}")]
    Malformed {
        /// The ISF file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
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
    let file = std::fs::File::open(path).map_err(|source| IsfError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_isf_from(file, path)
}

/// An ISF file for `wanted`: `p` itself, or inside directory `p` (flat
/// `<GUID>-<age>.json[.xz]`, under `<pdb>/`, or Volatility's
/// `windows/<pdb>/...` tree, itself perhaps under `symbols/`),
/// matched by GUID and age: the file, its layouts and warnings. Each file
/// tried that does not serve is noted in `attempts`.
pub fn find_isf(
    p: &Path,
    wanted: &PdbIdentity,
    attempts: &mut Vec<Attempt>,
) -> Option<(PathBuf, Layouts, Vec<String>)> {
    let candidates: Vec<PathBuf> = if p.is_dir() {
        let base = format!("{}-{}", wanted.guid.compact(), wanted.age);
        let mut v = Vec::new();
        // Volatility's pdbconv, run on a PDB file, records the database as
        // `unknown.pdb`: its tree puts the file under that name.
        // A `symbols` directory above the tree too: Volatility's package
        // and checkouts of ISF collections keep `symbols/windows/<pdb>/`.
        for dir in [
            p.to_path_buf(),
            p.join("windows").join(&wanted.name),
            p.join(&wanted.name),
            p.join("windows").join("unknown.pdb"),
            p.join("symbols").join("windows").join(&wanted.name),
        ] {
            for ext in ["json.xz", "json"] {
                v.push(dir.join(format!("{base}.{ext}")));
            }
        }
        v.into_iter().filter(|c| c.is_file()).collect()
    } else {
        vec![p.to_path_buf()]
    };
    if candidates.is_empty() {
        attempts.push(Attempt {
            location: p.display().to_string(),
            outcome: "no ISF file for this GUID and age".into(),
        });
    }
    for c in candidates {
        match read_isf(&c) {
            // The GUID and age identify the PDB; the database name does
            // not (pdbconv writes `unknown.pdb` when converting a file).
            Ok((Some(id), layouts, mut w)) if id.guid == wanted.guid && id.age == wanted.age => {
                if !id.name.eq_ignore_ascii_case(&wanted.name) {
                    w.push(format!(
                        "{}: the ISF names its database `{}`, not `{}`; it was matched by GUID and age",
                        c.display(),
                        id.name,
                        wanted.name
                    ));
                }
                return Some((c, layouts, w));
            }
            Ok((Some(id), ..)) => attempts.push(Attempt {
                location: c.display().to_string(),
                outcome: format!("ISF for {id}, not {wanted}"),
            }),
            Ok((None, ..)) => attempts.push(Attempt {
                location: c.display().to_string(),
                outcome: "the ISF names no PDB GUID/age, so it cannot be matched".into(),
            }),
            Err(e) => attempts.push(Attempt {
                location: c.display().to_string(),
                outcome: e.to_string(),
            }),
        }
    }
    None
}

/// The LZMA2 dictionary an ISF's xz may ask for, in KiB. `xz -9` uses
/// 64 MiB; real ISF packs use 8 MiB (`xz -6`). A larger dictionary is
/// refused before it is allocated.
pub const MAX_ISF_XZ_DICT_KB: u32 = 65 << 10;

/// Read ISF text (plain JSON, or xz by its magic) from `reader`; `path`
/// names it in messages.
///
/// Memory stays bounded while decoding, whatever the input claims: the xz
/// stream is decoded as a stream (lzma-rust2's `XzReader`, whose
/// dictionary is capped by [`MAX_ISF_XZ_DICT_KB`]; lzma-rs decodes a whole
/// xz block into one buffer before its writer sees a byte), the JSON is
/// parsed from that stream without collecting it, and the stream ends with
/// [`IsfError::TooLarge`] after [`MAX_ISF_JSON`] bytes.
pub fn read_isf_from(
    reader: impl Read,
    path: &Path,
) -> Result<(Option<PdbIdentity>, Layouts, Vec<String>), IsfError> {
    let mut reader = std::io::BufReader::new(reader);
    let mut head = [0u8; 6];
    let n = read_prefix(&mut reader, &mut head).map_err(|source| IsfError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let rest = std::io::Cursor::new(head[..n].to_vec()).chain(reader);
    let is_xz = head[..n] == [0xFD, b'7', b'z', b'X', b'Z', 0];
    let parsed = if is_xz {
        let xz = lzma_rust2::XzReader::new_mem_limit(rest, true, MAX_ISF_XZ_DICT_KB);
        parse_capped(xz)
    } else {
        parse_capped(rest)
    };
    match parsed {
        Ok(isf) => Ok(layouts_from_isf(isf)),
        Err(Capped::TooLarge) => Err(IsfError::TooLarge {
            path: path.to_path_buf(),
        }),
        // lzma-rust2 says OutOfMemory for a dictionary above the limit,
        // before it allocates one.
        Err(Capped::Io(source)) if is_xz && source.kind() == std::io::ErrorKind::OutOfMemory => {
            Err(IsfError::XzDictionary {
                path: path.to_path_buf(),
            })
        }
        Err(Capped::Io(source)) if is_xz => Err(IsfError::Xz {
            path: path.to_path_buf(),
            detail: source.to_string(),
        }),
        Err(Capped::Io(source)) => Err(IsfError::Io {
            path: path.to_path_buf(),
            source,
        }),
        Err(Capped::Json(detail)) => Err(IsfError::Malformed {
            path: path.to_path_buf(),
            detail,
        }),
    }
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

/// How parsing a capped stream failed.
enum Capped {
    TooLarge,
    Io(std::io::Error),
    Json(String),
}

/// Parse ISF JSON from `r`, failing once it has given more than
/// [`MAX_ISF_JSON`] bytes.
fn parse_capped(r: impl Read) -> Result<Isf, Capped> {
    let mut limited = Limit {
        inner: r,
        left: MAX_ISF_JSON,
        over: false,
    };
    let parsed = serde_json::from_reader(std::io::BufReader::new(&mut limited));
    if limited.over {
        return Err(Capped::TooLarge);
    }
    parsed.map_err(|e| match e.io_error_kind() {
        Some(kind) => Capped::Io(std::io::Error::new(kind, e.to_string())),
        None => Capped::Json(e.to_string()),
    })
}

/// A reader that fails after `left` bytes (and remembers that it did).
struct Limit<R> {
    inner: R,
    left: u64,
    over: bool,
}

impl<R: Read> Read for Limit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more means the cap is exceeded; none means the end.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.over = true;
                    Err(std::io::Error::other("size cap reached"))
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Parse ISF JSON text.
pub fn parse_isf(json: &[u8]) -> Result<(Option<PdbIdentity>, Layouts, Vec<String>), String> {
    let isf: Isf = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    Ok(layouts_from_isf(isf))
}

fn layouts_from_isf(isf: Isf) -> (Option<PdbIdentity>, Layouts, Vec<String>) {
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
    (identity, out, warnings)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An ISF naming `ntkrnlmp.pdb` with `guid` and age 1, and one type.
    fn tiny_isf(guid: &str) -> String {
        format!(
            r#"{{"metadata": {{"windows": {{"pdb": {{"GUID": "{guid}", "age": 1, "database": "ntkrnlmp.pdb"}}}}}},
               "user_types": {{"_POOL_TRACKER_TABLE": {{"kind": "struct", "size": 56, "fields": {{}}}}}}}}"#
        )
    }

    #[test]
    fn an_isf_is_found_in_each_directory_layout() {
        let guid = "06564D3477822C7D97F04852CBD5AFD6";
        let wanted = PdbIdentity {
            name: "ntkrnlmp.pdb".into(),
            guid: parse_guid(guid).unwrap(),
            age: 1,
        };
        for under in [
            "",
            "ntkrnlmp.pdb",
            "windows/ntkrnlmp.pdb",
            "windows/unknown.pdb",
            "symbols/windows/ntkrnlmp.pdb",
        ] {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join(under);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{guid}-1.json")), tiny_isf(guid)).unwrap();
            let mut attempts = Vec::new();
            let (path, layouts, _) = find_isf(root.path(), &wanted, &mut attempts)
                .unwrap_or_else(|| panic!("{under:?}: {attempts:?}"));
            assert_eq!(path, dir.join(format!("{guid}-1.json")), "{under:?}");
            assert_eq!(layouts.types["_POOL_TRACKER_TABLE"].size, 56);
        }
        // Another GUID's file is not taken, and the attempt says so.
        let root = tempfile::tempdir().unwrap();
        let other = "00F31FD82648C8ED1A4426DFFC56A424";
        std::fs::write(root.path().join(format!("{guid}-1.json")), tiny_isf(other)).unwrap();
        let mut attempts = Vec::new();
        assert!(find_isf(root.path(), &wanted, &mut attempts).is_none());
        assert!(!attempts.is_empty());
    }
}
