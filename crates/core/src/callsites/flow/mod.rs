//! Which values reach a register at each call of a piece of code, found
//! without running it.
//!
//! A forward data-flow over the code's basic blocks: per general-purpose
//! register, and per stack argument slot a call reads (arguments 5 to 8,
//! which the caller stores at `[rsp+0x20]`..`[rsp+0x38]`), either
//! "unknown" or a small set of sources (an immediate operand, a qword
//! loaded from a RIP-relative address, a qword loaded through such a
//! qword: a function table's entry). Moves copy (a `mov` of 4 or 8
//! bytes into a slot stores there; any other write that may touch a slot,
//! a call, or a change of RSP forgets it),
//! `cmovcc` joins its two operands (a tag chosen at run time between two
//! immediates reaches the call as both), joins at block entries union the
//! sets, anything else that writes a register forgets it, and a call
//! forgets the volatile registers (RAX, RCX, RDX, R8-R11). The sets are
//! bounded, so the fixpoint is reached; a set that would grow past
//! [`MAX_VALUES`] becomes unknown.
//!
//! iced-x86 decodes, and its instruction-info tables say which registers an
//! instruction writes, so an instruction this module does not model is
//! handled conservatively (its destinations become unknown) rather than
//! ignored. Written by hand because no crate does value-set analysis of
//! x64 code at this scale; it is a few hundred lines over iced's tables.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};

/// Values a register may hold at most before it counts as unknown.
pub const MAX_VALUES: usize = 4;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Src {
    /// An immediate operand: the value as the register holds it, the
    /// instruction, and the address of the operand's four low bytes when
    /// they can be patched (a 32- or 64-bit immediate, not a sign-extended
    /// imm8 nor a value an `xor` made).
    Imm {
        value: u64,
        insn: u64,
        imm: Option<u64>,
    },
    /// A qword loaded from `[rip+disp]` (an import address table slot).
    Load { slot: u64 },
    /// A qword loaded from `[reg+offset]` where `reg` held the qword of
    /// `slot`: an entry of a function table a global points at (KMDF's
    /// `WdfFunctions`).
    Field { slot: u64, offset: u64 },
    /// The address `lea reg, [rip+disp]` computed: a global's (KMDF's
    /// `&WdfDriverGlobals`, passed to `WdfVersionBind`).
    Addr { va: u64 },
}

/// What a register holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Unknown,
    /// One of these (sorted, at most [`MAX_VALUES`]).
    Set(Vec<Src>),
}

impl Val {
    fn one(s: Src) -> Self {
        Val::Set(vec![s])
    }

    fn join(&self, o: &Val) -> Val {
        match (self, o) {
            (Val::Set(a), Val::Set(b)) => {
                let mut v: Vec<Src> = a.iter().chain(b).copied().collect();
                v.sort();
                v.dedup();
                if v.len() > MAX_VALUES {
                    Val::Unknown
                } else {
                    Val::Set(v)
                }
            }
            _ => Val::Unknown,
        }
    }

    /// The value after a 32-bit write of it (upper half zeroed): immediates
    /// truncated, pointers lost.
    fn truncated(&self) -> Val {
        match self {
            Val::Set(v) => {
                let mut out = Vec::with_capacity(v.len());
                for s in v {
                    match *s {
                        Src::Imm { value, insn, imm } => out.push(Src::Imm {
                            value: value & 0xFFFF_FFFF,
                            insn,
                            imm,
                        }),
                        Src::Load { .. } | Src::Field { .. } | Src::Addr { .. } => {
                            return Val::Unknown;
                        }
                    }
                }
                out.sort();
                out.dedup();
                Val::Set(out)
            }
            Val::Unknown => Val::Unknown,
        }
    }
}

/// The sixteen general-purpose registers, by number (RAX=0 .. R15=15),
/// then the caller's stores of arguments 5 to 8 ([`stack_arg`]).
pub type State = [Val; 20];

/// Where the x64 calling convention puts arguments 5 to 8: the caller
/// stores them at `[rsp+0x20]` to `[rsp+0x38]` (above the 32-byte home
/// area) before the call.
pub const STACK_ARGS: std::ops::RangeInclusive<u8> = 5..=8;

