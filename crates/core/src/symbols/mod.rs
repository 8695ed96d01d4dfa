//! nt's symbols: global RVAs, struct layouts and enums, from the kernel's
//! PDB, a Volatility ISF file, or a built-in table for known builds.
//!
//! Analysis code asks [`KernelSymbols`] for every offset it uses, and
//! never hard-codes one:
//!
//! ```
//! # fn demo(syms: &pooldump_core::symbols::KernelSymbols) -> Result<(), pooldump_core::symbols::SymbolError> {
//! let entry = syms.require_type_size("_POOL_TRACKER_TABLE")?;          // 0x28, 0x38 or 0x50
//! let table = syms.require_symbol_rva("PoolTrackTable")?;             // RVA from nt's base
//! let pool_type = syms.field("_POOL_HEADER", "PoolType")?;            // unit offset + bits
//! let regions = syms.field("_MI_VISIBLE_STATE", "SystemVaRegions[1].BaseAddress")?;
//! let paged = syms.enum_value("_MI_ASSIGNED_REGION_TYPES", "AssignedRegionPagedPool");
//! # let _ = (entry, table, pool_type, regions, paged); Ok(()) }
//! ```
//!
//! Loading ([`load_kernel_symbols`]) tries, in order: a PDB file given
//! explicitly, ISF files given explicitly, the layout cache (layouts read
//! from this PDB before), the symbol path (`_NT_SYMBOL_PATH` syntax: local
//! directories, symbol stores, HTTP symbol servers), and finally the
//! built-in table. Every answer says which source it came from
//! ([`SourceKind`]), and the loader records where the PDB came from
//! ([`SymbolSource`]).
//!
//! The API of this module (`KernelSymbols`, `Field`, `SymbolAnswer`,
//! `SymbolError`, `load_kernel_symbols`, `SymbolOptions`) is stable for the
//! pool analysis.

pub mod cache;
pub mod fallback;
pub mod images;
pub mod isf;
pub mod layout;
mod loader;
pub mod name;
pub mod pdb;
pub(crate) mod pdb_prescan;
pub mod store;
pub mod symbol_path;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::kernel::{Guid, KldrLayout};

pub use cache::{LayoutCache, default_cache_dir};
pub use layout::{FieldLayout, Layouts, TypeLayout};
pub use loader::{
    BuiltInMisfit, LoadError, SymbolOptions, check_builtin_fits, load_kernel_symbols,
    refine_kernel_identity,
};
pub use name::{PdbName, PdbNameError};
pub use store::{Attempt, DownloadProgress, FetchOptions, FoundPdb, PdbOrigin, PdbRequest};
pub use symbol_path::{MICROSOFT_SYMBOL_SERVER, SymbolPath, SymbolPathElement, Upstream};

/// What to tell a user whose symbols are missing or lack something, in
/// this platform's terms: the CLI appends it to such errors. On Windows,
/// WinDbg's usual `srv*C:\\symbols*...`; elsewhere the per-user cache
/// pooldump already downloads into ([`default_cache_dir`]), since a
/// Windows path means nothing there. `isf_given`: the user passed `--isf`
/// already (and it could not serve), so it is not suggested again.
pub fn symbol_path_hint(isf_given: bool) -> String {
    let give = if isf_given {
        "pass --symbol-path DIR (a directory or symbol store holding the PDB) or --pdb FILE"
    } else {
        "pass --symbol-path DIR (a directory or symbol store holding the PDB), --pdb FILE or --isf FILE"
    };
    if cfg!(windows) {
        format!(
            "{give}, or set _NT_SYMBOL_PATH=srv*C:\\symbols*{MICROSOFT_SYMBOL_SERVER} to download it"
        )
    } else {
        let store = default_cache_dir()
            .map(|c| c.join("symbols").display().to_string())
            .unwrap_or_else(|| "~/.cache/pooldump/symbols".into());
        format!(
            "{give}; or, with network access, let pooldump download it: without --offline and _NT_SYMBOL_PATH it uses srv*{store}*{MICROSOFT_SYMBOL_SERVER} (export _NT_SYMBOL_PATH='srv*DIR*{MICROSOFT_SYMBOL_SERVER}' for another store)"
        )
    }
}

