//! What a caller's code says about one call: the `call` instruction that a
//! return address follows, where it goes (an import, through the IAT or a
//! linker thunk), and what it put in an argument register.
//!
//! The function's code is decoded with iced-x86 from its RUNTIME_FUNCTION
//! start to the return address (and on to its end for branch targets); a
//! value is recovered only when the instruction that wrote the register
//! reaches the call on every path (no branch target and no other call
//! between them). An argument register the function never wrote before
//! holds what it was entered with, which its caller's code may tell
//! (a wrapper's `lea rdx, [r8+28h]` of the size it was passed).

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

use crate::stack::{Frame, Reg};

/// A function longer than this is not decoded (a hostile RUNTIME_FUNCTION).
pub const MAX_FUNCTION_BYTES: u32 = 0x1_0000;

/// The call instruction a return address follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// Address of the `call`.
    pub va: u64,
    /// Where the call goes.
    pub target: CallTarget,
}

/// Where a `call` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallTarget {
    /// `call qword ptr [rip+disp]`: through the pointer at this address.
    Indirect(u64),
    /// `call rel32`.
    Direct(u64),
    /// `call reg` or anything else.
    Unknown,
}

/// Decoded code of one function, up to a return address.
pub struct Code {
    /// Where the function starts.
    start: u64,
    /// Instructions from the function's start to the `call` (inclusive).
    ins: Vec<Instruction>,
    /// Every direct branch in the function, as (its address, its target),
    /// after the call too: a loop may jump back.
    targets: Vec<(u64, u64)>,
}

impl Code {
    /// Decode `bytes` (the function's code from `start`) up to `ret`. None
    /// unless an instruction ends exactly at `ret` and is a call.
    pub fn decode(start: u64, bytes: &[u8], ret: u64) -> Option<Self> {
        let mut d = Decoder::with_ip(64, bytes, start, DecoderOptions::NONE);
        let mut ins = Vec::new();
        let mut targets = Vec::new();
        let branch = |i: &Instruction| {
            matches!(
                i.op0_kind(),
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
            )
            .then(|| (i.ip(), i.near_branch_target()))
        };
        while d.can_decode() {
            let i = d.decode();
            if i.is_invalid() || i.ip() >= ret {
                return None;
            }
            targets.extend(branch(&i));
            ins.push(i);
            if i.next_ip() == ret {
                if i.mnemonic() != Mnemonic::Call {
                    return None;
                }
                // The rest of the function, for its branch targets, up to
                // what does not decode.
                while d.can_decode() {
                    let i = d.decode();
                    if i.is_invalid() {
                        break;
                    }
                    targets.extend(branch(&i));
                }
                return Some(Self {
                    start,
                    ins,
                    targets,
                });
            }
        }
        None
    }

    /// Where the function starts (its RUNTIME_FUNCTION's BeginAddress).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The `call` the code ends with, and where it goes.
    pub fn call(&self) -> Call {
        let c = self.ins.last().expect("decode ends with the call");
        let target = match c.op0_kind() {
            OpKind::NearBranch64 => CallTarget::Direct(c.near_branch_target()),
            OpKind::Memory if c.memory_base() == Register::RIP => {
                CallTarget::Indirect(c.memory_displacement64())
            }
            _ => CallTarget::Unknown,
        };
        Call { va: c.ip(), target }
    }

    /// The value the function put in `reg` (a full 64- or 32-bit write)
    /// for the call, using the caller's frame for callee-saved registers
    /// and stack slots. `read` reads a u64 of memory; `entry` tells what
    /// an argument register (RCX, RDX, R8, R9) held when the function was
    /// entered, where known.
    pub fn value_at_call(
        &self,
        reg: Register,
        frame: &Frame,
        read: &mut dyn FnMut(u64) -> Option<u64>,
        entry: &mut dyn FnMut(Register) -> Option<u64>,
    ) -> Option<u64> {
        let call = self.ins.len() - 1;
        let mut c = Ctx { frame, read, entry };
        self.value_before(reg.full_register(), call, &mut c, 3)
    }

    /// Does a branch from outside `from..to` land in `from..=to` (so that
    /// the code there is reached other than straight from `from`)? A
    /// branch inside the range that skips forward within it does not
    /// count: whatever `from` starts with holds on both paths.
    fn enters(&self, from: u64, to: u64) -> bool {
        self.targets
            .iter()
            .any(|&(src, t)| (from..=to).contains(&t) && !(from..to).contains(&src))
    }

    /// `reg` still holds its entry value at instruction `at`: an argument
    /// register, no call before `at` (which would clobber it), and no
    /// branch into the code before `at` (so only the entry leads there).
    fn entry_value_reaches(&self, reg: Register, at: usize) -> bool {
        let to = self.ins[at].ip();
        matches!(
            reg,
            Register::RCX | Register::RDX | Register::R8 | Register::R9
        ) && !self.ins[..at]
            .iter()
            .any(|i| i.mnemonic() == Mnemonic::Call)
            && !self.enters(self.start, to)
    }

