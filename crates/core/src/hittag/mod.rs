//! Who allocates a tag: what one PoolHitTag break says (WinDbg's `kb`
//! after `ed nt!PoolHitTag`), and the call sites of many breaks counted.
//!
//! For each stop, a [`HitAnalyzer`] walks the stack from the stopped
//! processor's registers, finds the first frame outside nt (the caller of
//! the pool; a frame of NDIS's or the filter manager's pool routines,
//! which call nt's for their caller, is passed over where its module's
//! exports or PDB name it; where that frame is KMDF's framework and a
//! driver's frame follows the framework's, the driver's is the site), and
//! decides whether the stop is an allocation, a free or something else:
//!
//! 1. The frames below the caller, where nt's PDB (or a module's exports)
//!    names them: an allocator (`ExAllocatePoolWithTag`, `ExAllocatePool2`,
//!    `ExAllocateHeapPool`, `ExpInsertPoolTracker`,
//!    `NdisAllocateMemoryWithTagPriority`, ...) or a free
//!    (`ExFreePoolWithTag`, `ExFreeHeapPool`, `ExpRemovePoolTracker`, ...).
//!    The routine names differ between builds, so any of them decides.
//! 2. Where they do not (no PDB, or only unnamed frames), the pool routine
//!    the caller's `call` instruction targets, through its import table
//!    (directly through the IAT, or through a linker thunk).
//!
//! A stop that neither names (a DbgBreakPoint of a driver's own, a break-in,
//! a stack that reaches no pool routine) is kept apart, never counted.
//! For an allocation, the size argument (RDX at the call; R8 for
//! `FltAllocatePoolAlignedWithTag`) is recovered from
//! the caller's code: an immediate, a callee-saved register the unwinder
//! recovered for the caller's frame, or a stack slot at its Child-SP.

mod callsite;
mod table;

use std::collections::HashMap;

use iced_x86::Register;
use serde::Serialize;

use crate::addr::KernelVa;
use crate::bytes::Le;
use crate::callsites::{WRAPPER_ROUTINES, tagged_routine};
use crate::kernel::ModuleList;
use crate::memory::{Memory, MemoryExt};
use crate::stack::{
    ReadStats, Registers, StackTrace, StackWalker, Symbol, SymbolOrigin, Symbolizer,
};
use crate::tag::PoolTag;

pub use callsite::{Call, CallTarget};
pub(crate) use callsite::{Code, MAX_FUNCTION_BYTES, thunk_slot};
pub use table::{FrameRow, HitTable, OtherStop, SiteRow, StackRow};

/// Whether a pool call allocates or frees.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum PoolCall {
    /// An allocation (`ExAllocatePool2`, `ExAllocatePoolWithTag`, ...).
    Alloc,
    /// A free (`ExFreePoolWithTag`, `ExFreePool`, ...).
    Free,
}

impl PoolCall {
    /// `alloc` or `free`, as the JSON and the tables name it.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolCall::Alloc => "alloc",
            PoolCall::Free => "free",
        }
    }
}

/// How the decision was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "by")]
pub enum DecidedBy {
    /// A frame below the caller that names a pool routine: nt's (from its
    /// PDB or exports), or NDIS's or the filter manager's (which call
    /// nt's for their caller).
    NtFrame {
        /// The nt function (`ExAllocatePool2`).
        function: String,
    },
    /// The import the caller's call instruction goes through.
    Import {
        /// The imported function.
        function: String,
    },
}

/// What one stop was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum HitKind {
    /// A pool call (PoolHitTag's break).
    Pool {
        /// Allocation or free.
        call: PoolCall,
        /// How that was decided.
        decided_by: DecidedBy,
    },
    /// Not a pool call: why.
    Other {
        /// One sentence (outside nt, no frame, no caller outside nt, no pool
        /// routine).
        reason: String,
    },
}

