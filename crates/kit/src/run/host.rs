//! nt's routines the simulator performs in Rust (the ones nt.c marks
//! HOST): carving and releasing pool blocks, charging the current
//! processor's tracker row, KeBugCheckEx and DbgPrint. Each is entered when
//! a processor's RIP reaches the routine, and returns to its caller as the
//! routine would.

use super::cpu::{Bus, R8, R9, RCX, RDX, RSP, Regs};
use super::truth::frames_of;
use super::{BugCheck, Host, MachineBus, PendingOp, PoolOp, Runtime, Stop, StopKind};
use crate::machine::Machine;

impl Runtime {
    /// Run HOST routine `h` for processor `p`, then return to its caller
    /// with the routine's result in RAX.
    pub(super) fn host_call(&mut self, m: &mut Machine, p: usize, h: Host) -> Option<Stop> {
        let regs = self.processors[p].cpu.regs.clone();
        let a = |i: usize| regs.gpr[i];
        let ret = match h {
            Host::AllocateBlock => self.allocate_block(m, p, &regs),
            Host::ReleaseBlock => self.release_block(m, p, &regs),
            Host::ChargeTracker => {
                self.charge_tracker(m, p, &regs);
                0
            }
            Host::BugCheck => {
                let p4 = {
                    let mut b = [0u8; 8];
                    let mut bus = MachineBus { m };
                    let _ = bus.read(regs.gpr[RSP] + 0x28, &mut b, false);
                    u64::from_le_bytes(b)
                };
                return self.bugcheck(m, p, a(RCX) as u32, [a(RDX), a(R8), a(R9), p4]);
            }
            Host::DbgPrint => {
                let text = {
                    let mut bus = MachineBus { m };
                    format_dbgprint(&mut bus, &regs)
                };
                self.prints.push(text.clone());
                self.truth.prints.push(text);
                0
            }
        };
        let mut bus = MachineBus { m };
        if self.processors[p].cpu.host_return(&mut bus, ret).is_err() {
            return self.bugcheck(m, p, 0x7F, [8, 0, 0, 0]);
        }
        None
    }

    /// ExpPoolAllocateBlock(PoolType, Bytes, Tag, &Charged): the block's
    /// address, or 0.
    fn allocate_block(&mut self, m: &mut Machine, p: usize, regs: &Regs) -> u64 {
        let a = |i: usize| regs.gpr[i];
        let (pool_type, bytes, tag, charged_out) = (a(RCX) as u32, a(RDX), a(R8) as u32, a(R9));
        let r = m.run_allocate(&mut self.pool, pool_type, bytes, tag);
        let (va, charged) = r.unwrap_or((0, 0));
        let mut bus = MachineBus { m };
        let _ = bus.write(charged_out, &charged.to_le_bytes());
        if let Some(j) = self.processors[p].job.as_mut() {
            j.pending = r.map(|_| PendingOp {
                op: PoolOp::Alloc,
                tag,
                bytes,
            });
        }
        va
    }

    /// ExpPoolReleaseBlock(Va, &Charged, &PoolType): the block's tag, or 0.
    fn release_block(&mut self, m: &mut Machine, p: usize, regs: &Regs) -> u64 {
        let a = |i: usize| regs.gpr[i];
        let (va, charged_out, type_out) = (a(RCX), a(RDX), a(R8));
        match m.run_free(&mut self.pool, va) {
            Some((tag, charged, pool_type)) => {
                let mut bus = MachineBus { m };
                let _ = bus.write(charged_out, &charged.to_le_bytes());
                let _ = bus.write(type_out, &pool_type.to_le_bytes());
                if let Some(j) = self.processors[p].job.as_mut() {
                    j.pending = Some(PendingOp {
                        op: PoolOp::Free,
                        tag,
                        bytes: charged,
                    });
                }
                tag as u64
            }
            None => 0,
        }
    }

    /// ExpPoolChargeTracker(Key, Bytes, PoolType, Sign): the tracker row of
    /// processor `p`, and the pool call it completes, counted by site.
    fn charge_tracker(&mut self, m: &mut Machine, p: usize, regs: &Regs) {
        let a = |i: usize| regs.gpr[i];
        let (key, bytes, pool_type, sign) =
            (a(RCX) as u32, a(RDX), a(R8) as u32, a(R9) as u32 as i32);
        m.run_charge_tracker(p as u32, key, bytes, pool_type, sign as i64);
        let e = self
            .truth
            .tags
            .entry((key & 0x7FFF_FFFF, pool_type & 1 == 1))
            .or_default();
        if sign > 0 {
            e.0 += 1;
            e.2 += bytes as i64;
        } else {
            e.1 += 1;
            e.2 -= bytes as i64;
        }
        let site = self.site(p);
        if let Some(op) = self.processors[p]
            .job
            .as_mut()
            .and_then(|j| j.pending.take())
        {
            let c = self.truth.sites.entry((site, op.tag, op.op)).or_default();
            c.calls += 1;
            c.bytes += op.bytes;
        }
    }

