//! Physical memory of a synthetic machine: RAM runs, populated frames and a
//! frame allocator that scatters allocations the way a real PFN allocator
//! does (virtually adjacent pages rarely sit in adjacent frames).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

pub const PAGE: usize = 0x1000;

/// The pieces of the `len` bytes at `addr` (physical or virtual) that each
/// stay within one page: (the piece's address, its range in the buffer).
/// Addresses wrap past the top of the space; translation refuses them.
pub fn page_pieces(addr: u64, len: usize) -> impl Iterator<Item = (u64, std::ops::Range<usize>)> {
    let mut done = 0;
    std::iter::from_fn(move || {
        (done < len).then(|| {
            let cur = addr.wrapping_add(done as u64);
            let n = (PAGE - (cur % PAGE as u64) as usize).min(len - done);
            done += n;
            (cur, done - n..done)
        })
    })
}
pub(crate) const PAGE64: u64 = PAGE as u64;
pub(crate) const MB: u64 = 1 << 20;
pub(crate) const GB: u64 = 1 << 30;
pub type Page = [u8; PAGE];

/// Contents of frames computed when the dump is written rather than held
/// in memory: how the kit makes multi-GiB dumps in bounded memory.
pub trait PageFiller: Send + Sync {
    fn fill(&self, pfn: u64, page: &mut Page);
}

/// Physical memory: the RAM layout (what a PHYSICAL_MEMORY_DESCRIPTOR
/// describes) and the frames that hold something.
pub struct PhysMemory {
    /// RAM as PFN ranges, ascending and disjoint.
    runs: Vec<Range<u64>>,
    frames: HashMap<u64, Box<Page>>,
    /// Frame ranges filled procedurally (ascending, disjoint, and never in
    /// `frames`).
    procedural: Vec<(Range<u64>, Arc<dyn PageFiller>)>,
    /// Next candidate frame for the allocator, and which run it is in.
    cursor: u64,
    rng: fastrand::Rng,
}

