//! Kernel identity on a hand-built machine: nt's image, a KDBG, a module
//! list, and the ways each can be broken.

use super::*;
use crate::dump::CrashDump;
use crate::kernel::pe::test_image;
use crate::memory::MemoryError;
use crate::testutil::{HeaderSpec, Machine};

const KB: u64 = 0xFFFF_F802_1A00_0000;
const KDBG_VA: u64 = 0xFFFF_F802_1A10_0000;
const KDBG_LIST_HEAD: u64 = 0xFFFF_F802_1A10_0800;
const MODULE_HEAD: u64 = 0xFFFF_F802_1A0F_0000;
const POOL: u64 = 0xFFFF_C000_1234_0000;

fn kdbg_bytes(kern_base: u64) -> Vec<u8> {
    let mut k = vec![0u8; 0x368];
    k[0..8].copy_from_slice(&KDBG_LIST_HEAD.to_le_bytes());
    k[8..16].copy_from_slice(&KDBG_LIST_HEAD.to_le_bytes());
    k[0x10..0x14].copy_from_slice(b"KDBG");
    k[0x14..0x18].copy_from_slice(&0x368u32.to_le_bytes());
    k[0x18..0x20].copy_from_slice(&kern_base.to_le_bytes());
    k[0x48..0x50].copy_from_slice(&MODULE_HEAD.to_le_bytes());
    k[0x1B8..0x1C0].copy_from_slice(&0xFFFF_F802_1A20_0000u64.to_le_bytes());
    k
}

struct Entry {
    base: u64,
    size: u32,
    name: &'static str,
}

/// Write a module list at MODULE_HEAD with entries at POOL + 0x100 * i,
/// names at POOL + 0x800 + 0x80 * i; `next(i)` gives each entry's Flink
/// (None: back to the head).
fn write_modules(m: &mut Machine, entries: &[Entry], next: impl Fn(usize) -> Option<u64>) {
    let entry_va = |i: usize| POOL + 0x100 * i as u64;
    m.write_u64(
        MODULE_HEAD,
        if entries.is_empty() {
            MODULE_HEAD
        } else {
            entry_va(0)
        },
    );
    m.write_u64(
        MODULE_HEAD + 8,
        if entries.is_empty() {
            MODULE_HEAD
        } else {
            entry_va(entries.len() - 1)
        },
    );
    for (i, e) in entries.iter().enumerate() {
        let va = entry_va(i);
        let flink = next(i).unwrap_or(MODULE_HEAD);
        let blink = if i == 0 { MODULE_HEAD } else { entry_va(i - 1) };
        m.write_u64(va, flink);
        m.write_u64(va + 8, blink);
        m.write_u64(va + 0x30, e.base);
        m.write_u64(va + 0x38, e.base + 0x1000);
        m.write_virt(va + 0x40, &e.size.to_le_bytes());
        let full = format!("\\SystemRoot\\system32\\{}", e.name);
        let name_va = POOL + 0x800 + 0x80 * i as u64;
        let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
        let (fb, bb) = (utf16(&full), utf16(e.name));
        m.write_virt(name_va, &fb);
        m.write_virt(name_va + 0x60, &bb);
        unicode_string(m, va + 0x48, fb.len() as u16, name_va);
        unicode_string(m, va + 0x58, bb.len() as u16, name_va + 0x60);
    }
}

fn unicode_string(m: &mut Machine, at: u64, len: u16, buffer: u64) {
    let mut u = [0u8; 16];
    u[0..2].copy_from_slice(&len.to_le_bytes());
    u[2..4].copy_from_slice(&len.to_le_bytes());
    u[8..16].copy_from_slice(&buffer.to_le_bytes());
    m.write_virt(at, &u);
}

/// nt at KB, a KDBG, and a module list of nt and hal.
fn machine() -> Machine {
    let mut m = Machine::new();
    m.write_virt(KB, &test_image::image(b"ntkrnlmp.pdb", 1));
    m.write_virt(KDBG_VA, &kdbg_bytes(KB));
    m.write_u64(KDBG_LIST_HEAD, KDBG_VA);
    m.write_u64(KDBG_LIST_HEAD + 8, KDBG_VA);
    write_modules(
        &mut m,
        &[
            Entry {
                base: KB,
                size: 0x2000,
                name: "ntoskrnl.exe",
            },
            Entry {
                base: 0xFFFF_F802_1B00_0000,
                size: 0x8000,
                name: "hal.dll",
            },
        ],
        |i| (i == 0).then_some(POOL + 0x100),
    );
    m
}

