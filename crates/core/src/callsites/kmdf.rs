//! KMDF drivers' pool calls. A KMDF driver does not import the framework's
//! routines: its stub binds through WDFLDR.SYS's `WdfVersionBind`, which
//! fills a global (`WdfFunctions_01015` and the like) with the address of
//! the framework's function table, and every `WdfXxx` call is an indirect
//! call through that table at the routine's fixed index (wdffuncenum.h:
//! indexes only grow from one KMDF version to the next). So
//! `WdfMemoryCreate` is `call [WdfFunctions + 192*8]` (or, with Control
//! Flow Guard, the entry loaded into RAX and `call
//! [__guard_dispatch_icall_fptr]`).
//!
//! The global is found the way the loader finds it: the stub's
//! `WDF_BIND_INFO` names the component `L"KmdfLibrary"` and holds the
//! global's address in `FuncTable` (fxldr.h). The dispatch pointer is the
//! load configuration's `GuardCFDispatchFunctionPointer`.

use super::*;
use crate::memory::MemoryExt;
use crate::stack::DataDirectory;

/// The framework routines that take a tag, by their function-table index
/// (KMDF's wdffuncenum.h), and where the tag is. Argument 1 is always the
/// driver's `WDF_DRIVER_GLOBALS`.
pub const KMDF_ROUTINES: &[(u32, &str, PoolCall, TagArg)] = &[
    // WdfMemoryCreate(Globals, Attributes, PoolType, PoolTag, BufferSize,
    // Memory, Buffer): PoolTag 0 means the driver's own tag
    // (WDF_DRIVER_CONFIG.DriverPoolTag).
    (192, "WdfMemoryCreate", PoolCall::Alloc, R9),
    // WdfLookasideListCreate(Globals, LookasideAttributes, BufferSize,
    // PoolType, MemoryAttributes, PoolTag, Lookaside)
    (
        198,
        "WdfLookasideListCreate",
        PoolCall::Alloc,
        TagArg::Stack(6),
    ),
];

/// What a KMDF driver's calls go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KmdfTable {
    /// The global that holds the function table's address.
    pub slot: u64,
    /// Entries the stub bound (`WDF_BIND_INFO.FuncCount`).
    pub functions: u32,
    /// The load configuration's CFG dispatch pointer, if any.
    pub dispatch: Option<u64>,
}

/// `WDF_DRIVER_GLOBALS.DriverTag` (wdfglobals.h, x64: Driver at +0,
/// DriverFlags +8, DriverTag +0xC): the tag the framework uses for the
/// driver where it passes PoolTag 0, set from `WDF_DRIVER_CONFIG`'s
/// DriverPoolTag or, without one, from the driver's service name.
const DRIVER_TAG: u64 = 0xC;

/// The driver's own tag: the DriverTag of the `WDF_DRIVER_GLOBALS` that
/// the pointer at `globals` (the stub's `WdfDriverGlobals`) names, when
/// memory holds both and the tag is not 0 (an image not bound, read from
/// a file, has a null pointer there).
pub(super) fn driver_pool_tag<M: Memory + ?Sized>(mem: &M, globals: u64) -> Option<PoolTag> {
    let p = mem.read_u64(KernelVa(globals)).ok()?;
    if !KernelVa(p).is_kernel() {
        return None;
    }
    let tag = mem.read_u32(KernelVa(p.checked_add(DRIVER_TAG)?)).ok()?;
    (tag != 0).then_some(PoolTag(tag))
}

/// The routine at function-table index `index`, if it takes a tag.
pub fn kmdf_routine(index: u32) -> Option<(&'static str, PoolCall, TagArg)> {
    KMDF_ROUTINES
        .iter()
        .find(|r| r.0 == index)
        .map(|&(_, n, k, a)| (n, k, a))
}

/// The component name of KMDF's bind info, as UTF-16LE with its NUL.
const COMPONENT: &str = "KmdfLibrary";
/// Data read per module at most while looking for the bind info.
const MAX_DATA_BYTES: u64 = 16 << 20;

/// The function-table global of module `m`, when it is a KMDF driver
/// (it imports `WdfVersionBind`) and its bind info can be read. The data
/// read is taken from `budget`, the scan's (code and data alike).
pub(super) fn kmdf_table<M: Memory + ?Sized>(
    walker: &mut StackWalker,
    mem: &M,
    m: usize,
    sections: &[SectionHeader],
    imports: &HashMap<u64, String>,
    budget: &mut u64,
    stats: &mut ReadStats,
) -> Option<KmdfTable> {
    if !imports.values().any(|n| n == "WdfVersionBind") {
        return None;
    }
    let base = walker.modules().get(m)?.base.0;
    let name: Vec<u8> = COMPONENT
        .encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect();
    let data = read_data(walker, mem, m, sections, budget, stats);
    let strings: Vec<u64> = data
        .iter()
        .flat_map(|(rva, b)| {
            memchr::memmem::find_iter(b, &name).map(move |at| base + u64::from(*rva) + at as u64)
        })
        .collect();
    for (_, b) in &data {
        for (k, q) in b.chunks_exact(8).enumerate() {
            let v = u64::from_le_bytes(q.try_into().expect("8 bytes"));
            if !strings.contains(&v) || k == 0 {
                continue;
            }
            // `Component` is the second member, at +8.
            let info = &b[8 * (k - 1)..];
            if let Some(t) = bind_info(info, base, walker.modules()[m].size) {
                return Some(KmdfTable {
                    dispatch: dispatch_pointer(walker, mem, m, base, stats),
                    ..t
                });
            }
        }
    }
    None
}

