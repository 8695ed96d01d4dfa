//! Damage for bad-input tests. The kit writes only valid dumps unless a
//! test asks for one of these.

use crate::dump::off;
use crate::machine::Machine;
use crate::paging;
use crate::phys::PAGE64;

/// Damage done to the machine before the dump is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The pages under the global tracker table are missing from the dump
    /// (frames dropped; the PTEs still point at them).
    MissingTrackerPages,
    /// The tracker table's PTEs are not present.
    UnmappedTrackerTable,
    /// PoolTrackTableSize = 2^40: a reader that trusts it allocates 40+ TiB.
    HugeTrackerSize,
    /// PoolBigPageTableSize = 2^40.
    HugeBigTableSize,
    /// PoolBigPageTable points into unmapped kernel space.
    BigTableIntoNowhere,
    /// Extra paging-structure entries that point back up the hierarchy
    /// (a PML4E and a PDPTE whose frames are the PML4 itself): a walker that
    /// follows every entry without bounds loops or explodes.
    PageTableLoops,
    /// The last module's Flink points at the second module instead of the
    /// list head: a walk that waits for the head never ends.
    CyclicModuleList,
    /// Two module entries with the same base and size (kdmp-parser panics
    /// on these in debug builds).
    DuplicateModules,
    /// ExPoolTagTables holds garbage pointers beyond the first CPU.
    GarbagePerCpuPointers,
    /// The first session's `_MM_SESSION_SPACE.PagedPoolStart` and
    /// `PagedPoolEnd` span all of the kernel half: not a session pool.
    HugeSessionPoolRange,
    /// The first session's own `_SEGMENT_HEAP` (19H1+) loses its
    /// 0xDDEEDDEE signature: its segments name a context that no longer
    /// vouches for itself.
    UnsignedSessionHeap,
}

/// Damage done to the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCorruption {
    /// Cut the file to this many bytes (the header still describes the
    /// whole dump).
    Truncate(u64),
    /// NumberProcessors = 0xFFFFFFFF.
    HugeProcessorCount,
    /// A full dump's NumberOfRuns = 0x10000 (at most 42 fit).
    TooManyRuns,
    /// A bitmap dump's bit count = 2^40.
    HugeBitmap,
    /// DumpType = 4 (triage minidump).
    TriageType,
    /// DirectoryTableBase beyond physical memory.
    DtbOutOfRange,
    /// KdDebuggerDataBlock = a non-canonical address.
    BadKdbgPointer,
    /// The signature of a 32-bit dump ("PAGEDUMP").
    Bits32,
}

impl Machine {
    pub fn corrupt(&mut self, c: Corruption) {
        match c {
            Corruption::MissingTrackerPages => self.damage_tracker_pages(true),
            Corruption::UnmappedTrackerTable => self.damage_tracker_pages(false),
            Corruption::HugeTrackerSize => self.set_global("PoolTrackTableSize", 1 << 40),
            Corruption::HugeBigTableSize => self.set_global("PoolBigPageTableSize", 1 << 40),
            Corruption::BigTableIntoNowhere => {
                // A canonical kernel address in a PML4 slot nothing uses.
                let va = self.nonpaged.base.wrapping_sub(0x80_0000_0000) | 0xFFFF_8000_0000_0000;
                self.set_global("PoolBigPageTable", va);
            }
            Corruption::PageTableLoops => self.loop_page_tables(),
            Corruption::HugeSessionPoolRange => {
                let s = self.truth.sessions[0].global_va;
                let start = self.m.offset_of("_MM_SESSION_SPACE", "PagedPoolStart");
                let end = self.m.offset_of("_MM_SESSION_SPACE", "PagedPoolEnd");
                self.write_u64(s + start, 0xFFFF_8000_0000_0000);
                self.write_u64(s + end, u64::MAX);
            }
            Corruption::UnsignedSessionHeap => {
                let s = &self.truth.sessions[0];
                let heap = s
                    .heap_va
                    .expect("a segment-heap build's session has a heap");
                let dtb = self
                    .truth
                    .processes
                    .iter()
                    .find(|p| p.session_id == Some(s.id))
                    .expect("a session has processes")
                    .dtb;
                let asp = paging::AddressSpace {
                    pml4: dtb / PAGE64,
                    self_map: self.asp.self_map,
                };
                let at = heap + self.m.offset_of("_SEGMENT_HEAP", "Signature");
                asp.write(&mut self.mem, at, &0u32.to_le_bytes());
            }
            Corruption::CyclicModuleList => {
                let head = self.truth.kernel.ps_loaded_module_list;
                let mut entries = vec![];
                let mut cur = self.asp.read_u64(&self.mem, head);
                while cur != head && entries.len() < 64 {
                    entries.push(cur);
                    cur = self.asp.read_u64(&self.mem, cur);
                }
                assert!(entries.len() >= 2, "a cyclic list needs two modules");
                let last = *entries.last().expect("non-empty");
                self.write_u64(last, entries[1]);
            }
            Corruption::DuplicateModules => {
                let head = self.truth.kernel.ps_loaded_module_list;
                let first = self.asp.read_u64(&self.mem, head);
                let second = self.asp.read_u64(&self.mem, first);
                let (b, s) = (
                    self.asp.read_u64(&self.mem, first + 0x30),
                    self.asp.read_u64(&self.mem, first + 0x40),
                );
                self.write_u64(second + 0x30, b);
                self.write_va(second + 0x40, &(s as u32).to_le_bytes());
            }
            Corruption::GarbagePerCpuPointers => {
                if let Some(base) = self.sym_va("ExPoolTagTables") {
                    for i in 1..self.scenario.cpus.max(2) as u64 {
                        let v = if i % 2 == 1 {
                            0x0000_1234_5678_9000
                        } else {
                            0xFFFF_FFFF_FFFF_F000
                        };
                        self.write_u64(base + 8 * i, v);
                    }
                }
            }
        }
    }

