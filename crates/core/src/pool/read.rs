//! Reading arrays of kernel structures that may have holes: a page missing
//! from the dump (or paged out) costs the entries on it, not the table.

use std::ops::Range;

use super::PoolError;
use crate::addr::{KernelVa, PAGE_SIZE};
use crate::memory::{Memory, MemoryError, MemoryExt};
use crate::symbols::{KernelSymbols, SymbolSource};

/// The address of the nt global `name`.
pub(crate) fn nt_var(
    syms: &KernelSymbols,
    kern_base: KernelVa,
    name: &str,
) -> Result<KernelVa, PoolError> {
    let rva = syms.require_symbol_rva(name)?;
    Ok(kern_base.wrapping_add(rva))
}

/// `nt!name` for a message, naming where its RVA came from when that was
/// not nt's own PDB (an `--isf` file or the built-in table may be another
/// build's): `nt!PoolTrackTable (RVA 0xc1d010 from ISF ntkrnlmp.json.xz)`.
pub(crate) fn var_label(syms: &KernelSymbols, name: &str) -> String {
    match (syms.symbol_source(name), syms.symbol_rva(name)) {
        (Some(src @ (SymbolSource::Isf { .. } | SymbolSource::BuiltIn { .. })), Some(rva)) => {
            format!("nt!{name} (RVA {rva:#x} from {src})")
        }
        _ => format!("nt!{name}"),
    }
}

/// Read the nt global `name`, `width` bytes wide (4 for a ULONG, else 8).
pub(crate) fn read_nt_var<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    name: &str,
    width: usize,
) -> Result<u64, PoolError> {
    let va = nt_var(syms, kern_base, name)?;
    let unreadable = |source| PoolError::Unreadable {
        what: var_label(syms, name),
        va,
        source,
    };
    match width {
        4 => mem.read_u32(va).map(u64::from).map_err(unreadable),
        _ => mem.read_u64(va).map_err(unreadable),
    }
}

/// An array read page by page.
pub(crate) struct Array {
    pub bytes: Vec<u8>,
    /// Entry index ranges whose bytes could not be read (zeros in `bytes`).
    pub missing: Vec<Range<u64>>,
    /// The first error met, for the warning text.
    pub first_error: Option<MemoryError>,
}

impl Array {
    pub fn entry(&self, i: u64, size: u64) -> &[u8] {
        let o = (i * size) as usize;
        &self.bytes[o..o + size as usize]
    }
    pub fn is_missing(&self, i: u64) -> bool {
        self.missing.iter().any(|r| r.contains(&i))
    }
    pub fn missing_count(&self) -> u64 {
        self.missing.iter().map(|r| r.end - r.start).sum()
    }
}

/// Read `count` entries of `size` bytes at `va`. The caller has bounded
/// `count * size`.
pub(crate) fn read_array<M: Memory + ?Sized>(
    mem: &M,
    va: KernelVa,
    count: u64,
    size: u64,
) -> Array {
    let total = (count * size) as usize;
    let mut bytes = vec![0u8; total];
    let mut bad_bytes: Vec<Range<u64>> = Vec::new();
    let mut first_error = None;
    let mut off = 0usize;
    while off < total {
        let cur = va.wrapping_add(off as u64);
        let n = ((PAGE_SIZE - cur.page_offset()) as usize).min(total - off);
        if let Err(e) = mem.read_virtual(cur, &mut bytes[off..off + n]) {
            bytes[off..off + n].fill(0);
            first_error.get_or_insert(e);
            match bad_bytes.last_mut() {
                Some(r) if r.end == off as u64 => r.end += n as u64,
                _ => bad_bytes.push(off as u64..(off + n) as u64),
            }
        }
        off += n;
    }
    let missing = bad_bytes
        .into_iter()
        .map(|r| r.start / size..r.end.div_ceil(size))
        .collect();
    Array {
        bytes,
        missing,
        first_error,
    }
}

/// "entries 17-40 (PTE not present …)" for warnings.
pub(crate) fn describe_missing(a: &Array) -> String {
    let ranges: Vec<String> = a
        .missing
        .iter()
        .take(4)
        .map(|r| {
            if r.end - r.start == 1 {
                format!("{}", r.start)
            } else {
                format!("{}-{}", r.start, r.end - 1)
            }
        })
        .collect();
    let more = if a.missing.len() > 4 { ", ..." } else { "" };
    let why = a
        .first_error
        .as_ref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    format!("entries {}{more}{why}", ranges.join(", "))
}
