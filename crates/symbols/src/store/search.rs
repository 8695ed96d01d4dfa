//! One search of a symbol path for one file, through what is on disk:
//! plain directories, flat and two-tier stores, compressed files and
//! `file.ptr` redirections, and the `cache*DIR` copy of what was found
//! further along. Every place tried and what was wrong there is kept.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::cab::expand_file;
use super::request::StoreFile;
use super::types::{Attempt, FoundPdb, MAX_FILE_PTR};
use crate::source::PdbOrigin;

/// What a store says when it does not hold the file at all.
const NOT_IN_STORE: &str = "not in this store";

/// The file being looked for and every place tried so far.
pub(super) struct Search<'r, R: StoreFile + ?Sized> {
    pub(super) req: &'r R,
    pub(super) attempts: Vec<Attempt>,
}

impl<'r, R: StoreFile + ?Sized> Search<'r, R> {
    pub(super) fn new(req: &'r R) -> Self {
        Self {
            req,
            attempts: Vec::new(),
        }
    }

    /// Record a place tried and what happened there.
    pub(super) fn note(&mut self, location: impl ToString, outcome: impl Into<String>) {
        self.attempts.push(Attempt {
            location: location.to_string(),
            outcome: outcome.into(),
        });
    }

    /// The search's answer: the file, how it was obtained, and every place
    /// tried before.
    pub(super) fn found(self, path: PathBuf, origin: PdbOrigin) -> FoundPdb {
        FoundPdb {
            path,
            origin,
            attempts: self.attempts,
        }
    }

    /// The key directories of the file under `store`: both key spellings,
    /// flat and, when the store has an `index2.txt`, two-tier.
    fn key_dirs(&self, store: &Path) -> Vec<PathBuf> {
        let n = self.req.file_name().as_str();
        let mut roots = vec![store.to_path_buf()];
        if store.join("index2.txt").is_file() {
            let prefix: String = n.chars().take(2).collect();
            roots.insert(0, store.join(prefix));
        }
        let mut v = Vec::new();
        for r in roots {
            for key in std::iter::once(self.req.store_key()).chain(self.req.alt_key()) {
                let d = r.join(n).join(key);
                if !v.contains(&d) {
                    v.push(d);
                }
            }
        }
        v
    }

    /// Look in a store: the file, the compressed file (expanded into the
    /// store `expand_into`), or a `file.ptr`.
    pub(super) fn in_store(&mut self, store: &Path, expand_into: &Path) -> Option<PathBuf> {
        let name = self.req.file_name().as_str();
        let plain = self.key_dirs(store).into_iter().map(|d| d.join(name));
        if let Some(p) = self.first_valid(plain) {
            return Some(p);
        }
        for d in self.key_dirs(store) {
            let packed = d.join(self.req.packed_name());
            if packed.is_file() {
                match expand_file(&packed, expand_into, self.req) {
                    Ok(p) => return Some(p),
                    Err(why) => self.note(packed.display(), why),
                }
            }
            let ptr = d.join("file.ptr");
            if ptr.is_file()
                && let Some(p) = self.follow_file_ptr(&ptr, expand_into)
            {
                return Some(p);
            }
        }
        self.note(store.display(), NOT_IN_STORE);
        None
    }

    /// Look in a plain directory (where a build tree or a copied PDB
    /// sits), then in the same directory as a store.
    pub(super) fn in_directory(&mut self, dir: &Path, expand_into: &Path) -> Option<PathBuf> {
        if let Some(p) = self.first_valid(self.req.directory_candidates(dir)) {
            return Some(p);
        }
        let mut quiet = Search::new(self.req);
        let found = quiet.in_store(dir, expand_into);
        // Keep what was wrong, not the store's own "not in this store".
        self.attempts.extend(
            quiet
                .attempts
                .into_iter()
                .filter(|a| a.outcome != NOT_IN_STORE),
        );
        if found.is_none() {
            self.note(dir.display(), "not in this directory");
        }
        found
    }

    /// `file.ptr`: `PATH:<file>` (a plain or compressed file elsewhere,
    /// often a share) or `MSG:<why not>`.
    fn follow_file_ptr(&mut self, ptr: &Path, expand_into: &Path) -> Option<PathBuf> {
        let mut text = String::new();
        let read =
            std::fs::File::open(ptr).and_then(|f| f.take(MAX_FILE_PTR).read_to_string(&mut text));
        let loc = ptr.display().to_string();
        if let Err(e) = read {
            self.note(loc, format!("cannot read the file.ptr: {e}"));
            return None;
        }
        let target = match parse_file_ptr(&text) {
            Ok(t) => t,
            Err(why) => {
                self.note(loc, why);
                return None;
            }
        };
        let t = PathBuf::from(&target);
        if !t.is_file() {
            self.note(
                loc,
                format!("file.ptr points at {target}, which is not there"),
            );
            return None;
        }
        let r = if target.ends_with('_') {
            expand_file(&t, expand_into, self.req)
        } else {
            self.req.check(&t).map(|()| t.clone())
        };
        r.map_err(|why| self.note(format!("{loc} -> {target}"), why))
            .ok()
    }

    /// The first candidate that exists and is the right file; wrong ones
    /// are noted and skipped (WinDbg's "mismatched pdb").
    pub(super) fn first_valid(
        &mut self,
        candidates: impl IntoIterator<Item = PathBuf>,
    ) -> Option<PathBuf> {
        for p in candidates {
            if !p.is_file() {
                continue;
            }
            match self.req.check(&p) {
                Ok(()) => return Some(p),
                Err(why) => self.note(p.display(), why),
            }
        }
        None
    }

    /// `cache*DIR` semantics: a file found further along is copied into
    /// the cache store. A failed copy only costs the next run a search.
    pub(super) fn copy_into_cache(&mut self, p: &Path, cache: Option<&Path>) -> PathBuf {
        let Some(cache) = cache else {
            return p.to_path_buf();
        };
        let dest = self.req.path_in(cache);
        if dest == p {
            return dest;
        }
        let r = (|| -> std::io::Result<()> {
            let dir = dest.parent().unwrap_or(cache);
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .map_err(pooldump_io::fsio::without_temp_path)?;
            std::io::copy(&mut std::fs::File::open(p)?, &mut tmp)?;
            tmp.persist(&dest).map_err(|e| e.error)?;
            Ok(())
        })();
        match r {
            Ok(()) => dest,
            Err(e) => {
                self.note(
                    dest.display(),
                    format!("could not copy into the cache: {e}"),
                );
                p.to_path_buf()
            }
        }
    }
}

/// The target of a `file.ptr`, or why there is none.
pub(super) fn parse_file_ptr(text: &str) -> Result<String, String> {
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
        pooldump_io::bytes::escape_ascii(&t.as_bytes()[..t.len().min(40)])
    ))
}
