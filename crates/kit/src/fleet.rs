//! A fleet of machines, each watched over time: what a stress lab or a
//! crash-telemetry pipeline holds, for `pooldump batch` and its queries.
//!
//! Machine `i` runs build `builds[i % builds.len()]` and is a [`Series`]
//! (one boot, `steps` dumps half an hour apart) with its own seed and boot
//! time. Planted, and recorded in [`FleetTruth`]:
//! - a **fleet-wide leaker**: the series' steady leak (`Leak`, leakydrv.sys)
//!   grows on every machine but the `healthy` last ones, where its count
//!   stands still;
//! - a **local leaker**: `Lone`, on one machine only, growing ten times
//!   faster than `Leak` (it tops any ranking by a single machine's growth,
//!   never one by how many machines leak);
//! - the series' one-off burst, noisy and shrinking tags on every machine;
//! - **corrupt files**: a truncated dump, a 32-bit signature, a bitmap that
//!   claims 2^40 pages, a dump whose tracker pages are unmapped (it opens;
//!   the pool read fails), and a file of noise.
//!
//! `bulk_bytes` pads each machine with procedurally generated pool so its
//! dump reaches a benchmark's size.

use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::builds::NtBuild;
use crate::corrupt::{Corruption, FileCorruption, corrupt_file};
use crate::dump::DumpKind;
use crate::machine::Machine;
use crate::scenario::{PoolKind, Scenario, SizeSpec, TagSpec};
use crate::series::{Series, SeriesSpec};

/// What fleet to make.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetSpec {
    pub builds: Vec<NtBuild>,
    pub machines: usize,
    /// Dumps per machine (at least 2).
    pub steps: usize,
    pub seed: u64,
    /// The last `healthy` machines do not leak `Leak`.
    pub healthy: usize,
    /// Corrupt files to add (up to 5 kinds, repeated round-robin).
    pub corrupt: usize,
    /// Bulk pool per machine, for benchmark-sized dumps.
    pub bulk_bytes: Option<u64>,
    pub kind: DumpKind,
}

impl FleetSpec {
    /// `machines` machines over every committed build, `steps` dumps each,
    /// a quarter of them (at least one) healthy, five corrupt files.
    pub fn new(machines: usize, steps: usize, seed: u64) -> Self {
        Self {
            builds: NtBuild::ALL.to_vec(),
            machines,
            steps,
            seed,
            healthy: (machines / 4).max(1).min(machines.saturating_sub(1)),
            corrupt: 5,
            bulk_bytes: None,
            kind: DumpKind::KernelBitmap,
        }
    }
}

/// One good dump of the fleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetDump {
    pub path: PathBuf,
    pub machine: usize,
    pub step: usize,
    pub build: NtBuild,
    pub unix_time: u64,
    pub uptime_secs: u64,
    pub kern_base: u64,
}

/// A corrupt file of the fleet and what is wrong with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorruptDump {
    pub path: PathBuf,
    pub what: String,
}

/// The fleet's ground truth.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetTruth {
    pub spec: FleetSpec,
    /// The fleet-wide leaker's tag (PoolMon spelling) and pool.
    pub leaker: String,
    pub leaker_pool: String,
    /// Machines on which it grows.
    pub leaking_machines: Vec<usize>,
    /// The one-machine leaker, and its machine.
    pub local_leaker: String,
    pub local_machine: usize,
    pub dumps: Vec<FleetDump>,
    pub corrupt: Vec<CorruptDump>,
}

/// Where [`write_fleet`] put things.
#[derive(Debug, Clone)]
pub struct WrittenFleet {
    /// `DIR/symbols`: every build's nt PDB and the drivers' PDBs.
    pub symbols: PathBuf,
    /// `DIR/fleet.json`.
    pub truth_file: PathBuf,
    pub truth: FleetTruth,
}

const LOCAL_LEAKER: &str = "Lone";

/// The scenarios of machine `i`, in time order.
fn machine_scenarios(spec: &FleetSpec, i: usize) -> Vec<Scenario> {
    let build = spec.builds[i % spec.builds.len()];
    let mut s = SeriesSpec::new(build, spec.seed.wrapping_mul(1000).wrapping_add(i as u64));
    s.steps = spec.steps.max(2);
    if i + spec.healthy >= spec.machines {
        s.leak_per_step = 0;
    }
    let mut scenarios = Series::new(&s).scenarios;
    let local = local_machine(spec);
    for (step, sc) in scenarios.iter_mut().enumerate() {
        // Machines booted at different moments (a few hours apart).
        sc.unix_time += i as u64 * 7919;
        if let Some(bytes) = spec.bulk_bytes {
            sc.ram_mib = sc.ram_mib.max(bytes / (1 << 20) + 1024);
            sc.bulk = Some(crate::bulk::BulkSpec {
                bytes,
                tags: 200,
                big_live: 64,
                big_freed: 8,
            });
        }
        if i == local {
            sc.tags.push(TagSpec {
                tag: LOCAL_LEAKER.into(),
                pool: if build.has_nx_pool() {
                    PoolKind::NonPagedNx
                } else {
                    PoolKind::NonPaged
                },
                live: 10 + 300 * step as u32,
                size: SizeSpec::Fixed(0x200),
                freed: 4 + step as u64,
                freed_in_memory: 1,
                protected: false,
                cache_aligned: false,
            });
        }
    }
    scenarios
}

