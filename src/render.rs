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
        self.rows.push(row);
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
}
