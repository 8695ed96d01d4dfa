//! `_POOL_HEADER` as bytes: a layout the caller fills from the kernel's
//! symbols (never hard-coded in analysis; [`HeaderLayout::X64`] is the
//! fallback and test fixture), checked decoding, and the page-local
//! acceptance rules of each allocator (docs/pool-structures.md §4, §5).

/// A field of the header: `bit_length` bits at `bit_position` of the
/// little-endian storage unit of `unit_size` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitField {
    /// Byte offset of the storage unit from the header's start (the PDB
    /// member's offset).
    pub offset: usize,
    /// Size of the storage unit in bytes, 1 to 8 (the member's base type).
    pub unit_size: usize,
    /// First bit within the unit, counted from its least significant bit
    /// (the PDB's bitfield position; 0 for a whole field).
    pub bit_position: u32,
    /// Width in bits (the PDB's bitfield length; `unit_size * 8` for a
    /// whole field).
    pub bit_length: u32,
}

impl BitField {
    /// A whole field of `size` bytes.
    pub const fn bytes(offset: usize, size: usize) -> Self {
        Self {
            offset,
            unit_size: size,
            bit_position: 0,
            bit_length: (size * 8) as u32,
        }
    }

    /// A bitfield: `bit_length` bits from `bit_position` of the
    /// `unit_size`-byte unit at `offset`.
    pub const fn bits(offset: usize, unit_size: usize, bit_position: u32, bit_length: u32) -> Self {
        Self {
            offset,
            unit_size,
            bit_position,
            bit_length,
        }
    }

    fn valid_within(&self, size: usize) -> bool {
        (1..=8).contains(&self.unit_size)
            && self.offset + self.unit_size <= size
            && self.bit_length >= 1
            && self.bit_position + self.bit_length <= (self.unit_size * 8) as u32
    }

    /// The field's value in `h` (a header's bytes, at least the layout's
    /// size long: checked when the layout was built).
    #[inline(always)]
    pub fn get(&self, h: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..self.unit_size].copy_from_slice(&h[self.offset..self.offset + self.unit_size]);
        let v = u64::from_le_bytes(w) >> self.bit_position;
        if self.bit_length >= 64 {
            v
        } else {
            v & ((1u64 << self.bit_length) - 1)
        }
    }
}

/// Where `_POOL_HEADER`'s fields are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLayout {
    /// sizeof(_POOL_HEADER): also the allocation unit and alignment
    /// (x64: 0x10; x86: 8).
    pub size: usize,
    /// `_POOL_HEADER.PreviousSize`: the preceding chunk's size in units.
    pub previous_size: BitField,
    /// `_POOL_HEADER.PoolIndex`: the pool descriptor's index.
    pub pool_index: BitField,
    /// `_POOL_HEADER.BlockSize`: this chunk's size in units, header included.
    pub block_size: BitField,
    /// `_POOL_HEADER.PoolType`: the [`pool_type`] bits.
    pub pool_type: BitField,
    /// `_POOL_HEADER.PoolTag`: must be a whole 4-byte field.
    pub pool_tag: BitField,
}

/// Why a layout cannot be scanned with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// sizeof(_POOL_HEADER) (the value) is neither 8 (x86) nor 0x10 (x64).
    #[error("_POOL_HEADER size {0:#x} is not 8 or 0x10")]
    Size(usize),
    /// The named member's storage unit or bits fall outside the header,
    /// or its unit is not 1 to 8 bytes.
    #[error("_POOL_HEADER.{0} does not fit in the header")]
    Field(&'static str),
    /// PoolTag is a bitfield or not 4 bytes wide.
    #[error("_POOL_HEADER.PoolTag is not a whole 4-byte field")]
    Tag,
}

impl HeaderLayout {
    /// The x64 layout of every build 7601-22000 (docs/pool-structures.md §4).
    pub const X64: HeaderLayout = HeaderLayout {
        size: 0x10,
        previous_size: BitField::bits(0, 2, 0, 8),
        pool_index: BitField::bits(0, 2, 8, 8),
        block_size: BitField::bits(2, 2, 0, 8),
        pool_type: BitField::bits(2, 2, 8, 8),
        pool_tag: BitField::bytes(4, 4),
    };

    /// Check that the header is 8 or 0x10 bytes, every field lies within
    /// it, and PoolTag is a whole 4-byte field: what [`BitField::get`] and
    /// the scanner rely on.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.size != 8 && self.size != 0x10 {
            return Err(LayoutError::Size(self.size));
        }
        for (name, f) in [
            ("PreviousSize", self.previous_size),
            ("PoolIndex", self.pool_index),
            ("BlockSize", self.block_size),
            ("PoolType", self.pool_type),
            ("PoolTag", self.pool_tag),
        ] {
            if !f.valid_within(self.size) {
                return Err(LayoutError::Field(name));
            }
        }
        if self.pool_tag.bit_position != 0
            || self.pool_tag.bit_length != 32
            || self.pool_tag.unit_size != 4
        {
            return Err(LayoutError::Tag);
        }
        Ok(())
    }

    /// The allocation unit: BlockSize and PreviousSize count these.
    pub const fn unit(&self) -> usize {
        self.size
    }

    /// Decode the header at `h[..self.size]`.
    #[inline]
    pub fn decode(&self, h: &[u8]) -> PoolHeader {
        PoolHeader {
            previous_size: self.previous_size.get(h) as u16,
            pool_index: self.pool_index.get(h) as u16,
            block_size: self.block_size.get(h) as u16,
            pool_type: self.pool_type.get(h) as u16,
            tag: self.pool_tag.get(h) as u32,
        }
    }
}

