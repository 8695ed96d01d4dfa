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
use crossterm::event::{self, Event, KeyEventKind};
use ratatui::Terminal;
use ratatui::backend::Backend;

use crate::args::{FilterArgs, ReadArgs};
use crate::snapshot::{LiveArgs, LiveSource, SnapshotSource, load, open_file};

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

/// PoolMon's sort keys: its columns.
pub use pooldump_core::pool::PoolMonColumn as TopSort;

/// A sort key as the status line names it.
fn sort_name(s: TopSort) -> &'static str {
    match s {
        TopSort::Tag => "tag",
        TopSort::Allocs => "allocs",
        TopSort::Frees => "frees",
        TopSort::Diff => "diff",
        TopSort::Bytes => "bytes",
        TopSort::PerAlloc => "per alloc",
    }
}

fn parse_sort(s: &str) -> Result<TopSort, String> {
    TopSort::parse(s).ok_or_else(|| crate::common::unknown_sort(s, ""))
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

mod view;

use view::View;
