//! pooltag.txt, as Microsoft ships it in the Debugging Tools' triage
//! folder and the WDK (docs/pool-structures.md §8, and the real file in
//! ../shared/realworld/).
//!
//! Line forms, all from real copies (the one in ../shared/realworld/ unless
//! said otherwise):
//! * `//` and `rem`/`REM` comment lines, blank lines, a final 0x1A (the
//!   DOS end-of-file byte), CRLF or LF endings;
//! * `Tag - binary - description`, split on the first two ` - `, so a
//!   description may itself contain ` - ` (`NDcw - ndis.sys - NDIS_TAG_PCW -
//!   NDIS Performance Counters`);
//! * a dash after the tag that kept its space on one side only (`eMyS-
//!   win32k!CInputSystemMetrics::operator new - SYSTEMMETRICS_TAG`, in
//!   copies newer than that one, from WinDbg packages), which still ends
//!   the tag;
//! * tags padded to 4 (`CM   - nt!cm`), unpadded 3-character tags
//!   (`I4e -  tcpip.sys`), interior spaces (`Dh 0`), `?` and `*` patterns
//!   (`Afd?`, `Bu* `);
//! * binaries: `x.sys`, `nt!mm`, `win32k!xxxCsEvent`, `<unknown>`,
//!   `<multiple>`, `<nvlddmkm.sys>`, `nt!store or rdyboost.sys`,
//!   `netvsc50.sys/netvsc60.sys`, `FsLib`;
//! * two-field lines whose second field is a description, not a binary
//!   (`ATmp - AppTag mount point`);
//! * the same tag twice: the first line wins, as in WinDbg;
//! * an indented line with no ` - `: a continuation of the previous
//!   description, unless it is a lone binary (`       <unknown>` after a
//!   line that already has one), which is reported as unreadable.
//!
//! Files written by some editors are UTF-16 with a byte-order mark; those
//! are decoded, as are UTF-8 files with or without a BOM (anything else is
//! decoded lossily).
//!
//! Lookups return the exact line and the best pattern line separately, so
//! the caller can rank them against evidence from the loaded images (see
//! [`crate::Target::attribute`] for the precedence).

use std::collections::HashMap;
use std::path::Path;

use super::filter::TagPattern;
use crate::bytes::Le;
use crate::tag::PoolTag;

/// What a pooltag.txt line says about the owner.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BinaryKind {
    /// A binary or component: `acpi.sys`, `nt!mm`, `<nvlddmkm.sys>`,
    /// `a.sys or b.sys`.
    Named,
    /// `<unknown>`.
    Unknown,
    /// `<multiple>`.
    Multiple,
    /// The line has no binary field (`ATmp - AppTag mount point`).
    Missing,
}

/// One pooltag.txt line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolTagEntry {
    /// `acpi.sys`, `nt!cm`, `<unknown>`; empty when the line has none.
    pub binary: String,
    /// What the binary field says: a named owner, `<unknown>`, `<multiple>`, or nothing.
    pub kind: BinaryKind,
    /// The description field (with any continuation lines), as written.
    pub description: String,
    /// 1-based line number in the file.
    pub line: usize,
}

impl PoolTagEntry {
    /// Does the line name the owner (a binary or an nt component)?
    pub fn names_binary(&self) -> bool {
        self.kind == BinaryKind::Named
    }
}

/// The lines that match one tag: the exact one and the best pattern.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolTagMatch<'a> {
    /// The line naming the tag exactly.
    pub exact: Option<&'a PoolTagEntry>,
    /// The most specific pattern line that matches (longest fixed prefix, then file order).
    pub pattern: Option<&'a PoolTagEntry>,
}

/// pooltag.txt, parsed: exact tags and patterns, each with its line.
#[derive(Debug, Clone, Default)]
pub struct PoolTagDb {
    exact: HashMap<PoolTag, PoolTagEntry>,
    patterns: Vec<(usize, TagPattern, PoolTagEntry)>,
    /// Lines that could not be read, with their numbers.
    pub skipped: Vec<usize>,
}

