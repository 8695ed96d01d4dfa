//! The committed synthetic nt builds: one per Windows version family, each
//! an image and PDB with a real build's GUID/age and struct layouts
//! (testdata/nt/, made by testdata/nt/build.py).

use std::sync::OnceLock;

use crate::layout::Manifest;

/// A committed nt build. The name says the family; the manifest says the
/// exact build.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum NtBuild {
    /// Windows 7 SP1, 6.1.7601: tracker entry 0x28, big-page entry 0x18.
    Win7_7601,
    /// Windows 8.1, 6.3.9600.
    Win81_9600,
    /// Windows 10 1607 / Server 2016, 10.0.14393.
    Win10_14393,
    /// Windows 10 1809 / Server 2019, 10.0.17763: tracker entry 0x38.
    Win10_17763,
    /// Windows 10 1903, 10.0.18362: segment heap.
    Win10_18362,
    /// Windows 10 2004-22H2, 10.0.19041: tracker 0x38, big page 0x18, segment heap.
    Win10_19041,
    /// Windows 10 19041 with a publics-only PDB (as Microsoft publishes
    /// them: types, S_PUB32, no S_GDATA32).
    Win10_19041Public,
    /// Server 2022, 10.0.20348: tracker 0x50, big page 0x20.
    Server2022_20348,
    /// Windows 11 21H2, 10.0.22000 (revision 2538): tracker 0x50, big page
    /// 0x20.
    Win11_22000,
    /// Windows 11 21H2, an earlier revision (10.0.22000.318): its own PDB
    /// GUID; the pool layouts are 2538's, `_KPRCB`, `_KTHREAD` and
    /// `_EPROCESS` differ.
    Win11_22000_318,
}

macro_rules! nt_files {
    ($dir:literal) => {
        NtFiles {
            dir: $dir,
            manifest: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../testdata/nt/",
                $dir,
                "/layout.json"
            )),
            image: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../testdata/nt/",
                $dir,
                "/ntoskrnl.exe"
            )),
            pdb: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../testdata/nt/",
                $dir,
                "/ntkrnlmp.pdb"
            )),
        }
    };
}

/// The committed files of one build.
pub struct NtFiles {
    pub dir: &'static str,
    pub manifest: &'static str,
    pub image: &'static [u8],
    pub pdb: &'static [u8],
}

/// The allocator behind small pool allocations (docs/pool-structures.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Pool descriptors and chained pool pages (Win7 to 1809).
    Legacy,
    /// The kernel segment heap (19H1 and later): LFH and VS.
    SegmentHeap,
}

impl NtBuild {
    pub const ALL: [NtBuild; 10] = [
        NtBuild::Win7_7601,
        NtBuild::Win81_9600,
        NtBuild::Win10_14393,
        NtBuild::Win10_17763,
        NtBuild::Win10_18362,
        NtBuild::Win10_19041,
        NtBuild::Win10_19041Public,
        NtBuild::Server2022_20348,
        NtBuild::Win11_22000,
        NtBuild::Win11_22000_318,
    ];

    pub fn files(self) -> NtFiles {
        match self {
            NtBuild::Win7_7601 => nt_files!("win7-7601"),
            NtBuild::Win81_9600 => nt_files!("win81-9600"),
            NtBuild::Win10_14393 => nt_files!("win10-14393"),
            NtBuild::Win10_17763 => nt_files!("win10-17763"),
            NtBuild::Win10_18362 => nt_files!("win10-18362"),
            NtBuild::Win10_19041 => nt_files!("win10-19041"),
            NtBuild::Win10_19041Public => nt_files!("win10-19041-public"),
            NtBuild::Server2022_20348 => nt_files!("server2022-20348"),
            NtBuild::Win11_22000 => nt_files!("win11-22000"),
            NtBuild::Win11_22000_318 => nt_files!("win11-22000-318"),
        }
    }

    /// The directory name under testdata/nt/ (also the CLI spelling).
    pub fn name(self) -> &'static str {
        self.files().dir
    }

    pub fn from_name(s: &str) -> Option<NtBuild> {
        Self::ALL.into_iter().find(|b| b.name() == s)
    }

    pub fn manifest(self) -> &'static Manifest {
        static CELLS: [OnceLock<Manifest>; NtBuild::ALL.len()] =
            [const { OnceLock::new() }; NtBuild::ALL.len()];
        let i = Self::ALL.iter().position(|b| *b == self).expect("listed");
        CELLS[i].get_or_init(|| {
            serde_json::from_str(self.files().manifest)
                .unwrap_or_else(|e| panic!("testdata/nt/{}/layout.json: {e}", self.name()))
        })
    }

    pub fn number(self) -> u32 {
        self.manifest().build
    }

    pub fn allocator(self) -> Allocator {
        if self.number() >= 18362 {
            Allocator::SegmentHeap
        } else {
            Allocator::Legacy
        }
    }

    /// Windows 10 1607 randomised the PML4 self-map index and the system VA
    /// regions (and introduced MiVisibleState).
    pub fn has_kaslr_regions(self) -> bool {
        self.number() >= 14393
    }

    /// Windows 8 introduced NonPagedPoolNx.
    pub fn has_nx_pool(self) -> bool {
        self.number() >= 9200
    }
}

impl std::fmt::Display for NtBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
