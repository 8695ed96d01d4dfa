//! The scan on the kit's three drivers, read as files: every immediate
//! drivers.json records for a tag (the generator's own record, from the
//! linker's map and its disassembly) is a site, and nothing else is.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::stack::SymbolizerOptions;

fn scan_driver(d: &pooldump_kit::drivers::Driver) -> (ImageMemory, StackWalker, ModuleScan) {
    let img = ImageMemory::from_bytes(&d.info.file, Arc::from(d.image)).unwrap();
    let mut w = StackWalker::from_modules(vec![img.module()]);
    let scan = scan_module(&mut w, &img, 0).unwrap();
    (img, w, scan)
}

#[test]
fn every_recorded_immediate_is_a_site_and_nothing_else() {
    for d in pooldump_kit::drivers::all() {
        let (img, mut w, scan) = scan_driver(d);
        assert_eq!(scan.unreadable_pages, 0);
        let mut sym = Symbolizer::new(SymbolizerOptions::default());
        let (sites, unresolved) =
            tag_sites(std::slice::from_ref(&scan), &[], &mut w, &mut sym, &img);
        assert!(unresolved.is_empty(), "{}: {unresolved:?}", d.info.file);
        for (tag, rvas) in &d.info.tag_rvas {
            let t = PoolTag::parse(tag).unwrap();
            let got: BTreeSet<u64> = sites
                .iter()
                .filter(|s| s.tag == t)
                .map(|s| u64::from(s.immediate_rva))
                .collect();
            let want: BTreeSet<u64> = rvas.iter().copied().collect();
            assert_eq!(got, want, "{} {tag}", d.info.file);
        }
        let all: usize = d.info.tag_rvas.iter().map(|(_, r)| r.len()).sum();
        let distinct: BTreeSet<u32> = sites.iter().map(|s| s.immediate_rva).collect();
        assert_eq!(distinct.len(), all, "{}: {sites:#?}", d.info.file);
    }
}

#[test]
fn leakydrv_leak_sites_are_the_three_allocations_and_two_frees() {
    let d = &pooldump_kit::drivers::all()[0];
    let (img, mut w, scan) = scan_driver(d);
    let mut sym = Symbolizer::new(SymbolizerOptions::default());
    let leak = PoolTag::parse("Leak").unwrap();
    let (sites, _) = tag_sites(&[scan], &[leak], &mut w, &mut sym, &img);
    let f = &d.info.functions;
    // The function of each call, from the linker map's starts.
    let func = |va: u64| {
        let rva = va - img.base().0;
        f.iter()
            .filter(|(_, s)| **s <= rva)
            .max_by_key(|(_, s)| **s)
            .map(|(n, _)| n.clone())
            .unwrap()
    };
    let got: BTreeSet<(String, PoolCall, bool)> = sites
        .iter()
        .map(|s| (func(s.call.0), s.kind, s.tail_call))
        .collect();
    // LkBurstAllocate's loop is a chained fragment placed after the
    // functions; the map has no symbol for it, so it counts as the last
    // function before it.
    let burst = func(img.base().0 + 0x1470);
    let want: BTreeSet<(String, PoolCall, bool)> = [
        ("LeakOneRecord".to_string(), PoolCall::Alloc, false),
        ("LkQueueWork".to_string(), PoolCall::Alloc, false),
        (burst, PoolCall::Alloc, false),
        ("LkCompleteWork".to_string(), PoolCall::Free, true),
        ("LkTrimCache".to_string(), PoolCall::Free, false),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "{sites:#?}");
    // The run-time choice reaches the call with its alternative; the trim
    // loop calls through a register loaded from the IAT.
    let q = sites
        .iter()
        .find(|s| func(s.call.0) == "LkQueueWork")
        .unwrap();
    assert_eq!(q.alternatives, vec![PoolTag::parse("LkBf").unwrap()]);
    let t = sites
        .iter()
        .find(|s| func(s.call.0) == "LkTrimCache")
        .unwrap();
    assert!(matches!(t.via, CallVia::Register { .. }), "{t:?}");
    // Without a PDB, leakydrv has no exports: names are module+offset.
    assert!(
        sites.iter().all(|s| s.site.starts_with("leakydrv+0x")),
        "{sites:#?}"
    );
    // File offsets are where the bytes are in the file.
    for s in &sites {
        let off = s.file_offset.unwrap() as usize;
        assert_eq!(&d.image[off..off + 4], &s.tag.bytes());
    }
}

