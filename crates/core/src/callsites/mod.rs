//! Where a driver's code passes a tag to a pool routine: every instruction
//! whose immediate operand becomes the Tag argument of
//! ExAllocatePoolWithTag and its relatives (R8) or of ExFreePoolWithTag
//! (RDX), found by disassembling the driver's code sections.
//!
//! This is the static half of the relabel hunt (docs/relabel.md): the
//! places a tag can be patched so that each call site allocates with a tag
//! of its own. It is also stronger evidence for Mapped_Driver than the tag's
//! four bytes anywhere in an image: a tag that reaches a pool routine is
//! the driver's (see [`attribute_tags`]).
//!
//! Per module:
//! 1. its executable sections are read (through memory for a dump or a live
//!    target, from the file for `--image`); pages that cannot be read are
//!    skipped and counted;
//! 2. the code is cut into regions at every function start the image
//!    tells (RUNTIME_FUNCTION entries, their ends, direct call targets),
//!    so leaf functions without unwind data and chained fragments are
//!    covered too;
//! 3. each region runs through the data-flow of `flow.rs`, which yields the
//!    registers' possible values before each call and each jump that
//!    leaves it (a tail call);
//! 4. a call is a pool call when it goes to an import the module's import
//!    table names: directly through the IAT slot, through a linker thunk
//!    (`call thunk` -> `jmp [__imp_X]`), through a register loaded from the
//!    slot, or as a tail `jmp [__imp_X]`; or, in a KMDF driver, to an entry
//!    of the framework's function table that takes a tag (`kmdf.rs`).
//!
//! What it does not see: a tag loaded from memory (a global, a structure
//! field, a stack spill), a tag passed on the stack (lookaside-list
//! initialisers), imports by ordinal, code in pages that are paged out.
//! Such pool calls are listed as unresolved rather than dropped.

pub(crate) mod flow;
mod image_mem;
mod kmdf;
mod scan;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use iced_x86::{FlowControl, OpKind, Register};
use serde::Serialize;

use crate::addr::{KernelVa, PAGE_SIZE};
use crate::hittag::{PoolCall, import_slots, thunk_slot};
use crate::kernel::LoadedModule;
use crate::memory::Memory;
use crate::stack::{ReadStats, SectionHeader, StackModule, StackWalker, Symbolizer};
use crate::tag::PoolTag;

pub use scan::{scan_module, scan_module_within};

pub use image_mem::{ImageMemory, MAX_IMAGE_FILE};
pub use kmdf::{KMDF_ROUTINES, KmdfTable, kmdf_routine};

/// Code read per module at most (a hostile SizeOfImage or section size).
pub const MAX_CODE_BYTES: u64 = 64 << 20;
/// Code read over all the modules of one scan at most: a hostile module
/// list (thousands of entries over one mapping of [`MAX_CODE_BYTES`])
/// would otherwise cost hundreds of GiB of decoding. Real systems have
/// tens of MiB of driver code.
pub const MAX_TOTAL_CODE_BYTES: u64 = 512 << 20;
/// Code analysed as one region at most (a function is rarely a tenth of it).
pub const MAX_REGION_BYTES: u64 = 256 << 10;

/// Where a pool routine takes its tag (the x64 calling convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagArg {
    /// Arguments 1 to 4: RCX, RDX, R8, R9.
    Register(Register),
    /// Arguments 5 to 8: stored by the caller at `[rsp+0x20]` to
    /// `[rsp+0x38]` before the call.
    Stack(u8),
}

impl TagArg {
    /// Its index in the data-flow's state.
    fn state_index(self) -> Option<usize> {
        match self {
            TagArg::Register(r) => flow::gpr(r),
            TagArg::Stack(n) => flow::stack_arg(n),
        }
    }
}

impl std::fmt::Display for TagArg {
    /// `r8`, or `[rsp+0x28]` for argument 6.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TagArg::Register(r) => write!(f, "{}", format!("{r:?}").to_lowercase()),
            TagArg::Stack(n) => write!(f, "[rsp+{:#x}]", 8 * u32::from(n.saturating_sub(1))),
        }
    }
}

const RDX: TagArg = TagArg::Register(Register::RDX);
const R8: TagArg = TagArg::Register(Register::R8);
const R9: TagArg = TagArg::Register(Register::R9);

