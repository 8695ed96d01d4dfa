//! An x86-64 interpreter for the simulated target: it runs the drivers' and
//! nt's compiled code (clang-19, `-O1`) instruction by instruction over the
//! machine's memory, through its page tables.
//!
//! Written by hand because no permissively licensed emulator crate runs
//! guest code over a caller's page tables (Unicorn, the usual choice, is
//! GPL-2.0 and a C build); decoding is iced-x86's, so only execution is
//! ours. It covers the general-purpose integer instructions a C compiler
//! emits for kernel code (moves, arithmetic and logic with the flags they
//! set, shifts, multiplies, divides, conditional moves and sets, calls,
//! jumps, push/pop, string stores) and SSE register moves. Anything else
//! stops the CPU with [`Exit::Invalid`], naming the instruction: a test
//! fails loudly rather than running the wrong code.
//!
//! The CPU also keeps a *shadow stack*: every `call` and trap records where
//! its return address went. That is the ground truth a stack walker is
//! checked against; it is never read from memory, so a wrong unwinder
//! cannot agree with it by accident.

use iced_x86::{
    ConditionCode, Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, Mnemonic,
    OpKind, Register,
};

/// Flag bits of RFLAGS this interpreter maintains.
pub const CF: u64 = 1 << 0;
pub const PF: u64 = 1 << 2;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const IF: u64 = 1 << 9;
pub const DF: u64 = 1 << 10;
pub const OF: u64 = 1 << 11;
const ARITH: u64 = CF | PF | ZF | SF | OF | (1 << 4);

/// Kernel selectors (Windows x64): code 0x10, stack/data 0x18 and 0x2B.
pub const KGDT64_R0_CODE: u64 = 0x10;
pub const KGDT64_R0_DATA: u64 = 0x18;

/// Why a memory access failed: the address and what the CPU was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub va: u64,
    pub write: bool,
    pub fetch: bool,
}

/// What the CPU's memory looks like: virtual reads and writes that fail as
/// a page fault would.
pub trait Bus {
    fn read(&mut self, va: u64, out: &mut [u8], fetch: bool) -> Result<(), Fault>;
    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), Fault>;
}

/// Why the CPU stopped. After `Breakpoint` the RIP is still at the int3
/// (as after a real #BP the kernel reports the int3's address); the others
/// leave RIP at the instruction that stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// An `int3`.
    Breakpoint,
    /// RIP reached a routine the simulator performs (nt's HOST stubs).
    Host(u64),
    /// A page fault, not yet delivered.
    PageFault(Fault),
    /// RIP reached the sentinel return address: the work item is done.
    Returned,
    /// `hlt`, `ud2` or an instruction the interpreter does not run.
    Invalid { rip: u64, text: String },
}

/// One return address the CPU pushed: by a `call`, or the interrupted RIP
/// of a trap frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowFrame {
    /// Address of the `call` instruction (or the faulting instruction).
    pub site: u64,
    /// Where execution resumes (the return address, or the faulting RIP).
    pub resume: u64,
    /// RSP right after the return address was pushed (for a trap: the
    /// interrupted code's RSP).
    pub slot: u64,
    pub trap: bool,
}

/// Register file of one processor.
#[derive(Debug, Clone, PartialEq)]
pub struct Regs {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15 (the encoding order).
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub xmm: [u128; 16],
    pub cr2: u64,
    pub gs_base: u64,
}

pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RBX: usize = 3;
pub const RSP: usize = 4;
pub const RBP: usize = 5;
pub const RSI: usize = 6;
pub const RDI: usize = 7;
pub const R8: usize = 8;
pub const R9: usize = 9;

impl Default for Regs {
    fn default() -> Self {
        Self {
            gpr: [0; 16],
            rip: 0,
            rflags: 0x202,
            xmm: [0; 16],
            cr2: 0,
            gs_base: 0,
        }
    }
}

/// A processor: registers, the shadow stack, and the decoded-instruction
/// cache.
#[derive(Debug, Clone)]
pub struct Cpu {
    pub regs: Regs,
    pub shadow: Vec<ShadowFrame>,
    /// Instructions executed since creation.
    pub retired: u64,
    cache: std::collections::HashMap<u64, Instruction>,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new()
    }
}

