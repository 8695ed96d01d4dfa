//! Two snapshots compared, row by row.

use super::*;

// ---------------------------------------------------------------------------
// Two snapshots

/// A counter before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Change {
    /// The value in the first snapshot (0 when it had no row).
    pub before: u64,
    /// The value in the second (0 when it has no row).
    pub after: u64,
    /// after - before (saturated to i64).
    pub delta: i64,
}

impl Change {
    /// The change from `before` to `after`.
    pub fn new(before: u64, after: u64) -> Self {
        let d = i128::from(after) - i128::from(before);
        Self {
            before,
            after,
            delta: d.clamp(i64::MIN.into(), i64::MAX.into()) as i64,
        }
    }
}

/// How a row changed between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffRow {
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
    /// Allocs before and after.
    pub allocs: Change,
    /// Frees before and after.
    pub frees: Change,
    /// Diff (outstanding allocations) before and after.
    pub diff: Change,
    /// Bytes before and after.
    pub bytes: Change,
    /// Bytes / Diff after.
    pub per_alloc: u64,
    /// The owning driver, from the second snapshot's row (the first's when the tag is gone).
    pub driver: Option<String>,
    /// `new` (no row before), `gone` (no row after) or `changed`.
    pub status: RowStatus,
}

/// Whether a row was in both snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowStatus {
    /// In both.
    Changed,
    /// Only in the second snapshot.
    New,
    /// Only in the first.
    Gone,
}

impl DiffRow {
    /// What identifies the row across snapshots.
    pub fn key(&self) -> RowKey {
        RowKey {
            tag: self.value,
            pool: self.pool,
            overflow: self.overflow,
        }
    }
}

/// A snapshot as a diff or trend names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The source's name (a dump's path, a KDNET peer).
    pub source: String,
    /// The machine's wall clock, RFC 3339; None when the snapshot has none.
    pub system_time: Option<String>,
    /// The machine's uptime (`3d 04:05:06`); None when the snapshot has none.
    pub uptime: Option<String>,
}

impl From<&Snapshot> for SnapshotRef {
    fn from(s: &Snapshot) -> Self {
        Self {
            source: s.source.name.clone(),
            system_time: s.time.system_time.clone(),
            uptime: s.time.uptime.clone(),
        }
    }
}

/// PoolMon's header figures, before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TotalsChange {
    /// Allocs, all tags summed.
    pub allocs: Change,
    /// Frees, all tags summed.
    pub frees: Change,
    /// Diff, all tags summed.
    pub diff: Change,
    /// Bytes, all tags summed.
    pub bytes: Change,
}

/// PoolMon's header figures of both pools, before and after.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiffTotals {
    /// NonPaged pool.
    pub nonpaged: TotalsChange,
    /// Paged pool.
    pub paged: TotalsChange,
}

/// The difference between two snapshots: every row whose counters moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDiff {
    /// [`DIFF_SCHEMA`].
    pub schema: String,
    /// The first snapshot.
    pub before: SnapshotRef,
    /// The second snapshot.
    pub after: SnapshotRef,
    /// Seconds between the two, from the machine's clocks.
    pub elapsed_secs: Option<f64>,
    /// Whether both are one boot (counters restart at boot, so a diff
    /// across a reboot compares unrelated numbers).
    pub same_boot: Option<bool>,
    /// PoolMon's header figures, before and after.
    pub totals: DiffTotals,
    /// Rows in tag order; [`sort_rows`] ranks them.
    pub rows: Vec<DiffRow>,
    /// Different boots, a diff-only source, or snapshots in reverse order.
    pub warnings: Vec<Warning>,
}

