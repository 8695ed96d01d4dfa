//! Finding a PDB along a [`SymbolPath`]: local directories and symbol
//! stores first, then HTTP(S) symbol servers, downloading into the
//! downstream store the way symsrv does.
//!
//! Store layout: `<store>/<pdb>/<GUID><AGE>/<pdb>`, GUID in the compact
//! upper-case form, AGE in hex. WinDbg writes the age upper-case and some
//! tools (addr-symbolizer) lower-case, so both are looked up.
//!
//! A download goes to a temporary file in the destination directory, is
//! verified (it must be a PDB with the wanted GUID and age), and only then
//! renamed into place: a store never holds a partial or wrong file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::name::PdbName;
use super::pdb::{PdbError, read_identity};
use super::symbol_path::{SymbolPath, SymbolPathElement, Upstream};
use crate::kernel::Guid;

/// A downloaded PDB larger than this is refused (ntkrnlmp.pdb is 10-15
/// MB; the largest Microsoft PDBs are a few hundred MB).
pub const MAX_DOWNLOAD: u64 = 1 << 30;

/// The PDB to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdbRequest {
    pub name: PdbName,
    pub guid: Guid,
    pub age: u32,
}

impl PdbRequest {
    /// `<GUID><AGE>` with the age upper-case (WinDbg, symstore).
    pub fn key(&self) -> String {
        format!("{}{:X}", self.guid.compact(), self.age)
    }

    /// The same with the age lower-case (addr-symbolizer and others).
    pub fn key_lower_age(&self) -> String {
        format!("{}{:x}", self.guid.compact(), self.age)
    }

    /// Where the file sits in a store.
    pub fn store_path(&self, store: &Path) -> PathBuf {
        store
            .join(self.name.as_str())
            .join(self.key())
            .join(self.name.as_str())
    }
}

/// How a PDB was obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PdbOrigin {
    /// Found in a plain directory of the symbol path.
    Directory { dir: PathBuf },
    /// Found in a symbol store or cache (a cache hit).
    Store { store: PathBuf },
    /// Downloaded from a symbol server into a store.
    Downloaded { url: String, store: PathBuf },
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
    pub location: String,
    pub outcome: String,
}

/// The PDB that was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundPdb {
    pub path: PathBuf,
    pub origin: PdbOrigin,
    /// Every place tried before, with what was wrong there.
    pub attempts: Vec<Attempt>,
}

/// Why no PDB was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{name} ({key}) is not in any element of the symbol path{}",
        list(attempts)
    )]
    NotFound {
        name: String,
        key: String,
        attempts: Vec<Attempt>,
    },
    /// A server answered with something other than the file or a 404, or
    /// served a file that is not the wanted PDB: the search stops there,
    /// as symsrv's does, so a broken server or proxy is not hidden.
    #[error("{url}: {detail}{}", list(attempts))]
    Server {
        url: String,
        detail: String,
        attempts: Vec<Attempt>,
    },
}

