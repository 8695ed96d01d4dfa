use super::format::{MACHINE_AMD64, toff};
use super::*;
use crate::dump::header::HEADER_SIZE;

#[test]
fn a_kernel_dump_is_not_a_small_one() {
    let mut h = vec![0u8; 0x2100];
    h[..8].copy_from_slice(b"PAGEDU64");
    h[off::DUMP_TYPE..off::DUMP_TYPE + 4].copy_from_slice(&5u32.to_le_bytes());
    assert!(!is_small_memory_dump(&h));
    h[off::DUMP_TYPE..off::DUMP_TYPE + 4].copy_from_slice(&4u32.to_le_bytes());
    assert!(is_small_memory_dump(&h));
}

/// A 0x3000-byte x64 small dump whose MiniDumpFields are 0xCFF (what
/// Windows writes) and whose TRIAGE_DUMP64 says where it ends; the rest of
/// the triage header is 0 until the test sets it with the returned setter.
fn bare_small_dump() -> (Vec<u8>, impl Fn(&mut Vec<u8>, usize, u32)) {
    let mut f = vec![0u8; 0x3000];
    f[..8].copy_from_slice(b"PAGEDU64");
    f[off::DUMP_TYPE..off::DUMP_TYPE + 4].copy_from_slice(&4u32.to_le_bytes());
    f[off::MACHINE_IMAGE_TYPE..off::MACHINE_IMAGE_TYPE + 4]
        .copy_from_slice(&MACHINE_AMD64.to_le_bytes());
    f[off::MINIDUMP_FIELDS..off::MINIDUMP_FIELDS + 4].copy_from_slice(&0xCFFu32.to_le_bytes());
    let t = HEADER_SIZE;
    let put = move |f: &mut Vec<u8>, o: usize, v: u32| {
        f[t + o..t + o + 4].copy_from_slice(&v.to_le_bytes())
    };
    put(&mut f, toff::SIZE_OF_DUMP, 0x3000);
    put(&mut f, toff::VALID_OFFSET, 0x2FFC);
    (f, put)
}

/// Windows flagged "broken driver" (0x80) in MiniDumpFields and left
/// BrokenDriverOffset 0 in both public small dumps we have (x64 19041 and
/// ARM64 22000, neither blaming a driver): a part flagged with no offset is
/// not in the file and is not listed as one.
#[test]
fn a_flagged_part_without_an_offset_is_not_listed() {
    let (mut f, put) = bare_small_dump();
    put(&mut f, toff::CONTEXT_OFFSET, 0x348);
    put(&mut f, toff::DRIVER_LIST_OFFSET, 0x2100);
    let s = TriageDump::from_bytes("flags.dmp", f.clone())
        .unwrap()
        .summary()
        .clone();
    assert_eq!(s.fields_raw, 0xCFF);
    assert_eq!(s.fields, ["context", "driver list"]);
    put(&mut f, toff::BROKEN_DRIVER_OFFSET, 0x2100);
    let s = TriageDump::from_bytes("flags.dmp", f)
        .unwrap()
        .summary()
        .clone();
    assert_eq!(s.fields, ["context", "driver list", "broken driver"]);
}

#[test]
fn hostile_counts_are_bounded_by_the_file() {
    let (mut f, put) = bare_small_dump();
    put(&mut f, toff::DRIVER_LIST_OFFSET, 0x2100);
    put(&mut f, toff::DRIVER_COUNT, u32::MAX);
    put(&mut f, toff::DATA_BLOCKS_OFFSET, 0x2100);
    put(&mut f, toff::DATA_BLOCKS_COUNT, u32::MAX);
    put(&mut f, toff::UNLOADED_DRIVERS_OFFSET, 0x2100);
    f[0x2100..0x2108].copy_from_slice(&u64::MAX.to_le_bytes());
    put(&mut f, toff::CALL_STACK_OFFSET, 0x2200);
    put(&mut f, toff::SIZE_OF_CALL_STACK, u32::MAX);
    let d = TriageDump::from_bytes("hostile.dmp", f).unwrap();
    let s = d.summary();
    assert!(s.drivers.is_empty() && s.unloaded_drivers.is_empty());
    assert_eq!(s.data_blocks, 0);
    assert_eq!(s.stack_bytes, 0);
    assert!(s.warnings.len() >= 4, "{:?}", s.warnings);
    let mut b = [0u8; 8];
    let e = d
        .read_virtual(KernelVa(0xFFFF_F800_0000_0000), &mut b)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("not in the small memory dump hostile.dmp"),
        "{e}"
    );
}
