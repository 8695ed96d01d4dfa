//! Plain-text building blocks shared by the commands' text output: aligned
//! key/value sections and column tables. Nothing here knows about dumps.

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
        self.rows.push((key.into(), value.into()));
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

/// Column alignment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table's columns and their widths, for writing rows one at a time
/// (tables too long to hold, such as `find`'s allocations): measure every
/// row first, then write. The last column is never padded.
#[derive(Clone)]
pub struct Columns {
    columns: Vec<(&'static str, Align)>,
    widths: Vec<usize>,
}

impl Columns {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            widths: columns.iter().map(|c| c.0.chars().count()).collect(),
        }
    }

    /// Widen the columns to fit `row`.
    pub fn measure<S: AsRef<str>>(&mut self, row: &[S]) {
        for (w, cell) in self.widths.iter_mut().zip(row) {
            *w = (*w).max(cell.as_ref().chars().count());
        }
    }

    /// Widen the columns to fit what `other` measured (rows measured in
    /// parallel meet here).
    pub fn merge(&mut self, other: &Columns) {
        for (w, o) in self.widths.iter_mut().zip(&other.widths) {
            *w = (*w).max(*o);
        }
    }

    fn line<S: AsRef<str>>(&self, row: &[S], indent: usize) -> String {
        let mut line = String::new();
        self.push_line(&mut line, row, indent);
        line
    }

    /// Append `row` as one line to `out`.
    pub fn push_line<S: AsRef<str>>(&self, out: &mut String, row: &[S], indent: usize) {
        let n = self.columns.len();
        let start = out.len();
        out.extend(std::iter::repeat_n(' ', indent));
        for (i, cell) in row.iter().enumerate().take(n) {
            let cell = cell.as_ref();
            match (self.columns[i].1, i + 1 == n) {
                (Align::Left, true) => out.push_str(cell),
                (Align::Left, false) => {
                    let _ = write!(out, "{cell:<w$}  ", w = self.widths[i]);
                }
                (Align::Right, _) => {
                    let _ = write!(out, "{cell:>w$}  ", w = self.widths[i]);
                }
            }
        }
        let end = start + out[start..].trim_end().len();
        out.truncate(end);
        out.push('\n');
    }

    pub fn write_header(&self, out: &mut dyn std::io::Write, indent: usize) -> std::io::Result<()> {
        let names: Vec<&str> = self.columns.iter().map(|c| c.0).collect();
        out.write_all(self.line(&names, indent).as_bytes())
    }
}

/// A table with a header row; the last column is never padded.
pub struct Table {
    columns: Columns,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: Columns::new(columns),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.columns.measure(&row);
        self.rows.push(row);
    }

    pub fn render(&self, out: &mut String, indent: usize) {
        let names: Vec<&str> = self.columns.columns.iter().map(|c| c.0).collect();
        out.push_str(&self.columns.line(&names, indent));
        for row in &self.rows {
            out.push_str(&self.columns.line(row, indent));
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
}
