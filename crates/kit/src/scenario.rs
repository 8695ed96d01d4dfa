//! Declarative description of a synthetic machine's pool state.
//!
//! A scenario says what the kernel did (which tags were allocated, how
//! often, how big, what is still live, what was freed); the machine builder
//! turns it into memory laid out as the kernel keeps it, and records the
//! ground truth. Scenarios round-trip through JSON so a test or a user can
//! keep them in files.

use serde::{Deserialize, Serialize};

use crate::builds::NtBuild;
pub use crate::pool::format::HeapKeyDerivation;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub build: NtBuild,
    /// Seeds every random choice (KernBase, frames, region bases, per-CPU
    /// splits). The same scenario and seed give the same bytes.
    pub seed: u64,
    /// Logical processors: one per-CPU tracker table each.
    pub cpus: u32,
    /// RAM size in MiB (decides the physical layout and a full dump's size).
    pub ram_mib: u64,
    /// Tags in the order the kernel first saw them (insertion order decides
    /// hash-collision probing and which tags spill into the expansion table).
    pub tags: Vec<TagSpec>,
    #[serde(default)]
    pub tracker: TrackerSpec,
    #[serde(default)]
    pub big_pool: BigPoolSpec,
    /// Seed the global tracker with the boot-time hot tags (zero counters).
    #[serde(default = "yes")]
    pub hot_tags: bool,
    /// Load the synthetic drivers (their code carries their tags as
    /// immediates) into PsLoadedModuleList.
    #[serde(default = "yes")]
    pub drivers: bool,
    /// With `drivers`, load the network pair too: ndis.sys (NDIS's tagged
    /// allocator) and the miniport nicmini.sys that allocates through it
    /// ([`crate::drivers::ndis_pair`]). Off by default, so other machines
    /// keep their module lists.
    #[serde(default)]
    pub ndis: bool,
    /// With `drivers`, load the KMDF pair too: the framework Wdf01000.sys
    /// and kmdfdrv.sys, which calls it through its function table
    /// ([`crate::drivers::kmdf_pair`]). Off by default, like `ndis`.
    #[serde(default)]
    pub kmdf: bool,
    /// Plant this many decoys: tag bytes of scenario tags in places that are
    /// not pool headers (allocation bodies, image data, unmapped frames).
    #[serde(default)]
    pub decoys: u32,
    /// Fraction (0..1) of paged-pool pages that are paged out (PTE not
    /// present, contents not in the dump) or in transition (still readable).
    #[serde(default)]
    pub paged_out: f64,
    #[serde(default)]
    pub transition: f64,
    /// Map part of nonpaged pool with 2 MiB pages.
    #[serde(default = "yes")]
    pub large_pages: bool,
    /// Leave KDDEBUGGER_DATA64 encoded in memory (as a live system without
    /// a debugger keeps it); crash dumps hold it decoded.
    #[serde(default)]
    pub kdbg_encoded: bool,
    #[serde(default)]
    pub bugcheck: BugCheck,
    /// Gigabytes of procedurally generated pool for benchmarks.
    #[serde(default)]
    pub bulk: Option<BulkSpec>,
    /// Seconds since boot at the time of the dump.
    #[serde(default = "default_uptime")]
    pub uptime_secs: u64,
    /// Wall-clock time of the dump, seconds since the Unix epoch.
    #[serde(default = "default_time")]
    pub unix_time: u64,
    /// Terminal-services sessions, each with its processes and its own
    /// session-pool tracker (what `!poolused 8` shows). System and smss.exe
    /// run outside any session and are always there.
    #[serde(default)]
    pub sessions: Vec<SessionSpec>,
    /// The build number the machine states (DUMP_HEADER64.MinorVersion,
    /// KUSER_SHARED_DATA.NtBuildNumber, the live target's version): a test
    /// can put a build whose layouts are not here (24H2) on the nearest
    /// build's. Default: the build's own.
    #[serde(default)]
    pub reported_build: Option<u32>,
    /// How the segment heap's keys are mixed in; default: as Windows does at
    /// the reported build.
    #[serde(default)]
    pub heap_keys: Option<HeapKeyDerivation>,
}