/// The pool routines that take a tag, whether they allocate or free, and
/// where the tag is. ExAllocatePoolZero and the other `Zero`/`Uninitialized`
/// helpers are inline in wdm.h, so they are rarely imported, but a driver
/// built against another header may import them. NDIS (ndis.sys) and the
/// filter manager (fltmgr.sys) have their own tagged allocators, which
/// network drivers and minifilters call rather than nt's. A lookaside
/// list's initializer takes the tag of every allocation the list will make
/// (on the stack: it is the sixth or seventh argument); it counts as an
/// allocation site, since that tag is what its blocks carry.
pub const TAGGED_ROUTINES: &[(&str, PoolCall, TagArg)] = &[
    ("ExAllocatePoolWithTag", PoolCall::Alloc, R8),
    ("ExAllocatePoolWithTagPriority", PoolCall::Alloc, R8),
    ("ExAllocatePoolWithQuotaTag", PoolCall::Alloc, R8),
    ("ExAllocatePool2", PoolCall::Alloc, R8),
    ("ExAllocatePool3", PoolCall::Alloc, R8),
    ("ExAllocatePoolZero", PoolCall::Alloc, R8),
    ("ExAllocatePoolUninitialized", PoolCall::Alloc, R8),
    ("ExAllocatePoolQuotaZero", PoolCall::Alloc, R8),
    ("ExAllocatePoolQuotaUninitialized", PoolCall::Alloc, R8),
    ("ExAllocatePoolPriorityZero", PoolCall::Alloc, R8),
    ("ExAllocatePoolPriorityUninitialized", PoolCall::Alloc, R8),
    ("FsRtlAllocatePoolWithTag", PoolCall::Alloc, R8),
    ("FsRtlAllocatePoolWithQuotaTag", PoolCall::Alloc, R8),
    ("ExFreePoolWithTag", PoolCall::Free, RDX),
    ("ExFreePool2", PoolCall::Free, RDX),
    (
        "ExInitializeNPagedLookasideList",
        PoolCall::Alloc,
        TagArg::Stack(6),
    ),
    (
        "ExInitializePagedLookasideList",
        PoolCall::Alloc,
        TagArg::Stack(6),
    ),
    (
        "ExInitializeLookasideListEx",
        PoolCall::Alloc,
        TagArg::Stack(7),
    ),
    // NdisAllocateMemoryWithTagPriority(NdisHandle, Length, Tag, Priority)
    ("NdisAllocateMemoryWithTagPriority", PoolCall::Alloc, R8),
    // NdisAllocateMemoryWithTag(&VirtualAddress, Length, Tag)
    ("NdisAllocateMemoryWithTag", PoolCall::Alloc, R8),
    // NdisFreeMemoryWithTagPriority(NdisHandle, VirtualAddress, Tag)
    ("NdisFreeMemoryWithTagPriority", PoolCall::Free, R8),
    // NdisFreeMemoryWithTag(VirtualAddress, Tag)
    ("NdisFreeMemoryWithTag", PoolCall::Free, RDX),
    // FltAllocatePoolAlignedWithTag(Instance, PoolType, NumberOfBytes, Tag)
    ("FltAllocatePoolAlignedWithTag", PoolCall::Alloc, R9),
    // FltFreePoolAlignedWithTag(Instance, Buffer, Tag)
    ("FltFreePoolAlignedWithTag", PoolCall::Free, R8),
];

/// The routines of [`TAGGED_ROUTINES`] that a module other than nt exports
/// (NDIS's, the filter manager's). Each calls nt's pool for its caller: on
/// a stack its frame is the pool routine, and the frame below it the
/// caller, whose call is the site.
pub const WRAPPER_ROUTINES: &[&str] = &[
    "NdisAllocateMemoryWithTagPriority",
    "NdisAllocateMemoryWithTag",
    "NdisFreeMemoryWithTagPriority",
    "NdisFreeMemoryWithTag",
    "FltAllocatePoolAlignedWithTag",
    "FltFreePoolAlignedWithTag",
];

/// Whether an imported routine takes a tag, and where.
pub fn tagged_routine(name: &str) -> Option<(PoolCall, TagArg)> {
    TAGGED_ROUTINES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, k, r)| (*k, *r))
}

