//! Finding a PDB along a [`SymbolPath`]: local directories and symbol
//! stores first, then HTTP(S) symbol servers, downloading into the
//! downstream store the way symsrv does.
//!
//! Store layout: `<store>/<pdb>/<GUID><AGE>/<pdb>`, GUID in the compact
//! upper-case form, AGE in hex. WinDbg writes the age upper-case and some
//! tools (addr-symbolizer) lower-case, so both are looked up. What real
//! stores and servers also hold, and symsrv follows (docs/symbols.md):
//! * a two-tier store (an `index2.txt` at its root) puts every file under
//!   the first two characters of its name: `<store>/nt/ntkrnlmp.pdb/...`;
//! * the file may be compressed: `ntkrnlmp.pd_`, a CAB (MSZIP or LZX),
//!   expanded with the `cab` crate into the downstream store;
//! * a `file.ptr` in the key directory instead of the file: `PATH:<path>`
//!   names where it is, `MSG:<text>` why it is not;
//! * a server answers 404 for the plain name when it has only the
//!   compressed one, and redirects (Microsoft's sends a 302 to blob
//!   storage): redirects are followed up to [`MAX_REDIRECTS`], then
//!   `.pd_`, then `file.ptr` are asked for.
//!
//! A download goes to a temporary file in the destination directory, is
//! verified (it must be a PDB with the wanted GUID and age), and only then
//! renamed into place: a store never holds a partial or wrong file.

mod cab;
#[cfg(feature = "download")]
mod http;
mod request;
mod search;
mod server;
mod types;

use std::path::{Path, PathBuf};

pub use crate::key::{image_key, pdb_key};
pub use crate::source::PdbOrigin;
pub use cab::check_cabinet;
pub use request::{ImageFileRequest, PdbRequest, StoreFile};
pub use types::{
    Attempt, DownloadProgress, FetchOptions, FoundPdb, MAX_DOWNLOAD, MAX_REDIRECTS, StoreError,
};

use crate::symbol_path::{SymbolPath, SymbolPathElement, Upstream};
use search::Search;
use server::Servers;

/// Search the symbol path for `req`.
pub fn find_pdb(
    path: &SymbolPath,
    req: &PdbRequest,
    opts: &FetchOptions<'_>,
) -> Result<FoundPdb, StoreError> {
    find_file(path, req, opts)
}

/// Search the symbol path for `req` (a [`PdbRequest`], an
/// [`ImageFileRequest`]: `<name>/<TimeDateStamp><SizeOfImage>/<name>` in
/// stores and servers, `<dir>/<name>` in a plain directory), element by
/// element: the first that has the file, checked to be the one wanted,
/// answers.
pub fn find_file<R: StoreFile + ?Sized>(
    path: &SymbolPath,
    req: &R,
    opts: &FetchOptions<'_>,
) -> Result<FoundPdb, StoreError> {
    let mut search = Search::new(req);
    let mut caches: Vec<PathBuf> = Vec::new();
    let mut servers = Servers::new(opts);
    for e in &path.elements {
        let hit = match e {
            SymbolPathElement::Cache(dir) => {
                let hit = search.in_store(dir, dir).map(|p| (p, store_origin(dir)));
                caches.push(dir.clone());
                hit
            }
            SymbolPathElement::Directory(dir) => {
                let expand = caches.first().unwrap_or(dir);
                search.in_directory(dir, expand).map(|p| {
                    let p = search.copy_into_cache(&p, caches.first().map(PathBuf::as_path));
                    (p, PdbOrigin::Directory { dir: dir.clone() })
                })
            }
            SymbolPathElement::Server {
                downstream,
                upstream,
            } => at_server(
                &mut search,
                &mut servers,
                downstream,
                upstream,
                caches.first(),
            )?,
        };
        if let Some((p, origin)) = hit {
            return Ok(search.found(p, origin));
        }
    }
    Err(StoreError::NotFound {
        name: req.file_name().to_string(),
        key: req.store_key(),
        attempts: search.attempts,
    })
}

fn store_origin(store: &Path) -> PdbOrigin {
    PdbOrigin::Store {
        store: store.to_path_buf(),
    }
}

/// A `srv*` element: its downstream stores, then its upstream store or
/// server, which fills the first downstream store (or the cache before it).
fn at_server<R: StoreFile + ?Sized>(
    search: &mut Search<'_, R>,
    servers: &mut Servers<'_, '_>,
    downstream: &[PathBuf],
    upstream: &Upstream,
    cache: Option<&PathBuf>,
) -> Result<Option<(PathBuf, PdbOrigin)>, StoreError> {
    for ds in downstream {
        if let Some(p) = search.in_store(ds, ds) {
            return Ok(Some((p, store_origin(ds))));
        }
    }
    let dest = downstream.first().or(cache).map(PathBuf::as_path);
    match upstream {
        Upstream::Store(dir) => {
            let expand = dest.unwrap_or(dir);
            Ok(search.in_store(dir, expand).map(|p| {
                let p = search.copy_into_cache(&p, dest);
                (p, store_origin(dir))
            }))
        }
        Upstream::Http(base) => servers.fetch(search, base, dest),
    }
}