/// Which PDB a set of symbols describes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PdbIdentity {
    /// File name (`ntkrnlmp.pdb`).
    pub name: String,
    pub guid: Guid,
    pub age: u32,
}

impl PdbIdentity {
    /// Symbol-store key: `<GUID><AGE>`, age in upper-case hex.
    pub fn store_key(&self) -> String {
        format!("{}{:X}", self.guid.compact(), self.age)
    }
}

impl fmt::Display for PdbIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.store_key())
    }
}

/// The kind of source an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// The build's PDB (possibly through the layout cache).
    Pdb,
    /// A Volatility ISF file.
    Isf,
    /// pooldump's built-in table of known builds.
    BuiltIn,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Pdb => "PDB",
            SourceKind::Isf => "ISF",
            SourceKind::BuiltIn => "built-in table",
        })
    }
}

/// How the built-in table was matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuiltInMatch {
    /// Same GUID and age: symbols and layouts are this build's.
    Guid,
    /// Same build number, another revision: layouts only, no symbols.
    BuildNumber,
}

/// Where one layer of symbols came from, in detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum SymbolSource {
    Pdb {
        /// The PDB file, when it was located (not on a layout-cache hit).
        path: Option<PathBuf>,
        /// How the PDB was obtained, when it was located.
        origin: Option<PdbOrigin>,
        /// The layout-cache file the layouts were read from (a hit) or
        /// written to.
        layout_cache: Option<PathBuf>,
        /// The layouts came from the cache: the PDB was not parsed.
        cache_hit: bool,
    },
    Isf {
        path: PathBuf,
    },
    BuiltIn {
        matched_by: BuiltInMatch,
        /// The table entry's build (`10.0.19041.3324`).
        build: String,
        /// Consulted only for what the primary source lacks.
        supplement: bool,
    },
}

impl SymbolSource {
    pub fn kind(&self) -> SourceKind {
        match self {
            SymbolSource::Pdb { .. } => SourceKind::Pdb,
            SymbolSource::Isf { .. } => SourceKind::Isf,
            SymbolSource::BuiltIn { .. } => SourceKind::BuiltIn,
        }
    }
}

impl fmt::Display for SymbolSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SymbolSource::Pdb {
                path,
                origin,
                layout_cache,
                cache_hit,
            } => {
                if *cache_hit {
                    write!(f, "PDB layouts from the layout cache")?;
                    if let Some(c) = layout_cache {
                        write!(f, " ({})", c.display())?;
                    }
                    Ok(())
                } else {
                    write!(f, "PDB")?;
                    if let Some(p) = path {
                        write!(f, " {}", p.display())?;
                    }
                    if let Some(o) = origin {
                        write!(f, " ({o})")?;
                    }
                    Ok(())
                }
            }
            SymbolSource::Isf { path } => write!(f, "ISF {}", path.display()),
            SymbolSource::BuiltIn {
                build,
                supplement: true,
                ..
            } => write!(
                f,
                "built-in table for {build} (same GUID), only for what the above lacks"
            ),
            SymbolSource::BuiltIn {
                matched_by, build, ..
            } => match matched_by {
                BuiltInMatch::Guid => write!(
                    f,
                    "BUILT-IN TABLE for {build} (matched by GUID; no PDB was available)"
                ),
                BuiltInMatch::BuildNumber => write!(
                    f,
                    "BUILT-IN TABLE for {build} (matched by build number only: layouts only, no symbol addresses; no PDB was available)"
                ),
            },
        }
    }
}

