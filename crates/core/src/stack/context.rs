//! x64 registers, and the CONTEXT record they come from.
//!
//! The CONTEXT layout is the x64 `CONTEXT` of winnt.h (0x4D0 bytes). It is
//! not in nt's PDB as a type a dump can be trusted to carry (and a live
//! stop reports it as raw bytes), so its offsets are the SDK's, like
//! KDDEBUGGER_DATA64's in `kernel/kdbg.rs`.

use std::fmt;

use serde::Serialize;

use crate::addr::KernelVa;
use crate::bytes::Le;
use crate::memory::{Memory, MemoryError};

/// Size of an x64 CONTEXT record.
pub const CONTEXT_SIZE: usize = 0x4D0;

/// `ContextFlags` bits (winnt.h).
pub mod flags {
    /// The architecture bit every x64 ContextFlags value carries.
    pub const CONTEXT_AMD64: u32 = 0x0010_0000;
    /// SegSs, Rsp, SegCs, Rip, EFlags.
    pub const CONTEXT_CONTROL: u32 = CONTEXT_AMD64 | 0x1;
    /// Rax, Rcx, Rdx, Rbx, Rbp, Rsi, Rdi, R8-R15.
    pub const CONTEXT_INTEGER: u32 = CONTEXT_AMD64 | 0x2;
}

const OFF_CONTEXT_FLAGS: usize = 0x30;
/// Rax; the 16 GPRs follow in encoding order (Rax, Rcx, Rdx, Rbx, Rsp,
/// Rbp, Rsi, Rdi, R8..R15), 8 bytes each.
const OFF_RAX: usize = 0x78;
const OFF_RIP: usize = 0xF8;

/// A general-purpose register, numbered as the x64 encoding (and unwind
/// codes) number them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reg {
    /// RAX (encoding 0): volatile, the return value.
    Rax,
    /// RCX (1): volatile, the first argument.
    Rcx,
    /// RDX (2): volatile, the second argument.
    Rdx,
    /// RBX (3): nonvolatile.
    Rbx,
    /// RSP (4): the stack pointer.
    Rsp,
    /// RBP (5): nonvolatile; the frame register of many functions.
    Rbp,
    /// RSI (6): nonvolatile.
    Rsi,
    /// RDI (7): nonvolatile.
    Rdi,
    /// R8 (8): volatile, the third argument.
    R8,
    /// R9 (9): volatile, the fourth argument.
    R9,
    /// R10 (10): volatile.
    R10,
    /// R11 (11): volatile.
    R11,
    /// R12 (12): nonvolatile.
    R12,
    /// R13 (13): nonvolatile.
    R13,
    /// R14 (14): nonvolatile.
    R14,
    /// R15 (15): nonvolatile.
    R15,
}

impl Reg {
    /// Every register in encoding order.
    pub const ALL: [Reg; 16] = [
        Reg::Rax,
        Reg::Rcx,
        Reg::Rdx,
        Reg::Rbx,
        Reg::Rsp,
        Reg::Rbp,
        Reg::Rsi,
        Reg::Rdi,
        Reg::R8,
        Reg::R9,
        Reg::R10,
        Reg::R11,
        Reg::R12,
        Reg::R13,
        Reg::R14,
        Reg::R15,
    ];

    /// The callee-saved (nonvolatile) registers of the x64 Windows ABI,
    /// RSP aside.
    pub const NONVOLATILE: [Reg; 8] = [
        Reg::Rbx,
        Reg::Rbp,
        Reg::Rsi,
        Reg::Rdi,
        Reg::R12,
        Reg::R13,
        Reg::R14,
        Reg::R15,
    ];

    /// The register with encoding `n` (0..=15).
    pub fn from_number(n: u8) -> Option<Reg> {
        Reg::ALL.get(usize::from(n)).copied()
    }

    /// The register's number in the x64 encoding and in unwind codes (0 = rax .. 15 = r15).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// Callee-saved in the x64 Windows ABI (one of [`Reg::NONVOLATILE`]).
    pub(crate) fn is_nonvolatile(self) -> bool {
        Reg::NONVOLATILE.contains(&self)
    }

