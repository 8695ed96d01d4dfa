//! Leak hunting over time: snapshots of the per-tag pool table, the
//! difference between two of them, and the trend over many.
//!
//! The seeds' workflow is PoolMon sorted by bytes, a screenshot every half
//! hour, and a person comparing them to find the tag whose bytes keep
//! growing. A [`Snapshot`] is that screenshot as data (PoolMon's rows plus
//! where and when they were taken), [`diff`] is the comparison of two, and
//! [`trend`] is the comparison of many: a least-squares slope of Bytes and
//! of Diff over time per tag, with two measures of how steady the growth is
//! (the fit's R² and the fraction of intervals in which the tag grew), so a
//! tag that jumped once does not rank as a leak.
//!
//! Snapshots are JSON documents with a versioned schema ([`SCHEMA`],
//! documented in docs/leak-hunting.md): additions keep the version, any
//! change that would make an older reader misread a file bumps it.
//!
//! ```
//! use pooldump_core::snapshot::{self, Snapshot, TrendOptions};
//! # fn demo(files: &[(&str, Vec<u8>)]) -> Result<(), snapshot::SnapshotError> {
//! let snaps: Vec<Snapshot> = files
//!     .iter()
//!     .map(|(name, bytes)| Snapshot::from_json(bytes, name))
//!     .collect::<Result<_, _>>()?;
//! let t = snapshot::trend(&snaps, &TrendOptions::default());
//! if let Some(top) = t.tags.first() {
//!     println!("{} {}: {:+.0} bytes/hour ({})", top.tag, top.pool, top.bytes_per_hour, top.verdict);
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::addr::KernelVa;
use crate::dump::{FileTime, UpTime};
use crate::memory::Memory;
use crate::pool::{PoolClass, PoolError, PoolTagDb, TagUsage, TrackerOptions, TrackerSlot};
use crate::tag::PoolTag;
use crate::target::Target;

/// The snapshot schema this version writes and reads.
pub const SCHEMA: &str = "pooldump.snapshot/1";
/// The diff schema.
pub const DIFF_SCHEMA: &str = "pooldump.diff/1";
/// The trend schema.
pub const TREND_SCHEMA: &str = "pooldump.trend/1";

/// KUSER_SHARED_DATA's kernel address (KI_USER_SHARED_DATA): fixed by the
/// x64 ABI on every Windows build, not a layout detail.
pub const KUSER_SHARED_DATA: KernelVa = KernelVa(0xFFFF_F780_0000_0000);

/// 100 ns ticks per hour.
const TICKS_PER_HOUR: f64 = 36_000_000_000.0;

/// Why a snapshot could not be taken or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{input}: reading the pool tag tracker")]
    Pool {
        input: String,
        #[source]
        error: PoolError,
    },
    #[error("{input}: not a pooldump snapshot (JSON {error})")]
    Json {
        input: String,
        #[source]
        error: serde_json::Error,
    },
    #[error(
        "{input}: schema `{found}` is not one this pooldump reads ({SCHEMA}); a newer pooldump wrote it, or it is not a snapshot"
    )]
    Schema { input: String, found: String },
    #[error(
        "{input}: tag {tag} ({pool}) has two rows; a snapshot holds one row per tag and pool type"
    )]
    Duplicate {
        input: String,
        tag: String,
        pool: PoolClass,
    },
}

// ---------------------------------------------------------------------------
// The snapshot model

/// One moment's per-tag pool table with where and when it was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SCHEMA`].
    pub schema: String,
    pub source: SourceInfo,
    pub kernel: KernelInfo,
    pub time: TimeInfo,
    pub totals: SnapshotTotals,
    /// One row per (tag, pool type), in tag order.
    pub rows: Vec<SnapshotRow>,
    /// What was missing or odd when the snapshot was taken.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The source gave outstanding allocations only (`!poolused` without
    /// flag 1): each row's Allocs is its Diff and Frees is 0, so changes
    /// of Allocs and Frees mean nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub diff_only: bool,
}

