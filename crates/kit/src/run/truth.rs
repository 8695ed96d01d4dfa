//! What the running machine reports: why it stopped (a breakpoint or a bug
//! check), and the ground-truth record of what it did (work items, pool
//! calls by site, tracker charges, breakpoint hits, DbgPrint lines), with
//! the stacks the CPU built.

use std::collections::BTreeMap;

use serde::Serialize;

use super::cpu::{RSP, Regs, ShadowFrame};

/// A bug check: its code and parameters, and the processor's registers at
/// KeBugCheckEx.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BugCheck {
    pub code: u32,
    pub parameters: [u64; 4],
    pub cpu: u32,
    #[serde(skip)]
    pub context: Regs,
    /// The bug-checking thread's stack (ground truth, from the shadow
    /// stack), innermost first.
    pub frames: Vec<TruthFrame>,
}

/// Why the machine stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum StopKind {
    /// An int3 executed (PoolHitTag's, DbgBreakPoint's, anyone's).
    Breakpoint,
    /// KeBugCheckEx ran; the machine never runs again.
    BugCheck(Box<BugCheck>),
}

/// The machine is stopped: which processor, where, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub cpu: u32,
    pub thread: u64,
    pub pc: u64,
    pub kind: StopKind,
}

/// One frame of a stack as the CPU built it (WinDbg's `k` columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TruthFrame {
    pub pc: u64,
    pub child_sp: u64,
    pub ret_addr: u64,
}

/// A pool call the CPU made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub enum PoolOp {
    Alloc,
    Free,
}

/// Where a pool call came from: the first return address on the stack
/// outside nt, as module and RVA.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Site {
    pub module: String,
    pub rva: u64,
}

/// Counts per (site, tag, op).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SiteCount {
    pub calls: u64,
    /// Bytes requested (allocations) or charged (frees).
    pub bytes: u64,
}

/// A breakpoint stop, as the CPU saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HitRecord {
    pub cpu: u32,
    pub pc: u64,
    pub frames: Vec<TruthFrame>,
    /// The pool call in progress, if the int3 was inside one.
    pub pool: Option<(PoolOp, u32, u64, Option<Site>)>,
    /// The tag matched nt!PoolHitTag at the stop.
    pub pool_hit_tag: bool,
}

/// Everything the running machine did, for tests to compare with.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunTruth {
    /// Work items started, by name.
    pub items: BTreeMap<String, u64>,
    /// Completed pool calls by (site, tag, op).
    pub sites: BTreeMap<(Option<Site>, u32, PoolOp), SiteCount>,
    /// Per (tag, paged): allocations, frees and net charged bytes added to
    /// the tracker since the machine started running.
    pub tags: BTreeMap<(u32, bool), (u64, u64, i64)>,
    pub hits: Vec<HitRecord>,
    /// Lines DbgPrint printed.
    pub prints: Vec<String>,
    pub bugcheck: Option<BugCheck>,
    /// Instructions the interpreter could not run (must stay empty).
    pub invalid: Vec<String>,
    pub instructions: u64,
}

/// The stack the CPU built from `regs` and its shadow stack, innermost
/// first.
pub(super) fn frames_of(regs: &Regs, shadow: &[ShadowFrame]) -> Vec<TruthFrame> {
    let mut out = Vec::new();
    let mut pc = regs.rip;
    let mut sp = regs.gpr[RSP];
    for f in shadow.iter().rev() {
        out.push(TruthFrame {
            pc,
            child_sp: sp,
            ret_addr: f.resume,
        });
        pc = f.resume;
        sp = if f.trap { f.slot } else { f.slot + 8 };
    }
    // The thread's first frame returns to 0.
    out.push(TruthFrame {
        pc,
        child_sp: sp,
        ret_addr: 0,
    });
    out
}
