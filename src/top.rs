//! `pooldump top SOURCE`: PoolMon's screen in a terminal (ratatui over
//! crossterm). The header lines, the Tag / Type / Allocs ( ) / Frees ( ) /
//! Diff / Bytes ( ) / Per Alloc / Mapped_Driver columns with the change
//! since the last refresh in parentheses, and PoolMon's keys:
//!
//! | key | does |
//! |---|---|
//! | P | nonpaged only, then paged only, then both (PoolMon's order) |
//! | B M T A F S | sort by bytes, per alloc, tag, allocs, frees, diff; again reverses |
//! | ( or ) | sort by the change of the sort column instead of its value |
//! | E | totals across the bottom |
//! | arrows, PgUp/PgDn, Home/End | scroll |
//! | Q, Esc, Ctrl-C | quit |
//!
//! On a dump or a snapshot file the view is static (its changes are
//! against `--since`, if given); on a live KDNET target it refreshes every
//! `--interval`, stopping the target only while it is read.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use pooldump_core::pool::PoolClass;
use pooldump_core::snapshot::{Change, RowKey, Snapshot};
use ratatui::Terminal;
use ratatui::backend::{Backend, TestBackend};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use crate::analyze::PoolChoice;
use crate::snapshot::{
    FilterArgs, LiveArgs, LiveSource, ReadArgs, SnapshotSource, load, open_file, signed,
};

/// An interactive PoolMon view of a dump, a snapshot or a live target.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A crash dump or a snapshot (JSON).
    #[arg(
        value_name = "SOURCE",
        required_unless_present = "kdnet",
        conflicts_with = "kdnet"
    )]
    pub source: Option<PathBuf>,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// An earlier snapshot or dump: the change columns compare with it (a
    /// live view compares each refresh with the one before).
    #[arg(long, value_name = "SNAPSHOT")]
    pub since: Option<PathBuf>,
    /// First sort: tag (PoolMon's default), allocs, frees, diff, bytes,
    /// per-alloc (T A F S B M).
    #[arg(short, long, default_value = "tag", value_parser = parse_sort)]
    pub sort: TopSort,
    /// Start with the totals lines shown (PoolMon's E).
    #[arg(short = 'e', long)]
    pub totals: bool,
    /// Time between refreshes of a live target.
    #[arg(long, default_value = "5s", value_parser = crate::common::parse_interval)]
    pub interval: Duration,
    /// Print the whole table once as text and exit (like PoolMon's /n
    /// log); no terminal needed.
    #[arg(long)]
    pub once: bool,
}

/// PoolMon's sort keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopSort {
    Tag,
    Allocs,
    Frees,
    Diff,
    Bytes,
    PerAlloc,
}

impl TopSort {
    fn name(self) -> &'static str {
        match self {
            TopSort::Tag => "tag",
            TopSort::Allocs => "allocs",
            TopSort::Frees => "frees",
            TopSort::Diff => "diff",
            TopSort::Bytes => "bytes",
            TopSort::PerAlloc => "per alloc",
        }
    }
}

fn parse_sort(s: &str) -> Result<TopSort, String> {
    use pooldump_core::pool::PoolMonColumn as C;
    Ok(
        match C::parse(s).ok_or_else(|| crate::common::unknown_sort(s, ""))? {
            C::Tag => TopSort::Tag,
            C::Allocs => TopSort::Allocs,
            C::Frees => TopSort::Frees,
            C::Diff => TopSort::Diff,
            C::Bytes => TopSort::Bytes,
            C::PerAlloc => TopSort::PerAlloc,
        },
    )
}

