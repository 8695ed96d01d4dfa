//! pooldump-kit: write synthetic Windows crash dumps with their symbol
//! store and ground truth, or serve a running synthetic machine as a KDNET
//! target (`serve`), so pooldump's live commands can be tried anywhere.

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
        /// win10-18362, win10-19041, win10-19041-public, server2022-20348, win11-22000,
        /// win11-22000-318).
        #[arg(long, default_value = "win10-19041", value_parser = parse_build)]
        build: NtBuild,
        /// A scenario JSON file (default: the small built-in scenario).
        #[arg(long)]
        scenario: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Override the scenario's processor count.
        #[arg(long)]
        cpus: Option<u32>,
        /// kernel-bitmap (DumpType 5 'SDMP', what a BSOD writes: about 4 MiB),
        /// bitmap-kernel (DumpType 6 'SDMP', as recent Windows 10 and 11
        /// write it), summary (DumpType 2, Windows 7's kernel memory dump),
        /// full (DumpType 1: every page of the machine's RAM, 2 GiB for the
        /// default scenario), complete-bitmap (DumpType 5 'FDMP', as large)
        /// or small (DumpType 4, a small
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
    Big(BigArgs),
    /// Regenerate the bundled sample (testdata/sample/) the README uses.
    Sample {
        /// Output directory.
        #[arg(long, short, default_value = "testdata/sample")]
        out: PathBuf,
    },
    /// Write a series of dumps of one machine over time, with a planted
    /// steady leak, a one-off burst and noisy tags (for snapshot/diff/trend),
    /// one symbol store, and series.json (the truth of every step).
    Series(SeriesArgs),
    /// Write a fleet: machines over every build, each a series of dumps of
    /// one boot, with a leak on most machines (Leak), a faster one on one
    /// machine only (Lone), corrupt files, one symbol store and fleet.json
    /// (for `pooldump batch`).
    Fleet {
        #[arg(long, default_value_t = 20)]
        machines: usize,
        /// Dumps per machine.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        #[arg(long, default_value_t = 17)]
        seed: u64,
        /// Corrupt files to add.
        #[arg(long, default_value_t = 5)]
        corrupt: usize,
        /// Pad each dump with this much bulk pool (e.g. 56M for 64 MiB dumps).
        #[arg(long)]
        bulk: Option<String>,
        /// Output directory.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Crash a machine for real and write what Windows leaves behind: its
    /// processor runs leakydrv's LkTouch with a bad pointer, the page fault
    /// goes through nt!KiPageFault to a bug check (0x50 for an unmapped
    /// system address, 0x7E for NULL), and DIR gets MEMORY.DMP (with the
    /// registers at KeBugCheckEx), Mini.dmp (a small memory dump of the same
    /// crash), symbols/ (PDBs and image files, as a symbol store holds
    /// them) and crash-truth.json (the stack the CPU built).
    Crash {
        /// Build to impersonate (`pooldump-kit builds` lists them).
        #[arg(long, default_value = "win10-19041", value_parser = parse_build)]
        build: NtBuild,
        #[arg(long, default_value_t = 12)]
        seed: u64,
        /// `unmapped` (bug check 0x50) or `null` (0x7E, with the
        /// exception's CONTEXT record in parameter 4).
        #[arg(long, default_value = "unmapped")]
        pointer: String,
        /// Output directory.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// List the builds the kit can impersonate.
    Builds,
    /// Run a synthetic Windows machine as a KDNET debugging target on this
    /// computer: it offers itself to the debugger at 127.0.0.1:PORT every
    /// 3 s, as `bcdedit /dbgsettings net hostip:127.0.0.1 port:PORT
    /// key:KEY` configures Windows, and runs a workload of driver work
    /// items while resumed (a leaking driver among them). Its symbols (PDBs
    /// and image files) are written to --symbols for pooldump's
    /// --symbol-path. Ctrl-C stops it.
    Serve(ServeArgs),
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

/// `--kind`'s value parser (the kinds `generate`, `series` and `big` write
/// alike; `generate` also takes `small`).
fn parse_kind(s: &str) -> Result<DumpKind, String> {
    match s {
        "kernel-bitmap" => Ok(DumpKind::KernelBitmap),
        "bitmap-kernel" => Ok(DumpKind::BitmapKernel),
        "summary" => Ok(DumpKind::Summary),
        "full" => Ok(DumpKind::Full),
        "complete-bitmap" => Ok(DumpKind::CompleteBitmap),
        _ => Err(format!(
            "unknown dump kind {s:?} (kernel-bitmap, bitmap-kernel, summary, full, complete-bitmap)"
        )),
    }
}

/// `--build`'s value parser.
fn parse_build(name: &str) -> Result<NtBuild, String> {
    NtBuild::from_name(name)
        .ok_or_else(|| format!("unknown build {name:?} (`pooldump-kit builds` lists them)"))
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Serve(a) => serve(&a),
        Cmd::Builds => {
            list_builds();
            Ok(())
        }
        Cmd::Series(a) => write_series(&a),
        Cmd::Fleet {
            machines,
            steps,
            seed,
            corrupt,
            bulk,
            out,
        } => {
            let mut spec = pooldump_kit::fleet::FleetSpec::new(machines.max(1), steps, seed);
            spec.corrupt = corrupt;
            spec.bulk_bytes = bulk.as_deref().map(parse_size).transpose()?;
            write_fleet(&spec, machines, &out)
        }
        Cmd::Crash {
            build,
            seed,
            pointer,
            out,
        } => {
            let context = match pointer.as_str() {
                "unmapped" => 0xFFFF_8000_0000_1000,
                "null" => 0,
                other => return Err(format!("--pointer {other:?}: use unmapped or null")),
            };
            write_crash(&Scenario::small(build, seed), context, &out)
        }
        Cmd::Sample { out } => write_all(
            &pooldump_kit::scenario::sample(),
            DumpKind::KernelBitmap,
            &out,
        ),
        Cmd::Big(a) => write_big(&a),
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
            let mut s = load_scenario(scenario.as_deref(), build, seed)?;
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

/// Print the builds the kit impersonates: name, build string and the
/// kernel PDB's symbol-store key.
fn list_builds() {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for b in NtBuild::ALL {
        let m = b.manifest();
        // A closed pipe (`| head`) ends the listing quietly.
        if writeln!(
            out,
            "{:<20} {:<18} {}",
            b.name(),
            m.build_string,
            m.pdb.store_key
        )
        .is_err()
        {
            break;
        }
    }
}

/// Write a fleet of `machines` machines with fleet.json.
fn write_fleet(
    spec: &pooldump_kit::fleet::FleetSpec,
    machines: usize,
    out: &Path,
) -> Result<(), String> {
    let w = pooldump_kit::fleet::write_fleet(spec, out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "wrote {} dumps of {} machines, {} corrupt files, symbols/ and {} to {}",
        w.truth.dumps.len(),
        machines,
        w.truth.corrupt.len(),
        w.truth_file.display(),
        out.display()
    );
    Ok(())
}

/// The scenario to generate: the JSON file if one is given, else the
/// built-in small scenario of `build` and `seed`.
fn load_scenario(file: Option<&Path>, build: NtBuild, seed: u64) -> Result<Scenario, String> {
    match file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str::<Scenario>(&text).map_err(|e| format!("{}: {e}", p.display()))
        }
        None => Ok(Scenario::small(build, seed)),
    }
}

/// What a dump-writing command writes: which build, which kind of dump,
/// and where.
#[derive(clap::Args)]
struct DumpArgs {
    /// Build to impersonate (`pooldump-kit builds` lists them).
    #[arg(long, default_value = "win10-19041", value_parser = parse_build)]
    build: NtBuild,
    /// kernel-bitmap, bitmap-kernel, summary, full or complete-bitmap.
    #[arg(long, default_value = "kernel-bitmap", value_parser = parse_kind)]
    kind: DumpKind,
    /// Output directory.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct SeriesArgs {
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Snapshots in the series.
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Seconds between snapshots.
    #[arg(long, default_value_t = 1800)]
    interval: u64,
    #[command(flatten)]
    dump: DumpArgs,
}

/// Write a series of one machine's dumps with series.json.
fn write_series(a: &SeriesArgs) -> Result<(), String> {
    let DumpArgs { build: b, kind, .. } = a.dump;
    let mut spec = pooldump_kit::series::SeriesSpec::new(b, a.seed);
    spec.steps = a.steps.max(2);
    spec.interval_secs = a.interval;
    let out = &a.dump.out;
    let w = pooldump_kit::series::Series::new(&spec)
        .write(out, kind)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "wrote {} dumps, symbols/ and {} to {}",
        w.dumps.len(),
        w.truth_file.display(),
        out.display()
    );
    Ok(())
}

