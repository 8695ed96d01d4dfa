//! Where symbols came from: the PDB they describe ([`PdbIdentity`]), the
//! kind of source that answered ([`SourceKind`]) and, per layer, the detail
//! ([`SymbolSource`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::guid::Guid;
use crate::layout::Layouts;

/// Which PDB a set of symbols describes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PdbIdentity {
    /// File name (`ntkrnlmp.pdb`).
    pub name: String,
    /// The PDB's GUID.
    pub guid: Guid,
    /// The PDB's age (bumped on each incremental link).
    pub age: u32,
}

impl PdbIdentity {
    /// Symbol-store key: `<GUID><AGE>` ([`crate::store::pdb_key`]).
    pub fn store_key(&self) -> String {
        crate::key::pdb_key(&self.guid, self.age)
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
    /// The build's PDB, or layouts cached from it.
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
    /// A Volatility ISF file.
    Isf {
        /// The ISF file.
        path: PathBuf,
    },
    /// pooldump's built-in table.
    BuiltIn {
        /// How the table's entry was matched.
        matched_by: BuiltInMatch,
        /// The table entry's build (`10.0.19041.3324`).
        build: String,
        /// Consulted only for what the primary source lacks.
        supplement: bool,
    },
}

impl SymbolSource {
    /// The kind of this source.
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
    /// Where the layouts came from.
    pub source: SymbolSource,
    /// What the source knows.
    pub layouts: Arc<Layouts>,
}

/// How a PDB was obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PdbOrigin {
    /// Found in a plain directory of the symbol path.
    Directory {
        /// The directory.
        dir: PathBuf,
    },
    /// Found in a symbol store or cache (a cache hit).
    Store {
        /// The store.
        store: PathBuf,
    },
    /// Downloaded from a symbol server into a store.
    Downloaded {
        /// The URL that served it.
        url: String,
        /// The store it was downloaded into.
        store: PathBuf,
    },
    /// Given explicitly by the user.
    Explicit,
}

impl std::fmt::Display for PdbOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PdbOrigin::Directory { dir } => write!(f, "found in directory {}", dir.display()),
            PdbOrigin::Store { store } => write!(f, "cache hit in store {}", store.display()),
            PdbOrigin::Downloaded { url, store } => {
                write!(f, "downloaded from {url} into {}", store.display())
            }
            PdbOrigin::Explicit => f.write_str("given on the command line"),
        }
    }
}
