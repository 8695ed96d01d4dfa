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
//!
//! This file holds the CPU's state and what every instruction needs
//! (operands, memory, the stack, faults and their delivery); `exec.rs`
//! runs one instruction and `flags.rs` computes RFLAGS.

mod exec;
mod flags;

use iced_x86::{
    ConditionCode, Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, OpKind,
    Register,
};

use flags::{ARITH, mask};
pub use flags::{CF, DF, IF, OF, PF, SF, ZF};

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
        let size = ins.memory_size().size().min(8);
        self.store(bus, ins, i, &v.to_le_bytes()[..size], |cpu, r| {
            cpu.set_reg(r, v);
            Ok(())
        })
    }

    /// Store to operand `i`: a register through `to_reg`, memory as
    /// `bytes` at the operand's address; any other operand is invalid.
    fn store(
        &mut self,
        bus: &mut dyn Bus,
        ins: &Instruction,
        i: u32,
        bytes: &[u8],
        to_reg: impl FnOnce(&mut Self, Register) -> Result<(), Exit>,
    ) -> Result<(), Exit> {
        match ins.op_kind(i) {
            OpKind::Register => to_reg(self, ins.op_register(i)),
            OpKind::Memory => bus.write(self.ea(ins), bytes).map_err(Exit::PageFault),
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
}

#[cfg(test)]
mod tests;
