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
/// Redirects followed per request (symsrv's own limit is similar).
pub const MAX_REDIRECTS: u32 = 10;
/// A `file.ptr` is one line; anything longer is not one.
const MAX_FILE_PTR: u64 = 4096;

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

    /// The compressed file's name: the last character replaced by `_`
    /// (`ntkrnlmp.pd_`).
    pub fn compressed_name(&self) -> String {
        let n = self.name.as_str();
        let mut c: String = n
            .chars()
            .take(n.chars().count().saturating_sub(1))
            .collect();
        c.push('_');
        c
    }
}

/// A file a symbol store keeps under `<name>/<key>/<name>`: a PDB (key
/// `<GUID><AGE>`) or an image (key `<TimeDateStamp><SizeOfImage>`, as
/// symstore and WinDbg keep binaries). The lookup (directories, stores,
/// two-tier stores, CAB-compressed files, `file.ptr`, servers) is the same
/// for both; only the key and the check of a candidate differ.
pub trait StoreFile {
    /// The file name (checked to be one safe path component).
    fn file_name(&self) -> &PdbName;
    /// The key directory name.
    fn store_key(&self) -> String;
    /// Another spelling of the key some tools write, if any.
    fn alt_key(&self) -> Option<String> {
        None
    }
    /// What the file is, for messages ("PDB", "image").
    fn what(&self) -> &'static str;
    /// Is the file at `p` the one wanted? Err says why not.
    fn check(&self, p: &Path) -> Result<(), String>;
    /// Where a plain (non-store) directory may hold it.
    fn directory_candidates(&self, dir: &Path) -> Vec<PathBuf> {
        vec![dir.join(self.file_name().as_str())]
    }
    /// Where the file sits in a store.
    fn path_in(&self, store: &Path) -> PathBuf {
        let n = self.file_name().as_str();
        store.join(n).join(self.store_key()).join(n)
    }
    /// The compressed file's name: the last character replaced by `_`
    /// (`ntkrnlmp.pd_`, `ntoskrnl.ex_`).
    fn packed_name(&self) -> String {
        let n = self.file_name().as_str();
        let mut c: String = n
            .chars()
            .take(n.chars().count().saturating_sub(1))
            .collect();
        c.push('_');
        c
    }
}

impl StoreFile for PdbRequest {
    fn file_name(&self) -> &PdbName {
        &self.name
    }
    fn store_key(&self) -> String {
        self.key()
    }
    fn alt_key(&self) -> Option<String> {
        Some(self.key_lower_age())
    }
    fn what(&self) -> &'static str {
        "PDB"
    }
    fn check(&self, p: &Path) -> Result<(), String> {
        verify(p, self)
    }
    fn directory_candidates(&self, dir: &Path) -> Vec<PathBuf> {
        let n = self.name.as_str();
        vec![
            dir.join(n),
            dir.join("symbols").join("pdb").join(n),
            dir.join("pdb").join(n),
        ]
    }
}

/// An image file (`ntoskrnl.exe`, `leakydrv.sys`) built with a
/// TimeDateStamp and SizeOfImage, as WinDbg fetches binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFileRequest {
    pub name: PdbName,
    pub time_date_stamp: u32,
    pub size_of_image: u32,
}

impl ImageFileRequest {
    /// `<TimeDateStamp><SizeOfImage>`: the stamp as 8 upper-case hex
    /// digits, the size without leading zeros.
    pub fn key(&self) -> String {
        format!("{:08X}{:X}", self.time_date_stamp, self.size_of_image)
    }
}

impl StoreFile for ImageFileRequest {
    fn file_name(&self) -> &PdbName {
        &self.name
    }
    fn store_key(&self) -> String {
        self.key()
    }
    fn alt_key(&self) -> Option<String> {
        Some(format!(
            "{:08x}{:x}",
            self.time_date_stamp, self.size_of_image
        ))
    }
    fn what(&self) -> &'static str {
        "image"
    }
    fn check(&self, p: &Path) -> Result<(), String> {
        let len = std::fs::metadata(p).map_err(|e| e.to_string())?.len();
        if len > MAX_DOWNLOAD {
            return Err(format!(
                "{len} bytes, more than the {MAX_DOWNLOAD}-byte limit"
            ));
        }
        let bytes = crate::input::read_capped(p, MAX_DOWNLOAD, "an image file")
            .map_err(|e| e.to_string())?;
        let h = goblin::pe::header::Header::parse(&bytes)
            .map_err(|e| format!("not a PE image ({e})"))?;
        let tds = h.coff_header.time_date_stamp;
        let size = h
            .optional_header
            .map(|o| o.windows_fields.size_of_image)
            .unwrap_or(0);
        if (tds, size) != (self.time_date_stamp, self.size_of_image) {
            return Err(format!(
                "wrong image: TimeDateStamp {tds:08x} SizeOfImage {size:#x}, wanted {:08x} {:#x}",
                self.time_date_stamp, self.size_of_image
            ));
        }
        Ok(())
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
    find_file(path, req, opts)
}