fn gpr_index(r: Register) -> Option<(usize, u32, bool)> {
    // (index, size in bytes, high byte)
    use Register as R;
    let high = matches!(r, R::AH | R::CH | R::DH | R::BH);
    let idx = match r.full_register() {
        R::RAX => 0,
        R::RCX => 1,
        R::RDX => 2,
        R::RBX => 3,
        R::RSP => 4,
        R::RBP => 5,
        R::RSI => 6,
        R::RDI => 7,
        R::R8 => 8,
        R::R9 => 9,
        R::R10 => 10,
        R::R11 => 11,
        R::R12 => 12,
        R::R13 => 13,
        R::R14 => 14,
        R::R15 => 15,
        _ => return None,
    };
    Some((idx, r.size() as u32, high))
}

fn is_cmovcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Cmova
            | Cmovae
            | Cmovb
            | Cmovbe
            | Cmove
            | Cmovg
            | Cmovge
            | Cmovl
            | Cmovle
            | Cmovne
            | Cmovno
            | Cmovnp
            | Cmovns
            | Cmovo
            | Cmovp
            | Cmovs
    )
}

fn is_setcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Seta | Setae
            | Setb
            | Setbe
            | Sete
            | Setg
            | Setge
            | Setl
            | Setle
            | Setne
            | Setno
            | Setnp
            | Setns
            | Seto
            | Setp
            | Sets
    )
}

fn mask(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

fn sign_bit(size: u32) -> u64 {
    1u64 << (size * 8 - 1)
}

fn sext(v: u64, size: u32) -> i64 {
    let bits = size * 8;
    if bits >= 64 {
        v as i64
    } else {
        ((v << (64 - bits)) as i64) >> (64 - bits)
    }
}

fn parity(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

/// Result flags of a logic operation (CF = OF = 0).
fn logic_flags(r: u64, size: u32) -> u64 {
    let r = r & mask(size);
    let mut f = 0;
    if r == 0 {
        f |= ZF;
    }
    if r & sign_bit(size) != 0 {
        f |= SF;
    }
    if parity(r) {
        f |= PF;
    }
    f
}

fn add_flags(a: u64, b: u64, carry: u64, size: u32) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let wide = a as u128 + b as u128 + carry as u128;
    let r = (wide as u64) & m;
    let mut f = logic_flags(r, size);
    if wide > m as u128 {
        f |= CF;
    }
    let s = sign_bit(size);
    if (a ^ r) & (b ^ r) & s != 0 {
        f |= OF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= 1 << 4;
    }
    (r, f)
}

fn sub_flags(a: u64, b: u64, borrow: u64, size: u32) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let r = a.wrapping_sub(b).wrapping_sub(borrow) & m;
    let mut f = logic_flags(r, size);
    if (b as u128 + borrow as u128) > a as u128 {
        f |= CF;
    }
    let s = sign_bit(size);
    if (a ^ b) & (a ^ r) & s != 0 {
        f |= OF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= 1 << 4;
    }
    (r, f)
}

impl Cpu {
    pub fn new() -> Self {
        Self {
            regs: Regs::default(),
            shadow: Vec::new(),
            retired: 0,
            cache: Default::default(),
        }
    }

    /// Forget decoded instructions (code bytes may have changed: a
    /// debugger wrote memory).
    pub fn flush_code_cache(&mut self) {
        self.cache.clear();
    }

    fn flag(&self, f: u64) -> bool {
        self.regs.rflags & f != 0
    }

    fn set_arith_flags(&mut self, f: u64) {
        self.regs.rflags = (self.regs.rflags & !ARITH) | f;
    }

    fn condition(&self, cc: ConditionCode) -> bool {
        let (cf, zf, sf, of, pf) = (
            self.flag(CF),
            self.flag(ZF),
            self.flag(SF),
            self.flag(OF),
            self.flag(PF),
        );
        match cc {
            ConditionCode::o => of,
            ConditionCode::no => !of,
            ConditionCode::b => cf,
            ConditionCode::ae => !cf,
            ConditionCode::e => zf,
            ConditionCode::ne => !zf,
            ConditionCode::be => cf || zf,
            ConditionCode::a => !cf && !zf,
            ConditionCode::s => sf,
            ConditionCode::ns => !sf,
            ConditionCode::p => pf,
            ConditionCode::np => !pf,
            ConditionCode::l => sf != of,
            ConditionCode::ge => sf == of,
            ConditionCode::le => zf || sf != of,
            ConditionCode::g => !zf && sf == of,
            ConditionCode::None => true,
        }
    }