/// One source's layouts and where they came from.
#[derive(Debug, Clone)]
pub struct SymbolLayer {
    pub source: SymbolSource,
    pub layouts: Arc<Layouts>,
}

/// A global symbol, with its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolAnswer {
    pub rva: u64,
    /// Bytes, when the source knows the symbol's type (or, for arrays the
    /// built-in table bounds, the gap to the next symbol).
    pub size: Option<u64>,
    pub source: SourceKind,
}

/// A resolved member path (`_MI_VISIBLE_STATE.SystemVaRegions[1].BaseAddress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    /// Byte offset from the start of the root type (of the storage unit,
    /// for a bitfield).
    pub offset: u64,
    /// Bytes: the storage unit for a bitfield, the whole array for an
    /// array.
    pub size: u64,
    pub bit_position: Option<u32>,
    pub bit_length: Option<u32>,
    /// Base type, struct name, `pointer`, or an array's element type.
    pub type_name: String,
    /// Elements, for an array.
    pub count: Option<u64>,
    pub element_size: Option<u64>,
    /// What a pointer points at.
    pub pointee: Option<String>,
    /// The enum of an enum-typed member (`type_name` is its base type).
    pub enum_name: Option<String>,
    pub source: SourceKind,
}

impl Field {
    pub fn is_bitfield(&self) -> bool {
        self.bit_length.is_some()
    }

    pub fn is_pointer(&self) -> bool {
        self.type_name == "pointer" && self.count.is_none()
    }

    /// The value of this field in `bytes` (an instance of the root type),
    /// zero-extended, with bitfields extracted: `None` if the bytes are too
    /// short or the field is wider than 8 bytes.
    pub fn read_u64(&self, bytes: &[u8]) -> Option<u64> {
        let unit = match (self.count, self.element_size) {
            (Some(_), Some(e)) => e,
            _ => self.size,
        };
        if unit == 0 || unit > 8 {
            return None;
        }
        let start = usize::try_from(self.offset).ok()?;
        let b = bytes.get(start..start.checked_add(unit as usize)?)?;
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        let v = u64::from_le_bytes(w);
        Some(match (self.bit_position, self.bit_length) {
            (Some(p), Some(l)) if p < 64 => {
                let mask = if l >= 64 { u64::MAX } else { (1u64 << l) - 1 };
                (v >> p) & mask
            }
            _ => v,
        })
    }
}

/// A symbol, type, field or enum the analysis needs is missing or a path
/// is malformed. `symbols` names the source that was searched (PDB name,
/// key and where it came from), so a message can say which build lacks it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    #[error("symbol '{name}' is not in {symbols}")]
    MissingSymbol { name: String, symbols: String },
    #[error("type '{name}' is not in {symbols}")]
    MissingType { name: String, symbols: String },
    #[error("'{ty}' has no member '{member}' (resolving '{path}') in {symbols}")]
    MissingField {
        ty: String,
        member: String,
        path: String,
        symbols: String,
    },
    #[error("enum '{name}' has no enumerator '{value}' in {symbols}")]
    MissingEnumerator {
        name: String,
        value: String,
        symbols: String,
    },
    #[error("in '{path}': {detail}")]
    BadPath { path: String, detail: String },
}

/// nt's symbols, from one or more sources (the first that has an answer
/// gives it).
#[derive(Debug, Clone)]
pub struct KernelSymbols {
    /// The PDB the image asked for.
    pub identity: PdbIdentity,
    layers: Vec<SymbolLayer>,
    /// What went wrong on the way (failed downloads, skipped records, use
    /// of the built-in table, ...).
    pub warnings: Vec<String>,
    /// When the primary source is the built-in table: every place the PDB
    /// was looked for first, and what each said.
    pub tried: Vec<Attempt>,
}

impl KernelSymbols {
    /// Symbols from one source.
    pub fn new(identity: PdbIdentity, source: SymbolSource, layouts: Layouts) -> Self {
        Self {
            identity,
            layers: vec![SymbolLayer {
                source,
                layouts: Arc::new(layouts),
            }],
            warnings: Vec::new(),
            tried: Vec::new(),
        }
    }

