//! Kernel identity, bootstrapped before any symbols are loaded: where nt is
//! loaded, which PDB describes it, and the loaded-module list.
//!
//! The search for nt, in order (each failure becomes a warning):
//!
//! 1. the KDBG at the dump header's KdDebuggerDataBlock: its KernBase;
//! 2. the first entry of the header's PsLoadedModuleList (always nt);
//! 3. a physical scan for the 'KDBG' tag ([`scan::scan_for_kdbg`]);
//! 4. a scan of nt's load window for an image whose RSDS names nt's PDB
//!    ([`scan::scan_for_nt_image`]).
//!
//! A candidate counts only when a PE image with readable headers is mapped
//! there; the scans also require its PDB name to be nt's.

pub mod kdbg;
pub mod modules;
pub mod pe;
pub(crate) mod ring;
pub mod scan;
pub mod sections;

use serde::Serialize;

use crate::addr::{KernelVa, Pfn};
use crate::memory::{Memory, MemoryExt};

pub use kdbg::{KdDebuggerData, KdbgError, KdbgKeyVas, KdbgKeys, read_kdbg, read_kdbg_keys};
pub use modules::{
    KLDR_BOOTSTRAP, KldrLayout, LoadedModule, ModuleIdentity, ModuleList, WalkLimits,
    identify_modules, walk_loaded_modules,
};
pub use pe::{CodeView, Guid, PeError, PeImage, parse_pe_image, read_pe_image};
pub use scan::ScanLimits;

/// Where the source says to start (for a crash dump, from its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct BootHints {
    /// KdDebuggerDataBlock; 0 if unknown.
    pub kd_debugger_data_block: KernelVa,
    /// The PsLoadedModuleList head; 0 if unknown.
    pub ps_loaded_module_list: KernelVa,
}

/// How KernBase was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernBaseSource {
    /// KernBase of the KDBG the source named.
    KdDebuggerDataBlock,
    /// DllBase of the first PsLoadedModuleList entry.
    LoadedModuleList,
    /// KernBase of a KDBG found by a physical scan.
    KdbgScan,
    /// An image in nt's load window whose RSDS names nt's PDB.
    ImageScan,
}

impl std::fmt::Display for KernBaseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KernBaseSource::KdDebuggerDataBlock => "KdDebuggerDataBlock",
            KernBaseSource::LoadedModuleList => "PsLoadedModuleList",
            KernBaseSource::KdbgScan => "KDBG scan",
            KernBaseSource::ImageScan => "image scan",
        })
    }
}

/// Who the kernel is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelIdentity {
    /// Where ntoskrnl is loaded (WinDbg's `nt` base, KDBG's KernBase).
    pub kern_base: KernelVa,
    /// How `kern_base` was found.
    pub found_by: KernBaseSource,
    /// nt's headers and PDB identity.
    pub image: PeImage,
    /// The KDBG, when one was read.
    pub kdbg: Option<KdDebuggerData>,
    /// The PsLoadedModuleList head to walk (the source's hint, else the
    /// KDBG's), if known.
    pub ps_loaded_module_list: Option<KernelVa>,
    /// What looked wrong on the way (the image's own warnings are in
    /// `image.warnings`).
    pub warnings: Vec<String>,
}

/// nt could not be found at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not find the kernel image: {}", tried.join("; "))]
pub struct KernelError {
    /// What each method found wrong.
    pub tried: Vec<String>,
}

/// Find nt. `pages` (the source's physical pages, in any order) enables
/// the physical KDBG scan; a source without page enumeration passes `None`.
pub fn identify<M: Memory + ?Sized>(
    mem: &M,
    hints: &BootHints,
    pages: Option<&mut dyn Iterator<Item = (Pfn, &[u8])>>,
    limits: &ScanLimits,
) -> Result<KernelIdentity, KernelError> {
    let mut warnings = Vec::new();
    let mut kdbg = None;

    // 1. The KDBG the header names.
    if let Some((base, image)) = header_kdbg(mem, hints, &mut kdbg, &mut warnings) {
        let how = KernBaseSource::KdDebuggerDataBlock;
        return Ok(finish(hints, base, how, image, kdbg, warnings));
    }
    // 2. The first loaded module is nt.
    if let Some((base, image)) = first_loaded_module(mem, hints, &mut warnings) {
        let how = KernBaseSource::LoadedModuleList;
        return Ok(finish(hints, base, how, image, kdbg, warnings));
    }

    // 3. Physical KDBG scan.
    if let Some(pages) = pages {
        match scan::scan_for_kdbg(mem, pages, limits, &mut warnings) {
            Some((k, image)) => {
                let base = k.kern_base;
                return Ok(finish(
                    hints,
                    base,
                    KernBaseSource::KdbgScan,
                    image,
                    Some(k),
                    warnings,
                ));
            }
            None => warnings.push("no valid 'KDBG' in the physical pages".into()),
        }
    }

    // 4. nt's load window.
    match scan::scan_for_nt_image(mem, limits, &mut warnings) {
        Some(image) => {
            let base = image.base;
            Ok(finish(
                hints,
                base,
                KernBaseSource::ImageScan,
                image,
                kdbg,
                warnings,
            ))
        }
        None => {
            warnings.push(format!(
                "no image naming nt's PDB is mapped in {}..{}",
                KernelVa(limits.nt_window.start),
                KernelVa(limits.nt_window.end)
            ));
            Err(KernelError { tried: warnings })
        }
    }
}

