//! A function's unwind data summed up, its chain included
//! ([`UnwindSummary`]), for checks and tools.

use pe_unwind_info::x86_64::{UnwindInfo, UnwindOperation};
use serde::Serialize;

use super::functions::{RuntimeFunction, follow_chain, read_info, reg_of};
use crate::memory::Memory;
use crate::stack::WalkEnd;
use crate::stack::context::Reg;
use crate::stack::image::{ModuleImage, ReadStats};

/// What one function's unwind data says, summed up (for checks and
/// tools): the chained infos are included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnwindSummary {
    /// The function's RUNTIME_FUNCTION (the primary one, not a chained one).
    pub function: RuntimeFunction,
    /// UNWIND_INFO.Version (1, or 2 with epilog codes).
    pub version: u8,
    /// UNW_FLAG_* bits of the primary info.
    pub flags: u8,
    /// SizeOfProlog, in bytes of code.
    pub prolog_size: u8,
    /// FrameRegister, None when the function addresses its frame through
    /// RSP.
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

impl UnwindSummary {
    /// The summary of `function` before any unwind data is read: no
    /// codes, no frame register, nothing allocated.
    pub fn empty(function: RuntimeFunction) -> Self {
        Self {
            function,
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
        }
    }
}

/// Sum up a function's unwind data (its chain included).
pub(crate) fn summarize<M: Memory + ?Sized>(
    img: &mut ModuleImage,
    mem: &M,
    f: RuntimeFunction,
    stats: &mut ReadStats,
) -> Result<UnwindSummary, WalkEnd> {
    let mut s = UnwindSummary::empty(f);
    let mut cur = f;
    let mut seen = Vec::new();
    let img_name = img.describe();
    let name = img_name.as_str();
    let where_ = |begin: u32| move || format!("{name}, function at RVA {begin:#x}");
    loop {
        follow_chain(&mut seen, cur.unwind_info, &where_(f.begin))?;
        let ib = read_info(img, mem, cur.unwind_info, stats)?;
        let info = ib.parsed(&where_(cur.begin))?;
        add_info(&mut s, &info, seen.len() == 1);
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

/// Add one UNWIND_INFO of the chain to `s` (the header fields from the
/// `first`).
fn add_info(s: &mut UnwindSummary, info: &UnwindInfo<'_>, first: bool) {
    if first {
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
            + u64::from(info.frame_register_offset()) * u64::from(info.frame_register().is_some());
        (v - PROBE) as u32
    };
    for (_, op) in info.unwind_operations() {
        match op {
            UnwindOperation::PopNonVolatile(r) => s.pushes.insert(0, reg_of(r)),
            UnwindOperation::UnStackAlloc(n) => s.allocation += u64::from(n),
            UnwindOperation::ReadNonVolatile(r, o) => s.saves.push((reg_of(r), offset_of(o))),
            UnwindOperation::ReadXMM(r, o) => s.xmm_saves.push((r as u8, offset_of(o))),
            UnwindOperation::PopMachineFrame { error_code } => s.machine_frame = Some(error_code),
            UnwindOperation::RestoreSPFromFP | UnwindOperation::EpilogInformation(_) => {}
        }
    }
}
