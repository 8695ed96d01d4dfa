//! pooldump: find Windows kernel pool leaks in crash dumps.
//!
//! One module per command; each returns its output as a string, so main
//! only parses arguments, writes output and reports errors.

mod analyze;
mod args;
mod batch;
mod callsites;
mod common;
mod contents;
mod find;
mod hittag;
mod info;
mod pool;
mod relabel;
mod relabel_rows;
mod render;
mod stack;
mod symbols;
// Leak hunting over time.
mod diff;
mod snapshot;
mod top;
mod trend;
mod watch;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const ABOUT: &str = "Find Windows kernel pool leaks in crash dumps and on live targets";

const LONG_ABOUT: &str = "\
pooldump finds Windows kernel pool leaks in crash dumps and on live targets
over KDNET. It reads a Windows x64 kernel dump (MEMORY.DMP: complete, kernel
or automatic, from Windows 7 to Windows 11, or WinDbg's RDMP), or a running
kernel as WinDbg's `-k net:` does, and works out the pool usage by tag, as
PoolMon and WinDbg's !poolused do, so a leaking driver stands out; then who
allocates the tag: the call sites in the drivers (callsites), PoolHitTag's
stacks on a live target (hittag), a fresh tag per site (relabel).

Start with `pooldump info MEMORY.DMP`: it shows what the dump is, which kernel
it holds (and the PDB that kernel needs), and the loaded drivers.";

#[derive(Debug, Parser)]
#[command(name = "pooldump", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Per-tag pool usage (PoolMon, !poolused) and the big-page table.
    Analyze(analyze::Args),
    /// Every instruction of the loaded drivers (or a driver file) that
    /// passes a tag to a pool routine; --patch writes a relabelled copy.
    Callsites(callsites::Args),
    /// Every allocation with the given tags (!poolfind), at memory
    /// bandwidth: address, size, pool, allocated or free, allocator.
    Find(find::Args),
    /// Show a dump's header, its kernel's identity and its loaded modules.
    Info(info::Args),
    /// The allocation holding an address and the others in its page
    /// (!pool ADDR), on every allocator: legacy pages, segment heap, big
    /// pages.
    Pool(pool::Args),
    /// The crashing thread's stack (kb) from the dump's CONTEXT, or from a
    /// CONTEXT record in memory (.cxr ADDR), with module!function names.
    Stack(stack::Args),
    /// Who allocates a tag: nt!PoolHitTag on a live target, each break's
    /// stack walked and its call site counted; PoolHitTag restored and the
    /// target resumed at the end.
    Hittag(hittag::Args),
    /// Give each allocation site of a tag its own tag on a live target (the
    /// driver's code edited in memory), for analyze/find --relabel; --undo
    /// puts the code back.
    Relabel(relabel::Args),
    /// Show the kernel's identity, where its symbols came from, and the
    /// layouts and globals the pool analysis uses.
    Symbols(symbols::Args),
    /// Save the per-tag pool table of a dump or live target as a snapshot
    /// (JSON) for diff and trend.
    Snapshot(snapshot::Args),
    /// Take snapshots of a live KDNET target periodically (PoolMon every
    /// half hour), resuming it in between.
    Watch(watch::Args),
    /// Compare two snapshots or dumps: per-tag changes, largest growth
    /// first.
    Diff(diff::Args),
    /// Rank tags by sustained growth over a series of snapshots, with an
    /// SVG chart.
    Trend(trend::Args),
    /// PoolMon in the terminal: a dump, a snapshot or a live target.
    Top(top::Args),
    /// Many dumps in parallel into tables (Parquet or NDJSON): one row per
    /// dump and tag, one per dump; resumable.
    Batch(batch::Args),
}

fn main() -> ExitCode {
    // A bug must not greet the user with a backtrace: say what happened.
    std::panic::set_hook(Box::new(|p| {
        eprintln!(
            "error: internal error (a bug in pooldump, please report it): {}",
            pooldump_core::text::escape_lines(&p.to_string())
        );
    }));
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::Callsites(args) => callsites::run(args),
        // Streams its (possibly huge) output itself.
        Command::Find(args) => find::run(args).map(|()| String::new()),
        Command::Info(args) => info::run(args),
        Command::Pool(args) => pool::run(args),
        Command::Stack(args) => stack::run(args),
        Command::Hittag(args) => hittag::run(args),
        Command::Relabel(args) => relabel::run(args),
        Command::Symbols(args) => symbols::run(args),
        Command::Snapshot(args) => snapshot::run(args),
        Command::Watch(args) => watch::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Trend(args) => trend::run(args),
        Command::Top(args) => top::run(args),
        Command::Batch(args) => batch::run(args),
    };
    match result.and_then(|out| write_stdout(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors quote inputs (names, lines of a file): the same rule
            // as the output.
            let safe = |s: &str| pooldump_core::text::escape_lines(s).into_owned();
            eprint!("{}", safe(&error_report(&e)));
            if let Some(note) = common::fallback_note() {
                eprintln!("{}", safe(note));
            }
            if e.downcast_ref::<common::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `error: ...` and one `caused by:` line per cause, leaving out a cause
/// the line before already says in full (an error whose message embeds
/// its source, as `thiserror`'s `"...: {0}"` with `#[from]` does).
fn error_report(e: &anyhow::Error) -> String {
    let mut out = format!("error: {e}\n");
    let mut last = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !last.contains(&text) {
            out.push_str(&format!("  caused by: {text}\n"));
        }
        last = text;
    }
    out
}

/// Write to stdout; a closed pipe (`pooldump info x | head`) is not an
/// error. Every output passes the one escaping rule on its way out
/// (`pooldump_core::text`): in text and CSV a control or bidi character
/// from a hostile input shows as `\uXXXX`, and in JSON, where serde has
/// already escaped the controls, the same `\uXXXX` is the same character.
fn write_stdout(s: &str) -> anyhow::Result<()> {
    let s = pooldump_core::text::escape_lines(s);
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
