//! A relabelled copy of a driver file, for users who can load a
//! test-signed driver: each site's immediate rewritten in the file, the PE
//! checksum recomputed (the loader checks it for drivers), and whether the
//! file carried an Authenticode signature, which the patch breaks.

use crate::bytes::Le;

use super::hex::hex4;
use super::map::RelabelMap;

/// The patched bytes and what the caller must tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchedImage {
    /// The whole patched file.
    pub bytes: Vec<u8>,
    /// The optional header's CheckSum before the patch.
    pub old_checksum: u32,
    /// The CheckSum recomputed over the patched bytes (and written).
    pub new_checksum: u32,
    /// The file has a certificate table (IMAGE_DIRECTORY_ENTRY_SECURITY):
    /// its signature no longer matches; the copy must be re-signed (a test
    /// certificate with test signing on) before Windows loads it.
    pub was_signed: bool,
    /// Sites written.
    pub patched: usize,
}

/// Why a file cannot be patched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The file's headers do not parse as PE: the sentence says why.
    #[error("the file is not a PE image: {0}")]
    NotPe(String),
    /// A site's immediate lies where the file has no raw data.
    #[error("{site}: its immediate has no place in the file (no raw data at RVA {rva:#x})")]
    NoFileOffset {
        /// The site (`module!function+0xoff`).
        site: String,
        /// The immediate's RVA.
        rva: u32,
    },
    /// The file does not hold the old tag bytes where the map says.
    #[error(
        "{site}: the file holds {found} at offset {offset:#x}, not the tag bytes {expected} the map expects: another build of the driver"
    )]
    Mismatch {
        /// The site (`module!function+0xoff`).
        site: String,
        /// The immediate's file offset.
        offset: u32,
        /// The bytes found, in hex.
        found: String,
        /// The bytes the map expects, in hex.
        expected: String,
    },
}

/// Write `map`'s new bytes into a copy of `file` (every site must hold the
/// old bytes) and recompute the checksum.
pub fn patch_image(file: &[u8], map: &RelabelMap) -> Result<PatchedImage, PatchError> {
    let at = checksum_offset(file).ok_or_else(|| PatchError::NotPe("no optional header".into()))?;
    let old_checksum = Le(file).u32(at).unwrap_or(0);
    let mut bytes = file.to_vec();
    for s in &map.sites {
        let off = s.file_offset.ok_or_else(|| PatchError::NoFileOffset {
            site: s.site.clone(),
            rva: s.immediate_rva,
        })?;
        let o = off as usize;
        let cur: [u8; 4] = bytes
            .get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| PatchError::NoFileOffset {
                site: s.site.clone(),
                rva: s.immediate_rva,
            })?;
        if cur != s.old_bytes {
            return Err(PatchError::Mismatch {
                site: s.site.clone(),
                offset: off,
                found: hex4::text(&cur),
                expected: hex4::text(&s.old_bytes),
            });
        }
        bytes[o..o + 4].copy_from_slice(&s.new_bytes);
    }
    let new_checksum =
        pe_checksum(&bytes).ok_or_else(|| PatchError::NotPe("no optional header".into()))?;
    bytes[at..at + 4].copy_from_slice(&new_checksum.to_le_bytes());
    Ok(PatchedImage {
        was_signed: security_directory(&bytes).is_some_and(|(_, size)| size != 0),
        bytes,
        old_checksum,
        new_checksum,
        patched: map.sites.len(),
    })
}

/// Offset of OptionalHeader.CheckSum (the same for PE32 and PE32+).
fn checksum_offset(file: &[u8]) -> Option<usize> {
    let b = Le(file);
    if b.bytes(0, 2) != Some(b"MZ") {
        return None;
    }
    let e = b.u32(0x3C)? as usize;
    if b.bytes(e, 4) != Some(b"PE\0\0") {
        return None;
    }
    let at = e.checked_add(24 + 64)?;
    (at + 4 <= file.len()).then_some(at)
}

/// IMAGE_DIRECTORY_ENTRY_SECURITY (file offset, size).
fn security_directory(file: &[u8]) -> Option<(u32, u32)> {
    let b = Le(file);
    let e = b.u32(0x3C)? as usize;
    let opt = e + 24;
    let magic = b.u16(opt)?;
    // Data directories start at 96 (PE32) or 112 (PE32+); entry 4.
    let dirs = opt + if magic == 0x20B { 112 } else { 96 };
    let n = b.u32(dirs - 4)?;
    if n <= 4 {
        return None;
    }
    Some((b.u32(dirs + 8 * 4)?, b.u32(dirs + 8 * 4 + 4)?))
}

/// The PE checksum as imagehlp's CheckSumMappedFile computes it: the
/// file's 16-bit little-endian words summed with end-around carry, the
/// CheckSum field itself counted as zero, plus the file's length. None if
/// the file has no optional header. Written here because no maintained
/// crate computes it (goblin parses the field but does not compute it).
pub fn pe_checksum(file: &[u8]) -> Option<u32> {
    let at = checksum_offset(file)?;
    let mut sum: u64 = 0;
    for (i, w) in file.chunks(2).enumerate() {
        let off = 2 * i;
        if off == at || off == at + 2 {
            continue;
        }
        let v = u64::from(w[0]) | (u64::from(*w.get(1).unwrap_or(&0)) << 8);
        sum += v;
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum = (sum & 0xFFFF) + (sum >> 16);
    Some((sum as u32).wrapping_add(file.len() as u32))
}
