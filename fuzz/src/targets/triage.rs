//! A small memory dump (DumpType 4, C:\Windows\Minidump): the triage
//! header, the driver list and its strings, the captured ranges, the
//! CONTEXT, and reads through them (crates/core/src/dump/triage.rs).
use pooldump_core::dump::TriageDump;
use pooldump_core::{KernelVa, Memory};

pub fn run(data: &[u8]) {
    let Ok(d) = TriageDump::from_bytes("fuzz.dmp", data.to_vec()) else {
        return;
    };
    let s = d.summary();
    let _ = format!("{s:?}");
    let _ = d.no_pool_explanation();
    for dr in &s.drivers {
        let _ = dr.base_name();
    }
    let _ = (d.prcb_copy(), d.process_copy(), d.thread_copy());
    let mut buf = vec![0u8; 0x3000];
    if let Some(c) = d.context() {
        let _ = (c.pc(), c.sp(), c.frame_pointer(), c.link_register());
        let _ = d.read_virtual_partial(KernelVa(c.sp()), &mut buf);
    }
    for r in d.ranges().iter().take(16) {
        let _ = d.read_virtual(r.va, &mut buf[..64]);
        let _ = d.read_virtual_partial(KernelVa(r.va.0.wrapping_sub(8)), &mut buf);
    }
}
