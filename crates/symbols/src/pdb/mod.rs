//! Reading a PDB into [`Layouts`] with `pdb2`.
//!
//! Why `pdb2` and not `pdb` 0.8: `pdb` 0.8.0 cannot read a field list that
//! the linker split with LF_INDEX (it does not skip the pad after the leaf);
//! `pdb2` is the maintained, API-identical fork that can.
//! `crates/symbols/tests/symbols_lfindex.rs` shows both on a committed fixture and
//! docs/symbols.md explains the choice.
//!
//! What the reader does (docs/testdata-nt.md):
//! * globals through S_PUB32 first, S_GDATA32/S_LDATA32 second: Microsoft's
//!   public PDBs have publics and types but no data records;
//! * each struct/union/enum appears as a forward reference and a
//!   definition; members point at the forward reference, so types are
//!   resolved by name (or unique name) to the definition;
//! * a bitfield member's offset is that of its storage unit; LF_BITFIELD
//!   gives position, length and the unit's type;
//! * members named `__padN`, `__tail` and `__size` are layout helpers of
//!   synthetic PDBs (pads of the anonymous-member technique) and are
//!   skipped; other `__` names are real members and kept;
//! * LF_MODIFIER is looked through, LF_POINTER gives its size from its
//!   attributes, LF_ARRAY its size in bytes (the element count is derived).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use pdb2::{FallibleIterator, PDB, TypeData, TypeFinder, TypeIndex};

use crate::guid::Guid;
use crate::layout::{FieldLayout, Layouts, TypeLayout};
use crate::source::PdbIdentity;

pub use crate::pdb_prescan::symbol_kind_is_read;

mod primitive;

use primitive::{pointer_size, primitive_name, primitive_size, variant};

/// Type chains (modifier → pointer → array ...) deeper than this are
/// treated as broken: a hostile PDB could make them cyclic.
const MAX_TYPE_DEPTH: u32 = 32;

/// Why a PDB could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PdbError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The PDB file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a PDB pooldump can read, or is damaged.
    #[error("{path} is not a readable PDB: {detail}")]
    Malformed {
        /// The PDB file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The file is a readable PDB of another build.
    #[error(
        "{path} is the wrong PDB: it is {found}, the image needs {wanted} (a different build of the same file)"
    )]
    Mismatch {
        /// The PDB file.
        path: PathBuf,
        /// Its GUID and age.
        found: String,
        /// The GUID and age the image asked for.
        wanted: String,
    },
}

/// A PDB's identity without reading its types or symbols: cheap, used to
/// verify a downloaded or cached file before it is used.
pub fn read_identity(path: &Path) -> Result<(Guid, u32), PdbError> {
    let file = std::fs::File::open(path).map_err(|source| PdbError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mal = |e: pdb2::Error| PdbError::Malformed {
        path: path.to_path_buf(),
        detail: describe_pdb2(&e),
    };
    check_msf_length(&file).map_err(|detail| PdbError::Malformed {
        path: path.to_path_buf(),
        detail,
    })?;
    let mut pdb = PDB::open(file).map_err(mal)?;
    identity(&mut pdb).map_err(mal)
}

/// pdb2's error in words: some of its variants print only their Rust
/// name (`UnexpectedEof`), which tells a user nothing.
fn describe_pdb2(e: &pdb2::Error) -> String {
    use pdb2::Error as E;
    match e {
        E::UnrecognizedFileFormat => {
            "it does not start with the PDB 7.00 (MSF) signature: not a PDB, or a compressed one (.pd_) saved under the .pdb name".into()
        }
        E::UnexpectedEof | E::SymbolTooShort | E::TypeTooShort => {
            "a record runs past the end of its stream: the file is truncated or damaged".into()
        }
        E::ScrollError(s) => {
            format!("a record runs past the end of its stream: the file is truncated or damaged ({s})")
        }
        E::StreamNameNotFound | E::GlobalSymbolsNotFound | E::AddressMapNotFound => {
            format!("a stream every kernel PDB has is missing ({e:?}): the file is damaged or stripped")
        }
        other => other.to_string(),
    }
}

/// GUID (Windows byte order) and age. Matching an image uses the DBI
/// stream's age, which is what the RSDS record carries; the info stream's
/// age is the fallback.
fn identity<'s, S: pdb2::Source<'s> + 's>(pdb: &mut PDB<'s, S>) -> pdb2::Result<(Guid, u32)> {
    let info = pdb.pdb_information()?;
    let guid = Guid(info.guid.to_bytes_le());
    let age = pdb
        .debug_information()
        .ok()
        .and_then(|d| d.age())
        .unwrap_or(info.age);
    Ok((guid, age))
}