/// A decoded `_POOL_HEADER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolHeader {
    /// PreviousSize, in allocation units ([`HeaderLayout::unit`]); 0 for
    /// the first chunk of a page.
    pub previous_size: u16,
    /// PoolIndex: the legacy pool descriptor's index.
    pub pool_index: u16,
    /// BlockSize, in allocation units, header included; never 0 in a hit.
    pub block_size: u16,
    /// The header's PoolType byte: `(POOL_TYPE & 0x6D) | 2` for an
    /// allocation, 0 for a free legacy chunk (docs/pool-structures.md §4).
    pub pool_type: u16,
    /// As stored, PROTECTED_POOL included.
    pub tag: u32,
}

/// Header PoolType bits (docs/pool-structures.md §4).
pub mod pool_type {
    /// Paged pool (POOL_TYPE's PagedPool bit); clear for nonpaged.
    pub const PAGED: u16 = 1;
    /// Set in every allocated header; a free legacy chunk's PoolType is 0.
    pub const IN_USE: u16 = 2;
    /// CacheAligned: the allocation was rounded to a cache line (the
    /// segment heap writes two headers, [`super::HeaderRole`]).
    pub const CACHE_ALIGNED: u16 = 4;
    /// PoolQuota: charged to a process's quota.
    pub const QUOTA: u16 = 8;
    /// Session pool (POOL_TYPE's SessionPoolMask).
    pub const SESSION: u16 = 0x20;
    /// Bits no allocator writes (4 and 7).
    pub const NEVER: u16 = 0x90;
}

impl PoolHeader {
    /// The tag carries PROTECTED_POOL (Win7 object tags).
    pub fn protected(&self) -> bool {
        self.tag & crate::tags::PROTECTED_POOL != 0
    }
    /// The tag with PROTECTED_POOL cleared, as PoolMon and pooltag.txt
    /// spell it.
    pub fn tag_unprotected(&self) -> u32 {
        self.tag & !crate::tags::PROTECTED_POOL
    }
    /// PoolType has [`pool_type::PAGED`]: paged pool.
    pub fn paged(&self) -> bool {
        self.pool_type & pool_type::PAGED != 0
    }
    /// PoolType has [`pool_type::SESSION`]: session pool.
    pub fn session(&self) -> bool {
        self.pool_type & pool_type::SESSION != 0
    }
    /// PoolType has [`pool_type::CACHE_ALIGNED`].
    pub fn cache_aligned(&self) -> bool {
        self.pool_type & pool_type::CACHE_ALIGNED != 0
    }
}

/// Which allocator's rules a header must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// Pool descriptors and chained pool pages (Win7 to 1809, docs/pool-structures.md §4).
    Legacy,
    /// The kernel segment heap (19H1+, docs/pool-structures.md §5): only these checks
    /// are page-local; the heap metadata (LFH bitmap, VS chunk header)
    /// decides the rest and the state, which the caller looks up.
    SegmentHeap,
}

/// What the header itself says about its allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderState {
    /// A legacy chunk whose PoolType has [`pool_type::IN_USE`].
    Allocated,
    /// A free legacy chunk (PoolType 0), its tag stale.
    Free,
    /// Segment heap: a header survives a free, so only the heap metadata
    /// can tell ("allocated or recently freed" until it is consulted).
    Unknown,
}

/// The header's place in a cache-aligned allocation (segment heap,
/// docs/pool-structures.md §5), which writes two headers with the same tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderRole {
    /// The only header of its allocation.
    Single,
    /// The second, aligned header (CacheAligned set): the one to report.
    CacheAlignedSecond,
    /// The first header of a cache-aligned pair seen on the same page: a
    /// duplicate of the second.
    CacheAlignedFirst,
}

