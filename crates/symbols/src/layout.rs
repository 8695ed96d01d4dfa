//! The layout database every symbol source produces: global RVAs, struct
//! and union layouts, enums. A PDB, an ISF file and the built-in table all
//! become a [`Layouts`]; the layout cache stores one as JSON.
//!
//! Names follow Volatility's ISF spelling for base types (`unsigned long`,
//! `unsigned long long`, `wchar`, ...), so the three sources agree and the
//! kit's `layout.json` manifest can be compared field by field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything one source knows about a build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layouts {
    /// Global symbols (publics and data), undecorated, by name: their RVA
    /// from the image base.
    pub symbols: BTreeMap<String, u64>,
    /// Size in bytes of data symbols whose type the source knows (S_GDATA32
    /// records, ISF symbols with a type).
    #[serde(default)]
    pub symbol_sizes: BTreeMap<String, u64>,
    /// Structs and unions by name (anonymous nested types by a unique key).
    pub types: BTreeMap<String, TypeLayout>,
    /// Enums: enumerator name → value.
    #[serde(default)]
    pub enums: BTreeMap<String, BTreeMap<String, i64>>,
}

/// A struct or union.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeLayout {
    /// Bytes.
    pub size: u64,
    /// A union rather than a struct.
    #[serde(default)]
    pub union: bool,
    /// Members in layout order (offset, then bit position).
    pub fields: Vec<FieldLayout>,
}

/// One member of a struct or union, relative to the start of its type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldLayout {
    /// The member's name (anonymous members by a unique key).
    pub name: String,
    /// Byte offset; for a bitfield, of its storage unit.
    pub offset: u64,
    /// Bytes: the storage unit for a bitfield, the whole array for an
    /// array.
    pub size: u64,
    /// A bitfield's first bit within its storage unit.
    #[serde(default)]
    pub bit_position: Option<u32>,
    /// A bitfield's width in bits.
    #[serde(default)]
    pub bit_length: Option<u32>,
    /// A base type's name, a struct/union name, `pointer`, or for an array
    /// its element's type (`array` for an array of arrays). Enum members
    /// carry the enum's base type here and the enum in `enum_name`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Elements, for an array.
    #[serde(default)]
    pub count: Option<u64>,
    /// Bytes per element, for an array.
    #[serde(default)]
    pub element_size: Option<u64>,
    /// What a pointer points at (a type name, `void`, `pointer`, ...).
    #[serde(default)]
    pub pointee: Option<String>,
    /// The enum of an enum-typed member.
    #[serde(default, rename = "enum")]
    pub enum_name: Option<String>,
}

impl TypeLayout {
    /// The first member called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldLayout> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub(crate) fn sort(&mut self) {
        self.fields
            .sort_by_key(|f| (f.offset, f.bit_position.unwrap_or(0)));
    }
}

impl Layouts {
    /// The number of bytes from `name`'s RVA to the next symbol's: the
    /// bound of an array global whose type the source does not give (how
    /// docs/pool-structures.md §1 bounds `ExPoolTagTables`).
    pub fn gap_to_next_symbol(&self, name: &str) -> Option<u64> {
        let rva = *self.symbols.get(name)?;
        self.symbols
            .values()
            .filter(|&&r| r > rva)
            .min()
            .map(|next| next - rva)
    }
}