    pub fn reg(&self, r: Register) -> u64 {
        if r == Register::RIP {
            return self.regs.rip;
        }
        match gpr_index(r) {
            Some((i, size, high)) => {
                let v = self.regs.gpr[i];
                if high {
                    (v >> 8) & 0xFF
                } else {
                    v & mask(size)
                }
            }
            None => 0,
        }
    }

    pub fn set_reg(&mut self, r: Register, v: u64) {
        if let Some((i, size, high)) = gpr_index(r) {
            let cur = self.regs.gpr[i];
            self.regs.gpr[i] = match (size, high) {
                (1, true) => (cur & !0xFF00) | ((v & 0xFF) << 8),
                (1, false) => (cur & !0xFF) | (v & 0xFF),
                (2, _) => (cur & !0xFFFF) | (v & 0xFFFF),
                // A 32-bit write zero-extends into the full register.
                (4, _) => v & 0xFFFF_FFFF,
                _ => v,
            };
        }
    }

    fn xmm_index(r: Register) -> Option<usize> {
        let n = r as u32;
        let x0 = Register::XMM0 as u32;
        (n >= x0 && n < x0 + 16).then(|| (n - x0) as usize)
    }

    fn read_mem(&self, bus: &mut dyn Bus, va: u64, size: u32) -> Result<u64, Exit> {
        let mut b = [0u8; 8];
        bus.read(va, &mut b[..size as usize], false)
            .map_err(Exit::PageFault)?;
        Ok(u64::from_le_bytes(b))
    }

    fn write_mem(&self, bus: &mut dyn Bus, va: u64, size: u32, v: u64) -> Result<(), Exit> {
        bus.write(va, &v.to_le_bytes()[..size as usize])
            .map_err(Exit::PageFault)
    }

    fn ea(&self, ins: &Instruction) -> u64 {
        let base = ins.memory_base();
        let mut a = if base == Register::RIP {
            // iced gives RIP-relative operands as their absolute target.
            return ins.memory_displacement64();
        } else if base == Register::None {
            0
        } else {
            self.reg(base)
        };
        let idx = ins.memory_index();
        if idx != Register::None {
            a = a.wrapping_add(self.reg(idx).wrapping_mul(ins.memory_index_scale() as u64));
        }
        a = a.wrapping_add(ins.memory_displacement64());
        if ins.segment_prefix() == Register::GS {
            a = a.wrapping_add(self.regs.gs_base);
        }
        a
    }

    /// Size in bytes of operand `i`.
    fn op_size(ins: &Instruction, i: u32) -> u32 {
        match ins.op_kind(i) {
            OpKind::Register => ins.op_register(i).size() as u32,
            OpKind::Memory => ins.memory_size().size() as u32,
            OpKind::Immediate8 => 1,
            OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
            OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
            _ => 8,
        }
    }