/// The largest pooltag.txt read (Microsoft's is about 250 KB): a larger
/// file, or `/dev/zero`, is refused after this many bytes.
pub const MAX_POOLTAG_FILE: u64 = 16 << 20;

/// Decode a pooltag.txt: UTF-16 (LE or BE) with a BOM or, without one,
/// when its NUL bytes say so (a file saved as "Unicode" by a tool that
/// writes no BOM); UTF-8 with or without a BOM; else lossily (some copies
/// carry Latin-1 bytes).
pub fn decode_text(bytes: &[u8]) -> String {
    let utf16 = |b: &[u8], le: bool| -> String {
        let units: Vec<u16> = Le(b)
            .utf16_units()
            .map(|u| if le { u } else { u.swap_bytes() })
            .collect();
        String::from_utf16_lossy(&units)
    };
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        utf16(rest, true)
    } else if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        utf16(rest, false)
    } else if let Some(le) = bomless_utf16(bytes) {
        utf16(bytes, le)
    } else {
        let rest = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
        String::from_utf8_lossy(rest).into_owned()
    }
}

/// UTF-16 without a BOM, told by its NUL bytes: ASCII text in UTF-16 has
/// a NUL in every other byte (odd offsets little-endian, even offsets
/// big-endian), which UTF-8 text never has. `Some(true)` for LE.
fn bomless_utf16(bytes: &[u8]) -> Option<bool> {
    let head = &bytes[..bytes.len().min(4096) & !1];
    if head.len() < 8 {
        return None;
    }
    let pairs = head.len() / 2;
    let nul_at = |parity: usize| {
        head.iter()
            .skip(parity)
            .step_by(2)
            .filter(|&&b| b == 0)
            .count()
    };
    let (even, odd) = (nul_at(0), nul_at(1));
    // Most code units of text are ASCII: their high byte is NUL.
    if odd * 4 >= pairs * 3 && even * 8 < pairs {
        Some(true)
    } else if even * 4 >= pairs * 3 && odd * 8 < pairs {
        Some(false)
    } else {
        None
    }
}

/// The entry a continuation line belongs to.
enum Last {
    Nothing,
    Exact(PoolTag),
    Pattern(usize),
    /// A repeated tag's line, which WinDbg ignores with its continuations.
    Ignored,
}

/// A `Tag - binary - description` line (or two fields: `Tag - binary` or
/// `Tag - description`) as its tag and entry; `None` without a separator
/// after the tag.
fn split_line(line: &str, line_no: usize) -> Option<(&str, PoolTagEntry)> {
    let (tag, rest) = split_tag(line)?;
    let (second, third) = match rest.split_once(" - ") {
        Some((b, d)) => (b.trim(), Some(d)),
        None => (rest.trim(), None),
    };
    let (binary, description) = match third {
        Some(d) => (second.to_string(), d.trim().to_string()),
        None if looks_like_binary(second) => (second.to_string(), String::new()),
        None => (String::new(), second.to_string()),
    };
    let entry = PoolTagEntry {
        kind: binary_kind(&binary),
        binary,
        description,
        line: line_no,
    };
    Some((tag, entry))
}

/// A line's tag and the text after the dash that ends it: the first
/// ` - `, or else a dash that kept its space on one side only
/// (`eMyS-  win32k!... - ...` in Microsoft's newer copies) after at most
/// four characters. `None` when neither gives a tag.
fn split_tag(line: &str) -> Option<(&str, &str)> {
    if let Some((tag, rest)) = line.split_once(" - ") {
        let tag = trim_tag(tag);
        if TagPattern::parse(tag).is_ok() {
            return Some((tag, rest));
        }
    }
    let (head, rest) = line.split_once('-')?;
    let spaced = head.ends_with([' ', '\t']) || rest.starts_with([' ', '\t']);
    let tag = head.trim();
    (spaced && (1..=4).contains(&tag.len())).then_some((tag, rest))
}