#[test]
fn netsim_calls_through_thunks_and_fsfilt_through_the_quota_allocator() {
    let all = pooldump_kit::drivers::all();
    let (_, _, scan) = scan_driver(&all[1]);
    assert!(!scan.calls.is_empty());
    assert!(
        scan.calls
            .iter()
            .all(|c| matches!(c.via, CallVia::Thunk { .. })),
        "{:#?}",
        scan.calls
    );
    let (_, _, scan) = scan_driver(&all[2]);
    let quota: Vec<&PoolCallSite> = scan
        .calls
        .iter()
        .filter(|c| c.routine == "ExAllocatePoolWithQuotaTag")
        .collect();
    assert_eq!(quota.len(), 1);
    assert_eq!(
        quota[0].tags.as_ref().unwrap()[0].tag,
        PoolTag::parse("FsFl").unwrap()
    );
}

#[test]
fn a_hostile_image_is_an_error_or_nothing_never_a_panic() {
    let d = &pooldump_kit::drivers::all()[0];
    // Truncated at every 97 bytes, and with the section table garbled.
    for cut in (0..d.image.len()).step_by(97) {
        let b: Arc<[u8]> = Arc::from(&d.image[..cut]);
        if let Ok(img) = ImageMemory::from_bytes("cut", b) {
            let mut w = StackWalker::from_modules(vec![img.module()]);
            let _ = scan_module(&mut w, &img, 0);
        }
    }
    let mut v = d.image.to_vec();
    let e = u32::from_le_bytes(v[0x3C..0x40].try_into().unwrap()) as usize;
    let opt = u16::from_le_bytes(v[e + 20..e + 22].try_into().unwrap()) as usize;
    let table = e + 24 + opt;
    for k in 0..40 * 3 {
        v[table + k] = 0xFF;
    }
    if let Ok(img) = ImageMemory::from_bytes("garbled", Arc::from(v)) {
        let mut w = StackWalker::from_modules(vec![img.module()]);
        let _ = scan_module(&mut w, &img, 0);
    }
}

/// The kit machine's memory as pooldump reads it.
struct Live<'a>(&'a pooldump_kit::Machine);

impl Memory for Live<'_> {
    fn describe(&self) -> String {
        "the kit's machine".into()
    }
    fn kernel_dtb(&self) -> crate::addr::PhysAddr {
        crate::addr::PhysAddr(self.0.truth.kernel.dtb)
    }
    fn read_physical(
        &self,
        pa: crate::addr::PhysAddr,
        buf: &mut [u8],
    ) -> Result<(), crate::memory::MemoryError> {
        if !self.0.mem.is_ram(pa.0 >> 12) {
            return Err(crate::memory::MemoryError::not_in_source(pa));
        }
        self.0.mem.read(pa.0, buf);
        Ok(())
    }
}

#[test]
fn mapped_driver_from_code_names_the_module_that_passes_the_tag() {
    use pooldump_kit::{Machine, NtBuild, Scenario};
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 8));
    let modules: Vec<LoadedModule> = m
        .truth
        .kernel
        .modules
        .iter()
        .map(|x| LoadedModule {
            entry: KernelVa(0),
            base: KernelVa(x.base),
            size: x.size as u32,
            entry_point: KernelVa(0),
            name: x.base_name.clone(),
            full_name: None,
        })
        .collect();
    let t = |s: &str| PoolTag::parse(s).unwrap();
    let got = attribute_tags(
        &Live(&m),
        &modules,
        &[t("Leak"), t("LkBf"), t("NSbf"), t("FsFl"), t("File")],
    );
    let row = |s: &str| {
        got.get(&t(s))
            .map(|a| (a.module.as_str(), a.alloc_sites, a.free_sites))
    };
    assert_eq!(row("Leak"), Some(("leakydrv.sys", 3, 2)));
    assert_eq!(row("LkBf"), Some(("leakydrv.sys", 2, 2)));
    assert_eq!(row("NSbf"), Some(("netsim.sys", 2, 1)));
    assert_eq!(row("FsFl"), Some(("fsfilt.sys", 1, 1)));
    // nt's own tags are not attributed to a driver.
    assert_eq!(row("File"), None);
}