impl StoreError {
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
    fn start(&self, url: &str, total: Option<u64>);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// How to reach symbol servers.
pub struct FetchOptions<'a> {
    /// Never contact a server.
    pub offline: bool,
    /// Use the proxy named by `ALL_PROXY`/`HTTPS_PROXY`/`HTTP_PROXY`
    /// (honouring `NO_PROXY`).
    pub proxy_from_env: bool,
    pub timeout: Duration,
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
    let mut attempts = Vec::new();
    let mut caches: Vec<PathBuf> = Vec::new();
    let mut agent = None;
    for e in &path.elements {
        match e {
            SymbolPathElement::Cache(dir) => {
                if let Some(p) = look_in_store(dir, req, &mut attempts) {
                    return Ok(found(p, PdbOrigin::Store { store: dir.clone() }, attempts));
                }
                caches.push(dir.clone());
            }
            SymbolPathElement::Directory(dir) => {
                if let Some(p) = look_in_directory(dir, req, &mut attempts) {
                    let p = copy_into_cache(&p, caches.first(), req, &mut attempts);
                    return Ok(found(
                        p,
                        PdbOrigin::Directory { dir: dir.clone() },
                        attempts,
                    ));
                }
            }
            SymbolPathElement::Server {
                downstream,
                upstream,
            } => {
                for ds in downstream {
                    if let Some(p) = look_in_store(ds, req, &mut attempts) {
                        return Ok(found(p, PdbOrigin::Store { store: ds.clone() }, attempts));
                    }
                }
                let dest = downstream.first().or(caches.first());
                match upstream {
                    Upstream::Store(dir) => {
                        if let Some(p) = look_in_store(dir, req, &mut attempts) {
                            let p = copy_into_cache(&p, dest, req, &mut attempts);
                            return Ok(found(p, PdbOrigin::Store { store: dir.clone() }, attempts));
                        }
                    }
                    Upstream::Http(base) => {
                        let url = format!(
                            "{base}/{}/{}/{}",
                            req.name.as_str(),
                            req.key(),
                            req.name.as_str()
                        );
                        if opts.offline {
                            attempts.push(Attempt {
                                location: url,
                                outcome: "skipped (offline)".into(),
                            });
                            continue;
                        }
                        let Some(dest) = dest else {
                            attempts.push(Attempt {
                                location: url,
                                outcome: "skipped: no downstream store to download into".into(),
                            });
                            continue;
                        };
                        let agent = agent.get_or_insert_with(|| make_agent(opts));
                        match download(agent, &url, dest, req, opts) {
                            Ok(p) => {
                                return Ok(found(
                                    p,
                                    PdbOrigin::Downloaded {
                                        url,
                                        store: dest.clone(),
                                    },
                                    attempts,
                                ));
                            }
                            Err(Fail::NotFound(why)) => attempts.push(Attempt {
                                location: url,
                                outcome: why,
                            }),
                            Err(Fail::Fatal(detail)) => {
                                return Err(StoreError::Server {
                                    url,
                                    detail,
                                    attempts,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    Err(StoreError::NotFound {
        name: req.name.to_string(),
        key: req.key(),
        attempts,
    })
}

fn found(path: PathBuf, origin: PdbOrigin, attempts: Vec<Attempt>) -> FoundPdb {
    FoundPdb {
        path,
        origin,
        attempts,
    }
}

/// The store locations of `req` under `store`, both age cases.
fn store_candidates(store: &Path, req: &PdbRequest) -> Vec<PathBuf> {
    let n = req.name.as_str();
    let mut v = vec![store.join(n).join(req.key()).join(n)];
    let lower = store.join(n).join(req.key_lower_age()).join(n);
    if !v.contains(&lower) {
        v.push(lower);
    }
    v
}

fn look_in_store(store: &Path, req: &PdbRequest, attempts: &mut Vec<Attempt>) -> Option<PathBuf> {
    check_candidates(store_candidates(store, req), req, attempts).or_else(|| {
        attempts.push(Attempt {
            location: store.display().to_string(),
            outcome: "not in this store".into(),
        });
        None
    })
}

fn look_in_directory(dir: &Path, req: &PdbRequest, attempts: &mut Vec<Attempt>) -> Option<PathBuf> {
    let n = req.name.as_str();
    let mut c = vec![
        dir.join(n),
        dir.join("symbols").join("pdb").join(n),
        dir.join("pdb").join(n),
    ];
    c.extend(store_candidates(dir, req));
    check_candidates(c, req, attempts).or_else(|| {
        attempts.push(Attempt {
            location: dir.display().to_string(),
            outcome: "not in this directory".into(),
        });
        None
    })
}

/// The first candidate that exists and is the right PDB; wrong ones are
/// noted and skipped (WinDbg's "mismatched pdb").
fn check_candidates(
    c: Vec<PathBuf>,
    req: &PdbRequest,
    attempts: &mut Vec<Attempt>,
) -> Option<PathBuf> {
    for p in c {
        if !p.is_file() {
            continue;
        }
        match verify(&p, req) {
            Ok(()) => return Some(p),
            Err(why) => attempts.push(Attempt {
                location: p.display().to_string(),
                outcome: why,
            }),
        }
    }
    None
}

fn verify(p: &Path, req: &PdbRequest) -> Result<(), String> {
    match read_identity(p) {
        Ok((g, a)) if g == req.guid && a == req.age => Ok(()),
        Ok((g, a)) => Err(format!(
            "wrong PDB: GUID {g} age {a}, wanted GUID {} age {}",
            req.guid, req.age
        )),
        Err(PdbError::Malformed { detail, .. }) => Err(format!("not a valid PDB ({detail})")),
        Err(e) => Err(e.to_string()),
    }
}

/// `cache*DIR` semantics: a file found further along is copied into the
/// cache store. A failed copy only costs the next run a search.
fn copy_into_cache(
    p: &Path,
    cache: Option<&PathBuf>,
    req: &PdbRequest,
    attempts: &mut Vec<Attempt>,
) -> PathBuf {
    let Some(cache) = cache else {
        return p.to_path_buf();
    };
    let dest = req.store_path(cache);
    if dest == p {
        return dest;
    }
    let r = (|| -> std::io::Result<()> {
        let dir = dest.parent().unwrap_or(cache);
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::copy(&mut std::fs::File::open(p)?, &mut tmp)?;
        tmp.persist(&dest).map_err(|e| e.error)?;
        Ok(())
    })();
    match r {
        Ok(()) => dest,
        Err(e) => {
            attempts.push(Attempt {
                location: dest.display().to_string(),
                outcome: format!("could not copy into the cache: {e}"),
            });
            p.to_path_buf()
        }
    }
}

enum Fail {
    /// 404: try the next server.
    NotFound(String),
    /// Anything else: stop.
    Fatal(String),
}

fn make_agent(opts: &FetchOptions<'_>) -> ureq::Agent {
    let proxy = if opts.proxy_from_env {
        ureq::Proxy::try_from_env()
    } else {
        None
    };
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(10)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(opts.timeout))
        .timeout_recv_body(Some(opts.timeout))
        .user_agent(concat!("pooldump/", env!("CARGO_PKG_VERSION"), " (symsrv)"))
        .proxy(proxy)
        .build()
        .into()
}

fn download(
    agent: &ureq::Agent,
    url: &str,
    dest_store: &Path,
    req: &PdbRequest,
    opts: &FetchOptions<'_>,
) -> Result<PathBuf, Fail> {
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| Fail::Fatal(format!("request failed: {e}")))?;
    let status = resp.status().as_u16();
    if status == 404 {
        return Err(Fail::NotFound("not on this server (404)".into()));
    }
    if status != 200 {
        return Err(Fail::Fatal(format!(
            "the server answered HTTP {status} {}",
            resp.status().canonical_reason().unwrap_or("")
        )));
    }
    let total = resp.body().content_length();
    if let Some(t) = total
        && t > MAX_DOWNLOAD
    {
        return Err(Fail::Fatal(format!(
            "the file is {t} bytes, more than the {MAX_DOWNLOAD}-byte limit"
        )));
    }
    let dest = req.store_path(dest_store);
    let dir = dest.parent().unwrap_or(dest_store);
    let io = |what: &str, e: std::io::Error| {
        Fail::Fatal(format!("cannot {what} in {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create the store directory", e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".pooldump-download-")
        .tempfile_in(dir)
        .map_err(|e| io("create a temporary file", e))?;
    if let Some(p) = opts.progress {
        p.start(url, total);
    }
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    let result = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                got += n as u64;
                if got > MAX_DOWNLOAD {
                    break Err(Fail::Fatal(format!(
                        "the file is larger than the {MAX_DOWNLOAD}-byte limit"
                    )));
                }
                if let Err(e) = tmp.write_all(&buf[..n]) {
                    break Err(io("write the download", e));
                }
                if let Some(p) = opts.progress {
                    p.advance(n as u64);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(Fail::Fatal(format!("the download broke off: {e}"))),
        }
    };
    if let Some(p) = opts.progress {
        p.finish();
    }
    result?;
    if let Some(t) = total
        && got != t
    {
        return Err(Fail::Fatal(format!(
            "the download ended after {got} of {t} bytes"
        )));
    }
    tmp.flush().map_err(|e| io("write the download", e))?;
    verify(tmp.path(), req).map_err(|why| {
        Fail::Fatal(format!(
            "the server sent a file that is not the wanted PDB: {why}; it was discarded"
        ))
    })?;
    tmp.persist(&dest)
        .map_err(|e| io("move the download into place", e.error))?;
    Ok(dest)
}
