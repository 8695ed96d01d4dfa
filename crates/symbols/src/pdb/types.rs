//! The type stream into layouts: structs, unions and enums by name, each
//! member's offset, size, bitfield, array and pointer details (the rules
//! are listed in the parent module's docs).

use std::collections::{BTreeMap, HashMap};

use pdb2::{FallibleIterator, TypeData, TypeFinder, TypeIndex};

use super::primitive::{pointer_size, primitive_name, primitive_size, variant};
use crate::layout::{FieldLayout, Layouts, TypeLayout};

/// Type chains (modifier → pointer → array ...) deeper than this are
/// treated as broken: a hostile PDB could make them cyclic.
const MAX_TYPE_DEPTH: u32 = 32;

/// Which index defines each struct/union/enum name, so a forward reference
/// can be resolved; and which records must not be handed to pdb2.
#[derive(Default)]
pub(super) struct DefinitionNames {
    by_name: HashMap<String, TypeIndex>,
    /// The key of every definition (not only the first of its name).
    key_by_index: HashMap<u32, String>,
    /// The records pdb2 would panic on
    /// ([`crate::pdb_prescan::undecodable_records`]): type index to leaf
    /// kind.
    undecodable: HashMap<u32, u16>,
}

/// The type record at `idx`, parsed, unless it is one pdb2 would panic on.
fn parse_type<'t>(
    finder: &TypeFinder<'t>,
    names: &DefinitionNames,
    idx: TypeIndex,
) -> pdb2::Result<TypeData<'t>> {
    if let Some(&leaf) = names.undecodable.get(&idx.0) {
        return Err(pdb2::Error::UnimplementedTypeKind(leaf));
    }
    finder.find(idx).and_then(|t| t.parse())
}

/// A struct, union or enum definition in the type stream (not a forward
/// reference).
struct Definition {
    name: String,
    unique: Option<String>,
    idx: TypeIndex,
    is_enum: bool,
}

pub(super) fn read_types<'t>(
    tpi: &'t pdb2::TypeInformation<'_>,
    finder: &mut TypeFinder<'t>,
    undecodable: HashMap<u32, u16>,
    out: &mut Layouts,
    warnings: &mut Vec<String>,
) -> pdb2::Result<DefinitionNames> {
    let mut names = DefinitionNames {
        undecodable,
        ..Default::default()
    };
    // Pass 1: index every definition by name; remember which to lay out.
    let (found, unparsed) = definitions(tpi, finder, &names.undecodable)?;
    if unparsed > 0 {
        warnings.push(format!(
            "{unparsed} type records use kinds pdb2 does not parse and were skipped"
        ));
    }
    let (defs, enums) = name_definitions(&found, &mut names);
    // Pass 2: lay out each definition.
    let finder = &*finder;
    for (key, idx) in defs {
        match layout_of(finder, &names, idx) {
            Ok(t) => {
                out.types.insert(key, t);
            }
            Err(e) => warnings.push(format!("type {key}: {e}; skipped")),
        }
    }
    for (key, idx) in enums {
        match enumerators(finder, &names, idx) {
            Ok(v) => {
                out.enums.insert(key, v);
            }
            Err(e) => warnings.push(format!("enum {key}: {e}; skipped")),
        }
    }
    Ok(names)
}

