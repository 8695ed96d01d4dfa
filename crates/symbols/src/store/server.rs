//! HTTP(S) symbol servers (`srv*DIR*https://...`): what to ask for, in
//! symsrv's order, and what to skip. The download itself is behind the
//! crate's `download` feature; without it a server is noted as skipped.

use std::path::{Path, PathBuf};

use super::request::StoreFile;
use super::search::Search;
use super::types::{FetchOptions, StoreError};
use crate::source::PdbOrigin;

/// The symbol servers of one search, with the HTTP agent made on the
/// first download and reused for the next.
pub(super) struct Servers<'o, 'a> {
    opts: &'o FetchOptions<'a>,
    #[cfg(feature = "download")]
    agent: Option<ureq::Agent>,
}

impl<'o, 'a> Servers<'o, 'a> {
    pub(super) fn new(opts: &'o FetchOptions<'a>) -> Self {
        Self {
            opts,
            #[cfg(feature = "download")]
            agent: None,
        }
    }

    /// Ask the server at `base` for the file, downloading into the store
    /// `dest`. `Ok(None)`: not there (or skipped), try the next element;
    /// `Err`: the server answered with something other than the file or a
    /// 404, and the search stops.
    pub(super) fn fetch<R: StoreFile + ?Sized>(
        &mut self,
        search: &mut Search<'_, R>,
        base: &str,
        dest: Option<&Path>,
    ) -> Result<Option<(PathBuf, PdbOrigin)>, StoreError> {
        let name = search.req.file_name().as_str();
        let key_url = format!("{base}/{name}/{}", search.req.store_key());
        let url = format!("{key_url}/{name}");
        if self.opts.offline {
            search.note(url, "skipped (offline)");
            return Ok(None);
        }
        let Some(dest) = dest else {
            search.note(url, "skipped: no downstream store to download into");
            return Ok(None);
        };
        #[cfg(not(feature = "download"))]
        {
            let _ = (key_url, dest);
            search.note(
                url,
                "skipped: this pooldump-symbols was built without the `download` feature (no HTTP)",
            );
            Ok(None)
        }
        #[cfg(feature = "download")]
        self.download_any(search, &key_url, url, dest)
    }

    /// symsrv's order: the file, the compressed file, then a `file.ptr`.
    #[cfg(feature = "download")]
    fn download_any<R: StoreFile + ?Sized>(
        &mut self,
        search: &mut Search<'_, R>,
        key_url: &str,
        url: String,
        dest: &Path,
    ) -> Result<Option<(PathBuf, PdbOrigin)>, StoreError> {
        use super::http::{Fail, Served, download, make_agent};
        let opts = self.opts;
        let agent = self.agent.get_or_insert_with(|| make_agent(opts));
        let tries = [
            (url, Served::Plain),
            (
                format!("{key_url}/{}", search.req.packed_name()),
                Served::Compressed,
            ),
            (format!("{key_url}/file.ptr"), Served::Pointer),
        ];
        for (url, how) in tries {
            match download(agent, &url, dest, search, opts, how) {
                Ok(p) => {
                    let store = dest.to_path_buf();
                    return Ok(Some((p, PdbOrigin::Downloaded { url, store })));
                }
                Err(Fail::NotFound(why)) => search.note(url, why),
                Err(Fail::Fatal(detail)) => {
                    return Err(StoreError::Server {
                        url,
                        detail,
                        attempts: std::mem::take(&mut search.attempts),
                    });
                }
            }
        }
        Ok(None)
    }
}
