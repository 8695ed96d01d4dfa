//! Small memory dumps: DumpType 4, a DUMP_HEADER64 followed by a
//! TRIAGE_DUMP64 header (what Windows writes to C:\Windows\Minidump).
//!
//! A small memory dump holds no physical memory. It holds the bug check
//! and its CONTEXT, copies of the crashing processor's KPRCB and of the
//! crashing thread's ETHREAD and EPROCESS, the thread's kernel stack from
//! the stack pointer up, the loaded-driver list with a string pool, the
//! unloaded drivers, a copy of KDDEBUGGER_DATA64, and "triage data
//! blocks": ranges of kernel virtual memory the kernel chose to keep
//! (IopAddRunTimeTriageDataBlocks, KeAddTriageDumpDataBlock). After the
//! triage data come the secondary data blobs of bug check callbacks.
//!
//! [`TriageDump`] parses all of that and implements [`Memory`] as a sparse
//! memory: the stack, the data blocks and the KDBG copy are readable at
//! their virtual addresses; any other read fails with
//! [`MemoryError::NotCaptured`], naming the address and what the file
//! holds. There is no page table, so [`Memory::translate`] fails too.
//!
//! Sources (follow the evidence where they disagree; the real Windows 11
//! ARM64 file in ../shared/realworld/ is the evidence):
//! * the TRIAGE_DUMP64 declaration (ntiodump.h as published with the
//!   Windows Research Kernel, rizin's dmp_specs.h): the field order below;
//! * the WRK's triage writer (IopWriteTriageDump): the order of sections,
//!   8-byte alignment, data blocks packed without padding after their
//!   headers, the 'TRGD' marker at ValidOffset = SizeOfDump - 4;
//! * ntiodump.h says DUMP_STRING.Length is "in bytes"; the WRK writer and
//!   the real file store it in WCHARs (33 for
//!   `\SystemRoot\system32\ntoskrnl.exe`): read as characters;
//! * the WRK writer names each driver from BaseDllName; Windows 11 stores
//!   the full path (`\SystemRoot\system32\ntoskrnl.exe`) and zeroes the
//!   copied entry's list links and UNICODE_STRINGs: both are accepted;
//! * the real file's KDBG copy says SizePrcb 0x9680 while the PRCB
//!   section is 0x7680 bytes long (the next section starts there): section
//!   sizes are taken from the file's own offsets, never from KDBG alone.
//!
//! Every count and offset is checked against the file: nothing here
//! allocates or loops more than the file's length can back.
//!
//! This file holds [`TriageDump`] and its [`Memory`]; `summary.rs` is what
//! the file holds, as parsed ([`TriageSummary`] and its parts); `parse.rs`
//! reads it, with `ranges.rs` (the captured memory and structure copies)
//! and `drivers.rs` (the driver lists and secondary blobs), from the
//! offsets and sizes in `format.rs`.

mod drivers;
mod format;
mod parse;
mod ranges;
mod summary;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::header::off;
use super::{Backing, DumpError, DumpErrorKind};
use crate::addr::{KernelVa, PhysAddr};
use crate::bytes::Le;
use crate::memory::{Memory, MemoryError, Translation};

use format::DUMP_TYPE_TRIAGE;
use parse::parse;
pub use summary::{
    Arm64Context, CapturedRange, CrashingThread, ExceptionRecord, KdbgCopy, KdbgOffsets, Machine,
    NamedBugCheck, SecondaryBlob, TriageContext, TriageDriver, TriageHeader, TriageSummary,
    UnloadedDriver, X64Context,
};

/// An opened small memory dump. `Send + Sync`, like [`super::CrashDump`].
pub struct TriageDump {
    path: PathBuf,
    data: Arc<Backing>,
    summary: TriageSummary,
    /// Sorted by address.
    ranges: Vec<CapturedRange>,
    prcb: Option<(usize, usize)>,
    process: Option<(usize, usize)>,
    thread: Option<(usize, usize)>,
}