/// How a call reaches its import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum CallVia {
    /// `call/jmp qword ptr [__imp_X]`.
    Iat,
    /// `call thunk` where the thunk is `jmp qword ptr [__imp_X]`.
    /// The thunk's address.
    Thunk {
        /// The thunk's address.
        thunk: KernelVa,
    },
    /// `call reg` with the register loaded from the IAT slot.
    /// The register (`rax`).
    Register {
        /// The register (`rax`).
        register: String,
    },
    /// An entry of KMDF's function table (`call [WdfFunctions+8*index]`,
    /// or through a register or CFG's dispatch pointer).
    Wdf {
        /// The entry's index (wdffuncenum.h).
        index: u32,
    },
}

impl std::fmt::Display for CallVia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallVia::Iat => f.write_str("iat"),
            CallVia::Thunk { .. } => f.write_str("thunk"),
            CallVia::Register { register } => write!(f, "{register}"),
            CallVia::Wdf { index } => write!(f, "wdf[{index}]"),
        }
    }
}

/// A value that may be the tag at a pool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagValue {
    /// The tag, as the instruction loads it.
    pub tag: PoolTag,
    /// The instruction that put it in a register.
    pub instruction: KernelVa,
    /// Where its four bytes are in the instruction, when they can be
    /// patched (an imm32 or imm64 operand).
    pub immediate: Option<KernelVa>,
}

/// A call to a tagged pool routine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolCallSite {
    /// The module's BaseDllName.
    pub module: String,
    /// The `call` (or tail `jmp`).
    pub call: KernelVa,
    /// The address after it: what a stack shows for this call (the return
    /// address), and what hittag and the relabel rows are named after.
    pub return_address: KernelVa,
    /// A tail `jmp` rather than a `call`.
    pub tail_call: bool,
    /// The pool routine (`ExAllocatePool2`, `ExFreePoolWithTag`, ...).
    pub routine: String,
    /// Whether the routine allocates or frees.
    pub kind: PoolCall,
    /// How the call reaches the routine's import.
    pub via: CallVia,
    /// Where the tag is passed: `r8`, `rdx`, `r9`, or a stack argument's
    /// slot (`[rsp+0x28]`).
    pub tag_register: String,
    /// The values the tag may have at the call; None when the analysis
    /// could not follow it.
    pub tags: Option<Vec<TagValue>>,
}

/// What was found in one module.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleScan {
    /// The module's BaseDllName (or the image file's name).
    pub module: String,
    /// Where the module is loaded (an image file's preferred ImageBase).
    pub base: KernelVa,
    /// TimeDateStamp from the module's PE header.
    pub time_date_stamp: Option<u32>,
    /// SizeOfImage from the module's PE header, in bytes.
    pub size_of_image: Option<u32>,
    /// The section table, for [`ModuleScan::file_offset`] (not serialised).
    #[serde(skip)]
    pub sections: Vec<SectionHeader>,
    /// The tagged pool calls found, by address.
    pub calls: Vec<PoolCallSite>,
    /// Bytes of code decoded (pages of zeros are not).
    pub code_bytes: u64,
    /// Code pages that could not be read (paged out, not in the dump).
    pub unreadable_pages: u64,
    /// What could not be decoded or read, one sentence each.
    pub notes: Vec<String>,
    /// A KMDF driver's `WdfDriverGlobals` (the variable its stub passes to
    /// `WdfVersionBind`), when its code names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmdf_globals: Option<KernelVa>,
    /// A KMDF driver's own tag (`WDF_DRIVER_GLOBALS.DriverTag`, read from
    /// memory through `kmdf_globals`): what its framework calls that pass
    /// PoolTag 0 allocate with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_pool_tag: Option<PoolTag>,
}

impl ModuleScan {
    /// The file offset of a module RVA, from the section table.
    pub fn file_offset(&self, rva: u32) -> Option<u32> {
        self.sections.iter().find_map(|s| s.file_offset(rva))
    }
}

/// Whether the module file `name` (`leakydrv.sys`) is one `wanted` names,
/// by file name or stem in any case (`leakydrv`); every module is when
/// `wanted` is empty.
pub fn module_wanted(name: &str, wanted: &[String]) -> bool {
    wanted.is_empty()
        || wanted.iter().any(|w| {
            name.eq_ignore_ascii_case(w)
                || name
                    .rsplit_once('.')
                    .is_some_and(|(stem, _)| stem.eq_ignore_ascii_case(w))
        })
}

