//! Executing one decoded instruction: a dispatch on the mnemonic to the
//! group that runs it (moves, control transfer and the stack, arithmetic
//! and logic, shifts, multiplies and divides, string stores, SSE moves).

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::flags::{
    CF, DF, IF, OF, PF, SF, ZF, add_flags, logic_flags, mask, sext, sign_bit, sub_flags,
};
use super::{Bus, Cpu, Exit, RAX, RBP, RCX, RDI, RDX, RSP, ShadowFrame};

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

impl Cpu {
    /// Execute one decoded instruction whose successor is at `next`: the
    /// groups below each take their mnemonics; anything else is invalid.
    pub(super) fn exec(
        &mut self,
        bus: &mut dyn Bus,
        ins: &Instruction,
        next: u64,
    ) -> Result<(), Exit> {
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
            Mov | Movzx | Movsx | Movsxd | Lea | Xchg | Cdq | Cqo | Cdqe | Cwde => {
                self.exec_move(bus, ins, m)?
            }
            Push | Pop | Pushfq | Popfq | Leave | Call | Ret | Iretq | Jmp => {
                self.exec_transfer(bus, ins, m, next)?
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
            Add | Adc | Sub | Sbb | Cmp | And | Or | Xor | Test | Inc | Dec | Neg | Not | Bt => {
                self.exec_arith(bus, ins, m)?
            }
            Shl | Sal | Shr | Sar | Rol | Ror => self.exec_shift(bus, ins, m)?,
            Mul | Imul | Div | Idiv => self.exec_mul(bus, ins, m)?,
            Stosb | Stosw | Stosd | Stosq => self.exec_stos(bus, ins, m)?,
            Movups | Movaps | Movdqu | Movdqa | Movupd | Movapd | Xorps | Pxor | Xorpd | Movq
            | Movd => self.exec_sse(bus, ins, m)?,
            Cli => self.regs.rflags &= !IF,
            Sti => self.regs.rflags |= IF,
            Cld => self.regs.rflags &= !DF,
            _ => return Err(self.invalid(ins)),
        }
        Ok(())
    }

    /// Moves, sign extensions and exchanges.
    fn exec_move(&mut self, bus: &mut dyn Bus, ins: &Instruction, m: Mnemonic) -> Result<(), Exit> {
        use Mnemonic::*;
        match m {
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
            _ => return Err(self.invalid(ins)),
        }
        Ok(())
    }

    /// Calls, returns, jumps and the stack (`next` is the return address a
    /// call pushes).
    fn exec_transfer(
        &mut self,
        bus: &mut dyn Bus,
        ins: &Instruction,
        m: Mnemonic,
        next: u64,
    ) -> Result<(), Exit> {
        use Mnemonic::*;
        match m {
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
            _ => return Err(self.invalid(ins)),
        }
        Ok(())
    }

    /// Arithmetic and logic, with the flags they set; bit tests.
    fn exec_arith(
        &mut self,
        bus: &mut dyn Bus,
        ins: &Instruction,
        m: Mnemonic,
    ) -> Result<(), Exit> {
        use Mnemonic::*;
        match m {
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
            _ => return Err(self.invalid(ins)),
        }
        Ok(())
    }

    /// Shifts and rotates (`exec` sends only those here): CF is the last
    /// bit out, OF only for a count of 1.
    fn exec_shift(
        &mut self,
        bus: &mut dyn Bus,
        ins: &Instruction,
        m: Mnemonic,
    ) -> Result<(), Exit> {
        use Mnemonic::*;
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
        self.write_op(bus, ins, 0, r)
    }

    /// Multiplies and divides (two- and three-operand IMUL here, the rest
    /// in `mul_div`).
    fn exec_mul(&mut self, bus: &mut dyn Bus, ins: &Instruction, m: Mnemonic) -> Result<(), Exit> {
        use Mnemonic::*;
        match m {
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
            _ => return Err(self.invalid(ins)),
        }
        Ok(())
    }

    /// `stos` with or without `rep`, in the direction DF says.
    fn exec_stos(&mut self, bus: &mut dyn Bus, ins: &Instruction, m: Mnemonic) -> Result<(), Exit> {
        use Mnemonic::*;
        match m {
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
            _ => return Err(self.invalid(ins)),
        }
        Ok(())
    }

    /// SSE register moves, XORs and MOVQ/MOVD between XMM and the rest.
    fn exec_sse(&mut self, bus: &mut dyn Bus, ins: &Instruction, m: Mnemonic) -> Result<(), Exit> {
        use Mnemonic::*;
        match m {
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
        self.store(bus, ins, i, &v.to_le_bytes(), |cpu, r| {
            let x = Self::xmm_index(r).ok_or_else(|| cpu.invalid(ins))?;
            cpu.regs.xmm[x] = v;
            Ok(())
        })
    }

    fn mul_div(&mut self, bus: &mut dyn Bus, ins: &Instruction, m: Mnemonic) -> Result<(), Exit> {
        let size = Self::op_size(ins, 0);
        let src = self.read_op(bus, ins, 0)? & mask(size);
        let bits = size * 8;
        let lo = self.regs.gpr[RAX] & mask(size);
        let hi = self.regs.gpr[RDX] & mask(size);
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
                self.set_result_pair(size, l, h);
                let mut f = self.regs.rflags & !(CF | OF);
                if over {
                    f |= CF | OF;
                }
                self.regs.rflags = f;
            }
            _ => return self.divide(ins, m, size, src, (lo, hi)),
        }
        Ok(())
    }

    /// DIV and IDIV of the pair `(lo, hi)` (AX for bytes) by `src`; a zero
    /// divisor or a quotient too wide for `size` stops the CPU.
    fn divide(
        &mut self,
        ins: &Instruction,
        m: Mnemonic,
        size: u32,
        src: u64,
        (lo, hi): (u64, u64),
    ) -> Result<(), Exit> {
        let bits = size * 8;
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
        self.set_result_pair(size, q, r);
        Ok(())
    }

    /// The result pair: AL/AH for bytes, else (E/R)AX and (E/R)DX.
    fn set_result_pair(&mut self, size: u32, l: u64, h: u64) {
        if size == 1 {
            self.set_reg(Register::AX, (l & 0xFF) | ((h & 0xFF) << 8));
        } else {
            let (ra, rd) = match size {
                2 => (Register::AX, Register::DX),
                4 => (Register::EAX, Register::EDX),
                _ => (Register::RAX, Register::RDX),
            };
            self.set_reg(ra, l);
            self.set_reg(rd, h);
        }
    }
}
