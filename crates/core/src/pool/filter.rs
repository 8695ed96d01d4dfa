//! PoolMon's and `!poolused`'s ways of choosing and ordering rows: tag
//! patterns (`?` one character, `*` any run, case-sensitive, `0x...`
//! numeric), pool type, sort keys (PoolMon's T A F S B M letters), top N.

use std::cmp::Reverse;

use super::PoolClass;
use super::tracker::TagUsage;
use crate::tag::PoolTag;

/// A tag or tag pattern as `poolmon /i`, `!poolused` and `!poolfind` take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPattern {
    text: String,
    kind: PatternKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternKind {
    /// Four bytes, `None` where the pattern has `?`.
    Fixed([Option<u8>; 4]),
    /// A glob with `*`, matched against the four tag characters.
    Glob(Vec<u8>),
}

/// Why a tag pattern does not parse (each case carries the pattern as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagPatternError {
    /// Empty.
    #[error("tag pattern `{0}` is empty")]
    Empty(String),
    /// Five or more characters without a `*`: no four-byte tag matches.
    #[error("tag pattern `{0}` has more than 4 characters and no `*`")]
    TooLong(String),
    /// Not ASCII.
    #[error("tag pattern `{0}` is not ASCII")]
    NotAscii(String),
    /// `0x` followed by something that is not a 32-bit hex number.
    #[error("`{0}` is not a valid 0x... tag value")]
    BadNumber(String),
}

impl TagPattern {
    /// Parse `Abc `, `Ab?d`, `Ab*` or `0x20636241`. A pattern shorter than four characters without
    /// `*` is space-padded, as Windows pads tags (`CM` is `CM  `).
    pub fn parse(s: &str) -> Result<Self, TagPatternError> {
        if let Some(hex) = s.strip_prefix("0x") {
            let v =
                u32::from_str_radix(hex, 16).map_err(|_| TagPatternError::BadNumber(s.into()))?;
            return Ok(Self {
                text: s.into(),
                kind: PatternKind::Fixed(v.to_le_bytes().map(Some)),
            });
        }
        if s.is_empty() {
            return Err(TagPatternError::Empty(s.into()));
        }
        if !s.is_ascii() {
            return Err(TagPatternError::NotAscii(s.into()));
        }
        let b = s.as_bytes();
        if b.contains(&b'*') {
            return Ok(Self {
                text: s.into(),
                kind: PatternKind::Glob(b.to_vec()),
            });
        }
        if b.len() > 4 {
            return Err(TagPatternError::TooLong(s.into()));
        }
        // Short tags are space-padded, as Windows pads them (`CM` is `CM  `).
        let mut f = [Some(b' '); 4];
        for (i, c) in b.iter().enumerate() {
            f[i] = if *c == b'?' { None } else { Some(*c) };
        }
        Ok(Self {
            text: s.into(),
            kind: PatternKind::Fixed(f),
        })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The exact tag, when the pattern has no wildcard.
    pub fn exact(&self) -> Option<PoolTag> {
        match &self.kind {
            PatternKind::Fixed(f) if f.iter().all(Option::is_some) => {
                Some(PoolTag::from_bytes(f.map(|c| c.unwrap_or(0))))
            }
            _ => None,
        }
    }

    /// Does `tag` match? The PROTECTED_POOL bit is ignored.
    pub fn matches(&self, tag: PoolTag) -> bool {
        let t = tag.unprotected().bytes();
        match &self.kind {
            PatternKind::Fixed(f) => f.iter().zip(t).all(|(p, c)| p.is_none_or(|p| p == c)),
            PatternKind::Glob(g) => glob(g, &t),
        }
    }
}

/// Exactly this tag (PROTECTED_POOL ignored, as every pattern ignores it).
impl From<PoolTag> for TagPattern {
    fn from(tag: PoolTag) -> Self {
        let bytes = tag.unprotected().bytes();
        Self {
            text: tag.to_string(),
            kind: PatternKind::Fixed(bytes.map(Some)),
        }
    }
}

impl std::str::FromStr for TagPattern {
    type Err = TagPatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl std::fmt::Display for TagPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// `?` and `*` glob over bytes (iterative, so hostile patterns cannot
/// recurse deeply).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        // A star first: a tag may hold the byte '*' itself, which the
        // star must not be taken for.
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// PoolMon's columns, the ones every per-tag table (analyze, diff, top)
/// sorts by: one parser for their names and PoolMon's sort letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMonColumn {
    /// The tag (PoolMon's T).
    Tag,
    /// Allocations since boot (A).
    Allocs,
    /// Frees since boot (F).
    Frees,
    /// Allocs − Frees, the live allocations (S or D).
    Diff,
    /// Bytes allocated now (B).
    Bytes,
    /// Bytes / Diff (M).
    PerAlloc,
}

impl PoolMonColumn {
    /// The names [`PoolMonColumn::parse`] accepts, for messages.
    pub const NAMES: &'static str = "tag, allocs, frees, diff, bytes, per-alloc";
    /// PoolMon's sort letters it accepts, for messages.
    pub const LETTERS: &'static str = "T A F S (or D) B M";