/// `WDF_BIND_INFO` (fxldr.h, x64): Size at +0, Component +8, Version
/// {Major, Minor, Build} +0x10, FuncCount +0x1C, FuncTable +0x20.
fn bind_info(b: &[u8], base: u64, size: u32) -> Option<KmdfTable> {
    let le = crate::bytes::Le(b);
    let (len, major, count, table) = (le.u32(0)?, le.u32(0x10)?, le.u32(0x1C)?, le.u64(0x20)?);
    let inside = table.checked_sub(base).is_some_and(|r| r < u64::from(size));
    ((0x30..=0x1000).contains(&len) && major == 1 && (1..=0x4000).contains(&count) && inside)
        .then_some(KmdfTable {
            slot: table,
            functions: count,
            dispatch: None,
        })
}

/// `GuardCFDispatchFunctionPointer` (+0x78 of the x64
/// IMAGE_LOAD_CONFIG_DIRECTORY), when the image is CFG-instrumented.
fn dispatch_pointer<M: Memory + ?Sized>(
    walker: &mut StackWalker,
    mem: &M,
    m: usize,
    base: u64,
    stats: &mut ReadStats,
) -> Option<u64> {
    let (rva, _) = walker
        .data_directory(mem, m, DataDirectory::LoadConfig, stats)
        .ok()??;
    let b = walker.read_image(mem, m, rva, 0x80, stats).ok()?;
    let le = crate::bytes::Le(&b);
    // The structure's own Size must reach the field.
    let p = le
        .u64(0x78)
        .filter(|_| le.u32(0).is_some_and(|n| n >= 0x80))?;
    (p > base).then_some(p)
}

/// The module's data sections (not code), a page at a time, pages that
/// cannot be read left as zeros, [`MAX_DATA_BYTES`] in all at the most
/// and no more than `budget`, which it is taken from.
fn read_data<M: Memory + ?Sized>(
    walker: &mut StackWalker,
    mem: &M,
    m: usize,
    sections: &[SectionHeader],
    budget: &mut u64,
    stats: &mut ReadStats,
) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut left = MAX_DATA_BYTES;
    for s in sections.iter().filter(|s| !s.is_code()) {
        let len = u64::from(s.mapped_size()).min(left).min(*budget);
        left -= len;
        *budget -= len;
        let mut b = vec![0u8; len as usize];
        for (k, page) in b.chunks_mut(PAGE_SIZE as usize).enumerate() {
            let at = s.rva.saturating_add((k as u64 * PAGE_SIZE) as u32);
            if let Ok(got) = walker.read_image(mem, m, at, page.len() as u32, stats) {
                let n = got.len().min(page.len());
                page[..n].copy_from_slice(&got[..n]);
            }
        }
        out.push((s.rva, b));
    }
    out
}

/// The function-table index a call reaches through `k`'s table: `call
/// [reg+off]` with `reg` holding the global, `call reg` with `reg` holding
/// an entry, or CFG's `call [__guard_dispatch_icall_fptr]` with RAX
/// holding one.
pub(super) fn kmdf_call(
    ins: &iced_x86::Instruction,
    cp: &flow::CallPoint,
    k: &KmdfTable,
) -> Option<u32> {
    let entry = match ins.op0_kind() {
        OpKind::Memory
            if ins.memory_base() == Register::RIP && ins.memory_index() == Register::None =>
        {
            if Some(ins.memory_displacement64()) != k.dispatch {
                return None;
            }
            cp.state[0].clone()
        }
        OpKind::Memory => flow::table_entry(
            &cp.state,
            ins.memory_base(),
            ins.memory_index(),
            ins.memory_displacement64(),
        ),
        OpKind::Register => cp.state[flow::gpr(ins.op0_register())?].clone(),
        _ => return None,
    };
    let flow::Val::Set(v) = entry else {
        return None;
    };
    match v.as_slice() {
        [flow::Src::Field { slot, offset }] if *slot == k.slot && offset % 8 == 0 => {
            u32::try_from(offset / 8).ok().filter(|i| *i < k.functions)
        }
        _ => None,
    }
}
