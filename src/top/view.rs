//! The state behind `top`'s screen: the rows of the current snapshot with
//! their changes, PoolMon's keys, and drawing.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use pooldump_core::pool::PoolClass;
use pooldump_core::snapshot::{Change, RowKey, Snapshot};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use super::{Args, Flow, TopSort};
use crate::args::{FilterArgs, PoolChoice};
use crate::snapshot::signed;

/// One screen row.
#[derive(Debug, Clone)]
struct Row {
    key: RowKey,
    tag: String,
    pool: PoolClass,
    allocs: Change,
    frees: Change,
    diff: Change,
    bytes: Change,
    per_alloc: u64,
    driver: String,
}

impl Row {
    fn changed(&self) -> bool {
        self.allocs.delta != 0 || self.frees.delta != 0 || self.bytes.delta != 0
    }
}

/// The state behind the screen.
pub(super) struct View {
    current: Snapshot,
    previous: Option<Snapshot>,
    filter: FilterArgs,
    pool: PoolChoice,
    sort: TopSort,
    reverse: bool,
    by_change: bool,
    totals: bool,
    offset: usize,
    /// Rows the last frame had room for (PgUp/PgDn step).
    page: usize,
    source: String,
    pub(super) live: bool,
    refreshes: u64,
    pub(super) status: String,
    /// `--once`: no key help; the status goes in the header.
    batch: bool,
}

impl View {
    pub(super) fn new(
        current: Snapshot,
        previous: Option<Snapshot>,
        args: &Args,
        source: String,
        live: bool,
    ) -> Self {
        let status = match (&previous, live) {
            (_, true) => "live: the change columns are since the last refresh".into(),
            (Some(p), false) => format!(
                "static; changes since {}",
                pooldump_core::text::escape(&p.label())
            ),
            (None, false) => {
                "static view of one moment; --since SNAPSHOT fills the change columns".into()
            }
        };
        Self {
            current,
            previous,
            filter: args.filter.clone(),
            pool: args.filter.pool,
            sort: args.sort,
            reverse: false,
            by_change: false,
            totals: args.totals,
            offset: 0,
            page: 20,
            source: pooldump_core::text::escape(&source).into_owned(),
            live,
            refreshes: 0,
            status,
            batch: args.once,
        }
    }

    pub(super) fn refresh(&mut self, s: Snapshot) {
        self.previous = Some(std::mem::replace(&mut self.current, s));
        self.refreshes += 1;
        self.status = format!(
            "live: refresh {} at {}; changes since the one before",
            self.refreshes,
            self.current.time.system_time.as_deref().unwrap_or("?")
        );
    }