/// nt by the KDBG the source names (its KernBase); the KDBG, when it
/// reads, is kept in `kdbg` even if KernBase holds no image.
fn header_kdbg<M: Memory + ?Sized>(
    mem: &M,
    hints: &BootHints,
    kdbg: &mut Option<KdDebuggerData>,
    warnings: &mut Vec<String>,
) -> Option<(KernelVa, PeImage)> {
    let kdbg_va = hints.kd_debugger_data_block;
    if kdbg_va.0 == 0 {
        warnings.push("the source names no KdDebuggerDataBlock".to_string());
        return None;
    }
    let base = match read_kdbg(mem, kdbg_va, None) {
        Ok(k) => kdbg.insert(k).kern_base,
        Err(e) => {
            warnings.push(format!("KdDebuggerDataBlock at {kdbg_va}: {e}"));
            return None;
        }
    };
    read_pe_image(mem, base)
        .map_err(|e| {
            warnings.push(format!(
                "KdDebuggerDataBlock at {kdbg_va}: KernBase {base} holds no image: {e}"
            ))
        })
        .ok()
        .map(|image| (base, image))
}

/// nt as the first module on PsLoadedModuleList.
fn first_loaded_module<M: Memory + ?Sized>(
    mem: &M,
    hints: &BootHints,
    warnings: &mut Vec<String>,
) -> Option<(KernelVa, PeImage)> {
    let head = hints.ps_loaded_module_list;
    if head.0 == 0 {
        return None;
    }
    let base = first_module_base(mem, head)
        .map_err(|e| warnings.push(format!("PsLoadedModuleList at {head}: {e}")))
        .ok()?;
    read_pe_image(mem, base)
        .map_err(|e| {
            warnings.push(format!(
                "PsLoadedModuleList at {head}: the first module's base {base} holds no image: {e}"
            ))
        })
        .ok()
        .map(|image| (base, image))
}

fn first_module_base<M: Memory + ?Sized>(mem: &M, head: KernelVa) -> Result<KernelVa, String> {
    let first = mem.read_pointer(head).map_err(|e| e.to_string())?;
    if first == head || !first.is_kernel() {
        return Err(format!("the list is empty or broken (Flink {first})"));
    }
    let at = first
        .checked_add((KLDR_BOOTSTRAP.dll_base - KLDR_BOOTSTRAP.in_load_order_links) as u64)
        .ok_or("the first entry wraps the address space")?;
    let base = mem.read_pointer(at).map_err(|e| e.to_string())?;
    if !base.is_kernel() {
        return Err(format!(
            "the first module's base {base} is not a kernel address"
        ));
    }
    Ok(base)
}

fn finish(
    hints: &BootHints,
    kern_base: KernelVa,
    found_by: KernBaseSource,
    image: PeImage,
    kdbg: Option<KdDebuggerData>,
    mut warnings: Vec<String>,
) -> KernelIdentity {
    match &image.codeview {
        None => warnings.push(format!("the image at {kern_base} has no RSDS record")),
        Some(cv) if !cv.is_nt() => warnings.push(format!(
            "the image at {kern_base} names PDB '{}', not nt's",
            cv.pdb_name
        )),
        Some(_) => {}
    }
    let from_kdbg = kdbg
        .as_ref()
        .map(|k| k.ps_loaded_module_list)
        .filter(|v| v.is_kernel());
    let hint = Some(hints.ps_loaded_module_list).filter(|v| v.0 != 0);
    if let (Some(h), Some(k)) = (hint, from_kdbg)
        && h != k
    {
        warnings.push(format!(
            "the header's PsLoadedModuleList {h} differs from the KDBG's {k}; using the header's"
        ));
    }
    if let Some(k) = &kdbg
        && k.kern_base != kern_base
    {
        warnings.push(format!(
            "the KDBG's KernBase {} differs from nt's base {kern_base}",
            k.kern_base
        ));
    }
    KernelIdentity {
        kern_base,
        found_by,
        image,
        kdbg,
        ps_loaded_module_list: hint.or(from_kdbg),
        warnings,
    }
}

#[cfg(test)]
mod tests;
