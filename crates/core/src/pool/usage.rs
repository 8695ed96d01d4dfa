//! What the tracker says: PoolMon's rows (one per tag and pool type), its
//! header's totals, and where the tables were. [`super::tracker`] reads
//! them.

use serde::Serialize;

use super::PoolClass;
use crate::addr::KernelVa;
use crate::tag::PoolTag;
use crate::warning::Warning;

/// Where a row's counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TrackerSlot {
    /// `PoolTrackTable[index]` (and the same index of every per-CPU table).
    Hashed {
        /// The entry's index.
        index: u64,
    },
    /// `PoolTrackTableExpansion[index]`.
    Expansion {
        /// The entry's index.
        index: u64,
    },
    /// The keyless last slot, charged when a tag found no slot at all.
    Overflow,
}

impl TrackerSlot {
    /// `hashed`, `expansion` or `overflow`, as JSON's `kind` spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            TrackerSlot::Hashed { .. } => "hashed",
            TrackerSlot::Expansion { .. } => "expansion",
            TrackerSlot::Overflow => "overflow",
        }
    }
}

/// One PoolMon row: a tag's usage in one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagUsage {
    /// The tag (PoolTrackTable's Key).
    pub tag: PoolTag,
    /// The pool type: the entry's NonPaged* or Paged* counters.
    pub pool: PoolClass,
    /// Allocations since boot, summed over the processors' tables (NonPagedAllocs or PagedAllocs).
    pub allocs: u64,
    /// Frees since boot, summed likewise (NonPagedFrees or PagedFrees).
    pub frees: u64,
    /// Allocs - Frees: allocations still live.
    pub diff: u64,
    /// Bytes charged to live allocations.
    pub bytes: u64,
    /// Bytes / Diff (0 when Diff is 0).
    pub per_alloc: u64,
    /// Where the counters live.
    pub slot: TrackerSlot,
    /// The summed Allocs were below Frees and were raised to Frees, as
    /// ExGetPoolTagInfo does (a 32-bit counter wrapped, or counters were
    /// caught mid-update).
    pub clamped: bool,
    /// The driver that owns the tag, when known (pooltag.txt or the
    /// driver-image search).
    pub driver: Option<String>,
    /// pooltag.txt's description.
    pub description: Option<String>,
}

impl TagUsage {
    /// The tag as PoolMon prints it; `<overflow>` for the keyless slot.
    pub fn tag_text(&self) -> String {
        match self.slot {
            TrackerSlot::Overflow => "<overflow>".into(),
            _ => self.tag.to_string(),
        }
    }

    /// The row as reports print it (analyze's JSON, the fleet's tags table).
    pub fn poolmon_row(&self) -> PoolMonRow {
        PoolMonRow {
            tag: self.tag_text(),
            value: self.tag.value(),
            pool: self.pool.poolmon(),
            allocs: self.allocs,
            frees: self.frees,
            diff: self.diff,
            bytes: self.bytes,
            per_alloc: self.per_alloc,
            driver: self.driver.clone(),
            description: self.description.clone(),
            slot: self.slot.kind(),
            clamped: self.clamped,
        }
    }
}

/// A [`TagUsage`] as reports print it: PoolMon's columns as text and
/// numbers, then where the tag comes from. `analyze --json` writes these
/// (the tag's value in hex), the fleet's tags table holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolMonRow {
    /// The tag as PoolMon prints it (`<overflow>` for the keyless slot).
    pub tag: String,
    /// The tag's ULONG value (its four bytes little-endian), e.g.
    /// 0x6b61654c for `Leak`; JSON gives it in hex.
    #[serde(serialize_with = "hex_u32")]
    pub value: u32,
    /// PoolMon's Type column: `Nonp` or `Paged`.
    #[serde(rename = "type")]
    pub pool: &'static str,
    /// PoolMon's Allocs: allocations since boot.
    pub allocs: u64,
    /// PoolMon's Frees: frees since boot.
    pub frees: u64,
    /// PoolMon's Diff: allocations live.
    pub diff: u64,
    /// PoolMon's Bytes: bytes live.
    pub bytes: u64,
    /// PoolMon's Per Alloc: Bytes / Diff (0 when Diff is 0).
    pub per_alloc: u64,
    /// PoolMon's Mapped_Driver: the driver that owns the tag, when known.
    pub driver: Option<String>,
    /// pooltag.txt's description.
    pub description: Option<String>,
    /// `hashed`, `expansion` or `overflow` ([`TrackerSlot::kind`]).
    pub slot: &'static str,
    /// Allocs was raised to Frees ([`TagUsage::clamped`]).
    pub clamped: bool,
}

impl PoolMonRow {
    /// PoolMon's cells: Tag, Type, Allocs, Frees, Diff, Bytes, Per Alloc.
    pub fn poolmon_cells(&self) -> [String; 7] {
        [
            self.tag.clone(),
            self.pool.into(),
            self.allocs.to_string(),
            self.frees.to_string(),
            self.diff.to_string(),
            self.bytes.to_string(),
            self.per_alloc.to_string(),
        ]
    }
}

fn hex_u32<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// Raw summed counters of one pool class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Allocations since boot, all tags summed.
    pub allocs: u64,
    /// Frees since boot, all tags summed.
    pub frees: u64,
    /// Bytes allocated now, all tags summed.
    pub bytes: u64,
}

/// PoolMon's header figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// PagedPool.
    pub paged: Counters,
    /// NonPagedPool (NX included).
    pub nonpaged: Counters,
    /// Distinct tags with any activity.
    pub tags: u64,
}

impl Totals {
    /// Both pools' counters summed (a session's figures, which `!session`
    /// gives as one line).
    pub fn both_pools(&self) -> Counters {
        let (p, n) = (&self.paged, &self.nonpaged);
        Counters {
            allocs: p.allocs.wrapping_add(n.allocs),
            frees: p.frees.wrapping_add(n.frees),
            bytes: p.bytes.wrapping_add(n.bytes),
        }
    }
}

/// What was read, for `pooldump symbols`-style diagnostics and JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrackerInfo {
    /// nt!PoolTrackTable: the global table's address.
    pub table: KernelVa,
    /// nt!PoolTrackTableSize: entries in the table (2^n + 1, the last the overflow slot).
    pub size: u64,
    /// nt!PoolTrackTableMask (2^n − 1): the hash's mask.
    pub mask: u64,
    /// The size of one POOL_TRACKER_TABLE entry, in bytes, from the symbols.
    pub entry_size: u64,
    /// Width of the Allocs/Frees counters (32 in the 0x28-byte layout).
    pub counter_bits: u32,
    /// KeNumberProcessors.
    pub processors: u64,
    /// Per-processor tables summed (`ExPoolTagTables[0]` is the global one).
    pub per_cpu_tables: Vec<KernelVa>,
    /// nt!PoolTrackTableExpansion (0 when the symbols lack it).
    pub expansion: KernelVa,
    /// nt!PoolTrackTableExpansionSize: its entries.
    pub expansion_size: u64,
    /// Expansion entries in use (up to the first empty key).
    pub expansion_used: u64,
}

/// The tracker's view of the pool.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolUsage {
    /// One row per tag and pool type with any activity, in tag order.
    pub rows: Vec<TagUsage>,
    /// PoolMon's header figures.
    pub totals: Totals,
    /// Where the tables are and how they were read.
    pub tracker: TrackerInfo,
    /// What was missing or odd (unreadable pages, clamped rows, ...).
    pub warnings: Vec<Warning>,
}