    /// A column by name or by PoolMon's sort letter (T, A, F, S or D, B, M).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tag" | "t" | "T" => Self::Tag,
            "allocs" | "a" | "A" => Self::Allocs,
            "frees" | "f" | "F" => Self::Frees,
            "diff" | "s" | "S" | "d" | "D" => Self::Diff,
            "bytes" | "b" | "B" => Self::Bytes,
            "per-alloc" | "m" | "M" => Self::PerAlloc,
            _ => return None,
        })
    }

    /// A row's number in this column; `None` for [`PoolMonColumn::Tag`],
    /// the one column that is not a count.
    pub fn value_of(self, r: &TagUsage) -> Option<u64> {
        match self {
            Self::Tag => None,
            Self::Allocs => Some(r.allocs),
            Self::Frees => Some(r.frees),
            Self::Diff => Some(r.diff),
            Self::Bytes => Some(r.bytes),
            Self::PerAlloc => Some(r.per_alloc),
        }
    }
}

/// What to sort rows by: one of PoolMon's columns, or one of the two
/// orders `!poolused` adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// A PoolMon column: tags ascend, numbers descend.
    Column(PoolMonColumn),
    /// `!poolused 2`: the tag's nonpaged bytes.
    NonPagedBytes,
    /// `!poolused 4`: the tag's paged bytes.
    PagedBytes,
}

impl Default for SortKey {
    /// PoolMon's default order: by tag.
    fn default() -> Self {
        Self::Column(PoolMonColumn::Tag)
    }
}

impl From<PoolMonColumn> for SortKey {
    fn from(c: PoolMonColumn) -> Self {
        Self::Column(c)
    }
}

impl SortKey {
    /// A [`PoolMonColumn`], or `nonpaged` / `paged` (`!poolused 2` / `4`).
    pub fn parse(s: &str) -> Option<Self> {
        PoolMonColumn::parse(s).map(Self::Column).or(match s {
            "nonpaged" | "nonpaged-bytes" | "2" => Some(Self::NonPagedBytes),
            "paged" | "paged-bytes" | "4" => Some(Self::PagedBytes),
            _ => None,
        })
    }
}

/// Filter, sort and cut rows.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// Keep rows matching any of these (all rows when empty).
    pub include: Vec<TagPattern>,
    /// Drop rows matching any of these.
    pub exclude: Vec<TagPattern>,
    /// One pool only (PoolMon's P key).
    pub pool: Option<PoolClass>,
    /// The order of the rows.
    pub sort: SortKey,
    /// Reverse the key's natural order (tags ascend, numbers descend).
    pub reverse: bool,
    /// Keep this many rows after sorting (all when None).
    pub top: Option<usize>,
}

