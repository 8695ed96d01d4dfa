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
use crate::pool::{
    Counters, PoolClass, PoolError, PoolMonColumn, PoolTagDb, TagUsage, TrackerOptions, TrackerSlot,
};
use crate::tag::PoolTag;
use crate::target::Target;
use crate::warning::{Warning, WarningKind};

/// The snapshot schema this version writes. Version 2 gave warnings a
/// kind (`{"kind", "message"}` instead of a string).
pub const SCHEMA: &str = "pooldump.snapshot/2";
/// Older snapshot schemas this version still reads: version 1, whose
/// warnings are strings (read with [`WarningKind::Other`]).
pub const OLDER_SCHEMAS: &[&str] = &["pooldump.snapshot/1"];
/// The diff schema.
pub const DIFF_SCHEMA: &str = "pooldump.diff/2";
/// The trend schema.
pub const TREND_SCHEMA: &str = "pooldump.trend/2";

/// KUSER_SHARED_DATA's kernel address (KI_USER_SHARED_DATA): fixed by the
/// x64 ABI on every Windows build, not a layout detail.
pub const KUSER_SHARED_DATA: KernelVa = KernelVa(0xFFFF_F780_0000_0000);

/// 100 ns ticks per hour.
const TICKS_PER_HOUR: f64 = 36_000_000_000.0;

/// Why a snapshot could not be taken or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The tracker could not be read.
    #[error("{input}: reading the pool tag tracker")]
    Pool {
        /// The source's name.
        input: String,
        /// Why.
        #[source]
        error: PoolError,
    },
    /// The file is not JSON, or not a snapshot's shape.
    #[error("{input}: not a pooldump snapshot (JSON {error})")]
    Json {
        /// The file's name.
        input: String,
        /// What serde_json said.
        #[source]
        error: serde_json::Error,
    },
    /// The document names a schema this version does not read.
    #[error(
        "{input}: schema `{found}` is not one this pooldump reads ({SCHEMA}); a newer pooldump wrote it, or it is not a snapshot"
    )]
    Schema {
        /// The file's name.
        input: String,
        /// The schema it names.
        found: String,
    },
    /// Two rows with the same tag, pool type and overflow flag.
    #[error(
        "{input}: tag {tag} ({pool}) has two rows; a snapshot holds one row per tag and pool type"
    )]
    Duplicate {
        /// The file's name.
        input: String,
        /// The tag, as the row prints it.
        tag: String,
        /// The pool type of both rows.
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
    /// What it was taken from.
    pub source: SourceInfo,
    /// Which kernel and boot.
    pub kernel: KernelInfo,
    /// When it was taken.
    pub time: TimeInfo,
    /// PoolMon's header figures, per pool.
    pub totals: SnapshotTotals,
    /// One row per (tag, pool type), in tag order.
    pub rows: Vec<SnapshotRow>,
    /// What was missing or odd when the snapshot was taken.
    #[serde(default)]
    pub warnings: Vec<Warning>,
    /// The source gave outstanding allocations only (`!poolused` without
    /// flag 1): each row's Allocs is its Diff and Frees is 0, so changes
    /// of Allocs and Frees mean nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub diff_only: bool,
}

/// What the snapshot was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Dump, live target, or imported text.
    pub kind: SourceKind,
    /// The dump's path, or the KDNET peer's address.
    pub name: String,
}

/// What kind of source a snapshot was taken from.
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

/// Where a snapshot's clocks were read.
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
    /// NonPaged pool, all tags summed.
    pub nonpaged: PoolCounters,
    /// Paged pool, all tags summed.
    pub paged: PoolCounters,
    /// Distinct tags with any activity.
    pub tags: u64,
}

/// One pool's allocation counters, all tags summed (PoolMon's header line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PoolCounters {
    /// Allocations made since boot.
    pub allocs: u64,
    /// Frees since boot.
    pub frees: u64,
    /// Allocs − Frees: allocations outstanding.
    pub diff: u64,
    /// Bytes allocated now.
    pub bytes: u64,
}

impl From<Counters> for PoolCounters {
    /// PoolMon's header line of a pool: its counters and their Diff
    /// (Allocs − Frees, 0 when Frees ran ahead).
    fn from(c: Counters) -> Self {
        Self {
            allocs: c.allocs,
            frees: c.frees,
            diff: c.allocs.saturating_sub(c.frees),
            bytes: c.bytes,
        }
    }
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
    /// Allocations of this tag since boot (PoolMon's Allocs; PoolTrackTable's NonPagedAllocs or
    /// PagedAllocs).
    pub allocs: u64,
    /// Frees of this tag since boot (PoolMon's Frees).
    pub frees: u64,
    /// Allocs − Frees: allocations outstanding (PoolMon's Diff).
    pub diff: u64,
    /// Bytes allocated now (PoolMon's Bytes).
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
    /// The tag.
    pub tag: PoolTag,
    /// Its pool type.
    pub pool: PoolClass,
    /// The tracker's overflow slot.
    pub overflow: bool,
}

impl SnapshotRow {
    /// A tag's row from PoolMon's counters: Diff is Allocs - Frees (0 when
    /// Frees is larger, as the kernel raises Allocs to Frees); not the
    /// tracker's overflow slot, no driver.
    pub fn new(tag: PoolTag, pool: PoolClass, allocs: u64, frees: u64, bytes: u64) -> Self {
        Self {
            tag_text: tag.to_string(),
            tag,
            pool,
            allocs,
            frees,
            diff: allocs.saturating_sub(frees),
            bytes,
            overflow: false,
            driver: None,
        }
    }

    /// What identifies this row across snapshots.
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
            Some(s) if s == SCHEMA || OLDER_SCHEMAS.contains(&s) => {}
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

mod capture;
mod diff;
mod trend;

pub use capture::*;
pub use diff::*;
pub use trend::*;

// ---------------------------------------------------------------------------
// Field encodings

/// A tag's ULONG as `0x6b61654c`.
mod hex_tag {
    use super::PoolTag;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &PoolTag, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:#010x}", t.value()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PoolTag, D::Error> {
        super::de_hex(d, "tag value", 32, |h| {
            u32::from_str_radix(h, 16).map(PoolTag)
        })
    }
}

/// A `0x...` string of a `bits`-bit number, its digits read by `parse`;
/// `what` names the field in errors (`tag value`, `address`).
fn de_hex<'de, D, T, E>(
    d: D,
    what: &str,
    bits: u32,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    use serde::de::Error;
    let s = String::deserialize(d)?;
    let hex = s
        .strip_prefix("0x")
        .ok_or_else(|| Error::custom(format!("{what} {s:?} is not 0x...")))?;
    parse(hex).map_err(|_| Error::custom(format!("{what} {s:?} is not a {bits}-bit hex number")))
}

/// A kernel address as `0xfffff80261000000`.
mod hex_va {
    use super::KernelVa;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &KernelVa, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:#x}", v.0))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KernelVa, D::Error> {
        super::de_hex(d, "address", 64, |h| {
            u64::from_str_radix(h, 16).map(KernelVa)
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
mod tests;