    fn read_op(&self, bus: &mut dyn Bus, ins: &Instruction, i: u32) -> Result<u64, Exit> {
        match ins.op_kind(i) {
            OpKind::Register => Ok(self.reg(ins.op_register(i))),
            OpKind::Memory => {
                let size = ins.memory_size().size() as u32;
                self.read_mem(bus, self.ea(ins), size.min(8))
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => Ok(ins.immediate(i)),
            _ => Err(self.invalid(ins)),
        }
    }

    fn write_op(
        &mut self,
        bus: &mut dyn Bus,
        ins: &Instruction,
        i: u32,
        v: u64,
    ) -> Result<(), Exit> {
        match ins.op_kind(i) {
            OpKind::Register => {
                self.set_reg(ins.op_register(i), v);
                Ok(())
            }
            OpKind::Memory => {
                let size = ins.memory_size().size() as u32;
                let ea = self.ea(ins);
                self.write_mem(bus, ea, size.min(8), v)
            }
            _ => Err(self.invalid(ins)),
        }
    }

    fn invalid(&self, ins: &Instruction) -> Exit {
        let mut text = String::new();
        IntelFormatter::new().format(ins, &mut text);
        Exit::Invalid {
            rip: ins.ip(),
            text,
        }
    }

    fn push(&mut self, bus: &mut dyn Bus, v: u64) -> Result<(), Exit> {
        let sp = self.regs.gpr[RSP].wrapping_sub(8);
        self.write_mem(bus, sp, 8, v)?;
        self.regs.gpr[RSP] = sp;
        Ok(())
    }

    fn pop(&mut self, bus: &mut dyn Bus) -> Result<u64, Exit> {
        let sp = self.regs.gpr[RSP];
        let v = self.read_mem(bus, sp, 8)?;
        self.regs.gpr[RSP] = sp.wrapping_add(8);
        Ok(v)
    }

    /// Return to the caller as `ret` would (used after a host routine).
    pub fn host_return(&mut self, bus: &mut dyn Bus, rax: u64) -> Result<(), Exit> {
        self.regs.gpr[RAX] = rax;
        self.do_ret(bus, 0)
    }

    fn do_ret(&mut self, bus: &mut dyn Bus, extra: u64) -> Result<(), Exit> {
        let slot = self.regs.gpr[RSP];
        let target = self.pop(bus)?;
        self.regs.gpr[RSP] = self.regs.gpr[RSP].wrapping_add(extra);
        // Drop the shadow frames this return unwinds: the one whose return
        // address is being popped, and any a tail call left above it.
        while let Some(top) = self.shadow.last() {
            if top.slot <= slot {
                self.shadow.pop();
            } else {
                break;
            }
        }
        self.regs.rip = target;
        Ok(())
    }

    /// Deliver a page fault as the CPU does: push SS, RSP, RFLAGS, CS, RIP
    /// and the error code on the current (kernel) stack, aligned down to
    /// 16 bytes, and continue at `handler`.
    pub fn deliver_page_fault(
        &mut self,
        bus: &mut dyn Bus,
        f: Fault,
        handler: u64,
    ) -> Result<(), Exit> {
        let old_rsp = self.regs.gpr[RSP];
        let rip = self.regs.rip;
        let mut sp = old_rsp & !0xF;
        // Error code: not-present (P = 0), W/R bit 1, I/D bit 4.
        let error = if f.write { 2 } else { 0 } | if f.fetch { 0x10 } else { 0 };
        let frame = [
            KGDT64_R0_DATA,
            old_rsp,
            self.regs.rflags,
            KGDT64_R0_CODE,
            rip,
            error,
        ];
        for v in frame {
            sp -= 8;
            self.write_mem(bus, sp, 8, v)?;
        }
        self.regs.gpr[RSP] = sp;
        self.regs.cr2 = f.va;
        self.regs.rflags &= !IF;
        self.shadow.push(ShadowFrame {
            site: rip,
            resume: rip,
            slot: old_rsp,
            trap: true,
        });
        self.regs.rip = handler;
        Ok(())
    }

    fn fetch(&mut self, bus: &mut dyn Bus) -> Result<Instruction, Exit> {
        let rip = self.regs.rip;
        if let Some(i) = self.cache.get(&rip) {
            return Ok(*i);
        }
        let mut bytes = [0u8; 15];
        // Read what is mapped of the 15 bytes an instruction can span.
        let first = (0x1000 - (rip & 0xFFF)).min(15) as usize;
        bus.read(rip, &mut bytes[..first], true)
            .map_err(Exit::PageFault)?;
        let mut n = first;
        if first < 15
            && bus
                .read(rip + first as u64, &mut bytes[first..], true)
                .is_ok()
        {
            n = 15;
        }
        let mut d = Decoder::with_ip(64, &bytes[..n], rip, DecoderOptions::NONE);
        let ins = d.decode();
        if ins.is_invalid() {
            return Err(Exit::Invalid {
                rip,
                text: format!("undecodable bytes {:02x?}", &bytes[..n]),
            });
        }
        self.cache.insert(rip, ins);
        Ok(ins)
    }

    /// Execute one instruction.
    pub fn step(&mut self, bus: &mut dyn Bus) -> Result<(), Exit> {
        let ins = self.fetch(bus)?;
        let next = ins.next_ip();
        let saved = self.regs.clone();
        let shadow_len = self.shadow.len();
        match self.exec(bus, &ins, next) {
            Ok(()) => {
                self.retired += 1;
                Ok(())
            }
            Err(e) => {
                // A faulting instruction has no effect: restore, so the
                // fault is reported at the instruction, as the CPU does.
                if matches!(e, Exit::PageFault(_)) {
                    self.regs = saved;
                    self.shadow.truncate(shadow_len);
                }
                Err(e)
            }
        }
    }

    fn exec(&mut self, bus: &mut dyn Bus, ins: &Instruction, next: u64) -> Result<(), Exit> {
        use Mnemonic::*;
        let m = ins.mnemonic();
        self.regs.rip = next;
        match m {
            Nop | Pause | Lfence | Mfence | Sfence | Prefetchw | Prefetcht0 | Prefetchnta => {}
            Int3 => {
                self.regs.rip = ins.ip();
                return Err(Exit::Breakpoint);
            }
            Ud2 | Hlt => {
                self.regs.rip = ins.ip();
                return Err(self.invalid(ins));
            }
            Mov => {
                if ins.op_kind(0) == OpKind::Register && ins.op0_register().is_cr() {
                    return Err(self.invalid(ins));
                }
                if ins.op_kind(1) == OpKind::Register && ins.op1_register() == Register::CR2 {
                    let v = self.regs.cr2;
                    self.set_reg(ins.op0_register(), v);
                    return Ok(());
                }
                let v = self.read_op(bus, ins, 1)?;
                self.write_op(bus, ins, 0, v)?;
            }
            Movzx => {
                let v = self.read_op(bus, ins, 1)?;
                self.write_op(bus, ins, 0, v)?;
            }
            Movsx | Movsxd => {
                let s = Self::op_size(ins, 1);
                let v = sext(self.read_op(bus, ins, 1)?, s) as u64;
                self.write_op(bus, ins, 0, v)?;
            }
            Lea => {
                let v = self.ea(ins);
                self.write_op(bus, ins, 0, v)?;
            }
            Push => {
                let v = self.read_op(bus, ins, 0)?;
                let v = if ins.op_kind(0) == OpKind::Register {
                    v
                } else {
                    sext(v, Self::op_size(ins, 0).min(4)) as u64
                };
                self.push(bus, v)?;
            }
            Pop => {
                let v = self.pop(bus)?;
                self.write_op(bus, ins, 0, v)?;
            }
            Pushfq => {
                let f = self.regs.rflags;
                self.push(bus, f)?;
            }
            Popfq => {
                self.regs.rflags = (self.pop(bus)? & 0x3F_7FD7) | 2;
            }
            Leave => {
                self.regs.gpr[RSP] = self.regs.gpr[RBP];
                self.regs.gpr[RBP] = self.pop(bus)?;
            }
            Call => {
                let target = match ins.op_kind(0) {
                    OpKind::NearBranch64 => ins.near_branch_target(),
                    _ => self.read_op(bus, ins, 0)?,
                };
                self.push(bus, next)?;
                self.shadow.push(ShadowFrame {
                    site: ins.ip(),
                    resume: next,
                    slot: self.regs.gpr[RSP],
                    trap: false,
                });
                self.regs.rip = target;
            }
            Ret => {
                let extra = if ins.op_count() > 0 {
                    ins.immediate(0)
                } else {
                    0
                };
                self.do_ret(bus, extra)?;
            }
            Iretq => {
                let rip = self.pop(bus)?;
                let _cs = self.pop(bus)?;
                let fl = self.pop(bus)?;
                let rsp = self.pop(bus)?;
                let _ss = self.pop(bus)?;
                self.regs.rflags = (fl & 0x3F_7FD7) | 2;
                self.regs.gpr[RSP] = rsp;
                if let Some(top) = self.shadow.last()
                    && top.trap
                {
                    self.shadow.pop();
                }
                self.regs.rip = rip;
            }
            Jmp => {
                self.regs.rip = match ins.op_kind(0) {
                    OpKind::NearBranch64 => ins.near_branch_target(),
                    _ => self.read_op(bus, ins, 0)?,
                };
            }
            _ if ins.is_jcc_short_or_near() => {
                if self.condition(ins.condition_code()) {
                    self.regs.rip = ins.near_branch_target();
                }
            }
            _ if is_cmovcc(m) => {
                let v = self.read_op(bus, ins, 1)?;
                if self.condition(ins.condition_code()) {
                    self.write_op(bus, ins, 0, v)?;
                } else if ins.op0_register().size() == 4 {
                    // A 32-bit cmov zero-extends its destination either way.
                    let cur = self.reg(ins.op0_register());
                    self.set_reg(ins.op0_register(), cur);
                }
            }
            _ if is_setcc(m) => {
                let v = self.condition(ins.condition_code()) as u64;
                self.write_op(bus, ins, 0, v)?;
            }
            Add | Adc | Sub | Sbb | Cmp | And | Or | Xor | Test => {
                let size = Self::op_size(ins, 0);
                let a = self.read_op(bus, ins, 0)?;
                let b = self.read_op(bus, ins, 1)? & mask(size);
                let carry = self.flag(CF) as u64;
                let (r, f) = match m {
                    Add => add_flags(a, b, 0, size),
                    Adc => add_flags(a, b, carry, size),
                    Sub | Cmp => sub_flags(a, b, 0, size),
                    Sbb => sub_flags(a, b, carry, size),
                    And | Test => (a & b, logic_flags(a & b, size)),
                    Or => (a | b, logic_flags(a | b, size)),
                    _ => (a ^ b, logic_flags(a ^ b, size)),
                };
                self.set_arith_flags(f);
                if !matches!(m, Cmp | Test) {
                    self.write_op(bus, ins, 0, r)?;
                }
            }
            Inc | Dec => {
                let size = Self::op_size(ins, 0);
                let a = self.read_op(bus, ins, 0)?;
                let (r, f) = if m == Inc {
                    add_flags(a, 1, 0, size)
                } else {
                    sub_flags(a, 1, 0, size)
                };
                // INC/DEC leave CF alone.
                let f = (f & !CF) | (self.regs.rflags & CF);
                self.set_arith_flags(f);
                self.write_op(bus, ins, 0, r)?;
            }
            Neg => {
                let size = Self::op_size(ins, 0);
                let a = self.read_op(bus, ins, 0)?;
                let (r, mut f) = sub_flags(0, a, 0, size);
                f = if a & mask(size) != 0 { f | CF } else { f & !CF };
                self.set_arith_flags(f);
                self.write_op(bus, ins, 0, r)?;
            }
            Not => {
                let a = self.read_op(bus, ins, 0)?;
                self.write_op(bus, ins, 0, !a)?;
            }
            Shl | Sal | Shr | Sar | Rol | Ror => {
                let size = Self::op_size(ins, 0);
                let bits = size * 8;
                let a = self.read_op(bus, ins, 0)? & mask(size);
                let count = if ins.op_count() > 1 {
                    self.read_op(bus, ins, 1)?
                } else {
                    1
                };
                let count = (count & if bits == 64 { 63 } else { 31 }) as u32;
                if count == 0 {
                    return Ok(());
                }
                let (r, cf) = match m {
                    Shl | Sal => {
                        let r = if count >= bits { 0 } else { a << count };
                        let cf = count <= bits && (a >> (bits - count)) & 1 != 0;
                        (r & mask(size), cf)
                    }
                    Shr => {
                        let r = if count >= bits { 0 } else { a >> count };
                        ((r), (a >> (count - 1)) & 1 != 0)
                    }
                    Sar => {
                        let s = sext(a, size);
                        let r = (s >> count.min(63)) as u64 & mask(size);
                        (r, (s >> (count - 1).min(63)) & 1 != 0)
                    }
                    Rol => {
                        let c = count % bits;
                        let r = ((a << c) | (a >> ((bits - c) % bits))) & mask(size);
                        (r, r & 1 != 0)
                    }
                    _ => {
                        let c = count % bits;
                        let r = ((a >> c) | (a << ((bits - c) % bits))) & mask(size);
                        (r, r & sign_bit(size) != 0)
                    }
                };
                let mut f = if matches!(m, Rol | Ror) {
                    self.regs.rflags & (ZF | SF | PF)
                } else {
                    logic_flags(r, size)
                };
                if cf {
                    f |= CF;
                }
                let of = match m {
                    Shl | Sal | Rol => ((r & sign_bit(size) != 0) != cf) && count == 1,
                    Shr => count == 1 && a & sign_bit(size) != 0,
                    Ror => count == 1 && ((r >> (bits - 1)) ^ (r >> (bits - 2))) & 1 != 0,
                    _ => false,
                };
                if of {
                    f |= OF;
                }
                self.set_arith_flags(f);
                self.write_op(bus, ins, 0, r)?;
            }
            Imul if ins.op_count() >= 2 => {
                let size = Self::op_size(ins, 0);
                let (a, b) = if ins.op_count() == 3 {
                    (self.read_op(bus, ins, 1)?, self.read_op(bus, ins, 2)?)
                } else {
                    (self.read_op(bus, ins, 0)?, self.read_op(bus, ins, 1)?)
                };
                let wide = sext(a, size) as i128 * sext(b & mask(size), size) as i128;
                let r = (wide as u64) & mask(size);
                let over = sext(r, size) as i128 != wide;
                let mut f = logic_flags(r, size);
                if over {
                    f |= CF | OF;
                }
                self.set_arith_flags(f);
                self.write_op(bus, ins, 0, r)?;
            }
            Mul | Imul | Div | Idiv => self.mul_div(bus, ins, m)?,
            Cdq => {
                let v = sext(self.regs.gpr[RAX], 4);
                self.regs.gpr[RDX] = ((v >> 32) as u64) & 0xFFFF_FFFF;
            }
            Cqo => {
                let v = self.regs.gpr[RAX] as i64;
                self.regs.gpr[RDX] = (v >> 63) as u64;
            }
            Cdqe => self.regs.gpr[RAX] = sext(self.regs.gpr[RAX], 4) as u64,
            Cwde => self.regs.gpr[RAX] = sext(self.regs.gpr[RAX], 2) as u64 & 0xFFFF_FFFF,
            Xchg => {
                let a = self.read_op(bus, ins, 0)?;
                let b = self.read_op(bus, ins, 1)?;
                self.write_op(bus, ins, 0, b)?;
                self.write_op(bus, ins, 1, a)?;
            }
            Bt => {
                let size = Self::op_size(ins, 0);
                let a = self.read_op(bus, ins, 0)?;
                let bit = self.read_op(bus, ins, 1)? % (size as u64 * 8);
                let f = if (a >> bit) & 1 != 0 {
                    self.regs.rflags | CF
                } else {
                    self.regs.rflags & !CF
                };
                self.regs.rflags = f;
            }
            Stosb | Stosw | Stosd | Stosq => {
                let size = match m {
                    Stosb => 1,
                    Stosw => 2,
                    Stosd => 4,
                    _ => 8,
                };
                let rep = ins.has_rep_prefix();
                let mut n = if rep { self.regs.gpr[RCX] } else { 1 };
                while n > 0 {
                    let di = self.regs.gpr[RDI];
                    self.write_mem(bus, di, size, self.regs.gpr[RAX])?;
                    let step = if self.flag(DF) {
                        (size as u64).wrapping_neg()
                    } else {
                        size as u64
                    };
                    self.regs.gpr[RDI] = di.wrapping_add(step);
                    n -= 1;
                    if rep {
                        self.regs.gpr[RCX] = n;
                    }
                }
            }
            Movups | Movaps | Movdqu | Movdqa | Movupd | Movapd => {
                let v = self.read_xmm_op(bus, ins, 1)?;
                self.write_xmm_op(bus, ins, 0, v)?;
            }
            Xorps | Pxor | Xorpd => {
                let a = self.read_xmm_op(bus, ins, 0)?;
                let b = self.read_xmm_op(bus, ins, 1)?;
                self.write_xmm_op(bus, ins, 0, a ^ b)?;
            }
            Movq | Movd => {
                let size = if m == Movq { 8 } else { 4 };
                let to_xmm = ins.op_kind(0) == OpKind::Register
                    && Self::xmm_index(ins.op0_register()).is_some();
                if to_xmm {
                    let v = if ins.op_kind(1) == OpKind::Register
                        && let Some(x) = Self::xmm_index(ins.op1_register())
                    {
                        self.regs.xmm[x] as u64
                    } else {
                        self.read_op(bus, ins, 1)?
                    } & mask(size);
                    let x = Self::xmm_index(ins.op0_register()).unwrap_or(0);
                    self.regs.xmm[x] = v as u128;
                } else {
                    let x = Self::xmm_index(ins.op1_register()).ok_or_else(|| self.invalid(ins))?;
                    let v = self.regs.xmm[x] as u64 & mask(size);
                    match ins.op_kind(0) {
                        OpKind::Memory => {
                            let ea = self.ea(ins);
                            self.write_mem(bus, ea, size, v)?
                        }
                        _ => self.write_op(bus, ins, 0, v)?,
                    }
                }
            }
            Cli => self.regs.rflags &= !IF,
            Sti => self.regs.rflags |= IF,
            Cld => self.regs.rflags &= !DF,
            _ => return Err(self.invalid(ins)),
        }
        Ok(())
    }

    fn read_xmm_op(&self, bus: &mut dyn Bus, ins: &Instruction, i: u32) -> Result<u128, Exit> {
        match ins.op_kind(i) {
            OpKind::Register => Self::xmm_index(ins.op_register(i))
                .map(|x| self.regs.xmm[x])
                .ok_or_else(|| self.invalid(ins)),
            OpKind::Memory => {
                let mut b = [0u8; 16];
                bus.read(self.ea(ins), &mut b, false)
                    .map_err(Exit::PageFault)?;
                Ok(u128::from_le_bytes(b))
            }
            _ => Err(self.invalid(ins)),
        }
    }

    fn write_xmm_op(
        &mut self,
        bus: &mut dyn Bus,
        ins: &Instruction,
        i: u32,
        v: u128,
    ) -> Result<(), Exit> {
        match ins.op_kind(i) {
            OpKind::Register => {
                let x = Self::xmm_index(ins.op_register(i)).ok_or_else(|| self.invalid(ins))?;
                self.regs.xmm[x] = v;
                Ok(())
            }
            OpKind::Memory => bus
                .write(self.ea(ins), &v.to_le_bytes())
                .map_err(Exit::PageFault),
            _ => Err(self.invalid(ins)),
        }
    }

    fn mul_div(&mut self, bus: &mut dyn Bus, ins: &Instruction, m: Mnemonic) -> Result<(), Exit> {
        let size = Self::op_size(ins, 0);
        let src = self.read_op(bus, ins, 0)? & mask(size);
        let bits = size * 8;
        let lo = self.regs.gpr[RAX] & mask(size);
        let hi = self.regs.gpr[RDX] & mask(size);
        // The result pair: AL/AH for bytes, else (E/R)AX and (E/R)DX.
        let set_lo = |cpu: &mut Cpu, l: u64, h: u64| {
            if size == 1 {
                cpu.set_reg(Register::AX, (l & 0xFF) | ((h & 0xFF) << 8));
            } else {
                let (ra, rd) = match size {
                    2 => (Register::AX, Register::DX),
                    4 => (Register::EAX, Register::EDX),
                    _ => (Register::RAX, Register::RDX),
                };
                cpu.set_reg(ra, l);
                cpu.set_reg(rd, h);
            }
        };
        match m {
            Mnemonic::Mul | Mnemonic::Imul => {
                let (l, h, over) = if m == Mnemonic::Mul {
                    let w = lo as u128 * src as u128;
                    let l = (w as u64) & mask(size);
                    let h = ((w >> bits) as u64) & mask(size);
                    (l, h, h != 0)
                } else {
                    let w = sext(lo, size) as i128 * sext(src, size) as i128;
                    let l = (w as u64) & mask(size);
                    let h = ((w >> bits) as u64) & mask(size);
                    (l, h, sext(l, size) as i128 != w)
                };
                set_lo(self, l, h);
                let mut f = self.regs.rflags & !(CF | OF);
                if over {
                    f |= CF | OF;
                }
                self.regs.rflags = f;
            }
            _ => {
                if src == 0 {
                    return Err(Exit::Invalid {
                        rip: ins.ip(),
                        text: "divide by zero".into(),
                    });
                }
                let dividend = if size == 1 {
                    self.regs.gpr[RAX] as u128 & 0xFFFF
                } else {
                    ((hi as u128) << bits) | lo as u128
                };
                let (q, r) = if m == Mnemonic::Div {
                    let q = dividend / src as u128;
                    if q > mask(size) as u128 {
                        return Err(Exit::Invalid {
                            rip: ins.ip(),
                            text: "divide overflow".into(),
                        });
                    }
                    (q as u64, (dividend % src as u128) as u64)
                } else {
                    let d = if size == 1 {
                        sext(dividend as u64, 2) as i128
                    } else {
                        ((dividend << (128 - 2 * bits)) as i128) >> (128 - 2 * bits)
                    };
                    let s = sext(src, size) as i128;
                    let q = d / s;
                    if q > (mask(size) >> 1) as i128 || q < -((mask(size) >> 1) as i128) - 1 {
                        return Err(Exit::Invalid {
                            rip: ins.ip(),
                            text: "divide overflow".into(),
                        });
                    }
                    (q as u64 & mask(size), (d % s) as u64 & mask(size))
                };
                set_lo(self, q, r);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
