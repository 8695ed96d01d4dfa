//! A kernel dump file: DUMP_HEADER64, the run list or SDMP/FDMP bitmap,
//! kdmp-parser's map and its cross-check, then page lookups and reads
//! through the result (crates/core/src/dump).
use pooldump_core::dump::CrashDump;
use pooldump_core::{Memory, Pfn, PhysAddr};

pub fn run(data: &[u8]) {
    let Ok(dump) = CrashDump::from_bytes("fuzz.dmp", data.to_vec()) else {
        return;
    };
    let h = dump.header();
    let _ = format!("{:?} {}", h.dump_type, h.build());
    let _ = dump.page_count();
    for e in dump.extents().take(64) {
        let _ = dump.page(e.pfn);
        let _ = dump.page(Pfn(e.pfn.0.saturating_add(e.pages.saturating_sub(1))));
    }
    for (_, page) in dump.physical_pages().take(16) {
        assert_eq!(page.len(), 4096);
    }
    let mut buf = [0u8; 0x2010];
    let dtb = dump.kernel_dtb();
    let _ = dump.read_physical(dtb, &mut buf);
    let _ = dump.read_physical(PhysAddr(dtb.0.wrapping_sub(8)), &mut buf);
    let _ = dump.read_physical(PhysAddr(u64::MAX - 4), &mut buf[..16]);
    let _ = dump.translate(pooldump_core::KernelVa(0xFFFF_F780_0000_0000));
}
