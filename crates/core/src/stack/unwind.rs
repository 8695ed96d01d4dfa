//! One frame of x64 unwinding with the image's own unwind data.
//!
//! `pe-unwind-info` (Mozilla's parser, which framehop uses for PE) decodes
//! UNWIND_INFO and its codes (`UnwindOperations`: push, alloc small and
//! large, set-frame, save-nonvol and -far, save-xmm128 and -far, push
//! machine frame, version 2 epilog codes), decodes epilog instructions
//! (`FunctionEpilogInstruction`) and applies each operation to a register
//! state (`resolve_operation`). What this file adds is what that crate's
//! own driver (`FunctionTableEntries::unwind_frame`) does not do safely on
//! hostile input, so the driver is written here:
//!
//! * the RUNTIME_FUNCTION lookup reads `.pdata` a page at a time through
//!   the module's page cache (binary search), instead of taking the whole
//!   table, and follows the indirect-entry bit (`UnwindData & 1`);
//! * chained infos are followed at most [`MAX_CHAIN`] deep and never twice
//!   (the crate's loop never ends on a chain that loops back);
//! * the chained RUNTIME_FUNCTION is read after the code array padded to
//!   an even count, as the format says (the crate reads it right after an
//!   odd count's last code);
//! * the epilog check reads at most [`EPILOG_BYTES`] of code, only for a
//!   frame whose PC is exact (the first one, or one a machine frame
//!   interrupted), and applies the epilog with checked arithmetic;
//! * before each operation, RSP and the frame register must be known and
//!   inside [`SAFE_LOW`]..[`SAFE_HIGH`], so the crate's unchecked `+` and
//!   `-` cannot overflow on a forged stack.

use std::ops::ControlFlow;

use pe_unwind_info::x86_64::{
    FunctionEpilogInstruction, Register, UnwindInfo, UnwindInfoHeader, UnwindOperation,
    UnwindState, XmmRegister,
};
use serde::Serialize;

use super::context::{Reg, Registers};
use super::image::{ImageError, ModuleImage, ReadStats};
use super::stack_reader::StackReader;
use super::{WalkEnd, WhyWalkStopped};
use crate::bytes::Le;
use crate::memory::Memory;

/// Chained unwind infos followed at most (real images chain once or twice).
pub const MAX_CHAIN: usize = 32;
/// Code bytes read for the epilog check: `add rsp, imm32` (7), up to ten
/// `pop`s (2 each), a `jmp [rip+disp32]` (6), with room to spare.
pub const EPILOG_BYTES: u32 = 48;
/// RSP and frame-register values the unwinder works with: no kernel stack
/// lies outside this band, and inside it no unwind operation (at most a
/// 4 GiB allocation) can overflow.
pub const SAFE_LOW: u64 = 0x1000;
pub const SAFE_HIGH: u64 = 0xFFFF_FFFE_0000_0000;
/// RUNTIME_FUNCTION entries considered at most (nt has about 40,000).
pub const MAX_FUNCTIONS: u32 = 1 << 20;

const RUNTIME_FUNCTION_SIZE: u32 = 12;
const UNW_FLAG_CHAININFO: u8 = 0x4;

/// A RUNTIME_FUNCTION entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuntimeFunction {
    pub begin: u32,
    pub end: u32,
    pub unwind_info: u32,
}

/// How a frame was unwound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum UnwindMethod {
    /// The function's unwind codes (and its chained infos).
    UnwindInfo {
        /// RVA of the function's RUNTIME_FUNCTION begin.
        function: u32,
        /// Chained infos followed.
        chained: u32,
        /// The PC was in an epilog, simulated from the code.
        in_epilog: bool,
    },
    /// No RUNTIME_FUNCTION covers the PC: a leaf, whose return address is
    /// at `[RSP]`.
    Leaf,
    /// A machine frame (UWOP_PUSH_MACHFRAME): an interrupt or trap; the
    /// caller's RIP and RSP come from the frame the CPU pushed.
    MachineFrame {
        function: u32,
        /// Where the CPU-pushed RIP is (after the error code, if any).
        frame: u64,
    },
}

/// The result of unwinding one frame.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub caller: Registers,
    pub ret: u64,
    pub method: UnwindMethod,
}