    /// KeBugCheckEx: the machine stops for good, after KeBugCheck2's
    /// message.
    pub(super) fn bugcheck(
        &mut self,
        m: &mut Machine,
        p: usize,
        code: u32,
        parameters: [u64; 4],
    ) -> Option<Stop> {
        let pr = &mut self.processors[p];
        let b = BugCheck {
            code,
            parameters,
            cpu: p as u32,
            context: pr.cpu.regs.clone(),
            frames: frames_of(&pr.cpu.regs, &pr.cpu.shadow),
        };
        pr.job = None;
        // KeBugCheck2 prints the stop code, then breaks into the debugger
        // at RtlpBreakWithStatusInstruction.
        let line = format!(
            "\n*** Fatal System Error: 0x{:08x}\n                       (0x{:016X},0x{:016X},0x{:016X},0x{:016X})\n",
            code, parameters[0], parameters[1], parameters[2], parameters[3]
        );
        self.prints.push(line.clone());
        self.truth.prints.push(line);
        self.truth.bugcheck = Some(b.clone());
        let _ = m;
        let s = Stop {
            cpu: p as u32,
            thread: self.processors[p].thread,
            pc: self.nt.break_with_status,
            kind: StopKind::BugCheck(Box::new(b)),
        };
        self.stop = Some(s.clone());
        Some(s)
    }
}

/// DbgPrint's formatting, for the conversions kernel code uses: %s %c %d
/// %i %u %x %X %p %%, with `l`, `ll`, `I64`, `z` and widths; arguments
/// from RDX, R8, R9, then the stack.
fn format_dbgprint(bus: &mut dyn Bus, regs: &Regs) -> String {
    let fmt = read_str(bus, regs.gpr[RCX], 512);
    let mut args = DbgPrintArgs { regs, next: 0 };
    let mut out = String::new();
    let mut i = 0;
    while i < fmt.len() {
        let ch = fmt[i];
        if ch != b'%' {
            out.push(ch as char);
            i += 1;
            continue;
        }
        i += 1;
        let mut spec = String::new();
        while i < fmt.len() && b"0123456789-lhzI".contains(&fmt[i]) {
            spec.push(fmt[i] as char);
            i += 1;
        }
        let Some(&conv) = fmt.get(i) else { break };
        i += 1;
        format_conversion(&mut out, bus, &mut args, conv, &spec);
    }
    out
}

/// A NUL-terminated string of at most `max` bytes at `va`, cut short where
/// memory cannot be read.
fn read_str(bus: &mut dyn Bus, va: u64, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while out.len() < max {
        if bus.read(va + out.len() as u64, &mut b, false).is_err() || b[0] == 0 {
            break;
        }
        out.push(b[0]);
    }
    out
}

/// DbgPrint's arguments after the format: RDX, R8, R9, then the caller's
/// stack above its home space.
struct DbgPrintArgs<'a> {
    regs: &'a Regs,
    next: usize,
}

impl DbgPrintArgs<'_> {
    fn next(&mut self, bus: &mut dyn Bus) -> u64 {
        let regs = self.regs;
        let v = match self.next {
            0 => regs.gpr[RDX],
            1 => regs.gpr[R8],
            2 => regs.gpr[R9],
            n => {
                let mut b = [0u8; 8];
                let _ = bus.read(regs.gpr[RSP] + 0x28 + 8 * (n as u64 - 3), &mut b, false);
                u64::from_le_bytes(b)
            }
        };
        self.next += 1;
        v
    }
}

/// Append conversion `conv` with its flags, width and size `spec` (what
/// stood between `%` and it), taking its argument from `args`.
fn format_conversion(
    out: &mut String,
    bus: &mut dyn Bus,
    args: &mut DbgPrintArgs<'_>,
    conv: u8,
    spec: &str,
) {
    let wide = spec.contains("ll") || spec.contains("I64") || spec.contains('z');
    let width: usize = spec
        .trim_start_matches('-')
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or(0);
    let zero = spec.starts_with('0');
    let pad = |s: String| -> String {
        if s.len() >= width {
            s
        } else if zero {
            format!("{}{s}", "0".repeat(width - s.len()))
        } else {
            format!("{}{s}", " ".repeat(width - s.len()))
        }
    };
    match conv {
        b'%' => out.push('%'),
        b's' => {
            let v = args.next(bus);
            out.push_str(&String::from_utf8_lossy(&read_str(bus, v, 256)));
        }
        b'c' => out.push(args.next(bus) as u8 as char),
        b'd' | b'i' => {
            let v = args.next(bus);
            let v = if wide {
                v as i64
            } else {
                v as u32 as i32 as i64
            };
            out.push_str(&pad(v.to_string()));
        }
        b'u' => {
            let v = args.next(bus);
            let v = if wide { v } else { v as u32 as u64 };
            out.push_str(&pad(v.to_string()));
        }
        b'x' | b'X' => {
            let v = args.next(bus);
            let v = if wide { v } else { v as u32 as u64 };
            let s = if conv == b'x' {
                format!("{v:x}")
            } else {
                format!("{v:X}")
            };
            out.push_str(&pad(s));
        }
        b'p' => out.push_str(&format!("{:016X}", args.next(bus))),
        other => {
            out.push('%');
            out.push_str(spec);
            out.push(other as char);
        }
    }
}
