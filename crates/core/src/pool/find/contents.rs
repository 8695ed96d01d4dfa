//! `!pool Addr 1`: the bytes of the blocks [`pool_at`] lists, read through
//! the one [`Memory`] interface. Each block is read from the first byte
//! the allocator hands out ([`FoundAllocation::va`]: after the pool
//! header, or a big-page or headerless block's first byte) to the block's
//! end, as far as asked and never past two fixed bounds: a block's
//! contents stop at [`MAX_BLOCK_BYTES`] and a page's at
//! [`MAX_PAGE_BYTES`], whatever a size field claims, so a hostile header or
//! big-page entry costs at most those bytes. A page that cannot be read
//! (paged out, not in the dump) is an [`UnreadableRange`] with the
//! reader's reason, not a failure; only a live source's transport failing
//! ends the read.
//!
//! ```no_run
//! use pooldump_core::KernelVa;
//! use pooldump_core::pool::find::ContentsOptions;
//! # fn demo(t: &pooldump_core::Target<pooldump_core::CrashDump>) -> Result<(), Box<dyn std::error::Error>> {
//! let p = t.pool_at("ffffc60c`c01143e0".parse::<KernelVa>()?)?;
//! let contents = t.pool_contents(&p, &ContentsOptions::default())?;
//! for (a, c) in p.allocations.iter().zip(&contents) {
//!     if let Some(c) = c {
//!         println!("{} {}: {} of {:#x} bytes", a.va, a.tag, c.bytes.len(), c.body_bytes);
//!     }
//! }
//! # Ok(()) }
//! ```

use super::*;
use crate::memory::MemoryError;

/// Bytes of the block holding the address shown when no length is asked:
/// the whole body of any LFH or VS block up to this, the start of a big one.
pub const DEFAULT_HOLDER_BYTES: u64 = 0x400;
/// Bytes of every other block shown when no length is asked: two lines,
/// enough to tell an object's first fields (a type, a list entry) apart.
pub const DEFAULT_OTHER_BYTES: u64 = 0x20;
/// The most bytes of one block read, whatever was asked.
pub const MAX_BLOCK_BYTES: u64 = 0x1_0000;
/// The most bytes read for one page's blocks together (a hostile big-page
/// table can put many entries over one page).
pub const MAX_PAGE_BYTES: u64 = 0x4_0000;

/// The most bytes of contents one listing is meant to hold: `find --bytes`
/// sorted, or a table of [`allocation_contents`] for every allocation of a
/// report ([`contents_fit`]).
pub const MAX_LISTING_BYTES: u64 = 256 << 20;

/// `bytes` of each of `count` allocations would be more than
/// [`MAX_LISTING_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{count} allocations with {each:#x} bytes each is {} MiB of contents, more than the {} MiB \
     one listing holds",
    .held.div_ceil(1 << 20),
    MAX_LISTING_BYTES >> 20
)]
pub struct ContentsTooLarge {
    /// The allocations.
    pub count: usize,
    /// The bytes read of each (the request, capped at [`MAX_BLOCK_BYTES`]).
    pub each: u64,
    /// What all of them would hold.
    pub held: u64,
}

/// Whether `bytes` of each of `count` allocations fit in
/// [`MAX_LISTING_BYTES`], checked before any is read: a dump can hold
/// millions of allocations of one tag, and a block is never read past
/// [`MAX_BLOCK_BYTES`], so asking more counts as that much.
pub fn contents_fit(count: usize, bytes: u64) -> Result<(), ContentsTooLarge> {
    let each = bytes.min(MAX_BLOCK_BYTES);
    let held = each.saturating_mul(count as u64);
    if held <= MAX_LISTING_BYTES {
        return Ok(());
    }
    Err(ContentsTooLarge { count, each, held })
}

/// Which blocks to read and how much of each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentsOptions {
    /// Bytes of each block's body; `None`: [`DEFAULT_HOLDER_BYTES`] of
    /// the block holding the address, [`DEFAULT_OTHER_BYTES`] of the
    /// others. Never more than [`MAX_BLOCK_BYTES`].
    pub bytes: Option<u64>,
    /// Only the block holding the address (`!pool`'s flag 0x2).
    pub holder_only: bool,
}

/// Why fewer bytes than the block's body were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContentsCut {
    /// The length asked (or the default) was reached.
    Length,
    /// [`MAX_BLOCK_BYTES`] was reached.
    BlockLimit,
    /// [`MAX_PAGE_BYTES`] for the page's blocks together was spent.
    PageLimit,
}

/// Bytes that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreadableRange {
    /// The first byte.
    pub va: KernelVa,
    /// How many.
    pub bytes: u64,
    /// The reader's words for the first page of the range (`... is not
    /// mapped (PTE not present)`, `physical page ... is not in the source`).
    pub reason: String,
}