/// Read the PDB at `path`; when `expect` is given, fail unless its GUID and
/// age match (before spending time on its types).
/// A PDB 7 (MSF) file is a whole number of blocks: its superblock gives the
/// block size and count. pdb2 reads streams lazily, so a file cut inside a
/// block nobody reads would otherwise parse; refuse it as the truncated
/// download it is. (Files without the MSF 7 magic are left to pdb2.)
fn check_msf_length<R: std::io::Read + std::io::Seek>(mut r: R) -> Result<(), String> {
    use std::io::SeekFrom;
    const MAGIC: &[u8; 32] = b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0";
    let len = r
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("cannot seek: {e}"))?;
    r.seek(SeekFrom::Start(0))
        .map_err(|e| format!("cannot seek: {e}"))?;
    let mut head = [0u8; 48];
    let ok = len >= head.len() as u64 && r.read_exact(&mut head).is_ok() && &head[..32] == MAGIC;
    r.seek(SeekFrom::Start(0))
        .map_err(|e| format!("cannot seek: {e}"))?;
    if !ok {
        return Ok(());
    }
    let le = pooldump_io::bytes::Le(&head);
    let block_size = u64::from(le.u32(32).unwrap_or(0));
    let blocks = u64::from(le.u32(40).unwrap_or(0));
    let want = block_size.saturating_mul(blocks);
    if len < want {
        return Err(format!(
            "truncated: the MSF superblock says {blocks} blocks of {block_size} bytes ({want} bytes), the file has {len}"
        ));
    }
    Ok(())
}

/// Read the PDB at `path` (file name `name`, for the identity it
/// reports): its globals, struct and union layouts and enums. With
/// `expect`, a PDB of another GUID or age is [`PdbError::Mismatch`]. The
/// warnings name records that were skipped.
pub fn read_pdb(
    path: &Path,
    name: &str,
    expect: Option<(Guid, u32)>,
) -> Result<(PdbIdentity, Layouts, Vec<String>), PdbError> {
    let file = std::fs::File::open(path).map_err(|source| PdbError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    read_pdb_from(file, path, name, expect)
}

/// [`read_pdb`] over a PDB's bytes; `path` names it in messages (the fuzz
/// targets and tests use this).
pub fn read_pdb_bytes(
    bytes: &[u8],
    path: &Path,
    name: &str,
    expect: Option<(Guid, u32)>,
) -> Result<(PdbIdentity, Layouts, Vec<String>), PdbError> {
    read_pdb_from(std::io::Cursor::new(bytes), path, name, expect)
}

fn read_pdb_from<'s, R>(
    source: R,
    path: &Path,
    name: &str,
    expect: Option<(Guid, u32)>,
) -> Result<(PdbIdentity, Layouts, Vec<String>), PdbError>
where
    R: std::io::Read + std::io::Seek + std::fmt::Debug + Send + Sync + 's,
{
    let mal = |e: pdb2::Error| PdbError::Malformed {
        path: path.to_path_buf(),
        detail: describe_pdb2(&e),
    };
    let mut source = source;
    check_msf_length(&mut source).map_err(|detail| PdbError::Malformed {
        path: path.to_path_buf(),
        detail,
    })?;
    let mut pdb = PDB::open(source).map_err(mal)?;
    check_dbi(&mut pdb).map_err(|detail| PdbError::Malformed {
        path: path.to_path_buf(),
        detail,
    })?;
    let (guid, age) = identity(&mut pdb).map_err(mal)?;
    if let Some((g, a)) = expect
        && (g != guid || a != age)
    {
        return Err(PdbError::Mismatch {
            path: path.to_path_buf(),
            found: format!("GUID {guid} age {age}"),
            wanted: format!("GUID {g} age {a}"),
        });
    }
    let mut warnings = Vec::new();
    let mut layouts = Layouts::default();
    let types = pdb.raw_stream(pdb2::StreamIndex(2)).map_err(mal)?;
    let types = types.as_ref().map_or(&[][..], |s| s.as_slice());
    crate::pdb_prescan::check_type_stream(types).map_err(|detail| PdbError::Malformed {
        path: path.to_path_buf(),
        detail,
    })?;
    let undecodable = crate::pdb_prescan::undecodable_records(types);
    let tpi = pdb.type_information().map_err(mal)?;
    let mut finder = tpi.finder();
    let names =
        read_types(&tpi, &mut finder, undecodable, &mut layouts, &mut warnings).map_err(mal)?;
    read_symbols(&mut pdb, &finder, &names, &mut layouts, &mut warnings).map_err(mal)?;
    Ok((
        PdbIdentity {
            name: name.to_string(),
            guid,
            age,
        },
        layouts,
        warnings,
    ))
}

