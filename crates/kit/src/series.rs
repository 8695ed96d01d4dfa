//! One synthetic machine watched over time, for leak hunting: the same
//! boot (same seed, so the same KernBase, page tables and drivers) at
//! `steps` moments `interval_secs` apart, as the seeds' "PoolMon every half
//! hour" workflow sees a machine.
//!
//! Planted in the series, and recorded in [`SeriesTruth`]:
//! - a steady leak: one tag whose live allocations grow by the same count
//!   at every step (its Allocs outrun its Frees);
//! - a one-off burst: a tag of big allocations that jumps once, mid-series,
//!   and stays. Its total growth is far larger than the leak's, so ranking
//!   by "Bytes last minus Bytes first" alone would blame it;
//! - noisy tags: busy tags whose live count wanders around a constant mean
//!   while their Allocs and Frees climb by thousands per step (they top a
//!   sort by Allocs or Frees change);
//! - a shrinking tag and tags that do not change at all.
//!
//! ```no_run
//! use pooldump_kit::series::{Series, SeriesSpec};
//! use pooldump_kit::{DumpKind, NtBuild};
//! let series = Series::new(&SeriesSpec::new(NtBuild::Win10_19041, 7));
//! let written = series.write("series".as_ref(), DumpKind::KernelBitmap).unwrap();
//! println!("leak: {} ({})", written.truth.leak.tag, written.truth.leak.pool);
//! ```

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::builds::NtBuild;
use crate::dump::DumpKind;
use crate::machine::Machine;
use crate::scenario::{PoolKind, Scenario, SizeSpec, TagSpec};
use crate::truth::TagUsage;

/// What series to make.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesSpec {
    pub build: NtBuild,
    /// Seeds the machine (as [`Scenario::seed`]) and the noise.
    pub seed: u64,
    /// Snapshots in the series (at least 2).
    pub steps: usize,
    /// Seconds between two snapshots (the seeds' half hour by default).
    pub interval_secs: u64,
    /// Live allocations the leak adds at every step.
    pub leak_per_step: u32,
}

impl SeriesSpec {
    /// Eight snapshots, half an hour apart, a leak of 30 blocks a step.
    pub fn new(build: NtBuild, seed: u64) -> Self {
        Self {
            build,
            seed,
            steps: 8,
            interval_secs: 1800,
            leak_per_step: 30,
        }
    }
}

/// A tag the series planted, with what it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlantedTag {
    /// As PoolMon prints it (four characters, space-padded).
    pub tag: String,
    pub tag_value: u32,
    /// "Paged" or "Nonp", as PoolMon prints the type.
    pub pool: String,
    /// steady-leak, burst, noisy, shrinking or constant.
    pub behaviour: String,
}

/// The series' ground truth.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesTruth {
    pub spec: SeriesSpec,
    /// The one tag that leaks.
    pub leak: PlantedTag,
    /// The one-off burst (not a leak).
    pub burst: PlantedTag,
    /// The step at which the burst happens (its count is higher from this
    /// step on).
    pub burst_step: usize,
    /// Every planted tag, the leak and the burst included.
    pub planted: Vec<PlantedTag>,
    /// Per step: the machine's clock and its expected per-tag rows (the
    /// kit's [`crate::GroundTruth::tags`]). Empty until machines are built
    /// ([`Series::write`] fills it).
    pub steps: Vec<StepTruth>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepTruth {
    pub index: usize,
    /// Seconds since boot (KUSER_SHARED_DATA.InterruptTime and the dump
    /// header's SystemUpTime).
    pub uptime_secs: u64,
    /// Wall clock, seconds since the Unix epoch.
    pub unix_time: u64,
    pub kern_base: u64,
    pub tags: Vec<TagUsage>,
}

/// The scenarios of a series and what was planted in them.
#[derive(Debug, Clone)]
pub struct Series {
    pub scenarios: Vec<Scenario>,
    pub truth: SeriesTruth,
}

/// Where [`Series::write`] put things.
#[derive(Debug, Clone)]
pub struct WrittenSeries {
    /// One dump per step, in time order.
    pub dumps: Vec<PathBuf>,
    /// The symbol store every dump uses (one boot, one nt).
    pub symbols: PathBuf,
    /// `series.json`: [`SeriesTruth`] with every step's rows.
    pub truth_file: PathBuf,
    pub truth: SeriesTruth,
}

