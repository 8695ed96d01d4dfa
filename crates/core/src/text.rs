//! The one rule for showing text that came from outside.
//!
//! Descriptions and drivers from pooltag.txt, snapshot fields, module and
//! PDB names from a dump, DbgPrint text from a target: any of them can
//! hold bytes a terminal acts on (ESC and CSI sequences that recolour,
//! move the cursor or, through OSC, retitle the window; BEL; NUL),
//! characters that reorder what is shown (the bidi overrides and isolates,
//! U+202E), invisible characters that make two names look alike, or, in a
//! CSV file, a formula a spreadsheet runs (`=`, `+`, `-`, `@`).
//!
//! [`escape`] shows each such character as `\uXXXX`: readable in a
//! terminal, and the same character again when the text is JSON (inside a
//! JSON string `\u202e` *is* U+202E), so the CLI can pass whole outputs,
//! tables, JSON and CSV alike, through [`escape_lines`] before they reach
//! stdout or stderr. [`csv_cell`] makes a CSV field safe to open in a
//! spreadsheet. Everything else (letters of every script, punctuation,
//! backslashes in Windows paths) is left as it is.
//!
//! ```
//! use pooldump_core::text::{csv_cell, escape};
//! assert_eq!(escape("evil\u{1b}]0;pwned\u{7}.sys"), "evil\\u001b]0;pwned\\u0007.sys");
//! assert_eq!(escape("gpj.\u{202e}exe.sys"), "gpj.\\u202eexe.sys");
//! assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
//! assert_eq!(csv_cell("-12"), "-12");
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;

/// Does showing `c` raw let the text act on a terminal or disguise
/// itself? Controls (C0, DEL, C1), the bidi embeddings, overrides,
/// isolates and marks, zero-width and other invisible format characters,
/// the Unicode line and paragraph separators, and the byte-order mark.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// `s` with every [unsafe](is_unsafe) character shown as `\uXXXX`;
/// borrowed when nothing needed escaping (the common case). Newlines are
/// escaped too: one field must not start a line of its own.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_where(s, is_unsafe)
}

/// [`escape`] for a whole output (a rendered table, a report, a message):
/// its own line breaks are kept.
pub fn escape_lines(s: &str) -> Cow<'_, str> {
    escape_where(s, |c| c != '\n' && is_unsafe(c))
}

fn escape_where(s: &str, unsafe_char: impl Fn(char) -> bool) -> Cow<'_, str> {
    let Some(first) = s.find(&unsafe_char) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        if unsafe_char(c) {
            // Every unsafe character is in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A CSV field that is safe to open in a spreadsheet: [escaped](escape),
/// and, when it would start with `=`, `+`, `-` or `@` (a formula in Excel,
/// LibreOffice and Google Sheets), prefixed with `'` so it stays text.
/// A plain number (`-12`, `+3.5`) is left alone: it is a number, not a
/// formula. Tabs and carriage returns, the other triggers, are escaped.
pub fn csv_cell(s: &str) -> Cow<'_, str> {
    let e = escape(s);
    let formula = e.starts_with(['=', '+', '-', '@']) && e.parse::<f64>().is_err();
    if formula {
        Cow::Owned(format!("'{e}"))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sequences_bidi_and_nul_are_shown_escaped() {
        let cases = [
            ("\u{1b}[31mred\u{1b}[0m", "\\u001b[31mred\\u001b[0m"),
            ("\u{1b}]0;owned\u{7}", "\\u001b]0;owned\\u0007"),
            ("a\u{0}b", "a\\u0000b"),
            ("\u{9b}2J", "\\u009b2J"),
            ("abc\u{202e}fed", "abc\\u202efed"),
            ("x\u{2066}y\u{2069}", "x\\u2066y\\u2069"),
            ("zero\u{200b}width", "zero\\u200bwidth"),
            ("tab\there", "tab\\u0009here"),
            ("line\nbreak\r", "line\\u000abreak\\u000d"),
            ("\u{7f}", "\\u007f"),
        ];
        for (raw, shown) in cases {
            assert_eq!(escape(raw), shown, "{raw:?}");
            assert!(!escape(raw).chars().any(is_unsafe));
        }
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for s in [
            "leakydrv.sys",
            "\\SystemRoot\\system32\\ntoskrnl.exe",
            "Überwachung – Treiber",
            "日本語のドライバー",
            "",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn whole_outputs_keep_their_line_breaks() {
        assert_eq!(
            escape_lines("Tag  Driver\nLeak evil\u{1b}[2J\n"),
            "Tag  Driver\nLeak evil\\u001b[2J\n"
        );
    }

    #[test]
    fn escaped_text_in_json_decodes_to_the_original() {
        let raw = "gpj.\u{202e}exe \u{9b} \u{200f}";
        let json = serde_json::to_string(raw).unwrap();
        let safe = escape_lines(&json);
        assert!(!safe.chars().any(is_unsafe));
        let back: String = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, raw);
    }

    #[test]
    fn csv_cells_do_not_start_formulas() {
        assert_eq!(csv_cell("=1+2"), "'=1+2");
        assert_eq!(csv_cell("+cmd|' /C calc'!A0"), "'+cmd|' /C calc'!A0");
        assert_eq!(csv_cell("-2+3"), "'-2+3");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("\t=1"), "\\u0009=1");
        assert_eq!(csv_cell("\r=1"), "\\u000d=1");
        assert_eq!(csv_cell("-12"), "-12");
        assert_eq!(csv_cell("+3.5"), "+3.5");
        assert_eq!(csv_cell("leakydrv.sys"), "leakydrv.sys");
        assert_eq!(csv_cell("a=b"), "a=b");
    }
}