/// The [`State`] index of stack argument `arg` (5 to 8).
pub fn stack_arg(arg: u8) -> Option<usize> {
    STACK_ARGS.contains(&arg).then(|| 16 + usize::from(arg - 5))
}

/// The stack argument stored at `[rsp+disp]`, when `disp` is one's slot.
fn stack_slot(disp: u64) -> Option<usize> {
    (0x20..0x40)
        .contains(&disp)
        .then_some(disp)
        .filter(|d| d % 8 == 0)
        .map(|d| 16 + (d as usize - 0x20) / 8)
}

fn unknown_state() -> State {
    std::array::from_fn(|_| Val::Unknown)
}

/// The register number of a general-purpose register of any width.
pub fn gpr(r: Register) -> Option<usize> {
    let f = r.full_register();
    f.is_gpr64().then(|| f.number())
}

/// RAX, RCX, RDX, R8, R9, R10, R11: what a call may change.
const VOLATILE: [usize; 7] = [0, 1, 2, 8, 9, 10, 11];

/// A decoded instruction and where its patchable immediate is.
#[derive(Debug, Clone)]
pub struct Insn {
    pub ins: Instruction,
    /// VA of a 4- or 8-byte immediate operand.
    pub imm: Option<u64>,
}

/// Decode `bytes` (at `va`) linearly; an undecodable byte is skipped.
pub fn decode_linear(va: u64, bytes: &[u8]) -> Vec<Insn> {
    let mut d = Decoder::with_ip(64, bytes, va, DecoderOptions::NONE);
    let mut out = Vec::new();
    while d.can_decode() {
        let at = d.position();
        let i = d.decode();
        if i.is_invalid() {
            // Resynchronise one byte on.
            let _ = d.set_position(at + 1);
            d.set_ip(va + at as u64 + 1);
            continue;
        }
        let co = d.get_constant_offsets(&i);
        let imm = (co.has_immediate() && matches!(co.immediate_size(), 4 | 8))
            .then(|| i.ip() + co.immediate_offset() as u64);
        out.push(Insn { ins: i, imm });
    }
    out
}

/// Every direct call target in `bytes` (at `va`), decoded linearly without
/// keeping the instructions (a whole code section at a time).
pub fn direct_call_targets(va: u64, bytes: &[u8], mut f: impl FnMut(u64)) {
    let mut d = Decoder::with_ip(64, bytes, va, DecoderOptions::NONE);
    let mut i = Instruction::default();
    while d.can_decode() {
        let at = d.position();
        d.decode_out(&mut i);
        if i.is_invalid() {
            let _ = d.set_position(at + 1);
            d.set_ip(va + at as u64 + 1);
            continue;
        }
        if i.flow_control() == FlowControl::Call && i.op0_kind() == OpKind::NearBranch64 {
            f(i.near_branch_target());
        }
    }
}

/// One call (or a jump that leaves the code) and the registers before it.
#[derive(Debug, Clone)]
pub struct CallPoint {
    /// Index into the decoded instructions.
    pub index: usize,
    pub state: State,
    /// The instruction starts a block no known edge reaches (the code's
    /// first instruction, or one after padding): a linker thunk's `jmp`
    /// is such an instruction, a function's tail call is not.
    pub unreached: bool,
}

/// Run the data-flow over `code` (one function or region, decoded in
/// address order) and return the state before every call, every indirect
/// jump and every direct jump that leaves `code`.
pub fn analyze(code: &[Insn]) -> Vec<CallPoint> {
    if code.is_empty() {
        return Vec::new();
    }
    let cfg = Cfg::new(code);
    let mut factory = InstructionInfoFactory::new();
    match cfg.entry_states(code, &mut factory) {
        Some(entry) => cfg.call_points(code, &entry, &mut factory),
        // Should not happen (the lattice is finite); give up safely.
        None => Vec::new(),
    }
}

/// The basic blocks of a region and their edges.
struct Cfg {
    /// The region's address range (a jump outside it leaves it).
    range: std::ops::Range<u64>,
    /// Each block's instructions, as `code[lo..hi]`.
    bounds: Vec<(usize, usize)>,
    succs: Vec<Vec<usize>>,
    has_pred: Vec<bool>,
}