    /// `rbx`, `r12`: as WinDbg's `r` prints them.
    pub fn name(self) -> &'static str {
        [
            "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15",
        ][self as usize]
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The x64 integer registers and RIP of one frame. A register the source
/// did not give (a CONTEXT without CONTEXT_INTEGER), or that unwinding
/// cannot recover in a caller's frame (a volatile one), is `None`. RSP and
/// RIP are always known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registers {
    /// The instruction pointer: in a caller's frame, the return address.
    pub rip: u64,
    values: [Option<u64>; 16],
}

impl Registers {
    /// Only RIP and RSP known.
    pub fn new(rip: u64, rsp: u64) -> Self {
        let mut values = [None; 16];
        values[Reg::Rsp as usize] = Some(rsp);
        Self { rip, values }
    }

    /// The stack pointer (always known).
    pub fn rsp(&self) -> u64 {
        self.values[Reg::Rsp as usize].unwrap_or(0)
    }

    /// Set the stack pointer.
    pub(crate) fn set_rsp(&mut self, rsp: u64) {
        self.values[Reg::Rsp as usize] = Some(rsp);
    }

    /// The register's value, `None` when not known (RSP always is).
    pub fn get(&self, r: Reg) -> Option<u64> {
        self.values[r as usize]
    }

    /// Set (or forget, with `None`) a register; RSP cannot be forgotten.
    pub fn set(&mut self, r: Reg, v: Option<u64>) {
        if r == Reg::Rsp && v.is_none() {
            return;
        }
        self.values[r as usize] = v;
    }

    /// The same registers as a caller sees them after a call returns:
    /// nonvolatile ones kept, volatile ones unknown.
    pub fn volatiles_forgotten(&self) -> Self {
        let mut r = *self;
        for reg in Reg::ALL {
            if reg != Reg::Rsp && !reg.is_nonvolatile() {
                r.values[reg as usize] = None;
            }
        }
        r
    }

    /// The nonvolatile registers, as a frame reports them.
    pub fn nonvolatiles(&self) -> Nonvolatiles {
        Nonvolatiles {
            rbx: self.get(Reg::Rbx),
            rbp: self.get(Reg::Rbp),
            rsi: self.get(Reg::Rsi),
            rdi: self.get(Reg::Rdi),
            r12: self.get(Reg::R12),
            r13: self.get(Reg::R13),
            r14: self.get(Reg::R14),
            r15: self.get(Reg::R15),
        }
    }

    /// Parse an x64 CONTEXT record. It must be at least [`CONTEXT_SIZE`]
    /// bytes and say CONTEXT_AMD64 | CONTEXT_CONTROL in ContextFlags
    /// (otherwise RIP and RSP are not in it); the integer registers are
    /// taken only when CONTEXT_INTEGER is set.
    pub fn from_context(bytes: &[u8]) -> Result<Self, ContextError> {
        if bytes.len() < CONTEXT_SIZE {
            return Err(ContextError::TooShort { len: bytes.len() });
        }
        let b = Le(bytes);
        let cf = b.u32(OFF_CONTEXT_FLAGS).unwrap_or(0);
        if cf & flags::CONTEXT_CONTROL != flags::CONTEXT_CONTROL {
            return Err(ContextError::NoControl { context_flags: cf });
        }
        let rip = b.u64(OFF_RIP).unwrap_or(0);
        let rsp = b.u64(OFF_RAX + 8 * Reg::Rsp as usize).unwrap_or(0);
        let mut r = Self::new(rip, rsp);
        if cf & flags::CONTEXT_INTEGER == flags::CONTEXT_INTEGER {
            for reg in Reg::ALL {
                r.set(reg, b.u64(OFF_RAX + 8 * reg as usize));
            }
        }
        if !KernelVa(rip).is_canonical() {
            return Err(ContextError::NotCanonical {
                what: "Rip",
                value: rip,
            });
        }
        if !KernelVa(rsp).is_canonical() {
            return Err(ContextError::NotCanonical {
                what: "Rsp",
                value: rsp,
            });
        }
        Ok(r)
    }

