//! Many snapshots: per-tag growth fitted over time, and a verdict.

use super::*;

// ---------------------------------------------------------------------------
// Many snapshots

/// Which counter the trend ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrendMetric {
    /// PoolMon's Bytes: bytes allocated now.
    #[default]
    Bytes,
    /// PoolMon's Diff: allocations outstanding.
    Diff,
}

/// Thresholds of "steady".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrendOptions {
    /// The counter fitted, scored and judged.
    pub metric: TrendMetric,
    /// Least R² of the linear fit for steady growth.
    pub min_r2: f64,
    /// Least fraction of intervals in which the tag grew.
    pub min_grew_fraction: f64,
}

impl Default for TrendOptions {
    /// A leak that grows in at least 6 of 10 intervals and lies close to a
    /// line (R² ≥ 0.6). A one-off burst in an 8-snapshot series grows in 1
    /// of 7; noise around a constant mean fits a line badly.
    fn default() -> Self {
        Self {
            metric: TrendMetric::Bytes,
            min_r2: 0.6,
            min_grew_fraction: 0.6,
        }
    }
}

/// What the time axis is measured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeAxis {
    /// The machine's uptime (one boot).
    Uptime,
    /// The machine's wall clock.
    SystemTime,
    /// When the host took each snapshot.
    HostTime,
    /// No clock: one unit per snapshot, in the order given.
    Index,
}

/// A tag's verdict, in ranking order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Grows in most intervals and lies close to a line: the leak pattern.
    SteadyGrowth,
    /// Ends higher, but in a jump or through noise.
    UnsteadyGrowth,
    /// Neither growing (slope up, ending higher) nor shrinking.
    Flat,
    /// Slopes down and ends lower.
    Shrinking,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::SteadyGrowth => "steady growth",
            Verdict::UnsteadyGrowth => "unsteady growth",
            Verdict::Flat => "flat",
            Verdict::Shrinking => "shrinking",
        })
    }
}

/// One point of the series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendPoint {
    /// The source's name (a dump's path, a KDNET peer).
    pub source: String,
    /// Hours since the first snapshot (snapshot index on the `index` axis).
    pub hours: f64,
    /// The machine's wall clock, RFC 3339; None when the snapshot has none.
    pub system_time: Option<String>,
    /// The machine's uptime (`3d 04:05:06`); None when the snapshot has none.
    pub uptime: Option<String>,
}

/// One tag over the series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagTrend {
    /// 1 = most likely leak.
    pub rank: usize,
    /// The tag as PoolMon prints it (`<overflow>` for the overflow slot).
    pub tag: String,
    /// The tag's ULONG.
    #[serde(with = "hex_tag")]
    pub value: PoolTag,
    /// `Nonp` or `Paged`.
    #[serde(rename = "type", with = "poolmon_type")]
    pub pool: PoolClass,
    /// The tracker's overflow slot.
    #[serde(default, skip_serializing_if = "is_false")]
    pub overflow: bool,
    /// The owning driver, from the latest snapshot that names one.
    pub driver: Option<String>,
    /// Bytes at each point (0 where the tag had no row).
    pub bytes: Vec<u64>,
    /// Diff (live allocations) at each point.
    pub diff: Vec<u64>,
    /// Least-squares slope of Bytes, in bytes per hour (per snapshot on the
    /// `index` axis).
    pub bytes_per_hour: f64,
    /// Least-squares slope of Diff, in allocations per hour (per snapshot on the `index` axis).
    pub diff_per_hour: f64,
    /// R² of the linear fit of the ranking metric (0 for a constant).
    pub r2: f64,
    /// Intervals in which the ranking metric grew, of `intervals`.
    pub grew: usize,
    /// Intervals between consecutive points (points − 1).
    pub intervals: usize,
    /// Bytes last minus first.
    pub bytes_growth: i64,
    /// Bytes peak minus last: what was given back after the peak (the
    /// seeds' "how much was freed" check).
    pub bytes_released: u64,
    /// slope × R² × grew fraction (of the ranking metric; 0 unless it
    /// grows).
    pub score: f64,
    /// Steady growth, unsteady growth, flat or shrinking.
    pub verdict: Verdict,
}

impl TagTrend {
    /// What identifies the row across snapshots.
    pub fn key(&self) -> RowKey {
        RowKey {
            tag: self.value,
            pool: self.pool,
            overflow: self.overflow,
        }
    }
    /// `grew` / `intervals` (0 with no interval).
    pub fn grew_fraction(&self) -> f64 {
        if self.intervals == 0 {
            0.0
        } else {
            self.grew as f64 / self.intervals as f64
        }
    }
}

