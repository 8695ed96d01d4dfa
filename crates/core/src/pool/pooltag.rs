//! pooltag.txt, as shipped in the Debugging Tools' triage folder: lines of
//! `Tag - binary - description`, `rem` comments, tags padded or with `?`
//! and `*` patterns, descriptions continued on indented lines, and the odd
//! malformed line (pool.md §6). Exact tags resolve before patterns, and
//! patterns with a longer fixed prefix before shorter ones.

use std::collections::HashMap;
use std::path::Path;

use super::filter::TagPattern;
use crate::tag::PoolTag;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolTagEntry {
    /// `acpi.sys`, `nt!cm`, `<unknown>`.
    pub binary: String,
    pub description: String,
}

#[derive(Debug, Clone, Default)]
pub struct PoolTagDb {
    exact: HashMap<PoolTag, PoolTagEntry>,
    patterns: Vec<(usize, TagPattern, PoolTagEntry)>,
    /// Lines that could not be read, with their numbers.
    pub skipped: Vec<usize>,
}

impl PoolTagDb {
    pub fn load(path: &Path) -> std::io::Result<Self> {
        // The file is text, but some copies carry Latin-1 bytes: decode
        // lossily rather than refuse them.
        let bytes = std::fs::read(path)?;
        Ok(Self::parse(&String::from_utf8_lossy(&bytes)))
    }

    pub fn parse(text: &str) -> Self {
        let mut db = PoolTagDb::default();
        let mut last: Option<(Option<PoolTag>, Option<usize>)> = None;
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty()
                || trimmed.to_ascii_lowercase().starts_with("rem")
                || trimmed.starts_with("//")
            {
                continue;
            }
            if line.starts_with([' ', '\t']) && !line.contains(" - ") {
                // A continuation of the previous description.
                let entry = match last {
                    Some((Some(t), _)) => db.exact.get_mut(&t),
                    Some((None, Some(i))) => db.patterns.get_mut(i).map(|p| &mut p.2),
                    _ => None,
                };
                if let Some(e) = entry {
                    e.description.push(' ');
                    e.description.push_str(trimmed);
                }
                continue;
            }
            let mut parts = line.splitn(3, " - ");
            let (Some(tag), Some(binary)) = (parts.next(), parts.next()) else {
                db.skipped.push(n + 1);
                continue;
            };
            let description = parts.next().unwrap_or("").trim().to_string();
            let tag = tag.trim_start().trim_end_matches(['\t']);
            let tag = if tag.len() > 4 { tag.trim_end() } else { tag };
            let entry = PoolTagEntry {
                binary: binary.trim().to_string(),
                description,
            };
            match TagPattern::parse(tag) {
                Ok(p) => match p.exact() {
                    Some(t) => {
                        db.exact.entry(t).or_insert(entry);
                        last = Some((Some(t), None));
                    }
                    None => {
                        let fixed = tag.bytes().take_while(|c| *c != b'?' && *c != b'*').count();
                        db.patterns.push((fixed, p, entry));
                        last = Some((None, Some(db.patterns.len() - 1)));
                    }
                },
                Err(_) => db.skipped.push(n + 1),
            }
        }
        // Longest fixed prefix first; file order among equals.
        db.patterns
            .sort_by_key(|(fixed, _, _)| std::cmp::Reverse(*fixed));
        db
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn lookup(&self, tag: PoolTag) -> Option<&PoolTagEntry> {
        let t = tag.unprotected();
        self.exact.get(&t).or_else(|| {
            self.patterns
                .iter()
                .find(|(_, p, _)| p.matches(t))
                .map(|(_, _, e)| e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
rem Pool tag file
rem
AcpA - acpi.sys - ACPI arbiter data
Afd? - afd.sys  - AFD objects
Acp* - acpi.sys - ACPI components
CM   - nt!cm    - Configuration Manager (registry)
CM?? - nt!cm    - Internal Configuration manager allocations
Dh 0 - <unknown> - DirectDraw/3D default object
Leak - leakydrv.sys - leaky test driver
     that continues here
-internal
Gxx
G??? - win32k.sys - GDI objects
";

    fn t(s: &str) -> PoolTag {
        PoolTag::parse(s).unwrap()
    }

    #[test]
    fn exact_before_patterns_and_longest_prefix_first() {
        let db = PoolTagDb::parse(SAMPLE);
        assert_eq!(
            db.lookup(t("AcpA")).unwrap().description,
            "ACPI arbiter data"
        );
        assert_eq!(db.lookup(t("AcpB")).unwrap().description, "ACPI components");
        assert_eq!(db.lookup(t("Afd1")).unwrap().binary, "afd.sys");
        assert_eq!(
            db.lookup(t("CM  ")).unwrap().description,
            "Configuration Manager (registry)"
        );
        assert_eq!(
            db.lookup(t("CM31")).unwrap().description,
            "Internal Configuration manager allocations"
        );
        assert_eq!(db.lookup(t("Dh 0")).unwrap().binary, "<unknown>");
        assert_eq!(db.lookup(t("Gdi1")).unwrap().binary, "win32k.sys");
        assert_eq!(
            db.lookup(t("Leak")).unwrap().description,
            "leaky test driver that continues here"
        );
        assert!(db.lookup(t("Zzzz")).is_none());
        assert_eq!(
            db.skipped.len(),
            2,
            "the malformed lines are skipped, not fatal"
        );
    }
}