/// One analysed stop.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The stack walked from the stop's registers.
    pub trace: StackTrace,
    /// `trace.frames[i]` named.
    pub symbols: Vec<Symbol>,
    /// A pool call (and which), or something else.
    pub kind: HitKind,
    /// Index of the call site's frame: the first frame outside nt (the
    /// pool's caller), or, where that is KMDF's framework called by a
    /// driver, the driver's frame below the framework's.
    pub site: Option<usize>,
    /// Index of the frame that called the pool routine: the site's, or,
    /// where the site is past KMDF's framework, the framework's frame
    /// nearest nt's.
    pub caller: Option<usize>,
    /// The caller's call instruction, when decoded.
    pub call: Option<Call>,
    /// Bytes requested (allocations), when the caller's code says.
    pub size: Option<u64>,
    /// Target reads of the stack this analysis made.
    pub stack_reads: ReadStats,
    /// Target reads of module images (headers, unwind data, code, import
    /// tables) this analysis made: none once a module's pages are cached.
    pub image_reads: ReadStats,
}

/// nt pool routine names (prefixes) that allocate.
const ALLOC_PREFIXES: &[&str] = &[
    "ExAllocatePool",
    "ExAllocateHeapPool",
    "ExpAllocateBigPool",
    "ExpInsertPoolTracker",
    "ExAllocateFromPagedLookasideList",
    "ExAllocateFromNPagedLookasideList",
];
/// nt pool routine names (prefixes) that free.
const FREE_PREFIXES: &[&str] = &[
    "ExFreePool",
    "ExFreeHeapPool",
    "ExpFreeLargePool",
    "ExFreeLargePool",
    "ExpRemovePoolTracker",
    "ExFreeToPagedLookasideList",
    "ExFreeToNPagedLookasideList",
];

/// What a stop is, from nt's nearest named pool routine frame (`by_frame`:
/// the call and the function) or else the caller's import (`by_import`).
fn decide(by_frame: Option<(PoolCall, String)>, by_import: Option<String>) -> HitKind {
    let import_call = by_import
        .as_ref()
        .and_then(|n| pool_routine(n).map(|c| (c, n.clone())));
    match (by_frame, import_call) {
        (Some((call, function)), _) => HitKind::Pool {
            call,
            decided_by: DecidedBy::NtFrame { function },
        },
        (None, Some((call, function))) => HitKind::Pool {
            call,
            decided_by: DecidedBy::Import { function },
        },
        (None, None) => HitKind::Other {
            reason: match &by_import {
                Some(n) => format!("the caller calls {n}, not a pool routine"),
                None => "no pool routine on the stack (nt's frames are not named as one and the caller's call does not go through a pool import)".into(),
            },
        },
    }
}

/// Is `name` (an nt function, an import, or another module's pool routine
/// such as NDIS's) a pool routine, and which kind?
pub fn pool_routine(name: &str) -> Option<PoolCall> {
    if ALLOC_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Some(PoolCall::Alloc)
    } else if FREE_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Some(PoolCall::Free)
    } else if WRAPPER_ROUTINES.contains(&name) {
        tagged_routine(name).map(|(call, _)| call)
    } else {
        None
    }
}

/// The register that holds the bytes an allocation routine is asked for:
/// the second argument, but the third for the filter manager's
/// (`FltAllocatePoolAlignedWithTag(Instance, PoolType, NumberOfBytes, Tag)`).
fn size_register(routine: &str) -> Register {
    if routine == "FltAllocatePoolAlignedWithTag" {
        Register::R8
    } else {
        Register::RDX
    }
}

/// How many callers up an argument register's value is followed (a
/// driver's allocation wrapper, KMDF's entry and its allocator).
const ENTRY_LEVELS: u32 = 2;

/// KMDF's framework, by module name: a driver calls it through the
/// function table WDFLDR.SYS binds, and it allocates with the driver's
/// tag for the call ([`HitAnalyzer`] names the driver's frame as the site).
pub const FRAMEWORK_MODULES: &[&str] = &["Wdf01000"];

/// The index of the pool routine's caller among frames given as (in nt,
/// another module's pool routine: [`WRAPPER_ROUTINES`]): the first frame
/// that is neither.
fn first_caller(frames: impl IntoIterator<Item = (bool, bool)>) -> Option<usize> {
    frames
        .into_iter()
        .position(|(in_nt, wrapper)| !in_nt && !wrapper)
}

/// A module's imports: IAT slot address -> imported name.
#[derive(Debug, Default, Clone)]
struct Imports {
    slots: HashMap<u64, String>,
}