/// The bytes of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockContents {
    /// The first byte read: the block's [`FoundAllocation::va`].
    pub va: KernelVa,
    /// The body's size: from `va` to the block's end
    /// ([`FoundAllocation::extent`]).
    pub body_bytes: u64,
    /// The bytes from `va`; those in [`Self::unreadable`] are zero here.
    pub bytes: Vec<u8>,
    /// The ranges of `bytes` that could not be read, by address.
    pub unreadable: Vec<UnreadableRange>,
    /// Why `bytes` stops before the body's end; `None` when it does not.
    pub cut: Option<ContentsCut>,
}

impl BlockContents {
    /// Whether the byte at `offset` from [`Self::va`] was read.
    pub fn readable(&self, offset: usize) -> bool {
        let va = self.va.0.wrapping_add(offset as u64);
        offset < self.bytes.len()
            && !self
                .unreadable
                .iter()
                .any(|r| r.va.0 <= va && va - r.va.0 < r.bytes)
    }
}

/// The contents of `page`'s blocks, one entry per
/// [`PoolPage::allocations`] (`None` for a block not read: not the holder
/// under [`ContentsOptions::holder_only`]); [`crate::Target::pool_contents`]
/// is the front door.
pub fn page_contents<M: Memory + ?Sized>(
    mem: &M,
    page: &PoolPage,
    opts: &ContentsOptions,
) -> Result<Vec<Option<BlockContents>>, PoolAtError> {
    let mut budget = MAX_PAGE_BYTES;
    let mut out = Vec::with_capacity(page.allocations.len());
    for a in &page.allocations {
        let holder = page.containing.as_ref() == Some(a);
        if opts.holder_only && !holder {
            out.push(None);
            continue;
        }
        let asked = opts.bytes.unwrap_or(if holder {
            DEFAULT_HOLDER_BYTES
        } else {
            DEFAULT_OTHER_BYTES
        });
        let c = block_contents(mem, a, asked, budget)?;
        budget -= c.bytes.len() as u64;
        out.push(Some(c));
    }
    Ok(out)
}

/// Up to `asked` bytes of `a`'s body, no more than [`MAX_BLOCK_BYTES`]
/// nor `budget`.
pub fn block_contents<M: Memory + ?Sized>(
    mem: &M,
    a: &FoundAllocation,
    asked: u64,
    budget: u64,
) -> Result<BlockContents, PoolAtError> {
    let body_bytes = a.extent().end.saturating_sub(a.va.0);
    let limits = [
        (asked, ContentsCut::Length),
        (MAX_BLOCK_BYTES, ContentsCut::BlockLimit),
        (budget.min(MAX_BLOCK_BYTES), ContentsCut::PageLimit),
    ];
    let (len, cut) = limits
        .iter()
        .filter(|(n, _)| *n < body_bytes)
        .min_by_key(|(n, _)| *n)
        .map_or((body_bytes, None), |&(n, why)| (n, Some(why)));
    let mut bytes = vec![0u8; len as usize];
    let unreadable = read_pages(mem, a.va, &mut bytes)?;
    Ok(BlockContents {
        va: a.va,
        body_bytes,
        bytes,
        unreadable,
        cut,
    })
}

/// Up to `asked` bytes of the body of an allocation [`find`](crate::Target::find)
/// listed (no more than [`MAX_BLOCK_BYTES`]). A session-pool allocation's
/// address is in session space, which each session's processes map and
/// the kernel's tables do not: its bytes are read through the header's
/// physical address, within that page, and the rest of the body is an
/// [`UnreadableRange`] saying so.
pub fn allocation_contents<M: Memory + ?Sized>(
    mem: &M,
    a: &FoundAllocation,
    asked: u64,
) -> Result<BlockContents, PoolAtError> {
    match (a.session, a.pa) {
        (true, Some(pa)) => {
            let page = SessionPage {
                mem,
                va: a.header.unwrap_or(a.va).0 & !(PAGE_SIZE - 1),
                pa: pa.0 & !(PAGE_SIZE - 1),
            };
            block_contents(&page, a, asked, MAX_BLOCK_BYTES)
        }
        _ => block_contents(mem, a, asked, MAX_BLOCK_BYTES),
    }
}

/// One page of session space, read through the physical address the scan
/// found it at.
struct SessionPage<'m, M: ?Sized> {
    mem: &'m M,
    /// The page's virtual address.
    va: u64,
    /// Its physical address.
    pa: u64,
}

