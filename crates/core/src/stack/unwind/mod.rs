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
//!
//! This file holds one frame's unwinding; `functions.rs` reads the
//! RUNTIME_FUNCTIONs and UNWIND_INFOs, `summary.rs` sums a function's
//! unwind data up.

mod functions;
mod summary;

use std::ops::ControlFlow;

use pe_unwind_info::x86_64::{
    FunctionEpilogInstruction, Register, UnwindInfo, UnwindInfoHeader, UnwindOperation,
    UnwindState, XmmRegister,
};
use serde::Serialize;

use super::context::{Reg, Registers};
use super::image::{ModuleImage, ReadStats};
use super::stack_reader::StackReader;
use super::{WalkEnd, WhyWalkStopped};
use crate::memory::Memory;

pub(crate) use functions::chain_root;
pub use functions::{MAX_CHAIN, RuntimeFunction};
use functions::{follow_chain, image_stop, read_info, reg_of, stop};
pub use summary::UnwindSummary;
pub(crate) use summary::summarize;

/// Code bytes read for the epilog check: `add rsp, imm32` (7), up to ten
/// `pop`s (2 each), a `jmp [rip+disp32]` (6), with room to spare.
pub const EPILOG_BYTES: u32 = 48;
/// RSP and frame-register values the unwinder works with: no kernel stack
/// lies outside this band, and inside it no unwind operation (at most a
/// 4 GiB allocation) can overflow. This is the band's first value.
pub const SAFE_LOW: u64 = 0x1000;
/// One past the band's last value (2^64 - 8 GiB).
pub const SAFE_HIGH: u64 = 0xFFFF_FFFE_0000_0000;

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
        /// RVA of the function's RUNTIME_FUNCTION begin.
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