/// One session: its processes and the session-pool tags they charged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// `_MM_SESSION_SPACE.SessionId` (0 is the services session).
    pub id: u32,
    /// Image names of the session's processes (the session's tracker is
    /// read through one of their address spaces, so give it at least one).
    pub processes: Vec<String>,
    /// Session paged-pool tags, in the order the session first saw them.
    pub tags: Vec<SessionTagSpec>,
    /// Extra generated tags (`Sx00`, `Sx01`, ...) charged after `tags`: enough
    /// of them fill the session's hashed table and spill into its
    /// expansion table.
    #[serde(default)]
    pub filler_tags: u32,
}

/// A tag's session paged-pool history: the session tracker's counters,
/// and its `live` allocations in the session's pool
/// (`SessionTruth::allocations`): legacy pool pages (Win7 to 1809) or the
/// session's own segment heap (19H1+); those too big for either in whole
/// pages or VS chunks the session's big-page table names, with up to two
/// of the `freed` ones as its stale entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionTagSpec {
    pub tag: String,
    pub live: u32,
    pub size: SizeSpec,
    #[serde(default)]
    pub freed: u64,
}

fn yes() -> bool {
    true
}
fn default_uptime() -> u64 {
    3 * 3600 + 17 * 60 + 5
}
fn default_time() -> u64 {
    // 2026-11-02 09:30:00 UTC
    1_793_611_800
}

/// The pool a tag's allocations came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolKind {
    NonPaged,
    /// NonPagedPoolNx (Windows 8+); counted as nonpaged by the tracker.
    NonPagedNx,
    Paged,
}

impl PoolKind {
    /// The POOL_TYPE value (what the big-page table stores).
    pub fn pool_type(self) -> u32 {
        match self {
            PoolKind::NonPaged => 0,
            PoolKind::NonPagedNx => 0x200,
            PoolKind::Paged => 1,
        }
    }
    pub fn is_paged(self) -> bool {
        self == PoolKind::Paged
    }
}

/// Allocation sizes of a tag: every allocation the same, or uniformly
/// spread over a range (bytes requested by the caller).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SizeSpec {
    Fixed(u32),
    Range { min: u32, max: u32 },
}