    /// Read and parse the CONTEXT record at `va` (WinDbg's `.cxr va`).
    pub fn read_context<M: Memory + ?Sized>(mem: &M, va: KernelVa) -> Result<Self, ContextError> {
        let mut buf = vec![0u8; CONTEXT_SIZE];
        mem.read_virtual(va, &mut buf)
            .map_err(|cause| ContextError::Unreadable { va, cause })?;
        Self::from_context(&buf)
    }

    /// Encode as a CONTEXT record (CONTEXT_CONTROL | CONTEXT_INTEGER;
    /// unknown registers as 0): for tests and tools that plant one.
    pub fn to_context(&self) -> Vec<u8> {
        let mut c = vec![0u8; CONTEXT_SIZE];
        let cf = flags::CONTEXT_CONTROL | flags::CONTEXT_INTEGER;
        c[OFF_CONTEXT_FLAGS..OFF_CONTEXT_FLAGS + 4].copy_from_slice(&cf.to_le_bytes());
        for reg in Reg::ALL {
            let at = OFF_RAX + 8 * reg as usize;
            c[at..at + 8].copy_from_slice(&self.get(reg).unwrap_or(0).to_le_bytes());
        }
        c[OFF_RIP..OFF_RIP + 8].copy_from_slice(&self.rip.to_le_bytes());
        c
    }
}

/// The callee-saved registers valid in one frame (`None`: not known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Nonvolatiles {
    /// RBX, when known.
    pub rbx: Option<u64>,
    /// RBP, when known.
    pub rbp: Option<u64>,
    /// RSI, when known.
    pub rsi: Option<u64>,
    /// RDI, when known.
    pub rdi: Option<u64>,
    /// R12, when known.
    pub r12: Option<u64>,
    /// R13, when known.
    pub r13: Option<u64>,
    /// R14, when known.
    pub r14: Option<u64>,
    /// R15, when known.
    pub r15: Option<u64>,
}

impl Nonvolatiles {
    /// The value of nonvolatile register `r`; `None` when not known or `r` is not nonvolatile.
    pub fn get(&self, r: Reg) -> Option<u64> {
        match r {
            Reg::Rbx => self.rbx,
            Reg::Rbp => self.rbp,
            Reg::Rsi => self.rsi,
            Reg::Rdi => self.rdi,
            Reg::R12 => self.r12,
            Reg::R13 => self.r13,
            Reg::R14 => self.r14,
            Reg::R15 => self.r15,
            _ => None,
        }
    }
}

/// A CONTEXT record that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// Fewer than [`CONTEXT_SIZE`] bytes.
    #[error("a CONTEXT record is {CONTEXT_SIZE:#x} bytes; this one is {len:#x}")]
    TooShort {
        /// The record's length in bytes.
        len: usize,
    },
    /// ContextFlags lacks CONTEXT_AMD64 | CONTEXT_CONTROL: no RIP or RSP.
    #[error(
        "not an x64 CONTEXT with control registers: ContextFlags is {context_flags:#010x}, which lacks CONTEXT_AMD64 | CONTEXT_CONTROL (0x00100001)"
    )]
    NoControl {
        /// ContextFlags as stored.
        context_flags: u32,
    },
    /// RIP or RSP is not a canonical x64 address: not a CONTEXT.
    #[error("the CONTEXT's {what} {value:#018x} is not a canonical address")]
    NotCanonical {
        /// `Rip` or `Rsp`.
        what: &'static str,
        /// The value stored.
        value: u64,
    },
    /// The record could not be read from memory.
    #[error("cannot read the CONTEXT record at {va}: {cause}")]
    Unreadable {
        /// Where the record was to be read.
        va: KernelVa,
        /// Why the read failed.
        cause: MemoryError,
    },
}