impl PhysMemory {
    /// A machine with `ram_bytes` of RAM laid out as a PC firmware reports
    /// it: frame 0 reserved, the legacy hole at 0xA0000-0xFFFFF, a PCI hole
    /// below 4 GiB when RAM goes that high.
    pub fn new(ram_bytes: u64, seed: u64) -> Self {
        let pages = ram_bytes / PAGE as u64;
        let mut runs: Vec<Range<u64>> = Vec::with_capacity(3);
        runs.push(1..0x9F);
        let below_4g_end = 0xC0000u64; // 3 GiB: the PCI hole starts there
        if pages <= below_4g_end {
            runs.push(0x100..pages.max(0x200));
        } else {
            runs.push(0x100..below_4g_end);
            runs.push(0x100000..0x100000 + (pages - below_4g_end));
        }
        Self {
            runs,
            frames: HashMap::new(),
            procedural: Vec::new(),
            cursor: 0x100,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn runs(&self) -> &[Range<u64>] {
        &self.runs
    }

    /// One past the highest RAM frame.
    pub fn max_pfn(&self) -> u64 {
        self.runs.last().map_or(0, |r| r.end)
    }

    pub fn is_ram(&self, pfn: u64) -> bool {
        self.runs.iter().any(|r| r.contains(&pfn))
    }

    /// Populated frames (ascending order is the caller's business).
    pub fn populated(&self) -> impl Iterator<Item = (u64, &Page)> {
        self.frames.iter().map(|(&p, b)| (p, &**b))
    }

    pub fn populated_count(&self) -> usize {
        self.frames.len()
    }

    pub fn frame(&self, pfn: u64) -> Option<&Page> {
        self.frames.get(&pfn).map(|b| &**b)
    }

    /// The frame's bytes, populating it with zeros on first use.
    pub fn frame_mut(&mut self, pfn: u64) -> &mut Page {
        assert!(self.is_ram(pfn), "frame {pfn:#x} is not RAM");
        self.frames
            .entry(pfn)
            .or_insert_with(|| Box::new([0u8; PAGE]))
    }

    /// Remove a frame from the populated set (it reads as absent from a
    /// kernel dump, zeros in a full dump).
    pub fn drop_frame(&mut self, pfn: u64) {
        self.frames.remove(&pfn);
    }

    pub fn is_populated(&self, pfn: u64) -> bool {
        self.frames.contains_key(&pfn) || self.procedural_at(pfn).is_some()
    }

    fn procedural_at(&self, pfn: u64) -> Option<&Arc<dyn PageFiller>> {
        self.procedural
            .iter()
            .find(|(r, _)| r.contains(&pfn))
            .map(|(_, f)| f)
    }

    /// Free, RAM-backed, contiguous frames aligned to `align` (not taken).
    pub fn free_contiguous(&self, n: u64, align: u64) -> u64 {
        self.find_contiguous(n, align)
    }

    /// Hand the frames `pfns` (free, from [`Self::free_contiguous`]) to a
    /// filler that computes their contents on demand.
    pub fn add_procedural(&mut self, pfns: Range<u64>, filler: Arc<dyn PageFiller>) {
        self.cursor = self.cursor.max(pfns.end);
        self.procedural.push((pfns, filler));
        self.procedural.sort_by_key(|(r, _)| r.start);
    }

    /// Every frame that holds something, ascending.
    pub fn present_pfns(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.frames.keys().copied().collect();
        for (r, _) in &self.procedural {
            v.extend(r.clone());
        }
        v.sort_unstable();
        v
    }

    /// Copy a frame's contents into `out`; false (and zeros) if the frame
    /// holds nothing.
    pub fn frame_into(&self, pfn: u64, out: &mut Page) -> bool {
        if let Some(f) = self.frames.get(&pfn) {
            out.copy_from_slice(&**f);
            true
        } else if let Some(f) = self.procedural_at(pfn) {
            f.fill(pfn, out);
            true
        } else {
            out.fill(0);
            false
        }
    }

    /// Take a specific frame (the DTB sits where Windows puts it).
    pub fn claim(&mut self, pfn: u64) -> u64 {
        assert!(
            !self.frames.contains_key(&pfn),
            "frame {pfn:#x} already in use"
        );
        self.frame_mut(pfn);
        pfn
    }

    /// Allocate one zeroed frame somewhere after the cursor, skipping a few
    /// frames at random so neighbouring allocations are not neighbours in
    /// physical memory.
    pub fn alloc(&mut self) -> u64 {
        loop {
            let skip = self.rng.u64(0..4);
            self.cursor += 1 + skip;
            if !self.is_ram(self.cursor) {
                self.cursor = self.next_ram_after(self.cursor);
            }
            if !self.is_populated(self.cursor) {
                let p = self.cursor;
                self.frame_mut(p);
                return p;
            }
        }
    }

    /// Allocate `n` frames and return them shuffled: a virtually
    /// contiguous region backed by scattered frames.
    pub fn alloc_scattered(&mut self, n: usize) -> Vec<u64> {
        let mut v: Vec<u64> = (0..n).map(|_| self.alloc()).collect();
        self.rng.shuffle(&mut v);
        v
    }

    /// Allocate `n` physically contiguous frames aligned to `align` frames
    /// (512 for a 2 MiB large page). Only the frames that get written are
    /// populated; the rest read as zeros in a full dump and are absent in a
    /// kernel dump, like free space inside a large page that was never
    /// touched... except that a kernel dump includes the whole large page,
    /// so callers populate what they map.
    pub fn alloc_contiguous(&mut self, n: u64, align: u64) -> u64 {
        let base = self.find_contiguous(n, align);
        for p in base..base + n {
            self.frame_mut(p);
        }
        self.cursor = base + n;
        base
    }

    fn find_contiguous(&self, n: u64, align: u64) -> u64 {
        let mut base = (self.cursor + 1).div_ceil(align) * align;
        loop {
            let in_ram = self
                .runs
                .iter()
                .any(|r| r.start <= base && base + n <= r.end);
            let clear_of_procedural = self
                .procedural
                .iter()
                .all(|(r, _)| base + n <= r.start || base >= r.end);
            if in_ram
                && clear_of_procedural
                && (base..base + n).all(|p| !self.frames.contains_key(&p))
            {
                return base;
            }
            base += align;
            assert!(
                base < self.max_pfn(),
                "out of RAM for {n} contiguous frames"
            );
        }
    }

    fn next_ram_after(&self, pfn: u64) -> u64 {
        self.runs
            .iter()
            .find(|r| r.end > pfn)
            .map(|r| r.start.max(pfn))
            .unwrap_or_else(|| panic!("synthetic machine ran out of RAM at frame {pfn:#x}"))
    }

    pub fn write(&mut self, pa: u64, bytes: &[u8]) {
        for (cur, r) in page_pieces(pa, bytes.len()) {
            let off = (cur % PAGE as u64) as usize;
            self.frame_mut(cur / PAGE as u64)[off..off + r.len()].copy_from_slice(&bytes[r]);
        }
    }

    pub fn read(&self, pa: u64, out: &mut [u8]) {
        for (cur, r) in page_pieces(pa, out.len()) {
            let off = (cur % PAGE as u64) as usize;
            let n = r.len();
            match self.frame(cur / PAGE as u64) {
                Some(f) => out[r].copy_from_slice(&f[off..off + n]),
                None => {
                    let mut page = [0u8; PAGE];
                    self.frame_into(cur / PAGE as u64, &mut page);
                    out[r].copy_from_slice(&page[off..off + n]);
                }
            }
        }
    }

    pub fn read_u64(&self, pa: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read(pa, &mut b);
        u64::from_le_bytes(b)
    }

    pub fn write_u64(&mut self, pa: u64, v: u64) {
        self.write(pa, &v.to_le_bytes());
    }

    pub fn rng(&mut self) -> &mut fastrand::Rng {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_ram_and_unique() {
        let mut m = PhysMemory::new(64 << 20, 1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let p = m.alloc();
            assert!(m.is_ram(p));
            assert!(seen.insert(p));
        }
        let base = m.alloc_contiguous(512, 512);
        assert_eq!(base % 512, 0);
        assert!((base..base + 512).all(|p| m.is_populated(p)));
    }

    #[test]
    fn ram_above_4g_skips_the_pci_hole() {
        let m = PhysMemory::new(8 << 30, 1);
        assert!(m.is_ram(0xBFFFF));
        assert!(!m.is_ram(0xC0000));
        assert!(m.is_ram(0x100000));
        assert_eq!(m.max_pfn(), 0x100000 + (0x200000 - 0xC0000));
    }
}