#[derive(clap::Args)]
struct BigArgs {
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
    #[command(flatten)]
    dump: DumpArgs,
}

/// Write a benchmark-sized dump, its pool generated as it is written.
fn write_big(a: &BigArgs) -> Result<(), String> {
    let DumpArgs { build: b, kind, .. } = a.dump;
    let bytes = parse_size(&a.size)?;
    let mut s = Scenario::small(b, a.seed);
    s.cpus = a.cpus;
    s.ram_mib = bytes / (1 << 20) + 1024;
    s.big_pool.table_size = 1 << 16;
    s.bulk = Some(pooldump_kit::bulk::BulkSpec {
        bytes,
        tags: a.tags,
        big_live: a.big,
        big_freed: a.big / 8,
    });
    write_all(&s, kind, &a.dump.out)
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

/// Crash the machine with LkTouch writing through `context` and write the
/// dumps, the symbol store with images, and the CPU's stack.
fn write_crash(s: &Scenario, context: u64, out: &Path) -> Result<(), String> {
    let mut m = Machine::build(s);
    let bc = m
        .crash_with(pooldump_kit::run::WorkItem::touch(context), 10_000_000_000)
        .ok_or("LkTouch ran without a bug check")?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let io = |e: std::io::Error| format!("{}: {e}", out.display());
    m.write_dump_file(DumpKind::KernelBitmap, &out.join("MEMORY.DMP"))
        .map_err(io)?;
    let (mini, _) = m.small_dump(&pooldump_kit::triage::SmallDumpOptions::default());
    std::fs::write(out.join("Mini.dmp"), &mini).map_err(io)?;
    let symbols = out.join("symbols");
    m.write_symbol_store(&symbols).map_err(io)?;
    m.write_image_files(&symbols).map_err(io)?;
    let tj = serde_json::to_string_pretty(&bc).map_err(|e| e.to_string())?;
    std::fs::write(out.join("crash-truth.json"), tj).map_err(io)?;
    eprintln!(
        "bug check {:#x} on {}; wrote MEMORY.DMP, Mini.dmp ({} bytes), symbols/ and crash-truth.json to {}",
        bc.code,
        s.build,
        mini.len(),
        out.display()
    );
    Ok(())
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

#[derive(clap::Args)]
struct ServeArgs {
    /// WinDbg's `-k net:` settings the debugger will use:
    /// `port=50000,key=1.2.3.4` (the target offers to 127.0.0.1:port).
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    kdnet: String,
    /// Build to impersonate (`pooldump-kit builds` lists them).
    #[arg(long, default_value = "win10-19041", value_parser = parse_build)]
    build: NtBuild,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// `leak` (the default: leakydrv leaks, other drivers are
    /// balanced), `network` (also an NDIS miniport, with ndis.sys loaded),
    /// `kmdf` (also a KMDF driver and its framework, Wdf01000.sys), `idle`
    /// (nothing runs), or a workload JSON file.
    #[arg(long, default_value = "leak")]
    workload: String,
    /// Simulated seconds per real second while the target runs.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Seconds between offers (Windows: 3).
    #[arg(long, default_value_t = 3.0)]
    offer_interval: f64,
    /// Drop, duplicate and reorder this fraction of datagrams (0-1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Where to write the machine's symbol store.
    #[arg(long, default_value = "pooldump-demo-symbols")]
    symbols: PathBuf,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
}

fn serve(a: &ServeArgs) -> Result<(), String> {
    use pooldump_kdnet_sim::{Faults, SimConfig, SimTarget};
    let spec: pooldump_kdnet::KdnetSpec = a
        .kdnet
        .parse()
        .map_err(|e| format!("--kdnet {}: {e}", a.kdnet))?;
    let b = a.build;
    let workload = parse_workload(&a.workload)?;
    if !(0.0..=1.0).contains(&a.loss) {
        return Err(format!("--loss {}: a fraction from 0 to 1", a.loss));
    }
    if !(a.speed > 0.0 && a.speed <= 1e6) {
        return Err(format!("--speed {}: from above 0 to 1000000", a.speed));
    }
    let mut s = Scenario::small(b, a.seed);
    s.cpus = a.cpus.clamp(1, 64);
    // The named workloads that run the network or KMDF pair load it.
    s.ndis = a.workload == "network";
    s.kmdf = a.workload == "kmdf";
    let m = Machine::build(&s);
    m.write_symbol_store(&a.symbols)
        .and_then(|_| m.write_image_files(&a.symbols))
        .map_err(|e| format!("--symbols {}: {e}", a.symbols.display()))?;
    let host = std::net::SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        spec.port,
    );
    let mut cfg = SimConfig::new(spec.key.clone(), host);
    cfg.workload = Some(workload);
    cfg.speed = a.speed;
    cfg.offer_interval = std::time::Duration::from_secs_f64(a.offer_interval.clamp(0.05, 60.0));
    cfg.faults = Faults::lossy(a.loss);
    cfg.lifetime = std::time::Duration::from_secs(a.seconds.unwrap_or(365 * 24 * 3600));
    let sim = SimTarget::spawn(m, cfg).map_err(|e| format!("starting the target: {e}"))?;
    eprintln!(
        "A simulated {} target ({} processors) runs on {}, offering itself to the debugger at {host} every {} s.",
        b.name(),
        s.cpus,
        sim.local_addr(),
        a.offer_interval
    );
    eprintln!(
        "Its symbols are in {}. Try, in another terminal:\n  pooldump hittag --kdnet port={},key={} --tag Leak --symbol-path {}\nCtrl-C stops the target.",
        a.symbols.display(),
        spec.port,
        a.kdnet
            .split("key=")
            .nth(1)
            .and_then(|k| k.split(',').next())
            .unwrap_or("KEY"),
        a.symbols.display()
    );
    wait_for_stop(a.seconds)?;
    let st = sim.stats();
    let end = sim.finish();
    let ran = end
        .as_ref()
        .and_then(|e| e.runtime.as_ref())
        .map(|rt| rt.clock_ns() / 1_000_000_000)
        .unwrap_or(0);
    eprintln!(
        "Stopped after {ran} simulated seconds: {} debugger sessions, {} stops, {} requests.",
        st.handshakes, st.stops, st.requests_executed
    );
    Ok(())
}

/// `--workload`: `leak`, `network`, `kmdf`, `idle` or a workload JSON file.
fn parse_workload(arg: &str) -> Result<pooldump_kdnet_sim::Workload, String> {
    use pooldump_kdnet_sim::Workload;
    Ok(match arg {
        "leak" => Workload::leak(),
        "network" => Workload::network(),
        "kmdf" => Workload::kmdf(),
        "idle" => Workload::idle(),
        path => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("--workload {path}: {e}"))?;
            serde_json::from_str(&text).map_err(|e| format!("--workload {path}: {e}"))?
        }
    })
}

/// Block until Ctrl-C, or until `seconds` have passed if given.
fn wait_for_stop(seconds: Option<u64>) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| format!("installing the Ctrl-C handler: {e}"))?;
    let until = seconds.map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    loop {
        if rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_ok()
        {
            return Ok(());
        }
        if until.is_some_and(|u| std::time::Instant::now() >= u) {
            return Ok(());
        }
    }
}