fn hints() -> BootHints {
    BootHints {
        kd_debugger_data_block: KernelVa(KDBG_VA),
        ps_loaded_module_list: KernelVa(MODULE_HEAD),
    }
}

fn check_nt(id: &KernelIdentity) {
    assert_eq!(id.kern_base, KernelVa(KB));
    assert_eq!(id.image.machine, 0x8664);
    assert_eq!(id.image.time_date_stamp, 0x5F00_1234);
    assert_eq!(id.image.size_of_image, 0x2000);
    let cv = id.image.codeview.as_ref().expect("RSDS");
    assert_eq!(cv.pdb_name, "ntkrnlmp.pdb");
    assert_eq!(cv.guid.to_string(), "3177D310-00BA-7590-DED3-35936C93E374");
    assert_eq!(cv.store_key, "3177D31000BA7590DED335936C93E3741");
    assert_eq!(cv.age, 1);
    assert!(cv.name_is_clean && cv.is_nt());
}

#[test]
fn identifies_nt_through_the_kdbg() {
    let m = machine();
    let id = identify(&m, &hints(), None, &ScanLimits::default()).unwrap();
    check_nt(&id);
    assert_eq!(id.found_by, KernBaseSource::KdDebuggerDataBlock);
    let k = id.kdbg.as_ref().unwrap();
    assert_eq!(k.size, 0x368);
    assert_eq!(
        k.field_u64(kdbg::off::POOL_TRACK_TABLE),
        Some(0xFFFF_F802_1A20_0000)
    );
    assert_eq!(id.ps_loaded_module_list, Some(KernelVa(MODULE_HEAD)));
    assert!(id.warnings.is_empty(), "{:?}", id.warnings);
}

#[test]
fn falls_back_to_the_module_list_then_the_scans() {
    let m = machine();
    let only_list = BootHints {
        kd_debugger_data_block: KernelVa(0),
        ..hints()
    };
    let id = identify(&m, &only_list, None, &ScanLimits::default()).unwrap();
    check_nt(&id);
    assert_eq!(id.found_by, KernBaseSource::LoadedModuleList);

    let none = BootHints::default();
    let dump = CrashDump::from_bytes("t.dmp", m.full_dump(&HeaderSpec::default())).unwrap();
    let mut pages = dump.physical_pages();
    let id = identify(&dump, &none, Some(&mut pages), &ScanLimits::default()).unwrap();
    check_nt(&id);
    assert_eq!(id.found_by, KernBaseSource::KdbgScan);
    let k = id.kdbg.as_ref().unwrap();
    assert_eq!(
        k.va,
        Some(KernelVa(KDBG_VA)),
        "the scan confirms the KDBG's VA"
    );
    assert_eq!(id.ps_loaded_module_list, Some(KernelVa(MODULE_HEAD)));

    let id = identify(&m, &none, None, &ScanLimits::default()).unwrap();
    check_nt(&id);
    assert_eq!(id.found_by, KernBaseSource::ImageScan);
    assert!(id.kdbg.is_none());
}

#[test]
fn no_kernel_is_an_error_that_lists_what_was_tried() {
    let m = Machine::new();
    let e = identify(&m, &hints(), None, &ScanLimits::default()).unwrap_err();
    let s = e.to_string();
    assert!(
        s.starts_with("could not find the kernel image: KdDebuggerDataBlock at"),
        "{s}"
    );
    assert!(s.contains("PsLoadedModuleList at"), "{s}");
    assert!(s.contains("no image naming nt's PDB"), "{s}");
}

/// The inverse of [`kdbg::decode_qword`], as KdEncodeDataBlock computes it.
fn encode(plain: u64, k: &KdbgKeys) -> u64 {
    let t = (plain ^ k.ki_wait_always).swap_bytes() ^ k.kdp_data_block_encoded.0;
    t.rotate_right((k.ki_wait_never & 0x3F) as u32) ^ k.ki_wait_never
}

const KEYS: KdbgKeys = KdbgKeys {
    ki_wait_never: 0x1234_5678_9ABC_DEF7,
    ki_wait_always: 0x0F1E_2D3C_4B5A_6978,
    kdp_data_block_encoded: KernelVa(0xFFFF_F802_1A30_0010),
};

#[test]
fn decode_inverts_the_encoding() {
    for v in [0u64, 1, KB, u64::MAX, 0x4742_444B_0000_0368] {
        assert_eq!(kdbg::decode_qword(encode(v, &KEYS), &KEYS), v);
    }
    // The spec's formula, spelled out for one value.
    let enc = 0xDEAD_BEEF_0123_4567u64;
    let expect = KEYS.ki_wait_always
        ^ (KEYS.kdp_data_block_encoded.0
            ^ (enc ^ KEYS.ki_wait_never).rotate_left((KEYS.ki_wait_never & 0x3F) as u32))
        .swap_bytes();
    assert_eq!(kdbg::decode_qword(enc, &KEYS), expect);
}