/// What one function's unwind data says, summed up (for checks and
/// tools): the chained infos are included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnwindSummary {
    pub function: RuntimeFunction,
    pub version: u8,
    /// UNW_FLAG_* bits of the primary info.
    pub flags: u8,
    pub prolog_size: u8,
    pub frame_register: Option<Reg>,
    /// Scaled (bytes).
    pub frame_offset: u8,
    /// Registers pushed (UWOP_PUSH_NONVOL), in prolog order.
    pub pushes: Vec<Reg>,
    /// Registers saved with mov (`UWOP_SAVE_NONVOL[_FAR]`): register and its
    /// offset from the frame base.
    pub saves: Vec<(Reg, u32)>,
    /// XMM registers saved (`UWOP_SAVE_XMM128[_FAR]`): number and offset.
    pub xmm_saves: Vec<(u8, u32)>,
    /// Bytes allocated (UWOP_ALLOC_SMALL/LARGE).
    pub allocation: u64,
    /// UWOP_PUSH_MACHFRAME, with its error-code flag.
    pub machine_frame: Option<bool>,
    /// The RUNTIME_FUNCTIONs the chain leads to.
    pub chain: Vec<RuntimeFunction>,
    /// Bytes between RSP after the prolog and the return address:
    /// 8 per push plus the allocations (machine frames aside).
    pub frame_size: u64,
}

fn stop(reason: WhyWalkStopped, detail: impl Into<String>) -> WalkEnd {
    WalkEnd {
        reason,
        detail: detail.into(),
    }
}

fn image_stop(e: ImageError) -> WalkEnd {
    let reason = match &e {
        ImageError::OutsideImage { .. } => WhyWalkStopped::BadUnwindInfo,
        _ => WhyWalkStopped::ImageUnavailable,
    };
    stop(reason, e.to_string())
}

impl ModuleImage {
    fn function_count(&self) -> Option<(u32, u32)> {
        let (rva, size) = self.headers.exception?;
        Some((rva, (size / RUNTIME_FUNCTION_SIZE).min(MAX_FUNCTIONS)))
    }

    fn function_at<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        table: u32,
        i: u32,
        stats: &mut ReadStats,
    ) -> Result<RuntimeFunction, ImageError> {
        let at = table.saturating_add(i * RUNTIME_FUNCTION_SIZE);
        self.runtime_function(mem, at, stats)
    }

    fn runtime_function<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        at: u32,
        stats: &mut ReadStats,
    ) -> Result<RuntimeFunction, ImageError> {
        let b = self.read(mem, at, RUNTIME_FUNCTION_SIZE, stats)?;
        let b = Le(&b);
        Ok(RuntimeFunction {
            begin: b.u32(0).unwrap_or(0),
            end: b.u32(4).unwrap_or(0),
            unwind_info: b.u32(8).unwrap_or(0),
        })
    }

    /// Every entry of the exception directory, in table order.
    pub fn functions<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        stats: &mut ReadStats,
    ) -> Result<Vec<RuntimeFunction>, ImageError> {
        let Some((table, n)) = self.function_count() else {
            return Ok(Vec::new());
        };
        // Read the table in one go (through the page cache).
        let bytes = self.read(mem, table, n * RUNTIME_FUNCTION_SIZE, stats)?;
        Ok(bytes
            .chunks_exact(RUNTIME_FUNCTION_SIZE as usize)
            .map(|c| {
                let b = Le(c);
                RuntimeFunction {
                    begin: b.u32(0).unwrap_or(0),
                    end: b.u32(4).unwrap_or(0),
                    unwind_info: b.u32(8).unwrap_or(0),
                }
            })
            .collect())
    }

    /// The RUNTIME_FUNCTION covering `rva`, by binary search of the sorted
    /// table (log2(n) entries read, each through the page cache).
    pub fn lookup_function<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        rva: u32,
        stats: &mut ReadStats,
    ) -> Result<Option<RuntimeFunction>, ImageError> {
        let Some((table, n)) = self.function_count() else {
            return Ok(None);
        };
        let (mut lo, mut hi) = (0u32, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.function_at(mem, table, mid, stats)?.begin <= rva {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Ok(None);
        }
        let f = self.function_at(mem, table, lo - 1, stats)?;
        if !(f.begin <= rva && rva < f.end) {
            return Ok(None);
        }
        Ok(Some(f))
    }
}

