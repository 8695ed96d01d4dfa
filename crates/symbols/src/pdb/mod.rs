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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pdb2::{FallibleIterator, PDB, TypeFinder, TypeIndex};

use crate::guid::Guid;
use crate::layout::Layouts;
use crate::source::PdbIdentity;

pub use crate::pdb_prescan::symbol_kind_is_read;

mod primitive;
mod types;

use types::{DefinitionNames, read_types, type_size};

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