impl Cfg {
    fn new(code: &[Insn]) -> Self {
        let start = code[0].ins.ip();
        let end = code.last().map_or(start, |i| i.ins.next_ip());
        let index: HashMap<u64, usize> = code
            .iter()
            .enumerate()
            .map(|(k, i)| (i.ins.ip(), k))
            .collect();
        let near_branch = |i: &Instruction| {
            matches!(
                i.flow_control(),
                FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
            ) && is_near(i)
        };
        // Leaders: the start, branch targets inside, what follows a transfer.
        let mut leaders: BTreeSet<usize> = BTreeSet::from([0]);
        for (k, i) in code.iter().enumerate() {
            if near_branch(&i.ins)
                && let Some(&t) = index.get(&i.ins.near_branch_target())
            {
                leaders.insert(t);
            }
            if ends_block(i.ins.flow_control()) && k + 1 < code.len() {
                leaders.insert(k + 1);
            }
        }
        let leaders: Vec<usize> = leaders.into_iter().collect();
        let block_of: BTreeMap<usize, usize> =
            leaders.iter().enumerate().map(|(b, &k)| (k, b)).collect();
        let bounds: Vec<(usize, usize)> = leaders
            .iter()
            .enumerate()
            .map(|(b, &k)| (k, leaders.get(b + 1).copied().unwrap_or(code.len())))
            .collect();
        let mut succs: Vec<Vec<usize>> = vec![Vec::new(); bounds.len()];
        let mut has_pred = vec![false; bounds.len()];
        for (b, &(_, hi)) in bounds.iter().enumerate() {
            let last = &code[hi - 1].ins;
            let fc = last.flow_control();
            let mut add = |k: usize| {
                if let Some(&s) = block_of.get(&k) {
                    succs[b].push(s);
                    has_pred[s] = true;
                }
            };
            if near_branch(last) {
                let t = last.near_branch_target();
                if (start..end).contains(&t)
                    && let Some(&k) = index.get(&t)
                {
                    add(k);
                }
            }
            if !ends_block(fc) || fc == FlowControl::ConditionalBranch {
                add(hi);
            }
        }
        Cfg {
            range: start..end,
            bounds,
            succs,
            has_pred,
        }
    }

    /// Every block's entry state, joined to a fixed point; `None` if the
    /// work budget runs out.
    fn entry_states(
        &self,
        code: &[Insn],
        factory: &mut InstructionInfoFactory,
    ) -> Option<Vec<Option<State>>> {
        let n = self.bounds.len();
        // Entry states: a block no edge reaches (the start, code after a
        // jump table's indirect jump) starts with nothing known.
        let mut entry: Vec<Option<State>> = vec![None; n];
        let mut work: Vec<usize> = Vec::new();
        for b in (0..n).filter(|&b| b == 0 || !self.has_pred[b]) {
            entry[b] = Some(unknown_state());
            work.push(b);
        }
        let mut budget = 64 * n + 64;
        while let Some(b) = work.pop() {
            budget = budget.checked_sub(1)?;
            let Some(mut st) = entry[b].clone() else {
                continue;
            };
            let (lo, hi) = self.bounds[b];
            for i in &code[lo..hi] {
                step(&mut st, i, factory);
            }
            for &s in &self.succs[b] {
                let joined = match &entry[s] {
                    None => st.clone(),
                    Some(old) => std::array::from_fn(|r| old[r].join(&st[r])),
                };
                if entry[s].as_ref() != Some(&joined) {
                    entry[s] = Some(joined);
                    if !work.contains(&s) {
                        work.push(s);
                    }
                }
            }
        }
        Some(entry)
    }

