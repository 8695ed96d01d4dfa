//! Address newtypes.
//!
//! A kernel virtual address and a physical address are both `u64`s in the
//! dump, but passing one where the other is meant is the classic bug of
//! memory-forensics code. The newtypes make that a compile error, in the
//! manner of kdmp-parser's `Gva`/`Gpa`.

use std::fmt;

/// Size of an x64 small page.
pub const PAGE_SIZE: u64 = 0x1000;

/// A virtual address in the kernel's address space (or, for the few places
/// that need it, any virtual address translated through a DTB).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct KernelVa(pub u64);

/// A guest physical address.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct PhysAddr(pub u64);

/// A page frame number: a physical address divided by [`PAGE_SIZE`].
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Pfn(pub u64);

impl KernelVa {
    /// The address `va`.
    pub const fn new(va: u64) -> Self {
        Self(va)
    }
    /// The address as a number.
    pub const fn u64(self) -> u64 {
        self.0
    }
    /// Offset inside the 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
    /// The start of the 4 KiB page holding the address.
    pub const fn page_align(self) -> Self {
        Self(self.0 & !(PAGE_SIZE - 1))
    }
    /// `self + n`, or `None` on wrap-around (a hostile pointer near the top
    /// of the address space must not wrap into low memory).
    pub const fn checked_add(self, n: u64) -> Option<Self> {
        match self.0.checked_add(n) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }
    /// `self + n`, wrapping as the CPU's address arithmetic does (a field
    /// of a structure at `self`, an RVA from an image base); whether the
    /// result is a kernel address is the reader's check.
    pub const fn wrapping_add(self, n: u64) -> Self {
        Self(self.0.wrapping_add(n))
    }
    /// The canonical address whose low 48 bits are `va`'s: bit 47 copied
    /// into bits 48..63 (an address built from page-table indices).
    pub const fn sign_extended(va: u64) -> Self {
        if va & (1 << 47) != 0 {
            Self(va | 0xFFFF_0000_0000_0000)
        } else {
            Self(va & 0x0000_FFFF_FFFF_FFFF)
        }
    }
    /// Bits 48..63 are copies of bit 47 (x64 4-level paging).
    pub const fn is_canonical(self) -> bool {
        let top = self.0 >> 47;
        top == 0 || top == 0x1_FFFF
    }
    /// Canonical and in the upper half.
    pub const fn is_kernel(self) -> bool {
        self.0 >> 47 == 0x1_FFFF
    }
}

impl PhysAddr {
    /// The address `pa`.
    pub const fn new(pa: u64) -> Self {
        Self(pa)
    }
    /// The address as a number.
    pub const fn u64(self) -> u64 {
        self.0
    }
    /// The frame holding the address.
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 / PAGE_SIZE)
    }
    /// Offset inside the 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
}

impl Pfn {
    /// Frame number `pfn`.
    pub const fn new(pfn: u64) -> Self {
        Self(pfn)
    }
    /// The frame number as a number.
    pub const fn u64(self) -> u64 {
        self.0
    }
    /// Physical address of the frame; `None` if it does not fit in 64 bits.
    pub const fn addr(self) -> Option<PhysAddr> {
        match self.0.checked_mul(PAGE_SIZE) {
            Some(v) => Some(PhysAddr(v)),
            None => None,
        }
    }
}

macro_rules! hex_fmt {
    ($t:ty, $prefix:literal) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "({:#x})"), self.0)
            }
        }
        impl fmt::LowerHex for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}
hex_fmt!(KernelVa, "KernelVa");
hex_fmt!(PhysAddr, "PhysAddr");
hex_fmt!(Pfn, "Pfn");

/// WinDbg prints 64-bit addresses with a backtick between the halves
/// (`fffff802`1a000000`); users paste them back, so both print and parse
/// accept that form.
impl fmt::Display for KernelVa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}`{:08x}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Error from parsing an address typed by a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a hexadecimal address (WinDbg forms like fffff802`1a000000 and 0x... are accepted)"
)]
pub struct ParseAddrError(pub String);

impl std::str::FromStr for KernelVa {
    type Err = ParseAddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t: String = s.trim().chars().filter(|&c| c != '`').collect();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(&t);
        if t.is_empty() || t.len() > 16 {
            return Err(ParseAddrError(s.to_string()));
        }
        u64::from_str_radix(t, 16)
            .map(KernelVa)
            .map_err(|_| ParseAddrError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_and_kernel() {
        assert!(KernelVa(0xFFFF_F802_1A00_0000).is_kernel());
        assert!(KernelVa(0x7FFE_0000).is_canonical());
        assert!(!KernelVa(0x7FFE_0000).is_kernel());
        assert!(!KernelVa(0x0000_8000_0000_0000).is_canonical());
        assert!(!KernelVa(0xFFFF_7FFF_FFFF_FFFF).is_canonical());
    }

    #[test]
    fn sign_extension_from_table_indices() {
        // PML4 index 0x1F6 (the self-map of some builds), nothing below.
        let va = KernelVa::sign_extended(0x1F6 << 39);
        assert_eq!(va, KernelVa(0xFFFF_FB00_0000_0000));
        assert!(va.is_kernel());
        assert_eq!(KernelVa::sign_extended(0x7FFE_0000), KernelVa(0x7FFE_0000));
        // Bits above 47 are replaced, not kept.
        assert_eq!(
            KernelVa::sign_extended(0xABCD_0000_0000_1000),
            KernelVa(0x1000)
        );
    }

    #[test]
    fn windbg_display_round_trips() {
        let va = KernelVa(0xFFFF_F802_1A00_0010);
        assert_eq!(va.to_string(), "fffff802`1a000010");
        assert_eq!("fffff802`1a000010".parse::<KernelVa>().unwrap(), va);
        assert_eq!("0xFFFFF8021A000010".parse::<KernelVa>().unwrap(), va);
        assert!("xyz".parse::<KernelVa>().is_err());
        assert!("1ffffffffffffffff".parse::<KernelVa>().is_err());
    }

    #[test]
    fn pfn_addr_overflow_is_none() {
        assert_eq!(Pfn(0x1AD).addr(), Some(PhysAddr(0x1AD000)));
        assert_eq!(Pfn(u64::MAX).addr(), None);
    }
}