/// What the snapshot was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub kind: SourceKind,
    /// The dump's path, or the KDNET peer's address.
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A crash dump (MEMORY.DMP).
    Dump,
    /// A live kernel over KDNET.
    Kdnet,
    /// PoolMon's display or its /n log, imported as text.
    Poolmon,
    /// WinDbg `!poolused` output, imported as text.
    Poolused,
}

/// Which kernel: enough to tell whether two snapshots are one boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// Windows build number.
    pub build: u32,
    /// nt's base (KASLR moves it at every boot on Windows 8.1 and later).
    #[serde(with = "hex_va")]
    pub kern_base: KernelVa,
    /// nt's PDB and symbol-store key (`ntkrnlmp.pdb 0656...1`).
    #[serde(default)]
    pub pdb: Option<String>,
    /// KeNumberProcessors (per-processor tracker tables summed).
    pub processors: u64,
    /// KUSER_SHARED_DATA.NumberOfPhysicalPages, when the symbols have it.
    #[serde(default)]
    pub physical_pages: Option<u64>,
}

/// When: the machine's clocks, and the host's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TimeInfo {
    /// The machine's wall clock as a FILETIME (100 ns since 1601 UTC):
    /// authoritative; `system_time` is its text.
    #[serde(default)]
    pub system_time_filetime: Option<u64>,
    /// RFC 3339, for people.
    #[serde(default)]
    pub system_time: Option<String>,
    /// Time since boot in 100 ns units (InterruptTime / SystemUpTime):
    /// authoritative; `uptime` is its text.
    #[serde(default)]
    pub uptime_100ns: Option<u64>,
    /// `3d 04:05:06`, for people.
    #[serde(default)]
    pub uptime: Option<String>,
    /// Where the two clocks were read.
    #[serde(default)]
    pub clock_source: Option<ClockSource>,
    /// When the host took the snapshot (Unix seconds).
    #[serde(default)]
    pub taken_unix: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockSource {
    /// KUSER_SHARED_DATA.InterruptTime and SystemTime (layouts from the
    /// symbols).
    KuserSharedData,
    /// The crash dump header's SystemUpTime and SystemTime.
    DumpHeader,
    /// Given on the command line (`--time`).
    Given,
    /// Stated in the text (WinDbg's `Debug session time:`).
    TextFile,
    /// The text file's modification time (the text states none).
    FileModified,
}

/// PoolMon's header figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SnapshotTotals {
    pub nonpaged: PoolCounters,
    pub paged: PoolCounters,
    /// Distinct tags with any activity.
    pub tags: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PoolCounters {
    pub allocs: u64,
    pub frees: u64,
    pub diff: u64,
    pub bytes: u64,
}

/// One PoolMon row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRow {
    /// The tag as PoolMon prints it (for people; `value` is
    /// authoritative).
    #[serde(rename = "tag")]
    pub tag_text: String,
    /// The tag's ULONG, `0x6b61654c` for `Leak`.
    #[serde(rename = "value", with = "hex_tag")]
    pub tag: PoolTag,
    /// `Nonp` or `Paged`.
    #[serde(rename = "type", with = "poolmon_type")]
    pub pool: PoolClass,
    pub allocs: u64,
    pub frees: u64,
    pub diff: u64,
    pub bytes: u64,
    /// The tracker's keyless last slot (tags that found no slot).
    #[serde(default, skip_serializing_if = "is_false")]
    pub overflow: bool,
    /// The owning driver (pooltag.txt, or a search of the loaded images;
    /// a trailing `?` marks a weak image match).
    #[serde(default)]
    pub driver: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What identifies a row across snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    pub tag: PoolTag,
    pub pool: PoolClass,
    pub overflow: bool,
}

impl SnapshotRow {
    pub fn key(&self) -> RowKey {
        RowKey {
            tag: self.tag,
            pool: self.pool,
            overflow: self.overflow,
        }
    }

    /// Bytes / Diff, PoolMon's Per Alloc.
    pub fn per_alloc(&self) -> u64 {
        self.bytes.checked_div(self.diff).unwrap_or(0)
    }

