//! Finding nt when the dump header does not lead to it, the way Volatility
//! does (as Volatility and WinDbg do): a physical scan for the 'KDBG' tag, then a scan of
//! nt's KASLR window for an image whose RSDS names nt's PDB. Every loop is
//! bounded by the dump's pages, the page tables or [`ScanLimits`].

use std::ops::{ControlFlow, Range};

use memchr::memmem;

use crate::addr::{KernelVa, PAGE_SIZE, Pfn, PhysAddr};
use crate::memory::{Memory, MemoryExt, walk};

use super::kdbg::{self, KdDebuggerData};
use super::pe::{PeImage, read_pe_image};

/// Bounds on the fallback scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanLimits {
    /// 'KDBG' hits examined at most.
    pub max_kdbg_hits: usize,
    /// Mapped pages probed for 'MZ' at most.
    pub max_probes: usize,
    /// Images whose headers are parsed at most.
    pub max_images: usize,
    /// Where nt is loaded: 0xFFFFF800`00000000 up to 32 GiB on every x64
    /// build with or without KASLR.
    pub nt_window: Range<u64>,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            max_kdbg_hits: 256,
            max_probes: 1 << 20,
            max_images: 4096,
            nt_window: 0xFFFF_F800_0000_0000..0xFFFF_F808_0000_0000,
        }
    }
}

/// Scan physical pages for a KDBG whose KernBase holds nt's image.
pub fn scan_for_kdbg<M: Memory + ?Sized>(
    mem: &M,
    pages: &mut dyn Iterator<Item = (Pfn, &[u8])>,
    limits: &ScanLimits,
    warnings: &mut Vec<String>,
) -> Option<(KdDebuggerData, PeImage)> {
    let finder = memmem::Finder::new(b"KDBG");
    let mut hits = 0usize;
    for (pfn, page) in pages {
        for o in finder.find_iter(page) {
            if hits >= limits.max_kdbg_hits {
                warnings.push(format!(
                    "the KDBG scan stopped after {hits} candidates (cap)"
                ));
                return None;
            }
            hits += 1;
            let Some(start) =
                (pfn.0 * PAGE_SIZE + o as u64).checked_sub(kdbg::off::OWNER_TAG as u64)
            else {
                continue;
            };
            if let Some(found) = check_kdbg_candidate(mem, PhysAddr(start)) {
                return Some(found);
            }
        }
    }
    None
}

fn check_kdbg_candidate<M: Memory + ?Sized>(
    mem: &M,
    pa: PhysAddr,
) -> Option<(KdDebuggerData, PeImage)> {
    let mut head = [0u8; 0x60];
    mem.read_physical(pa, &mut head).ok()?;
    let mut kdbg = KdDebuggerData::parse(&head).ok()?;
    let kb = kdbg.kern_base;
    if !kb.is_kernel() || kb.page_offset() != 0 {
        return None;
    }
    let image = read_pe_image(mem, kb).ok()?;
    if !image.codeview.as_ref().is_some_and(|cv| cv.is_nt()) {
        return None;
    }
    // The block's list links lead to KdpDebuggerDataListHead, whose Flink
    // is the block's own address: confirm it maps back to `pa`, and then
    // read the whole block virtually (it may span non-adjacent frames).
    let list_flink = KernelVa(u64::from_le_bytes(head[..8].try_into().ok()?));
    let va = mem.read_pointer(list_flink).ok();
    match va.filter(|&va| mem.translate(va).is_ok_and(|t| t.pa == pa)) {
        Some(va) => {
            if let Ok(full) = kdbg::read_kdbg(mem, va, None) {
                kdbg = full;
            }
            kdbg.va = Some(va);
        }
        None => kdbg.va = None,
    }
    kdbg.pa = Some(pa);
    Some((kdbg, image))
}

/// Scan nt's load window for a mapped image whose RSDS names nt's PDB.
pub fn scan_for_nt_image<M: Memory + ?Sized>(
    mem: &M,
    limits: &ScanLimits,
    warnings: &mut Vec<String>,
) -> Option<PeImage> {
    let mut probes = 0usize;
    let mut images = 0usize;
    let mut found = None;
    let _ = for_each_mapped_page(mem, limits.nt_window.clone(), &mut |va, pa| {
        if probes >= limits.max_probes || images >= limits.max_images {
            warnings.push(format!(
                "the image scan stopped after probing {probes} pages and {images} images (cap)"
            ));
            return ControlFlow::Break(());
        }
        probes += 1;
        let mut mz = [0u8; 2];
        if mem.read_physical(pa, &mut mz).is_err() || &mz != b"MZ" {
            return ControlFlow::Continue(());
        }
        images += 1;
        match read_pe_image(mem, va) {
            Ok(img) if img.codeview.as_ref().is_some_and(|cv| cv.is_nt()) => {
                found = Some(img);
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        }
    });
    found
}

/// Call `f` with the VA and PA of the start of every present 4 KiB page,
/// and every 2 MiB boundary of a large or huge page, in `range`, walking
/// the kernel's page tables directly (one table read per 512 entries).
fn for_each_mapped_page<M: Memory + ?Sized>(
    mem: &M,
    range: Range<u64>,
    f: &mut dyn FnMut(KernelVa, PhysAddr) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let dtb = mem.kernel_dtb().0 & walk::PFN_MASK;
    table_walk(mem, dtb, 39, 0, &range, f)
}

fn table_walk<M: Memory + ?Sized>(
    mem: &M,
    table: u64,
    shift: u32,
    prefix: u64,
    range: &Range<u64>,
    f: &mut dyn FnMut(KernelVa, PhysAddr) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    if mem.read_physical(PhysAddr(table), &mut page).is_err() {
        return ControlFlow::Continue(());
    }
    let span = 1u64 << shift;
    for idx in 0..512u64 {
        let va = KernelVa::sign_extended(prefix | (idx << shift)).0;
        let end = va.wrapping_add(span);
        if end <= range.start || va >= range.end {
            continue;
        }
        let e = u64::from_le_bytes(
            page[idx as usize * 8..idx as usize * 8 + 8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        if e & walk::PTE_PRESENT == 0 {
            continue;
        }
        let large = shift == 30 || shift == 21;
        if shift == 12 {
            f(KernelVa(va), PhysAddr(e & walk::PFN_MASK))?;
        } else if large && e & walk::PTE_LARGE != 0 {
            let base = e & if shift == 30 {
                walk::HUGE_MASK
            } else {
                walk::LARGE_MASK
            };
            let mut off = 0;
            while off < span {
                if (range.start..range.end).contains(&(va + off)) {
                    f(KernelVa(va + off), PhysAddr(base + off))?;
                }
                off += 0x20_0000;
            }
        } else {
            table_walk(mem, e & walk::PFN_MASK, shift - 9, va, range, f)?;
        }
    }
    ControlFlow::Continue(())
}
