use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};

#[test]
fn every_build_builds() {
    for b in NtBuild::ALL {
        let t = std::time::Instant::now();
        let m = Machine::build(&Scenario::small(b, 1));
        let d = m.dump_bytes(DumpKind::KernelBitmap);
        eprintln!(
            "{b}: {} bytes, {} allocations, {} big, {:?}",
            d.len(),
            m.truth.allocations.len(),
            m.truth.big_pool.entries.len(),
            t.elapsed()
        );
    }
}

#[test]
#[ignore]
fn write_sample_for_manual_look() {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 1));
    m.write_dump_file(DumpKind::KernelBitmap, "/tmp/k19041.dmp".as_ref())
        .unwrap();
    m.write_dump_file(DumpKind::Full, "/tmp/f19041.dmp".as_ref())
        .unwrap();
    let m = Machine::build(&Scenario::small(NtBuild::Win7_7601, 1));
    m.write_dump_file(DumpKind::KernelBitmap, "/tmp/k7601.dmp".as_ref())
        .unwrap();
    m.write_symbol_store("/tmp/kitsyms".as_ref()).unwrap();
    std::fs::write("/tmp/k7601.truth.json", m.truth.to_json()).unwrap();
}