/// An UNWIND_INFO read from the image: its bytes and the chained
/// RUNTIME_FUNCTION, if any.
struct InfoBytes {
    bytes: Vec<u8>,
    chained: Option<RuntimeFunction>,
}

impl InfoBytes {
    fn info(&self) -> Option<UnwindInfo<'_>> {
        UnwindInfo::parse(&self.bytes)
    }
}

fn read_info<M: Memory + ?Sized>(
    img: &mut ModuleImage,
    mem: &M,
    rva: u32,
    stats: &mut ReadStats,
) -> Result<InfoBytes, WalkEnd> {
    let head = img.read(mem, rva, 4, stats).map_err(image_stop)?;
    let version = head[0] & 7;
    if !(1..=2).contains(&version) {
        return Err(stop(
            WhyWalkStopped::BadUnwindInfo,
            format!(
                "{}: the UNWIND_INFO at RVA {rva:#x} has version {version}, not 1 or 2",
                img.describe()
            ),
        ));
    }
    let count = u32::from(head[2]);
    // The code array is padded to an even count before any trailer.
    let codes = 2 * count.next_multiple_of(2);
    let chained = (head[0] >> 3) & UNW_FLAG_CHAININFO != 0;
    let len = 4 + codes + if chained { RUNTIME_FUNCTION_SIZE } else { 0 };
    let bytes = img.read(mem, rva, len, stats).map_err(image_stop)?;
    let chained = chained.then(|| {
        let b = Le(&bytes[(4 + codes) as usize..]);
        RuntimeFunction {
            begin: b.u32(0).unwrap_or(0),
            end: b.u32(4).unwrap_or(0),
            unwind_info: b.u32(8).unwrap_or(0),
        }
    });
    Ok(InfoBytes { bytes, chained })
}

/// The function a chained fragment belongs to: follow UNW_FLAG_CHAININFO
/// from the RUNTIME_FUNCTION covering `rva` to the first one that is not
/// chained (at most [`MAX_CHAIN`] steps). None when `rva` is in no
/// function or its info is not chained.
pub(crate) fn chain_root<M: Memory + ?Sized>(
    img: &mut ModuleImage,
    mem: &M,
    rva: u32,
    stats: &mut ReadStats,
) -> Option<RuntimeFunction> {
    let f = img.lookup_function(mem, rva, stats).ok()??;
    let mut cur = read_info(img, mem, f.unwind_info, stats).ok()?;
    let mut root = None;
    for _ in 0..MAX_CHAIN {
        let Some(next) = cur.chained else {
            return root;
        };
        root = Some(next);
        cur = read_info(img, mem, next.unwind_info, stats).ok()?;
    }
    None
}

/// The registers and stack the crate's operations work on.
struct State<'a, 'm, M: Memory + ?Sized> {
    regs: Registers,
    stack: &'a mut StackReader<'m, M>,
}

fn reg_of(r: Register) -> Reg {
    Reg::from_number(r as u8).unwrap_or(Reg::Rax)
}

impl<M: Memory + ?Sized> UnwindState for State<'_, '_, M> {
    fn read_register(&mut self, register: Register) -> u64 {
        // Only RSP and the frame register are read, and `check` made sure
        // both are known before the operation runs.
        self.regs.get(reg_of(register)).unwrap_or(SAFE_LOW)
    }
    fn read_stack(&mut self, addr: u64) -> Option<u64> {
        self.stack.read_u64(addr).ok()
    }
    fn write_register(&mut self, register: Register, value: u64) {
        self.regs.set(reg_of(register), Some(value));
    }
    fn write_xmm_register(&mut self, _register: XmmRegister, _value: u128) {}
}

fn in_band(v: u64) -> bool {
    (SAFE_LOW..SAFE_HIGH).contains(&v)
}