fn read_symbols<'s, S: pdb2::Source<'s> + 's>(
    pdb: &mut PDB<'s, S>,
    finder: &TypeFinder<'_>,
    names: &DefinitionNames,
    out: &mut Layouts,
    warnings: &mut Vec<String>,
) -> pdb2::Result<()> {
    let map = pdb.address_map()?;
    let globals = pdb.global_symbols()?;
    let mut data: BTreeMap<String, (u64, TypeIndex)> = BTreeMap::new();
    let mut iter = globals.iter();
    let mut unparsed = 0usize;
    let mut alias = Vec::new();
    while let Some(sym) = iter.next()? {
        if !crate::pdb_prescan::symbol_kind_is_read(sym.raw_kind()) {
            continue;
        }
        match sym.parse() {
            Ok(pdb2::SymbolData::Public(p)) => {
                if let Some(rva) = p.offset.to_rva(&map) {
                    let name = p.name.to_string().into_owned();
                    if let Some(plain) = undecorate(&name) {
                        alias.push((plain.to_string(), u64::from(rva.0)));
                    }
                    out.symbols.entry(name).or_insert(u64::from(rva.0));
                }
            }
            Ok(pdb2::SymbolData::Data(d)) => {
                if let Some(rva) = d.offset.to_rva(&map) {
                    data.entry(d.name.to_string().into_owned())
                        .or_insert((u64::from(rva.0), d.type_index));
                }
            }
            Ok(_) => {}
            Err(_) => unparsed += 1,
        }
    }
    if unparsed > 0 {
        warnings.push(format!(
            "{unparsed} global symbol records could not be parsed and were skipped"
        ));
    }
    // x86 stdcall/fastcall publics (`_Name@8`, `@Name@8`) also answer to
    // their plain name, unless a symbol of that name exists.
    for (plain, rva) in alias {
        out.symbols.entry(plain).or_insert(rva);
    }
    // Data records fill in what the publics lack, and give sizes.
    for (name, (rva, ti)) in data {
        out.symbols.entry(name.clone()).or_insert(rva);
        if let Some(size) = type_size(finder, names, ti, 0) {
            out.symbol_sizes.insert(name, size);
        }
    }
    Ok(())
}

/// `_Name@12` / `@Name@12` → `Name`; C++ (`?...`) and plain names → None.
fn undecorate(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('_').or_else(|| name.strip_prefix('@'))?;
    let (base, n) = rest.rsplit_once('@')?;
    (!base.is_empty() && !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())).then_some(base)
}

/// Which index defines each struct/union/enum name, so a forward reference
/// can be resolved; and which records must not be handed to pdb2.
#[derive(Default)]
struct DefinitionNames {
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

/// Refuse a PDB whose DBI header would overflow pdb2's arithmetic
/// (its sizes are summed before pdb2 sees them); a DBI stream pdb2 cannot
/// read is left for pdb2 to report.
pub fn check_dbi<'s, S: pdb2::Source<'s> + 's>(pdb: &mut PDB<'s, S>) -> Result<(), String> {
    match pdb.raw_stream(pdb2::StreamIndex(3)) {
        Ok(Some(s)) if crate::pdb_prescan::dbi_sizes_overflow(&s) => Err(
            "its DBI stream states substream sizes that add up past 4 GiB: the file is damaged"
                .into(),
        ),
        _ => Ok(()),
    }
}