    /// Replay each block once more to see the state before each call,
    /// indirect jump and jump out of the region.
    fn call_points(
        &self,
        code: &[Insn],
        entry: &[Option<State>],
        factory: &mut InstructionInfoFactory,
    ) -> Vec<CallPoint> {
        let mut out = Vec::new();
        for (b, &(lo, hi)) in self.bounds.iter().enumerate() {
            let Some(mut st) = entry[b].clone() else {
                continue;
            };
            for (k, i) in code.iter().enumerate().take(hi).skip(lo) {
                let leaves = match i.ins.flow_control() {
                    FlowControl::Call | FlowControl::IndirectCall | FlowControl::IndirectBranch => {
                        true
                    }
                    FlowControl::UnconditionalBranch => {
                        is_near(&i.ins) && !self.range.contains(&i.ins.near_branch_target())
                    }
                    _ => false,
                };
                if leaves {
                    out.push(CallPoint {
                        index: k,
                        state: st.clone(),
                        unreached: k == lo && !self.has_pred[b],
                    });
                }
                step(&mut st, i, factory);
            }
        }
        out.sort_by_key(|c| c.index);
        out
    }
}

fn is_near(i: &Instruction) -> bool {
    matches!(
        i.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    )
}

/// Control does not simply fall through after this.
fn ends_block(fc: FlowControl) -> bool {
    matches!(
        fc,
        FlowControl::ConditionalBranch
            | FlowControl::UnconditionalBranch
            | FlowControl::IndirectBranch
            | FlowControl::Return
            | FlowControl::Interrupt
            | FlowControl::Exception
    )
}

fn is_cmov(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Cmova
            | Mnemonic::Cmovae
            | Mnemonic::Cmovb
            | Mnemonic::Cmovbe
            | Mnemonic::Cmove
            | Mnemonic::Cmovg
            | Mnemonic::Cmovge
            | Mnemonic::Cmovl
            | Mnemonic::Cmovle
            | Mnemonic::Cmovne
            | Mnemonic::Cmovno
            | Mnemonic::Cmovnp
            | Mnemonic::Cmovns
            | Mnemonic::Cmovo
            | Mnemonic::Cmovp
            | Mnemonic::Cmovs
    )
}

/// The state after instruction `i`.
/// What a `mov` of `size` bytes writes to its register: an immediate, a
/// register's value, a load from a RIP-relative slot, or unknown.
fn mov_source(st: &State, i: &Insn, src_reg: Option<usize>, size: usize) -> Val {
    let ins = &i.ins;
    match ins.op1_kind() {
        OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate32to64
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64 => {
            let v = ins.immediate(1);
            Val::one(Src::Imm {
                value: if size == 4 { v & 0xFFFF_FFFF } else { v },
                insn: ins.ip(),
                imm: i.imm,
            })
        }
        OpKind::Register => match src_reg {
            Some(s) if size == 4 => st[s].truncated(),
            Some(s) => st[s].clone(),
            None => Val::Unknown,
        },
        OpKind::Memory
            if size == 8
                && ins.memory_base() == Register::RIP
                && ins.memory_index() == Register::None =>
        {
            Val::one(Src::Load {
                slot: ins.memory_displacement64(),
            })
        }
        OpKind::Memory if size == 8 => table_entry(
            st,
            ins.memory_base(),
            ins.memory_index(),
            ins.memory_displacement64(),
        ),
        _ => Val::Unknown,
    }
}

/// The qword at `[base+disp]` (no index) when `base` holds a global's
/// qword: each global's entry at `disp`.
pub fn table_entry(st: &State, base: Register, index: Register, disp: u64) -> Val {
    let Some(b) = gpr(base).filter(|_| index == Register::None && base != Register::RSP) else {
        return Val::Unknown;
    };
    match &st[b] {
        Val::Set(v) => v
            .iter()
            .map(|s| match *s {
                Src::Load { slot } => Some(Src::Field { slot, offset: disp }),
                _ => None,
            })
            .collect::<Option<Vec<Src>>>()
            .map_or(Val::Unknown, Val::Set),
        Val::Unknown => Val::Unknown,
    }
}

