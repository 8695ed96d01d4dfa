//! The loaded-module list (`PsLoadedModuleList`), walked with an iteration
//! cap and cycle detection (`ring.rs`): a corrupt Flink ring must end
//! the walk with a warning, never hang it (docs/design.md, "kdmp-parser and pooldump's own header reader").

use serde::Serialize;

use super::ring::Ring;
use crate::addr::KernelVa;
use crate::bytes::Le;
use crate::memory::Memory;

pub use pooldump_symbols::{KLDR_BOOTSTRAP, KldrLayout};

/// Bounds on a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Entries visited at most (a real system has a few hundred).
    pub max_modules: usize,
    /// UNICODE_STRING bytes read at most per name (longer names are cut).
    pub max_name_bytes: u16,
}

impl Default for WalkLimits {
    fn default() -> Self {
        Self {
            max_modules: 4096,
            max_name_bytes: 1024,
        }
    }
}

/// One `_KLDR_DATA_TABLE_ENTRY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadedModule {
    /// Where the entry itself is.
    pub entry: KernelVa,
    /// DllBase: where the image is mapped.
    pub base: KernelVa,
    /// SizeOfImage, in bytes, as the loader entry states it.
    pub size: u32,
    /// EntryPoint: the image's entry routine (DriverEntry for a driver).
    pub entry_point: KernelVa,
    /// BaseDllName (`ntoskrnl.exe`), or empty when unreadable.
    pub name: String,
    /// FullDllName (`\SystemRoot\system32\ntoskrnl.exe`), when readable.
    pub full_name: Option<String>,
}

impl LoadedModule {
    /// Whether `va` lies in the module's mapped range.
    pub fn contains(&self, va: KernelVa) -> bool {
        va >= self.base && va.0 - self.base.0 < u64::from(self.size)
    }
}

/// The result of a walk: the modules in load order, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleList {
    /// The list head walked (nt!PsLoadedModuleList).
    pub head: KernelVa,
    /// The modules in load order: nt first, then the HAL and the boot drivers.
    pub modules: Vec<LoadedModule>,
    /// The walk came back to the head.
    pub complete: bool,
    /// What went wrong: a name that could not be read, a Blink that does not
    /// point back, a list that did not close.
    pub warnings: Vec<String>,
}

impl ModuleList {
    /// The module containing `va`.
    pub fn find(&self, va: KernelVa) -> Option<&LoadedModule> {
        self.modules.iter().find(|m| m.contains(va))
    }
}

/// Walk the InLoadOrder list whose head (the `PsLoadedModuleList`
/// LIST_ENTRY) is at `head`.
pub fn walk_loaded_modules<M: Memory + ?Sized>(
    mem: &M,
    head: KernelVa,
    layout: &KldrLayout,
    limits: &WalkLimits,
) -> ModuleList {
    let mut list = ModuleList {
        head,
        modules: Vec::new(),
        complete: false,
        warnings: Vec::new(),
    };
    let ring = Ring {
        head,
        links: layout.in_load_order_links as u64,
        entry_size: layout.read_size,
        max_entries: limits.max_modules,
        head_name: "the list head",
        link_name: "link",
        entry_name: "module entry",
        entries_name: "entries",
    };
    let mut blink_warned = false;
    let end = ring.walk(mem, |e| {
        let entry_va = e.va;
        let b = Le(e.bytes);
        let q = |o: usize| KernelVa(b.u64(o).unwrap_or(0));
        let blink = q(layout.in_load_order_links + 8);
        if blink != e.prev && !blink_warned {
            blink_warned = true;
            list.warnings.push(format!(
                "the entry at {entry_va} has Blink {blink}, not the previous link {}",
                e.prev
            ));
        }
        let size = b.u32(layout.size_of_image).unwrap_or(0);
        let mut warn = Vec::new();
        let base_name = read_unicode_string(mem, b, layout.base_dll_name, limits)
            .map_err(|e| warn.push(format!("BaseDllName of the entry at {entry_va}: {e}")))
            .ok();
        let full_name = read_unicode_string(mem, b, layout.full_dll_name, limits)
            .map_err(|e| warn.push(format!("FullDllName of the entry at {entry_va}: {e}")))
            .ok();
        list.warnings.extend(warn);
        let name = base_name
            .or_else(|| {
                full_name
                    .as_deref()
                    .map(|f| f.rsplit('\\').next().unwrap_or(f).to_string())
            })
            .unwrap_or_default();
        list.modules.push(LoadedModule {
            entry: entry_va,
            base: q(layout.dll_base),
            size,
            entry_point: q(layout.entry_point),
            name,
            full_name,
        });
    });
    list.complete = end.is_complete();
    list.warnings.extend(ring.warning(&end));
    list
}

