//! x64 4-level page tables as Windows builds them for the kernel.
//!
//! Entries carry the bits a real Windows kernel PTE has: present, write,
//! accessed, dirty, global and the software "Write" bit (bit 11 of a valid
//! PTE) for data; NX on data and read-only sections; supervisor everywhere
//! but KUSER_SHARED_DATA's user alias at 0x7FFE0000.

use crate::phys::{PAGE, PhysMemory, page_pieces};

pub const P: u64 = 1;
pub const RW: u64 = 1 << 1;
pub const US: u64 = 1 << 2;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const PS: u64 = 1 << 7;
pub const G: u64 = 1 << 8;
/// In a valid PTE, Windows' software "Write" bit; in an invalid one, the
/// transition bit.
pub const BIT11: u64 = 1 << 11;
pub const NX: u64 = 1 << 63;
pub const PFN_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// What a mapping is for; decides the PTE bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prot {
    /// Kernel code: present, global, executable, read-only.
    Code,
    /// Read-only kernel data (.rdata, image headers).
    ReadOnly,
    /// Writable kernel data (.data, pool, page tables).
    Data,
    /// Writable and executable: Win7's nonpaged pool.
    DataExec,
    /// User-mode read-only, NX (KUSER_SHARED_DATA's 0x7FFE0000 alias).
    UserReadOnly,
}

impl Prot {
    pub fn leaf_bits(self) -> u64 {
        match self {
            Prot::Code => P | A | G,
            Prot::ReadOnly => NX | P | A | G,
            Prot::Data => NX | BIT11 | G | D | A | RW | P,
            Prot::DataExec => BIT11 | G | D | A | RW | P,
            Prot::UserReadOnly => NX | US | A | P,
        }
    }
    fn user(self) -> bool {
        self == Prot::UserReadOnly
    }
}

/// Upper-level entries: present, writable, accessed, dirty; user-accessible
/// only on the path to a user page.
fn table_bits(user: bool) -> u64 {
    P | RW | A | D | if user { US } else { 0 }
}

fn index(va: u64, shift: u32) -> u64 {
    (va >> shift) & 0x1FF
}

/// A 4-level address space rooted at a PML4 frame.
#[derive(Debug, Clone, Copy)]
pub struct AddressSpace {
    pub pml4: u64,
    /// Index of the self-referencing PML4 entry.
    pub self_map: u64,
}

impl AddressSpace {
    /// Build an empty PML4 at frame `pml4_pfn` with a self-map at
    /// `self_map` (0x1ED before Windows 10 1607, random in 0x100..0x1FF
    /// after).
    pub fn new(mem: &mut PhysMemory, pml4_pfn: u64, self_map: u64) -> Self {
        mem.claim(pml4_pfn);
        Self::init(mem, pml4_pfn, self_map)
    }

    /// A process's PML4 on a fresh frame, with the system's self-map index.
    pub fn fresh(mem: &mut PhysMemory, self_map: u64) -> Self {
        let pfn = mem.alloc();
        Self::init(mem, pfn, self_map)
    }

    fn init(mem: &mut PhysMemory, pml4_pfn: u64, self_map: u64) -> Self {
        // The self-map entry is a kernel, writable, NX entry as Windows
        // writes it (MiInitializeSelfMap).
        mem.write_u64(
            pml4_pfn * PAGE as u64 + self_map * 8,
            (pml4_pfn << 12) | NX | P | RW | A | D,
        );
        Self {
            pml4: pml4_pfn,
            self_map,
        }
    }

    /// The PML4 entry at `idx`.
    pub fn pml4e(&self, mem: &PhysMemory, idx: u64) -> u64 {
        mem.read_u64(self.pml4 * PAGE as u64 + idx * 8)
    }

    /// Set the PML4 entry at `idx` (processes share the kernel's
    /// top-level entries, and a session's processes its session slot).
    pub fn set_pml4e(&self, mem: &mut PhysMemory, idx: u64, e: u64) {
        mem.write_u64(self.pml4 * PAGE as u64 + idx * 8, e);
    }

    /// Base of the PTE array the self-map creates (`MmPteBase`).
    pub fn pte_base(&self) -> u64 {
        sign_extend(self.self_map << 39)
    }