    /// Add a source consulted after the existing ones.
    pub fn push_layer(&mut self, source: SymbolSource, layouts: Arc<Layouts>) {
        self.layers.push(SymbolLayer { source, layouts });
    }

    /// Stop consulting a secondary source (never the primary).
    pub(crate) fn remove_layer(&mut self, i: usize) {
        if i > 0 && i < self.layers.len() {
            self.layers.remove(i);
        }
    }

    /// The sources, primary first.
    pub fn layers(&self) -> &[SymbolLayer] {
        &self.layers
    }

    /// The primary source.
    pub fn source(&self) -> &SymbolSource {
        &self.layers[0].source
    }

    /// Whether any answer can come from the built-in table.
    pub fn uses_builtin(&self) -> bool {
        self.layers
            .iter()
            .any(|l| l.source.kind() == SourceKind::BuiltIn)
    }

    /// "ntkrnlmp.pdb 06564D...1 (PDB /path ...)": for messages.
    pub fn describe(&self) -> String {
        let src: Vec<String> = self.layers.iter().map(|l| l.source.to_string()).collect();
        format!("the symbols of {} ({})", self.identity, src.join(", then "))
    }

    /// A global's RVA from nt's base.
    pub fn symbol_rva(&self, name: &str) -> Option<u64> {
        self.symbol(name).map(|s| s.rva)
    }

    /// A global with its size (when known) and source.
    pub fn symbol(&self, name: &str) -> Option<SymbolAnswer> {
        self.layers.iter().find_map(|l| {
            let rva = *l.layouts.symbols.get(name)?;
            Some(SymbolAnswer {
                rva,
                size: l.layouts.symbol_sizes.get(name).copied(),
                source: l.source.kind(),
            })
        })
    }

    /// Where the RVA of global `name` came from (the layer that answered).
    pub fn symbol_source(&self, name: &str) -> Option<&SymbolSource> {
        self.layers
            .iter()
            .find(|l| l.layouts.symbols.contains_key(name))
            .map(|l| &l.source)
    }

    pub fn require_symbol_rva(&self, name: &str) -> Result<u64, SymbolError> {
        self.symbol_rva(name)
            .ok_or_else(|| SymbolError::MissingSymbol {
                name: name.into(),
                symbols: self.describe(),
            })
    }

    /// How many `element_size`-byte elements the array global `name` can
    /// hold: its type's size when the source knows it, else the gap to the
    /// next symbol (how docs/pool-structures.md §1 bounds `ExPoolTagTables`).
    pub fn array_bound(&self, name: &str, element_size: u64) -> Option<u64> {
        if element_size == 0 {
            return None;
        }
        let l = self
            .layers
            .iter()
            .find(|l| l.layouts.symbols.contains_key(name))?;
        let bytes = l
            .layouts
            .symbol_sizes
            .get(name)
            .copied()
            .or_else(|| l.layouts.gap_to_next_symbol(name))?;
        Some(bytes / element_size)
    }

    /// A struct's or union's size.
    pub fn type_size(&self, name: &str) -> Option<u64> {
        self.type_layout(name).map(|(t, _)| t.size)
    }

    pub fn require_type_size(&self, name: &str) -> Result<u64, SymbolError> {
        self.type_size(name)
            .ok_or_else(|| SymbolError::MissingType {
                name: name.into(),
                symbols: self.describe(),
            })
    }

    pub fn has_type(&self, name: &str) -> bool {
        self.type_layout(name).is_some()
    }

    /// A struct's or union's whole layout, with its source.
    pub fn type_layout(&self, name: &str) -> Option<(&TypeLayout, SourceKind)> {
        self.layers
            .iter()
            .find_map(|l| Some((l.layouts.types.get(name)?, l.source.kind())))
    }