/// Search the symbol path for an image file (`<name>/<TimeDateStamp>
/// <SizeOfImage>/<name>` in stores and servers, or `<dir>/<name>` in a
/// plain directory), checked to be that build of the image.
pub fn find_image(
    path: &SymbolPath,
    req: &ImageFileRequest,
    opts: &FetchOptions<'_>,
) -> Result<FoundPdb, StoreError> {
    find_file(path, req, opts)
}

/// Search the symbol path for `req`.
pub fn find_file<R: StoreFile + ?Sized>(
    path: &SymbolPath,
    req: &R,
    opts: &FetchOptions<'_>,
) -> Result<FoundPdb, StoreError> {
    let mut attempts = Vec::new();
    let mut caches: Vec<PathBuf> = Vec::new();
    #[cfg(feature = "download")]
    let mut agent = None;
    for e in &path.elements {
        match e {
            SymbolPathElement::Cache(dir) => {
                if let Some(p) = look_in_store(dir, req, dir, &mut attempts) {
                    return Ok(found(p, PdbOrigin::Store { store: dir.clone() }, attempts));
                }
                caches.push(dir.clone());
            }
            SymbolPathElement::Directory(dir) => {
                let expand = caches.first().unwrap_or(dir).clone();
                if let Some(p) = look_in_directory(dir, req, &expand, &mut attempts) {
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
                    if let Some(p) = look_in_store(ds, req, ds, &mut attempts) {
                        return Ok(found(p, PdbOrigin::Store { store: ds.clone() }, attempts));
                    }
                }
                let dest = downstream.first().or(caches.first());
                match upstream {
                    Upstream::Store(dir) => {
                        let expand = dest.unwrap_or(dir).clone();
                        if let Some(p) = look_in_store(dir, req, &expand, &mut attempts) {
                            let p = copy_into_cache(&p, dest, req, &mut attempts);
                            return Ok(found(p, PdbOrigin::Store { store: dir.clone() }, attempts));
                        }
                    }
                    Upstream::Http(base) => {
                        let url = format!(
                            "{base}/{}/{}/{}",
                            req.file_name().as_str(),
                            req.store_key(),
                            req.file_name().as_str()
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
                        #[cfg(not(feature = "download"))]
                        {
                            let _ = dest;
                            attempts.push(Attempt {
                                location: url,
                                outcome: "skipped: this pooldump-core was built without the `download` feature (no HTTP)".into(),
                            });
                            continue;
                        }
                        #[cfg(feature = "download")]
                        let agent = agent.get_or_insert_with(|| make_agent(opts));
                        #[cfg(feature = "download")]
                        {
                            // symsrv's order: the file, the compressed file,
                            // then a file.ptr.
                            let key_url =
                                format!("{base}/{}/{}", req.file_name().as_str(), req.store_key());
                            let tries = [
                                (url, Served::Plain),
                                (
                                    format!("{key_url}/{}", req.packed_name()),
                                    Served::Compressed,
                                ),
                                (format!("{key_url}/file.ptr"), Served::Pointer),
                            ];
                            for (url, how) in tries {
                                match download(agent, &url, dest, req, opts, how, &mut attempts) {
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
        }
    }
    Err(StoreError::NotFound {
        name: req.file_name().to_string(),
        key: req.store_key(),
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

/// The key directories of `req` under `store`: both age cases, flat and,
/// when the store has an `index2.txt`, two-tier.
fn key_dirs<R: StoreFile + ?Sized>(store: &Path, req: &R) -> Vec<PathBuf> {
    let n = req.file_name().as_str();
    let mut roots = vec![store.to_path_buf()];
    if store.join("index2.txt").is_file() {
        let prefix: String = n.chars().take(2).collect();
        roots.insert(0, store.join(prefix));
    }
    let mut v = Vec::new();
    for r in roots {
        for key in std::iter::once(req.store_key()).chain(req.alt_key()) {
            let d = r.join(n).join(key);
            if !v.contains(&d) {
                v.push(d);
            }
        }
    }
    v
}

/// The plain-file locations of `req` under `store`.
fn store_candidates<R: StoreFile + ?Sized>(store: &Path, req: &R) -> Vec<PathBuf> {
    key_dirs(store, req)
        .into_iter()
        .map(|d| d.join(req.file_name().as_str()))
        .collect()
}

/// Look in a store: the file, the compressed file (expanded into the
/// store `expand_into`), or a `file.ptr`.
fn look_in_store<R: StoreFile + ?Sized>(
    store: &Path,
    req: &R,
    expand_into: &Path,
    attempts: &mut Vec<Attempt>,
) -> Option<PathBuf> {
    if let Some(p) = check_candidates(store_candidates(store, req), req, attempts) {
        return Some(p);
    }
    for d in key_dirs(store, req) {
        let packed = d.join(req.packed_name());
        if packed.is_file() {
            match expand_file(&packed, expand_into, req) {
                Ok(p) => return Some(p),
                Err(why) => attempts.push(Attempt {
                    location: packed.display().to_string(),
                    outcome: why,
                }),
            }
        }
        let ptr = d.join("file.ptr");
        if ptr.is_file()
            && let Some(p) = follow_file_ptr(&ptr, req, expand_into, attempts)
        {
            return Some(p);
        }
    }
    attempts.push(Attempt {
        location: store.display().to_string(),
        outcome: "not in this store".into(),
    });
    None
}

fn look_in_directory<R: StoreFile + ?Sized>(
    dir: &Path,
    req: &R,
    expand_into: &Path,
    attempts: &mut Vec<Attempt>,
) -> Option<PathBuf> {
    let c = req.directory_candidates(dir);
    if let Some(p) = check_candidates(c, req, attempts) {
        return Some(p);
    }
    let mut quiet = Vec::new();
    let found = look_in_store(dir, req, expand_into, &mut quiet);
    // Keep what was wrong, not the store's own "not in this store".
    attempts.extend(
        quiet
            .into_iter()
            .filter(|a| a.outcome != "not in this store"),
    );
    found.or_else(|| {
        attempts.push(Attempt {
            location: dir.display().to_string(),
            outcome: "not in this directory".into(),
        });
        None
    })
}

/// `file.ptr`: `PATH:<file>` (a plain or compressed file elsewhere, often
/// a share) or `MSG:<why not>`.
fn follow_file_ptr<R: StoreFile + ?Sized>(
    ptr: &Path,
    req: &R,
    expand_into: &Path,
    attempts: &mut Vec<Attempt>,
) -> Option<PathBuf> {
    let mut text = String::new();
    let read =
        std::fs::File::open(ptr).and_then(|f| f.take(MAX_FILE_PTR).read_to_string(&mut text));
    let loc = ptr.display().to_string();
    if let Err(e) = read {
        attempts.push(Attempt {
            location: loc,
            outcome: format!("cannot read the file.ptr: {e}"),
        });
        return None;
    }
    match parse_file_ptr(&text) {
        Ok(target) => {
            let t = PathBuf::from(&target);
            if !t.is_file() {
                attempts.push(Attempt {
                    location: loc,
                    outcome: format!("file.ptr points at {target}, which is not there"),
                });
                return None;
            }
            let r = if target.ends_with('_') {
                expand_file(&t, expand_into, req)
            } else {
                req.check(&t).map(|()| t.clone())
            };
            match r {
                Ok(p) => Some(p),
                Err(why) => {
                    attempts.push(Attempt {
                        location: format!("{loc} -> {target}"),
                        outcome: why,
                    });
                    None
                }
            }
        }
        Err(why) => {
            attempts.push(Attempt {
                location: loc,
                outcome: why,
            });
            None
        }
    }
}

/// The target of a `file.ptr`, or why there is none.
fn parse_file_ptr(text: &str) -> Result<String, String> {
    let t = text.trim();
    if let Some(p) = t.strip_prefix("PATH:") {
        let p = p.trim();
        if p.is_empty() {
            return Err("file.ptr has an empty PATH".into());
        }
        return Ok(p.to_string());
    }
    if let Some(m) = t.strip_prefix("MSG:") {
        return Err(format!("file.ptr says: {}", m.trim()));
    }
    Err(format!(
        "file.ptr is neither PATH: nor MSG: (starts `{}`)",
        crate::bytes::escape_ascii(&t.as_bytes()[..t.len().min(40)])
    ))
}

/// Expand a compressed store file (a CAB holding the PDB) into `store`,
/// verify it and move it into place. Returns the PDB's path.
fn expand_file<R: StoreFile + ?Sized>(
    packed: &Path,
    store: &Path,
    req: &R,
) -> Result<PathBuf, String> {
    let f = std::fs::File::open(packed).map_err(|e| format!("cannot open: {e}"))?;
    expand_cab(std::io::BufReader::new(f), store, req)
}

fn expand_cab<C: Read + std::io::Seek, R: StoreFile + ?Sized>(
    mut reader: C,
    store: &Path,
    req: &R,
) -> Result<PathBuf, String> {
    check_cabinet(&mut reader).map_err(|e| format!("not a valid compressed file (CAB): {e}"))?;
    let mut cab =
        cab::Cabinet::new(reader).map_err(|e| format!("not a valid compressed file (CAB): {e}"))?;
    // The cabinet holds one file, the PDB (its name as stored).
    let entry = cab
        .folder_entries()
        .flat_map(|f| f.file_entries())
        .map(|e| (e.name().to_string(), u64::from(e.uncompressed_size())))
        .find(|(n, _)| n.eq_ignore_ascii_case(req.file_name().as_str()))
        .or_else(|| {
            cab.folder_entries()
                .flat_map(|f| f.file_entries())
                .map(|e| (e.name().to_string(), u64::from(e.uncompressed_size())))
                .next()
        });
    let Some((name, size)) = entry else {
        return Err("the compressed file (CAB) holds no file".into());
    };
    if size > MAX_DOWNLOAD {
        return Err(format!(
            "the compressed file expands to {size} bytes, more than the {MAX_DOWNLOAD}-byte limit"
        ));
    }
    let dest = req.path_in(store);
    let dir = dest.parent().unwrap_or(store);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".pooldump-expand-")
        .tempfile_in(dir)
        .map_err(|e| {
            format!(
                "cannot create a file in {}: {}",
                dir.display(),
                crate::fsio::without_temp_path(e)
            )
        })?;
    let mut r = cab
        .read_file(&name)
        .map_err(|e| format!("cannot expand {name}: {e}"))?
        // One byte past the size the CAB states tells a longer file; a
        // small stated size cannot be made to expand to the 1 GiB cap.
        .take(size + 1);
    let n = std::io::copy(&mut r, &mut tmp).map_err(|e| format!("cannot expand {name}: {e}"))?;
    if n != size {
        return Err(format!(
            "{name} expanded to {n} bytes, not the {size} the CAB states"
        ));
    }
    tmp.flush().map_err(|e| e.to_string())?;
    req.check(tmp.path())?;
    tmp.persist(&dest)
        .map_err(|e| format!("cannot move the expanded file into place: {}", e.error))?;
    Ok(dest)
}

/// Check what the `cab` crate (0.6) trusts without checking: that each
/// file starts within the data its folder holds. A file whose
/// `uoffFolderStart` lies past the folder's last CFDATA block makes
/// `Cabinet::read_file` index past its block list and panic (found by the
/// cab_store fuzz target). The tables are read as MS-CAB lays them out:
/// CFHEADER (36 bytes, optional reserve sizes), CFFOLDER entries, CFFILE
/// entries at `coffFiles`, CFDATA blocks from each folder's
/// `coffCabStart`. Cabinets that span files are refused (a symbol store's
/// `.pd_` is one cabinet). The reader is left at the start.
pub fn check_cabinet<C: Read + std::io::Seek>(r: &mut C) -> Result<(), String> {
    use std::io::SeekFrom;
    let at = |r: &mut C, off: u64, buf: &mut [u8]| -> Result<(), String> {
        r.seek(SeekFrom::Start(off))
            .and_then(|_| r.read_exact(buf))
            .map_err(|_| format!("its tables run past the end of the file (at {off:#x})"))
    };
    let mut h = [0u8; 40];
    at(r, 0, &mut h[..36])?;
    let le = crate::bytes::Le(&h);
    if le.bytes(0, 4) != Some(b"MSCF") {
        return Err("no MSCF signature".into());
    }
    let u16_at = |b: &[u8], o: usize| crate::bytes::Le(b).u16(o).unwrap_or(0);
    let u32_at = |b: &[u8], o: usize| crate::bytes::Le(b).u32(o).unwrap_or(0);
    let coff_files = u64::from(u32_at(&h, 16));
    let folders = usize::from(u16_at(&h, 26));
    let files = usize::from(u16_at(&h, 28));
    let flags = u16_at(&h, 30);
    if flags & 0x3 != 0 {
        return Err("it continues another cabinet".into());
    }
    let (mut folder_at, folder_reserve, data_reserve) = if flags & 0x4 != 0 {
        at(r, 36, &mut h[36..40])?;
        (
            40 + u64::from(u16_at(&h, 36)),
            u64::from(h[38]),
            u64::from(h[39]),
        )
    } else {
        (36, 0, 0)
    };
    // Each folder's uncompressed size: the sum of its blocks' cbUncomp.
    let mut sizes = Vec::with_capacity(folders);
    for k in 0..folders {
        let mut f = [0u8; 8];
        at(r, folder_at, &mut f)?;
        folder_at += 8 + folder_reserve;
        let mut block_at = u64::from(u32_at(&f, 0));
        // typeCompress 0: the blocks are stored as they are. cab trusts
        // cbUncomp for where a file starts but hands out cbData bytes, so
        // a block that holds fewer bytes than it states sends its reader
        // past the end of the block (a panic in cab 0.6).
        let stored = u16_at(&f, 6) & 0x0F == 0;
        let mut total = 0u64;
        for j in 0..u16_at(&f, 4) {
            let mut d = [0u8; 8];
            at(r, block_at, &mut d)?;
            let (held, stated) = (u16_at(&d, 4), u16_at(&d, 6));
            if stored && held != stated {
                return Err(format!(
                    "folder {k} is stored uncompressed, but its data block {j} holds {held:#x} bytes and states {stated:#x}"
                ));
            }
            total += u64::from(stated);
            block_at += 8 + data_reserve + u64::from(held);
        }
        sizes.push(total);
    }
    let mut file_at = coff_files;
    for i in 0..files {
        let mut e = [0u8; 16];
        at(r, file_at, &mut e)?;
        let (offset, folder) = (u64::from(u32_at(&e, 4)), usize::from(u16_at(&e, 8)));
        match sizes.get(folder) {
            Some(&size) if offset <= size => {}
            Some(&size) => {
                return Err(format!(
                    "file {i} starts at {offset:#x} in folder {folder}, which holds {size:#x} bytes"
                ));
            }
            None => {
                return Err(format!(
                    "file {i} is in folder {folder}, which does not exist"
                ));
            }
        }
        // The name: NUL-terminated, at most 256 bytes.
        let mut name = [0u8; 257];
        let got = {
            r.seek(SeekFrom::Start(file_at + 16))
                .map_err(|e| e.to_string())?;
            let mut n = 0;
            while n < name.len() {
                match r.read(&mut name[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => return Err(e.to_string()),
                }
            }
            n
        };
        let Some(len) = name[..got].iter().position(|&b| b == 0) else {
            return Err(format!("file {i} has no name within 256 bytes"));
        };
        file_at += 16 + len as u64 + 1;
    }
    r.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    Ok(())
}

/// The first candidate that exists and is the right PDB; wrong ones are
/// noted and skipped (WinDbg's "mismatched pdb").
fn check_candidates<R: StoreFile + ?Sized>(
    c: Vec<PathBuf>,
    req: &R,
    attempts: &mut Vec<Attempt>,
) -> Option<PathBuf> {
    for p in c {
        if !p.is_file() {
            continue;
        }
        match req.check(&p) {
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
fn copy_into_cache<R: StoreFile + ?Sized>(
    p: &Path,
    cache: Option<&PathBuf>,
    req: &R,
    attempts: &mut Vec<Attempt>,
) -> PathBuf {
    let Some(cache) = cache else {
        return p.to_path_buf();
    };
    let dest = req.path_in(cache);
    if dest == p {
        return dest;
    }
    let r = (|| -> std::io::Result<()> {
        let dir = dest.parent().unwrap_or(cache);
        std::fs::create_dir_all(dir)?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(crate::fsio::without_temp_path)?;
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

#[cfg(feature = "download")]
enum Fail {
    /// 404: try the next server.
    NotFound(String),
    /// Anything else: stop.
    Fatal(String),
}

#[cfg(feature = "download")]
fn make_agent(opts: &FetchOptions<'_>) -> ureq::Agent {
    let proxy = if opts.proxy_from_env {
        ureq::Proxy::try_from_env()
    } else {
        None
    };
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(MAX_REDIRECTS)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(opts.timeout))
        .timeout_recv_body(Some(opts.timeout))
        .user_agent(concat!("pooldump/", env!("CARGO_PKG_VERSION"), " (symsrv)"))
        .proxy(proxy)
        .build()
        .into()
}

#[cfg(feature = "download")]
/// What a symbol-server URL is expected to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    Plain,
    Compressed,
    Pointer,
}

#[cfg(feature = "download")]
fn download<R: StoreFile + ?Sized>(
    agent: &ureq::Agent,
    url: &str,
    dest_store: &Path,
    req: &R,
    opts: &FetchOptions<'_>,
    how: Served,
    attempts: &mut Vec<Attempt>,
) -> Result<PathBuf, Fail> {
    let mut resp = agent.get(url).call().map_err(|e| match e {
        ureq::Error::TooManyRedirects => Fail::Fatal(format!(
            "more than {MAX_REDIRECTS} redirects (a redirect loop?)"
        )),
        e => Fail::Fatal(format!("request failed: {e}")),
    })?;
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
    let limit = if how == Served::Pointer {
        MAX_FILE_PTR
    } else {
        MAX_DOWNLOAD
    };
    if let Some(t) = total
        && t > limit
    {
        return Err(Fail::Fatal(format!(
            "the file is {t} bytes, more than the {limit}-byte limit"
        )));
    }
    let dest = req.path_in(dest_store);
    let dir = dest.parent().unwrap_or(dest_store);
    let io = |what: &str, e: std::io::Error| {
        Fail::Fatal(format!("cannot {what} in {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create the store directory", e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".pooldump-download-")
        .tempfile_in(dir)
        .map_err(|e| io("create a temporary file", crate::fsio::without_temp_path(e)))?;
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
                if got > limit {
                    break Err(Fail::Fatal(format!(
                        "the file is larger than the {limit}-byte limit"
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
    match how {
        Served::Plain => {
            req.check(tmp.path()).map_err(|why| {
                Fail::Fatal(format!(
                    "the server sent a file that is not the wanted {}: {why}; it was discarded",
                    req.what()
                ))
            })?;
            tmp.persist(&dest)
                .map_err(|e| io("move the download into place", e.error))?;
            Ok(dest)
        }
        Served::Compressed => {
            let f = tmp.reopen().map_err(|e| io("reread the download", e))?;
            expand_cab(std::io::BufReader::new(f), dest_store, req).map_err(|why| {
                Fail::Fatal(format!(
                    "the server sent a compressed file that is not the wanted {}: {why}; it was discarded",
                    req.what()
                ))
            })
        }
        Served::Pointer => {
            let mut text = String::new();
            let mut f = tmp.reopen().map_err(|e| io("reread the download", e))?;
            f.read_to_string(&mut text)
                .map_err(|e| Fail::Fatal(format!("file.ptr is not text: {e}")))?;
            let target = parse_file_ptr(&text).map_err(Fail::NotFound)?;
            let t = PathBuf::from(&target);
            if !t.is_file() {
                return Err(Fail::NotFound(format!(
                    "file.ptr points at {target}, which is not reachable from here"
                )));
            }
            let mut local = Vec::new();
            let r = if target.ends_with('_') {
                expand_file(&t, dest_store, req)
            } else {
                req.check(&t)
                    .map(|()| copy_into_cache(&t, Some(&dest_store.to_path_buf()), req, &mut local))
            };
            attempts.extend(local);
            r.map_err(|why| Fail::NotFound(format!("file.ptr -> {target}: {why}")))
        }
    }
}
