//! What the symbols fix in a kernel identity found before they were
//! loaded: the encoded KDBG and the module list's head.

use super::KernelSymbols;
use crate::addr::KernelVa;
use crate::kernel::{KdbgKeyVas, KernelIdentity, read_kdbg, read_kdbg_keys};
use crate::memory::Memory;

/// Use the symbols to complete a kernel identity found before they were
/// loaded: decode the KDBG when `KdpDataBlockEncoded` says it is encoded
/// (or when the plain read failed), and fill in PsLoadedModuleList. Returns
/// what was done or found wrong, for the report.
pub fn refine_kernel_identity<M: Memory + ?Sized>(
    mem: &M,
    id: &mut KernelIdentity,
    syms: &KernelSymbols,
) -> Vec<String> {
    let mut notes = Vec::new();
    let base = id.kern_base;
    let va = |name: &str| {
        syms.symbol_rva(name)
            .and_then(|r| base.checked_add(r))
            .filter(|v| v.is_kernel())
    };
    let keys = match (
        va("KdpDataBlockEncoded"),
        va("KiWaitNever"),
        va("KiWaitAlways"),
    ) {
        (Some(f), Some(n), Some(a)) => Some(KdbgKeyVas {
            kdp_data_block_encoded: f,
            ki_wait_never: n,
            ki_wait_always: a,
        }),
        _ => None,
    };
    let kdbg_va: Option<KernelVa> = id
        .kdbg
        .as_ref()
        .and_then(|k| k.va)
        .or_else(|| va("KdDebuggerDataBlock"));
    let need = id.kdbg.is_none();
    match (keys, kdbg_va) {
        (Some(k), Some(kva)) => match read_kdbg_keys(mem, &k) {
            Ok((keys, encoded)) => {
                if encoded || need {
                    match read_kdbg(mem, kva, Some(&keys)) {
                        Ok(kd) => {
                            notes.push(format!(
                                "KDBG at {kva}: {} (KdpDataBlockEncoded = {})",
                                if kd.was_encoded {
                                    "decoded with KiWaitNever/KiWaitAlways"
                                } else {
                                    "read as stored"
                                },
                                u8::from(encoded)
                            ));
                            if id.ps_loaded_module_list.is_none()
                                && kd.ps_loaded_module_list.is_kernel()
                            {
                                id.ps_loaded_module_list = Some(kd.ps_loaded_module_list);
                            }
                            if kd.kern_base != base {
                                notes.push(format!(
                                    "the decoded KDBG's KernBase {} differs from nt's base {base}",
                                    kd.kern_base
                                ));
                            }
                            id.kdbg = Some(kd);
                        }
                        Err(e) => notes.push(format!("KDBG at {kva}: {e}")),
                    }
                }
            }
            Err(e) => notes.push(format!(
                "cannot read the KDBG encoding keys (KdpDataBlockEncoded, KiWaitNever, KiWaitAlways): {e}"
            )),
        },
        (None, _) if need => notes.push(
            "the symbols lack KdpDataBlockEncoded/KiWaitNever/KiWaitAlways, so an encoded KDBG cannot be decoded".into(),
        ),
        (_, None) if need => {
            notes.push("the symbols lack KdDebuggerDataBlock, so the KDBG cannot be found".into())
        }
        _ => {}
    }
    if id.ps_loaded_module_list.is_none()
        && let Some(v) = va("PsLoadedModuleList")
    {
        id.ps_loaded_module_list = Some(v);
        notes.push(format!("PsLoadedModuleList from the symbols: {v}"));
    }
    notes
}