/// Import descriptors and names read at most per module.
const MAX_DESCRIPTORS: usize = 256;
const MAX_IMPORTS: usize = 4096;

/// Analyses stops, caching per module what it read (unwind data, code,
/// import tables, names) across a session.
pub struct HitAnalyzer<'a> {
    pub(crate) walker: StackWalker,
    pub(crate) symbolizer: Symbolizer<'a>,
    imports: HashMap<usize, Imports>,
    nt: Option<usize>,
}

impl<'a> HitAnalyzer<'a> {
    /// Over the loaded modules (the first is nt).
    pub fn new(modules: &ModuleList, symbolizer: Symbolizer<'a>) -> Self {
        Self::with_walker(StackWalker::new(modules), symbolizer)
    }

    /// Over the modules `walker` knows, with its caches and limits.
    pub fn with_walker(walker: StackWalker, symbolizer: Symbolizer<'a>) -> Self {
        let nt = walker.modules().iter().position(|m| m.short_name == "nt");
        Self {
            walker,
            symbolizer,
            imports: HashMap::new(),
            nt,
        }
    }

    fn in_nt(&self, va: KernelVa) -> bool {
        self.nt
            .is_some_and(|n| self.walker.modules()[n].contains(va))
    }

    /// Analyse the stop whose registers are `regs`.
    pub fn analyze<M: Memory + ?Sized>(&mut self, mem: &M, regs: &Registers) -> Hit {
        let trace = self.walker.walk(mem, regs);
        let stack_reads = trace.stack_reads;
        let image_reads = trace.image_reads;
        let symbols: Vec<Symbol> = trace
            .frames
            .iter()
            .map(|f| self.symbolizer.symbolize(&mut self.walker, mem, f.pc))
            .collect();
        let mut hit = Hit {
            symbols,
            kind: HitKind::Other {
                reason: String::new(),
            },
            site: None,
            caller: None,
            call: None,
            size: None,
            stack_reads,
            image_reads,
            trace,
        };
        let k = match self.caller_frame(&hit) {
            Ok(k) => k,
            Err(reason) => {
                hit.kind = HitKind::Other { reason };
                return hit;
            }
        };
        let site = self.past_framework(&hit, k);
        hit.site = Some(site);
        hit.caller = Some(k);
        // 1. nt's own frames, nearest the caller first.
        let by_frame = (0..k).rev().find_map(|i| {
            let s = &hit.symbols[i];
            let f = s.function.as_deref()?;
            (s.origin == crate::stack::SymbolOrigin::Pdb
                || s.origin == crate::stack::SymbolOrigin::Export)
                .then(|| pool_routine(f).map(|c| (c, f.to_string())))
                .flatten()
        });
        // 2. The caller's call instruction.
        let mut stats = ReadStats::default();
        let code = self.caller_code(mem, &hit, k, &mut stats);
        // The site's own call: the caller's, or the driver's call into the
        // framework.
        hit.call = if site == k {
            code.as_ref().map(Code::call)
        } else {
            self.caller_code(mem, &hit, site, &mut stats)
                .map(|c| c.call())
        };
        let by_import = code.as_ref().and_then(|c| {
            self.import_of_call(mem, c.call(), hit.trace.frames[k].module, &mut stats)
        });
        hit.kind = decide(by_frame, by_import);
        if let (
            Some(code),
            HitKind::Pool {
                call: PoolCall::Alloc,
                decided_by,
            },
        ) = (&code, &hit.kind)
        {
            let routine = match decided_by {
                DecidedBy::NtFrame { function } | DecidedBy::Import { function } => function,
            };
            let reg = size_register(routine);
            hit.size = self.value_with_callers(mem, &hit, k, code, reg, ENTRY_LEVELS, &mut stats);
        }
        hit.image_reads.add(&stats);
        hit
    }

