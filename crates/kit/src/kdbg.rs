//! KDDEBUGGER_DATA64.
//!
//! The block is declared in the SDK's wdbgexts.h, not in nt's PDB (no
//! symbol table in ../shared/isf has the type), so its layout is the
//! public header's: each field holds the *address* of a kernel variable.
//! Only the fields the kit can fill are listed.

/// (field, offset): fields named after the nt global whose address they
/// hold.
pub const FIELDS: &[(&str, usize)] = &[
    ("PsLoadedModuleList", 0x48),
    ("PsActiveProcessHead", 0x50),
    ("ExpPagedPoolDescriptor", 0x68),
    ("ExpNumberOfPagedPools", 0x70),
    ("MmPfnDatabase", 0xC0),
    ("MmMaximumNonPagedPoolInBytes", 0x100),
    ("MmNonPagedPoolStart", 0x110),
    ("MmNonPagedPoolEnd", 0x118),
    ("MmPagedPoolEnd", 0x128),
    ("MmSizeOfPagedPoolInBytes", 0x140),
    ("PoolTrackTable", 0x1B8),
    ("NonPagedPoolDescriptor", 0x1C0),
    ("MmSystemRangeStart", 0x1D0),
    ("KiProcessorBlock", 0x218),
];

pub const OWNER_TAG: u32 = u32::from_le_bytes(*b"KDBG");
pub const OFF_OWNER_TAG: usize = 0x10;
pub const OFF_SIZE: usize = 0x14;
pub const OFF_KERN_BASE: usize = 0x18;
pub const OFF_MM_PAGE_SIZE: usize = 0x138;

/// Header.Size by build: the block grew as Windows added fields (the
/// ISFs of the tested builds give 109, 112 and 116 qwords).
pub fn block_size(build: u32) -> usize {
    match build {
        0..9200 => 0x340,
        9200..14393 => 0x360,
        14393..17763 => 0x368,
        17763..20348 => 0x380,
        _ => 0x3A0,
    }
}

/// Encode a decoded block in place, the inverse of the decode in docs/pool-structures.md §1:
/// `plain = KiWaitAlways ^ bswap64(&KdpDataBlockEncoded ^ rol64(enc ^ KiWaitNever, KiWaitNever & 0x3F))`.
pub fn encode(block: &mut [u8], wait_never: u64, wait_always: u64, flag_va: u64) {
    for q in block.chunks_exact_mut(8) {
        let plain = u64::from_le_bytes(q.try_into().unwrap());
        let x = (plain ^ wait_always).swap_bytes() ^ flag_va;
        let enc = x.rotate_right((wait_never & 0x3F) as u32) ^ wait_never;
        q.copy_from_slice(&enc.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn encode_inverts_the_documented_decode() {
        let (n, a, f) = (
            0x1234_5678_9ABC_DEF1u64,
            0x0FED_CBA9_8765_4321u64,
            0xFFFF_F802_1A40_0000u64,
        );
        let plain = [0x4742_444Bu64, 0xFFFF_F802_1A00_0000, 7];
        let mut b: Vec<u8> = plain.iter().flat_map(|v| v.to_le_bytes()).collect();
        super::encode(&mut b, n, a, f);
        for (i, q) in b.chunks_exact(8).enumerate() {
            let enc = u64::from_le_bytes(q.try_into().unwrap());
            let dec = a ^ (f ^ (enc ^ n).rotate_left((n & 0x3F) as u32)).swap_bytes();
            assert_eq!(dec, plain[i]);
        }
    }
}