pub fn run(args: &Args) -> Result<String> {
    let db = args.read.pooltag_db()?;
    let mut source: Box<dyn SnapshotSource + '_> = match (&args.source, &args.live.kdnet) {
        (_, Some(spec)) => Box::new(LiveSource::connect(spec, &args.read, db.as_ref())?),
        (Some(p), None) => open_file(p, &args.read, db.as_ref())?,
        (None, None) => bail!("name a SOURCE or --kdnet SPEC"),
    };
    let current = source.take()?;
    let previous = match &args.since {
        Some(p) => Some(load(p, &args.read, db.as_ref())?),
        None => None,
    };
    let mut view = View::new(current, previous, args, source.describe(), source.is_live());
    if args.once {
        return Ok(view.text(132));
    }
    if !std::io::stdout().is_terminal() {
        bail!("top needs a terminal; --once prints the table as text");
    }
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let r = event_loop(&mut terminal, &mut view, source.as_mut(), args.interval);
    ratatui::restore();
    r?;
    Ok(String::new())
}

fn event_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    view: &mut View,
    source: &mut dyn SnapshotSource,
    interval: Duration,
) -> Result<()>
where
    B::Error: Send + Sync + 'static,
{
    let mut next = Instant::now() + interval;
    loop {
        terminal.draw(|f| view.render(f))?;
        let timeout = if view.live {
            next.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3600)
        };
        if event::poll(timeout)?
            && let Event::Key(k) = event::read()?
            && k.kind != KeyEventKind::Release
            && view.key(k) == Flow::Quit
        {
            return Ok(());
        }
        if view.live && Instant::now() >= next {
            view.status = "refreshing: the target is stopped while it is read".into();
            terminal.draw(|f| view.render(f))?;
            match source.take() {
                Ok(s) => view.refresh(s),
                Err(e) => view.status = format!("refresh failed: {e:#}"),
            }
            next = Instant::now() + interval;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

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
struct View {
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
    live: bool,
    refreshes: u64,
    status: String,
    /// `--once`: no key help; the status goes in the header.
    batch: bool,
}

impl View {
    fn new(
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

    fn refresh(&mut self, s: Snapshot) {
        self.previous = Some(std::mem::replace(&mut self.current, s));
        self.refreshes += 1;
        self.status = format!(
            "live: refresh {} at {}; changes since the one before",
            self.refreshes,
            self.current.time.system_time.as_deref().unwrap_or("?")
        );
    }

    fn key(&mut self, k: KeyEvent) -> Flow {
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
            self.sort.name(),
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

    fn render(&mut self, f: &mut ratatui::Frame) {
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
    fn text(&mut self, width: u16) -> String {
        let rows = self.rows().len() as u16;
        let height = 5 + rows.max(1) + if self.totals { 3 } else { 0 };
        render_text(self, width, height)
    }
}

/// Draw the view into an off-screen buffer and return its text, trailing
/// blanks trimmed.
fn render_text(view: &mut View, width: u16, height: u16) -> String {
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
mod tests {
    use super::*;
    use pooldump_core::PoolTag;
    use pooldump_core::snapshot::{
        KernelInfo, SCHEMA, SnapshotRow, SnapshotTotals, SourceInfo, SourceKind, TimeInfo,
    };

    fn snap(rows: &[(&str, PoolClass, u64, u64, u64)]) -> Snapshot {
        Snapshot {
            schema: SCHEMA.into(),
            source: SourceInfo {
                kind: SourceKind::Dump,
                name: "t".into(),
            },
            kernel: KernelInfo {
                build: 19041,
                kern_base: pooldump_core::KernelVa(0xFFFF_F800_0000_0000),
                pdb: None,
                processors: 1,
                physical_pages: Some(1024),
            },
            time: TimeInfo::default(),
            totals: SnapshotTotals::default(),
            rows: rows
                .iter()
                .map(|&(t, pool, allocs, frees, bytes)| SnapshotRow {
                    tag_text: PoolTag::parse(t).unwrap().to_string(),
                    tag: PoolTag::parse(t).unwrap(),
                    pool,
                    allocs,
                    frees,
                    diff: allocs - frees,
                    bytes,
                    overflow: false,
                    driver: None,
                })
                .collect(),
            warnings: vec![],
            diff_only: false,
        }
    }

    fn view(cur: Snapshot, prev: Option<Snapshot>) -> View {
        let args = Args {
            source: None,
            live: LiveArgs { kdnet: None },
            read: ReadArgs {
                symbols: crate::common::SymbolArgs {
                    symbol_path: None,
                    pdb: None,
                    isf: vec![],
                    offline: true,
                    no_builtin: false,
                    no_cache: true,
                },
                pooltag: None,
                no_image_search: true,
            },
            filter: FilterArgs {
                pool: PoolChoice::Both,
                include: vec![],
                exclude: vec![],
            },
            since: None,
            sort: TopSort::Tag,
            totals: false,
            interval: Duration::from_secs(5),
            once: true,
        };
        View::new(cur, prev, &args, "t".into(), false)
    }

    fn press(v: &mut View, c: char) {
        v.key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }

    fn tags(v: &View) -> Vec<String> {
        v.rows()
            .iter()
            .map(|r| r.tag.trim_end().to_string())
            .collect()
    }

    #[test]
    fn poolmon_keys_sort_filter_and_quit() {
        const NP: PoolClass = PoolClass::NonPaged;
        const P: PoolClass = PoolClass::Paged;
        let before = snap(&[("Aaaa", NP, 10, 5, 500), ("Bbbb", P, 100, 1, 99)]);
        let after = snap(&[
            ("Aaaa", NP, 12, 5, 700),
            ("Bbbb", P, 100, 1, 99),
            ("Cccc", NP, 1, 0, 5000),
        ]);
        let mut v = view(after, Some(before));
        assert_eq!(tags(&v), ["Aaaa", "Bbbb", "Cccc"]);
        press(&mut v, 'b');
        assert_eq!(tags(&v), ["Cccc", "Aaaa", "Bbbb"]);
        press(&mut v, 'b');
        assert_eq!(tags(&v), ["Bbbb", "Aaaa", "Cccc"]);
        press(&mut v, 'a');
        assert_eq!(tags(&v), ["Bbbb", "Aaaa", "Cccc"]);
        press(&mut v, '(');
        assert_eq!(tags(&v), ["Aaaa", "Cccc", "Bbbb"]);
        press(&mut v, 'p');
        assert_eq!(tags(&v), ["Aaaa", "Cccc"]);
        press(&mut v, 'p');
        assert_eq!(tags(&v), ["Bbbb"]);
        press(&mut v, 'p');
        assert_eq!(tags(&v).len(), 3);
        let text = v.text(120);
        // PoolMon's change columns: Aaaa gained 2 allocs and 200 bytes.
        let a = text.lines().find(|l| l.contains("Aaaa")).unwrap();
        let mut squeezed = a.split_whitespace().collect::<Vec<_>>().join(" ");
        while squeezed.contains("( ") {
            squeezed = squeezed.replace("( ", "(");
        }
        assert!(squeezed.contains("12 (+2) 5 (0) 7 700 (+200) 100"), "{a}");
        assert!(text.contains("Mapped_Driver") && text.contains("Memory: 4096K"));
        assert_eq!(
            v.key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE)),
            Flow::Quit
        );
    }

    #[test]
    fn totals_toggle_and_scrolling_stay_in_bounds() {
        let rows: Vec<(String, PoolClass, u64, u64, u64)> = (0..200)
            .map(|i| (format!("T{i:03}"), PoolClass::Paged, 10, 1, i))
            .collect();
        let r: Vec<(&str, PoolClass, u64, u64, u64)> = rows
            .iter()
            .map(|(t, p, a, f, b)| (t.as_str(), *p, *a, *f, *b))
            .collect();
        let mut v = view(snap(&r), None);
        for _ in 0..500 {
            v.key(KeyEvent::new(KeyCode::PageDown, KeyModifiers::NONE));
        }
        let screen = render_text(&mut v, 100, 30);
        assert!(screen.contains("T199"), "{screen}");
        press(&mut v, 'e');
        let screen = render_text(&mut v, 100, 30);
        assert!(screen.contains("TOTAL"));
        v.key(KeyEvent::new(KeyCode::Home, KeyModifiers::NONE));
        let screen = render_text(&mut v, 100, 30);
        assert!(screen.contains("T000") && !screen.contains("T199"));
    }
}