    /// Resolve a member path: dotted names with `[i]` indexing into arrays
    /// (`SystemVaRegions[1].BaseAddress`, `Vs.SystemVaRegions`). The whole
    /// path is resolved in the first source that has the root type.
    pub fn field(&self, ty: &str, path: &str) -> Result<Field, SymbolError> {
        let layer = self
            .layers
            .iter()
            .find(|l| l.layouts.types.contains_key(ty))
            .ok_or_else(|| SymbolError::MissingType {
                name: ty.into(),
                symbols: self.describe(),
            })?;
        resolve_path(&layer.layouts, ty, path, layer.source.kind(), || {
            self.describe()
        })
    }

    /// An enumerator's value.
    pub fn enum_value(&self, name: &str, enumerator: &str) -> Option<i64> {
        self.enum_values(name)?.get(enumerator).copied()
    }

    pub fn require_enum_value(&self, name: &str, enumerator: &str) -> Result<i64, SymbolError> {
        self.enum_value(name, enumerator)
            .ok_or_else(|| SymbolError::MissingEnumerator {
                name: name.into(),
                value: enumerator.into(),
                symbols: self.describe(),
            })
    }

    /// All enumerators of an enum.
    pub fn enum_values(&self, name: &str) -> Option<&BTreeMap<String, i64>> {
        self.layers.iter().find_map(|l| l.layouts.enums.get(name))
    }

    /// The loaded-module entry layout from `_KLDR_DATA_TABLE_ENTRY` (or
    /// `_LDR_DATA_TABLE_ENTRY`, which Win7/8.1 symbols use).
    pub fn kldr_layout(&self) -> Result<(KldrLayout, &'static str), SymbolError> {
        let ty = ["_KLDR_DATA_TABLE_ENTRY", "_LDR_DATA_TABLE_ENTRY"]
            .into_iter()
            .find(|t| self.has_type(t))
            .ok_or_else(|| SymbolError::MissingType {
                name: "_KLDR_DATA_TABLE_ENTRY".into(),
                symbols: self.describe(),
            })?;
        let off = |f: &str| -> Result<usize, SymbolError> {
            let o = self.field(ty, f)?.offset;
            usize::try_from(o).map_err(|_| SymbolError::BadPath {
                path: format!("{ty}.{f}"),
                detail: format!("offset {o:#x} does not fit"),
            })
        };
        let base_dll_name = off("BaseDllName")?;
        let full_dll_name = off("FullDllName")?;
        let l = KldrLayout {
            in_load_order_links: off("InLoadOrderLinks")?,
            dll_base: off("DllBase")?,
            entry_point: off("EntryPoint")?,
            size_of_image: off("SizeOfImage")?,
            full_dll_name,
            base_dll_name,
            // Through the end of both UNICODE_STRINGs.
            read_size: base_dll_name.max(full_dll_name) + 0x10,
        };
        Ok((l, ty))
    }

    /// Compare the bootstrap offsets the module walk used before symbols
    /// were loaded with the symbols' layout: a message per difference.
    pub fn check_kldr_bootstrap(&self, bootstrap: &KldrLayout) -> Result<Vec<String>, SymbolError> {
        let (l, ty) = self.kldr_layout()?;
        let mut out = Vec::new();
        let pairs = [
            (
                "InLoadOrderLinks",
                bootstrap.in_load_order_links,
                l.in_load_order_links,
            ),
            ("DllBase", bootstrap.dll_base, l.dll_base),
            ("EntryPoint", bootstrap.entry_point, l.entry_point),
            ("SizeOfImage", bootstrap.size_of_image, l.size_of_image),
            ("FullDllName", bootstrap.full_dll_name, l.full_dll_name),
            ("BaseDllName", bootstrap.base_dll_name, l.base_dll_name),
        ];
        for (name, boot, real) in pairs {
            if boot != real {
                out.push(format!(
                    "{ty}.{name} is at {real:#x} in {}, but the module list was walked with the bootstrap offset {boot:#x}; walk it again with the symbols' layout",
                    self.identity
                ));
            }
        }
        Ok(out)
    }
}

