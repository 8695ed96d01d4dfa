//! PDB file names from memory are hostile: an RSDS record can say
//! `..\..\etc\passwd`, `C:\x`, `a/b`, or carry NUL and control bytes. A
//! [`PdbName`] is a name that is safe to use as one path component and one
//! URL path segment.

use std::fmt;

/// Longest accepted name (MAX_PATH).
pub const MAX_NAME: usize = 260;

/// A validated PDB file name: ASCII letters, digits and `._-+~$`, not
/// starting with a dot, no `..`, at most [`MAX_NAME`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PdbName(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the PDB name '{shown}' is not safe to use as a file name: {why}")]
pub struct PdbNameError {
    /// The name, with anything non-printable escaped.
    pub shown: String,
    /// What makes it unsafe.
    pub why: &'static str,
}

impl PdbName {
    /// Validate `name` as it is: separators are refused.
    pub fn new(name: &str) -> Result<Self, PdbNameError> {
        let fail = |why| {
            Err(PdbNameError {
                shown: name.escape_default().to_string(),
                why,
            })
        };
        if name.is_empty() {
            return fail("it is empty");
        }
        if name.len() > MAX_NAME {
            return fail("it is longer than 260 bytes");
        }
        if name.contains('\0') {
            return fail("it contains NUL");
        }
        if name.contains(['/', '\\', ':']) {
            return fail("it contains a path separator or drive colon");
        }
        if name.contains("..") {
            return fail("it contains '..'");
        }
        if name.starts_with('.') {
            return fail("it starts with a dot");
        }
        if !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-+~$".contains(&c))
        {
            return fail("it contains characters other than letters, digits and ._-+~$");
        }
        Ok(Self(name.to_string()))
    }

    /// The name an RSDS record gives, which may be a build path
    /// (`d:\os\obj\amd64fre\ntkrnlmp.pdb`): symbol servers index the last
    /// component, as symsrv does. The component is then validated like
    /// [`PdbName::new`], so `..\..\x` still cannot climb out of a store.
    pub fn from_codeview(recorded: &str) -> Result<Self, PdbNameError> {
        // `..\..\evil` would otherwise become `evil` without a word: a
        // recorded path that climbs is refused, not trimmed.
        if recorded.split(['\\', '/']).any(|c| c == "..") {
            return Err(PdbNameError {
                shown: recorded.escape_default().to_string(),
                why: "it climbs directories with '..' (no linker records that)",
            });
        }
        let base = recorded.rsplit(['\\', '/']).next().unwrap_or(recorded);
        if base.is_empty() || base == ".." || base == "." {
            return Err(PdbNameError {
                shown: recorded.escape_default().to_string(),
                why: "it has no file name after its last separator",
            });
        }
        Self::new(base)
    }

    /// The name, safe as one path component.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PdbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_names() {
        for n in [
            "ntkrnlmp.pdb",
            "tcpip.pdb",
            "Wdf01000.pdb",
            "my_drv-x64+1.pdb",
        ] {
            assert_eq!(PdbName::new(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn refuses_hostile_names() {
        for n in [
            "",
            "..",
            "../x.pdb",
            "a/b.pdb",
            "a\\b.pdb",
            "C:x.pdb",
            "/etc/passwd",
            "x\0.pdb",
            ".hidden",
            "a..pdb",
            "sp ace.pdb",
            "q?.pdb",
            "%2e%2e.pdb",
            "\u{1b}[2J.pdb",
            "ü.pdb",
        ] {
            assert!(PdbName::new(n).is_err(), "{n:?} was accepted");
        }
        assert!(PdbName::new(&"a".repeat(261)).is_err());
    }

    #[test]
    fn codeview_paths_keep_the_last_component() {
        assert_eq!(
            PdbName::from_codeview(r"d:\os\obj\amd64fre\ntkrnlmp.pdb")
                .unwrap()
                .as_str(),
            "ntkrnlmp.pdb"
        );
        assert!(PdbName::from_codeview(r"..\..\").is_err());
        assert!(PdbName::from_codeview(r"x\..").is_err());
        assert!(PdbName::from_codeview("a/b\0c").is_err());
        let e = PdbName::from_codeview(r"..\..\evil").unwrap_err();
        assert_eq!(
            e.to_string(),
            r"the PDB name '..\\..\\evil' is not safe to use as a file name: it climbs directories with '..' (no linker records that)"
        );
    }
}
