//! The x64 page-table walk over fuzzed physical memory: translation and
//! virtual reads (memory.rs) and the whole-space walk that maps frames to
//! addresses for the scanner (pagemap.rs), with a session's walk merged
//! in.
use super::super::{PagedPhys, u64_at};
use pooldump_core::pagemap::{PageMap, PageMapOptions, VaRange};
use pooldump_core::{KernelVa, Memory, PhysAddr, ProcessSpace};

pub fn run(data: &[u8]) {
    // 64 bytes of addresses and knobs, then the physical pages.
    if data.len() < 64 {
        return;
    }
    let (head, pages) = data.split_at(64);
    let frames = 1 + (u64_at(head, 0) & 0xFFFF);
    let dtb = u64_at(head, 8) & 0xFF;
    let mem = PagedPhys::new(pages, frames, dtb);
    let mut buf = vec![0u8; 3 * 4096 + 7];
    for i in 2..8 {
        let va = KernelVa(u64_at(head, i * 8));
        let _ = mem.translate(va);
        let len = (u64_at(head, 16) as usize >> 8) % buf.len();
        let _ = mem.read_virtual(va, &mut buf[..len]);
        let _ = mem.read_virtual_partial(va, &mut buf);
        let other = ProcessSpace::new(&mem, PhysAddr(u64_at(head, 24) & 0xFF_F000));
        let _ = other.read_virtual(va, &mut buf[..16]);
    }
    let opts = PageMapOptions {
        max_tables: 4096,
        max_mappings: 1 << 16,
    };
    let ranges = [VaRange::new(
        u64_at(head, 32) | 0xFFFF_8000_0000_0000,
        u64::MAX,
    )];
    let restricted = head[40] & 1 == 1;
    let mut map = PageMap::walk(&mem, restricted.then_some(&ranges[..]), &opts);
    // A session's walk through another root, merged in as find merges it.
    let other = ProcessSpace::new(&mem, PhysAddr(u64_at(head, 56) & 0xFF_F000));
    map.add_session(
        PageMap::walk(&other, Some(&ranges[..]), &opts),
        head[41].into(),
    );
    let _ = map.frame_runs();
    let _ = map.va_of(pooldump_core::Pfn(u64_at(head, 48) & 0xFFFF));
}
