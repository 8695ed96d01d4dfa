//! The one memory interface.
//!
//! Crash dumps, live KDNET sessions and raw images all implement [`Memory`];
//! everything above this module (kernel identity, symbols, the pool model)
//! reads through it and never learns where the bytes came from.
//!
//! A source must implement physical reads and name its kernel DTB. Virtual
//! reads and translation have default implementations that walk the x64
//! page tables through physical reads ([`walk`]); a live session overrides
//! `read_virtual` with the target's own virtual-read call.

use crate::addr::{KernelVa, PAGE_SIZE, PhysAddr};

/// The level of a paging-structure entry, named as WinDbg's `!pte` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PxeLevel {
    /// A PML4 entry (maps 512 GiB).
    Pml4e,
    /// A page-directory-pointer-table entry (maps 1 GiB).
    Pdpte,
    /// A page-directory entry (maps 2 MiB).
    Pde,
    /// A page-table entry (maps a 4 KiB page).
    Pte,
}

impl std::fmt::Display for PxeLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PxeLevel::Pml4e => "PML4E",
            PxeLevel::Pdpte => "PDPTE",
            PxeLevel::Pde => "PDE",
            PxeLevel::Pte => "PTE",
        })
    }
}

/// Why a read failed. Each case says where, so a caller can turn it into a
/// message such as "PoolTrackTable entry 17 at fffff802`... is not in the
/// dump (PTE not present)".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// The address is not canonical (bits 48..63 are not copies of bit 47).
    #[error("{va} is not a canonical address")]
    NonCanonical {
        /// The address asked for.
        va: KernelVa,
    },
    /// A paging-structure entry on the way to `va` is not present (and not
    /// in transition): the page is paged out or was never mapped.
    #[error("{va} is not mapped ({level} not present)")]
    NotPresent {
        /// The address asked for.
        va: KernelVa,
        /// The first level whose entry is not present.
        level: PxeLevel,
    },
    /// The physical page is not part of the source: a kernel dump omits user
    /// and free pages, a partial dump can omit anything. `va` is set when the
    /// physical address was reached through a translation; `level` says
    /// which paging structure (if it was a table rather than data) is missing.
    #[error("physical page {pa} is not in the source{}", describe_va(*va, *level))]
    NotInSource {
        /// The physical address asked for.
        pa: PhysAddr,
        /// The virtual address whose translation led here, if any.
        va: Option<KernelVa>,
        /// The paging structure whose page is missing; None when the data page itself is.
        level: Option<PxeLevel>,
    },
    /// The page is described by the source but its bytes are missing (a
    /// truncated file).
    #[error("physical page {pa} lies past the end of the file (truncated dump)")]
    Truncated {
        /// The physical address asked for.
        pa: PhysAddr,
    },
    /// A sparse source (a small memory dump) did not capture this address:
    /// `what` names the source, `detail` what it does hold near it.
    #[error("{va} is not in {what}: {detail}")]
    NotCaptured {
        /// The address asked for.
        va: KernelVa,
        /// The source (`the small memory dump C:\...\Mini.dmp`).
        what: String,
        /// What the source does hold near the address.
        detail: String,
    },
    /// A transport failure of a live source.
    #[error("transport: {0}")]
    Transport(String),
}

fn describe_va(va: Option<KernelVa>, level: Option<PxeLevel>) -> String {
    match (va, level) {
        (Some(va), Some(l)) => format!(" (the {l} page on the way to {va})"),
        (Some(va), None) => format!(" (reached from {va})"),
        _ => String::new(),
    }
}

impl MemoryError {
    /// `pa` is not in a source that holds it, or that holds no physical
    /// pages at all (an image file, a small memory dump).
    pub fn not_in_source(pa: PhysAddr) -> Self {
        MemoryError::NotInSource {
            pa,
            va: None,
            level: None,
        }
    }

    /// `va`'s page is not mapped: its PTE is not present, or a source that
    /// reads virtual memory directly does not hold it.
    pub fn page_not_present(va: KernelVa) -> Self {
        MemoryError::NotPresent {
            va,
            level: PxeLevel::Pte,
        }
    }

    /// Attach the virtual address through which a physical read was reached.
    fn via(self, va: KernelVa, level: Option<PxeLevel>) -> Self {
        match self {
            MemoryError::NotInSource { pa, .. } => MemoryError::NotInSource {
                pa,
                va: Some(va),
                level,
            },
            e => e,
        }
    }
}

