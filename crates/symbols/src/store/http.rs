//! Downloads from a symbol server over HTTP(S) with `ureq` (the crate's
//! `download` feature). A download goes to a temporary file in the
//! destination store's directory, is checked, and only then moved into
//! place: a store never holds a partial or wrong file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::NamedTempFile;

use super::cab::{expand_cab, expand_file};
use super::request::StoreFile;
use super::search::{Search, parse_file_ptr};
use super::types::{FetchOptions, MAX_DOWNLOAD, MAX_FILE_PTR, MAX_REDIRECTS};

/// Why a URL did not give the file.
pub(super) enum Fail {
    /// 404: try the next server.
    NotFound(String),
    /// Anything else: stop.
    Fatal(String),
}

/// What a symbol-server URL is expected to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Served {
    Plain,
    Compressed,
    Pointer,
}

pub(super) fn make_agent(opts: &FetchOptions<'_>) -> ureq::Agent {
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

/// Fetch `url`, expected to serve `how`, into the store `dest_store`:
/// the path of the checked file there.
pub(super) fn download<R: StoreFile + ?Sized>(
    agent: &ureq::Agent,
    url: &str,
    dest_store: &Path,
    search: &mut Search<'_, R>,
    opts: &FetchOptions<'_>,
    how: Served,
) -> Result<PathBuf, Fail> {
    let dest = search.req.path_in(dest_store);
    let dir = dest.parent().unwrap_or(dest_store);
    let tmp = fetch_to_temp(agent, url, dir, opts, how)?;
    let io = |what: &str, e: std::io::Error| {
        Fail::Fatal(format!("cannot {what} in {}: {e}", dir.display()))
    };
    let req = search.req;
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
            follow_served_pointer(&text, dest_store, search)
        }
    }
}

/// A `file.ptr` a server sent: its target is a path on this machine (a
/// share), expanded or copied into the store.
fn follow_served_pointer<R: StoreFile + ?Sized>(
    text: &str,
    dest_store: &Path,
    search: &mut Search<'_, R>,
) -> Result<PathBuf, Fail> {
    let target = parse_file_ptr(text).map_err(Fail::NotFound)?;
    let t = PathBuf::from(&target);
    if !t.is_file() {
        return Err(Fail::NotFound(format!(
            "file.ptr points at {target}, which is not reachable from here"
        )));
    }
    let r = if target.ends_with('_') {
        expand_file(&t, dest_store, search.req)
    } else {
        search
            .req
            .check(&t)
            .map(|()| search.copy_into_cache(&t, Some(dest_store)))
    };
    r.map_err(|why| Fail::NotFound(format!("file.ptr -> {target}: {why}")))
}

/// GET `url` into a temporary file in `dir`, within the size limit for
/// `how`: a 404 is [`Fail::NotFound`], any other answer but 200, a body
/// over the limit or cut short is [`Fail::Fatal`].
fn fetch_to_temp(
    agent: &ureq::Agent,
    url: &str,
    dir: &Path,
    opts: &FetchOptions<'_>,
    how: Served,
) -> Result<NamedTempFile, Fail> {
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
    let io = |what: &str, e: std::io::Error| {
        Fail::Fatal(format!("cannot {what} in {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create the store directory", e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".pooldump-download-")
        .tempfile_in(dir)
        .map_err(|e| {
            io(
                "create a temporary file",
                pooldump_io::fsio::without_temp_path(e),
            )
        })?;
    if let Some(p) = opts.progress {
        p.start(url, total);
    }
    let got = copy_capped(&mut resp.body_mut().as_reader(), &mut tmp, limit, opts);
    if let Some(p) = opts.progress {
        p.finish();
    }
    let got = got.map_err(|e| match e {
        Copy::TooLarge => Fail::Fatal(format!("the file is larger than the {limit}-byte limit")),
        Copy::Write(e) => io("write the download", e),
        Copy::Read(e) => Fail::Fatal(format!("the download broke off: {e}")),
    })?;
    if let Some(t) = total
        && got != t
    {
        return Err(Fail::Fatal(format!(
            "the download ended after {got} of {t} bytes"
        )));
    }
    tmp.flush().map_err(|e| io("write the download", e))?;
    Ok(tmp)
}

/// Why a body could not be copied.
enum Copy {
    TooLarge,
    Write(std::io::Error),
    Read(std::io::Error),
}

/// Copy `reader` into `out`, at most `limit` bytes, reporting progress:
/// the bytes copied.
fn copy_capped(
    reader: &mut impl Read,
    out: &mut impl Write,
    limit: u64,
    opts: &FetchOptions<'_>,
) -> Result<u64, Copy> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => {
                got += n as u64;
                if got > limit {
                    return Err(Copy::TooLarge);
                }
                out.write_all(&buf[..n]).map_err(Copy::Write)?;
                if let Some(p) = opts.progress {
                    p.advance(n as u64);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Copy::Read(e)),
        }
    }
}