    /// The first frame outside nt (the caller of the pool routine), or
    /// why there is none.
    fn caller_frame(&self, hit: &Hit) -> Result<usize, String> {
        let Some(first) = hit.trace.frames.first() else {
            return Err("the stack has no frame".into());
        };
        if !self.in_nt(first.pc) {
            return Err(format!("the stop is outside nt, at {}", hit.symbols[0]));
        }
        // NDIS's and the filter manager's pool routines call nt's for
        // their caller: their frames are skipped, where they are named.
        let wrapper = |s: &Symbol| {
            matches!(s.origin, SymbolOrigin::Pdb | SymbolOrigin::Export)
                && s.function
                    .as_deref()
                    .is_some_and(|f| WRAPPER_ROUTINES.contains(&f))
        };
        first_caller(
            (hit.trace.frames.iter())
                .zip(&hit.symbols)
                .map(|(f, s)| (self.in_nt(f.pc), wrapper(s))),
        )
        .ok_or_else(|| format!("the stack reaches no caller outside nt ({})", hit.trace.end))
    }

    /// What `code` (frame `i`'s) put in `reg` for its call; an argument
    /// register it was entered with is asked of its caller's code (frame
    /// `i + 1`), at most `levels` callers up, and only where that caller's
    /// call is seen to go to frame `i`'s function (a direct call, or one
    /// through a pointer in memory that holds its start): a function
    /// reached by a tail call was entered with what the jumping function
    /// passed, which its caller's code does not say.
    #[allow(clippy::too_many_arguments)]
    fn value_with_callers<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        hit: &Hit,
        i: usize,
        code: &Code,
        reg: Register,
        levels: u32,
        stats: &mut ReadStats,
    ) -> Option<u64> {
        let frame = hit.trace.frames[i].clone();
        let mut read = |va: u64| mem.read_u64(KernelVa(va)).ok();
        let start = code.start();
        let mut entry = |r: Register| -> Option<u64> {
            if levels == 0 || i + 1 >= hit.trace.frames.len() {
                return None;
            }
            let caller = self.caller_code(mem, hit, i + 1, stats)?;
            let target = match caller.call().target {
                CallTarget::Direct(t) => t,
                CallTarget::Indirect(slot) => mem.read_u64(KernelVa(slot)).ok()?,
                CallTarget::Unknown => return None,
            };
            if target != start {
                return None;
            }
            self.value_with_callers(mem, hit, i + 1, &caller, r, levels - 1, stats)
        };
        code.value_at_call(reg, &frame, &mut read, &mut entry)
    }

    /// The call site, given `k`, the frame that called the pool: `k`
    /// itself, unless it is KMDF's framework ([`FRAMEWORK_MODULES`]) and the
    /// first frame past the framework's is a driver's (not nt's, and in a
    /// module): then the framework allocated for that driver's call through
    /// its function table, and the driver's frame is the site. Where nt's
    /// frames come first (a request the framework dispatches, a DPC), the
    /// framework's own work stays its own: the driver below them is not
    /// the one that asked.
    fn past_framework(&self, hit: &Hit, k: usize) -> usize {
        let modules = self.walker.modules();
        let framework = |i: usize| {
            hit.trace.frames[i].module.is_some_and(|m| {
                FRAMEWORK_MODULES
                    .iter()
                    .any(|f| modules[m].short_name.eq_ignore_ascii_case(f))
            })
        };
        if !framework(k) {
            return k;
        }
        match (k..hit.trace.frames.len()).find(|&i| !framework(i)) {
            Some(j)
                if hit.trace.frames[j].module.is_some() && !self.in_nt(hit.trace.frames[j].pc) =>
            {
                j
            }
            _ => k,
        }
    }

    /// The caller's code from its function's start to the return address.
    fn caller_code<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        hit: &Hit,
        k: usize,
        stats: &mut ReadStats,
    ) -> Option<Code> {
        let frame = &hit.trace.frames[k];
        let m = frame.module?;
        let base = self.walker.modules()[m].base.0;
        let ret = frame.pc.0;
        let rva = u32::try_from(ret.checked_sub(base)?.checked_sub(1)?).ok()?;
        let f = self.walker.function_at(mem, m, rva, stats).ok().flatten()?;
        let len = f.end.checked_sub(f.begin)?.min(MAX_FUNCTION_BYTES);
        let bytes = self.walker.read_image(mem, m, f.begin, len, stats).ok()?;
        // (A caller that calls has a frame, so a RUNTIME_FUNCTION.)
        Code::decode(base + u64::from(f.begin), &bytes, ret)
    }

    /// The import a call goes through: its IAT slot, or a thunk's.
    fn import_of_call<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        call: Call,
        module: Option<usize>,
        stats: &mut ReadStats,
    ) -> Option<String> {
        let m = module?;
        let base = self.walker.modules()[m].base.0;
        let slot = match call.target {
            CallTarget::Indirect(slot) => slot,
            CallTarget::Direct(t) if self.walker.modules()[m].contains(KernelVa(t)) => {
                let rva = u32::try_from(t - base).ok()?;
                let b = self.walker.read_image(mem, m, rva, 16, stats).ok()?;
                callsite::thunk_slot(t, &b)?
            }
            _ => return None,
        };
        let imports = self.imports_of(mem, m, stats);
        imports.slots.get(&slot).cloned()
    }

    fn imports_of<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        m: usize,
        stats: &mut ReadStats,
    ) -> &Imports {
        if !self.imports.contains_key(&m) {
            let i = self.read_imports(mem, m, stats).unwrap_or_default();
            self.imports.insert(m, i);
        }
        &self.imports[&m]
    }

    /// Parse module `m`'s import descriptors.
    fn read_imports<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        m: usize,
        stats: &mut ReadStats,
    ) -> Option<Imports> {
        import_slots(&mut self.walker, mem, m, stats).map(|slots| Imports { slots })
    }
}