    pub(super) fn key(&mut self, k: KeyEvent) -> Flow {
        let sort = |v: &mut View, s: TopSort| {
            if v.sort == s {
                v.reverse = !v.reverse;
            } else {
                v.sort = s;
                v.reverse = false;
            }
            v.offset = 0;
        };
        match k.code {
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                return Flow::Quit;
            }
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => return Flow::Quit,
            KeyCode::Char('p' | 'P') => {
                // PoolMon: once for nonpaged, twice for paged, thrice for both.
                self.pool = match self.pool {
                    PoolChoice::Both => PoolChoice::Nonpaged,
                    PoolChoice::Nonpaged => PoolChoice::Paged,
                    PoolChoice::Paged => PoolChoice::Both,
                };
                self.offset = 0;
            }
            KeyCode::Char('b' | 'B') => sort(self, TopSort::Bytes),
            KeyCode::Char('m' | 'M') => sort(self, TopSort::PerAlloc),
            KeyCode::Char('t' | 'T') => sort(self, TopSort::Tag),
            KeyCode::Char('a' | 'A') => sort(self, TopSort::Allocs),
            KeyCode::Char('f' | 'F') => sort(self, TopSort::Frees),
            KeyCode::Char('s' | 'S' | 'd' | 'D') => sort(self, TopSort::Diff),
            KeyCode::Char('(' | ')') => {
                self.by_change = !self.by_change;
                self.offset = 0;
            }
            KeyCode::Char('e' | 'E') => self.totals = !self.totals,
            KeyCode::Down | KeyCode::Char('j') => self.offset += 1,
            KeyCode::Up | KeyCode::Char('k') => self.offset = self.offset.saturating_sub(1),
            KeyCode::PageDown | KeyCode::Char(' ') => self.offset += self.page.max(1),
            KeyCode::PageUp => self.offset = self.offset.saturating_sub(self.page.max(1)),
            KeyCode::Home => self.offset = 0,
            KeyCode::End => self.offset = usize::MAX,
            _ => {}
        }
        Flow::Continue
    }

    fn rows(&self) -> Vec<Row> {
        let prev = |k: RowKey| self.previous.as_ref().and_then(|p| p.row(k));
        let mut rows: Vec<Row> = self
            .current
            .rows
            .iter()
            .filter(|r| self.pool.class().is_none_or(|p| p == r.pool))
            .filter(|r| {
                let f = FilterArgs {
                    pool: PoolChoice::Both,
                    ..self.filter.clone()
                };
                f.keeps(r.tag, r.pool)
            })
            .map(|r| {
                let p = prev(r.key());
                let c = |f: fn(&pooldump_core::snapshot::SnapshotRow) -> u64| {
                    // No earlier row: the tag was idle then, or there is no
                    // earlier snapshot at all (no change to show).
                    let before = match (&self.previous, p) {
                        (Some(_), Some(p)) => f(p),
                        (Some(_), None) => 0,
                        (None, _) => f(r),
                    };
                    Change::new(before, f(r))
                };
                Row {
                    key: r.key(),
                    tag: pooldump_core::text::escape(&r.tag_text).into_owned(),
                    pool: r.pool,
                    allocs: c(|x| x.allocs),
                    frees: c(|x| x.frees),
                    diff: c(|x| x.diff),
                    bytes: c(|x| x.bytes),
                    per_alloc: r.per_alloc(),
                    driver: pooldump_core::text::escape(r.driver.as_deref().unwrap_or_default())
                        .into_owned(),
                }
            })
            .collect();
        let tag_key = |r: &Row| (r.key.tag.bytes(), r.pool, r.key.overflow);
        let value = |r: &Row| -> i128 {
            let c = match self.sort {
                TopSort::Tag => return 0,
                TopSort::Allocs => r.allocs,
                TopSort::Frees => r.frees,
                TopSort::Diff => r.diff,
                TopSort::Bytes => r.bytes,
                TopSort::PerAlloc => {
                    return i128::from(r.per_alloc);
                }
            };
            if self.by_change {
                c.delta.into()
            } else {
                c.after.into()
            }
        };
        rows.sort_by(|a, b| value(b).cmp(&value(a)).then(tag_key(a).cmp(&tag_key(b))));
        if self.reverse {
            rows.reverse();
        }
        rows
    }

    /// The two header lines, in PoolMon's manner.
    fn header(&self) -> [String; 2] {
        let s = &self.current;
        let k = |b: u64| b / 1024;
        let memory = s
            .kernel
            .physical_pages
            .map(|p| format!("Memory: {}K  ", p.saturating_mul(4)))
            .unwrap_or_default();
        let l1 = format!(
            " {memory}Build: {}  CPUs: {}  Up: {}  Time: {}",
            s.kernel.build,
            s.kernel.processors,
            s.time.uptime.as_deref().unwrap_or("?"),
            s.time.system_time.as_deref().unwrap_or("?"),
        );
        let change = |f: fn(&Snapshot) -> u64| match &self.previous {
            Some(p) => format!(" ({})", signed(Change::new(k(f(p)), k(f(s))).delta)),
            None => String::new(),
        };
        let l2 = format!(
            " Pool N: {}K{} P: {}K{}  Tags: {}  Source: {}{}",
            k(s.totals.nonpaged.bytes),
            change(|x| x.totals.nonpaged.bytes),
            k(s.totals.paged.bytes),
            change(|x| x.totals.paged.bytes),
            s.totals.tags,
            self.source,
            if self.live { " (live)" } else { "" },
        );
        [l1, l2]
    }

    /// Column header, rule and rows as text, columns sized to the data.
    fn table(&self, rows: &[Row]) -> (String, Vec<String>, Vec<String>) {
        let w = |f: &dyn Fn(&Row) -> String, min: usize| {
            rows.iter()
                .map(|r| f(r).chars().count())
                .max()
                .unwrap_or(0)
                .max(min)
        };
        let tw = w(&|r| r.tag.clone(), if self.totals { 5 } else { 4 });
        let aw = w(&|r| r.allocs.after.to_string(), 6);
        let adw = w(&|r| signed(r.allocs.delta), 3);
        let fw = w(&|r| r.frees.after.to_string(), 6);
        let fdw = w(&|r| signed(r.frees.delta), 3);
        let dw = w(&|r| r.diff.after.to_string(), 5);
        let bw = w(&|r| r.bytes.after.to_string(), 7);
        let bdw = w(&|r| signed(r.bytes.delta), 3);
        let pw = 9;
        let fmt = |tag: &str, ty: &str, a: &Change, f: &Change, d: u64, b: &Change, pa: u64| {
            format!(
                " {tag:<tw$} {ty:<5} {:>aw$} ({:>adw$}) {:>fw$} ({:>fdw$}) {d:>dw$} {:>bw$} ({:>bdw$}) {pa:>pw$}",
                a.after,
                signed(a.delta),
                f.after,
                signed(f.delta),
                b.after,
                signed(b.delta),
            )
        };
        let head = format!(
            " {:<tw$} {:<5} {:>aw$} {:adw$}   {:>fw$} {:fdw$}   {:>dw$} {:>bw$} {:bdw$}   {:>pw$}  Mapped_Driver",
            "Tag", "Type", "Allocs", "", "Frees", "", "Diff", "Bytes", "", "Per Alloc"
        );
        let lines: Vec<String> = rows
            .iter()
            .map(|r| {
                let mut l = fmt(
                    &r.tag,
                    r.pool.poolmon(),
                    &r.allocs,
                    &r.frees,
                    r.diff.after,
                    &r.bytes,
                    r.per_alloc,
                );
                if !r.driver.is_empty() {
                    l.push_str("  ");
                    l.push_str(&r.driver);
                }
                l
            })
            .collect();
        let totals: Vec<String> = [PoolClass::NonPaged, PoolClass::Paged]
            .into_iter()
            .filter(|c| self.pool.class().is_none_or(|p| p == *c))
            .map(|c| {
                let pick = |s: &Snapshot| match c {
                    PoolClass::NonPaged => s.totals.nonpaged,
                    PoolClass::Paged => s.totals.paged,
                };
                let now = pick(&self.current);
                let before = self.previous.as_ref().map(pick).unwrap_or(now);
                fmt(
                    "TOTAL",
                    c.poolmon(),
                    &Change::new(before.allocs, now.allocs),
                    &Change::new(before.frees, now.frees),
                    now.diff,
                    &Change::new(before.bytes, now.bytes),
                    now.bytes.checked_div(now.diff).unwrap_or(0),
                )
            })
            .collect();
        (head, lines, totals)
    }

    fn status_line(&self) -> String {
        format!(
            " Sort: {}{}{}  Pool: {} | P pool  B/M/T/A/F/S sort  ( change  E totals  Q quit | {}",
            super::sort_name(self.sort),
            if self.by_change { " change" } else { "" },
            if self.reverse { " (reversed)" } else { "" },
            match self.pool {
                PoolChoice::Both => "both",
                PoolChoice::Nonpaged => "nonpaged",
                PoolChoice::Paged => "paged",
            },
            self.status
        )
    }

    pub(super) fn render(&mut self, f: &mut ratatui::Frame) {
        let rows = self.rows();
        let (head, lines, totals) = self.table(&rows);
        let totals_h = if self.totals {
            totals.len() as u16 + 1
        } else {
            0
        };
        let [header, body, bottom, footer] = Layout::vertical([
            Constraint::Length(5),
            Constraint::Min(1),
            Constraint::Length(totals_h),
            Constraint::Length(u16::from(!self.batch)),
        ])
        .areas(f.area());
        let [l1, l2] = self.header();
        let rule = "-".repeat(head.chars().count().min(header.width as usize));
        let bold = Style::default().add_modifier(Modifier::BOLD);
        f.render_widget(
            Paragraph::new(vec![
                Line::raw(l1),
                Line::raw(l2),
                Line::raw(if self.batch {
                    format!(" ({})", self.status)
                } else {
                    String::new()
                }),
                Line::styled(head, bold),
                Line::raw(rule.clone()),
            ]),
            header,
        );
        self.page = body.height as usize;
        let max_offset = lines.len().saturating_sub(self.page);
        self.offset = self.offset.min(max_offset);
        let changed = Style::default()
            .fg(Color::Yellow)
            .add_modifier(Modifier::BOLD);
        let body_lines: Vec<Line> = lines
            .iter()
            .zip(&rows)
            .skip(self.offset)
            .take(self.page)
            .map(|(l, r)| {
                if r.changed() {
                    Line::styled(l.clone(), changed)
                } else {
                    Line::raw(l.clone())
                }
            })
            .collect();
        f.render_widget(Paragraph::new(body_lines), body);
        if self.totals {
            let mut t = vec![Line::raw(rule)];
            t.extend(totals.into_iter().map(|l| Line::styled(l, bold)));
            f.render_widget(Paragraph::new(t), bottom);
        }
        f.render_widget(
            Paragraph::new(Line::styled(
                self.status_line(),
                Style::default().add_modifier(Modifier::REVERSED),
            )),
            footer,
        );
    }

    /// Every row at once, as text (`--once`).
    pub(super) fn text(&mut self, width: u16) -> String {
        let rows = self.rows().len() as u16;
        let height = 5 + rows.max(1) + if self.totals { 3 } else { 0 };
        render_text(self, width, height)
    }
}

/// Draw the view into an off-screen buffer and return its text, trailing
/// blanks trimmed.
pub(super) fn render_text(view: &mut View, width: u16, height: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(width, height)).expect("an off-screen terminal");
    t.draw(|f| view.render(f)).expect("drawing off-screen");
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        for x in 0..buf.area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
