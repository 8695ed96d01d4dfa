//! Building blocks shared by the commands' output: aligned key/value
//! sections, column tables ([`Table`], or [`ListTable`] built from a list),
//! the closing warning and note lists, and the `--json` and CSV writers.
//! Nothing here knows about dumps.
//!
//! Every key, value and cell goes through [`pooldump_core::text::escape`]
//! as it is added, so a hostile string (a pooltag.txt description, a
//! module name) is shown escaped and the columns are aligned on what is
//! shown. `main` escapes whole outputs again on their way out (the same
//! rule, so text escaped here is left alone); a command that streams its
//! output instead (`find`) writes through [`EscapingWriter`].

use std::fmt::{Display, Write as _};

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

    /// One row a `(name, value)`: a run of addresses, as WinDbg names
    /// them.
    pub fn rows(&mut self, rows: &[(&str, &dyn Display)]) -> &mut Self {
        for (k, v) in rows {
            self.row(*k, v.to_string());
        }
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

/// A report as the commands' `--json` prints it: pretty, with a final
/// newline.
pub fn json<T: serde::Serialize + ?Sized>(report: &T) -> serde_json::Result<String> {
    let mut s = serde_json::to_string_pretty(report)?;
    s.push('\n');
    Ok(s)
}

/// A command's output: the report as JSON when `as_json`, else its text.
pub fn json_or_text<T: serde::Serialize>(
    as_json: bool,
    report: &T,
    text: impl FnOnce(&T) -> String,
) -> serde_json::Result<String> {
    if as_json {
        json(report)
    } else {
        Ok(text(report))
    }
}

/// `heading` and one `  - item` line per item, or nothing when there are
/// no items: the warnings and notes that close a report.
pub fn push_list<I>(out: &mut String, heading: &str, items: I)
where
    I: IntoIterator,
    I::Item: Display,
{
    let mut items = items.into_iter().peekable();
    if items.peek().is_none() {
        return;
    }
    out.push_str(heading);
    for item in items {
        let _ = writeln!(out, "  - {item}");
    }
}

/// The width of a hand-formatted column: its widest cell (in bytes), and
/// at least `at_least` (the header's width).
pub fn widest<'a>(cells: impl IntoIterator<Item = &'a str>, at_least: usize) -> usize {
    cells.into_iter().map(str::len).fold(at_least, usize::max)
}

/// A number as the reports write addresses, sizes and offsets: `0x1f`.
pub fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// `s` escaped by the one rule, without a copy when it is clean.
fn safe(s: String) -> String {
    match pooldump_core::text::escape(&s) {
        std::borrow::Cow::Borrowed(_) => s,
        std::borrow::Cow::Owned(e) => e,
    }
}

/// With `--csv` the output is for a program: what a person must still be
/// told (warnings, notes) goes to stderr, one line each, escaped, as
/// `pooldump: warning: ...` (`kind` is `warning` or `note`).
pub fn tell_on_stderr<S: AsRef<str>>(kind: &str, messages: impl IntoIterator<Item = S>) {
    for m in messages {
        eprintln!(
            "pooldump: {kind}: {}",
            pooldump_core::text::escape_lines(m.as_ref())
        );
    }
}

/// Write one CSV record, every field made safe for a spreadsheet by
/// [`pooldump_core::text::csv_cell`] (escaped, and no field starts a
/// formula). Every CSV the commands write goes through here.
pub fn csv_record<W, I, S>(w: &mut csv::Writer<W>, fields: I) -> csv::Result<()>
where
    W: std::io::Write,
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    w.write_record(
        fields
            .into_iter()
            .map(|f| pooldump_core::text::csv_cell(f.as_ref()).into_owned()),
    )
}

/// Write a CSV table through [`csv_record`]: the header, then a record per
/// row.
pub fn csv_table<W, H, R>(
    w: &mut csv::Writer<W>,
    header: H,
    rows: impl IntoIterator<Item = R>,
) -> csv::Result<()>
where
    W: std::io::Write,
    H: IntoIterator,
    H::Item: AsRef<str>,
    R: IntoIterator,
    R::Item: AsRef<str>,
{
    csv_record(w, header)?;
    rows.into_iter().try_for_each(|row| csv_record(w, row))
}

/// A writer that applies [`pooldump_core::text::escape_lines`] to
/// everything written through it, for output streamed to stdout rather
/// than returned to `main` as one string. Writes may split a UTF-8
/// sequence; its first bytes wait for the rest (at most three bytes are
/// held). Bytes that are not UTF-8 at all pass through as they are: the
/// renderers write only `str`s, so there are none.
pub struct EscapingWriter<W: std::io::Write> {
    inner: W,
    /// The start of a UTF-8 sequence the last write cut.
    pending: Vec<u8>,
}

impl<W: std::io::Write> EscapingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
        }
    }

    /// Write `buf` escaped up to a UTF-8 sequence cut at its end, and
    /// return how many bytes were written (the rest is that cut sequence,
    /// at most three bytes).
    fn emit(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut at = 0;
        loop {
            let (ok, next) = match std::str::from_utf8(&buf[at..]) {
                Ok(_) => (buf.len() - at, None),
                Err(e) => (e.valid_up_to(), Some(e.error_len())),
            };
            let text = std::str::from_utf8(&buf[at..at + ok]).unwrap_or_default();
            self.inner
                .write_all(pooldump_core::text::escape_lines(text).as_bytes())?;
            at += ok;
            match next {
                None | Some(None) => return Ok(at),
                // Not UTF-8: passed on unchanged.
                Some(Some(bad)) => {
                    self.inner.write_all(&buf[at..at + bad])?;
                    at += bad;
                }
            }
        }
    }
}

