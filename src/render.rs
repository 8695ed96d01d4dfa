//! Plain-text building blocks shared by the commands' text output: aligned
//! key/value sections and column tables. Nothing here knows about dumps.
//!
//! Every key, value and cell goes through [`pooldump_core::text::escape`]
//! as it is added, so a hostile string (a pooltag.txt description, a
//! module name) is shown escaped and the columns are aligned on what is
//! shown. `main` escapes whole outputs again on their way out (the same
//! rule, so text escaped here is left alone).

use std::fmt::Write as _;

/// A titled list of `key  value` lines with the values aligned.
pub struct Section {
    title: String,
    rows: Vec<(String, String)>,
}

impl Section {
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.rows.push((safe(key.into()), safe(value.into())));
        self
    }

    pub fn render(&self, out: &mut String) {
        let w = self
            .rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let _ = writeln!(out, "{}", self.title);
        for (k, v) in &self.rows {
            let _ = writeln!(out, "  {k:<w$}  {v}");
        }
    }
}

/// `s` escaped by the one rule, without a copy when it is clean.
fn safe(s: String) -> String {
    match pooldump_core::text::escape(&s) {
        std::borrow::Cow::Borrowed(_) => s,
        std::borrow::Cow::Owned(e) => e,
    }
}

/// Write one CSV record, every field made safe for a spreadsheet by
/// [`pooldump_core::text::csv_cell`] (escaped, and no field starts a
/// formula). Every CSV the commands write goes through here.
pub fn csv_record<I, S>(w: &mut csv::Writer<Vec<u8>>, fields: I) -> csv::Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    w.write_record(
        fields
            .into_iter()
            .map(|f| pooldump_core::text::csv_cell(f.as_ref()).into_owned()),
    )
}

/// Column alignment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table with a header row; the last column is never padded.
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row.into_iter().map(safe).collect());
    }

    pub fn render(&self, out: &mut String, indent: usize) {
        let n = self.columns.len();
        let widths: Vec<usize> = (0..n)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .chain([self.columns[i].0.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let header: Vec<String> = self.columns.iter().map(|c| c.0.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = " ".repeat(indent);
            for (i, cell) in row.iter().enumerate().take(n) {
                let last = i + 1 == n;
                match (self.columns[i].1, last) {
                    (Align::Left, true) => line.push_str(cell),
                    (Align::Left, false) => {
                        let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
                    }
                    (Align::Right, _) => {
                        let _ = write!(line, "{cell:>w$}  ", w = widths[i]);
                    }
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_sections_and_tables() {
        let mut s = String::new();
        Section::new("Dump")
            .row("Type", "full")
            .row("Processors", "2")
            .render(&mut s);
        assert_eq!(s, "Dump\n  Type        full\n  Processors  2\n");

        let mut t = Table::new(&[("Size", Align::Right), ("Name", Align::Left)]);
        t.push(vec!["0x2000".into(), "ntoskrnl.exe".into()]);
        t.push(vec!["0x80000".into(), "hal.dll".into()]);
        let mut s = String::new();
        t.render(&mut s, 2);
        assert_eq!(
            s,
            "     Size  Name\n   0x2000  ntoskrnl.exe\n  0x80000  hal.dll\n"
        );
    }

    #[test]
    fn hostile_cells_are_escaped_and_aligned_as_shown() {
        let mut t = Table::new(&[("Name", Align::Left), ("Bytes", Align::Right)]);
        t.push(vec!["ev\u{1b}[2Jil".into(), "1".into()]);
        t.push(vec!["ok".into(), "22".into()]);
        let mut s = String::new();
        t.render(&mut s, 0);
        assert_eq!(
            s,
            "Name             Bytes\nev\\u001b[2Jil      1\nok                  22\n"
        );
        let mut s = String::new();
        Section::new("Module")
            .row("Name", "gpj.\u{202e}exe.sys")
            .render(&mut s);
        assert_eq!(s, "Module\n  Name  gpj.\\u202eexe.sys\n");
    }
}
