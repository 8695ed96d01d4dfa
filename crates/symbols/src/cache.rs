//! The layout cache: the [`Layouts`] read from a PDB, stored compactly
//! keyed by PDB name, GUID and age, so the second run on the same build
//! reads one small file instead of locating and re-parsing a 10 MB PDB
//! (the crate's `benches/symbols.rs` measures both).
//!
//! `<root>/layouts/<pdb>/<GUID><AGE>.bin`: the magic `PDLC`, the format
//! version (u32 LE), then the file in postcard, a compact binary serde
//! format (JSON was measured as slow to read as the small synthetic PDBs
//! themselves; postcard is several times faster). A file whose magic,
//! version or identity does not match, or that does not decode, is
//! ignored with a warning and rewritten on the next PDB read.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::Layouts;
use crate::source::PdbIdentity;

/// Bump when the PDB reader changes what it extracts: older cache files
/// are then ignored. (2: the synthetic test PDBs were rebuilt with new
/// code under their real builds' GUIDs; stale files from them must not be
/// trusted. 3: the reader keeps MSVC's anonymous types apart, sizes
/// pointers by their mode and keeps real `__` members, so layouts cached
/// from a Microsoft-made PDB by an older reader may be wrong.)
pub const CACHE_FORMAT: u32 = 3;
const MAGIC: &[u8; 4] = b"PDLC";

/// A cached layout file larger than this is not a real one.
const MAX_CACHE_FILE: u64 = 512 << 20;

/// The per-user cache directory: `$POOLDUMP_CACHE_DIR`, else the
/// platform's cache directory plus `pooldump` (`~/.cache/pooldump`,
/// `%LOCALAPPDATA%\pooldump`).
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("POOLDUMP_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    dirs::cache_dir().map(|d| d.join("pooldump"))
}

/// A layout cache rooted at a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutCache {
    /// The directory that holds the cached layout files.
    pub root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    name: String,
    guid: String,
    age: u32,
    layouts: Layouts,
}

impl LayoutCache {
    /// A cache in the directory `root` (created on the first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where `id`'s layouts are (or would be) cached. The name was
    /// validated as a [`super::PdbName`] before it got here.
    pub fn path(&self, id: &PdbIdentity) -> PathBuf {
        self.root.join("layouts").join(&id.name).join(format!(
            "{}{:X}.bin",
            id.guid.compact(),
            id.age
        ))
    }

    /// The cached layouts of `id`, if there is a valid file. A broken file
    /// is an `Err` with the reason (the caller re-reads the PDB).
    pub fn load(&self, id: &PdbIdentity) -> Result<Option<Layouts>, String> {
        let p = self.path(id);
        let meta = match std::fs::metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", p.display())),
        };
        if meta.len() > MAX_CACHE_FILE {
            return Err(format!("{} is implausibly large", p.display()));
        }
        let bytes =
            pooldump_io::input::read_capped(&p, MAX_CACHE_FILE, "a pooldump layout cache file")
                .map_err(|e| e.to_string())?;
        if bytes.get(..4) != Some(&MAGIC[..]) {
            return Err(format!(
                "{} is not a pooldump layout cache file",
                p.display()
            ));
        }
        let format = bytes
            .get(4..8)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if format != CACHE_FORMAT {
            return Err(format!(
                "{} has cache format {format}, this pooldump writes {CACHE_FORMAT}",
                p.display()
            ));
        }
        let f: CacheFile =
            postcard::from_bytes(&bytes[8..]).map_err(|e| format!("{}: {e}", p.display()))?;
        if f.name != id.name || f.guid != id.guid.compact() || f.age != id.age {
            return Err(format!("{} belongs to another PDB", p.display()));
        }
        Ok(Some(f.layouts))
    }

    /// Store `layouts` for `id` (temporary file, then rename, so readers
    /// never see half a file).
    pub fn store(&self, id: &PdbIdentity, layouts: &Layouts) -> std::io::Result<PathBuf> {
        let p = self.path(id);
        let dir = p.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)?;
        let f = CacheFile {
            name: id.name.clone(),
            guid: id.guid.compact(),
            age: id.age,
            layouts: layouts.clone(),
        };
        let body = postcard::to_stdvec(&f).map_err(std::io::Error::other)?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(pooldump_io::fsio::without_temp_path)?;
        tmp.write_all(MAGIC)?;
        tmp.write_all(&CACHE_FORMAT.to_le_bytes())?;
        tmp.write_all(&body)?;
        tmp.flush()?;
        tmp.persist(&p).map_err(|e| e.error)?;
        Ok(p)
    }
}

impl AsRef<Path> for LayoutCache {
    fn as_ref(&self) -> &Path {
        &self.root
    }
}
