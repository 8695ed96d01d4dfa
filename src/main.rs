//! pooldump: find Windows kernel pool leaks in crash dumps.
//!
//! One module per command; each returns its output as a string, so main
//! only parses arguments, writes output and reports errors.

mod analyze;
mod common;
mod info;
mod render;
mod symbols;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const ABOUT: &str = "Find Windows kernel pool leaks in crash dumps";

const LONG_ABOUT: &str = "\
pooldump finds Windows kernel pool leaks in crash dumps. It reads a Windows x64
kernel dump (MEMORY.DMP: full, kernel or automatic bitmap, or RDMP) and works
out the kernel's pool usage by tag, as PoolMon and WinDbg's !poolused do, so a
leaking driver stands out without a debugger session.

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
    /// Show a dump's header, its kernel's identity and its loaded modules.
    Info(info::Args),
    /// Show the kernel's identity, where its symbols came from, and the
    /// layouts and globals the pool analysis uses.
    Symbols(symbols::Args),
}

fn main() -> ExitCode {
    // A bug must not greet the user with a backtrace: say what happened.
    std::panic::set_hook(Box::new(|p| {
        eprintln!("error: internal error (a bug in pooldump, please report it): {p}");
    }));
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::Info(args) => info::run(args),
        Command::Symbols(args) => symbols::run(args),
    };
    match result.and_then(|out| write_stdout(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Write to stdout; a closed pipe (`pooldump info x | head`) is not an
/// error.
fn write_stdout(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