impl<M: Memory + ?Sized> Memory for SessionPage<'_, M> {
    fn describe(&self) -> String {
        self.mem.describe()
    }

    fn kernel_dtb(&self) -> crate::PhysAddr {
        self.mem.kernel_dtb()
    }

    fn read_physical(&self, pa: crate::PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.mem.read_physical(pa, buf)
    }

    /// Bytes within the page, from its physical address; any other
    /// address is not read.
    fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), MemoryError> {
        let off = va.0.wrapping_sub(self.va);
        if off.saturating_add(buf.len() as u64) > PAGE_SIZE {
            return Err(MemoryError::NotCaptured {
                va,
                what: "session space as find reads it".into(),
                detail: "only the page holding the allocation's header is read, through its \
                         physical address"
                    .into(),
            });
        }
        self.mem.read_physical(crate::PhysAddr(self.pa + off), buf)
    }
}

/// Read `buf` from `va` a page at a time; the pages that cannot be read
/// are returned (adjacent ones as one range, with the first one's reason)
/// and left zero.
fn read_pages<M: Memory + ?Sized>(
    mem: &M,
    va: KernelVa,
    buf: &mut [u8],
) -> Result<Vec<UnreadableRange>, PoolAtError> {
    let mut unreadable: Vec<UnreadableRange> = Vec::new();
    let mut done = 0usize;
    while done < buf.len() {
        let cur = va.wrapping_add(done as u64);
        let n = ((PAGE_SIZE - cur.page_offset()) as usize).min(buf.len() - done);
        match mem.read_virtual(cur, &mut buf[done..done + n]) {
            Ok(()) => {}
            Err(source @ MemoryError::Transport(_)) => {
                return Err(PoolAtError::Read { va: cur, source });
            }
            Err(e) => match unreadable.last_mut() {
                Some(r) if r.va.0.wrapping_add(r.bytes) == cur.0 => r.bytes += n as u64,
                _ => unreadable.push(UnreadableRange {
                    va: cur,
                    bytes: n as u64,
                    reason: e.to_string(),
                }),
            },
        }
        done += n;
    }
    Ok(unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Machine, measure};

    const VA: u64 = 0xFFFF_C60C_C011_4000;

    fn block(header: u64, bytes: u64, allocator: Allocator) -> FoundAllocation {
        let has_header = allocator != Allocator::BigPool;
        FoundAllocation {
            va: KernelVa(header + if has_header { 0x10 } else { 0 }),
            header: has_header.then_some(KernelVa(header)),
            pa: None,
            tag: PoolTag::from_bytes(*b"Leak"),
            protected: false,
            bytes,
            pool: PoolKind::NonPagedNx,
            session: false,
            session_id: None,
            pool_type: 0x200,
            state: AllocationState::Allocated,
            allocator,
            in_dump: true,
        }
    }

    /// Two mapped pages of counting bytes at `VA`, the third not mapped.
    fn machine() -> Machine {
        let mut m = Machine::new();
        for i in 0..2u64 {
            let pfn = m.alloc();
            m.map(VA + i * PAGE_SIZE, pfn);
        }
        let pattern: Vec<u8> = (0..2 * PAGE_SIZE).map(|i| (i % 251) as u8).collect();
        m.write_virt(VA, &pattern);
        m
    }

    #[test]
    fn a_body_is_read_from_after_its_header_to_its_end() {
        let m = machine();
        let c = block_contents(
            &m,
            &block(VA + 0x40, 0x130, Allocator::Lfh),
            0x400,
            u64::MAX,
        )
        .unwrap();
        assert_eq!(c.va, KernelVa(VA + 0x50));
        assert_eq!(c.body_bytes, 0x120);
        assert_eq!(c.cut, None);
        let want: Vec<u8> = (0x50..0x170).map(|i| (i % 251) as u8).collect();
        assert_eq!(c.bytes, want);
        assert!(c.unreadable.is_empty());
        let c =
            block_contents(&m, &block(VA + 0x40, 0x130, Allocator::Lfh), 0x20, u64::MAX).unwrap();
        assert_eq!((c.bytes.len(), c.cut), (0x20, Some(ContentsCut::Length)));
    }

    #[test]
    fn an_unmapped_page_is_a_range_not_a_failure() {
        let m = machine();
        // A big-page entry over both pages and the unmapped third.
        let c = block_contents(
            &m,
            &block(VA + 0x800, 0x2800, Allocator::BigPool),
            0x4000,
            u64::MAX,
        )
        .unwrap();
        assert_eq!(c.bytes.len(), 0x2800);
        assert_eq!(c.unreadable.len(), 1, "{:?}", c.unreadable);
        let r = &c.unreadable[0];
        assert_eq!((r.va, r.bytes), (KernelVa(VA + 0x2000), 0x1000));
        assert!(r.reason.contains("not mapped"), "{}", r.reason);
        assert!(c.readable(0x17FF) && !c.readable(0x1800) && !c.readable(0x2800));
        assert!(c.bytes[0x1800..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_hostile_size_costs_no_more_than_the_limits() {
        let m = machine();
        let huge = block(VA, u64::MAX, Allocator::BigPool);
        let (c, allocated) = measure(|| block_contents(&m, &huge, u64::MAX, u64::MAX).unwrap());
        assert_eq!(c.bytes.len() as u64, MAX_BLOCK_BYTES);
        assert_eq!(c.cut, Some(ContentsCut::BlockLimit));
        assert!(allocated < 2 * MAX_BLOCK_BYTES, "{allocated}");
        // Many entries over one page share one budget.
        let page = PoolPage {
            va: KernelVa(VA),
            page: KernelVa(VA),
            status: PageStatus::NotMapped {
                level: crate::memory::PxeLevel::Pte,
            },
            region: None,
            regions_known: true,
            allocator: AllocatorFamily::SegmentHeap,
            verdict: PoolVerdict::InAllocation,
            containing: Some(huge.clone()),
            allocations: (0..64)
                .map(|i| block(VA - i, u64::MAX, Allocator::BigPool))
                .collect(),
            session: None,
            warnings: Vec::new(),
        };
        let opts = ContentsOptions {
            bytes: Some(u64::MAX),
            holder_only: false,
        };
        let (all, allocated) = measure(|| page_contents(&m, &page, &opts).unwrap());
        let read: u64 = all.iter().flatten().map(|c| c.bytes.len() as u64).sum();
        assert_eq!(read, MAX_PAGE_BYTES);
        assert!(allocated < 2 * MAX_PAGE_BYTES, "{allocated}");
        assert_eq!(all[63].as_ref().unwrap().cut, Some(ContentsCut::PageLimit));
        let opts = ContentsOptions {
            holder_only: true,
            ..opts
        };
        let only = page_contents(&m, &page, &opts).unwrap();
        assert_eq!(only.iter().flatten().count(), 1);
        assert!(only[0].is_some(), "the holder is the first");
    }

    #[test]
    fn a_session_allocation_is_read_through_its_header_s_physical_page() {
        let m = machine();
        // Session space: not in the kernel's tables. The scan found the
        // header at the physical address of VA's second page + 0x100.
        const SESSION_VA: u64 = 0xFFFF_BC80_0010_0000;
        let pa = m.translate(KernelVa(VA + PAGE_SIZE)).unwrap().pa.0;
        let mut a = block(SESSION_VA + 0x100, 0x40, Allocator::LegacyPage);
        a.pa = Some(crate::PhysAddr(pa + 0x100));
        a.session = true;
        let c = allocation_contents(&m, &a, 0x30).unwrap();
        assert_eq!(c.bytes, want_at(PAGE_SIZE + 0x110, 0x30));
        assert!(c.unreadable.is_empty(), "{:?}", c.unreadable);
        assert_eq!((c.body_bytes, c.cut), (0x30, None));
        // Through the kernel's tables the same address is not mapped.
        a.session = false;
        let c = allocation_contents(&m, &a, 0x30).unwrap();
        assert_eq!(c.unreadable.len(), 1);
        assert!(
            c.unreadable[0].reason.contains("not mapped"),
            "{:?}",
            c.unreadable
        );
        // A session block running past its header's page: the rest is a
        // range that says why it was not read.
        let mut big = block(SESSION_VA + 0xF00, 0x200, Allocator::LegacyPage);
        big.pa = Some(crate::PhysAddr(pa + 0xF00));
        big.session = true;
        let c = allocation_contents(&m, &big, 0x1000).unwrap();
        assert_eq!(c.bytes.len(), 0x1F0);
        assert_eq!(c.bytes[..0xF0], want_at(PAGE_SIZE + 0xF10, 0xF0)[..]);
        assert_eq!(c.unreadable.len(), 1);
        let r = &c.unreadable[0];
        assert_eq!((r.va, r.bytes), (KernelVa(SESSION_VA + 0x1000), 0x100));
        assert!(r.reason.contains("only the page holding"), "{}", r.reason);
    }

    #[test]
    fn a_listing_holds_a_bounded_amount_of_contents() {
        assert_eq!(contents_fit(4096, 0x1_0000), Ok(()));
        let e = contents_fit(4097, 0x1_0000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "4097 allocations with 0x10000 bytes each is 257 MiB of contents, more than the \
             256 MiB one listing holds"
        );
        // A block is never read past MAX_BLOCK_BYTES, so asking more
        // counts as that much.
        assert_eq!(contents_fit(4096, u64::MAX), Ok(()));
        assert!(contents_fit(usize::MAX, 1).is_err());
    }

    /// The counting bytes `machine` holds from `from` (an offset from VA).
    fn want_at(from: u64, n: u64) -> Vec<u8> {
        (from..from + n).map(|i| (i % 251) as u8).collect()
    }
}
