//! The lists a small dump holds: the loaded drivers (with their names
//! from the string pool), MmUnloadedDrivers, and the secondary data blobs
//! bug check callbacks wrote after the triage data.

use crate::addr::KernelVa;
use crate::bytes::Le;
use crate::kernel::Guid;

use super::format::{
    DRIVER_ENTRY_SIZE, DRIVER_LDR, LDR_CHECKSUM, LDR_DLL_BASE, LDR_SIZE_OF_IMAGE,
    LDR_TIME_DATE_STAMP, UNLOADED_ENTRY_SIZE, UNLOADED_NAME_BYTES,
};
use super::summary::{SecondaryBlob, TriageDriver, TriageHeader, UnloadedDriver};

pub(super) fn parse_drivers(
    file: &[u8],
    th: &TriageHeader,
    warnings: &mut Vec<String>,
) -> Vec<TriageDriver> {
    let b = Le(file);
    let at = th.driver_list_offset as usize;
    let count = th.driver_count as usize;
    let fits = count
        .checked_mul(DRIVER_ENTRY_SIZE)
        .and_then(|n| at.checked_add(n))
        .is_some_and(|e| e <= file.len());
    if !fits {
        warnings.push(format!(
            "DriverCount {count} at {at:#x} runs past the end of the file; the driver list is ignored"
        ));
        return Vec::new();
    }
    let mut out = Vec::with_capacity(count);
    let mut unnamed = 0;
    for i in 0..count {
        let e = at + DRIVER_ENTRY_SIZE * i;
        let ldr = e + DRIVER_LDR;
        let name_at = b.u32(e).unwrap_or(0) as usize;
        let name = dump_string(file, name_at).unwrap_or_else(|| {
            unnamed += 1;
            String::new()
        });
        out.push(TriageDriver {
            name,
            base: KernelVa(b.u64(ldr + LDR_DLL_BASE).unwrap_or(0)),
            size: b.u32(ldr + LDR_SIZE_OF_IMAGE).unwrap_or(0),
            time_date_stamp: b.u32(ldr + LDR_TIME_DATE_STAMP).unwrap_or(0),
            checksum: b.u32(ldr + LDR_CHECKSUM).unwrap_or(0),
        });
    }
    if unnamed > 0 {
        warnings.push(format!(
            "{unnamed} driver entries have no readable name in the string pool"
        ));
    }
    out
}

/// DUMP_STRING: a ULONG length in WCHARs (see the module notes), then the
/// characters and a NUL.
fn dump_string(file: &[u8], at: usize) -> Option<String> {
    let b = Le(file);
    let n = b.u32(at)? as usize;
    // A driver path is at most a few hundred characters (MAX_PATH-ish);
    // anything longer is corrupt.
    if n > 0x800 {
        return None;
    }
    let units: Vec<u16> = Le(b.bytes(at + 4, n * 2)?).utf16_units().collect();
    Some(String::from_utf16_lossy(&units).replace(char::from(0), ""))
}

/// MmUnloadedDrivers: a ULONG64 count, then DUMP_UNLOADED_DRIVERS64 entries
/// (the name truncated to 12 WCHARs in the entry itself).
pub(super) fn parse_unloaded(
    file: &[u8],
    at: usize,
    warnings: &mut Vec<String>,
) -> Vec<UnloadedDriver> {
    let b = Le(file);
    let Some(count) = b.u64(at) else {
        warnings.push(format!(
            "UnloadedDriversOffset {at:#x} is past the end of the file"
        ));
        return Vec::new();
    };
    // The kernel keeps the last 50 (MI_UNLOADED_DRIVERS).
    if count > 256 {
        warnings.push(format!(
            "the unloaded-driver list claims {count} entries; it is ignored"
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in 0..count as usize {
        let e = at + 8 + UNLOADED_ENTRY_SIZE * i;
        let (Some(len), Some(start), Some(end)) = (b.u16(e), b.u64(e + 0x28), b.u64(e + 0x30))
        else {
            warnings.push(format!(
                "the unloaded-driver list is cut short after {i} of {count} entries"
            ));
            break;
        };
        let n = (len as usize).min(UNLOADED_NAME_BYTES) & !1;
        let raw = b.bytes(e + 0x10, n).unwrap_or(&[]);
        let units: Vec<u16> = Le(raw).utf16_units().take_while(|&u| u != 0).collect();
        out.push(UnloadedDriver {
            name: String::from_utf16_lossy(&units),
            start: KernelVa(start),
            end: KernelVa(end),
        });
    }
    out
}

/// Secondary data: DUMP_BLOB_FILE_HEADER ('DumpBlob') at SizeOfDump, then
/// DUMP_BLOB_HEADERs to the end of the file.
pub(super) fn parse_blobs(
    file: &[u8],
    at: usize,
    warnings: &mut Vec<String>,
) -> Vec<SecondaryBlob> {
    let b = Le(file);
    if b.bytes(at, 8) != Some(b"DumpBlob") {
        return Vec::new();
    }
    let mut out = Vec::new();
    let Some(hs) = b.u32(at + 8) else {
        return out;
    };
    let mut o = at + hs.max(16) as usize;
    while o + 0x20 <= file.len() {
        let (Some(hsize), Some(tag), Some(size), Some(pre), Some(post)) = (
            b.u32(o),
            b.array::<16>(o + 4),
            b.u32(o + 20),
            b.u32(o + 24),
            b.u32(o + 28),
        ) else {
            break;
        };
        if hsize < 0x20 {
            warnings.push(format!(
                "a secondary data blob at {o:#x} has a bad header; the rest is ignored"
            ));
            break;
        }
        let next = [hsize, pre, size, post]
            .iter()
            .try_fold(o, |acc, &x| acc.checked_add(x as usize));
        match next {
            Some(n) if n <= file.len() => {
                out.push(SecondaryBlob {
                    tag: Guid(tag),
                    size,
                });
                o = n;
            }
            _ => {
                warnings.push(format!(
                    "the secondary data blob at {o:#x} runs past the end of the file"
                ));
                break;
            }
        }
    }
    out
}
