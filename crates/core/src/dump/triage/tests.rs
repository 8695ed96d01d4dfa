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

#[test]
fn hostile_counts_are_bounded_by_the_file() {
    let mut f = vec![0u8; 0x3000];
    f[..8].copy_from_slice(b"PAGEDU64");
    f[off::DUMP_TYPE..off::DUMP_TYPE + 4].copy_from_slice(&4u32.to_le_bytes());
    f[off::MACHINE_IMAGE_TYPE..off::MACHINE_IMAGE_TYPE + 4]
        .copy_from_slice(&MACHINE_AMD64.to_le_bytes());
    f[off::MINIDUMP_FIELDS..off::MINIDUMP_FIELDS + 4].copy_from_slice(&0xCFFu32.to_le_bytes());
    let t = HEADER_SIZE;
    let put =
        |f: &mut Vec<u8>, o: usize, v: u32| f[t + o..t + o + 4].copy_from_slice(&v.to_le_bytes());
    put(&mut f, toff::SIZE_OF_DUMP, 0x3000);
    put(&mut f, toff::VALID_OFFSET, 0x2FFC);
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