/// Apply the page-local rules to the header at `off` of `page` (one whole
/// page). `None` means it is not a header this allocator writes.
pub fn check(
    layout: &HeaderLayout,
    rules: Rules,
    page: &[u8],
    off: usize,
) -> Option<(PoolHeader, HeaderState, HeaderRole)> {
    let unit = layout.unit();
    let end = page.len();
    if !off.is_multiple_of(unit) || off + layout.size > end {
        return None;
    }
    let h = layout.decode(&page[off..]);
    let bs = h.block_size as usize * unit;
    let prev = h.previous_size as usize * unit;
    // A chunk never crosses its page.
    if bs == 0 || off + bs > end {
        return None;
    }
    let at = |o: usize| layout.decode(&page[o..]);
    match rules {
        Rules::Legacy => {
            if h.pool_type != 0
                && (h.pool_type & pool_type::IN_USE == 0 || h.pool_type & pool_type::NEVER != 0)
            {
                return None;
            }
            // A chunk at the page start has no predecessor.
            if prev > off {
                return None;
            }
            // Chaining, both ways where the neighbour is on this page.
            let next = off + bs;
            let has_next = next + layout.size <= end;
            if has_next && at(next).previous_size != h.block_size {
                return None;
            }
            if prev != 0 && at(off - prev).block_size != h.previous_size {
                return None;
            }
            // PreviousSize 0 away from the page start is the kernel's own
            // "bad header" case; accept it only with a chain link ahead.
            if off != 0 && prev == 0 && !has_next {
                return None;
            }
            let state = if h.pool_type == 0 {
                HeaderState::Free
            } else {
                HeaderState::Allocated
            };
            Some((h, state, HeaderRole::Single))
        }
        Rules::SegmentHeap => {
            if h.pool_type & pool_type::IN_USE == 0 || h.pool_type & pool_type::NEVER != 0 {
                return None;
            }
            let mut role = HeaderRole::Single;
            if h.cache_aligned() && prev != 0 {
                // The second header: PreviousSize is the distance back to
                // the first, which carries the same tag.
                if prev <= off {
                    let first = at(off - prev);
                    if first.tag_unprotected() != h.tag_unprotected() || first.cache_aligned() {
                        return None;
                    }
                }
                role = HeaderRole::CacheAlignedSecond;
            } else if prev != 0 {
                return None;
            } else {
                let next = off + bs;
                if next + layout.size <= end {
                    let n = at(next);
                    if n.cache_aligned()
                        && n.previous_size == h.block_size
                        && n.tag_unprotected() == h.tag_unprotected()
                        && n.pool_type & pool_type::IN_USE != 0
                    {
                        role = HeaderRole::CacheAlignedFirst;
                    }
                }
            }
            Some((h, HeaderState::Unknown, role))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(page: &mut [u8], off: usize, prev: u8, index: u8, bs: u8, pt: u8, tag: &[u8; 4]) {
        page[off] = prev;
        page[off + 1] = index;
        page[off + 2] = bs;
        page[off + 3] = pt;
        page[off + 4..off + 8].copy_from_slice(tag);
    }

    #[test]
    fn legacy_chaining() {
        let l = HeaderLayout::X64;
        assert_eq!(l.validate(), Ok(()));
        let mut p = vec![0u8; 0x1000];
        put(&mut p, 0, 0, 1, 0x13, 3, b"Leak");
        put(&mut p, 0x130, 0x13, 1, 0x10, 0, b"Leak");
        put(&mut p, 0x230, 0x10, 1, 0xDD, 0, b"\0\0\0\0");
        let (h, s, _) = check(&l, Rules::Legacy, &p, 0).unwrap();
        assert_eq!((h.block_size, s), (0x13, HeaderState::Allocated));
        assert_eq!(
            check(&l, Rules::Legacy, &p, 0x130).unwrap().1,
            HeaderState::Free
        );
        // Broken chain: the next header disagrees.
        p[0x230] = 0x11;
        assert!(check(&l, Rules::Legacy, &p, 0x130).is_none());
        // A page-start header cannot have a predecessor.
        p[0] = 1;
        assert!(check(&l, Rules::Legacy, &p, 0).is_none());
        // Impossible fields: BlockSize 0, bits 4/7 in PoolType.
        put(&mut p, 0x400, 0x35, 0, 0, 0, b"Leak");
        assert!(check(&l, Rules::Legacy, &p, 0x400).is_none());
        put(&mut p, 0x500, 0, 0, 1, 0x92, b"Leak");
        assert!(check(&l, Rules::Legacy, &p, 0x500).is_none());
        // Crossing the page end.
        put(&mut p, 0xFF0, 0, 0, 2, 2, b"Leak");
        assert!(check(&l, Rules::Legacy, &p, 0xFF0).is_none());
    }

    #[test]
    fn segment_heap_cache_aligned_pair() {
        let l = HeaderLayout::X64;
        let mut p = vec![0u8; 0x1000];
        // First header at 0x110, second 0x30 later (aligned data at 0x180).
        put(&mut p, 0x110, 0, 0, 6, 2, b"CaAl");
        put(&mut p, 0x170, 6, 0, 0x1A, 6, b"CaAl");
        let (_, s, r) = check(&l, Rules::SegmentHeap, &p, 0x110).unwrap();
        assert_eq!(
            (s, r),
            (HeaderState::Unknown, HeaderRole::CacheAlignedFirst)
        );
        let (_, _, r) = check(&l, Rules::SegmentHeap, &p, 0x170).unwrap();
        assert_eq!(r, HeaderRole::CacheAlignedSecond);
        // PreviousSize without the CacheAligned bit: not a heap header.
        put(&mut p, 0x300, 2, 0, 2, 2, b"CaAl");
        assert!(check(&l, Rules::SegmentHeap, &p, 0x300).is_none());
        // A free legacy-style header (PoolType 0) is never written here.
        put(&mut p, 0x400, 0, 0, 2, 0, b"CaAl");
        assert!(check(&l, Rules::SegmentHeap, &p, 0x400).is_none());
    }
}