/// How one tag's live count moves.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// `base + per_step * i` live, frees creeping up slowly.
    Leak {
        base: u32,
        per_step: u32,
    },
    /// `base` live before `at`, `base + jump` from `at` on.
    Burst {
        base: u32,
        jump: u32,
        at: usize,
    },
    /// `mean ± amp` live at random, `churn` allocations made and freed per
    /// step.
    Noisy {
        mean: u32,
        amp: u32,
        churn: u64,
    },
    /// `base - per_step * i` live.
    Shrink {
        base: u32,
        per_step: u32,
    },
    Constant {
        live: u32,
    },
}

impl Behaviour {
    fn name(self) -> &'static str {
        match self {
            Behaviour::Leak { .. } => "steady-leak",
            Behaviour::Burst { .. } => "burst",
            Behaviour::Noisy { .. } => "noisy",
            Behaviour::Shrink { .. } => "shrinking",
            Behaviour::Constant { .. } => "constant",
        }
    }
}

/// One planted tag: what it is and how its counts move.
struct Plan {
    tag: &'static str,
    pool: PoolKind,
    size: SizeSpec,
    /// Allocations made and freed before the first step.
    freed0: u64,
    behaviour: Behaviour,
}

impl Plan {
    /// The tags a series plants: the leak, the burst at `burst_step`, the
    /// noisy, shrinking and constant tags.
    // Long: a data table (one entry per planted tag), clearest in one piece.
    fn all(spec: &SeriesSpec, burst_step: usize) -> [Plan; 11] {
        let nx = if spec.build.has_nx_pool() {
            PoolKind::NonPagedNx
        } else {
            PoolKind::NonPaged
        };
        let range = |min, max| SizeSpec::Range { min, max };
        [
            Plan {
                tag: "Leak",
                pool: nx,
                size: SizeSpec::Fixed(0x120),
                freed0: 3,
                behaviour: Behaviour::Leak {
                    base: 40,
                    per_step: spec.leak_per_step,
                },
            },
            Plan {
                tag: "NSbf",
                pool: nx,
                // Fixed sizes: a tag whose counters do not move must not
                // change its bytes either (a range is redrawn per machine).
                size: SizeSpec::Fixed(0x3800),
                freed0: 10,
                behaviour: Behaviour::Burst {
                    base: 8,
                    jump: 40,
                    at: burst_step,
                },
            },
            Plan {
                tag: "File",
                pool: PoolKind::Paged,
                size: range(0x40, 0x180),
                freed0: 90_000,
                behaviour: Behaviour::Noisy {
                    mean: 60,
                    amp: 40,
                    churn: 6_000,
                },
            },
            Plan {
                tag: "File",
                pool: nx,
                size: range(0x100, 0x200),
                freed0: 12_345,
                behaviour: Behaviour::Noisy {
                    mean: 30,
                    amp: 20,
                    churn: 900,
                },
            },
            Plan {
                tag: "Ntfx",
                pool: PoolKind::Paged,
                size: range(0x30, 0x600),
                freed0: 400_000,
                behaviour: Behaviour::Noisy {
                    mean: 40,
                    amp: 30,
                    churn: 25_000,
                },
            },
            Plan {
                tag: "Irp ",
                pool: nx,
                size: SizeSpec::Fixed(0x118),
                freed0: 2_000_000,
                behaviour: Behaviour::Noisy {
                    mean: 24,
                    amp: 16,
                    churn: 150_000,
                },
            },
            Plan {
                tag: "CM",
                pool: PoolKind::Paged,
                size: range(0x20, 0xF00),
                freed0: 50_000,
                behaviour: Behaviour::Noisy {
                    mean: 24,
                    amp: 12,
                    churn: 3_000,
                },
            },
            Plan {
                tag: "MmSt",
                pool: PoolKind::Paged,
                size: range(0x200, 0x900),
                freed0: 7_000,
                behaviour: Behaviour::Shrink {
                    base: 40,
                    per_step: 3,
                },
            },
            Plan {
                tag: "LkBf",
                pool: nx,
                size: SizeSpec::Fixed(0x3000),
                freed0: 1,
                behaviour: Behaviour::Constant { live: 6 },
            },
            Plan {
                tag: "FsFl",
                pool: PoolKind::Paged,
                size: SizeSpec::Fixed(0x5800),
                freed0: 4,
                behaviour: Behaviour::Constant { live: 3 },
            },
            Plan {
                tag: "Proc",
                pool: nx,
                size: SizeSpec::Fixed(0x9F0),
                freed0: 300,
                behaviour: Behaviour::Constant { live: 7 },
            },
        ]
    }