    /// The value of `reg` (a full 64-bit register) just before
    /// instruction `at`, following at most `depth` register moves.
    fn value_before(&self, reg: Register, at: usize, c: &mut Ctx, depth: u32) -> Option<u64> {
        if depth == 0 {
            return None;
        }
        // A callee-saved register nothing in this function wrote before
        // `at` holds what the unwinder recovered for the frame; an argument
        // register, what the function was entered with.
        let Some(def) = (0..at).rev().find(|&i| writes(&self.ins[i], reg)) else {
            if let Some(r) = nonvolatile(reg) {
                return c.frame.nonvolatile.get(r);
            }
            return self
                .entry_value_reaches(reg, at)
                .then(|| (c.entry)(reg))
                .flatten();
        };
        // The definition must reach: no branch lands after it, no call
        // between it and `at` (a call clobbers the volatile registers; a
        // callee-saved one survives, but keep it simple and exact).
        let (from, to) = (self.ins[def].next_ip(), self.ins[at].ip());
        if from <= to && self.enters(from, to) {
            return None;
        }
        if self.ins[def + 1..at]
            .iter()
            .any(|i| i.mnemonic() == Mnemonic::Call)
            && nonvolatile(reg).is_none()
        {
            return None;
        }
        let i = &self.ins[def];
        let size = i.op0_register().size();
        if size < 4 {
            return None;
        }
        let trunc = |v: u64| if size == 4 { v & 0xFFFF_FFFF } else { v };
        match i.mnemonic() {
            Mnemonic::Mov if i.op_count() == 2 => match i.op1_kind() {
                OpKind::Immediate32
                | OpKind::Immediate64
                | OpKind::Immediate32to64
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64 => Some(trunc(i.immediate(1))),
                OpKind::Register => self
                    .value_before(i.op1_register().full_register(), def, c, depth - 1)
                    .map(trunc),
                OpKind::Memory => {
                    let ea = self.address(i, def, c, depth - 1)?;
                    (c.read)(ea).map(trunc)
                }
                _ => None,
            },
            Mnemonic::Xor
                if i.op1_kind() == OpKind::Register && i.op1_register().full_register() == reg =>
            {
                Some(0)
            }
            Mnemonic::Lea => self.address(i, def, c, depth - 1).map(trunc),
            _ => None,
        }
    }

    /// The effective address of `i`'s memory operand, if its registers are
    /// known at instruction `at`. RSP at the call site is the frame's
    /// Child-SP (no push or sub may change it in between).
    fn address(&self, i: &Instruction, at: usize, c: &mut Ctx, depth: u32) -> Option<u64> {
        let base = i.memory_base();
        if i.memory_index() != Register::None || i.segment_prefix() != Register::None {
            return None;
        }
        let b = match base {
            Register::RIP => return Some(i.memory_displacement64()),
            Register::RSP => {
                // RSP is the frame's Child-SP only if nothing after `at`
                // (up to the call) moves it.
                let call = self.ins.len() - 1;
                if self.ins[at..call].iter().any(moves_rsp) {
                    return None;
                }
                c.frame.child_sp.0
            }
            Register::None => 0,
            r => self.value_before(r.full_register(), at, c, depth)?,
        };
        Some(b.wrapping_add(i.memory_displacement64()))
    }
}

/// What a value is recovered from: the caller's frame, memory, and the
/// argument registers' entry values.
struct Ctx<'a, 'b> {
    frame: &'a Frame,
    read: &'b mut dyn FnMut(u64) -> Option<u64>,
    entry: &'b mut dyn FnMut(Register) -> Option<u64>,
}

fn nonvolatile(r: Register) -> Option<Reg> {
    Some(match r {
        Register::RBX => Reg::Rbx,
        Register::RBP => Reg::Rbp,
        Register::RSI => Reg::Rsi,
        Register::RDI => Reg::Rdi,
        Register::R12 => Reg::R12,
        Register::R13 => Reg::R13,
        Register::R14 => Reg::R14,
        Register::R15 => Reg::R15,
        _ => return None,
    })
}

/// Does `i` write (any part of) the full register `reg`?
fn writes(i: &Instruction, reg: Register) -> bool {
    let explicit = i.op_count() > 0
        && i.op0_kind() == OpKind::Register
        && i.op0_register().full_register() == reg
        && !matches!(
            i.mnemonic(),
            Mnemonic::Cmp | Mnemonic::Test | Mnemonic::Push | Mnemonic::Bt
        );
    let implicit = match i.mnemonic() {
        Mnemonic::Cdq | Mnemonic::Cqo | Mnemonic::Mul | Mnemonic::Div | Mnemonic::Idiv => {
            reg == Register::RDX || reg == Register::RAX
        }
        Mnemonic::Cdqe | Mnemonic::Cwde => reg == Register::RAX,
        Mnemonic::Xchg => {
            i.op1_kind() == OpKind::Register && i.op1_register().full_register() == reg
        }
        Mnemonic::Pop => false,
        _ => false,
    };
    explicit
        || implicit
        || (i.mnemonic() == Mnemonic::Pop && i.op0_register().full_register() == reg)
}

fn moves_rsp(i: &Instruction) -> bool {
    matches!(
        i.mnemonic(),
        Mnemonic::Push | Mnemonic::Pop | Mnemonic::Call
    ) || writes(i, Register::RSP)
}

/// Decode one instruction at `va` from `bytes` (a thunk: `jmp [rip+x]`).
pub fn thunk_slot(va: u64, bytes: &[u8]) -> Option<u64> {
    let mut d = Decoder::with_ip(64, bytes, va, DecoderOptions::NONE);
    let i = d.decode();
    (i.mnemonic() == Mnemonic::Jmp
        && i.op0_kind() == OpKind::Memory
        && i.memory_base() == Register::RIP)
        .then(|| i.memory_displacement64())
}