/// The series ranked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// [`TREND_SCHEMA`].
    pub schema: String,
    /// The counter the tags are ranked by.
    pub metric: TrendMetric,
    /// The clock the points are placed on.
    pub axis: TimeAxis,
    /// The snapshots in time order.
    pub points: Vec<TrendPoint>,
    /// Every tag seen, ranked: steady growth first, then by score.
    pub tags: Vec<TagTrend>,
    /// A series too short to judge, snapshots from several boots, a time axis that fell back,
    /// snapshots given out of order.
    pub warnings: Vec<Warning>,
}

/// Rank every tag of a series by sustained growth. Snapshots are put in
/// time order first.
pub fn trend(snaps: &[Snapshot], opts: &TrendOptions) -> Trend {
    let mut warnings = Vec::new();
    let (axis, order, hours) = time_axis(snaps, &mut warnings);
    let ordered: Vec<&Snapshot> = order.iter().map(|&i| &snaps[i]).collect();
    if ordered.len() < 3 {
        warnings.push(format!(
            "{} snapshot(s): at least 3 are needed to tell steady growth from a one-off jump",
            ordered.len()
        ));
    }
    let keys: BTreeSet<RowKey> = ordered
        .iter()
        .flat_map(|s| s.rows.iter().map(SnapshotRow::key))
        .collect();
    let maps: Vec<BTreeMap<RowKey, &SnapshotRow>> = ordered
        .iter()
        .map(|s| s.rows.iter().map(|r| (r.key(), r)).collect())
        .collect();
    let mut tags: Vec<TagTrend> = keys
        .into_iter()
        .map(|k| {
            let rows: Vec<Option<&&SnapshotRow>> = maps.iter().map(|m| m.get(&k)).collect();
            let bytes: Vec<u64> = rows.iter().map(|r| r.map_or(0, |r| r.bytes)).collect();
            let diff: Vec<u64> = rows.iter().map(|r| r.map_or(0, |r| r.diff)).collect();
            let driver = rows.iter().rev().flatten().find_map(|r| r.driver.clone());
            tag_trend(k, driver, &hours, bytes, diff, opts, ordered.len())
        })
        .collect();
    tags.sort_by(|a, b| {
        a.verdict
            .cmp(&b.verdict)
            .then(b.score.total_cmp(&a.score))
            .then(metric_slope(b, opts.metric).total_cmp(&metric_slope(a, opts.metric)))
            .then(a.value.bytes().cmp(&b.value.bytes()))
            .then(a.pool.cmp(&b.pool))
    });
    for (i, t) in tags.iter_mut().enumerate() {
        t.rank = i + 1;
    }
    Trend {
        schema: TREND_SCHEMA.into(),
        metric: opts.metric,
        axis,
        points: ordered
            .iter()
            .zip(&hours)
            .map(|(s, h)| TrendPoint {
                source: s.source.name.clone(),
                hours: *h,
                system_time: s.time.system_time.clone(),
                uptime: s.time.uptime.clone(),
            })
            .collect(),
        tags,
        warnings: Warning::all(WarningKind::Snapshot, warnings),
    }
}

fn metric_slope(t: &TagTrend, m: TrendMetric) -> f64 {
    match m {
        TrendMetric::Bytes => t.bytes_per_hour,
        TrendMetric::Diff => t.diff_per_hour,
    }
}

