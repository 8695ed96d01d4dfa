//! The pool formats' constants that placement, the bulk pages and the
//! running machine share: size limits, page-range flags, the segment
//! signature key and the 16-byte block unit.

/// Segment-heap allocations of this many bytes or more have no header
/// (x64, docs/pool-structures.md §3).
pub const SEG_HEAP_BIG: u64 = 0xFE1;
/// Legacy allocations above this size take whole pages: a chunk, header
/// included, is at most 0xFF0 bytes (BlockSize is 8 bits of 16-byte
/// units), so 0xFE0 bytes is the largest a pool page serves.
pub const LEGACY_BIG: u64 = 0xFE0;
pub const SEGMENT_SIGNATURE_KEY: u64 = 0xA2E6_4EAD_A2E6_4EAD;
pub const RANGE_LFH: u64 = 0x0B;
pub const RANGE_VS: u64 = 0x0F;
/// Legacy paged pool is split over this many descriptors (PoolIndex 1..=n).
pub const PAGED_POOLS: u64 = 4;

pub(crate) fn round16(n: u64) -> u64 {
    n.div_ceil(16) * 16
}