    /// The global tracker table's pages: their frames left out of the dump
    /// (`missing`) or their PTEs cleared.
    fn damage_tracker_pages(&mut self, missing: bool) {
        let va = self.truth.tracker.table_va;
        let pages = (self.truth.tracker.size * self.truth.tracker.entry_size).div_ceil(PAGE64);
        for i in 0..pages {
            let p = va + i * PAGE64;
            if let Some(pa) = self.asp.translate(&self.mem, p) {
                if missing {
                    self.mem.drop_frame(pa / PAGE64);
                } else {
                    self.asp.split_large(&mut self.mem, p);
                    self.asp.set_pte(&mut self.mem, p, 0, false);
                }
            }
        }
    }

    /// Loops in the page tables: a second PML4 self-reference and a PDPTE
    /// pointing back at the PML4.
    fn loop_page_tables(&mut self) {
        let pml4 = self.asp.pml4;
        let pml4_pa = pml4 * PAGE64;
        // A second self-reference in an unused kernel slot...
        for idx in 0x100..0x1EF {
            let at = pml4_pa + idx * 8;
            if self.mem.read_u64(at) == 0 && idx != self.asp.self_map {
                self.mem
                    .write_u64(at, (pml4 << 12) | paging::P | paging::RW);
                break;
            }
        }
        // ...and a PDPTE under nt's slot pointing at the PML4.
        let kb = self.kern_base;
        let pdpt =
            (self.mem.read_u64(pml4_pa + ((kb >> 39) & 0x1FF) * 8) & paging::PFN_MASK) / PAGE64;
        for idx in 0..512 {
            let at = pdpt * PAGE64 + idx * 8;
            if self.mem.read_u64(at) == 0 {
                self.mem
                    .write_u64(at, (pml4 << 12) | paging::P | paging::RW);
                break;
            }
        }
    }
}

/// Damage a written dump in place.
pub fn corrupt_file(bytes: &mut Vec<u8>, c: FileCorruption) {
    let put32 =
        |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    match c {
        FileCorruption::Truncate(n) => bytes.truncate(n as usize),
        FileCorruption::HugeProcessorCount => put32(bytes, off::NUMBER_PROCESSORS, u32::MAX),
        FileCorruption::TooManyRuns => put32(bytes, off::PHYSICAL_MEMORY_BLOCK, 0x10000),
        FileCorruption::HugeBitmap => put64(bytes, off::BMP_BITS, 1 << 40),
        FileCorruption::TriageType => put32(bytes, off::DUMP_TYPE, 4),
        FileCorruption::DtbOutOfRange => put64(bytes, off::DIRECTORY_TABLE_BASE, 0x7FFF_FFFF_F000),
        FileCorruption::BadKdbgPointer => {
            put64(bytes, off::KD_DEBUGGER_DATA_BLOCK, 0x1234_5678_9ABC_DEF0)
        }
        FileCorruption::Bits32 => bytes[4..8].copy_from_slice(b"DUMP"),
    }
}