#[test]
fn encoded_kdbg_is_reported_and_decodable() {
    let mut m = machine();
    let plain = kdbg_bytes(KB);
    let enc: Vec<u8> = plain
        .chunks_exact(8)
        .flat_map(|q| encode(u64::from_le_bytes(q.try_into().unwrap()), &KEYS).to_le_bytes())
        .collect();
    m.write_virt(KDBG_VA, &enc);

    let e = read_kdbg(&m, KernelVa(KDBG_VA), None).unwrap_err();
    assert!(matches!(e, KdbgError::NotKdbg { .. }));
    assert!(e.to_string().contains("probably encoded"));
    assert!(
        e.to_string()
            .contains("KiWaitNever, KiWaitAlways and KdpDataBlockEncoded")
    );

    let k = read_kdbg(&m, KernelVa(KDBG_VA), Some(&KEYS)).unwrap();
    assert!(k.was_encoded);
    assert_eq!(k.kern_base, KernelVa(KB));
    assert_eq!(k.ps_loaded_module_list, KernelVa(MODULE_HEAD));

    // identify() says so, and still finds nt through the module list.
    let id = identify(&m, &hints(), None, &ScanLimits::default()).unwrap();
    assert_eq!(id.found_by, KernBaseSource::LoadedModuleList);
    assert!(
        id.warnings[0].contains("probably encoded"),
        "{:?}",
        id.warnings
    );
}

#[test]
fn kdbg_size_is_bounded() {
    let mut m = machine();
    m.write_virt(KDBG_VA + 0x14, &0xFFFF_FFFFu32.to_le_bytes());
    assert_eq!(
        read_kdbg(&m, KernelVa(KDBG_VA), None).unwrap_err(),
        KdbgError::BadSize { size: 0xFFFF_FFFF }
    );
}

// --- module list -----------------------------------------------------------

fn walk(m: &Machine, limits: WalkLimits) -> ModuleList {
    walk_loaded_modules(m, KernelVa(MODULE_HEAD), &KLDR_BOOTSTRAP, &limits)
}

#[test]
fn walks_the_module_list() {
    let list = walk(&machine(), WalkLimits::default());
    assert!(list.complete, "{:?}", list.warnings);
    assert!(list.warnings.is_empty(), "{:?}", list.warnings);
    let names: Vec<&str> = list.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["ntoskrnl.exe", "hal.dll"]);
    assert_eq!(
        list.modules[1].full_name.as_deref(),
        Some("\\SystemRoot\\system32\\hal.dll")
    );
    assert_eq!(list.modules[0].base, KernelVa(KB));
    assert_eq!(list.modules[1].size, 0x8000);
    assert_eq!(
        list.find(KernelVa(0xFFFF_F802_1B00_7FFF))
            .map(|m| m.name.as_str()),
        Some("hal.dll")
    );
}

fn entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            base: KB + 0x10_0000 * i as u64,
            size: 0x1000,
            name: "drv.sys",
        })
        .collect()
}

#[test]
fn a_cycle_that_misses_the_head_ends_with_a_warning() {
    let mut m = machine();
    // nt -> hal -> nt -> ...: never back to the head.
    write_modules(&mut m, &entries(2), |i| {
        Some(POOL + 0x100 * ((i as u64 + 1) % 2))
    });
    let list = walk(&m, WalkLimits::default());
    assert!(!list.complete);
    assert_eq!(list.modules.len(), 2);
    assert!(
        list.warnings.iter().any(|w| w.contains("loops back")),
        "{:?}",
        list.warnings
    );
}

#[test]
fn a_long_chain_stops_at_the_iteration_cap() {
    let mut m = machine();
    write_modules(&mut m, &entries(8), |i| Some(POOL + 0x100 * (i as u64 + 1)));
    let list = walk(
        &m,
        WalkLimits {
            max_modules: 5,
            ..Default::default()
        },
    );
    assert_eq!(list.modules.len(), 5);
    assert!(list.warnings.iter().any(|w| w.contains("iteration cap")));
}