    fn from_usage(u: &TagUsage) -> Self {
        Self {
            tag_text: u.tag_text(),
            tag: u.tag,
            pool: u.pool,
            allocs: u.allocs,
            frees: u.frees,
            diff: u.diff,
            bytes: u.bytes,
            overflow: u.slot == TrackerSlot::Overflow,
            driver: u.driver.clone(),
        }
    }
}

impl Snapshot {
    /// Parse and check a snapshot document; `input` names it in errors.
    pub fn from_json(bytes: &[u8], input: &str) -> Result<Self, SnapshotError> {
        // Editors on Windows save JSON with a UTF-8 byte-order mark.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        // The schema is read first so a newer file says so rather than
        // failing on a field it changed.
        #[derive(Deserialize)]
        struct Probe {
            schema: Option<String>,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(|error| SnapshotError::Json {
            input: input.into(),
            error,
        })?;
        match probe.schema.as_deref() {
            Some(SCHEMA) => {}
            found => {
                return Err(SnapshotError::Schema {
                    input: input.into(),
                    found: found.unwrap_or("(none)").into(),
                });
            }
        }
        let mut s: Snapshot =
            serde_json::from_slice(bytes).map_err(|error| SnapshotError::Json {
                input: input.into(),
                error,
            })?;
        let mut seen = BTreeSet::new();
        for r in &mut s.rows {
            if !seen.insert(r.key()) {
                return Err(SnapshotError::Duplicate {
                    input: input.into(),
                    tag: r.tag.to_string(),
                    pool: r.pool,
                });
            }
            // The value is authoritative; the text is regenerated so a
            // hand-edited file cannot make the two disagree on screen.
            r.tag_text = if r.overflow {
                "<overflow>".into()
            } else {
                r.tag.to_string()
            };
        }
        Ok(s)
    }

    /// The document, pretty-printed, with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a snapshot serialises");
        s.push('\n');
        s
    }

    /// The row of `key`, if the tag was active.
    pub fn row(&self, key: RowKey) -> Option<&SnapshotRow> {
        self.rows.iter().find(|r| r.key() == key)
    }

    /// The boot's start as a FILETIME (wall clock minus uptime), when both
    /// clocks are known.
    pub fn boot_time(&self) -> Option<u64> {
        self.time
            .system_time_filetime?
            .checked_sub(self.time.uptime_100ns?)
    }

    /// Are `self` and `other` the same boot of the same kernel? `None` when
    /// it cannot be told.
    pub fn same_boot(&self, other: &Snapshot) -> Option<bool> {
        // A text import does not know its kernel: it cannot be told.
        if self.kernel.build == 0 || other.kernel.build == 0 {
            return None;
        }
        if self.kernel.build != other.kernel.build
            || self.kernel.kern_base != other.kernel.kern_base
            || (self.kernel.pdb.is_some()
                && other.kernel.pdb.is_some()
                && self.kernel.pdb != other.kernel.pdb)
        {
            return Some(false);
        }
        // Clock corrections move the computed boot time a little; a reboot
        // moves it by at least the time the machine was down.
        const SLACK: u64 = 5 * 60 * 10_000_000;
        match (self.boot_time(), other.boot_time()) {
            (Some(a), Some(b)) => Some(a.abs_diff(b) <= SLACK),
            _ => None,
        }
    }

    /// A one-line description for headers and messages.
    pub fn label(&self) -> String {
        let when = self
            .time
            .system_time
            .clone()
            .or_else(|| self.time.uptime.as_ref().map(|u| format!("up {u}")))
            .unwrap_or_else(|| "time unknown".into());
        format!("{} ({when})", self.source.name)
    }
}

// ---------------------------------------------------------------------------
// Taking a snapshot

/// What the caller knows about the source.
#[derive(Debug, Clone)]
pub struct CaptureContext {
    pub source: SourceInfo,
    /// The build number the source reported (dump header, GetVersion).
    pub build: u32,
    /// Clocks the source carries itself (a dump header), used when
    /// KUSER_SHARED_DATA cannot be read.
    pub header_clock: Option<(FileTime, UpTime)>,
}