/// Make sure `op` cannot overflow: the registers it reads are known and in
/// the band, an allocation is not absurd.
fn check(
    op: &UnwindOperation,
    header: &UnwindInfoHeader,
    regs: &Registers,
    max_frame: u64,
    where_: &dyn Fn() -> String,
) -> Result<(), WalkEnd> {
    let rsp = regs.rsp();
    if !in_band(rsp) {
        return Err(stop(
            WhyWalkStopped::BadStackPointer,
            format!(
                "{}: RSP {rsp:#x} left the kernel's stack range while unwinding",
                where_()
            ),
        ));
    }
    let uses_fp = matches!(
        op,
        UnwindOperation::RestoreSPFromFP
            | UnwindOperation::ReadNonVolatile(..)
            | UnwindOperation::ReadXMM(..)
    );
    if uses_fp && let Some(fp) = header.frame_register() {
        let r = reg_of(fp);
        match regs.get(r) {
            None => {
                return Err(stop(
                    WhyWalkStopped::FrameRegisterUnknown,
                    format!(
                        "{}: the frame register {r} is not known in this frame",
                        where_()
                    ),
                ));
            }
            Some(v) if !in_band(v) => {
                return Err(stop(
                    WhyWalkStopped::FrameRegisterUnknown,
                    format!(
                        "{}: the frame register {r} holds {v:#x}, not a stack address",
                        where_()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if let UnwindOperation::UnStackAlloc(n) = op
        && u64::from(*n) > max_frame
    {
        return Err(stop(
            WhyWalkStopped::FrameTooLarge,
            format!("{}: an allocation of {n:#x} bytes", where_()),
        ));
    }
    Ok(())
}

/// Is `offset` (from the function's start) inside an epilog, per the
/// version 2 epilog codes? `None` when the info has none (version 1): the
/// code itself must be looked at.
fn v2_in_epilog(ops: &[(u8, UnwindOperation)], rva: u32, function_end: u32) -> Option<bool> {
    let mut it = ops.iter().filter_map(|(_, op)| match op {
        UnwindOperation::EpilogInformation(e) => Some(e),
        _ => None,
    });
    let header = it.next()?;
    let size = u32::from(header.as_header().epilog_size());
    let at = |off: u32| {
        let start = function_end.wrapping_sub(off);
        rva >= start && rva < start.saturating_add(size)
    };
    let mut inside = header.as_header().single_epilog() && at(size);
    for e in it {
        let off = u32::from(e.as_offset());
        if off != 0 {
            inside |= at(off);
        }
    }
    Some(inside)
}

/// Unwind the frame whose PC is `regs.rip` in module image `img` at `rva`.
/// `lookup_rva` finds the function (RVA - 1 for a return address, so a
/// `call` that ends a function is attributed to it); `exact` says the PC
/// is where the CPU stopped (the first frame, or one a machine frame
/// interrupted), so the prolog offset and the epilog matter.
#[allow(clippy::too_many_arguments)]
pub(crate) fn unwind_frame<M: Memory + ?Sized>(
    img: &mut ModuleImage,
    mem: &M,
    stack: &mut StackReader<'_, M>,
    regs: &Registers,
    rva: u32,
    lookup_rva: u32,
    exact: bool,
    max_frame: u64,
    stats: &mut ReadStats,
) -> Result<Step, WalkEnd> {
    let function = img
        .lookup_function(mem, lookup_rva, stats)
        .map_err(image_stop)?;
    let mut st = State { regs: *regs, stack };
    let Some(mut function) = function else {
        // A leaf: the return address is at [RSP].
        let rsp = st.regs.rsp();
        let ret = st.stack.read_u64(rsp)?;
        st.regs.set_rsp(rsp.saturating_add(8));
        return Ok(Step {
            caller: st.regs,
            ret,
            method: UnwindMethod::Leaf,
        });
    };
    // Indirect entries (UnwindData bit 0) point at another RUNTIME_FUNCTION.
    if function.unwind_info & 1 != 0 {
        let to = function.unwind_info & !1;
        function = img.runtime_function(mem, to, stats).map_err(image_stop)?;
        if function.unwind_info & 1 != 0 {
            return Err(stop(
                WhyWalkStopped::BadUnwindInfo,
                format!(
                    "{}: the indirect RUNTIME_FUNCTION at RVA {to:#x} is indirect again",
                    img.describe()
                ),
            ));
        }
    }
    let primary = function;
    let offset = rva.saturating_sub(function.begin);
    let img_name = img.describe();
    let where_ = |f: &RuntimeFunction| {
        let (name, begin) = (img_name.clone(), f.begin);
        move || format!("{name}, function at RVA {begin:#x}")
    };
    let mut seen: Vec<u32> = Vec::new();
    let mut chained = 0u32;
    let mut in_epilog = false;
    let mut machine = None;
    'chain: loop {
        if seen.contains(&function.unwind_info) {
            return Err(stop(
                WhyWalkStopped::BadUnwindInfo,
                format!(
                    "{}: the chain of unwind infos loops back to RVA {:#x}",
                    where_(&primary)(),
                    function.unwind_info
                ),
            ));
        }
        if seen.len() > MAX_CHAIN {
            return Err(stop(
                WhyWalkStopped::BadUnwindInfo,
                format!(
                    "{}: more than {MAX_CHAIN} chained unwind infos",
                    where_(&primary)()
                ),
            ));
        }
        seen.push(function.unwind_info);
        let ib = read_info(img, mem, function.unwind_info, stats)?;
        let Some(info) = ib.info() else {
            return Err(stop(
                WhyWalkStopped::BadUnwindInfo,
                format!(
                    "{}: the UNWIND_INFO at RVA {:#x} cannot be parsed",
                    where_(&function)(),
                    function.unwind_info
                ),
            ));
        };
        let ops: Vec<(u8, UnwindOperation)> = info.unwind_operations().collect();
        let is_chained = chained > 0;
        if !is_chained && exact && rva < function.end {
            let maybe = v2_in_epilog(&ops, rva, function.end).unwrap_or(true);
            if maybe
                && let Some(done) = try_epilog(img, mem, &mut st, &info, rva, function.end, stats)?
            {
                in_epilog = done;
                break 'chain;
            }
        }
        let w = where_(&function);
        for (prolog_offset, op) in ops
            .iter()
            .filter(|(_, op)| !matches!(op, UnwindOperation::EpilogInformation(_)))
        {
            // In the primary info, codes for prolog instructions not yet
            // executed are skipped.
            if !is_chained && u32::from(*prolog_offset) > offset {
                continue;
            }
            check(op, &info, &st.regs, max_frame, &w)?;
            let before = st.regs.rsp();
            match info.resolve_operation(&mut st, op) {
                None => {
                    return Err(stop(
                        WhyWalkStopped::StackUnreadable,
                        format!("{}: {}", w(), st.stack.last_error()),
                    ));
                }
                Some(ControlFlow::Break(rip)) => {
                    let frame = match op {
                        UnwindOperation::PopMachineFrame { error_code: true } => before + 8,
                        _ => before,
                    };
                    machine = Some((rip, frame));
                    break 'chain;
                }
                Some(ControlFlow::Continue(())) => {}
            }
        }
        match ib.chained {
            Some(next) => {
                chained += 1;
                function = next;
            }
            None => break,
        }
    }
    if let Some((rip, frame)) = machine {
        return Ok(Step {
            caller: st.regs,
            ret: rip,
            method: UnwindMethod::MachineFrame {
                function: primary.begin,
                frame,
            },
        });
    }
    let rsp = st.regs.rsp();
    if !in_band(rsp) {
        return Err(stop(
            WhyWalkStopped::BadStackPointer,
            format!(
                "{}: RSP {rsp:#x} left the kernel's stack range while unwinding",
                where_(&primary)()
            ),
        ));
    }
    let ret = st.stack.read_u64(rsp)?;
    st.regs.set_rsp(rsp + 8);
    Ok(Step {
        caller: st.regs,
        ret,
        method: UnwindMethod::UnwindInfo {
            function: primary.begin,
            chained,
            in_epilog,
        },
    })
}

/// If the code at `rva` is an epilog, apply it to `st` (RSP then points at
/// the return address) and return `Some(true)`; `None` when it is not one.
fn try_epilog<M: Memory + ?Sized>(
    img: &mut ModuleImage,
    mem: &M,
    st: &mut State<'_, '_, M>,
    info: &UnwindInfo<'_>,
    rva: u32,
    end: u32,
    stats: &mut ReadStats,
) -> Result<Option<bool>, WalkEnd> {
    let len = (end - rva).min(EPILOG_BYTES);
    let Ok(code) = img.read(mem, rva, len, stats) else {
        // Unreadable code cannot be an epilog we can simulate; the unwind
        // codes still apply.
        return Ok(None);
    };
    let Ok(seq) = FunctionEpilogInstruction::parse_sequence(&code, info.frame_register()) else {
        return Ok(None);
    };
    let mut regs = st.regs;
    let bad = |what: String| {
        stop(
            WhyWalkStopped::BadStackPointer,
            format!("{}: in the epilog at RVA {rva:#x}: {what}", img.describe()),
        )
    };
    for i in seq.iter() {
        match *i {
            FunctionEpilogInstruction::AddSP(n) => {
                let v = regs
                    .rsp()
                    .checked_add(u64::from(n))
                    .ok_or_else(|| bad(format!("RSP + {n:#x} overflows")))?;
                regs.set_rsp(v);
            }
            FunctionEpilogInstruction::AddSPFromFP(n) => {
                let fp = info.frame_register().map(reg_of).unwrap_or(Reg::Rbp);
                let base = regs
                    .get(fp)
                    .ok_or_else(|| bad(format!("the frame register {fp} is not known")))?;
                let v = base
                    .checked_add(u64::from(n))
                    .ok_or_else(|| bad(format!("{fp} + {n:#x} overflows")))?;
                regs.set_rsp(v);
            }
            FunctionEpilogInstruction::Pop(r) => {
                let rsp = regs.rsp();
                let v = st.stack.read_u64(rsp)?;
                regs.set(reg_of(r), Some(v));
                regs.set_rsp(
                    rsp.checked_add(8)
                        .ok_or_else(|| bad("RSP + 8 overflows".into()))?,
                );
            }
        }
    }
    st.regs = regs;
    Ok(Some(true))
}

/// Sum up a function's unwind data (its chain included).
pub(crate) fn summarize<M: Memory + ?Sized>(
    img: &mut ModuleImage,
    mem: &M,
    f: RuntimeFunction,
    stats: &mut ReadStats,
) -> Result<UnwindSummary, WalkEnd> {
    let mut s = UnwindSummary {
        function: f,
        version: 0,
        flags: 0,
        prolog_size: 0,
        frame_register: None,
        frame_offset: 0,
        pushes: Vec::new(),
        saves: Vec::new(),
        xmm_saves: Vec::new(),
        allocation: 0,
        machine_frame: None,
        chain: Vec::new(),
        frame_size: 0,
    };
    let mut cur = f;
    let mut seen = Vec::new();
    loop {
        if seen.contains(&cur.unwind_info) || seen.len() > MAX_CHAIN {
            return Err(stop(
                WhyWalkStopped::BadUnwindInfo,
                format!(
                    "{}: the chain of unwind infos of RVA {:#x} loops or is too long",
                    img.describe(),
                    f.begin
                ),
            ));
        }
        seen.push(cur.unwind_info);
        let ib = read_info(img, mem, cur.unwind_info, stats)?;
        let Some(info) = ib.info() else {
            return Err(stop(
                WhyWalkStopped::BadUnwindInfo,
                format!(
                    "{}: the UNWIND_INFO at RVA {:#x} cannot be parsed",
                    img.describe(),
                    cur.unwind_info
                ),
            ));
        };
        if seen.len() == 1 {
            s.version = info.version();
            s.flags = info.flags_raw();
            s.prolog_size = info.prolog_size;
            s.frame_register = info.frame_register().map(reg_of);
            s.frame_offset = info.frame_register_offset();
        }
        // Offsets of saves: resolve against a base far from both ends.
        const PROBE: u64 = 1 << 40;
        let offset_of = |o| {
            let v = info.resolve_offset(|_| PROBE, o)
                + u64::from(info.frame_register_offset())
                    * u64::from(info.frame_register().is_some());
            (v - PROBE) as u32
        };
        for (_, op) in info.unwind_operations() {
            match op {
                UnwindOperation::PopNonVolatile(r) => s.pushes.insert(0, reg_of(r)),
                UnwindOperation::UnStackAlloc(n) => s.allocation += u64::from(n),
                UnwindOperation::ReadNonVolatile(r, o) => s.saves.push((reg_of(r), offset_of(o))),
                UnwindOperation::ReadXMM(r, o) => s.xmm_saves.push((r as u8, offset_of(o))),
                UnwindOperation::PopMachineFrame { error_code } => {
                    s.machine_frame = Some(error_code)
                }
                UnwindOperation::RestoreSPFromFP | UnwindOperation::EpilogInformation(_) => {}
            }
        }
        match ib.chained {
            Some(next) => {
                s.chain.push(next);
                cur = next;
            }
            None => break,
        }
    }
    s.frame_size = 8 * s.pushes.len() as u64 + s.allocation;
    Ok(s)
}
