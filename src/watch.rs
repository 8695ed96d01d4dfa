//! `pooldump watch --kdnet SPEC --interval 30m --out DIR`: the seeds'
//! half-hourly PoolMon screenshots, as snapshot files. The target is
//! stopped only while it is read and runs in between; `trend DIR` ranks
//! the tags afterwards (and a hint is printed as the series grows).
//!
//! Ctrl-C stops it: if a read is under way it finishes, the target is let
//! run, and the last snapshot is written before pooldump exits, so a
//! stopped watch never leaves the machine frozen in the debugger.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pooldump_core::snapshot::{self, Change, Snapshot, TrendOptions, Verdict};

use crate::args::ReadArgs;
use crate::snapshot::{LiveSource, SnapshotSource, human_bytes, signed};

/// Take snapshots of a live KDNET target periodically, resuming it in
/// between, until stopped (Ctrl-C) or --count is reached.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The target, with WinDbg's `-k net:` settings: `port=50000,key=a.b.c.d`.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub kdnet: String,
    /// Time between snapshots (`30m`, `1h`, `90s`).
    #[arg(long, default_value = "30m", value_parser = crate::common::parse_interval)]
    pub interval: Duration,
    /// Directory for the snapshots (`NNNN-<machine time>.json`); numbering
    /// continues after the files already there.
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    /// Stop after N snapshots.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// How many recent snapshots are kept in memory for the running hint.
const HINT_WINDOW: usize = 48;

pub fn run(args: &Args) -> Result<String> {
    if args.interval.is_zero() {
        bail!("--interval must be more than zero");
    }
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the directory", args.out.display()))?;
    let (tx, stop) = mpsc::channel::<()>();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    let db = args.read.pooltag_db()?;
    let mut source = LiveSource::connect(&args.kdnet, &args.read, db.as_ref())?;
    let mut seq = next_sequence(&args.out)?;
    let mut taken = 0u64;
    let mut failed = 0u64;
    let mut recent: Vec<Snapshot> = Vec::new();
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "watching {} every {}, snapshots in {} (Ctrl-C stops)",
        source.describe(),
        humantime::format_duration(args.interval),
        args.out.display()
    );
    loop {
        // Ctrl-C while connecting or while the last snapshot was written.
        if stop.try_recv().is_ok() {
            break;
        }
        let started = Instant::now();
        match source.take() {
            Ok(s) => {
                let path = args.out.join(file_name(seq, &s));
                crate::common::write_atomically(&path, s.to_json().as_bytes())?;
                let line = progress_line(seq, &s, recent.last(), &path);
                let _ = writeln!(out, "{}", pooldump_core::text::escape_lines(&line));
                seq += 1;
                taken += 1;
                recent.push(s);
                if recent.len() > HINT_WINDOW {
                    recent.remove(0);
                }
                if let Some(h) = hint(&recent) {
                    let _ = writeln!(out, "       {}", pooldump_core::text::escape_lines(&h));
                }
            }
            Err(e) => {
                failed += 1;
                let line = format!(
                    "[{seq:04}] snapshot failed: {e:#}; trying again in {}",
                    humantime::format_duration(args.interval)
                );
                let _ = writeln!(out, "{}", pooldump_core::text::escape_lines(&line));
            }
        }
        let _ = out.flush();
        if args.count.is_some_and(|n| taken >= n) {
            break;
        }
        let wait = args.interval.saturating_sub(started.elapsed());
        match stop.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    Ok(format!(
        "{taken} snapshot(s) written to {}{}; rank them with `pooldump trend {}`\n",
        args.out.display(),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        },
        args.out.display()
    ))
}

/// One past the largest `NNNN-` prefix in `dir`.
fn next_sequence(dir: &Path) -> Result<u64> {
    let mut next = 1;
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .split_once('-')
            .and_then(|(n, _)| n.parse::<u64>().ok())
        {
            next = next.max(n + 1);
        }
    }
    Ok(next)
}

/// `0003-20261102T103000Z.json`: sequence first so a listing is in time
/// order even if the machine's clock jumps; the machine's time (else the
/// host's) for people.
fn file_name(seq: u64, s: &Snapshot) -> String {
    let stamp = s
        .time
        .system_time
        .clone()
        .or_else(|| {
            s.time
                .taken_unix
                .and_then(|t| pooldump_core::dump::FileTime::from_unix_seconds(t).rfc3339())
        })
        .unwrap_or_default();
    // Only digits, T and Z survive: the name is safe whatever the clock
    // says.
    let stamp: String = stamp
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T' || *c == 'Z')
        .collect();
    if stamp.is_empty() {
        format!("{seq:04}.json")
    } else {
        format!("{seq:04}-{stamp}.json")
    }
}

fn progress_line(seq: u64, s: &Snapshot, prev: Option<&Snapshot>, path: &Path) -> String {
    let delta = |f: fn(&Snapshot) -> u64| {
        prev.map(|p| format!(" ({})", signed(Change::new(f(p), f(s)).delta)))
            .unwrap_or_default()
    };
    format!(
        "[{seq:04}] {} up {}  Pool N: {}{} P: {}{} bytes  {} tags -> {}",
        s.time.system_time.as_deref().unwrap_or("?"),
        s.time.uptime.as_deref().unwrap_or("?"),
        s.totals.nonpaged.bytes,
        delta(|x| x.totals.nonpaged.bytes),
        s.totals.paged.bytes,
        delta(|x| x.totals.paged.bytes),
        s.totals.tags,
        path.display()
    )
}

/// The steadiest grower so far, once there are three snapshots.
fn hint(recent: &[Snapshot]) -> Option<String> {
    if recent.len() < 3 {
        return None;
    }
    let t = snapshot::trend(recent, &TrendOptions::default());
    let top = t.tags.first()?;
    (top.verdict == Verdict::SteadyGrowth).then(|| {
        format!(
            "steadiest grower so far: {} ({}) {}/h, grew in {} of {} intervals",
            top.tag.trim_end(),
            top.pool.poolmon(),
            human_bytes(top.bytes_per_hour),
            top.grew,
            top.intervals
        )
    })
}