/// How to read the rows.
#[derive(Debug, Clone, Default)]
pub struct CaptureOptions<'a> {
    pub tracker: TrackerOptions,
    /// pooltag.txt for the driver column.
    pub pooltag: Option<&'a PoolTagDb>,
    /// Search the loaded images for tags pooltag.txt lacks.
    pub search_images: bool,
}

/// Take a snapshot of a kernel that is not running (a dump, or a live
/// target stopped in the debugger).
pub fn capture<M: Memory>(
    target: &Target<M>,
    ctx: &CaptureContext,
    opts: &CaptureOptions<'_>,
) -> Result<Snapshot, SnapshotError> {
    let usage = target
        .pool_usage(&opts.tracker)
        .map_err(|error| SnapshotError::Pool {
            input: ctx.source.name.clone(),
            error,
        })?;
    let mut usage_rows = usage.rows.clone();
    target.attribute(&mut usage_rows, opts.pooltag, opts.search_images);
    let mut rows: Vec<SnapshotRow> = usage_rows.iter().map(SnapshotRow::from_usage).collect();
    rows.sort_by_key(|r| (r.tag.bytes(), r.pool, r.overflow));

    let mut warnings = usage.warnings.clone();
    let kuser = read_kuser(&target.mem, &target.symbols);
    let (system, uptime, clock_source) = match (&kuser, ctx.header_clock) {
        (Ok(k), _) => (
            Some(k.system_time),
            Some(k.interrupt_time),
            Some(ClockSource::KuserSharedData),
        ),
        (Err(_), Some((st, up))) => (Some(st.0), Some(up.0), Some(ClockSource::DumpHeader)),
        (Err(e), None) => {
            warnings.push(format!(
                "the machine's clocks are unknown ({e}); trends over these snapshots use the host's clock"
            ));
            (None, None, None)
        }
    };
    let counters = |c: &crate::pool::Counters| PoolCounters {
        allocs: c.allocs,
        frees: c.frees,
        diff: c.allocs.saturating_sub(c.frees),
        bytes: c.bytes,
    };
    let cv = target.kernel.image.codeview.as_ref();
    Ok(Snapshot {
        schema: SCHEMA.into(),
        source: ctx.source.clone(),
        kernel: KernelInfo {
            build: ctx.build,
            kern_base: target.kern_base(),
            pdb: cv.map(|c| format!("{} {}", c.pdb_name, c.store_key)),
            processors: usage.tracker.processors,
            physical_pages: kuser.as_ref().ok().and_then(|k| k.physical_pages),
        },
        time: TimeInfo {
            system_time_filetime: system,
            system_time: system.and_then(|t| FileTime(t).rfc3339()),
            uptime_100ns: uptime,
            uptime: uptime.map(|u| UpTime(u).to_string()),
            clock_source,
            taken_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
        },
        totals: SnapshotTotals {
            nonpaged: counters(&usage.totals.nonpaged),
            paged: counters(&usage.totals.paged),
            tags: usage.totals.tags,
        },
        rows,
        warnings,
        diff_only: false,
    })
}

/// What KUSER_SHARED_DATA says.
#[derive(Debug, Clone, Copy)]
struct KuserClocks {
    interrupt_time: u64,
    system_time: u64,
    physical_pages: Option<u64>,
}

