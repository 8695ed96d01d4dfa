//! `DIR|GLOB|FILE...` to a list of dump files.
//!
//! - a file is taken as it is, whatever its name;
//! - a directory is searched recursively for `*.dmp` (any case:
//!   `MEMORY.DMP`, `Mini110224-01.dmp`), symbolic links not followed;
//! - anything else is a glob pattern (`dumps/**/*.DMP`); a pattern that
//!   matches nothing is an error, not an empty batch.
//!
//! The list is sorted within each argument and has no path twice.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::FleetError;

/// The dump files the arguments name, and what could not be searched
/// (an unreadable directory below one given).
pub fn expand(args: &[String]) -> Result<(Vec<PathBuf>, Vec<String>), FleetError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut warnings = Vec::new();
    let mut push = |p: PathBuf, out: &mut Vec<PathBuf>| {
        if seen.insert(p.clone()) {
            out.push(p);
        }
    };
    for a in args {
        let p = Path::new(a);
        if p.is_file() {
            push(p.to_path_buf(), &mut out);
        } else if p.is_dir() {
            for f in walk(p, &mut warnings) {
                push(f, &mut out);
            }
        } else {
            let matches = glob::glob(a).map_err(|e| FleetError::Input {
                input: a.clone(),
                why: format!("not a file, a directory or a valid glob pattern: {e}"),
            })?;
            let mut found = Vec::new();
            for m in matches {
                match m {
                    Ok(m) if m.is_dir() => found.extend(walk(&m, &mut warnings)),
                    Ok(m) if m.is_file() => found.push(m),
                    Ok(_) => {}
                    Err(e) => warnings.push(e.to_string()),
                }
            }
            if found.is_empty() {
                return Err(FleetError::Input {
                    input: a.clone(),
                    why: "no such file or directory, and as a glob pattern it matches no file"
                        .into(),
                });
            }
            found.sort();
            for f in found {
                push(f, &mut out);
            }
        }
    }
    Ok((out, warnings))
}

/// `*.dmp` below `dir`, sorted.
fn walk(dir: &Path, warnings: &mut Vec<String>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false) {
        match e {
            Ok(e) if e.file_type().is_file() && is_dump_name(e.path()) => {
                v.push(e.into_path());
            }
            Ok(_) => {}
            Err(e) => warnings.push(format!("{}: {e}", dir.display())),
        }
    }
    v.sort();
    v
}

fn is_dump_name(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("dmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_directories_and_globs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for f in ["a/MEMORY.DMP", "a/b/Mini1.dmp", "a/notes.txt", "c.bin"] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let s = |p: &str| root.join(p).display().to_string();
        let (v, w) = expand(&[s("a"), s("c.bin"), s("a/MEMORY.DMP")]).unwrap();
        assert!(w.is_empty());
        assert_eq!(
            v,
            vec![
                root.join("a/MEMORY.DMP"),
                root.join("a/b/Mini1.dmp"),
                root.join("c.bin")
            ]
        );
        let (v, _) = expand(&[s("a/**/*.dmp")]).unwrap();
        assert_eq!(v, vec![root.join("a/b/Mini1.dmp")]);
        let e = expand(&[s("nothing/*.DMP")]).unwrap_err().to_string();
        assert!(e.contains("matches no file"), "{e}");
        let e = expand(&[s("a/[")]).unwrap_err().to_string();
        assert!(e.contains("glob"), "{e}");
    }
}