/// [`scan_module`] over the drivers of `walker` (every module but nt, the
/// first) that `wanted` names ([`module_wanted`]). A driver whose headers
/// cannot be read is skipped with a note; the scans' own notes are added
/// to `notes` too.
pub fn scan_drivers<M: Memory + ?Sized>(
    walker: &mut StackWalker,
    mem: &M,
    wanted: &[String],
    notes: &mut Vec<String>,
) -> Vec<ModuleScan> {
    scan_drivers_within(walker, mem, wanted, notes, MAX_TOTAL_CODE_BYTES)
}

/// [`scan_drivers`] reading at most `total` bytes of code in all.
fn scan_drivers_within<M: Memory + ?Sized>(
    walker: &mut StackWalker,
    mem: &M,
    wanted: &[String],
    notes: &mut Vec<String>,
    total: u64,
) -> Vec<ModuleScan> {
    let mut scans = Vec::new();
    let mut budget = total;
    for i in 1..walker.modules().len() {
        let name = walker.modules()[i].name.clone();
        if !module_wanted(&name, wanted) {
            continue;
        }
        if budget == 0 {
            notes.push(format!(
                "{name}: not scanned: the scan has read the {total:#x} bytes of code it reads in all (so much code suggests a damaged module list)"
            ));
            continue;
        }
        match scan_module_within(walker, mem, i, &mut budget) {
            Ok(s) => {
                notes.extend(s.notes.iter().cloned());
                scans.push(s);
            }
            Err(e) => notes.push(format!("{name}: skipped: {e}")),
        }
    }
    scans
}

/// One instruction whose immediate is a tag reaching a pool routine: the
/// unit `callsites` lists and `relabel` patches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagSite {
    /// Whether the routine allocates or frees.
    pub kind: PoolCall,
    /// The pool routine (`ExAllocatePool2`, ...).
    pub routine: String,
    /// The tag as the code holds it (with the PROTECTED_POOL bit if set).
    pub tag: PoolTag,
    /// The module's BaseDllName.
    pub module: String,
    /// Where the module is loaded.
    pub module_base: KernelVa,
    /// `module!function+0xoff` of the call's return address (driver PDB,
    /// else exports, else `module+0xoff`), as `kb` and hittag name it.
    pub site: String,
    /// The `call` (or tail `jmp`).
    pub call: KernelVa,
    /// The address after it: what a stack shows for this call.
    pub return_address: KernelVa,
    /// A tail `jmp` rather than a `call`.
    pub tail_call: bool,
    /// How the call reaches the routine's import.
    pub via: CallVia,
    /// The instruction holding the immediate.
    pub instruction: KernelVa,
    /// The immediate's four bytes.
    pub immediate: KernelVa,
    /// The immediate's offset from the module's base.
    pub immediate_rva: u32,
    /// Where those bytes are in the driver file.
    pub file_offset: Option<u32>,
    /// Other tags that may reach the same call (a tag chosen at run time).
    pub alternatives: Vec<PoolTag>,
}

/// A pool call whose tag the analysis could not follow (it may carry the
/// tag asked for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnresolvedCall {
    /// Whether the routine allocates or frees.
    pub kind: PoolCall,
    /// The pool routine.
    pub routine: String,
    /// The module's BaseDllName.
    pub module: String,
    /// `module!function+0xoff` of the call's return address.
    pub site: String,
    /// The `call` (or tail `jmp`).
    pub call: KernelVa,
}

/// What [`crate::Target::call_sites`] found in a kernel's drivers.
#[derive(Debug, Clone)]
pub struct CallSites {
    /// One scan per driver disassembled.
    pub scans: Vec<ModuleScan>,
    /// The sites of the tags asked for.
    pub sites: Vec<TagSite>,
    /// Pool calls whose tag the disassembly could not tell.
    pub unresolved: Vec<UnresolvedCall>,
    /// KMDF framework calls that pass PoolTag 0, so allocate with their
    /// driver's own tag, for the tags asked for.
    pub driver_tag_sites: Vec<DriverTagSite>,
    /// Drivers skipped, the scans' notes, then the symbolizer's.
    pub notes: Vec<String>,
}