fn read_types<'t>(
    tpi: &'t pdb2::TypeInformation<'_>,
    finder: &mut TypeFinder<'t>,
    undecodable: HashMap<u32, u16>,
    out: &mut Layouts,
    warnings: &mut Vec<String>,
) -> pdb2::Result<DefinitionNames> {
    let mut iter = tpi.iter();
    // Pass 1: index every definition by name; remember which to lay out.
    let mut names = DefinitionNames {
        undecodable,
        ..Default::default()
    };
    // Definitions in stream order: name, unique name, index, is an enum.
    let mut found: Vec<(String, Option<String>, TypeIndex, bool)> = Vec::new();
    let mut unparsed = 0usize;
    while let Some(item) = iter.next()? {
        finder.update(&iter);
        let idx = item.index();
        let parsed = if let Some(&leaf) = names.undecodable.get(&idx.0) {
            Err(pdb2::Error::UnimplementedTypeKind(leaf))
        } else {
            item.parse()
        };
        let unique = |u: Option<pdb2::RawString<'_>>| u.map(|u| u.to_string().into_owned());
        match parsed {
            Ok(TypeData::Class(c)) if !c.properties.forward_reference() => {
                found.push((
                    c.name.to_string().into_owned(),
                    unique(c.unique_name),
                    idx,
                    false,
                ));
            }
            Ok(TypeData::Union(u)) if !u.properties.forward_reference() => {
                found.push((
                    u.name.to_string().into_owned(),
                    unique(u.unique_name),
                    idx,
                    false,
                ));
            }
            Ok(TypeData::Enumeration(e)) if !e.properties.forward_reference() => {
                found.push((
                    e.name.to_string().into_owned(),
                    unique(e.unique_name),
                    idx,
                    true,
                ));
            }
            Ok(_) => {}
            Err(_) => unparsed += 1,
        }
    }
    // MSVC gives every anonymous type of a C file the same unique name
    // (`.?AU<unnamed-tag>@@`, `.?AT<unnamed-tag>@@`): a unique name held by
    // more than one anonymous definition names none of them.
    let mut shared: HashMap<&str, u32> = HashMap::new();
    for (name, unique, _, _) in &found {
        if let (true, Some(u)) = (is_anonymous(name), unique) {
            *shared.entry(u.as_str()).or_default() += 1;
        }
    }
    let mut defs: Vec<(String, TypeIndex)> = Vec::new();
    let mut enums: Vec<(String, TypeIndex)> = Vec::new();
    for (name, unique, idx, is_enum) in &found {
        let unique = unique
            .as_deref()
            .filter(|u| shared.get(u).is_none_or(|&n| n < 2));
        let key = type_key(name, unique, *idx);
        names.key_by_index.insert(idx.0, key.clone());
        if !names.by_name.contains_key(&key) {
            names.by_name.insert(key.clone(), *idx);
            if *is_enum {
                enums.push((key, *idx));
            } else {
                defs.push((key, *idx));
            }
        }
    }
    if unparsed > 0 {
        warnings.push(format!(
            "{unparsed} type records use kinds pdb2 does not parse and were skipped"
        ));
    }
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
        TypeData::Array(a) => {
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
        }
        TypeData::Procedure(_) | TypeData::MemberFunction(_) => {
            f.size = 0;
            f.type_name = "function".into();
        }
        other => return Err(format!("unsupported member type {other:?}")),
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
fn type_size(
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

#[cfg(test)]
#[test]
fn undecorates_x86_call_conventions_only() {
    assert_eq!(undecorate("_KeBugCheckEx@20"), Some("KeBugCheckEx"));
    assert_eq!(undecorate("@KfRaiseIrql@4"), Some("KfRaiseIrql"));
    assert_eq!(undecorate("PoolTrackTable"), None);
    assert_eq!(undecorate("_security_cookie"), None);
    assert_eq!(undecorate("?Foo@@YAXXZ"), None);
    assert_eq!(undecorate("_x@"), None);
}

#[cfg(test)]
mod tests;
