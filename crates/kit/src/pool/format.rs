//! The pool formats' constants that placement, the bulk pages and the
//! running machine share: size limits, page-range flags, the segment
//! heap's key derivations and the 16-byte block unit.

/// Segment-heap allocations of this many bytes or more have no header
/// (x64, docs/pool-structures.md §3).
pub const SEG_HEAP_BIG: u64 = 0xFE1;
/// Legacy allocations above this size take whole pages: a chunk, header
/// included, is at most 0xFF0 bytes (BlockSize is 8 bits of 16-byte
/// units), so 0xFE0 bytes is the largest a pool page serves.
pub const LEGACY_BIG: u64 = 0xFE0;
pub const RANGE_LFH: u64 = 0x0B;
pub const RANGE_VS: u64 = 0x0F;
/// Legacy paged pool is split over this many descriptors (PoolIndex 1..=n).
pub const PAGED_POOLS: u64 = 4;

/// How a build derives two segment-heap values from its keys
/// (docs/pool-structures.md §5): 24H2 (26100) signs page segments without
/// the static key and takes the LFH subsegment's shift from the whole VA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeapKeyDerivation {
    /// 19H1 (18362) to 23H2 (22631).
    Before24H2,
    /// 24H2 (26100) on.
    Since24H2,
}

impl HeapKeyDerivation {
    /// What Windows does at `build`.
    pub fn of_build(build: u32) -> Self {
        if build >= 26100 {
            Self::Since24H2
        } else {
            Self::Before24H2
        }
    }

    /// The static key XORed into `_HEAP_PAGE_SEGMENT.Signature`.
    pub fn segment_signature_key(self) -> u64 {
        match self {
            Self::Before24H2 => 0xA2E6_4EAD_A2E6_4EAD,
            Self::Since24H2 => 0,
        }
    }

    /// The shift XORed into an LFH subsegment's `BlockOffsets` at `va`.
    pub fn lfh_shift(self, va: u64) -> u32 {
        match self {
            Self::Before24H2 => (va as u32) >> 12,
            Self::Since24H2 => (va >> 12) as u32,
        }
    }
}

pub(crate) fn round16(n: u64) -> u64 {
    n.div_ceil(16) * 16
}