/// A KMDF driver's call through the framework's function table that
/// passes PoolTag 0: the framework allocates with the driver's own tag
/// (`WDF_DRIVER_GLOBALS.DriverTag`). No immediate holds the tag, so
/// relabelling cannot reach it; `hittag` counts what it allocates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverTagSite {
    /// The driver's own tag.
    pub tag: PoolTag,
    /// `module!function+0xoff` of the return address.
    pub site: String,
    /// The driver's `WdfDriverGlobals`, which the tag was read through.
    pub globals: KernelVa,
    /// The call as the scan found it (its `tags` hold the 0 it passes).
    #[serde(flatten)]
    pub call: PoolCallSite,
}

/// Is `t` one of `tags` (any tag, when `tags` is empty)? Tags compare
/// without the PROTECTED_POOL bit.
fn asked_for(tags: &[PoolTag], t: PoolTag) -> bool {
    tags.is_empty() || tags.iter().any(|w| w.unprotected() == t.unprotected())
}

/// The calls of `scans` that pass PoolTag 0 to a KMDF routine in a driver
/// whose own tag is known and asked for (any, when `tags` is empty).
pub fn driver_tag_sites<M: Memory + ?Sized>(
    scans: &[ModuleScan],
    tags: &[PoolTag],
    walker: &mut StackWalker,
    symbolizer: &mut Symbolizer<'_>,
    mem: &M,
) -> Vec<DriverTagSite> {
    let wanted = |t: PoolTag| asked_for(tags, t);
    let mut out = Vec::new();
    for scan in scans {
        let (Some(tag), Some(globals)) = (scan.driver_pool_tag, scan.kmdf_globals) else {
            continue;
        };
        if !wanted(tag) {
            continue;
        }
        for c in scan
            .calls
            .iter()
            .filter(|c| matches!(c.via, CallVia::Wdf { .. }))
        {
            if !c.tags.iter().flatten().any(|v| v.tag.0 == 0) {
                continue;
            }
            out.push(DriverTagSite {
                tag,
                site: site_name(walker, symbolizer, mem, c.call, c.return_address),
                globals,
                call: c.clone(),
            });
        }
    }
    out
}

/// [`scan_drivers`] over every driver `wanted` names, then [`tag_sites`]
/// for `tags`, with one walker over `modules`.
pub fn call_sites<M: Memory + ?Sized>(
    mem: &M,
    modules: &crate::kernel::ModuleList,
    tags: &[PoolTag],
    wanted: &[String],
    symbolizer: &mut Symbolizer<'_>,
) -> CallSites {
    let mut walker = StackWalker::new(modules);
    let mut notes = Vec::new();
    let scans = scan_drivers(&mut walker, mem, wanted, &mut notes);
    let (sites, unresolved) = tag_sites(&scans, tags, &mut walker, symbolizer, mem);
    let driver_tag_sites = driver_tag_sites(&scans, tags, &mut walker, symbolizer, mem);
    notes.extend(symbolizer.notes().iter().cloned());
    CallSites {
        scans,
        sites,
        unresolved,
        driver_tag_sites,
        notes,
    }
}

/// Every site of the tags in `scans` (all tags when `tags` is empty),
/// named through `symbolizer`; and the pool calls whose tag is unknown.
/// Tags compare without the PROTECTED_POOL bit.
pub fn tag_sites<M: Memory + ?Sized>(
    scans: &[ModuleScan],
    tags: &[PoolTag],
    walker: &mut StackWalker,
    symbolizer: &mut Symbolizer<'_>,
    mem: &M,
) -> (Vec<TagSite>, Vec<UnresolvedCall>) {
    let wanted = |t: PoolTag| asked_for(tags, t);
    let mut sites = Vec::new();
    let mut unresolved = Vec::new();
    for scan in scans {
        for c in &scan.calls {
            let name = |walker: &mut StackWalker, symbolizer: &mut Symbolizer<'_>| {
                site_name(walker, symbolizer, mem, c.call, c.return_address)
            };
            let Some(values) = &c.tags else {
                unresolved.push(UnresolvedCall {
                    kind: c.kind,
                    routine: c.routine.clone(),
                    module: c.module.clone(),
                    site: name(walker, symbolizer),
                    call: c.call,
                });
                continue;
            };
            let mut named = None;
            for v in values {
                if !wanted(v.tag) || v.tag.0 == 0 {
                    continue;
                }
                let Some(imm) = v.immediate else {
                    continue;
                };
                let site = named
                    .get_or_insert_with(|| name(walker, symbolizer))
                    .clone();
                let rva = (imm.0 - scan.base.0) as u32;
                sites.push(TagSite {
                    kind: c.kind,
                    routine: c.routine.clone(),
                    tag: v.tag,
                    module: scan.module.clone(),
                    module_base: scan.base,
                    site,
                    call: c.call,
                    return_address: c.return_address,
                    tail_call: c.tail_call,
                    via: c.via.clone(),
                    instruction: v.instruction,
                    immediate: imm,
                    immediate_rva: rva,
                    file_offset: scan.file_offset(rva),
                    alternatives: values
                        .iter()
                        .filter(|o| o.tag != v.tag)
                        .map(|o| o.tag)
                        .collect(),
                });
            }
        }
    }
    sites.sort_by_key(|s| (s.module.clone(), s.call, s.immediate));
    (sites, unresolved)
}