/// leakydrv with .text claiming `size` bytes and SizeOfImage to match; with
/// `fill`, the file holds that much raw code (the bytes after .text's own,
/// then `fill`), else zeros past its raw data.
fn leakydrv_with_text_of(size: u32, fill: Option<u8>) -> ImageMemory {
    let d = &pooldump_kit::drivers::all()[0];
    let mut v = d.image.to_vec();
    let e = u32::from_le_bytes(v[0x3C..0x40].try_into().unwrap()) as usize;
    let opt = e + 24;
    let table = opt + u16::from_le_bytes(v[e + 20..e + 22].try_into().unwrap()) as usize;
    v[table + 8..table + 12].copy_from_slice(&size.to_le_bytes());
    v[opt + 56..opt + 60].copy_from_slice(&(size + 0x10_0000).to_le_bytes());
    if let Some(b) = fill {
        let raw = u32::from_le_bytes(v[table + 20..table + 24].try_into().unwrap());
        v[table + 16..table + 20].copy_from_slice(&size.to_le_bytes());
        v.resize((raw + size) as usize, b);
    }
    ImageMemory::from_bytes("huge", Arc::from(v)).unwrap()
}

fn leak_calls(scan: &ModuleScan) -> usize {
    let leak = PoolTag::parse("Leak").unwrap();
    scan.calls
        .iter()
        .filter(|c| c.tags.iter().flatten().any(|t| t.tag == leak))
        .count()
}

#[test]
fn a_huge_code_section_is_cut_into_bounded_regions() {
    // 1 MiB of code in the file (int3 after the real code): the scan still
    // finds the real sites, and the filler is cut into regions of at most
    // MAX_REGION_BYTES.
    let big: u32 = 1 << 20;
    let img = leakydrv_with_text_of(big, Some(0xCC));
    let mut w = StackWalker::from_modules(vec![img.module()]);
    let scan = scan_module(&mut w, &img, 0).unwrap();
    assert_eq!(scan.code_bytes, u64::from(big));
    assert_eq!(leak_calls(&scan), 5, "{:#?}", scan.calls);
}

#[test]
fn pages_of_zeros_past_a_sections_raw_data_are_not_decoded() {
    // A VirtualSize of 64 MiB on a file of a few KiB (found by the
    // callsites fuzz target: seconds of decoding `add [rax], al`): only
    // the pages that hold bytes are decoded (.text's, and the sections
    // after it that its VirtualSize now covers: 0x5000 bytes).
    let img = leakydrv_with_text_of(MAX_CODE_BYTES as u32, None);
    let mut w = StackWalker::from_modules(vec![img.module()]);
    let scan = scan_module(&mut w, &img, 0).unwrap();
    assert_eq!(scan.code_bytes, 0x5000);
    assert_eq!(scan.unreadable_pages, 0);
    assert_eq!(leak_calls(&scan), 5, "{:#?}", scan.calls);
}

/// An image file mapped at `base` rather than its ImageBase, as a loader
/// entry's DllBase places it (the top of the address space, here); with
/// `every`, mapped again every `every` bytes from `base`, as a module list
/// whose entries all point at the same code would have it.
struct At<'a> {
    img: &'a ImageMemory,
    base: u64,
    every: u64,
}

impl<'a> At<'a> {
    fn once(img: &'a ImageMemory, base: u64) -> Self {
        At {
            img,
            base,
            every: u64::MAX,
        }
    }
}

impl Memory for At<'_> {
    fn describe(&self) -> String {
        format!("{} at {:#x}", self.img.describe(), self.base)
    }
    fn kernel_dtb(&self) -> crate::addr::PhysAddr {
        self.img.kernel_dtb()
    }
    fn read_physical(
        &self,
        pa: crate::addr::PhysAddr,
        buf: &mut [u8],
    ) -> Result<(), crate::memory::MemoryError> {
        self.img.read_physical(pa, buf)
    }
    fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), crate::memory::MemoryError> {
        let off =
            va.0.checked_sub(self.base)
                .ok_or(crate::memory::MemoryError::page_not_present(va))?
                % self.every;
        self.img
            .read_virtual(KernelVa(self.img.base().0 + off), buf)
    }
}

fn walker_at(img: &ImageMemory, base: u64) -> StackWalker {
    let mut m = img.module();
    m.base = KernelVa(base);
    StackWalker::from_modules(vec![m])
}