    /// Step `i`'s live count and frees, `noise` being the step's drawn
    /// live count of this tag (used by noisy tags).
    fn counts(&self, i: usize, noise: u32) -> (u32, u64) {
        match self.behaviour {
            Behaviour::Leak { base, per_step } => {
                // A leak still frees some of what it allocates.
                (base + per_step * i as u32, self.freed0 + 2 * i as u64)
            }
            Behaviour::Burst { base, jump, at } => {
                (if i >= at { base + jump } else { base }, self.freed0)
            }
            Behaviour::Noisy { churn, .. } => {
                // Frees keep Allocs (live + freed) from ever
                // going down: churn > 2 * amp.
                (noise, self.freed0 + churn * i as u64)
            }
            Behaviour::Shrink { base, per_step } => (
                base.saturating_sub(per_step * i as u32),
                self.freed0 + (per_step as u64 + 5) * i as u64,
            ),
            Behaviour::Constant { live } => (live, self.freed0),
        }
    }

    /// The scenario's tag of step `i`.
    fn tag_spec(&self, i: usize, noise: u32) -> TagSpec {
        let (live, freed) = self.counts(i, noise);
        TagSpec {
            tag: self.tag.into(),
            pool: self.pool,
            live,
            size: self.size,
            freed,
            freed_in_memory: u32::from(freed > 0),
            protected: false,
            cache_aligned: false,
        }
    }

    /// The tag as the truth records it.
    fn planted(&self) -> PlantedTag {
        PlantedTag {
            tag: crate::machine::tag_string(crate::machine::tag_value(self.tag)),
            tag_value: crate::machine::tag_value(self.tag),
            pool: if self.pool.is_paged() {
                "Paged"
            } else {
                "Nonp"
            }
            .into(),
            behaviour: self.behaviour.name().into(),
        }
    }
}

/// The noisy tags' live count per (step, tag), zero for the other tags.
/// The noise is drawn once per (step, tag) from the series' own
/// generator, so the machine's placement randomness stays as the kit's
/// scenarios have it.
fn draw_noise(plans: &[Plan], steps: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x005E_21E5_5EED);
    let mut live = vec![vec![0u32; plans.len()]; steps];
    for row in live.iter_mut() {
        for (j, p) in plans.iter().enumerate() {
            row[j] = match p.behaviour {
                Behaviour::Noisy { mean, amp, .. } => {
                    rng.u32(mean.saturating_sub(amp)..=mean + amp)
                }
                _ => 0,
            };
        }
    }
    live
}

impl Series {
    /// The scenarios and the planted truth (no machine is built yet).
    pub fn new(spec: &SeriesSpec) -> Self {
        let steps = spec.steps.max(2);
        let burst_step = steps / 2;
        let plans = Plan::all(spec, burst_step);
        let live = draw_noise(&plans, steps, spec.seed);
        let base = Scenario::small(spec.build, spec.seed);
        let scenarios = live
            .iter()
            .enumerate()
            .map(|(i, noise)| {
                let mut s = base.clone();
                s.uptime_secs = base.uptime_secs + i as u64 * spec.interval_secs;
                s.unix_time = base.unix_time + i as u64 * spec.interval_secs;
                s.tags = plans
                    .iter()
                    .zip(noise)
                    .map(|(p, n)| p.tag_spec(i, *n))
                    .collect();
                s
            })
            .collect();

        let planted: Vec<PlantedTag> = plans.iter().map(Plan::planted).collect();
        let find = |b: &str| {
            planted
                .iter()
                .find(|p| p.behaviour == b)
                .cloned()
                .expect("the plan has it")
        };
        let truth = SeriesTruth {
            spec: SeriesSpec {
                steps,
                ..spec.clone()
            },
            leak: find("steady-leak"),
            burst: find("burst"),
            burst_step,
            planted: planted.clone(),
            steps: Vec::new(),
        };
        Series { scenarios, truth }
    }