/// Read InterruptTime and SystemTime. Each is a KSYSTEM_TIME that the
/// clock interrupt updates as High2Time, LowPart, High1Time, so a reader
/// that sees High1Time == High2Time has a consistent value; a dump taken
/// mid-update fails that check and the caller falls back to the header.
fn read_kuser<M: Memory + ?Sized>(
    mem: &M,
    syms: &crate::symbols::KernelSymbols,
) -> Result<KuserClocks, String> {
    const T: &str = "_KUSER_SHARED_DATA";
    let size = syms
        .type_size(T)
        .ok_or("the symbols lack _KUSER_SHARED_DATA")?;
    // Bounded by the page the structure lives in, whatever the symbols say.
    let size = size.min(crate::addr::PAGE_SIZE) as usize;
    let mut page = vec![0u8; size];
    mem.read_virtual(KUSER_SHARED_DATA, &mut page)
        .map_err(|e| format!("KUSER_SHARED_DATA at {KUSER_SHARED_DATA}: {e}"))?;
    let ksystem_time = |name: &str| -> Result<u64, String> {
        let f = |part: &str| {
            syms.field(T, &format!("{name}.{part}"))
                .map_err(|e| e.to_string())?
                .read_u64(&page)
                .ok_or_else(|| format!("{T}.{name}.{part} lies outside the structure"))
        };
        let (low, h1, h2) = (f("LowPart")?, f("High1Time")?, f("High2Time")?);
        if h1 != h2 {
            return Err(format!(
                "{T}.{name} was caught mid-update (High1Time {h1:#x}, High2Time {h2:#x})"
            ));
        }
        Ok((h1 << 32) | (low & 0xFFFF_FFFF))
    };
    let interrupt_time = ksystem_time("InterruptTime")?;
    let system_time = ksystem_time("SystemTime")?;
    if interrupt_time == 0 || system_time == 0 {
        return Err("KUSER_SHARED_DATA's clocks are zero".into());
    }
    let physical_pages = syms
        .field(T, "NumberOfPhysicalPages")
        .ok()
        .and_then(|f| f.read_u64(&page));
    Ok(KuserClocks {
        interrupt_time,
        system_time,
        physical_pages,
    })
}

// ---------------------------------------------------------------------------
// Two snapshots

/// A counter before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Change {
    pub before: u64,
    pub after: u64,
    /// after - before (saturated to i64).
    pub delta: i64,
}

impl Change {
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
    pub tag: String,
    #[serde(with = "hex_tag")]
    pub value: PoolTag,
    #[serde(rename = "type", with = "poolmon_type")]
    pub pool: PoolClass,
    #[serde(default, skip_serializing_if = "is_false")]
    pub overflow: bool,
    pub allocs: Change,
    pub frees: Change,
    pub diff: Change,
    pub bytes: Change,
    /// Bytes / Diff after.
    pub per_alloc: u64,
    pub driver: Option<String>,
    /// `new` (no row before), `gone` (no row after) or `changed`.
    pub status: RowStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowStatus {
    Changed,
    New,
    Gone,
}

impl DiffRow {
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
    pub source: String,
    pub system_time: Option<String>,
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
    pub allocs: Change,
    pub frees: Change,
    pub diff: Change,
    pub bytes: Change,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiffTotals {
    pub nonpaged: TotalsChange,
    pub paged: TotalsChange,
}

/// The difference between two snapshots: every row whose counters moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDiff {
    /// [`DIFF_SCHEMA`].
    pub schema: String,
    pub before: SnapshotRef,
    pub after: SnapshotRef,
    /// Seconds between the two, from the machine's clocks.
    pub elapsed_secs: Option<f64>,
    /// Whether both are one boot (counters restart at boot, so a diff
    /// across a reboot compares unrelated numbers).
    pub same_boot: Option<bool>,
    pub totals: DiffTotals,
    /// Rows in tag order; [`DiffSort`] ranks them.
    pub rows: Vec<DiffRow>,
    pub warnings: Vec<String>,
}

impl SnapshotDiff {
    /// No row changed.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// What the diff ranks by: the change of a column, largest growth first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiffSort {
    #[default]
    Bytes,
    Diff,
    Allocs,
    Frees,
    /// Per Alloc after (no change column).
    PerAlloc,
    Tag,
}

impl DiffSort {
    /// Names and PoolMon's letters (B, S or D, A, F, M, T).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bytes" | "b" | "B" => Self::Bytes,
            "diff" | "s" | "S" | "d" | "D" => Self::Diff,
            "allocs" | "a" | "A" => Self::Allocs,
            "frees" | "f" | "F" => Self::Frees,
            "per-alloc" | "m" | "M" => Self::PerAlloc,
            "tag" | "t" | "T" => Self::Tag,
            _ => return None,
        })
    }

    /// Sort rows: largest growth first (tags ascending for `Tag`), ties by
    /// tag and type so the order is stable.
    pub fn sort(self, rows: &mut [DiffRow]) {
        let tag_key = |r: &DiffRow| (r.value.bytes(), r.pool, r.overflow);
        let key = |r: &DiffRow| -> i128 {
            match self {
                Self::Bytes => r.bytes.delta.into(),
                Self::Diff => r.diff.delta.into(),
                Self::Allocs => r.allocs.delta.into(),
                Self::Frees => r.frees.delta.into(),
                Self::PerAlloc => r.per_alloc.into(),
                Self::Tag => 0,
            }
        };
        rows.sort_by(|a, b| key(b).cmp(&key(a)).then(tag_key(a).cmp(&tag_key(b))));
    }
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
        warnings,
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