fn tag_trend(
    k: RowKey,
    driver: Option<String>,
    hours: &[f64],
    bytes: Vec<u64>,
    diff: Vec<u64>,
    opts: &TrendOptions,
    points: usize,
) -> TagTrend {
    let fb = fit(hours, &bytes);
    let fd = fit(hours, &diff);
    let (series, f) = match opts.metric {
        TrendMetric::Bytes => (&bytes, fb),
        TrendMetric::Diff => (&diff, fd),
    };
    let intervals = series.len().saturating_sub(1);
    let grew = series.windows(2).filter(|w| w[1] > w[0]).count();
    let first = *series.first().unwrap_or(&0);
    let last = *series.last().unwrap_or(&0);
    let grew_fraction = if intervals == 0 {
        0.0
    } else {
        grew as f64 / intervals as f64
    };
    let rising = f.slope > 0.0 && last > first;
    let verdict = if rising {
        if points >= 3 && f.r2 >= opts.min_r2 && grew_fraction >= opts.min_grew_fraction {
            Verdict::SteadyGrowth
        } else {
            Verdict::UnsteadyGrowth
        }
    } else if f.slope < 0.0 && last < first {
        Verdict::Shrinking
    } else {
        Verdict::Flat
    };
    let score = if rising {
        f.slope * f.r2 * grew_fraction
    } else {
        0.0
    };
    let bfirst = *bytes.first().unwrap_or(&0);
    let blast = *bytes.last().unwrap_or(&0);
    let peak = bytes.iter().copied().max().unwrap_or(0);
    TagTrend {
        rank: 0,
        tag: if k.overflow {
            "<overflow>".into()
        } else {
            k.tag.to_string()
        },
        value: k.tag,
        pool: k.pool,
        overflow: k.overflow,
        driver,
        bytes_per_hour: fb.slope,
        diff_per_hour: fd.slope,
        r2: f.r2,
        grew,
        intervals,
        bytes_growth: Change::new(bfirst, blast).delta,
        bytes_released: peak - blast,
        score,
        verdict,
        bytes,
        diff,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Fit {
    pub(super) slope: f64,
    pub(super) r2: f64,
}

/// Ordinary least squares of `y` on `x`. Hand-written: it is a handful of
/// sums, and a statistics crate would bring far more than it.
pub(super) fn fit(x: &[f64], y: &[u64]) -> Fit {
    let n = x.len().min(y.len());
    if n < 2 {
        return Fit {
            slope: 0.0,
            r2: 0.0,
        };
    }
    let y: Vec<f64> = y[..n].iter().map(|&v| v as f64).collect();
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (xi, yi) in x[..n].iter().zip(&y) {
        sxy += (xi - mx) * (yi - my);
        sxx += (xi - mx) * (xi - mx);
        syy += (yi - my) * (yi - my);
    }
    if sxx <= 0.0 || !sxx.is_finite() {
        return Fit {
            slope: 0.0,
            r2: 0.0,
        };
    }
    let slope = sxy / sxx;
    let r2 = if syy > 0.0 {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Fit { slope, r2 }
}

/// Choose the clock, order the snapshots by it, and give each its hours
/// since the first.
fn time_axis(snaps: &[Snapshot], warnings: &mut Vec<String>) -> (TimeAxis, Vec<usize>, Vec<f64>) {
    let n = snaps.len();
    let all = |f: &dyn Fn(&Snapshot) -> Option<u64>| -> Option<Vec<u64>> {
        snaps.iter().map(f).collect()
    };
    let boots = count_boots(snaps);
    if boots > 1 {
        warnings.push(format!(
            "the snapshots span {boots} boots: the counters restart at boot, so growth across a reboot means nothing"
        ));
    }
    let (axis, ticks, per_hour): (TimeAxis, Vec<u64>, f64) = match all(&|s| s.time.uptime_100ns)
        .filter(|_| boots == 1)
    {
        Some(t) => (TimeAxis::Uptime, t, TICKS_PER_HOUR),
        None => match all(&|s| s.time.system_time_filetime) {
            Some(t) => (TimeAxis::SystemTime, t, TICKS_PER_HOUR),
            None => match all(&|s| s.time.taken_unix) {
                Some(t) => {
                    warnings.push(
                            "some snapshots lack the machine's clocks: the time axis is when the host took them".into(),
                        );
                    (TimeAxis::HostTime, t, 3600.0)
                }
                None => {
                    warnings.push(
                            "some snapshots carry no time at all: they are taken in the order given, one unit apart".into(),
                        );
                    (TimeAxis::Index, (0..n as u64).collect(), 1.0)
                }
            },
        },
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| ticks[a].cmp(&ticks[b]).then(a.cmp(&b)));
    if order.iter().enumerate().any(|(i, &o)| i != o) {
        warnings.push("the snapshots were not given in time order; they are sorted by time".into());
    }
    let t0 = order.first().map_or(0, |&i| ticks[i]);
    let hours: Vec<f64> = order
        .iter()
        .map(|&i| (ticks[i] - t0) as f64 / per_hour)
        .collect();
    if n >= 2 && hours.last().is_some_and(|h| *h == 0.0) {
        warnings.push("every snapshot has the same time: no rate can be computed".into());
    }
    (axis, order, hours)
}

/// Distinct boots among the snapshots (pairs that cannot be told apart
/// count as one).
fn count_boots(snaps: &[Snapshot]) -> usize {
    let mut reps: Vec<&Snapshot> = Vec::new();
    for s in snaps {
        if !reps.iter().any(|r| r.same_boot(s) != Some(false)) {
            reps.push(s);
        }
    }
    reps.len().max(usize::from(!snaps.is_empty()))
}