    /// The table one level down from `table_pfn` at `idx`, created if needed.
    fn next_table(&self, mem: &mut PhysMemory, table_pfn: u64, idx: u64, user: bool) -> u64 {
        let pa = table_pfn * PAGE as u64 + idx * 8;
        let e = mem.read_u64(pa);
        if e & P != 0 {
            assert!(e & PS == 0, "mapping below a large page at entry {pa:#x}");
            if user && e & US == 0 {
                mem.write_u64(pa, e | US);
            }
            return (e & PFN_MASK) >> 12;
        }
        let t = mem.alloc();
        mem.write_u64(pa, (t << 12) | table_bits(user));
        t
    }

    /// Map one 4 KiB page.
    pub fn map(&self, mem: &mut PhysMemory, va: u64, pfn: u64, prot: Prot) {
        self.set_pte(mem, va, (pfn << 12) | prot.leaf_bits(), prot.user());
    }

    /// Write a raw PTE (for transition and paged-out entries).
    pub fn set_pte(&self, mem: &mut PhysMemory, va: u64, pte: u64, user: bool) {
        assert_eq!(va % PAGE as u64, 0);
        let pdpt = self.next_table(mem, self.pml4, index(va, 39), user);
        let pd = self.next_table(mem, pdpt, index(va, 30), user);
        let pt = self.next_table(mem, pd, index(va, 21), user);
        mem.write_u64(pt * PAGE as u64 + index(va, 12) * 8, pte);
    }

    /// Map a 2 MiB large page (PS in the PDE) to the 512-aligned `pfn`.
    pub fn map_large(&self, mem: &mut PhysMemory, va: u64, pfn: u64, prot: Prot) {
        assert_eq!(va % 0x20_0000, 0);
        assert_eq!(pfn % 512, 0);
        let pdpt = self.next_table(mem, self.pml4, index(va, 39), prot.user());
        let pd = self.next_table(mem, pdpt, index(va, 30), prot.user());
        mem.write_u64(
            pd * PAGE as u64 + index(va, 21) * 8,
            (pfn << 12) | prot.leaf_bits() | PS,
        );
    }

    /// Replace the 2 MiB page mapping `va` (if any) by a page table of 512
    /// PTEs to the same frames, as Windows does when it must change part of
    /// a large page.
    pub fn split_large(&self, mem: &mut PhysMemory, va: u64) {
        let mut table = self.pml4;
        for shift in [39, 30] {
            let e = mem.read_u64(table * PAGE as u64 + index(va, shift) * 8);
            if e & P == 0 || e & PS != 0 {
                return;
            }
            table = (e & PFN_MASK) >> 12;
        }
        let at = table * PAGE as u64 + index(va, 21) * 8;
        let pde = mem.read_u64(at);
        if pde & (P | PS) != (P | PS) {
            return;
        }
        let base = (pde & PFN_MASK & !0x1F_FFFF) >> 12;
        let leaf = pde & !(PFN_MASK | PS);
        let pt = mem.alloc();
        for i in 0..512u64 {
            mem.write_u64(pt * PAGE as u64 + i * 8, ((base + i) << 12) | leaf);
        }
        mem.write_u64(at, (pt << 12) | table_bits(pde & US != 0));
    }

    /// Translate as the CPU would (used by the kit to write through VAs).
    pub fn translate(&self, mem: &PhysMemory, va: u64) -> Option<u64> {
        let mut table = self.pml4;
        for (shift, can_be_large) in [(39, false), (30, true), (21, true), (12, false)] {
            let e = mem.read_u64(table * PAGE as u64 + index(va, shift) * 8);
            if e & P == 0 {
                return None;
            }
            if shift == 12 || (can_be_large && e & PS != 0) {
                let page_mask = (1u64 << shift) - 1;
                let base = e & PFN_MASK & !page_mask;
                return Some(base | (va & page_mask));
            }
            table = (e & PFN_MASK) >> 12;
        }
        None
    }