/// The tag field without its indentation and tabs; trailing spaces are
/// kept when they pad a short tag (`CM  `), not after a `*` pattern
/// (`Bu*  - ...`) or a field too long to be a tag.
fn trim_tag(tag: &str) -> &str {
    let tag = tag.trim_start().trim_end_matches(['\t']);
    if tag.len() > 4 || tag.contains('*') {
        tag.trim_end()
    } else {
        tag
    }
}

/// A comment line: `//...` or `rem` as a word (a tag such as `remX` is
/// not a comment).
fn is_comment(t: &str) -> bool {
    if t.starts_with("//") {
        return true;
    }
    let lower = t.get(..3).map(|s| s.eq_ignore_ascii_case("rem"));
    lower == Some(true) && t[3..].chars().next().is_none_or(char::is_whitespace)
}

/// Classify a binary field.
fn binary_kind(b: &str) -> BinaryKind {
    match b.to_ascii_lowercase().as_str() {
        "" => BinaryKind::Missing,
        "<unknown>" => BinaryKind::Unknown,
        "<multiple>" => BinaryKind::Multiple,
        _ => BinaryKind::Named,
    }
}

/// Does a field read as a binary rather than as prose? A single token
/// (`FsLib`, `x.sys`, `nt!mm`, `<drv.sys>`), or binaries joined by ` or `
/// or `/`.
pub(crate) fn looks_like_binary(f: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && !t.contains(char::is_whitespace)
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-!<>/:\\$~+".contains(c))
    };
    f.split(" or ").all(|p| token(p.trim()))
}

impl PoolTagDb {
    /// Read and parse the file at `path`, at most [`MAX_POOLTAG_FILE`]
    /// bytes of it.
    pub fn load(path: &Path) -> Result<Self, crate::input::ReadError> {
        let bytes = crate::input::read_capped(path, MAX_POOLTAG_FILE, "a pooltag.txt")?;
        Ok(Self::parse(&decode_text(&bytes)))
    }

