//! The dump's header, physical memory, module list, KDBG and pages, as
//! kdmp-parser reads them, against the kit's truth.

use std::collections::{BTreeMap, BTreeSet};

use kdmp_parser::gxa::{Gva, Gxa};
use kdmp_parser::parse::KernelDumpParser;
use kdmp_parser::structs::{DumpType, KdDebuggerData64};
use pooldump_kit::{DumpKind, Machine};

use crate::kd::{Kd, Layout, PAGE};

pub(crate) fn check_header(m: &Machine, kind: DumpKind, p: &KernelDumpParser, what: &str) {
    let t = &m.truth;
    let h = p.headers();
    let want_type = match kind {
        DumpKind::Full => DumpType::Full,
        DumpKind::KernelBitmap | DumpKind::CompleteBitmap => DumpType::Bmp,
        DumpKind::BitmapKernel => DumpType::LiveKernelMemory,
        DumpKind::Summary => panic!("{what}: kdmp-parser has no reader for DumpType 2"),
    };
    assert_eq!(p.dump_type(), want_type, "{what}: dump type");
    assert_eq!(h.directory_table_base, t.kernel.dtb, "{what}: DTB");
    assert_eq!(h.minor_version, t.build_number, "{what}: build");
    assert_eq!(h.major_version, 0xF, "{what}: free build");
    assert_eq!(h.machine_image_type, 0x8664, "{what}: machine");
    assert_eq!(h.number_processors, t.cpus, "{what}: processors");
    assert_eq!(
        h.bug_check_code, m.scenario.bugcheck.code,
        "{what}: bugcheck"
    );
    assert_eq!(
        h.bug_check_code_parameters, m.scenario.bugcheck.parameters,
        "{what}: bugcheck parameters"
    );
    assert_eq!(
        h.kd_debugger_data_block, t.kernel.kd_debugger_data_block,
        "{what}: KdDebuggerDataBlock"
    );
    assert_eq!(
        h.ps_loaded_module_list, t.kernel.ps_loaded_module_list,
        "{what}: PsLoadedModuleList"
    );
    assert_eq!(h.system_time as u64, t.kernel.system_time, "{what}: time");
}

/// Every RAM frame (full, complete) or every frame the kit populated
/// (kernel bitmap) is in the dump with the kit's bytes.
pub(crate) fn check_physmem(m: &Machine, kind: DumpKind, p: &KernelDumpParser, what: &str) {
    let ram: Vec<u64> = m.mem.runs().iter().flat_map(|r| r.clone()).collect();
    let populated: BTreeSet<u64> = ram
        .iter()
        .copied()
        .filter(|&f| m.mem.is_populated(f))
        .collect();
    let in_dump: BTreeSet<u64> = p.physmem().map(|(gpa, _)| gpa.u64() / PAGE).collect();
    match kind {
        DumpKind::KernelBitmap | DumpKind::BitmapKernel => {
            assert_eq!(in_dump, populated, "{what}: pages in the dump")
        }
        _ => assert_eq!(
            in_dump,
            ram.iter().copied().collect::<BTreeSet<u64>>(),
            "{what}: pages in the dump"
        ),
    }
    let kd = Kd::new(p);
    let mut want = vec![0u8; PAGE as usize];
    for &pfn in &populated {
        m.mem.read(pfn * PAGE, &mut want);
        assert!(kd.page(pfn) == want, "{what}: PFN {pfn:#x} differs");
    }
    if !matches!(kind, DumpKind::KernelBitmap | DumpKind::BitmapKernel)
        && let Some(&empty) = ram.iter().find(|f| !populated.contains(f))
    {
        assert!(
            kd.page(empty).iter().all(|&b| b == 0),
            "{what}: unused PFN {empty:#x} is not zero"
        );
    }
}

pub(crate) fn check_modules(m: &Machine, p: &KernelDumpParser, what: &str) {
    let got: BTreeMap<(u64, u64), String> = p
        .kernel_modules()
        .map(|(r, name)| ((r.start.u64(), r.end.u64()), name.to_string()))
        .collect();
    let want: BTreeMap<(u64, u64), String> = m
        .truth
        .kernel
        .modules
        .iter()
        .map(|md| ((md.base, md.base + md.size), md.full_name.clone()))
        .collect();
    assert!(!want.is_empty(), "{what}: the truth has no modules");
    assert_eq!(got, want, "{what}: kernel modules");
}

pub(crate) fn check_kdbg(m: &Machine, layout: &Layout, kd: &Kd, what: &str) {
    let t = &m.truth;
    let kdbg: KdDebuggerData64 = kd
        .virt
        .read_struct(Gva::new(t.kernel.kd_debugger_data_block))
        .unwrap_or_else(|e| panic!("{what}: KDBG: {e}"));
    assert_eq!(
        kdbg.header.owner_tag,
        u32::from_le_bytes(*b"KDBG"),
        "{what}: OwnerTag"
    );
    assert_eq!(kdbg.kern_base, t.kernel.kern_base, "{what}: KernBase");
    assert_eq!(
        kdbg.ps_loaded_module_list, t.kernel.ps_loaded_module_list,
        "{what}: KDBG PsLoadedModuleList"
    );
    assert_eq!(
        kdbg.pool_track_table,
        t.kernel.kern_base + layout.rva("PoolTrackTable"),
        "{what}: KDBG PoolTrackTable holds the variable's address"
    );
    // nt's image is at KernBase.
    assert_eq!(
        &kd.read(kdbg.kern_base, 2, "nt's DOS header")[..],
        b"MZ",
        "{what}"
    );
}

/// Paged-out pages do not translate; transition pages do, to the frame
/// the kit left them in.
pub(crate) fn check_pages(m: &Machine, kd: &Kd, what: &str) {
    for &va in &m.truth.pages.paged_out {
        assert!(
            kd.try_read(va, 8).is_err(),
            "{what}: paged-out {va:#x} reads"
        );
    }
    for &va in &m.truth.pages.transition {
        assert!(
            kd.translate(va).is_some(),
            "{what}: transition page {va:#x} does not translate"
        );
    }
    for &va in &m.truth.pages.large_pages {
        let t = kd.virt.translate(Gva::new(va)).expect("large page");
        assert_eq!(
            t.page_kind,
            kdmp_parser::structs::PageKind::Large,
            "{what}: {va:#x}"
        );
    }
}

// ----- tests --------------------------------------------------------------
