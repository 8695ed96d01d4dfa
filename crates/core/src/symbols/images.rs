//! Image files from the symbol path, as WinDbg fetches binaries: a module
//! built with TimeDateStamp T and SizeOfImage S is `<name>/<T><S>/<name>`
//! in a symbol store or on a symbol server (`ntoskrnl.exe/
//! 5F4D8A1B1046000/ntoskrnl.exe`), or `<dir>/<name>` in a plain directory.
//! The lookup is the PDBs' ([`super::store::find_file`]): stores, two-tier
//! stores, CAB-compressed files (`.ex_`, `.sy_`), `file.ptr`, servers with
//! redirects, downloads into the downstream store.
//!
//! Stack walking reads unwind data and code from these instead of the
//! target ([`crate::stack::ImageLocator`]), and the Mapped_Driver search
//! reads code and read-only data from them
//! ([`crate::pool::attribution::ImageFiles`]): over KDNET every byte not
//! read is a round trip saved, and a small memory dump has no image at
//! all. A file is used only if its TimeDateStamp and SizeOfImage are the
//! module's.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::name::PdbName;
use super::store::{FetchOptions, ImageFileRequest, StoreError, find_file};
use super::symbol_path::SymbolPath;
use crate::stack::{ImageFile, ImageLocator, ImageRequest};

/// Image files read at most (a driver is kilobytes, nt 10-20 MB).
pub const MAX_IMAGE_FILE: u64 = 256 << 20;

/// Image files along a symbol path.
pub struct SymbolPathImages {
    path: SymbolPath,
    offline: bool,
    proxy_from_env: bool,
    timeout: Duration,
    /// What the lookups found wrong, for notes.
    notes: Mutex<Vec<String>>,
}

impl SymbolPathImages {
    /// Look along `path` (servers too unless `fetch.offline`).
    pub fn new(path: SymbolPath, fetch: &FetchOptions<'_>) -> Self {
        Self {
            path,
            offline: fetch.offline,
            proxy_from_env: fetch.proxy_from_env,
            timeout: fetch.timeout,
            notes: Mutex::new(Vec::new()),
        }
    }

    /// What went wrong in lookups so far (a server error, a wrong file).
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn note(&self, s: String) {
        if let Ok(mut n) = self.notes.lock()
            && n.len() < 64
            && !n.contains(&s)
        {
            n.push(s);
        }
    }

    /// The file of image `name` with this TimeDateStamp and SizeOfImage:
    /// its path and bytes, or None (a note says why when it was not simply
    /// absent).
    pub fn lookup(
        &self,
        name: &str,
        time_date_stamp: u32,
        size_of_image: u32,
    ) -> Option<(PathBuf, Vec<u8>)> {
        if self.path.elements.is_empty() {
            return None;
        }
        let name = match PdbName::new(name) {
            Ok(n) => n,
            Err(e) => {
                self.note(format!("image {name:?} not looked up: {e}"));
                return None;
            }
        };
        let req = ImageFileRequest {
            name,
            time_date_stamp,
            size_of_image,
        };
        let fetch = FetchOptions {
            offline: self.offline,
            proxy_from_env: self.proxy_from_env,
            timeout: self.timeout,
            progress: None,
        };
        match find_file(&self.path, &req, &fetch) {
            Ok(found) => {
                let read = std::fs::metadata(&found.path)
                    .map_err(|e| e.to_string())
                    .and_then(|m| {
                        if m.len() > MAX_IMAGE_FILE {
                            Err(format!("{} bytes, more than {MAX_IMAGE_FILE}", m.len()))
                        } else {
                            crate::input::read_capped(&found.path, MAX_IMAGE_FILE, "an image file")
                                .map_err(|e| e.to_string())
                        }
                    });
                match read {
                    Ok(b) => Some((found.path, b)),
                    Err(e) => {
                        self.note(format!("{}: {e}", found.path.display()));
                        None
                    }
                }
            }
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => {
                self.note(format!("image {} ({}): {e}", req.name, req.key()));
                None
            }
        }
    }
}

impl ImageLocator for SymbolPathImages {
    fn locate(&self, req: &ImageRequest<'_>) -> Result<Option<ImageFile>, String> {
        match self.lookup(req.name, req.time_date_stamp, req.size_of_image) {
            Some((path, bytes)) => ImageFile::parse(path.display().to_string(), bytes)
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }
}

impl crate::pool::attribution::ImageFiles for SymbolPathImages {
    fn image_file(&self, name: &str, time_date_stamp: u32, size_of_image: u32) -> Option<Vec<u8>> {
        self.lookup(name, time_date_stamp, size_of_image)
            .map(|(_, b)| b)
    }
}