impl fmt::Debug for TriageDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TriageDump")
            .field("path", &self.path)
            .field("machine", &self.summary.machine)
            .field("ranges", &self.ranges.len())
            .finish_non_exhaustive()
    }
}

/// Is this file (its first bytes) a 64-bit small memory dump?
pub fn is_small_memory_dump(head: &[u8]) -> bool {
    head.starts_with(b"PAGEDU64") && Le(head).u32(off::DUMP_TYPE) == Some(DUMP_TYPE_TRIAGE)
}

impl TriageDump {
    /// Open and parse a small memory dump.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DumpError> {
        let path = path.as_ref();
        Self::from_backing(path.to_path_buf(), Backing::open(path)?)
    }

    /// Parse a small memory dump held in memory; `name` is used in
    /// messages.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, DumpError> {
        Self::from_backing(name.into(), Backing::Owned(bytes))
    }

    fn from_backing(path: PathBuf, data: Backing) -> Result<Self, DumpError> {
        let parsed = parse(data.bytes()).map_err(|e| DumpError {
            path: path.clone(),
            kind: DumpErrorKind::Header(e),
        })?;
        Ok(Self {
            path,
            data: Arc::new(data),
            summary: parsed.summary,
            ranges: parsed.ranges,
            prcb: parsed.prcb,
            process: parsed.process,
            thread: parsed.thread,
        })
    }

    /// The file this dump was read from (the name given to
    /// [`from_bytes`](Self::from_bytes)).
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The file's length in bytes.
    pub fn file_size(&self) -> u64 {
        self.data.bytes().len() as u64
    }
    /// Everything the file holds, as parsed (what `pooldump info` shows).
    pub fn summary(&self) -> &TriageSummary {
        &self.summary
    }
    /// The readable ranges (stack, data blocks, KDBG copy), by address.
    pub fn ranges(&self) -> &[CapturedRange] {
        &self.ranges
    }
    /// The crash CONTEXT record (x64 or ARM64), when the file holds one.
    pub fn context(&self) -> Option<&TriageContext> {
        self.summary.context.as_ref()
    }
    /// The copy of the crashing processor's KPRCB.
    pub fn prcb_copy(&self) -> Option<&[u8]> {
        self.section(self.prcb)
    }
    /// The copy of the crashing thread's EPROCESS.
    pub fn process_copy(&self) -> Option<&[u8]> {
        self.section(self.process)
    }
    /// The copy of the crashing thread's ETHREAD.
    pub fn thread_copy(&self) -> Option<&[u8]> {
        self.section(self.thread)
    }
    fn section(&self, s: Option<(usize, usize)>) -> Option<&[u8]> {
        let (at, len) = s?;
        self.data.bytes().get(at..at.checked_add(len)?)
    }

    /// The answer to "what is the pool usage?" for a small memory dump:
    /// there is none to be had, what the file does hold, and how to get a
    /// dump that has pool.
    pub fn no_pool_explanation(&self) -> String {
        let s = &self.summary;
        let mut held = vec![format!("the bug check ({})", bugcheck_text(&s.bug_check))];
        if s.context.is_some() {
            held.push("the crash CONTEXT".into());
        }
        if s.stack_bytes > 0 {
            held.push(format!(
                "{} bytes of the crashing thread's stack",
                s.stack_bytes
            ));
        }
        if self.prcb.is_some() || self.thread.is_some() || self.process.is_some() {
            held.push("copies of its KPRCB, ETHREAD and EPROCESS".into());
        }
        held.push(format!(
            "{} loaded and {} unloaded drivers",
            s.drivers.len(),
            s.unloaded_drivers.len()
        ));
        if s.data_blocks > 0 {
            held.push(format!(
                "{} triage data blocks ({} bytes)",
                s.data_blocks, s.data_block_bytes
            ));
        }
        let tracker = match &s.kdbg {
            Some(k) if k.pool_track_table.0 != 0 => format!(
                " Its KDBG copy gives nt!PoolTrackTable at {}, but the table itself is not in the file.",
                k.pool_track_table
            ),
            _ => String::new(),
        };
        format!(
            "{}: a small memory dump (DumpType 4, {}) holds no pool pages and no pool tag tracker, so no per-tag table can be had from it. It holds {}.{tracker} \
             To capture pool, set Startup and Recovery > Write debugging information to \"Kernel memory dump\" or \"Automatic memory dump\" \
             (HKLM\\SYSTEM\\CurrentControlSet\\Control\\CrashControl, CrashDumpEnabled = 2 or 7) and analyze the next MEMORY.DMP, \
             or watch the live machine with `pooldump watch --kdnet`. `pooldump info` shows everything this file holds.",
            self.path.display(),
            s.machine,
            held.join(", ")
        )
    }

    fn find(&self, va: u64) -> Option<&CapturedRange> {
        // The last range starting at or below `va`; ranges may overlap
        // (data blocks can cover the stack), so look back a little.
        let i = self.ranges.partition_point(|r| r.va.0 <= va);
        self.ranges[..i]
            .iter()
            .rev()
            .take(64)
            .find(|r| va - r.va.0 < r.len)
    }

    fn absent(&self, va: KernelVa) -> MemoryError {
        let i = self.ranges.partition_point(|r| r.va.0 <= va.0);
        let before = i.checked_sub(1).and_then(|j| self.ranges.get(j));
        let after = self.ranges.get(i);
        let near = match (before, after) {
            (Some(b), _) if (va.0 - b.va.0).saturating_sub(b.len) < 0x1000 => Some(b),
            (_, Some(a)) if a.va.0 - va.0 < 0x1000 => Some(a),
            _ => None,
        };
        let detail = match near {
            Some(r) => format!(
                "the nearest captured range is the {} at {} ({} bytes)",
                r.what, r.va, r.len
            ),
            None => format!(
                "it holds only the crashing thread's stack, {} triage data blocks and the KDBG copy",
                self.summary.data_blocks
            ),
        };
        MemoryError::NotCaptured {
            va,
            what: format!("the small memory dump {}", self.path.display()),
            detail,
        }
    }
}