impl SizeSpec {
    pub fn pick(self, rng: &mut fastrand::Rng) -> u32 {
        match self {
            SizeSpec::Fixed(n) => n,
            SizeSpec::Range { min, max } => rng.u32(min..=max.max(min)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagSpec {
    /// 1-4 characters, padded with spaces; `\xNN` escapes allowed.
    pub tag: String,
    pub pool: PoolKind,
    /// Allocations still live at the time of the dump (each is in memory
    /// with its header, or in the big-page table).
    pub live: u32,
    pub size: SizeSpec,
    /// Allocations made and freed before the dump (history only).
    #[serde(default)]
    pub freed: u64,
    /// How many of the freed allocations still sit in memory with a stale
    /// header (legacy: PoolType 0; segment heap: free in the heap
    /// metadata; big pool: `Va|1` entries with the stale key).
    #[serde(default)]
    pub freed_in_memory: u32,
    /// Win7 object tags carry PROTECTED_POOL (0x80000000) in their headers.
    #[serde(default)]
    pub protected: bool,
    /// CacheAligned requests (POOL_TYPE & 4): the segment heap writes two
    /// headers.
    #[serde(default)]
    pub cache_aligned: bool,
}

/// Shape of the tracker tables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerSpec {
    /// log2 of the hashed entry count n (PoolTrackTableSize = n + 1);
    /// default 11 before Windows 10 1703 and 12 after, as the kernel sizes it.
    #[serde(default)]
    pub size_log2: Option<u32>,
    /// Entries of PoolTrackTableExpansion available when the table is full;
    /// 0 means the expansion allocation failed and overflowing tags are
    /// charged to the keyless overflow slot.
    #[serde(default = "default_expansion")]
    pub expansion_capacity: u32,
}

fn default_expansion() -> u32 {
    0x1000 / 0x28
}

impl Default for TrackerSpec {
    fn default() -> Self {
        Self {
            size_log2: None,
            expansion_capacity: default_expansion(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigPoolSpec {
    /// Entry count of PoolBigPageTable (a power of two); grown by doubling
    /// while the live load exceeds a quarter, as ExpResizeBigPageTable does.
    #[serde(default = "default_big_table")]
    pub table_size: u64,
}

fn default_big_table() -> u64 {
    4096
}

impl Default for BigPoolSpec {
    fn default() -> Self {
        Self {
            table_size: default_big_table(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BugCheck {
    pub code: u32,
    pub parameters: [u64; 4],
}

impl Default for BugCheck {
    /// MANUALLY_INITIATED_CRASH: what a leak hunter's CrashOnCtrlScroll or
    /// NotMyFault produces.
    fn default() -> Self {
        Self {
            code: 0xE2,
            parameters: [0; 4],
        }
    }
}

impl Scenario {
    /// A small machine with a handful of tags: a steady leaker, busy
    /// paged/nonpaged tags, a big-pool user, freed chunks and decoys.
    // Long: a data table (the scenario's fields and tag list, spelled out in one place).
    pub fn small(build: NtBuild, seed: u64) -> Self {
        let nx = if build.has_nx_pool() {
            PoolKind::NonPagedNx
        } else {
            PoolKind::NonPaged
        };
        let t = |tag: &str, pool, live, size, freed, fim| TagSpec {
            tag: tag.into(),
            pool,
            live,
            size,
            freed,
            freed_in_memory: fim,
            protected: false,
            cache_aligned: false,
        };
        let mut tags = vec![
            t("Leak", nx, 120, SizeSpec::Fixed(0x120), 3, 2),
            t(
                "File",
                PoolKind::Paged,
                40,
                SizeSpec::Range {
                    min: 0x40,
                    max: 0x180,
                },
                90_000,
                4,
            ),
            t(
                "File",
                nx,
                25,
                SizeSpec::Range {
                    min: 0x100,
                    max: 0x200,
                },
                12_345,
                1,
            ),
            t(
                "Ntfx",
                PoolKind::Paged,
                30,
                SizeSpec::Range {
                    min: 0x30,
                    max: 0x600,
                },
                400_000,
                3,
            ),
            t(
                "MmSt",
                PoolKind::Paged,
                12,
                SizeSpec::Range {
                    min: 0x200,
                    max: 0x900,
                },
                7_000,
                1,
            ),
            t("Irp ", nx, 16, SizeSpec::Fixed(0x118), 2_000_000, 5),
            t(
                "NSbf",
                nx,
                8,
                SizeSpec::Range {
                    min: 0x1000,
                    max: 0x6000,
                },
                10,
                2,
            ),
            t(
                "FsFl",
                PoolKind::Paged,
                3,
                SizeSpec::Range {
                    min: 0x2000,
                    max: 0x9000,
                },
                4,
                1,
            ),
            t("LkBf", nx, 6, SizeSpec::Fixed(0x3000), 1, 1),
            t(
                "CM",
                PoolKind::Paged,
                20,
                SizeSpec::Range {
                    min: 0x20,
                    max: 0xF00,
                },
                50_000,
                2,
            ),
        ];
        if build.number() < 9200 {
            // Win7 object tags carry the protected bit in their headers.
            tags.push(TagSpec {
                protected: true,
                ..t(
                    "Proc",
                    PoolKind::NonPaged,
                    7,
                    SizeSpec::Fixed(0x530),
                    300,
                    1,
                )
            });
        } else {
            tags.push(t("Proc", nx, 7, SizeSpec::Fixed(0x9F0), 300, 1));
        }
        if build.allocator() == crate::builds::Allocator::SegmentHeap {
            tags.push(TagSpec {
                cache_aligned: true,
                ..t("CaAl", nx, 4, SizeSpec::Fixed(0x180), 0, 0)
            });
        }
        Scenario {
            build,
            seed,
            cpus: 4,
            ram_mib: 2048,
            tags,
            tracker: TrackerSpec::default(),
            big_pool: BigPoolSpec::default(),
            hot_tags: true,
            drivers: true,
            ndis: false,
            kmdf: false,
            decoys: 24,
            paged_out: 0.0,
            transition: 0.0,
            large_pages: true,
            kdbg_encoded: false,
            bugcheck: BugCheck::default(),
            bulk: None,
            uptime_secs: default_uptime(),
            unix_time: default_time(),
            sessions: default_sessions(),
            reported_build: None,
            heap_keys: None,
        }
    }

    /// The build number the machine states ([`Scenario::reported_build`]).
    pub fn build_number(&self) -> u32 {
        self.reported_build.unwrap_or(self.build.number())
    }

    /// How the segment heap's keys are mixed in ([`Scenario::heap_keys`]).
    pub fn heap_key_derivation(&self) -> HeapKeyDerivation {
        self.heap_keys
            .unwrap_or(HeapKeyDerivation::of_build(self.build_number()))
    }
}

/// Session 0 (services) and one interactive session, with win32k-style
/// tags (big bitmaps among them) and a leaking one in session 1.
pub fn default_sessions() -> Vec<SessionSpec> {
    let t = |tag: &str, live, size, freed| SessionTagSpec {
        tag: tag.into(),
        live,
        size,
        freed,
    };
    vec![
        SessionSpec {
            id: 0,
            processes: vec![
                "csrss.exe".into(),
                "wininit.exe".into(),
                "services.exe".into(),
            ],
            tags: vec![
                t("Gla5", 14, SizeSpec::Fixed(0x40), 300),
                t("Usdi", 3, SizeSpec::Fixed(0x2C0), 2),
                // Bitmaps too big for a pool page or a VS chunk: whole
                // pages, in the session's big-page table.
                t("Gkbm", 2, SizeSpec::Fixed(0x11000), 3),
            ],
            filler_tags: 0,
        },
        SessionSpec {
            id: 1,
            processes: vec![
                "csrss.exe".into(),
                "winlogon.exe".into(),
                "dwm.exe".into(),
                "explorer.exe".into(),
            ],
            tags: vec![
                t(
                    "Gh05",
                    220,
                    SizeSpec::Range {
                        min: 0x60,
                        max: 0x400,
                    },
                    15_000,
                ),
                t("Gla5", 60, SizeSpec::Fixed(0x40), 9_000),
                t(
                    "Uscu",
                    40,
                    SizeSpec::Range {
                        min: 0x100,
                        max: 0x800,
                    },
                    70,
                ),
                t("SLek", 900, SizeSpec::Fixed(0x90), 4),
                // Bitmap bits of 0xFE1+ bytes: headerless, in the
                // session's big-page table (a VS chunk from 19H1 on).
                t("Gpbm", 6, SizeSpec::Fixed(0x3000), 40),
            ],
            filler_tags: 0,
        },
    ]
}

/// The bundled sample (testdata/sample/): a Windows 10 19041 kernel dump of
/// a two-processor machine with a leaking driver, as the README shows it.
pub fn sample() -> Scenario {
    let mut s = Scenario::small(NtBuild::Win10_19041, 2026);
    s.cpus = 2;
    s
}

/// A benchmark-sized bulk area (`pooldump-kit big`): pool pages generated
/// as the dump is written, so memory use stays small (`crate::bulk`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkSpec {
    /// Bytes of bulk pool pages (rounded up to 2 MiB).
    pub bytes: u64,
    /// Distinct tags spread over them.
    pub tags: u32,
    /// Live one-page big-pool allocations.
    #[serde(default)]
    pub big_live: u32,
    /// Freed big-pool allocations whose stale entries stay in the table.
    #[serde(default)]
    pub big_freed: u32,
}