/// The definitions in stream order, and how many records pdb2 could not
/// parse. Feeds `finder` every record on the way.
fn definitions<'t>(
    tpi: &'t pdb2::TypeInformation<'_>,
    finder: &mut TypeFinder<'t>,
    undecodable: &HashMap<u32, u16>,
) -> pdb2::Result<(Vec<Definition>, usize)> {
    let mut iter = tpi.iter();
    let mut found = Vec::new();
    let mut unparsed = 0usize;
    while let Some(item) = iter.next()? {
        finder.update(&iter);
        let idx = item.index();
        let parsed = if let Some(&leaf) = undecodable.get(&idx.0) {
            Err(pdb2::Error::UnimplementedTypeKind(leaf))
        } else {
            item.parse()
        };
        // A definition's name, unique name and kind (forward references
        // are resolved to definitions later, by name).
        let def = match &parsed {
            Ok(TypeData::Class(c)) => Some((c.name, c.unique_name, c.properties, false)),
            Ok(TypeData::Union(u)) => Some((u.name, u.unique_name, u.properties, false)),
            Ok(TypeData::Enumeration(e)) => Some((e.name, e.unique_name, e.properties, true)),
            Ok(_) => None,
            Err(_) => {
                unparsed += 1;
                None
            }
        };
        if let Some((name, unique, properties, is_enum)) = def
            && !properties.forward_reference()
        {
            found.push(Definition {
                name: name.to_string().into_owned(),
                unique: unique.map(|u| u.to_string().into_owned()),
                idx,
                is_enum,
            });
        }
    }
    Ok((found, unparsed))
}

/// Definitions to lay out, by key.
type Keyed = Vec<(String, TypeIndex)>;

/// Key every definition (`names`), and list the first of each key to lay
/// out: structs and unions, then enums.
fn name_definitions(found: &[Definition], names: &mut DefinitionNames) -> (Keyed, Keyed) {
    // MSVC gives every anonymous type of a C file the same unique name
    // (`.?AU<unnamed-tag>@@`, `.?AT<unnamed-tag>@@`): a unique name held by
    // more than one anonymous definition names none of them.
    let mut shared: HashMap<&str, u32> = HashMap::new();
    for d in found {
        if let (true, Some(u)) = (is_anonymous(&d.name), &d.unique) {
            *shared.entry(u.as_str()).or_default() += 1;
        }
    }
    let mut defs = Vec::new();
    let mut enums = Vec::new();
    for d in found {
        let unique = d
            .unique
            .as_deref()
            .filter(|u| shared.get(u).is_none_or(|&n| n < 2));
        let key = type_key(&d.name, unique, d.idx);
        names.key_by_index.insert(d.idx.0, key.clone());
        if !names.by_name.contains_key(&key) {
            names.by_name.insert(key.clone(), d.idx);
            if d.is_enum {
                enums.push((key, d.idx));
            } else {
                defs.push((key, d.idx));
            }
        }
    }
    (defs, enums)
}

/// The name a type is stored under. Anonymous nested types all share a
/// placeholder name in Microsoft's PDBs (`<unnamed-tag>`), so they are
/// keyed by their unique name, or failing that (no unique name, or one
/// other anonymous types share) by their type index.
fn type_key(name: &str, unique: Option<&str>, idx: TypeIndex) -> String {
    match (is_anonymous(name), unique) {
        (false, _) => name.to_string(),
        (true, Some(u)) => u.to_string(),
        (true, None) => format!("<unnamed-tag>#{:x}", idx.0),
    }
}

fn is_anonymous(name: &str) -> bool {
    name.is_empty()
        || name.contains("<unnamed-")
        || name.contains("<anonymous-")
        || name == "__unnamed"
}