    /// Parse pooltag.txt's text (see the module docs for the forms); the
    /// numbers of lines that cannot be read go to [`PoolTagDb::skipped`].
    pub fn parse(text: &str) -> Self {
        let mut db = PoolTagDb::default();
        let mut last = Last::Nothing;
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            // The DOS end-of-file byte ends the text.
            let (line, eof) = match raw.find('\u{1A}') {
                Some(i) => (&raw[..i], true),
                None => (raw, false),
            };
            let trimmed = line.trim();
            if trimmed.is_empty() || is_comment(trimmed) {
            } else if line.starts_with([' ', '\t']) && !line.contains(" - ") {
                db.continuation(&last, trimmed, line_no);
            } else {
                last = match split_line(line, line_no) {
                    Some((tag, entry)) => db.add(tag, entry),
                    None => Last::Nothing,
                };
                if matches!(last, Last::Nothing) {
                    db.skipped.push(line_no);
                }
            }
            if eof {
                break;
            }
        }
        // Longest fixed prefix first; file order among equals.
        db.patterns
            .sort_by_key(|(fixed, _, _)| std::cmp::Reverse(*fixed));
        db
    }

    /// An indented line without ` - ` continues the description of the
    /// entry before it.
    fn continuation(&mut self, last: &Last, trimmed: &str, line_no: usize) {
        // A lone binary on an indented line is not prose: the line has
        // lost its tag.
        if trimmed.starts_with('<') || binary_kind(trimmed) != BinaryKind::Named {
            self.skipped.push(line_no);
            return;
        }
        let entry = match *last {
            Last::Exact(t) => self.exact.get_mut(&t),
            Last::Pattern(i) => self.patterns.get_mut(i).map(|p| &mut p.2),
            Last::Ignored => return,
            Last::Nothing => None,
        };
        match entry {
            Some(e) => {
                e.description.push(' ');
                e.description.push_str(trimmed);
            }
            None => self.skipped.push(line_no),
        }
    }

    /// Add a line's entry under its tag or pattern; `Last::Nothing` when
    /// the tag is not one.
    fn add(&mut self, tag: &str, entry: PoolTagEntry) -> Last {
        let Ok(p) = TagPattern::parse(tag) else {
            return Last::Nothing;
        };
        match p.exact() {
            Some(t) => {
                // WinDbg takes the first line of a tag.
                if let std::collections::hash_map::Entry::Vacant(v) = self.exact.entry(t) {
                    v.insert(entry);
                    Last::Exact(t)
                } else {
                    Last::Ignored
                }
            }
            None => {
                let fixed = tag.bytes().take_while(|c| *c != b'?' && *c != b'*').count();
                self.patterns.push((fixed, p, entry));
                Last::Pattern(self.patterns.len() - 1)
            }
        }
    }

    /// Tags and patterns held.
    pub fn len(&self) -> usize {
        self.exact.len() + self.patterns.len()
    }

    /// No line was read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The exact line for `tag`, and the best pattern line (longest fixed
    /// prefix, then file order).
    pub fn matches(&self, tag: PoolTag) -> PoolTagMatch<'_> {
        let t = tag.unprotected();
        PoolTagMatch {
            exact: self.exact.get(&t),
            pattern: self
                .patterns
                .iter()
                .find(|(_, p, _)| p.matches(t))
                .map(|(_, _, e)| e),
        }
    }

    /// The line that describes `tag`: the exact one, else the best pattern.
    pub fn lookup(&self, tag: PoolTag) -> Option<&PoolTagEntry> {
        let m = self.matches(tag);
        m.exact.or(m.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
rem Pool tag file
REM upper-case too
// a C++ comment
AcpA - acpi.sys - ACPI arbiter data
Afd? - afd.sys  - AFD objects
Acp* - acpi.sys - ACPI components
CM   - nt!cm    - Configuration Manager (registry)
CM?? - nt!cm    - Internal Configuration manager allocations
Dh 0 - <unknown> - DirectDraw/3D default object
I4e -  tcpip.sys    - IPv4 Echo data
NDcw - ndis.sys     - NDIS_TAG_PCW - NDIS Performance Counters
ATmp - AppTag mount point
FsLd - FsLib        - FsLib Livedump
CKRT - <multiple>   - Cluster Kernel RTL library
ReTs - nt!store or rdyboost.sys - ReadyBoost
Leak - leakydrv.sys - leaky test driver
     that continues here
Leak - other.sys - a second line for the same tag
       <unknown>
-internal
Gxx
G??? - win32k.sys - GDI objects
remX - remx.sys - a tag that starts with rem
\u{1A}";

    fn t(s: &str) -> PoolTag {
        PoolTag::parse(s).unwrap()
    }

    #[test]
    fn every_line_form_of_the_real_file() {
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
        let dh = db.lookup(t("Dh 0")).unwrap();
        assert_eq!(
            (dh.binary.as_str(), &dh.kind),
            ("<unknown>", &BinaryKind::Unknown)
        );
        assert_eq!(db.lookup(t("I4e ")).unwrap().binary, "tcpip.sys");
        assert_eq!(
            db.lookup(t("NDcw")).unwrap().description,
            "NDIS_TAG_PCW - NDIS Performance Counters"
        );
        let at = db.lookup(t("ATmp")).unwrap();
        assert_eq!(at.kind, BinaryKind::Missing);
        assert_eq!(at.description, "AppTag mount point");
        assert!(db.lookup(t("FsLd")).unwrap().names_binary());
        assert_eq!(db.lookup(t("CKRT")).unwrap().kind, BinaryKind::Multiple);
        assert!(db.lookup(t("ReTs")).unwrap().names_binary());
        let leak = db.lookup(t("Leak")).unwrap();
        assert_eq!(leak.binary, "leakydrv.sys", "the first line of a tag wins");
        assert_eq!(leak.description, "leaky test driver that continues here");
        assert_eq!(db.lookup(t("Gdi1")).unwrap().binary, "win32k.sys");
        assert_eq!(db.lookup(t("remX")).unwrap().binary, "remx.sys");
        assert!(db.lookup(t("Zzzz")).is_none());
        // `       <unknown>`, `-internal` and `Gxx` are reported by line;
        // the 0x1A and the comments are not.
        assert_eq!(db.skipped, vec![19, 20, 21]);
    }

    #[test]
    fn a_dash_that_lost_a_space_still_ends_the_tag() {
        // Newer copies of Microsoft's file have a line whose dash after the
        // tag has no space before it (`Tag-  binary - description`); the
        // tag is still the four characters before it. A dash inside a word
        // (`e-mail`) is not a separator.
        let db = PoolTagDb::parse(
            "Abcd-  thing!CThing::operator new - THING_TAG\n\
             Wxy -thing.sys - the space after the dash lost\n\
             e-mail notes\n",
        );
        let e = db.lookup(t("Abcd")).unwrap();
        assert_eq!(
            (e.binary.as_str(), e.description.as_str(), &e.kind),
            (
                "thing!CThing::operator new",
                "THING_TAG",
                &BinaryKind::Named
            )
        );
        let e = db.lookup(t("Wxy")).unwrap();
        assert_eq!(
            (e.binary.as_str(), e.description.as_str()),
            ("thing.sys", "the space after the dash lost")
        );
        assert!(db.lookup(t("e")).is_none());
        assert_eq!(db.skipped, vec![3]);
    }

    #[test]
    fn the_eof_byte_ends_the_text_on_any_line() {
        // On a continuation line and on a line that is not an entry, as on
        // an entry's line: nothing after it is read.
        for text in [
            "Leak - leaky.sys - leaks\n   more\u{1A}\nLate - late.sys - after\n",
            "Leak - leaky.sys - leaks\nGxx\u{1A}\nLate - late.sys - after\n",
            "Leak - leaky.sys - leaks\u{1A}\nLate - late.sys - after\n",
        ] {
            let db = PoolTagDb::parse(text);
            assert!(db.lookup(t("Leak")).is_some(), "{text:?}");
            assert!(db.lookup(t("Late")).is_none(), "{text:?}");
        }
    }

    #[test]
    fn exact_and_pattern_lines_are_both_returned() {
        let db = PoolTagDb::parse("NS?? - <unknown> - Netware\nNSIk - nsi.dll - NSI RPC\n");
        let m = db.matches(t("NSbf"));
        assert!(m.exact.is_none());
        assert_eq!(m.pattern.unwrap().kind, BinaryKind::Unknown);
        let m = db.matches(t("NSIk"));
        assert_eq!(m.exact.unwrap().binary, "nsi.dll");
        assert!(m.pattern.is_some());
    }

    #[test]
    fn utf16_with_a_bom_and_crlf() {
        let text = "rem x\r\nAbcd - abc.sys - the abc driver\r\n";
        let mut le = vec![0xFF, 0xFE];
        le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let mut be = vec![0xFE, 0xFF];
        be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        let mut u8bom = vec![0xEF, 0xBB, 0xBF];
        u8bom.extend(text.bytes());
        for bytes in [le, be, u8bom] {
            let db = PoolTagDb::parse(&decode_text(&bytes));
            let e = db.lookup(t("Abcd")).unwrap();
            assert_eq!(
                (e.binary.as_str(), e.description.as_str()),
                ("abc.sys", "the abc driver")
            );
            assert!(db.skipped.is_empty());
        }
    }

    #[test]
    fn utf16_without_a_bom_is_told_by_its_nul_bytes() {
        let text = "rem Microsoft's pooltag.txt, saved as Unicode without a BOM\r\nAbcd - abc.sys - the abc driver \u{e9}t\u{e9}\r\n";
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for bytes in [le, be] {
            let db = PoolTagDb::parse(&decode_text(&bytes));
            let e = db.lookup(t("Abcd")).unwrap();
            assert_eq!(e.description, "the abc driver \u{e9}t\u{e9}");
        }
        // UTF-8 and Latin-1 text is never taken for UTF-16.
        assert_eq!(bomless_utf16(text.as_bytes()), None);
        assert_eq!(
            bomless_utf16(b"Abcd - abc.sys - caf\xe9 \xe9t\xe9 driver"),
            None
        );
        assert_eq!(bomless_utf16(&[0u8; 64]), None);
    }
}