#[test]
fn a_broken_link_cuts_the_list() {
    let mut m = machine();
    m.write_u64(POOL + 0x100, 0x4141_4141); // hal's Flink: a user address
    let list = walk(&m, WalkLimits::default());
    assert_eq!(list.modules.len(), 2);
    assert!(!list.complete);
    assert!(
        list.warnings
            .iter()
            .any(|w| w.contains("not a kernel address"))
    );

    let mut m = machine();
    m.write_u64(POOL + 0x100, 0xFFFF_C000_5555_0000); // unmapped
    let list = walk(&m, WalkLimits::default());
    assert!(
        list.warnings
            .iter()
            .any(|w| w.contains("cannot read the module entry"))
    );
}

#[test]
fn hostile_unicode_strings_are_rejected_or_capped() {
    let mut m = machine();
    // nt: odd Length; hal: Length 0xFFFE over a readable 64 KiB buffer.
    unicode_string(&mut m, POOL + 0x58, 7, POOL + 0x860);
    m.write_virt(0xFFFF_C000_2000_0000, &vec![b'A'; 0x10000]);
    unicode_string(&mut m, POOL + 0x100 + 0x58, 0xFFFE, 0xFFFF_C000_2000_0000);
    // hal's FullDllName: Buffer in user space.
    unicode_string(&mut m, POOL + 0x100 + 0x48, 8, 0x7FFE_0000);
    let (list, bytes) = crate::testutil::measure(|| walk(&m, WalkLimits::default()));
    assert!(bytes < 64 * 1024, "allocated {bytes}");
    assert_eq!(list.modules[0].name, "ntoskrnl.exe", "from FullDllName");
    assert!(list.warnings.iter().any(|w| w.contains("odd Length 7")));
    let hal = &list.modules[1];
    assert_eq!(
        hal.name.chars().count(),
        512 + 1,
        "capped at 1024 bytes plus '…'"
    );
    assert_eq!(hal.full_name, None);
    assert!(
        list.warnings
            .iter()
            .any(|w| w.contains("not a kernel address"))
    );
}

// --- PE headers ---------------------------------------------------------------

fn image_machine(img: &[u8]) -> Machine {
    let mut m = Machine::new();
    m.write_virt(KB, img);
    m
}

#[test]
fn hostile_pe_headers_are_errors_or_warnings() {
    let img = test_image::image(b"ntkrnlmp.pdb", 1);

    let mut bad = img.clone();
    bad[0x3C..0x40].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    let e = read_pe_image(&image_machine(&bad), KernelVa(KB)).unwrap_err();
    assert!(e.to_string().contains("e_lfanew"), "{e}");

    let mut bad = img.clone();
    bad[0x84 + 20 + 60..0x84 + 20 + 64].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    let (r, bytes) = crate::testutil::measure(|| read_pe_image(&image_machine(&bad), KernelVa(KB)));
    assert!(r.unwrap_err().to_string().contains("SizeOfHeaders"));
    assert!(bytes < 1 << 20);

    let mut bad = img.clone();
    bad[0x1010..0x1014].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes()); // SizeOfData
    let pe = read_pe_image(&image_machine(&bad), KernelVa(KB)).unwrap();
    assert!(pe.codeview.is_none());
    assert!(pe.warnings[0].contains("implausible"), "{:?}", pe.warnings);

    let pe = read_pe_image(
        &image_machine(&test_image::image(b"nt\x1b[31m.pdb", 2)),
        KernelVa(KB),
    )
    .unwrap();
    let cv = pe.codeview.unwrap();
    assert_eq!(cv.pdb_name, "nt\\x1b[31m.pdb");
    assert!(!cv.name_is_clean);
    assert_eq!(cv.store_key, "3177D31000BA7590DED335936C93E3742");

    // A name that climbs is not clean, and says why (it used to be cut to
    // `evil` with name_is_clean true).
    let pe = read_pe_image(
        &image_machine(&test_image::image(br"..\..\evil", 1)),
        KernelVa(KB),
    )
    .unwrap();
    let cv = pe.codeview.unwrap();
    assert!(!cv.name_is_clean && cv.name_climbs());
    assert_eq!(
        pe.warnings,
        [r"the PDB name '..\..\evil' climbs directories with '..': it is not used as a file name"]
    );

    let long = vec![b'a'; 300];
    let pe = read_pe_image(&image_machine(&test_image::image(&long, 1)), KernelVa(KB)).unwrap();
    assert_eq!(pe.codeview.unwrap().pdb_name.len(), 260);

    let e = read_pe_image(&image_machine(&[0u8; 0x1000]), KernelVa(KB)).unwrap_err();
    assert!(matches!(e, PeError::NotMz { .. }));
    let e = read_pe_image(&Machine::new(), KernelVa(KB)).unwrap_err();
    assert!(matches!(
        e,
        PeError::Unreadable {
            cause: MemoryError::NotPresent { .. },
            ..
        }
    ));
}