fn bugcheck_text(b: &NamedBugCheck) -> String {
    match b.name {
        Some(n) => format!("{n}, {:#x}", b.code),
        None => format!("{:#x}", b.code),
    }
}

impl Memory for TriageDump {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
    fn kernel_dtb(&self) -> PhysAddr {
        self.summary.directory_table_base
    }
    /// A small memory dump holds no physical pages.
    fn read_physical(&self, pa: PhysAddr, _buf: &mut [u8]) -> Result<(), MemoryError> {
        Err(MemoryError::not_in_source(pa))
    }
    /// No page tables are in the file: a virtual address is readable only
    /// through the captured ranges.
    fn translate(&self, va: KernelVa) -> Result<Translation, MemoryError> {
        Err(self.absent(va))
    }
    fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), MemoryError> {
        let n = self.read_virtual_partial(va, buf)?;
        if n < buf.len() {
            return Err(self.absent(va.wrapping_add(n as u64)));
        }
        Ok(())
    }
    fn read_virtual_partial(&self, va: KernelVa, buf: &mut [u8]) -> Result<usize, MemoryError> {
        let file = self.data.bytes();
        let mut done = 0usize;
        while done < buf.len() {
            let cur = va.0.wrapping_add(done as u64);
            if cur < va.0 {
                break;
            }
            let Some(r) = self.find(cur) else { break };
            let skip = (cur - r.va.0) as usize;
            let n = ((r.len as usize) - skip).min(buf.len() - done);
            let at = r.file_offset + skip;
            let Some(src) = file.get(at..at + n) else {
                break;
            };
            buf[done..done + n].copy_from_slice(src);
            done += n;
        }
        if done == 0 && !buf.is_empty() {
            return Err(self.absent(va));
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests;