// ---------------------------------------------------------------------------
// Many snapshots

/// Which counter the trend ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrendMetric {
    #[default]
    Bytes,
    Diff,
}

/// Thresholds of "steady".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrendOptions {
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
    Flat,
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
    pub source: String,
    /// Hours since the first snapshot (snapshot index on the `index` axis).
    pub hours: f64,
    pub system_time: Option<String>,
    pub uptime: Option<String>,
}

/// One tag over the series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagTrend {
    /// 1 = most likely leak.
    pub rank: usize,
    pub tag: String,
    #[serde(with = "hex_tag")]
    pub value: PoolTag,
    #[serde(rename = "type", with = "poolmon_type")]
    pub pool: PoolClass,
    #[serde(default, skip_serializing_if = "is_false")]
    pub overflow: bool,
    pub driver: Option<String>,
    /// Bytes at each point (0 where the tag had no row).
    pub bytes: Vec<u64>,
    /// Diff (live allocations) at each point.
    pub diff: Vec<u64>,
    /// Least-squares slopes.
    pub bytes_per_hour: f64,
    pub diff_per_hour: f64,
    /// R² of the linear fit of the ranking metric (0 for a constant).
    pub r2: f64,
    /// Intervals in which the ranking metric grew, of `intervals`.
    pub grew: usize,
    pub intervals: usize,
    /// Bytes last minus first.
    pub bytes_growth: i64,
    /// Bytes peak minus last: what was given back after the peak (the
    /// seeds' "how much was freed" check).
    pub bytes_released: u64,
    /// slope × R² × grew fraction (of the ranking metric; 0 unless it
    /// grows).
    pub score: f64,
    pub verdict: Verdict,
}

impl TagTrend {
    pub fn key(&self) -> RowKey {
        RowKey {
            tag: self.value,
            pool: self.pool,
            overflow: self.overflow,
        }
    }
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
    pub metric: TrendMetric,
    pub axis: TimeAxis,
    /// The snapshots in time order.
    pub points: Vec<TrendPoint>,
    /// Every tag seen, ranked: steady growth first, then by score.
    pub tags: Vec<TagTrend>,
    pub warnings: Vec<String>,
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
        warnings,
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
struct Fit {
    slope: f64,
    r2: f64,
}

/// Ordinary least squares of `y` on `x`. Hand-written: it is a handful of
/// sums, and a statistics crate would bring far more than it.
fn fit(x: &[f64], y: &[u64]) -> Fit {
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

// ---------------------------------------------------------------------------
// Field encodings

/// A tag's ULONG as `0x6b61654c`.
mod hex_tag {
    use super::PoolTag;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &PoolTag, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:#010x}", t.value()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PoolTag, D::Error> {
        let s = String::deserialize(d)?;
        let hex = s
            .strip_prefix("0x")
            .ok_or_else(|| serde::de::Error::custom(format!("tag value {s:?} is not 0x...")))?;
        u32::from_str_radix(hex, 16).map(PoolTag).map_err(|_| {
            serde::de::Error::custom(format!("tag value {s:?} is not a 32-bit hex number"))
        })
    }
}

/// A kernel address as `0xfffff80261000000`.
mod hex_va {
    use super::KernelVa;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &KernelVa, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:#x}", v.0))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KernelVa, D::Error> {
        let s = String::deserialize(d)?;
        let hex = s
            .strip_prefix("0x")
            .ok_or_else(|| serde::de::Error::custom(format!("address {s:?} is not 0x...")))?;
        u64::from_str_radix(hex, 16).map(KernelVa).map_err(|_| {
            serde::de::Error::custom(format!("address {s:?} is not a 64-bit hex number"))
        })
    }
}