/// Module `m`'s imports by name: each FirstThunk (IAT) slot's address,
/// named by the OriginalFirstThunk's hint/name entry. Imports by ordinal
/// and bound IATs without a lookup table are left out; at most
/// 256 descriptors and 4096 names are read (hostile headers).
pub fn import_slots<M: Memory + ?Sized>(
    walker: &mut StackWalker,
    mem: &M,
    m: usize,
    stats: &mut ReadStats,
) -> Option<HashMap<u64, String>> {
    let base = walker.modules().get(m)?.base.0;
    let (dir, size) = walker
        .data_directory(mem, m, crate::stack::DataDirectory::Import, stats)
        .ok()??;
    let n = (size as usize / 20).clamp(1, MAX_DESCRIPTORS);
    let descs = walker
        .read_image(mem, m, dir, (n * 20) as u32, stats)
        .ok()?;
    let mut out = HashMap::new();
    for d in descs.chunks_exact(20) {
        let d = Le(d);
        let (ilt, name, iat) = (
            d.u32(0).unwrap_or(0),
            d.u32(12).unwrap_or(0),
            d.u32(16).unwrap_or(0),
        );
        if name == 0 || iat == 0 {
            break;
        }
        let lookup = if ilt != 0 { ilt } else { iat };
        for j in 0..MAX_IMPORTS as u32 {
            if out.len() >= MAX_IMPORTS {
                break;
            }
            let Ok(e) = walker.read_image(mem, m, lookup.saturating_add(8 * j), 8, stats) else {
                break;
            };
            let e = u64::from_le_bytes(e.try_into().unwrap_or([0; 8]));
            if e == 0 {
                break;
            }
            if e >> 63 != 0 || ilt == 0 {
                // By ordinal, or a bound IAT with no names left.
                continue;
            }
            let Ok(hint) = walker.read_image(mem, m, (e & 0x7FFF_FFFF) as u32 + 2, 64, stats)
            else {
                continue;
            };
            let end = hint.iter().position(|b| *b == 0).unwrap_or(hint.len());
            let name = String::from_utf8_lossy(&hint[..end]).into_owned();
            // A hostile FirstThunk may point past the top of the address
            // space: no call can go through such a slot.
            if let Some(slot) = base.checked_add(u64::from(iat) + 8 * u64::from(j)) {
                out.insert(slot, name);
            }
        }
    }
    Some(out)
}

/// The tag PoolHitTag holds, as `ed nt!PoolHitTag` writes it: the raw
/// little-endian u32 of the four bytes as typed (`Abc` padded to `Abc `).
pub fn hit_tag_value(tag: PoolTag) -> u32 {
    tag.0
}

#[cfg(test)]
mod tests;