/// Size of the page a translation ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum PageSize {
    /// 4 KiB.
    Small,
    /// 2 MiB, PS bit in the PDE.
    Large,
    /// 1 GiB, PS bit in the PDPTE.
    Huge,
}

impl PageSize {
    /// The page's size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Small => 0x1000,
            PageSize::Large => 0x20_0000,
            PageSize::Huge => 0x4000_0000,
        }
    }
}

/// Result of translating a virtual address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The physical address `va` translates to (page frame plus the offset in the page).
    pub pa: PhysAddr,
    /// The size of the page the walk ended in.
    pub page_size: PageSize,
    /// Every level allows writes (the R/W bit).
    pub writable: bool,
    /// Some level forbids execution (the NX bit).
    pub no_execute: bool,
    /// Every level allows user-mode access (the U/S bit).
    pub user: bool,
    /// The final entry was a transition PTE (P=0, bit 11 set): the page is
    /// on the standby or modified list and its contents are still valid.
    pub transition: bool,
}

/// `pages` consecutive PFNs from `pfn` whose data is packed in a file
/// from `file_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PhysExtent {
    /// The first page frame number.
    pub pfn: crate::addr::Pfn,
    /// Consecutive pages in the run.
    pub pages: u64,
    /// Where the first page's data starts in the file.
    pub file_offset: u64,
}

impl PhysExtent {
    pub(crate) fn end_pfn(&self) -> u64 {
        self.pfn.0 + self.pages
    }
}

/// Physical memory that lives in a file as runs of whole pages (a crash
/// dump): a scanner reads it in bulk, in file order, straight from the
/// file's bytes instead of a page at a time through
/// [`Memory::read_physical`]. A source offers it through
/// [`Memory::page_file`].
pub trait PageFile: Sync {
    /// The runs of pages in file order, including runs that reach past the
    /// end of a truncated file.
    fn page_runs(&self) -> Vec<PhysExtent>;
    /// The file's bytes (a read-only memory map).
    fn file_bytes(&self) -> &[u8];
    /// Pages the file describes but does not hold, when the file knows
    /// (a truncated dump's header); `None` to count them from the runs.
    fn pages_past_end(&self) -> Option<u64> {
        None
    }
    /// The scanner is done with `len` bytes from `offset`: a memory map
    /// may drop them from the process. A no-op by default.
    fn release_file_range(&self, offset: usize, len: usize) {
        let _ = (offset, len);
    }
}

/// A source of physical (and through it, kernel virtual) memory.
///
/// Implementations must be `Send + Sync`: analysis reads tables for many
/// CPUs in parallel and the scanner fans out over rayon workers.
pub trait Memory: Send + Sync {
    /// A short description of the source for messages (a file path, a
    /// KDNET peer).
    fn describe(&self) -> String;

    /// Physical address of the kernel's PML4 (CR3 without PCID bits).
    fn kernel_dtb(&self) -> PhysAddr;

    /// Read exactly `buf.len()` bytes of physical memory starting at `pa`.
    fn read_physical(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Translate a kernel virtual address through the kernel DTB.
    fn translate(&self, va: KernelVa) -> Result<Translation, MemoryError> {
        walk::translate(self, self.kernel_dtb(), va)
    }

    /// Read exactly `buf.len()` bytes of kernel virtual memory. Fails if
    /// any page of the range is unreadable, naming the first one.
    fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), MemoryError> {
        read_through_tables(self, va, buf, false).map(|_| ())
    }

    /// Read as much of `buf` as is readable from the start; returns the
    /// number of bytes read before the first unreadable page. Fails only if
    /// not even the first byte can be read.
    fn read_virtual_partial(&self, va: KernelVa, buf: &mut [u8]) -> Result<usize, MemoryError> {
        read_through_tables(self, va, buf, true)
    }

    /// The file behind this memory when its physical pages can be read in
    /// bulk (a crash dump); `None` for a live session or any source that
    /// only reads through [`Memory::read_physical`].
    fn page_file(&self) -> Option<&dyn PageFile> {
        None
    }
}