    /// Translate as the CPU would and say what the mapping allows:
    /// (physical address, writable, executable). Writable and executable
    /// combine every level's RW and NX bits.
    pub fn translate_access(&self, mem: &PhysMemory, va: u64) -> Option<(u64, bool, bool)> {
        let mut table = self.pml4;
        let (mut rw, mut x) = (true, true);
        for (shift, can_be_large) in [(39, false), (30, true), (21, true), (12, false)] {
            let e = mem.read_u64(table * PAGE as u64 + index(va, shift) * 8);
            if e & P == 0 {
                return None;
            }
            rw &= e & RW != 0;
            x &= e & NX == 0;
            if shift == 12 || (can_be_large && e & PS != 0) {
                let page_mask = (1u64 << shift) - 1;
                let base = e & PFN_MASK & !page_mask;
                return Some((base | (va & page_mask), rw, x));
            }
            table = (e & PFN_MASK) >> 12;
        }
        None
    }

    /// Write bytes through virtual addresses (every page must be mapped).
    pub fn write(&self, mem: &mut PhysMemory, va: u64, bytes: &[u8]) {
        for (cur, r) in page_pieces(va, bytes.len()) {
            let pa = self
                .translate(mem, cur)
                .unwrap_or_else(|| panic!("kit writes to unmapped {cur:#x}"));
            mem.write(pa, &bytes[r]);
        }
    }

    pub fn write_u64(&self, mem: &mut PhysMemory, va: u64, v: u64) {
        self.write(mem, va, &v.to_le_bytes());
    }

    pub fn write_u32(&self, mem: &mut PhysMemory, va: u64, v: u32) {
        self.write(mem, va, &v.to_le_bytes());
    }

    pub fn read(&self, mem: &PhysMemory, va: u64, out: &mut [u8]) {
        for (cur, r) in page_pieces(va, out.len()) {
            let pa = self
                .translate(mem, cur)
                .unwrap_or_else(|| panic!("kit reads unmapped {cur:#x}"));
            mem.read(pa, &mut out[r]);
        }
    }

    /// `len` bytes through virtual addresses, `None` for each byte of a
    /// page the tables do not map (a test's truth for what a reader of the
    /// dump may show).
    pub fn read_mapped(&self, mem: &PhysMemory, va: u64, len: usize) -> Vec<Option<u8>> {
        let mut out = vec![None; len];
        for (cur, r) in page_pieces(va, len) {
            if let Some(pa) = self.translate(mem, cur) {
                let mut b = vec![0u8; r.len()];
                mem.read(pa, &mut b);
                for (o, b) in out[r].iter_mut().zip(b) {
                    *o = Some(b);
                }
            }
        }
        out
    }

    pub fn read_u64(&self, mem: &PhysMemory, va: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read(mem, va, &mut b);
        u64::from_le_bytes(b)
    }
}

/// Sign-extend a 48-bit address.
pub fn sign_extend(va: u64) -> u64 {
    if va & (1 << 47) != 0 {
        va | 0xFFFF_0000_0000_0000
    } else {
        va & 0x0000_FFFF_FFFF_FFFF
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_translate_and_self_map() {
        let mut m = PhysMemory::new(64 << 20, 7);
        let asp = AddressSpace::new(&mut m, 0x1AD, 0x1ED);
        assert_eq!(asp.pte_base(), 0xFFFF_F680_0000_0000);
        let f = m.alloc();
        asp.map(&mut m, 0xFFFF_F802_1A00_0000, f, Prot::Data);
        assert_eq!(
            asp.translate(&m, 0xFFFF_F802_1A00_0123),
            Some(f * 0x1000 + 0x123)
        );
        // The PML4 maps itself: the PML4's own VA under the self-map reads
        // the PML4 frame.
        let s = 0x1ED;
        let pml4_va = sign_extend((s << 39) | (s << 30) | (s << 21) | (s << 12));
        assert_eq!(asp.translate(&m, pml4_va), Some(0x1AD000));
        let big = m.alloc_contiguous(512, 512);
        asp.map_large(&mut m, 0xFFFF_A000_0020_0000, big, Prot::Data);
        assert_eq!(
            asp.translate(&m, 0xFFFF_A000_0021_2345),
            Some(big * 0x1000 + 0x12345)
        );
        assert_eq!(asp.translate(&m, 0xFFFF_A000_0000_0000), None);
    }
}