/// [`scan_module`] of `img` loaded at `base`.
fn scan_at(img: &ImageMemory, base: u64) -> Result<ModuleScan, crate::stack::ImageError> {
    scan_module(&mut walker_at(img, base), &At::once(img, base), 0)
}

/// The calls of a scan, as (RVA, routine, tags).
fn calls_by_rva(scan: &ModuleScan) -> Vec<(u64, String, Option<Vec<PoolTag>>)> {
    scan.calls
        .iter()
        .map(|c| {
            let tags = c.tags.as_ref().map(|v| v.iter().map(|t| t.tag).collect());
            (c.call.0 - scan.base.0, c.routine.clone(), tags)
        })
        .collect()
}

#[test]
fn a_driver_just_under_the_top_of_the_address_space_is_scanned_as_anywhere() {
    // leakydrv (SizeOfImage 0x6000) loaded in the last 64 KiB: its code is
    // cut into regions whose next cut would lie past 2^64 (found by the
    // callsites fuzz target: an overflow).
    let d = &pooldump_kit::drivers::all()[0];
    let (img, _, home) = scan_driver(d);
    let scan = scan_at(&img, 0xFFFF_FFFF_FFFF_0000).unwrap();
    assert_eq!(calls_by_rva(&scan), calls_by_rva(&home));
    assert!(!scan.calls.is_empty());
}

#[test]
fn a_driver_that_would_wrap_past_the_top_of_the_address_space_is_refused() {
    let d = &pooldump_kit::drivers::all()[0];
    let (img, _, _) = scan_driver(d);
    let base = 0xFFFF_FFFF_FFFF_E000;
    let err = scan_at(&img, base).unwrap_err();
    assert!(
        matches!(err, crate::stack::ImageError::PastAddressSpace { base: b, size_of_image: 0x6000, .. } if b == base),
        "{err}"
    );
    // Mapped_Driver from code skips it.
    let module = LoadedModule {
        entry: KernelVa(0),
        base: KernelVa(base),
        size: 0x6000,
        entry_point: KernelVa(0),
        name: "leakydrv.sys".into(),
        full_name: None,
    };
    let nt = LoadedModule {
        base: KernelVa(0xFFFF_F800_0000_0000),
        name: "ntoskrnl.exe".into(),
        ..module.clone()
    };
    let leak = PoolTag::parse("Leak").unwrap();
    assert!(attribute_tags(&At::once(&img, base), &[nt, module], &[leak]).is_empty());
}

#[test]
fn import_slots_past_the_top_of_the_address_space_are_left_out() {
    // leakydrv near the top, its first import descriptor's FirstThunk
    // moved to RVA 0xFFFF0000: base + RVA passes 2^64.
    let d = &pooldump_kit::drivers::all()[0];
    let (_, _, home) = scan_driver(d);
    let mut v = d.image.to_vec();
    let e = u32::from_le_bytes(v[0x3C..0x40].try_into().unwrap()) as usize;
    // PE32+: the data directories start 112 bytes into the optional
    // header; the import directory is the second.
    let dir = e + 24 + 112 + 8;
    let import_rva = u32::from_le_bytes(v[dir..dir + 4].try_into().unwrap());
    let desc = home.file_offset(import_rva).unwrap() as usize;
    v[desc + 16..desc + 20].copy_from_slice(&0xFFFF_0000u32.to_le_bytes());
    let img = ImageMemory::from_bytes("leakydrv.sys", Arc::from(v)).unwrap();
    let top = 0xFFFF_FFFF_FFFF_0000;
    let mut w = walker_at(&img, top);
    let mem = At::once(&img, top);
    let slots = import_slots(&mut w, &mem, 0, &mut ReadStats::default()).unwrap();
    assert!(slots.keys().all(|&s| s >= top), "{slots:x?}");
    // At its own base the same names are there, at the moved slots.
    let mut w = StackWalker::from_modules(vec![img.module()]);
    let home_slots = import_slots(&mut w, &img, 0, &mut ReadStats::default()).unwrap();
    assert!(home_slots.len() > slots.len());
}