/// The default virtual read: page by page through [`Memory::translate`].
fn read_through_tables<M: Memory + ?Sized>(
    m: &M,
    va: KernelVa,
    buf: &mut [u8],
    partial: bool,
) -> Result<usize, MemoryError> {
    read_virtual_by_pages(m, va, buf, partial, |_, _| Ok(0))
}

/// A virtual read in steps, the rule every source shares. Each step first
/// gives `direct` the rest of the range (a live target's own
/// ReadVirtualMemory; it returns how many bytes it read, and its errors
/// end the read); where it stops short, one page is read through the page
/// tables ([`read_rest_of_page`]). With `partial`, a page that cannot be
/// read, or an address that is not canonical, ends the read with the bytes
/// before it, if there are any, instead of failing it; without `partial`,
/// its error names that page or address.
pub fn read_virtual_by_pages<M: Memory + ?Sized>(
    m: &M,
    va: KernelVa,
    buf: &mut [u8],
    partial: bool,
    mut direct: impl FnMut(KernelVa, &mut [u8]) -> Result<usize, MemoryError>,
) -> Result<usize, MemoryError> {
    let mut done = 0usize;
    while done < buf.len() {
        let cur = match va.checked_add(done as u64) {
            Some(cur) if cur.is_canonical() => cur,
            _ if partial && done > 0 => return Ok(done),
            other => {
                return Err(MemoryError::NonCanonical {
                    va: other.unwrap_or(va),
                });
            }
        };
        done += direct(cur, &mut buf[done..])?;
        if done == buf.len() {
            break;
        }
        match read_rest_of_page(m, va.wrapping_add(done as u64), &mut buf[done..]) {
            Ok(n) => done += n,
            Err(_) if partial && done > 0 => return Ok(done),
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// One step of a read through the page tables: translate `va` through
/// [`Memory::translate`] and read from it to the end of its page (or of
/// `buf`) with [`Memory::read_physical`]. Returns the bytes read. A
/// translation error already names its level; a data-page error gets the
/// virtual address it was reached from.
pub fn read_rest_of_page<M: Memory + ?Sized>(
    m: &M,
    va: KernelVa,
    buf: &mut [u8],
) -> Result<usize, MemoryError> {
    let n = ((PAGE_SIZE - va.page_offset()) as usize).min(buf.len());
    let t = m.translate(va)?;
    m.read_physical(t.pa, &mut buf[..n])
        .map_err(|e| e.via(va, None))?;
    Ok(n)
}

/// A handle to a [`Memory`] is that memory: references, boxes (so a
/// caller can hold `Box<dyn Memory>` for "a dump or a live target") and
/// `Arc`s forward every call, capabilities included.
macro_rules! forward_memory {
    ($($ty:ty),*) => {$(
        impl<M: Memory + ?Sized> Memory for $ty {
            fn describe(&self) -> String {
                (**self).describe()
            }
            fn kernel_dtb(&self) -> PhysAddr {
                (**self).kernel_dtb()
            }
            fn read_physical(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
                (**self).read_physical(pa, buf)
            }
            fn translate(&self, va: KernelVa) -> Result<Translation, MemoryError> {
                (**self).translate(va)
            }
            fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), MemoryError> {
                (**self).read_virtual(va, buf)
            }
            fn read_virtual_partial(
                &self,
                va: KernelVa,
                buf: &mut [u8],
            ) -> Result<usize, MemoryError> {
                (**self).read_virtual_partial(va, buf)
            }
            fn page_file(&self) -> Option<&dyn PageFile> {
                (**self).page_file()
            }
        }
    )*};
}

forward_memory!(&M, Box<M>, std::sync::Arc<M>);

/// The same physical memory seen through another process's page tables,
/// as WinDbg's `.process /p` switches to it. Session space is mapped only
/// in a session's own processes, so session-pool reads go through one of
/// these. Translation walks the process's tables with physical reads, so a
/// live source needs nothing more than physical reads for it.
pub struct ProcessSpace<'a, M: Memory + ?Sized> {
    mem: &'a M,
    dtb: PhysAddr,
}

impl<'a, M: Memory + ?Sized> ProcessSpace<'a, M> {
    /// `dtb` as `KPROCESS.DirectoryTableBase` holds it: the low 12 bits
    /// (PCID and flags on KVA-shadow systems) are dropped.
    pub fn new(mem: &'a M, dtb: PhysAddr) -> Self {
        Self {
            mem,
            dtb: PhysAddr(dtb.0 & walk::PFN_MASK),
        }
    }
}

impl<M: Memory + ?Sized> Memory for ProcessSpace<'_, M> {
    fn describe(&self) -> String {
        format!("{} (address space {})", self.mem.describe(), self.dtb)
    }
    /// The process's PML4 (the default walks use it for every read).
    fn kernel_dtb(&self) -> PhysAddr {
        self.dtb
    }
    fn read_physical(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.mem.read_physical(pa, buf)
    }
}