/// `module!function+0xoff` of a return address, attributed (as a stack
/// walker does) to the function of its call: a tail jump at a function's
/// end is still that function's.
pub fn site_name<M: Memory + ?Sized>(
    walker: &mut StackWalker,
    symbolizer: &mut Symbolizer<'_>,
    mem: &M,
    call: KernelVa,
    ret: KernelVa,
) -> String {
    let mut s = symbolizer.symbolize(walker, mem, call);
    s.offset += ret.0 - call.0;
    s.address = ret;
    s.to_string()
}

/// Which module's code passes a tag to a pool routine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallsiteAttribution {
    /// BaseDllName of the module with the most allocation sites.
    pub module: String,
    /// Allocation sites of the tag in that module.
    pub alloc_sites: u32,
    /// Free sites of the tag in that module.
    pub free_sites: u32,
    /// Other modules whose code passes the tag too.
    pub also_in: Vec<String>,
}

/// Mapped_Driver from code: per tag, the modules whose code passes it to a
/// pool routine (allocation sites first). Scans every module but the first
/// (nt), [`MAX_TOTAL_CODE_BYTES`] of code in all; modules whose headers
/// cannot be read are skipped.
pub fn attribute_tags<M: Memory + ?Sized>(
    mem: &M,
    modules: &[LoadedModule],
    tags: &[PoolTag],
) -> BTreeMap<PoolTag, CallsiteAttribution> {
    let list: Vec<StackModule> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| StackModule::new(&m.name, m.base, m.size, i == 0))
        .collect();
    let mut walker = StackWalker::from_modules(list);
    // tag -> module -> (alloc, free)
    let mut ev: BTreeMap<PoolTag, BTreeMap<String, (u32, u32)>> = BTreeMap::new();
    let wanted: HashMap<u32, PoolTag> = tags.iter().map(|t| (t.unprotected().0, *t)).collect();
    let mut budget = MAX_TOTAL_CODE_BYTES;
    for i in 1..modules.len() {
        if budget == 0 {
            break;
        }
        let Ok(scan) = scan_module_within(&mut walker, mem, i, &mut budget) else {
            continue;
        };
        for c in &scan.calls {
            let mut seen = BTreeSet::new();
            for v in c.tags.iter().flatten() {
                let Some(t) = wanted.get(&v.tag.unprotected().0) else {
                    continue;
                };
                if !seen.insert(*t) {
                    continue;
                }
                let e = ev
                    .entry(*t)
                    .or_default()
                    .entry(scan.module.clone())
                    .or_default();
                match c.kind {
                    PoolCall::Alloc => e.0 += 1,
                    PoolCall::Free => e.1 += 1,
                }
            }
        }
    }
    ev.into_iter()
        .map(|(t, per)| {
            let mut v: Vec<(String, (u32, u32))> = per.into_iter().collect();
            v.sort_by_key(|(n, (a, f))| (std::cmp::Reverse(*a), std::cmp::Reverse(*f), n.clone()));
            let (module, (a, f)) = v[0].clone();
            (
                t,
                CallsiteAttribution {
                    module,
                    alloc_sites: a,
                    free_sites: f,
                    also_in: v[1..].iter().map(|x| x.0.clone()).collect(),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