#[test]
fn the_scans_of_all_drivers_share_one_budget_of_code() {
    // Four drivers, each with 1 MiB of code, scanned with 2.5 MiB in all:
    // two whole, the third cut, the fourth not scanned, each said.
    let mib: u64 = 1 << 20;
    let img = leakydrv_with_text_of(mib as u32, Some(0xCC));
    let (first, stride) = (0xFFFF_F800_2000_0000u64, 0x100_0000u64);
    let mut modules = vec![StackModule::new(
        "ntoskrnl.exe",
        KernelVa(first - stride),
        0x1000,
        true,
    )];
    for k in 0..4u64 {
        let mut m = img.module();
        m.name = format!("drv{k}.sys");
        m.base = KernelVa(first + k * stride);
        modules.push(m);
    }
    let mut w = StackWalker::from_modules(modules);
    let mem = At {
        img: &img,
        base: first,
        every: stride,
    };
    let mut notes = Vec::new();
    let scans = scan_drivers_within(&mut w, &mem, &[], &mut notes, 5 * mib / 2);
    let decoded: Vec<u64> = scans.iter().map(|s| s.code_bytes).collect();
    assert_eq!(scans.len(), 3, "{notes:#?}");
    assert_eq!(decoded[..2], [mib, mib]);
    assert!(decoded[2] <= mib / 2, "{decoded:?}");
    assert_eq!(leak_calls(&scans[0]), 5);
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("drv2.sys: section .text is cut")),
        "{notes:#?}"
    );
    assert!(
        notes.iter().any(|n| n.starts_with("drv3.sys: not scanned")),
        "{notes:#?}"
    );
}

/// poolapis.sys (testdata/callsite-fixtures): each routine's tag is read
/// where the calling convention puts it, registers and stack slots alike.
#[test]
fn tags_are_read_from_their_register_or_stack_slot() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/callsite-fixtures/poolapis.sys"
    );
    let bytes = std::fs::read(path).unwrap();
    let img = ImageMemory::from_bytes("poolapis.sys", Arc::from(bytes)).unwrap();
    let mut w = StackWalker::from_modules(vec![img.module()]);
    let scan = scan_module(&mut w, &img, 0).unwrap();
    let got: BTreeSet<(String, String, String)> = scan
        .calls
        .iter()
        .map(|c| {
            let tags = c.tags.as_ref().expect("every tag is followed");
            assert_eq!(tags.len(), 1, "{c:?}");
            (
                c.routine.clone(),
                c.tag_register.clone(),
                tags[0].tag.to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String, String)> = [
        ("NdisAllocateMemoryWithTagPriority", "r8", "NdMp"),
        ("NdisFreeMemoryWithTagPriority", "r8", "NdMp"),
        ("NdisAllocateMemoryWithTag", "r8", "NdMt"),
        ("NdisFreeMemoryWithTag", "rdx", "NdMt"),
        ("FltAllocatePoolAlignedWithTag", "r9", "FlAl"),
        ("FltFreePoolAlignedWithTag", "r8", "FlAl"),
        ("ExInitializeNPagedLookasideList", "[rsp+0x28]", "LkNp"),
        ("ExInitializePagedLookasideList", "[rsp+0x28]", "LkPg"),
        ("ExInitializeLookasideListEx", "[rsp+0x30]", "LkEx"),
        ("ExAllocatePool2", "r8", "Pa2x"),
        ("ExFreePoolWithTag", "rdx", "Pa2x"),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
}

/// kmdfapis.sys and kmdfapis-nocfg.sys (testdata/callsite-fixtures): a
/// KMDF driver's WdfMemoryCreate and WdfLookasideListCreate are reached
/// through the framework's function table, with and without Control Flow
/// Guard; each is found at the call and with the tag llvm-objdump shows,
/// and the untagged WdfMemoryGetBuffer between them is not.
#[test]
fn kmdf_calls_through_the_function_table_are_found() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/callsite-fixtures/"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{dir}kmdfapis.json")).unwrap()).unwrap();
    for (image, sites) in record["images"].as_object().unwrap() {
        let bytes = std::fs::read(format!("{dir}{image}")).unwrap();
        let img = ImageMemory::from_bytes(image, Arc::from(bytes)).unwrap();
        let base = img.module().base.0;
        let mut w = StackWalker::from_modules(vec![img.module()]);
        let scan = scan_module(&mut w, &img, 0).unwrap();
        let got: BTreeSet<String> = scan
            .calls
            .iter()
            .map(|c| {
                let tags = c.tags.as_ref().expect("every tag is followed");
                assert_eq!(tags.len(), 1, "{image}: {c:?}");
                let imm = tags[0].immediate.expect("an imm32").0 - base;
                format!(
                    "{} via {} tag {} in {} at {:#x}, immediate {imm:#x}",
                    c.routine,
                    c.via,
                    tags[0].tag,
                    c.tag_register,
                    c.call.0 - base
                )
            })
            .collect();
        let want: BTreeSet<String> = sites
            .as_object()
            .unwrap()
            .iter()
            .map(|(tag, at)| {
                let t = &record["tags"][tag];
                let slot = if tag == "Wdfm" { "r9" } else { "[rsp+0x28]" };
                format!(
                    "{} via wdf[{}] tag {tag} in {slot} at {:#x}, immediate {:#x}",
                    t["routine"].as_str().unwrap(),
                    t["index"],
                    at["call_rva"].as_u64().unwrap(),
                    at["immediate_rva"].as_u64().unwrap()
                )
            })
            .collect();
        assert_eq!(got, want, "{image}");
    }
}