/// Read a UNICODE_STRING whose 16-byte header is at `at` in `entry`. The
/// lengths are hostile: capped, made even, and the buffer must be readable.
fn read_unicode_string<M: Memory + ?Sized>(
    mem: &M,
    entry: Le,
    at: usize,
    limits: &WalkLimits,
) -> Result<String, String> {
    let len = entry.u16(at).ok_or("outside the entry")?;
    let max = entry.u16(at + 2).unwrap_or(0);
    let buffer = KernelVa(entry.u64(at + 8).ok_or("outside the entry")?);
    if len == 0 {
        return Err("empty".into());
    }
    if len % 2 != 0 {
        return Err(format!("odd Length {len}"));
    }
    if len > max {
        return Err(format!("Length {len} exceeds MaximumLength {max}"));
    }
    if !buffer.is_kernel() {
        return Err(format!("Buffer {buffer} is not a kernel address"));
    }
    let n = len.min(limits.max_name_bytes & !1) as usize;
    let mut raw = vec![0u8; n];
    mem.read_virtual(buffer, &mut raw)
        .map_err(|e| e.to_string())?;
    let decoded: String = char::decode_utf16(Le(&raw).utf16_units())
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    // Names go to terminals: the one escaping rule (controls, bidi).
    let mut s = crate::text::escape(&decoded).into_owned();
    if n < len as usize {
        s.push('…');
    }
    Ok(s)
}

/// A loaded module with the identity its PE headers give: which PDB
/// describes it (for tag and stack attribution to drivers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleIdentity {
    /// BaseDllName (`leakydrv.sys`).
    pub name: String,
    /// DllBase: where the image is mapped.
    pub base: KernelVa,
    /// SizeOfImage from the loader entry.
    pub size: u32,
    /// From the image's own headers, when they are readable.
    pub time_date_stamp: Option<u32>,
    /// SizeOfImage from the image's own headers, when they are readable.
    pub size_of_image: Option<u32>,
    /// The image's CodeView RSDS record: which PDB describes it; None when the headers or the
    /// record are not readable (`error` says why).
    pub pdb: Option<super::pe::CodeView>,
    /// Why the headers or the RSDS record could not be read.
    pub error: Option<String>,
}

/// Read each module's PE headers and CodeView record (a few hundred
/// bytes per module; a module whose headers are paged out keeps its name
/// and an error).
pub fn identify_modules<M: Memory + ?Sized>(mem: &M, list: &ModuleList) -> Vec<ModuleIdentity> {
    list.modules
        .iter()
        .map(|m| {
            let mut id = ModuleIdentity {
                name: m.name.clone(),
                base: m.base,
                size: m.size,
                time_date_stamp: None,
                size_of_image: None,
                pdb: None,
                error: None,
            };
            match super::pe::read_pe_image(mem, m.base) {
                Ok(img) => {
                    id.time_date_stamp = Some(img.time_date_stamp);
                    id.size_of_image = Some(img.size_of_image);
                    if img.codeview.is_none() {
                        id.error = img.warnings.first().cloned();
                    }
                    id.pdb = img.codeview;
                }
                Err(e) => id.error = Some(e.to_string()),
            }
            id
        })
        .collect()
}