    /// Build the machine of step `i`.
    pub fn machine(&self, i: usize) -> Machine {
        Machine::build(&self.scenarios[i])
    }

    /// What step `i`'s machine should show, from its ground truth.
    pub fn step_truth(i: usize, m: &Machine) -> StepTruth {
        StepTruth {
            index: i,
            uptime_secs: m.scenario.uptime_secs,
            unix_time: m.scenario.unix_time,
            kern_base: m.truth.kernel.kern_base,
            tags: m.truth.tags.clone(),
        }
    }

    /// Build every step and write `dir/step-NN/MEMORY.DMP`, one symbol
    /// store `dir/symbols/` and `dir/series.json`. Machines are built one
    /// at a time, so memory holds one machine.
    pub fn write(&self, dir: &Path, kind: DumpKind) -> io::Result<WrittenSeries> {
        std::fs::create_dir_all(dir)?;
        let symbols = dir.join("symbols");
        let mut truth = self.truth.clone();
        let mut dumps = Vec::with_capacity(self.scenarios.len());
        for i in 0..self.scenarios.len() {
            let m = self.machine(i);
            if i == 0 {
                m.write_symbol_store(&symbols)?;
            }
            let step_dir = dir.join(format!("step-{i:02}"));
            std::fs::create_dir_all(&step_dir)?;
            let dump = step_dir.join("MEMORY.DMP");
            m.write_dump_file(kind, &dump)?;
            truth.steps.push(Self::step_truth(i, &m));
            dumps.push(dump);
        }
        let truth_file = crate::truth::write_json(dir, "series.json", &truth)?;
        Ok(WrittenSeries {
            dumps,
            symbols,
            truth_file,
            truth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_of(s: &Scenario, tag: &str, paged: bool) -> (u32, u64) {
        let t = s
            .tags
            .iter()
            .find(|t| t.tag == tag && t.pool.is_paged() == paged)
            .unwrap();
        (t.live, t.freed)
    }

    #[test]
    fn counters_only_grow_and_the_plan_holds() {
        let spec = SeriesSpec::new(NtBuild::Win10_19041, 3);
        let s = Series::new(&spec);
        assert_eq!(s.scenarios.len(), spec.steps);
        for w in s.scenarios.windows(2) {
            assert_eq!(w[1].uptime_secs - w[0].uptime_secs, spec.interval_secs);
            for (a, b) in w[0].tags.iter().zip(&w[1].tags) {
                // Allocs (live + freed) and Frees are counters.
                assert!(b.freed >= a.freed, "{}", a.tag);
                assert!(
                    b.live as u64 + b.freed >= a.live as u64 + a.freed,
                    "{}",
                    a.tag
                );
            }
            let (l0, _) = live_of(&w[0], "Leak", false);
            let (l1, _) = live_of(&w[1], "Leak", false);
            assert_eq!(l1 - l0, spec.leak_per_step);
        }
        let burst: Vec<u32> = s
            .scenarios
            .iter()
            .map(|sc| live_of(sc, "NSbf", false).0)
            .collect();
        let jumps = burst.windows(2).filter(|w| w[1] != w[0]).count();
        assert_eq!(jumps, 1, "{burst:?}");
        assert_eq!(s.truth.leak.tag, "Leak");
        // Where a tag's counters stand still, its sizes cannot change.
        for sc in &s.scenarios {
            for t in sc
                .tags
                .iter()
                .filter(|t| !matches!(t.size, SizeSpec::Fixed(_)))
            {
                let moves = s.scenarios.windows(2).any(|w| {
                    let f = |x: &Scenario| {
                        x.tags
                            .iter()
                            .find(|y| y.tag == t.tag && y.pool == t.pool)
                            .map(|y| (y.live, y.freed))
                    };
                    f(&w[0]) != f(&w[1])
                });
                assert!(moves, "{} has random sizes but constant counters", t.tag);
            }
        }
        assert_eq!(s.truth.burst.tag, "NSbf");
    }

    #[test]
    fn every_step_is_the_same_boot() {
        let s = Series::new(&SeriesSpec {
            steps: 3,
            ..SeriesSpec::new(NtBuild::Win10_19041, 5)
        });
        let bases: Vec<u64> = (0..3).map(|i| s.machine(i).kern_base).collect();
        assert!(bases.windows(2).all(|w| w[0] == w[1]), "{bases:x?}");
    }
}