/// A KMDF driver's framework calls that pass PoolTag 0 allocate with its
/// own tag, which the scan reads through the `WdfDriverGlobals` its stub
/// passes to `WdfVersionBind`. On the kit's running KMDF machine they are
/// the calls the CPU records allocating 'KmDr' from kmdfdrv.sys, and no
/// others; the same image read from its file (never bound) names no tag.
#[test]
fn a_kmdf_drivers_own_tag_is_read_through_the_globals_it_bound() {
    use pooldump_kit::run::{PoolOp, Runtime, Workload};
    let mut s = pooldump_kit::Scenario::small(pooldump_kit::NtBuild::Win10_19041, 5);
    s.kmdf = true;
    let mut m = pooldump_kit::Machine::build(&s);
    let mut rt = Runtime::new(&mut m, Workload::kmdf());
    while rt.advance(&mut m, 20 * 1_000_000_000).is_some() {}
    let km_dr = PoolTag::parse("KmDr").unwrap();
    let d = &pooldump_kit::drivers::kmdf_pair()[1];
    let base = m.truth.kernel.module(&d.info.file).unwrap().base;
    let want: BTreeSet<u64> = (rt.truth.sites.keys())
        .filter_map(|(site, tag, op)| match site {
            Some(s) if s.module == d.info.file && *tag == km_dr.0 && *op == PoolOp::Alloc => {
                Some(s.rva)
            }
            _ => None,
        })
        .collect();
    assert!(!want.is_empty());
    let modules: Vec<StackModule> = (m.truth.kernel.modules.iter().enumerate())
        .map(|(i, md)| StackModule::new(&md.base_name, KernelVa(md.base), md.size as u32, i == 0))
        .collect();
    let k = modules
        .iter()
        .position(|md| md.name == d.info.file)
        .unwrap();
    let mut w = StackWalker::from_modules(modules);
    let mem = crate::testutil::KitMemory(&m);
    let scan = scan_module(&mut w, &mem, k).unwrap();
    assert_eq!(
        scan.kmdf_globals,
        Some(KernelVa(base + d.info.data["WdfDriverGlobals"]))
    );
    assert_eq!(scan.driver_pool_tag, Some(km_dr));
    let mut sym = Symbolizer::new(SymbolizerOptions::default());
    let scans = [scan];
    let got = driver_tag_sites(&scans, &[km_dr], &mut w, &mut sym, &mem);
    let rvas: BTreeSet<u64> = got.iter().map(|s| s.call.return_address.0 - base).collect();
    assert_eq!(rvas, want, "{got:#?}");
    for s in &got {
        assert_eq!(
            (s.call.routine.as_str(), &s.call.via),
            ("WdfMemoryCreate", &CallVia::Wdf { index: 192 })
        );
        assert_eq!(s.globals, scans[0].kmdf_globals.unwrap());
    }
    let leak = PoolTag::parse("Leak").unwrap();
    assert!(driver_tag_sites(&scans, &[leak], &mut w, &mut sym, &mem).is_empty());
    // The file: its WdfDriverGlobals is null until WDFLDR.SYS binds it.
    let (img, mut w, scan) = scan_driver(d);
    assert_eq!(scan.driver_pool_tag, None);
    assert!(driver_tag_sites(&[scan], &[], &mut w, &mut sym, &img).is_empty());
}
