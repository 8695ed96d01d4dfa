//! Ground truth: what the scenario put where, recorded by the builder as it
//! writes memory, so tests compare pooldump against the scenario and never
//! against pooldump itself.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::scenario::PoolKind;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroundTruth {
    pub build: String,
    pub build_number: u32,
    pub seed: u64,
    pub cpus: u32,
    pub kernel: KernelTruth,
    /// VA of every nt global the kit wrote, by name.
    pub symbols: BTreeMap<String, u64>,
    pub regions: Vec<RegionTruth>,
    pub tracker: TrackerTruth,
    /// Expected per-tag usage, one row per (tag, Paged|Nonp).
    pub tags: Vec<TagUsage>,
    pub big_pool: BigPoolTruth,
    /// Every allocation (live or freed) the kit placed in memory.
    pub allocations: Vec<Allocation>,
    pub decoys: Vec<Decoy>,
    /// Pages deliberately absent or unusual.
    pub pages: PageTruth,
    /// The bulk area of benchmark machines (its allocations are computed
    /// by `Machine::bulk_allocations`, not listed here).
    #[serde(default)]
    pub bulk: Option<BulkTruth>,
    /// PsActiveProcessHead's list, in list order.
    #[serde(default)]
    pub processes: Vec<ProcessTruth>,
    /// Each session's own tracker (`!poolused 8`), in scenario order.
    #[serde(default)]
    pub sessions: Vec<SessionTruth>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessTruth {
    /// VA of the `_EPROCESS`.
    pub eprocess: u64,
    pub pid: u64,
    pub name: String,
    /// `Pcb.DirectoryTableBase`: the process's PML4.
    pub dtb: u64,
    /// `_MM_SESSION_SPACE.SessionId` of its session; None for System and
    /// smss.exe.
    pub session_id: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionTruth {
    pub id: u32,
    /// `EPROCESS.Session`: the `_MM_SESSION_SPACE` at its system-wide
    /// address.
    pub global_va: u64,
    /// The same structure in session space (`MmSessionSpace`): the same VA
    /// in every session, mapped only in that session's processes.
    pub session_space_va: u64,
    /// The session's tracker table (a session-space VA: the same in every
    /// session, its contents per session).
    pub table_va: u64,
    /// ExpSessionPoolTrackTableSize: a power of two, no overflow slot.
    pub table_size: u64,
    pub expansion_va: u64,
    pub expansion_size: u64,
    pub expansion_tags: Vec<String>,
    /// Process ids of its processes.
    pub pids: Vec<u64>,
    /// Expected rows (all "Paged": session pool is paged).
    pub tags: Vec<TagUsage>,
    /// The allocations of its tags, in its session pool: legacy pool pages
    /// before 19H1, its own segment heap from 19H1 on, big ones (without a
    /// header) in whole pages or VS chunks. Their addresses are
    /// session-space addresses. All are live but the few freed big ones
    /// its big-page table still names.
    #[serde(default)]
    pub allocations: Vec<Allocation>,
    /// Its pool's `_SEGMENT_HEAP` (19H1+), in session space.
    #[serde(default)]
    pub heap_va: Option<u64>,
    /// Its own big-page table (`_MM_SESSION_SPACE.PoolTrackBigPages`), in
    /// session space; `in_use` is its PoolBigEntriesInUse.
    #[serde(default)]
    pub big_pool: Option<BigPoolTruth>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KernelTruth {
    pub kern_base: u64,
    pub size_of_image: u64,
    pub dtb: u64,
    pub self_map_index: u64,
    pub pdb_name: String,
    pub pdb_guid: String,
    pub pdb_age: u32,
    pub store_key: String,
    pub kd_debugger_data_block: u64,
    pub kdbg_encoded: bool,
    pub ps_loaded_module_list: u64,
    pub modules: Vec<ModuleTruth>,
    /// KUSER_SHARED_DATA InterruptTime, 100 ns since boot.
    pub interrupt_time: u64,
    /// FILETIME of the dump.
    pub system_time: u64,
}

impl KernelTruth {
    /// The loaded module whose file name is `base_name` (`leakydrv.sys`).
    pub fn module(&self, base_name: &str) -> Option<&ModuleTruth> {
        self.modules.iter().find(|m| m.base_name == base_name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleTruth {
    pub base_name: String,
    pub full_name: String,
    pub base: u64,
    pub size: u64,
    pub pdb_name: String,
    pub pdb_guid: String,
    pub pdb_age: u32,
    /// Tags the module's code passes as immediates.
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionTruth {
    pub name: String,
    pub base: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrackerTruth {
    pub entry_size: u64,
    /// PoolTrackTableSize (hashed entries + the overflow slot).
    pub size: u64,
    pub mask: u64,
    pub table_va: u64,
    /// `ExPoolTagTables[0..cpus]`; `[0]` is the global table.
    pub per_cpu_vas: Vec<u64>,
    pub expansion_va: u64,
    pub expansion_size: u64,
    /// Tags that spilled into the expansion table, in table order.
    pub expansion_tags: Vec<String>,
    /// Counters charged to the keyless overflow slot, if any.
    pub overflow: Option<Counters>,
    /// Counter width of the layout (32 for the 0x28 entry, 64 after).
    pub counter_bits: u32,
    /// Keys seeded at boot with zero counters.
    pub hot_tags: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub allocs: u64,
    pub frees: u64,
    pub bytes: u64,
}

/// Where the kernel keeps a tag's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrackerSlot {
    Hashed {
        index: u64,
    },
    Expansion {
        index: u64,
    },
    /// No slot: charged to the keyless overflow entry.
    Overflow,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagUsage {
    pub tag: String,
    pub tag_value: u32,
    /// "Paged" or "Nonp", as PoolMon prints the type.
    pub pool: String,
    /// True totals over the machine's life.
    pub allocs: u64,
    pub frees: u64,
    /// Live allocations (allocs - frees).
    pub diff: u64,
    /// Bytes charged to live allocations.
    pub bytes: u64,
    /// What the kernel's counters hold after summing every CPU: the totals
    /// truncated to the layout's counter width.
    pub reported_allocs: u64,
    pub reported_frees: u64,
    pub slot: TrackerSlot,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BigPoolTruth {
    pub table_va: u64,
    pub table_size: u64,
    pub entry_size: u64,
    /// ExpPoolBigEntriesInUse.
    pub in_use: u64,
    /// Every non-empty entry (live and freed), in table order.
    pub entries: Vec<BigEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BigEntry {
    pub index: u64,
    /// The allocation's address (without the free bit).
    pub va: u64,
    pub tag: String,
    /// POOL_TYPE value as stored.
    pub pool_type: u32,
    pub bytes: u64,
    pub freed: bool,
}

/// The allocator that placed an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllocatorKind {
    /// A chunk on a legacy pool page.
    LegacyPage,
    Lfh,
    Vs,
    /// Whole pages, tracked in the big-page table, no header.
    Big,
    /// A segment-heap allocation of 0xFE1+ bytes in a VS subsegment: no
    /// header, tracked in the big-page table.
    VsBig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Allocation {
    /// Address returned to the caller (header + 0x10 when there is one).
    pub va: u64,
    /// The POOL_HEADER the allocation carries, if any (for cache-aligned
    /// segment-heap allocations, the second, aligned header).
    pub header_va: Option<u64>,
    /// The first header of a cache-aligned allocation (same tag).
    pub extra_header_va: Option<u64>,
    pub tag: String,
    pub tag_value: u32,
    pub pool: PoolKind,
    /// Bytes requested.
    pub size: u64,
    /// Bytes the block occupies (BlockSize * 16 with a header).
    pub block_bytes: u64,
    pub live: bool,
    /// For freed chunks: whether the stale header with the tag is still in
    /// memory (it is not when the allocator reused those bytes).
    pub stale_header: bool,
    pub allocator: AllocatorKind,
    /// Physical address of the header (or of the first byte when there is
    /// no header), when the page is resident.
    pub pa: Option<u64>,
    /// False when the page is paged out (the tracker counts it, the dump
    /// does not hold it).
    pub in_dump: bool,
    pub protected: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decoy {
    pub tag: String,
    /// Virtual address of the tag bytes, when mapped.
    pub va: Option<u64>,
    pub pa: u64,
    /// Where: "allocation-body", "image", "unmapped-frame".
    pub place: String,
    /// Unmapped frames hold well-formed pool pages: a scanner that reads
    /// physical memory finds valid headers there.
    pub well_formed: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PageTruth {
    pub paged_out: Vec<u64>,
    pub transition: Vec<u64>,
    pub large_pages: Vec<u64>,
}

/// What the bulk area holds, for tests and benchmarks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BulkTruth {
    pub va: u64,
    pub pfn: u64,
    /// Pages of small allocations (segment headers included).
    pub pool_pages: u64,
    /// Pages of big allocations, after the pool pages.
    pub big_pages: u64,
    pub live_allocations: u64,
    pub freed_chunks: u64,
    pub tags: u64,
}

impl GroundTruth {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("truth serialises")
    }
}

/// Write a truth file (the series' and the fleet's) as pretty JSON into
/// `dir`; returns its path.
pub(crate) fn write_json(dir: &Path, name: &str, truth: &impl Serialize) -> io::Result<PathBuf> {
    let path = dir.join(name);
    let json = serde_json::to_string_pretty(truth).map_err(io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
}
