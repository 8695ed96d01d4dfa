//! What a search of the symbol path is given ([`FetchOptions`]) and gives
//! back ([`FoundPdb`], [`StoreError`], each with the [`Attempt`]s made), and
//! its limits.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::source::PdbOrigin;

/// A downloaded PDB larger than this is refused (ntkrnlmp.pdb is 10-15
/// MB; the largest Microsoft PDBs are a few hundred MB).
pub const MAX_DOWNLOAD: u64 = 1 << 30;
/// Redirects followed per request (symsrv's own limit is similar).
pub const MAX_REDIRECTS: u32 = 10;
/// A `file.ptr` is one line; anything longer is not one.
pub(super) const MAX_FILE_PTR: u64 = 4096;

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