pub fn step(st: &mut State, i: &Insn, factory: &mut InstructionInfoFactory) {
    let ins = &i.ins;
    let m = ins.mnemonic();
    // The destination register, if op0 is one of at least 32 bits.
    let dst = (ins.op_count() > 0 && ins.op0_kind() == OpKind::Register)
        .then(|| ins.op0_register())
        .filter(|r| r.size() >= 4)
        .and_then(|r| gpr(r).map(|n| (n, r.size())));
    let src_reg = (ins.op_count() > 1 && ins.op1_kind() == OpKind::Register)
        .then(|| ins.op1_register())
        .and_then(gpr);
    let fit = |v: Val, size: usize| if size == 4 { v.truncated() } else { v };
    let info = factory.info(ins);
    // Memory writes: a stack argument stored, or stores forgotten.
    if info.used_memory().iter().any(|u| writes(u.access())) {
        store(st, i, src_reg);
    }
    let modelled: Option<(usize, Val)> = match (m, dst) {
        (Mnemonic::Mov, Some((d, size))) => Some((d, mov_source(st, i, src_reg, size))),
        (Mnemonic::Lea, Some((d, 8)))
            if ins.memory_base() == Register::RIP && ins.memory_index() == Register::None =>
        {
            Some((
                d,
                Val::one(Src::Addr {
                    va: ins.memory_displacement64(),
                }),
            ))
        }
        (m, Some((d, size))) if is_cmov(m) => Some((
            d,
            match src_reg {
                // The condition may or may not hold: either value. (A
                // 32-bit cmov zeroes the upper half either way.)
                Some(s) => fit(st[d].join(&st[s]), size),
                None => Val::Unknown,
            },
        )),
        (Mnemonic::Xor | Mnemonic::Sub, Some((d, _))) if src_reg == Some(d) => Some((
            d,
            Val::one(Src::Imm {
                value: 0,
                insn: ins.ip(),
                imm: None,
            }),
        )),
        (Mnemonic::Xchg, Some((d, size))) => {
            if let Some(s) = src_reg {
                let (a, b) = (st[d].clone(), st[s].clone());
                st[d] = fit(b, size);
                st[s] = fit(a, size);
                return;
            }
            None
        }
        _ => None,
    };
    // Everything else the instruction writes is forgotten.
    for u in info.used_registers() {
        if writes(u.access())
            && let Some(n) = gpr(u.register())
            && modelled.as_ref().is_none_or(|(d, _)| *d != n)
        {
            st[n] = Val::Unknown;
        }
    }
    // A call may change its arguments (they are the callee's), and a new
    // RSP moves the slots: the stores are forgotten.
    let moves_rsp = info
        .used_registers()
        .iter()
        .any(|u| u.register() == Register::RSP && writes(u.access()));
    if moves_rsp
        || matches!(
            ins.flow_control(),
            FlowControl::Call | FlowControl::IndirectCall
        )
    {
        forget_stack_args(st);
    }
    if matches!(
        ins.flow_control(),
        FlowControl::Call | FlowControl::IndirectCall
    ) {
        for r in VOLATILE {
            st[r] = Val::Unknown;
        }
    }
    if let Some((d, v)) = modelled {
        st[d] = v;
    }
}

/// An access that may write (a conditional write may).
fn writes(a: OpAccess) -> bool {
    matches!(
        a,
        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    )
}

fn forget_stack_args(st: &mut State) {
    for v in &mut st[16..] {
        *v = Val::Unknown;
    }
}

/// A write to memory by `i`: a `mov` of 4 or 8 bytes to a stack
/// argument's slot stores its value there; any other write through RSP
/// forgets the slots it touches, and a write through any other pointer
/// (which may point at the stack) forgets them all.
fn store(st: &mut State, i: &Insn, src_reg: Option<usize>) {
    let ins = &i.ins;
    let through_rsp = ins.memory_base() == Register::RSP && ins.memory_index() == Register::None;
    if !through_rsp {
        forget_stack_args(st);
        return;
    }
    let disp = ins.memory_displacement64();
    let size = ins.memory_size().size() as u64;
    let slot = stack_slot(disp);
    if ins.mnemonic() == Mnemonic::Mov
        && ins.op_count() == 2
        && ins.op0_kind() == OpKind::Memory
        && matches!(size, 4 | 8)
        && let Some(k) = slot
    {
        // What a `mov` to a register of that size would hold.
        st[k] = mov_source(st, i, src_reg, size as usize);
        return;
    }
    // Any other write through RSP: the slots it overlaps.
    let end = disp.wrapping_add(size.max(1));
    for (k, v) in st[16..].iter_mut().enumerate() {
        let lo = 0x20 + 8 * k as u64;
        if disp < lo + 8 && lo < end {
            *v = Val::Unknown;
        }
    }
}

#[cfg(test)]
mod tests;