/// PoolMon's Type column: `Nonp` or `Paged`.
mod poolmon_type {
    use super::PoolClass;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &PoolClass, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.poolmon())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PoolClass, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "Nonp" => Ok(PoolClass::NonPaged),
            "Paged" => Ok(PoolClass::Paged),
            _ => Err(serde::de::Error::custom(format!(
                "pool type {s:?} is neither \"Nonp\" nor \"Paged\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, uptime_h: f64, rows: &[(&str, PoolClass, u64, u64, u64)]) -> Snapshot {
        let up = (uptime_h * TICKS_PER_HOUR) as u64;
        let boot = 133_000_000_000_000_000u64;
        Snapshot {
            schema: SCHEMA.into(),
            source: SourceInfo {
                kind: SourceKind::Dump,
                name: name.into(),
            },
            kernel: KernelInfo {
                build: 19041,
                kern_base: KernelVa(0xFFFF_F800_1000_0000),
                pdb: Some("ntkrnlmp.pdb X1".into()),
                processors: 2,
                physical_pages: None,
            },
            time: TimeInfo {
                system_time_filetime: Some(boot + up),
                system_time: FileTime(boot + up).rfc3339(),
                uptime_100ns: Some(up),
                uptime: Some(UpTime(up).to_string()),
                clock_source: Some(ClockSource::DumpHeader),
                taken_unix: None,
            },
            totals: SnapshotTotals::default(),
            rows: rows
                .iter()
                .map(|&(t, pool, allocs, frees, bytes)| SnapshotRow {
                    tag_text: PoolTag::parse(t).unwrap().to_string(),
                    tag: PoolTag::parse(t).unwrap(),
                    pool,
                    allocs,
                    frees,
                    diff: allocs - frees,
                    bytes,
                    overflow: false,
                    driver: None,
                })
                .collect(),
            warnings: vec![],
            diff_only: false,
        }
    }

    const NP: PoolClass = PoolClass::NonPaged;
    const P: PoolClass = PoolClass::Paged;

    #[test]
    fn json_round_trips_and_checks_its_schema() {
        let s = snap("a", 1.0, &[("Leak", NP, 10, 2, 800), ("CM", P, 5, 5, 0)]);
        let back = Snapshot::from_json(s.to_json().as_bytes(), "a.json").unwrap();
        assert_eq!(back, s);
        let v2 = s.to_json().replace(SCHEMA, "pooldump.snapshot/2");
        assert!(matches!(
            Snapshot::from_json(v2.as_bytes(), "b"),
            Err(SnapshotError::Schema { .. })
        ));
        let mut dup = s.clone();
        dup.rows.push(dup.rows[0].clone());
        assert!(matches!(
            Snapshot::from_json(dup.to_json().as_bytes(), "c"),
            Err(SnapshotError::Duplicate { .. })
        ));
        assert!(Snapshot::from_json(b"[1,2]", "d").is_err());
        assert!(Snapshot::from_json(b"{\"schema\":\"pooldump.snapshot/1\"}", "e").is_err());
    }

    #[test]
    fn diff_reports_only_moved_rows() {
        let a = snap("a", 1.0, &[("Leak", NP, 10, 2, 800), ("CM", P, 5, 5, 0)]);
        assert!(diff(&a, &a).is_empty());
        let b = snap(
            "b",
            1.5,
            &[
                ("Leak", NP, 20, 3, 1700),
                ("CM", P, 5, 5, 0),
                ("New", NP, 1, 0, 64),
            ],
        );
        let d = diff(&a, &b);
        assert_eq!(d.elapsed_secs, Some(1800.0));
        assert_eq!(d.same_boot, Some(true));
        let mut rows = d.rows.clone();
        DiffSort::Bytes.sort(&mut rows);
        let tags: Vec<&str> = rows.iter().map(|r| r.tag.as_str()).collect();
        assert_eq!(tags, ["Leak", "New "]);
        assert_eq!(rows[0].bytes, Change::new(800, 1700));
        assert_eq!(rows[0].diff.delta, 9);
        assert_eq!(rows[1].status, RowStatus::New);
        // Backwards: the leak is the biggest drop.
        let back = diff(&b, &a);
        assert!(back.rows.iter().any(|r| r.status == RowStatus::Gone));
    }

    #[test]
    fn a_reboot_is_flagged() {
        let a = snap("a", 5.0, &[("Leak", NP, 10, 2, 800)]);
        let mut b = snap("b", 0.5, &[("Leak", NP, 3, 0, 300)]);
        b.kernel.kern_base = KernelVa(0xFFFF_F800_2000_0000);
        let d = diff(&a, &b);
        assert_eq!(d.same_boot, Some(false));
        assert!(d.warnings.iter().any(|w| w.contains("different boots")));
    }

    #[test]
    fn steady_growth_outranks_a_bigger_burst_and_noise() {
        let noise = [7u64, 1, 9, 3, 8, 2, 6, 4];
        let snaps: Vec<Snapshot> = (0..8)
            .map(|i| {
                let leak = 1000 + 300 * i;
                let burst = if i >= 4 { 90_000 } else { 1000 };
                let n = 5000 + 1000 * noise[i as usize];
                snap(
                    &format!("s{i}"),
                    1.0 + 0.5 * i as f64,
                    &[
                        ("Leak", NP, 10 + i, 0, leak),
                        ("Brst", NP, 10 + i, 0, burst),
                        ("Nois", P, 100 + i, 50, n),
                        ("Flat", P, 3, 1, 100),
                        ("Down", P, 50, 10 + i, 4000 - 100 * i),
                    ],
                )
            })
            .collect();
        // Out of order on purpose: the trend sorts by time.
        let mut shuffled = snaps.clone();
        shuffled.swap(0, 5);
        let t = trend(&shuffled, &TrendOptions::default());
        assert_eq!(t.axis, TimeAxis::Uptime);
        let by = |tag: &str| t.tags.iter().find(|x| x.tag == tag).unwrap();
        assert_eq!(t.tags[0].tag, "Leak");
        assert_eq!(t.tags[0].rank, 1);
        assert_eq!(by("Leak").verdict, Verdict::SteadyGrowth);
        assert!((by("Leak").bytes_per_hour - 600.0).abs() < 1e-6);
        assert!((by("Leak").r2 - 1.0).abs() < 1e-9);
        assert_eq!(by("Leak").grew, 7);
        assert_eq!(by("Brst").verdict, Verdict::UnsteadyGrowth);
        assert_eq!(by("Brst").grew, 1);
        assert!(by("Brst").bytes_growth > by("Leak").bytes_growth);
        assert_ne!(by("Nois").verdict, Verdict::SteadyGrowth);
        assert_eq!(by("Flat").verdict, Verdict::Flat);
        assert_eq!(by("Down").verdict, Verdict::Shrinking);
        assert_eq!(t.tags.last().unwrap().verdict, Verdict::Shrinking);
        assert!(t.warnings.iter().any(|w| w.contains("sorted by time")));
        assert_eq!(t.points[0].source, "s0");
    }

    #[test]
    fn degenerate_series_do_not_divide_by_zero() {
        let a = snap("a", 1.0, &[("Leak", NP, 10, 2, 800)]);
        let t = trend(&[a.clone(), a.clone()], &TrendOptions::default());
        assert!(
            t.tags
                .iter()
                .all(|x| x.bytes_per_hour == 0.0 && x.r2 == 0.0)
        );
        assert!(t.warnings.iter().any(|w| w.contains("same time")));
        let t = trend(&[], &TrendOptions::default());
        assert!(t.tags.is_empty());
        let t = trend(&[a], &TrendOptions::default());
        assert_eq!(t.tags[0].verdict, Verdict::Flat);
    }

    #[test]
    fn least_squares() {
        let f = fit(&[0.0, 1.0, 2.0], &[1, 3, 5]);
        assert!((f.slope - 2.0).abs() < 1e-12 && (f.r2 - 1.0).abs() < 1e-12);
        let f = fit(&[0.0, 1.0, 2.0, 3.0], &[0, 10, 0, 10]);
        assert!(f.r2 < 0.3);
    }
}