/// The key and size of the struct or union at `ti` that a member or
/// pointer refers to. A definition is itself; a forward reference is
/// resolved by name to the definition (its own size, 0, as a last resort).
fn udt_key_size(
    finder: &TypeFinder<'_>,
    names: &DefinitionNames,
    ti: TypeIndex,
    (name, unique, forward, size): (&str, Option<pdb2::RawString<'_>>, bool, u64),
) -> (String, u64) {
    if !forward && let Some(key) = names.key_by_index.get(&ti.0) {
        return (key.clone(), size);
    }
    let unique = unique.map(|u| u.to_string());
    let key = type_key(name, unique.as_deref(), ti);
    let size = resolve_size(finder, names, &key).unwrap_or(size);
    (key, size)
}

fn err(s: impl Into<String>) -> String {
    s.into()
}

fn layout_of(
    finder: &TypeFinder<'_>,
    names: &DefinitionNames,
    idx: TypeIndex,
) -> Result<TypeLayout, String> {
    let (size, fields, union) = match parse_type(finder, names, idx) {
        Ok(TypeData::Class(c)) => (c.size, c.fields, false),
        Ok(TypeData::Union(u)) => (u.size, Some(u.fields), true),
        Ok(_) => return Err(err("not a struct or union")),
        Err(e) => return Err(e.to_string()),
    };
    let mut layout = TypeLayout {
        size,
        union,
        fields: Vec::new(),
    };
    for_each_list_item(finder, names, fields, "field list", |f| {
        if let TypeData::Member(m) = f {
            let name = m.name.to_string();
            if is_layout_helper(&name) {
                return Ok(());
            }
            let mut field = FieldLayout {
                name: name.into_owned(),
                offset: m.offset,
                ..Default::default()
            };
            describe(finder, names, m.field_type, &mut field, 0)
                .map_err(|e| format!("member {}: {e}", field.name))?;
            layout.fields.push(field);
        }
        Ok(())
    })?;
    layout.sort();
    Ok(layout)
}

/// The helper members of the synthetic PDBs' anonymous-member technique
/// (docs/testdata-nt.md): `__padN`, `__tail`, `__size`. Other names that
/// start with `__` are real: `_EXCEPTION_RECORD64.__unusedAlignment` in
/// every ntkrnlmp, `__ss_pad1` in the SDK's `sockaddr_storage`.
fn is_layout_helper(name: &str) -> bool {
    name == "__tail"
        || name == "__size"
        || name
            .strip_prefix("__pad")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

/// Fill in a member's size, type name, bits, array and pointer details.
fn describe(
    finder: &TypeFinder<'_>,
    names: &DefinitionNames,
    ti: TypeIndex,
    f: &mut FieldLayout,
    depth: u32,
) -> Result<(), String> {
    if depth > MAX_TYPE_DEPTH {
        return Err(err("type chain too deep (cyclic?)"));
    }
    let data = parse_type(finder, names, ti).map_err(|e| e.to_string())?;
    match data {
        TypeData::Primitive(p) => match p.indirection {
            Some(mode) => {
                f.size = pointer_size(mode);
                f.type_name = "pointer".into();
                f.pointee = Some(primitive_name(p.kind).into());
            }
            None => {
                f.size = primitive_size(p.kind);
                f.type_name = primitive_name(p.kind).into();
            }
        },
        TypeData::Modifier(m) => describe(finder, names, m.underlying_type, f, depth + 1)?,
        TypeData::Bitfield(b) => {
            describe(finder, names, b.underlying_type, f, depth + 1)?;
            f.bit_position = Some(u32::from(b.position));
            f.bit_length = Some(u32::from(b.length));
        }
        TypeData::Pointer(p) => {
            f.size = u64::from(p.attributes.size());
            if f.size == 0 {
                f.size = 8;
            }
            f.type_name = "pointer".into();
            f.pointee = Some(target_name(finder, names, p.underlying_type, depth + 1));
        }
        TypeData::Class(pdb2::ClassType {
            name,
            unique_name,
            properties,
            size,
            ..
        })
        | TypeData::Union(pdb2::UnionType {
            name,
            unique_name,
            properties,
            size,
            ..
        }) => {
            let udt = (
                &*name.to_string(),
                unique_name,
                properties.forward_reference(),
                size,
            );
            (f.type_name, f.size) = udt_key_size(finder, names, ti, udt);
        }
        TypeData::Enumeration(e) => {
            describe(finder, names, e.underlying_type, f, depth + 1)?;
            let key = names.key_by_index.get(&ti.0).cloned();
            let unique = e.unique_name.map(|u| u.to_string());
            f.enum_name =
                Some(key.unwrap_or_else(|| type_key(&e.name.to_string(), unique.as_deref(), ti)));
        }
        TypeData::Array(a) => describe_array(finder, names, &a, f, depth)?,
        TypeData::Procedure(_) | TypeData::MemberFunction(_) => {
            f.size = 0;
            f.type_name = "function".into();
        }
        other => return Err(format!("unsupported member type {other:?}")),
    }
    Ok(())
}

/// An array member: its total size, element size and count, and the
/// element's type (`array` for an array of arrays).
fn describe_array(
    finder: &TypeFinder<'_>,
    names: &DefinitionNames,
    a: &pdb2::ArrayType,
    f: &mut FieldLayout,
    depth: u32,
) -> Result<(), String> {
    let total = u64::from(*a.dimensions.last().unwrap_or(&0));
    let mut elem = FieldLayout::default();
    describe(finder, names, a.element_type, &mut elem, depth + 1)?;
    // Multi-dimensional arrays list cumulative byte sizes; the
    // element of the outermost dimension is the next one in.
    let elem_size = if a.dimensions.len() > 1 {
        u64::from(a.dimensions[a.dimensions.len() - 2])
    } else {
        elem.size
    };
    f.size = total;
    f.element_size = Some(elem_size);
    f.count = Some(total.checked_div(elem_size).unwrap_or(0));
    if a.dimensions.len() > 1 || elem.count.is_some() {
        f.type_name = "array".into();
    } else {
        f.type_name = elem.type_name;
        f.pointee = elem.pointee;
        f.enum_name = elem.enum_name;
    }
    Ok(())
}

fn resolve_size(finder: &TypeFinder<'_>, names: &DefinitionNames, key: &str) -> Option<u64> {
    let idx = *names.by_name.get(key)?;
    match parse_type(finder, names, idx).ok()? {
        TypeData::Class(c) => Some(c.size),
        TypeData::Union(u) => Some(u.size),
        _ => None,
    }
}

/// The size of a global's type (for S_GDATA32 records).
pub(super) fn type_size(
    finder: &TypeFinder<'_>,
    names: &DefinitionNames,
    ti: TypeIndex,
    depth: u32,
) -> Option<u64> {
    let mut f = FieldLayout::default();
    describe(finder, names, ti, &mut f, depth).ok()?;
    Some(f.size)
}

/// A pointer's target, named as the ISF names it.
fn target_name(
    finder: &TypeFinder<'_>,
    names: &DefinitionNames,
    ti: TypeIndex,
    depth: u32,
) -> String {
    let mut f = FieldLayout::default();
    match describe(finder, names, ti, &mut f, depth) {
        Ok(()) if f.count.is_some() => "array".into(),
        Ok(()) if f.enum_name.is_some() => f.enum_name.unwrap_or_default(),
        Ok(()) => f.type_name,
        Err(_) => "unknown".into(),
    }
}

fn enumerators(
    finder: &TypeFinder<'_>,
    names: &DefinitionNames,
    idx: TypeIndex,
) -> Result<BTreeMap<String, i64>, String> {
    let e = match parse_type(finder, names, idx) {
        Ok(TypeData::Enumeration(e)) => e,
        Ok(_) => return Err(err("not an enum")),
        Err(e) => return Err(e.to_string()),
    };
    let mut out = BTreeMap::new();
    for_each_list_item(finder, names, Some(e.fields), "enumerator list", |f| {
        if let TypeData::Enumerate(v) = f {
            out.insert(v.name.to_string().into_owned(), variant(&v.value));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Hand each item of the `LF_FIELDLIST` at `first` and its continuations
/// to `each`. `what` names the list in messages (`field list`). A chain of
/// continuations longer than any real type's is refused: a hostile PDB
/// could make it cyclic.
fn for_each_list_item(
    finder: &TypeFinder<'_>,
    names: &DefinitionNames,
    first: Option<TypeIndex>,
    what: &str,
    mut each: impl FnMut(&TypeData<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut next = first;
    let mut lists = 0u32;
    while let Some(list_idx) = next {
        lists += 1;
        if lists > 4096 {
            return Err(err(format!("{what} continuations do not end")));
        }
        let list = match parse_type(finder, names, list_idx) {
            Ok(TypeData::FieldList(l)) => l,
            Ok(_) => return Err(err(format!("its {what} is not an LF_FIELDLIST"))),
            Err(e) => return Err(format!("its {what}: {e}")),
        };
        for f in &list.fields {
            each(f)?;
        }
        next = list.continuation;
    }
    Ok(())
}