/// Typed little-endian reads on top of [`Memory`].
pub trait MemoryExt: Memory {
    /// Read one byte at `va`.
    fn read_u8(&self, va: KernelVa) -> Result<u8, MemoryError> {
        let mut b = [0u8; 1];
        self.read_virtual(va, &mut b)?;
        Ok(b[0])
    }
    /// Read a little-endian u16 at `va`.
    fn read_u16(&self, va: KernelVa) -> Result<u16, MemoryError> {
        let mut b = [0u8; 2];
        self.read_virtual(va, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    /// Read a little-endian u32 at `va`.
    fn read_u32(&self, va: KernelVa) -> Result<u32, MemoryError> {
        let mut b = [0u8; 4];
        self.read_virtual(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Read a little-endian u64 at `va`.
    fn read_u64(&self, va: KernelVa) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read_virtual(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Read a pointer (a little-endian u64) at `va`.
    fn read_pointer(&self, va: KernelVa) -> Result<KernelVa, MemoryError> {
        self.read_u64(va).map(KernelVa)
    }
}

impl<M: Memory + ?Sized> MemoryExt for M {}

/// The x64 4-level page walk, over any physical reader.
pub mod walk {
    use super::*;

    pub(crate) const PTE_PRESENT: u64 = 1 << 0;
    pub(crate) const PTE_WRITE: u64 = 1 << 1;
    pub(crate) const PTE_USER: u64 = 1 << 2;
    pub(crate) const PTE_LARGE: u64 = 1 << 7;
    pub(crate) const PTE_PROTOTYPE: u64 = 1 << 10;
    pub(crate) const PTE_TRANSITION: u64 = 1 << 11;
    pub(crate) const PTE_NX: u64 = 1 << 63;
    /// Bits 12..51: the frame of a table or a 4 KiB page.
    pub const PFN_MASK: u64 = 0x000F_FFFF_FFFF_F000;
    /// Bits 21..51: a 2 MiB page (bit 12 is PAT there, not address).
    pub const LARGE_MASK: u64 = 0x000F_FFFF_FFE0_0000;
    /// Bits 30..51: a 1 GiB page.
    pub const HUGE_MASK: u64 = 0x000F_FFFF_C000_0000;

    /// Index of `va` in the table at `level`.
    pub const fn index(va: u64, level: PxeLevel) -> u64 {
        let shift = match level {
            PxeLevel::Pml4e => 39,
            PxeLevel::Pdpte => 30,
            PxeLevel::Pde => 21,
            PxeLevel::Pte => 12,
        };
        (va >> shift) & 0x1FF
    }

    /// An entry Windows treats as resident: present, or (at the last level)
    /// a transition PTE whose frame still holds the page.
    fn usable(entry: u64, last_level: bool) -> bool {
        entry & PTE_PRESENT != 0
            || (last_level && entry & (PTE_TRANSITION | PTE_PROTOTYPE) == PTE_TRANSITION)
    }

    fn read_entry<M: Memory + ?Sized>(
        m: &M,
        table: u64,
        va: KernelVa,
        level: PxeLevel,
    ) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        let pa = PhysAddr(table + index(va.0, level) * 8);
        m.read_physical(pa, &mut b)
            .map_err(|e| e.via(va, Some(level)))?;
        Ok(u64::from_le_bytes(b))
    }

    /// Translate `va` through the PML4 at `dtb`.
    pub fn translate<M: Memory + ?Sized>(
        m: &M,
        dtb: PhysAddr,
        va: KernelVa,
    ) -> Result<Translation, MemoryError> {
        if !va.is_canonical() {
            return Err(MemoryError::NonCanonical { va });
        }
        let mut writable = true;
        let mut user = true;
        let mut no_execute = false;
        let mut table = dtb.0 & PFN_MASK;
        for level in [
            PxeLevel::Pml4e,
            PxeLevel::Pdpte,
            PxeLevel::Pde,
            PxeLevel::Pte,
        ] {
            let e = read_entry(m, table, va, level)?;
            let last = level == PxeLevel::Pte;
            if !usable(e, last) {
                return Err(MemoryError::NotPresent { va, level });
            }
            writable &= e & PTE_WRITE != 0;
            user &= e & PTE_USER != 0;
            no_execute |= e & PTE_NX != 0;
            let leaf = match level {
                PxeLevel::Pdpte if e & PTE_LARGE != 0 => Some((e & HUGE_MASK, PageSize::Huge)),
                PxeLevel::Pde if e & PTE_LARGE != 0 => Some((e & LARGE_MASK, PageSize::Large)),
                PxeLevel::Pte => Some((e & PFN_MASK, PageSize::Small)),
                _ => None,
            };
            if let Some((base, page_size)) = leaf {
                return Ok(Translation {
                    pa: PhysAddr(base + (va.0 & (page_size.bytes() - 1))),
                    page_size,
                    writable,
                    no_execute,
                    user,
                    transition: e & PTE_PRESENT == 0,
                });
            }
            table = e & PFN_MASK;
        }
        unreachable!("the PTE level always ends the walk")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Machine;

    #[test]
    fn read_virtual_fails_when_a_later_page_is_unmapped() {
        let mut m = Machine::new();
        let va = 0xFFFF_C000_0000_0000u64;
        m.write_virt(va, &[0xAB; 0x1000]);
        let mut buf = [0u8; 0x1800];
        // The read used to return Ok with the tail left unfilled.
        assert_eq!(
            m.read_virtual(KernelVa(va + 0x800), &mut buf),
            Err(MemoryError::page_not_present(KernelVa(va + 0x1000)))
        );
        assert_eq!(
            m.read_virtual_partial(KernelVa(va + 0x800), &mut buf),
            Ok(0x800)
        );
        assert!(buf[..0x800].iter().all(|&b| b == 0xAB));
    }

    #[test]
    fn a_read_into_the_non_canonical_hole_ends_there() {
        let mut m = Machine::new();
        // The last page of the lower half; the next address is not canonical.
        let last = 0x0000_7FFF_FFFF_F000u64;
        m.write_virt(last, &[0xCD; 0x1000]);
        let mut buf = [0u8; 0x20];
        let at = KernelVa(last + 0xFF0);
        assert_eq!(m.read_virtual_partial(at, &mut buf), Ok(0x10));
        assert_eq!(
            m.read_virtual(at, &mut buf),
            Err(MemoryError::NonCanonical {
                va: KernelVa(0x0000_8000_0000_0000)
            })
        );
    }

    #[test]
    fn the_direct_reader_goes_first_and_the_tables_take_what_it_cannot() {
        let mut m = Machine::new();
        let va = 0xFFFF_C000_0000_0000u64;
        m.write_virt(va, &[0xAB; 0x3000]);
        // A direct reader that serves only the first 0x100 bytes of each
        // call, as a target whose ReadVirtualMemory stops at a block it
        // cannot read.
        let mut calls = Vec::new();
        let mut buf = [0u8; 0x2000];
        let n = read_virtual_by_pages(&m, KernelVa(va + 0x800), &mut buf, false, |cur, rest| {
            calls.push(cur.0 - va);
            let n = rest.len().min(0x100);
            rest[..n].fill(0xEE);
            Ok(n)
        })
        .unwrap();
        assert_eq!(n, 0x2000);
        // Direct at 0x800, then the walk to the end of that page (0x1000);
        // direct at 0x1000 and the walk of the next page; direct at 0x2000
        // and the walk to the end of the buffer (0x2800).
        assert_eq!(calls, [0x800, 0x1000, 0x2000]);
        assert!(buf[..0x100].iter().all(|&b| b == 0xEE));
        assert!(buf[0x100..0x800].iter().all(|&b| b == 0xAB));
        assert!(buf[0x800..0x900].iter().all(|&b| b == 0xEE));
        // A direct reader's error ends the read, partial or not.
        let e = read_virtual_by_pages(&m, KernelVa(va), &mut buf, true, |_, _| {
            Err(MemoryError::Transport("link down".into()))
        });
        assert_eq!(e, Err(MemoryError::Transport("link down".into())));
    }
}
