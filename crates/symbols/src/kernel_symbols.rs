//! [`KernelSymbols`]: the answers analysis code asks for (a global's RVA,
//! a type's size, a member path's offset, an enumerator), from a stack of
//! sources where the first that knows answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::layout::{Layouts, TypeLayout};
use crate::source::{PdbIdentity, SourceKind, SymbolLayer, SymbolSource};
use crate::store::Attempt;

/// A global symbol, with its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolAnswer {
    /// The RVA from the image base.
    pub rva: u64,
    /// Bytes, when the source knows the symbol's type (or, for arrays the
    /// built-in table bounds, the gap to the next symbol).
    pub size: Option<u64>,
    /// The source that answered.
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
    /// A bitfield's first bit within its storage unit.
    pub bit_position: Option<u32>,
    /// A bitfield's width in bits.
    pub bit_length: Option<u32>,
    /// Base type, struct name, `pointer`, or an array's element type.
    pub type_name: String,
    /// Elements, for an array.
    pub count: Option<u64>,
    /// Bytes per element, for an array.
    pub element_size: Option<u64>,
    /// What a pointer points at.
    pub pointee: Option<String>,
    /// The enum of an enum-typed member (`type_name` is its base type).
    pub enum_name: Option<String>,
    /// The source whose layout resolved the path.
    pub source: SourceKind,
}

impl Field {
    /// A bitfield (read it with [`Field::read_u64`], which extracts the bits).
    pub fn is_bitfield(&self) -> bool {
        self.bit_length.is_some()
    }

    /// A pointer (not an array of pointers).
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
    /// No source has the global.
    #[error("symbol '{name}' is not in {symbols}")]
    MissingSymbol {
        /// The global's name.
        name: String,
        /// The symbols searched ([`KernelSymbols::describe`]).
        symbols: String,
    },
    /// No source has the struct or union.
    #[error("type '{name}' is not in {symbols}")]
    MissingType {
        /// The type's name.
        name: String,
        /// The symbols searched ([`KernelSymbols::describe`]).
        symbols: String,
    },
    /// A type on a member path lacks the next member.
    #[error("'{ty}' has no member '{member}' (resolving '{path}') in {symbols}")]
    MissingField {
        /// The type that lacks it.
        ty: String,
        /// The member asked for.
        member: String,
        /// The whole path (`_MI_VISIBLE_STATE.SystemVaRegions[1].BaseAddress`).
        path: String,
        /// The symbols searched ([`KernelSymbols::describe`]).
        symbols: String,
    },
    /// The enum is missing or lacks the enumerator.
    #[error("enum '{name}' has no enumerator '{value}' in {symbols}")]
    MissingEnumerator {
        /// The enum's name.
        name: String,
        /// The enumerator asked for.
        value: String,
        /// The symbols searched ([`KernelSymbols::describe`]).
        symbols: String,
    },
    /// The member path itself is malformed (indexing a non-array, an index
    /// out of bounds, a member of a base type, an offset that overflows).
    #[error("in '{path}': {detail}")]
    BadPath {
        /// The whole path.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
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

    /// Stop consulting the secondary source at `i` (never the primary,
    /// `i == 0`): the loader drops a built-in supplement that does not fit
    /// the image.
    pub fn remove_layer(&mut self, i: usize) {
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

    /// [`KernelSymbols::symbol_rva`], or an error that names the symbols searched.
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

    /// [`KernelSymbols::type_size`], or an error that names the symbols searched.
    pub fn require_type_size(&self, name: &str) -> Result<u64, SymbolError> {
        self.type_size(name)
            .ok_or_else(|| SymbolError::MissingType {
                name: name.into(),
                symbols: self.describe(),
            })
    }

    /// Whether any source has the struct or union.
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

    /// [`KernelSymbols::enum_value`], or an error that names the symbols searched.
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
        index_into(&mut field, name, &indexes).map_err(bad)?;
        offset = field.offset;
        cur = field.type_name.clone();
        last = Some(field);
    }
    last.ok_or_else(|| bad("the member path is empty".into()))
}

/// Narrow `field` (member `name`, an array) to the element `indexes`
/// names: one dimension only, in bounds.
fn index_into(field: &mut Field, name: &str, indexes: &[u64]) -> Result<(), String> {
    for (n, i) in indexes.iter().enumerate() {
        if n > 0 {
            return Err(format!(
                "'{name}' is indexed more than once; only one dimension is supported"
            ));
        }
        let (Some(count), Some(es)) = (field.count, field.element_size) else {
            return Err(format!("'{name}' is not an array"));
        };
        if *i >= count {
            return Err(format!(
                "index {i} is out of bounds: '{name}' has {count} elements"
            ));
        }
        field.offset = i
            .checked_mul(es)
            .and_then(|o| field.offset.checked_add(o))
            .ok_or_else(|| "offset overflows".to_string())?;
        field.size = es;
        field.count = None;
        field.element_size = None;
    }
    Ok(())
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