/// Walk `path` from type `root` in one layout set.
fn resolve_path(
    layouts: &Layouts,
    root: &str,
    path: &str,
    source: SourceKind,
    describe: impl Fn() -> String,
) -> Result<Field, SymbolError> {
    let bad = |detail: String| SymbolError::BadPath {
        path: format!("{root}.{path}"),
        detail,
    };
    if path.is_empty() {
        return Err(bad("the member path is empty".into()));
    }
    let mut cur = root.to_string();
    let mut offset = 0u64;
    let mut last: Option<Field> = None;
    for part in path.split('.') {
        let (name, indexes) = split_indexes(part).map_err(bad)?;
        if let Some(prev) = &last
            && prev.count.is_some()
        {
            return Err(bad(format!(
                "'{}' is an array; index it ('[i]') before naming a member",
                prev.type_name
            )));
        }
        if let Some(prev) = &last
            && !layouts.types.contains_key(&cur)
        {
            return Err(bad(format!(
                "'{}' is a {}, not a struct, so it has no member '{name}'",
                prev.type_name, prev.type_name
            )));
        }
        let t = layouts
            .types
            .get(&cur)
            .ok_or_else(|| SymbolError::MissingType {
                name: cur.clone(),
                symbols: describe(),
            })?;
        let f = t.field(name).ok_or_else(|| SymbolError::MissingField {
            ty: cur.clone(),
            member: name.into(),
            path: format!("{root}.{path}"),
            symbols: describe(),
        })?;
        offset = offset
            .checked_add(f.offset)
            .ok_or_else(|| bad("offset overflows".into()))?;
        let mut field = Field {
            offset,
            size: f.size,
            bit_position: f.bit_position,
            bit_length: f.bit_length,
            type_name: f.type_name.clone(),
            count: f.count,
            element_size: f.element_size,
            pointee: f.pointee.clone(),
            enum_name: f.enum_name.clone(),
            source,
        };
        for (n, i) in indexes.iter().enumerate() {
            if n > 0 {
                return Err(bad(format!(
                    "'{name}' is indexed more than once; only one dimension is supported"
                )));
            }
            let (Some(count), Some(es)) = (field.count, field.element_size) else {
                return Err(bad(format!("'{name}' is not an array")));
            };
            if *i >= count {
                return Err(bad(format!(
                    "index {i} is out of bounds: '{name}' has {count} elements"
                )));
            }
            field.offset = field
                .offset
                .checked_add(i * es)
                .ok_or_else(|| bad("offset overflows".into()))?;
            field.size = es;
            field.count = None;
            field.element_size = None;
        }
        offset = field.offset;
        cur = field.type_name.clone();
        last = Some(field);
    }
    last.ok_or_else(|| bad("the member path is empty".into()))
}

/// `Name[1][2]` → ("Name", [1, 2]).
fn split_indexes(part: &str) -> Result<(&str, Vec<u64>), String> {
    let (name, mut rest) = match part.find('[') {
        Some(i) => (&part[..i], &part[i..]),
        None => (part, ""),
    };
    if name.is_empty() {
        return Err(format!("'{part}' has no member name"));
    }
    let mut idx = Vec::new();
    while !rest.is_empty() {
        let close = rest
            .find(']')
            .ok_or_else(|| format!("'{part}' has an unclosed '['"))?;
        if !rest.starts_with('[') {
            return Err(format!("'{part}' is malformed"));
        }
        let n = rest[1..close]
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("'{}' is not an index", &rest[1..close]))?;
        idx.push(n);
        rest = &rest[close + 1..];
    }
    Ok((name, idx))
}

#[cfg(test)]
mod tests;
