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

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use cab::check_cabinet;
pub use request::{ImageFileRequest, PdbRequest, StoreFile};

use crate::symbol_path::{SymbolPath, SymbolPathElement, Upstream};
use search::Search;
use server::Servers;

/// A downloaded PDB larger than this is refused (ntkrnlmp.pdb is 10-15
/// MB; the largest Microsoft PDBs are a few hundred MB).
pub const MAX_DOWNLOAD: u64 = 1 << 30;
/// Redirects followed per request (symsrv's own limit is similar).
pub const MAX_REDIRECTS: u32 = 10;
/// A `file.ptr` is one line; anything longer is not one.
const MAX_FILE_PTR: u64 = 4096;

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

/// One place that was tried, and what happened there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// A path or URL.
    pub location: String,
    /// What happened there (`not in this store`, `wrong PDB: ...`).
    pub outcome: String,
}

impl Attempt {
    /// Does the outcome name the location already (an error about a file,
    /// such as "X decompresses to more than N bytes")?
    pub fn outcome_names_location(&self) -> bool {
        self.outcome.starts_with(&self.location)
    }

    /// The outcome without the location it may start with, for a caller
    /// that names the location itself.
    pub fn outcome_alone(&self) -> &str {
        match self.outcome.strip_prefix(&self.location) {
            Some(rest) => rest.trim_start_matches([':', ' ']),
            None => &self.outcome,
        }
    }
}

/// `location: outcome`, or the outcome alone when it names the location
/// itself: a path is said once.
impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.outcome_names_location() {
            f.write_str(&self.outcome)
        } else {
            write!(f, "{}: {}", self.location, self.outcome)
        }
    }
}

/// The PDB that was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundPdb {
    /// Where the file is now (in a store, when it was downloaded,
    /// expanded or copied into one).
    pub path: PathBuf,
    /// How it was obtained.
    pub origin: PdbOrigin,
    /// Every place tried before, with what was wrong there.
    pub attempts: Vec<Attempt>,
}

/// Why no PDB was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No element of the symbol path has the file.
    #[error(
        "{name} ({key}) is not in any element of the symbol path{}",
        list(attempts)
    )]
    NotFound {
        /// The file's name.
        name: String,
        /// Its store key (`<GUID><AGE>` for a PDB).
        key: String,
        /// Every place tried, with what was wrong there.
        attempts: Vec<Attempt>,
    },
    /// A server answered with something other than the file or a 404, or
    /// served a file that is not the wanted PDB: the search stops there,
    /// as symsrv's does, so a broken server or proxy is not hidden.
    #[error("{url}: {detail}{}", list(attempts))]
    Server {
        /// The URL that answered.
        url: String,
        /// What was wrong with the answer.
        detail: String,
        /// Every place tried before.
        attempts: Vec<Attempt>,
    },
}

impl StoreError {
    /// Every place tried.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            StoreError::NotFound { attempts, .. } | StoreError::Server { attempts, .. } => attempts,
        }
    }
}

fn list(a: &[Attempt]) -> String {
    if a.is_empty() {
        return String::new();
    }
    let mut s = String::from("; tried:");
    for x in a {
        s.push_str(&format!(" [{}: {}]", x.location, x.outcome));
    }
    s
}

/// Progress of a download, for a progress bar (the library draws none).
pub trait DownloadProgress: Send + Sync {
    /// A download from `url` begins; `total` bytes when the server says.
    fn start(&self, url: &str, total: Option<u64>);
    /// `bytes` more arrived.
    fn advance(&self, bytes: u64);
    /// The download ended (complete or not).
    fn finish(&self);
}

/// How to reach symbol servers.
pub struct FetchOptions<'a> {
    /// Never contact a server.
    pub offline: bool,
    /// Use the proxy named by `ALL_PROXY`/`HTTPS_PROXY`/`HTTP_PROXY`
    /// (honouring `NO_PROXY`).
    pub proxy_from_env: bool,
    /// How long to wait for a server to answer, and between parts of a
    /// body.
    pub timeout: Duration,
    /// Told of each download's progress.
    pub progress: Option<&'a dyn DownloadProgress>,
}

impl Default for FetchOptions<'_> {
    fn default() -> Self {
        Self {
            offline: false,
            proxy_from_env: true,
            timeout: Duration::from_secs(60),
            progress: None,
        }
    }
}

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