/// The registers and stack the crate's operations work on.
struct State<'a, 'm, M: Memory + ?Sized> {
    regs: Registers,
    stack: &'a mut StackReader<'m, M>,
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

/// RSP must stay inside the kernel's stack range while unwinding.
fn rsp_in_band(rsp: u64, where_: &dyn Fn() -> String) -> Result<(), WalkEnd> {
    if !in_band(rsp) {
        return Err(stop(
            WhyWalkStopped::BadStackPointer,
            format!(
                "{}: RSP {rsp:#x} left the kernel's stack range while unwinding",
                where_()
            ),
        ));
    }
    Ok(())
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
    rsp_in_band(rsp, where_)?;
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
    let mut st = State { regs: *regs, stack };
    let Some(mut function) = covering_function(img, mem, lookup_rva, stats)? else {
        // A leaf: the return address is at [RSP].
        let rsp = st.regs.rsp();
        let ret = st.stack.read_u64(rsp)?;
        st.regs.set_rsp(rsp.saturating_add(8));
        return Ok(step(st, ret, UnwindMethod::Leaf));
    };
    let primary = function;
    let offset = rva.saturating_sub(function.begin);
    let img_name = img.describe();
    let name = img_name.as_str();
    let where_ = |begin: u32| move || format!("{name}, function at RVA {begin:#x}");
    let mut seen: Vec<u32> = Vec::new();
    let mut chained = 0u32;
    let mut in_epilog = false;
    let mut machine = None;
    loop {
        follow_chain(&mut seen, function.unwind_info, &where_(primary.begin))?;
        let ib = read_info(img, mem, function.unwind_info, stats)?;
        let info = ib.parsed(&where_(function.begin))?;
        let ops: Vec<(u8, UnwindOperation)> = info.unwind_operations().collect();
        let is_chained = chained > 0;
        if !is_chained && exact && rva < function.end {
            let maybe = v2_in_epilog(&ops, rva, function.end).unwrap_or(true);
            if maybe
                && let Some(done) = try_epilog(img, mem, &mut st, &info, rva, function.end, stats)?
            {
                in_epilog = done;
                break;
            }
        }
        // In the primary info, codes for prolog instructions not yet
        // executed are skipped.
        let done_to = (!is_chained).then_some(offset);
        machine = apply_info(
            &info,
            &ops,
            &mut st,
            done_to,
            max_frame,
            &where_(function.begin),
        )?;
        match (machine, ib.chained) {
            (None, Some(next)) => {
                chained += 1;
                function = next;
            }
            _ => break,
        }
    }
    if let Some((rip, frame)) = machine {
        let function = primary.begin;
        return Ok(step(
            st,
            rip,
            UnwindMethod::MachineFrame { function, frame },
        ));
    }
    let method = UnwindMethod::UnwindInfo {
        function: primary.begin,
        chained,
        in_epilog,
    };
    return_through_rsp(st, method, &where_(primary.begin))
}

/// The caller's registers as `st` holds them, returning to `ret`.
fn step<M: Memory + ?Sized>(st: State<'_, '_, M>, ret: u64, method: UnwindMethod) -> Step {
    Step {
        caller: st.regs,
        ret,
        method,
    }
}

/// Once the unwind codes ran, RSP points at the return address: read it
/// and pop it, if RSP is still in the stack range.
fn return_through_rsp<M: Memory + ?Sized>(
    mut st: State<'_, '_, M>,
    method: UnwindMethod,
    where_: &dyn Fn() -> String,
) -> Result<Step, WalkEnd> {
    let rsp = st.regs.rsp();
    rsp_in_band(rsp, where_)?;
    let ret = st.stack.read_u64(rsp)?;
    st.regs.set_rsp(rsp + 8);
    Ok(step(st, ret, method))
}

/// The RUNTIME_FUNCTION covering `lookup_rva`, through an indirect entry
/// (UnwindData bit 0 points at another RUNTIME_FUNCTION) if it is one;
/// `None` in a leaf.
fn covering_function<M: Memory + ?Sized>(
    img: &mut ModuleImage,
    mem: &M,
    lookup_rva: u32,
    stats: &mut ReadStats,
) -> Result<Option<RuntimeFunction>, WalkEnd> {
    let Some(function) = img
        .lookup_function(mem, lookup_rva, stats)
        .map_err(image_stop)?
    else {
        return Ok(None);
    };
    if function.unwind_info & 1 == 0 {
        return Ok(Some(function));
    }
    let to = function.unwind_info & !1;
    let function = img.runtime_function(mem, to, stats).map_err(image_stop)?;
    if function.unwind_info & 1 != 0 {
        return Err(stop(
            WhyWalkStopped::BadUnwindInfo,
            format!(
                "{}: the indirect RUNTIME_FUNCTION at RVA {to:#x} is indirect again",
                img.describe()
            ),
        ));
    }
    Ok(Some(function))
}

/// Apply one UNWIND_INFO's operations `ops` to `st`, skipping those for
/// prolog instructions past `done_to` (the PC's offset, in the primary
/// info). Returns the machine frame's RIP and address when a
/// UWOP_PUSH_MACHFRAME ends the unwinding.
fn apply_info<M: Memory + ?Sized>(
    info: &UnwindInfo<'_>,
    ops: &[(u8, UnwindOperation)],
    st: &mut State<'_, '_, M>,
    done_to: Option<u32>,
    max_frame: u64,
    w: &dyn Fn() -> String,
) -> Result<Option<(u64, u64)>, WalkEnd> {
    for (prolog_offset, op) in ops
        .iter()
        .filter(|(_, op)| !matches!(op, UnwindOperation::EpilogInformation(_)))
    {
        if done_to.is_some_and(|offset| u32::from(*prolog_offset) > offset) {
            continue;
        }
        check(op, info, &st.regs, max_frame, w)?;
        let before = st.regs.rsp();
        match info.resolve_operation(st, op) {
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
                return Ok(Some((rip, frame)));
            }
            Some(ControlFlow::Continue(())) => {}
        }
    }
    Ok(None)
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
