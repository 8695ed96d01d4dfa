//! Stack memory for one walk, read in aligned chunks (one read per chunk,
//! never across a page) under a byte budget; where a chunk cannot be read
//! whole, word by word.

use std::collections::HashMap;

use super::image::ReadStats;
use super::{WalkEnd, WhyWalkStopped};
use crate::addr::KernelVa;
use crate::memory::{Memory, MemoryError};

/// Bytes per stack read: most frames are under 0x100 bytes, so a chunk
/// holds several, and one round trip of a live target brings them all.
pub const STACK_CHUNK: u64 = 0x400;

pub(crate) struct StackReader<'m, M: Memory + ?Sized> {
    mem: &'m M,
    chunks: HashMap<u64, Result<Box<[u8]>, MemoryError>>,
    budget: u64,
    pub stats: ReadStats,
    last: Option<WalkEnd>,
}

impl<'m, M: Memory + ?Sized> StackReader<'m, M> {
    pub fn new(mem: &'m M, budget: u64) -> Self {
        Self {
            mem,
            chunks: HashMap::new(),
            budget,
            stats: ReadStats::default(),
            last: None,
        }
    }

    /// Why the last read failed (for an operation that only says "no").
    pub fn last_error(&self) -> String {
        self.last
            .as_ref()
            .map_or_else(|| "a stack read failed".into(), |e| e.detail.clone())
    }

    /// The 8 bytes at `addr`.
    pub fn read_u64(&mut self, addr: u64) -> Result<u64, WalkEnd> {
        let r = self.read_inner(addr);
        if let Err(e) = &r {
            self.last = Some(e.clone());
        }
        r
    }

    fn read_inner(&mut self, addr: u64) -> Result<u64, WalkEnd> {
        if !KernelVa(addr).is_canonical() || addr > u64::MAX - 8 {
            return Err(WalkEnd {
                reason: WhyWalkStopped::BadStackPointer,
                detail: format!("the stack address {addr:#x} is not canonical"),
            });
        }
        let mut out = [0u8; 8];
        for (i, b) in out.iter_mut().enumerate() {
            let a = addr + i as u64;
            let base = a & !(STACK_CHUNK - 1);
            if !self.chunks.contains_key(&base) {
                if self.stats.bytes + STACK_CHUNK > self.budget {
                    return Err(WalkEnd {
                        reason: WhyWalkStopped::ReadLimit,
                        detail: format!(
                            "the walk read {} bytes of stack, its limit; the stack at {} was not read",
                            self.stats.bytes,
                            KernelVa(a)
                        ),
                    });
                }
                let mut buf = vec![0u8; STACK_CHUNK as usize].into_boxed_slice();
                self.stats.reads += 1;
                self.stats.bytes += STACK_CHUNK;
                let r = self
                    .mem
                    .read_virtual(KernelVa(base), &mut buf)
                    .map(|()| buf);
                self.chunks.insert(base, r);
            }
            match &self.chunks[&base] {
                Ok(c) => *b = c[(a - base) as usize],
                Err(_) => return self.read_word(addr),
            }
        }
        Ok(u64::from_le_bytes(out))
    }

    /// The 8 bytes at `addr` on their own, when the chunk around them
    /// could not be read whole: a source that holds only part of a page
    /// (a small memory dump keeps the stack from Rsp up, not the chunk
    /// below it).
    fn read_word(&mut self, addr: u64) -> Result<u64, WalkEnd> {
        if self.stats.bytes + 8 > self.budget {
            return Err(WalkEnd {
                reason: WhyWalkStopped::ReadLimit,
                detail: format!(
                    "the walk read {} bytes of stack, its limit; the stack at {} was not read",
                    self.stats.bytes,
                    KernelVa(addr)
                ),
            });
        }
        let mut out = [0u8; 8];
        self.stats.reads += 1;
        self.stats.bytes += 8;
        match self.mem.read_virtual(KernelVa(addr), &mut out) {
            Ok(()) => Ok(u64::from_le_bytes(out)),
            Err(e) => Err(WalkEnd {
                reason: WhyWalkStopped::StackUnreadable,
                detail: format!("cannot read the stack at {}: {e}", KernelVa(addr)),
            }),
        }
    }
}