impl UsageQuery {
    /// The rows `rows` keeps, sorted and cut as asked.
    pub fn apply(&self, rows: &[TagUsage]) -> Vec<TagUsage> {
        let mut v: Vec<TagUsage> = rows
            .iter()
            .filter(|r| self.pool.is_none_or(|p| r.pool == p))
            .filter(|r| self.include.is_empty() || self.include.iter().any(|p| p.matches(r.tag)))
            .filter(|r| !self.exclude.iter().any(|p| p.matches(r.tag)))
            .cloned()
            .collect();
        // Per-tag byte totals for the !poolused 2/4 orders.
        let class_bytes = |class: PoolClass, tag: PoolTag| -> u64 {
            rows.iter()
                .filter(|r| r.tag == tag && r.pool == class)
                .map(|r| r.bytes)
                .sum()
        };
        let tag_key = |r: &TagUsage| (r.tag.bytes(), r.pool);
        match self.sort {
            // Numbers descend; the tag column has none, so it sorts by tag.
            SortKey::Column(c) => v.sort_by_key(|r| (Reverse(c.value_of(r)), tag_key(r))),
            SortKey::NonPagedBytes | SortKey::PagedBytes => {
                let class = if self.sort == SortKey::NonPagedBytes {
                    PoolClass::NonPaged
                } else {
                    PoolClass::Paged
                };
                let mut keyed: Vec<(u64, TagUsage)> = v
                    .into_iter()
                    .map(|r| (class_bytes(class, r.tag), r))
                    .collect();
                keyed.sort_by_key(|(b, r)| (Reverse(*b), r.pool != class, tag_key(r)));
                v = keyed.into_iter().map(|(_, r)| r).collect();
            }
        }
        if self.reverse {
            v.reverse();
        }
        if let Some(n) = self.top {
            v.truncate(n);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_parser_for_poolmons_sort_columns() {
        for (names, want) in [
            (&["tag", "t", "T"][..], PoolMonColumn::Tag),
            (&["allocs", "a", "A"], PoolMonColumn::Allocs),
            (&["frees", "f", "F"], PoolMonColumn::Frees),
            (&["diff", "s", "S", "d", "D"], PoolMonColumn::Diff),
            (&["bytes", "b", "B"], PoolMonColumn::Bytes),
            (&["per-alloc", "m", "M"], PoolMonColumn::PerAlloc),
        ] {
            for n in names {
                assert_eq!(PoolMonColumn::parse(n), Some(want), "{n}");
                assert!(SortKey::parse(n).is_some(), "{n}");
            }
        }
        assert_eq!(SortKey::parse("M"), Some(PoolMonColumn::PerAlloc.into()));
        assert_eq!(SortKey::parse("2"), Some(SortKey::NonPagedBytes));
        assert_eq!(PoolMonColumn::parse("2"), None);
        assert_eq!(PoolMonColumn::parse("x"), None);
    }

    fn t(s: &str) -> PoolTag {
        PoolTag::parse(s).unwrap()
    }

    #[test]
    fn poolmon_wildcards() {
        let p = TagPattern::parse("Ntf?").unwrap();
        assert!(p.matches(t("Ntfx")) && p.matches(t("NtfF")) && !p.matches(t("NtFs")));
        let p = TagPattern::parse("Nt*").unwrap();
        assert!(p.matches(t("Ntfx")) && p.matches(t("NtFs")) && !p.matches(t("ntfx")));
        let p = TagPattern::parse("*x").unwrap();
        assert!(p.matches(t("Ntfx")) && !p.matches(t("Ntff")));
        let p = TagPattern::parse("CM").unwrap();
        assert!(p.matches(t("CM  ")) && !p.matches(t("CM31")));
        assert_eq!(p.exact(), Some(t("CM  ")));
        let p = TagPattern::parse("0x20636241").unwrap();
        assert!(p.matches(t("Abc ")));
        assert!(TagPattern::parse("Toolong").is_err());
        assert!(TagPattern::parse("").is_err());
        // The protected bit does not stop a match.
        assert!(
            TagPattern::parse("Proc")
                .unwrap()
                .matches(PoolTag::from_bytes(*b"Pro\xe3"))
        );
    }

    #[test]
    fn a_star_matches_a_tag_holding_a_star() {
        // Found by fuzzing `pool_at`, whose scan takes every tag (`*`).
        let tag = |b: &[u8; 4]| PoolTag::from_bytes(*b);
        let star = TagPattern::parse("*").unwrap();
        assert!(star.matches(tag(b"*\x81\x81\x01")));
        assert!(TagPattern::parse("A*").unwrap().matches(tag(b"A*bc")));
        assert!(TagPattern::parse("*c").unwrap().matches(tag(b"A*bc")));
        assert!(!TagPattern::parse("B*").unwrap().matches(tag(b"A*bc")));
    }

    #[test]
    fn glob_is_linear_on_hostile_patterns() {
        let p = "*".repeat(10_000) + "z";
        assert!(!glob(p.as_bytes(), b"aaaa"));
    }
}