/// The machine with the local leaker: the first one, which also leaks
/// `Leak`.
fn local_machine(_spec: &FleetSpec) -> usize {
    0
}

/// Build every machine at every step and write `DIR/mNNN-<build>/step-NN.dmp`,
/// the corrupt files under `DIR/corrupt/`, one symbol store `DIR/symbols/`
/// and `DIR/fleet.json`. Machines are built `threads` at a time (memory
/// holds that many machines).
pub fn write_fleet(spec: &FleetSpec, dir: &Path) -> io::Result<WrittenFleet> {
    std::fs::create_dir_all(dir)?;
    let symbols = dir.join("symbols");
    let jobs: Vec<(usize, usize)> = (0..spec.machines)
        .flat_map(|i| (0..spec.steps.max(2)).map(move |j| (i, j)))
        .collect();
    let dumps: Vec<FleetDump> = jobs
        .par_iter()
        .map(|&(i, j)| -> io::Result<FleetDump> {
            let sc = &machine_scenarios(spec, i)[j];
            let m = Machine::build(sc);
            let mdir = dir.join(format!("m{i:03}-{}", sc.build.name()));
            std::fs::create_dir_all(&mdir)?;
            let path = mdir.join(format!("step-{j:02}.dmp"));
            write_atomically(&path, |p| m.write_dump_file(spec.kind, p).map(|_| ()))?;
            if j == 0 {
                m.write_symbol_store(&symbols)?;
            }
            Ok(FleetDump {
                path,
                machine: i,
                step: j,
                build: sc.build,
                unix_time: sc.unix_time,
                uptime_secs: sc.uptime_secs,
                kern_base: m.truth.kernel.kern_base,
            })
        })
        .collect::<io::Result<_>>()?;
    let corrupt = write_corrupt(spec, dir, &dumps)?;
    let truth = FleetTruth {
        spec: spec.clone(),
        leaker: "Leak".into(),
        leaker_pool: "Nonp".into(),
        leaking_machines: (0..spec.machines)
            .filter(|i| i + spec.healthy < spec.machines)
            .collect(),
        local_leaker: LOCAL_LEAKER.into(),
        local_machine: local_machine(spec),
        dumps,
        corrupt,
    };
    let truth_file = crate::truth::write_json(dir, "fleet.json", &truth)?;
    Ok(WrittenFleet {
        symbols,
        truth_file,
        truth,
    })
}

/// Write through a temporary name, so a killed writer leaves no dump that
/// looks whole.
fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let tmp = path.with_extension("dmp.partial");
    write(&tmp)?;
    std::fs::rename(&tmp, path)
}

fn write_corrupt(
    spec: &FleetSpec,
    dir: &Path,
    dumps: &[FleetDump],
) -> io::Result<Vec<CorruptDump>> {
    let cdir = dir.join("corrupt");
    std::fs::create_dir_all(&cdir)?;
    let mut out = Vec::new();
    for n in 0..spec.corrupt {
        let src = &dumps[n % dumps.len().max(1)];
        let path = cdir.join(format!("corrupt-{n:02}.dmp"));
        let what = match n % 5 {
            0 => {
                let mut b = std::fs::read(&src.path)?;
                let half = b.len() as u64 / 2;
                corrupt_file(&mut b, FileCorruption::Truncate(half));
                std::fs::write(&path, b)?;
                format!("truncated to {half} bytes")
            }
            1 => {
                let mut b = std::fs::read(&src.path)?;
                corrupt_file(&mut b, FileCorruption::Bits32);
                std::fs::write(&path, b)?;
                "32-bit dump signature".into()
            }
            2 => {
                let mut b = std::fs::read(&src.path)?;
                corrupt_file(&mut b, FileCorruption::HugeBitmap);
                std::fs::write(&path, b)?;
                "bitmap of 2^40 pages".into()
            }
            3 => {
                let mut sc = machine_scenarios(spec, src.machine)[src.step].clone();
                sc.seed ^= 0xC0FFEE + n as u64;
                let mut m = Machine::build(&sc);
                m.corrupt(Corruption::UnmappedTrackerTable);
                m.write_dump_file(spec.kind, &path)?;
                "tracker table unmapped".into()
            }
            _ => {
                let mut rng = fastrand::Rng::with_seed(spec.seed ^ n as u64);
                let noise: Vec<u8> = (0..300_000).map(|_| rng.u8(..)).collect();
                std::fs::write(&path, noise)?;
                "random bytes".into()
            }
        };
        out.push(CorruptDump { path, what });
    }
    Ok(out)
}
