//! pooldump-kit: write synthetic Windows crash dumps with their symbol
//! store and ground truth.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};

#[derive(Parser)]
#[command(
    version,
    about = "Write synthetic Windows kernel crash dumps for pooldump's tests and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write MEMORY.DMP, truth.json, scenario.json and symbols/ into a directory.
    Generate {
        /// Build to impersonate (win7-7601, win81-9600, win10-14393, win10-17763,
        /// win10-18362, win10-19041, win10-19041-public, server2022-20348, win11-22000).
        #[arg(long, default_value = "win10-19041")]
        build: String,
        /// A scenario JSON file (default: the small built-in scenario).
        #[arg(long)]
        scenario: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Override the scenario's processor count.
        #[arg(long)]
        cpus: Option<u32>,
        /// kernel-bitmap (DumpType 5 'SDMP', what a BSOD writes), full (DumpType 1)
        /// or complete-bitmap (DumpType 5 'FDMP').
        #[arg(long, default_value = "kernel-bitmap")]
        kind: String,
        /// Output directory.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// List the builds the kit can impersonate.
    Builds,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_kind(s: &str) -> Result<DumpKind, String> {
    match s {
        "kernel-bitmap" => Ok(DumpKind::KernelBitmap),
        "full" => Ok(DumpKind::Full),
        "complete-bitmap" => Ok(DumpKind::CompleteBitmap),
        _ => Err(format!(
            "unknown dump kind {s:?} (kernel-bitmap, full, complete-bitmap)"
        )),
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Builds => {
            for b in NtBuild::ALL {
                let m = b.manifest();
                println!(
                    "{:<20} {:<18} {}",
                    b.name(),
                    m.build_string,
                    m.pdb.store_key
                );
            }
            Ok(())
        }
        Cmd::Generate {
            build,
            scenario,
            seed,
            cpus,
            kind,
            out,
        } => {
            let kind = parse_kind(&kind)?;
            let mut s = match scenario {
                Some(p) => {
                    let text =
                        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                    serde_json::from_str::<Scenario>(&text)
                        .map_err(|e| format!("{}: {e}", p.display()))?
                }
                None => {
                    let b = NtBuild::from_name(&build)
                        .ok_or_else(|| format!("unknown build {build:?}"))?;
                    Scenario::small(b, seed)
                }
            };
            if let Some(c) = cpus {
                s.cpus = c;
            }
            let m = Machine::build(&s);
            std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            let io = |e: std::io::Error| e.to_string();
            let size = m
                .write_dump_file(kind, &out.join("MEMORY.DMP"))
                .map_err(io)?;
            m.write_symbol_store(&out.join("symbols")).map_err(io)?;
            std::fs::write(out.join("truth.json"), m.truth.to_json()).map_err(io)?;
            let sj = serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?;
            std::fs::write(out.join("scenario.json"), sj).map_err(io)?;
            eprintln!(
                "wrote {} ({size} bytes, {}), truth.json, scenario.json and symbols/ to {}",
                "MEMORY.DMP",
                s.build,
                out.display()
            );
            Ok(())
        }
    }
}
