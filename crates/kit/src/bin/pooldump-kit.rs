//! pooldump-kit: write synthetic Windows crash dumps with their symbol
//! store and ground truth.

use std::path::{Path, PathBuf};
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
        /// kernel-bitmap (DumpType 5 'SDMP', what a BSOD writes), full (DumpType 1),
        /// complete-bitmap (DumpType 5 'FDMP') or small (DumpType 4, a small
        /// memory dump as in C:\Windows\Minidump: writes Minidump.dmp and
        /// small-truth.json).
        #[arg(long, default_value = "kernel-bitmap")]
        kind: String,
        /// Output directory.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Write a benchmark-sized dump: gigabytes of pool with millions of
    /// allocations, thousands of tags and tens of thousands of big-pool
    /// entries, generated as it is written (memory use stays small).
    Big {
        #[arg(long, default_value = "win10-19041")]
        build: String,
        /// Pool size, e.g. 1G, 4G, 16G (the machine's RAM is this plus 1 GiB).
        #[arg(long, default_value = "1G")]
        size: String,
        /// Distinct tags.
        #[arg(long, default_value_t = 3000)]
        tags: u32,
        /// Live big-pool allocations.
        #[arg(long, default_value_t = 70_000)]
        big: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 8)]
        cpus: u32,
        #[arg(long, default_value = "kernel-bitmap")]
        kind: String,
        /// Output directory.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Regenerate the bundled sample (testdata/sample/) the README uses.
    Sample {
        /// Output directory.
        #[arg(long, short, default_value = "testdata/sample")]
        out: PathBuf,
    },
    /// Write a series of dumps of one machine over time, with a planted
    /// steady leak, a one-off burst and noisy tags (for snapshot/diff/trend),
    /// one symbol store, and series.json (the truth of every step).
    Series {
        #[arg(long, default_value = "win10-19041")]
        build: String,
        #[arg(long, default_value_t = 11)]
        seed: u64,
        /// Snapshots in the series.
        #[arg(long, default_value_t = 8)]
        steps: usize,
        /// Seconds between snapshots.
        #[arg(long, default_value_t = 1800)]
        interval: u64,
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
        Cmd::Series {
            build,
            seed,
            steps,
            interval,
            kind,
            out,
        } => {
            let kind = parse_kind(&kind)?;
            let b = NtBuild::from_name(&build).ok_or_else(|| format!("unknown build {build:?}"))?;
            let mut spec = pooldump_kit::series::SeriesSpec::new(b, seed);
            spec.steps = steps.max(2);
            spec.interval_secs = interval;
            let w = pooldump_kit::series::Series::new(&spec)
                .write(&out, kind)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            eprintln!(
                "wrote {} dumps, symbols/ and {} to {}",
                w.dumps.len(),
                w.truth_file.display(),
                out.display()
            );
            Ok(())
        }
        Cmd::Sample { out } => write_all(
            &pooldump_kit::scenario::sample(),
            DumpKind::KernelBitmap,
            &out,
        ),
        Cmd::Big {
            build,
            size,
            tags,
            big,
            seed,
            cpus,
            kind,
            out,
        } => {
            let kind = parse_kind(&kind)?;
            let b = NtBuild::from_name(&build).ok_or_else(|| format!("unknown build {build:?}"))?;
            let bytes = parse_size(&size)?;
            let mut s = Scenario::small(b, seed);
            s.cpus = cpus;
            s.ram_mib = bytes / (1 << 20) + 1024;
            s.big_pool.table_size = 1 << 16;
            s.bulk = Some(pooldump_kit::bulk::BulkSpec {
                bytes,
                tags,
                big_live: big,
                big_freed: big / 8,
            });
            write_all(&s, kind, &out)
        }
        Cmd::Generate {
            build,
            scenario,
            seed,
            cpus,
            kind,
            out,
        } => {
            let small = kind == "small";
            let kind = if small {
                DumpKind::KernelBitmap
            } else {
                parse_kind(&kind)?
            };
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
            if small {
                return write_small(&s, &out);
            }
            write_all(&s, kind, &out)
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.chars().last() {
        Some('G' | 'g') => (&s[..s.len() - 1], 1u64 << 30),
        Some('M' | 'm') => (&s[..s.len() - 1], 1u64 << 20),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mul)
        .map_err(|_| format!("bad size {s:?} (e.g. 512M, 4G)"))
}

/// Build the machine and write a small memory dump of it (Minidump.dmp),
/// small-truth.json and symbols/ into `out`.
fn write_small(s: &Scenario, out: &Path) -> Result<(), String> {
    let m = Machine::build(s);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let io = |e: std::io::Error| format!("{}: {e}", out.display());
    let (bytes, truth) = m.small_dump(&pooldump_kit::triage::SmallDumpOptions::default());
    std::fs::write(out.join("Minidump.dmp"), &bytes).map_err(io)?;
    m.write_symbol_store(&out.join("symbols")).map_err(io)?;
    let tj = serde_json::to_string_pretty(&truth).map_err(|e| e.to_string())?;
    std::fs::write(out.join("small-truth.json"), tj).map_err(io)?;
    eprintln!(
        "wrote Minidump.dmp ({} bytes, {}), small-truth.json and symbols/ to {}",
        bytes.len(),
        s.build,
        out.display()
    );
    Ok(())
}

/// Build the machine and write MEMORY.DMP, symbols/, truth.json and
/// scenario.json into `out`.
fn write_all(s: &Scenario, kind: DumpKind, out: &Path) -> Result<(), String> {
    let t = std::time::Instant::now();
    let m = Machine::build(s);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let io = |e: std::io::Error| format!("{}: {e}", out.display());
    let size = m
        .write_dump_file(kind, &out.join("MEMORY.DMP"))
        .map_err(io)?;
    m.write_symbol_store(&out.join("symbols")).map_err(io)?;
    std::fs::write(out.join("truth.json"), m.truth.to_json()).map_err(io)?;
    let sj = serde_json::to_string_pretty(s).map_err(|e| e.to_string())?;
    std::fs::write(out.join("scenario.json"), sj).map_err(io)?;
    eprintln!(
        "wrote MEMORY.DMP ({size} bytes, {}), truth.json, scenario.json and symbols/ to {} in {:.1?}",
        s.build,
        out.display(),
        t.elapsed()
    );
    Ok(())
}