impl SnapshotDiff {
    /// No row changed.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Rank a diff's rows by the change of one of PoolMon's columns, largest
/// growth first (per-alloc by its value after, which has no change
/// column; tags ascending for [`PoolMonColumn::Tag`]), ties by tag and type
/// so the order is stable.
pub fn sort_rows(rows: &mut [DiffRow], by: PoolMonColumn) {
    let tag_key = |r: &DiffRow| (r.value.bytes(), r.pool, r.overflow);
    let key = |r: &DiffRow| -> i128 {
        match by {
            PoolMonColumn::Bytes => r.bytes.delta.into(),
            PoolMonColumn::Diff => r.diff.delta.into(),
            PoolMonColumn::Allocs => r.allocs.delta.into(),
            PoolMonColumn::Frees => r.frees.delta.into(),
            PoolMonColumn::PerAlloc => r.per_alloc.into(),
            PoolMonColumn::Tag => 0,
        }
    };
    rows.sort_by(|a, b| key(b).cmp(&key(a)).then(tag_key(a).cmp(&tag_key(b))));
}

/// Compare two snapshots. Rows whose four counters are equal are left out,
/// so a snapshot compared with itself gives no rows.
pub fn diff(before: &Snapshot, after: &Snapshot) -> SnapshotDiff {
    let b: BTreeMap<RowKey, &SnapshotRow> = before.rows.iter().map(|r| (r.key(), r)).collect();
    let a: BTreeMap<RowKey, &SnapshotRow> = after.rows.iter().map(|r| (r.key(), r)).collect();
    let keys: BTreeSet<RowKey> = b.keys().chain(a.keys()).copied().collect();
    let mut rows = Vec::new();
    for k in keys {
        let (rb, ra) = (b.get(&k), a.get(&k));
        let get = |r: Option<&&SnapshotRow>, f: fn(&SnapshotRow) -> u64| r.map_or(0, |r| f(r));
        let c = |f: fn(&SnapshotRow) -> u64| Change::new(get(rb, f), get(ra, f));
        let row = DiffRow {
            tag: if k.overflow {
                "<overflow>".into()
            } else {
                k.tag.to_string()
            },
            value: k.tag,
            pool: k.pool,
            overflow: k.overflow,
            allocs: c(|r| r.allocs),
            frees: c(|r| r.frees),
            diff: c(|r| r.diff),
            bytes: c(|r| r.bytes),
            per_alloc: ra.map_or(0, |r| r.per_alloc()),
            driver: ra.or(rb).and_then(|r| r.driver.clone()),
            status: match (rb, ra) {
                (None, Some(_)) => RowStatus::New,
                (Some(_), None) => RowStatus::Gone,
                _ => RowStatus::Changed,
            },
        };
        let moved = [row.allocs, row.frees, row.diff, row.bytes]
            .iter()
            .any(|c| c.delta != 0);
        if moved {
            rows.push(row);
        }
    }
    let tc = |x: &PoolCounters, y: &PoolCounters| TotalsChange {
        allocs: Change::new(x.allocs, y.allocs),
        frees: Change::new(x.frees, y.frees),
        diff: Change::new(x.diff, y.diff),
        bytes: Change::new(x.bytes, y.bytes),
    };
    let same_boot = before.same_boot(after);
    let mut warnings = Vec::new();
    if same_boot == Some(false) {
        warnings.push(format!(
            "{} and {} are different boots (nt at {} and {}): the counters restart at boot, so these changes compare unrelated numbers",
            before.source.name, after.source.name, before.kernel.kern_base, after.kernel.kern_base
        ));
    }
    for s in [before, after].into_iter().filter(|s| s.diff_only) {
        warnings.push(format!(
            "{} has outstanding allocations only (no Allocs/Frees columns): the Allocs and Frees changes are not meaningful, Diff and Bytes are",
            s.source.name
        ));
    }
    let elapsed_secs = elapsed_ticks(before, after).map(|t| t as f64 / 1e7);
    if elapsed_secs.is_some_and(|s| s < 0.0) {
        warnings.push(format!(
            "{} was taken before {}: the changes run backwards in time",
            after.source.name, before.source.name
        ));
    }
    SnapshotDiff {
        schema: DIFF_SCHEMA.into(),
        before: before.into(),
        after: after.into(),
        elapsed_secs,
        same_boot,
        totals: DiffTotals {
            nonpaged: tc(&before.totals.nonpaged, &after.totals.nonpaged),
            paged: tc(&before.totals.paged, &after.totals.paged),
        },
        rows,
        warnings: Warning::all(WarningKind::Snapshot, warnings),
    }
}

/// 100 ns ticks from `a` to `b`: uptime within one boot, else wall clock.
fn elapsed_ticks(a: &Snapshot, b: &Snapshot) -> Option<i128> {
    let d = |x: Option<u64>, y: Option<u64>| Some(i128::from(y?) - i128::from(x?));
    if a.same_boot(b) == Some(true)
        && let Some(t) = d(a.time.uptime_100ns, b.time.uptime_100ns)
    {
        return Some(t);
    }
    d(a.time.system_time_filetime, b.time.system_time_filetime)
}
