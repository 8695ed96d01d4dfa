//! Small memory dumps (DumpType 4): the real Windows 11 ARM64 file in
//! ../shared/realworld/ and x64 ones the kit writes.

mod support;

use pooldump_core::dump::triage::{Machine, TriageContext};
use pooldump_core::dump::{AnyDump, TriageDump, open_any};
use pooldump_core::{KernelVa, Memory, MemoryError};

fn real() -> Option<std::path::PathBuf> {
    let p = support::shared_dir()?.join("realworld/triage-arm64-22000.dmp");
    if p.is_file() {
        Some(p)
    } else {
        support::missing(&p.display().to_string())
    }
}

#[test]
fn the_real_arm64_small_dump_reads_as_windows_wrote_it() {
    let Some(p) = real() else { return };
    let d = match open_any(&p).unwrap() {
        AnyDump::Small(d) => d,
        AnyDump::Kernel(_) => panic!("a DumpType 4 file opened as a kernel dump"),
    };
    let s = d.summary();
    eprintln!("{s:#?}");
}
