//! Symbol-store keys: the directory name under a file's name in a store
//! (`ntkrnlmp.pdb/<key>/ntkrnlmp.pdb`), as WinDbg and symstore make them.

use crate::guid::Guid;

/// A PDB's symbol-store key, `<GUID><AGE>`: the GUID's 32 hex digits and
/// the age in hex without leading zeros, both upper-case (WinDbg,
/// symstore).
pub fn pdb_key(guid: &Guid, age: u32) -> String {
    format!("{}{age:X}", guid.compact())
}

/// An image's symbol-store key, `<TimeDateStamp><SizeOfImage>`: the stamp
/// as 8 upper-case hex digits, the size without leading zeros.
pub fn image_key(time_date_stamp: u32, size_of_image: u32) -> String {
    format!("{time_date_stamp:08X}{size_of_image:X}")
}