impl<W: std::io::Write> std::io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut i = 0;
        // Complete a sequence the last write cut, a byte at a time.
        while !self.pending.is_empty() && i < buf.len() {
            self.pending.push(buf[i]);
            i += 1;
            let pending = std::mem::take(&mut self.pending);
            let used = self.emit(&pending)?;
            self.pending = pending[used..].to_vec();
        }
        let used = self.emit(&buf[i..])?;
        self.pending.extend_from_slice(&buf[i + used..]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // A sequence that was never completed goes out as it is.
        let pending = std::mem::take(&mut self.pending);
        self.inner.write_all(&pending)?;
        self.inner.flush()
    }
}

/// Column alignment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// PoolMon's counter columns, in its order.
pub const POOLMON_COLUMNS: [(&str, Align); 7] = [
    ("Tag", Align::Left),
    ("Type", Align::Left),
    ("Allocs", Align::Right),
    ("Frees", Align::Right),
    ("Diff", Align::Right),
    ("Bytes", Align::Right),
    ("Per Alloc", Align::Right),
];

/// A table of `before`, PoolMon's columns, then `after`.
pub fn poolmon_table(before: &[(&'static str, Align)], after: &[(&'static str, Align)]) -> Table {
    let columns: Vec<_> = [before, &POOLMON_COLUMNS[..], after].concat();
    Table::new(&columns)
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
        let row: Vec<String> = row.into_iter().map(safe).collect();
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

/// A [`Table`] of one row per item of a list, each column given as its
/// header, its alignment and how an item shows in it, side by side:
///
/// ```ignore
/// ListTable::new(&modules)
///     .left("Name", |m| &m.name)
///     .right("Size", |m| hex(m.size))
///     .render(&mut out, 2);
/// ```
pub struct ListTable<'a, T> {
    items: Vec<&'a T>,
    columns: Vec<(&'static str, Align)>,
    cells: Vec<Cell<'a, T>>,
}

/// How an item of a [`ListTable`] shows in one column.
type Cell<'a, T> = Box<dyn Fn(&'a T) -> String + 'a>;

impl<'a, T> ListTable<'a, T> {
    pub fn new(items: impl IntoIterator<Item = &'a T>) -> Self {
        Self {
            items: items.into_iter().collect(),
            columns: Vec::new(),
            cells: Vec::new(),
        }
    }

    /// A left-aligned column.
    pub fn left<D: Display>(self, name: &'static str, cell: impl Fn(&'a T) -> D + 'a) -> Self {
        self.column(name, Align::Left, cell)
    }

    /// A right-aligned column.
    pub fn right<D: Display>(self, name: &'static str, cell: impl Fn(&'a T) -> D + 'a) -> Self {
        self.column(name, Align::Right, cell)
    }

    fn column<D: Display>(
        mut self,
        name: &'static str,
        align: Align,
        cell: impl Fn(&'a T) -> D + 'a,
    ) -> Self {
        self.columns.push((name, align));
        self.cells
            .push(Box::new(move |item| cell(item).to_string()));
        self
    }

    /// The table, its rows in the list's order.
    pub fn render(&self, out: &mut String, indent: usize) {
        let mut t = Table::new(&self.columns);
        for &item in &self.items {
            t.push(self.cells.iter().map(|cell| cell(item)).collect());
        }
        t.render(out, indent);
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

        let modules = [(0x2000, "ntoskrnl.exe"), (0x80000, "hal.dll")];
        let mut s = String::new();
        ListTable::new(&modules)
            .right("Size", |m| format!("{:#x}", m.0))
            .left("Name", |m| m.1)
            .render(&mut s, 2);
        assert_eq!(
            s,
            "     Size  Name\n   0x2000  ntoskrnl.exe\n  0x80000  hal.dll\n"
        );
    }

    #[test]
    fn lists_close_a_report_only_when_they_hold_something() {
        let mut s = String::new();
        push_list(&mut s, "\nWarnings\n", ["one", "two"]);
        push_list(&mut s, "\nNotes\n", Vec::<String>::new());
        assert_eq!(s, "\nWarnings\n  - one\n  - two\n");
        assert_eq!(widest(["Leak", "nt!Ex+0x10"], 4), 10);
        assert_eq!(widest([], 9), 9);
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
            "Name           Bytes\nev\\u001b[2Jil      1\nok                22\n"
        );
        let mut s = String::new();
        Section::new("Module")
            .row("Name", "gpj.\u{202e}exe.sys")
            .render(&mut s);
        assert_eq!(s, "Module\n  Name  gpj.\\u202eexe.sys\n");
    }

    #[test]
    fn a_stream_is_escaped_wherever_its_writes_cut_it() {
        use std::io::Write;
        let text = "é \u{202e}x\u{1b}[2J\n\u{1F600}ok\u{85}";
        let want = pooldump_core::text::escape_lines(text).into_owned();
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            for cut2 in cut..=bytes.len() {
                let mut w = EscapingWriter::new(Vec::new());
                w.write_all(&bytes[..cut]).unwrap();
                w.write_all(&bytes[cut..cut2]).unwrap();
                w.write_all(&bytes[cut2..]).unwrap();
                w.flush().unwrap();
                assert_eq!(
                    String::from_utf8(w.inner).unwrap(),
                    want,
                    "cut at {cut}, {cut2}"
                );
            }
        }
        // Bytes that are not UTF-8 pass through unchanged.
        let mut w = EscapingWriter::new(Vec::new());
        w.write_all(b"a\xff\x1b").unwrap();
        w.flush().unwrap();
        assert_eq!(w.inner, b"a\xff\\u001b");
    }
}
