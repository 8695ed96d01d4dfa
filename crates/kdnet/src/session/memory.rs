//! The stopped target as [`Memory`]: reads cut into aligned blocks that
//! never cross a page, each cached until the target runs, and a virtual
//! block the target cannot read taken through the page walk over physical
//! reads, so a session and a dump of the same machine give the same bytes
//! and the same errors.

use std::sync::atomic::Ordering;

use pooldump_core::memory::{MemoryError, Translation, read_virtual_by_pages, walk};
use pooldump_core::{KernelVa, Memory, PhysAddr};

use crate::api::Space;
use crate::error::KdnetError;

use super::LiveTarget;

impl LiveTarget {
    fn transport(e: KdnetError) -> MemoryError {
        MemoryError::Transport(e.to_string())
    }

    /// Read `buf` from `space` block by block; returns how many bytes were
    /// read before the first block the target could not read.
    pub(super) fn read_blocks(
        &self,
        space: Space,
        addr: u64,
        buf: &mut [u8],
    ) -> Result<usize, MemoryError> {
        let bs = u64::from(self.block);
        let mut done = 0usize;
        let mut g = self.lock();
        while done < buf.len() {
            let cur = addr.wrapping_add(done as u64);
            let base = cur & !(bs - 1);
            let off = (cur - base) as usize;
            let n = (bs as usize - off).min(buf.len() - done);
            let mut tmp = [0u8; 2048];
            let ok = g
                .block(space, base, self.block, &mut tmp[..bs as usize])
                .map_err(Self::transport)?;
            if !ok {
                break;
            }
            buf[done..done + n].copy_from_slice(&tmp[off..off + n]);
            done += n;
        }
        Ok(done)
    }

    /// The virtual read: the target's own ReadVirtualMemory per block, and
    /// for blocks it cannot read, the page walk (transition pages) with
    /// the walk's error if that fails too.
    fn read_virtual_inner(
        &self,
        va: KernelVa,
        buf: &mut [u8],
        partial: bool,
    ) -> Result<usize, MemoryError> {
        read_virtual_by_pages(self, va, buf, partial, |cur, rest| {
            self.read_blocks(Space::Virtual, cur.0, rest)
        })
    }
}

impl Memory for LiveTarget {
    fn describe(&self) -> String {
        format!("KDNET target {} (build {})", self.peer(), self.build())
    }

    fn kernel_dtb(&self) -> PhysAddr {
        PhysAddr(self.dtb.load(Ordering::Relaxed))
    }

    fn read_physical(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        let n = self.read_blocks(Space::Physical, pa.0, buf)?;
        if n < buf.len() {
            return Err(MemoryError::not_in_source(PhysAddr(
                pa.0.wrapping_add(n as u64),
            )));
        }
        Ok(())
    }

    fn translate(&self, va: KernelVa) -> Result<Translation, MemoryError> {
        walk::translate(self, self.kernel_dtb(), va)
    }

    fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.read_virtual_inner(va, buf, false).map(|_| ())
    }

    fn read_virtual_partial(&self, va: KernelVa, buf: &mut [u8]) -> Result<usize, MemoryError> {
        self.read_virtual_inner(va, buf, true)
    }
}
