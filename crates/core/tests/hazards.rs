//! Reads through the library on the dumps pooldump must not misread
//! (docs/design.md, "kdmp-parser and pooldump's own header reader"),
//! compared byte for byte with the kit's physical memory: unaligned reads
//! across pages, paged-out and transition pages. `tests/cli/hazards.rs`
//! runs the binary on damaged dumps.

mod common;

use pooldump_core::dump::CrashDump;
use pooldump_core::{KernelVa, Memory, MemoryError, PhysAddr};
use pooldump_kit::{DumpKind, Machine, NtBuild};

const PAGE: u64 = 0x1000;

/// A deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Unaligned reads spanning up to four pages (kdmp-parser's physical
/// reader gets these wrong, §1.4) return exactly the kit's bytes; a range
/// that reaches a page the kernel dump omits fails on that page.
#[test]
fn unaligned_multi_page_physical_reads_are_exact() {
    for build in [NtBuild::Win7_7601, NtBuild::Win11_22000] {
        let m = Machine::build(&common::small_64mib(build, 8));
        let populated = |pfn: u64| m.mem.is_populated(pfn);
        let ram: Vec<u64> = m.mem.runs().iter().flat_map(|r| r.clone()).collect();
        let used: Vec<u64> = ram.iter().copied().filter(|&p| populated(p)).collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ m.truth.kernel.kern_base);
        for kind in [
            DumpKind::Full,
            DumpKind::KernelBitmap,
            DumpKind::CompleteBitmap,
        ] {
            let what = format!("{build} {kind:?}");
            let dump = CrashDump::from_bytes(&what, m.dump_bytes(kind)).expect("open");
            let in_dump = |pfn: u64| kind != DumpKind::KernelBitmap || populated(pfn);
            let (mut exact, mut crossing, mut absent) = (0, 0, 0);
            for _ in 0..4000 {
                // Mostly from frames that hold something (a kernel dump
                // has little else), sometimes from anywhere in RAM.
                let from = if rng.below(4) == 0 { &ram } else { &used };
                let start = from[rng.below(from.len() as u64) as usize] * PAGE + rng.below(PAGE);
                let len = 1 + rng.below(3 * PAGE + 0x800);
                let end = start + len;
                let pages: Vec<u64> = (start / PAGE..=(end - 1) / PAGE).collect();
                if pages.iter().any(|p| !m.mem.is_ram(*p)) {
                    continue;
                }
                let mut got = vec![0u8; len as usize];
                let r = dump.read_physical(PhysAddr(start), &mut got);
                match pages.iter().find(|p| !in_dump(**p)) {
                    None => {
                        r.unwrap_or_else(|e| panic!("{what}: {start:#x}+{len:#x}: {e}"));
                        let mut want = vec![0u8; len as usize];
                        m.mem.read(start, &mut want);
                        assert!(got == want, "{what}: {start:#x}+{len:#x} differs");
                        exact += 1;
                        crossing += usize::from(pages.len() >= 3);
                    }
                    Some(&missing) => {
                        let first_byte = (missing * PAGE).max(start);
                        assert_eq!(
                            r,
                            Err(MemoryError::not_in_source(PhysAddr(first_byte))),
                            "{what}: {start:#x}+{len:#x}"
                        );
                        absent += 1;
                    }
                }
            }
            assert!(
                crossing > 100,
                "{what}: {crossing} reads crossed 2+ boundaries"
            );
            if kind == DumpKind::KernelBitmap {
                assert!(absent > 100 && exact > 100, "{what}: {exact} / {absent}");
            }
        }
    }
}

/// Translate `va` through the kit's own page tables and return the last
/// entry (valid or not), for pages the kit's translate() refuses.
fn pte_of(m: &Machine, va: u64) -> u64 {
    let mut table = m.asp.pml4 * PAGE;
    for shift in [39u32, 30, 21, 12] {
        let e = m.mem.read_u64(table + ((va >> shift) & 0x1FF) * 8);
        if shift == 12 {
            return e;
        }
        assert!(e & 1 == 1 && e & 0x80 == 0, "{va:#x}: no page table");
        table = e & 0x000F_FFFF_FFFF_F000;
    }
    unreachable!()
}

/// Paged-out pool pages are not present; transition pages (standby list)
/// still read, with the bytes of the frame their PTE names.
#[test]
fn paged_out_and_transition_pages() {
    for build in [NtBuild::Win7_7601, NtBuild::Win10_19041] {
        let m = common::with_paged_out_and_transition_pages(common::small_64mib(build, 9));
        let t = &m.truth;
        let dump = CrashDump::from_bytes(build.name(), m.dump_bytes(DumpKind::KernelBitmap))
            .expect("open");
        let mut buf = vec![0u8; PAGE as usize];
        for &va in &t.pages.paged_out {
            let want = MemoryError::page_not_present(KernelVa(va));
            assert_eq!(dump.translate(KernelVa(va)), Err(want.clone()), "{build}");
            assert_eq!(dump.read_virtual(KernelVa(va), &mut buf), Err(want));
        }
        for &va in &t.pages.transition {
            let pte = pte_of(&m, va);
            assert!(pte & 1 == 0 && pte & (1 << 11) != 0, "{va:#x}: {pte:#x}");
            let frame = pte & 0x000F_FFFF_FFFF_F000;
            let tr = dump.translate(KernelVa(va)).expect("transition translates");
            assert!(tr.transition && tr.pa == PhysAddr(frame), "{build} {va:#x}");
            dump.read_virtual(KernelVa(va), &mut buf)
                .unwrap_or_else(|e| panic!("{build}: transition page {va:#x}: {e}"));
            let mut want = vec![0u8; PAGE as usize];
            m.mem.read(frame, &mut want);
            assert!(buf == want, "{build}: transition page {va:#x} bytes");
        }
        // Allocations on those pages: absent ones fail, the rest read the
        // kit's header bytes.
        let (mut read, mut missing) = (0, 0);
        for a in &t.allocations {
            let Some(h) = a.header_va else { continue };
            let mut got = [0u8; 16];
            let r = dump.read_virtual(KernelVa(h), &mut got);
            match a.pa {
                Some(pa) if a.in_dump => {
                    r.unwrap_or_else(|e| panic!("{build}: header {h:#x}: {e}"));
                    let mut want = [0u8; 16];
                    m.mem.read(pa, &mut want);
                    assert_eq!(got, want, "{build}: header {h:#x}");
                    read += 1;
                }
                _ => {
                    assert!(
                        matches!(r, Err(MemoryError::NotPresent { .. })),
                        "{build}: {h:#x}: {r:?}"
                    );
                    missing += 1;
                }
            }
        }
        assert!(
            read > 100 && missing > 0,
            "{build}: {read} read, {missing} missing"
        );
    }
}
