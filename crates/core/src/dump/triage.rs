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

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::bugcheck::bugcheck_name;
use super::header::{HEADER_SIZE, off};
use super::time::{FileTime, UpTime};
use super::{Backing, DumpError, DumpErrorKind, HeaderError};
use crate::addr::{KernelVa, PhysAddr};
use crate::bytes::{Le, escape_ascii};
use crate::kernel::Guid;
use crate::memory::{Memory, MemoryError, Translation};

/// The DumpType of a small memory dump.
pub const DUMP_TYPE_TRIAGE: u32 = 4;
/// 'TRGD' at ValidOffset: the writer finished.
pub const TRIAGE_VALID: u32 = u32::from_le_bytes(*b"TRGD");
/// IMAGE_FILE_MACHINE_AMD64 and _ARM64.
pub const MACHINE_AMD64: u32 = 0x8664;
pub const MACHINE_ARM64: u32 = 0xAA64;

/// TRIAGE_DUMP64 field offsets, relative to its start at 0x2000.
mod toff {
    pub const SERVICE_PACK_BUILD: usize = 0x00;
    pub const SIZE_OF_DUMP: usize = 0x04;
    pub const VALID_OFFSET: usize = 0x08;
    pub const CONTEXT_OFFSET: usize = 0x0C;
    pub const EXCEPTION_OFFSET: usize = 0x10;
    pub const MM_OFFSET: usize = 0x14;
    pub const UNLOADED_DRIVERS_OFFSET: usize = 0x18;
    pub const PRCB_OFFSET: usize = 0x1C;
    pub const PROCESS_OFFSET: usize = 0x20;
    pub const THREAD_OFFSET: usize = 0x24;
    pub const CALL_STACK_OFFSET: usize = 0x28;
    pub const SIZE_OF_CALL_STACK: usize = 0x2C;
    pub const DRIVER_LIST_OFFSET: usize = 0x30;
    pub const DRIVER_COUNT: usize = 0x34;
    pub const STRING_POOL_OFFSET: usize = 0x38;
    pub const STRING_POOL_SIZE: usize = 0x3C;
    pub const BROKEN_DRIVER_OFFSET: usize = 0x40;
    pub const TRIAGE_OPTIONS: usize = 0x44;
    pub const TOP_OF_STACK: usize = 0x48;
    // 0x50: ArchitectureSpecific (IA64 backing store), 16 bytes.
    pub const DATA_PAGE_ADDRESS: usize = 0x60;
    pub const DATA_PAGE_OFFSET: usize = 0x68;
    pub const DATA_PAGE_SIZE: usize = 0x6C;
    pub const DEBUGGER_DATA_OFFSET: usize = 0x70;
    pub const DEBUGGER_DATA_SIZE: usize = 0x74;
    pub const DATA_BLOCKS_OFFSET: usize = 0x78;
    pub const DATA_BLOCKS_COUNT: usize = 0x7C;
    pub const SIZE: usize = 0x80;
}

/// DUMP_DRIVER_ENTRY64: DriverNameOffset, alignment, then a
/// KLDR_DATA_TABLE_ENTRY64 copy (wdbgexts.h's 64-bit layout).
const DRIVER_ENTRY_SIZE: usize = 0x90;
const DRIVER_LDR: usize = 8;
const LDR_DLL_BASE: usize = 0x30;
const LDR_SIZE_OF_IMAGE: usize = 0x40;
const LDR_CHECKSUM: usize = 0x78;
const LDR_TIME_DATE_STAMP: usize = 0x80;
/// DUMP_UNLOADED_DRIVERS64: UNICODE_STRING64, 24 bytes of name, start, end.
const UNLOADED_ENTRY_SIZE: usize = 0x38;
const UNLOADED_NAME_BYTES: usize = 24;
/// TRIAGE_DATA_BLOCK: Address (8), Offset (4), Size (4).
const DATA_BLOCK_SIZE: usize = 16;
/// The writer caps the stack at 16 KiB (MAX_TRIAGE_STACK_SIZE); real
/// stacks are at most a few pages. A larger claim is refused.
const MAX_CALL_STACK: u32 = 1 << 20;

/// The MiniDumpFields bits of a small memory dump (TRIAGE_DUMP_*): which
/// parts the writer filled.
const VALID_FIELDS: &[(u32, &str)] = &[
    (0x0001, "context"),
    (0x0002, "exception"),
    (0x0004, "PRCB"),
    (0x0008, "process"),
    (0x0010, "thread"),
    (0x0020, "stack"),
    (0x0040, "driver list"),
    (0x0080, "broken driver"),
    (0x0100, "Mm information"),
    (0x0200, "data page"),
    (0x0400, "debugger data"),
    (0x0800, "data blocks"),
];

/// The processor architecture of the crashed machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    X64,
    Arm64,
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Machine::X64 => "x64 (0x8664)",
            Machine::Arm64 => "ARM64 (0xAA64)",
        })
    }
}

/// The TRIAGE_DUMP64 header as the file states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriageHeader {
    pub service_pack_build: u32,
    pub size_of_dump: u32,
    pub valid_offset: u32,
    pub context_offset: u32,
    pub exception_offset: u32,
    pub mm_offset: u32,
    pub unloaded_drivers_offset: u32,
    pub prcb_offset: u32,
    pub process_offset: u32,
    pub thread_offset: u32,
    pub call_stack_offset: u32,
    pub size_of_call_stack: u32,
    pub driver_list_offset: u32,
    pub driver_count: u32,
    pub string_pool_offset: u32,
    pub string_pool_size: u32,
    pub broken_driver_offset: u32,
    pub triage_options: u32,
    pub top_of_stack: KernelVa,
    pub data_page_address: KernelVa,
    pub data_page_offset: u32,
    pub data_page_size: u32,
    pub debugger_data_offset: u32,
    pub debugger_data_size: u32,
    pub data_blocks_offset: u32,
    pub data_blocks_count: u32,
}

/// The bug check, with its name when it is a known code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedBugCheck {
    pub code: u32,
    pub name: Option<&'static str>,
    pub parameters: [u64; 4],
}

/// EXCEPTION_RECORD64 in the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionRecord {
    pub code: u32,
    pub flags: u32,
    pub address: KernelVa,
    pub parameters: Vec<u64>,
}

/// The crash CONTEXT record, per architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "machine", rename_all = "lowercase")]
pub enum TriageContext {
    X64(X64Context),
    Arm64(Arm64Context),
}

/// The x64 CONTEXT's control and integer registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct X64Context {
    pub context_flags: u32,
    pub seg_cs: u16,
    pub seg_ss: u16,
    pub eflags: u32,
    /// Rax, Rcx, Rdx, Rbx, Rsp, Rbp, Rsi, Rdi, R8..R15, in CONTEXT order.
    pub gpr: [u64; 16],
    pub rip: u64,
}

/// The ARM64 CONTEXT's control and integer registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arm64Context {
    pub context_flags: u32,
    pub cpsr: u32,
    /// X0..X28.
    pub x: [u64; 29],
    pub fp: u64,
    pub lr: u64,
    pub sp: u64,
    pub pc: u64,
}

impl TriageContext {
    /// The program counter (Rip, Pc).
    pub fn pc(&self) -> u64 {
        match self {
            TriageContext::X64(c) => c.rip,
            TriageContext::Arm64(c) => c.pc,
        }
    }
    /// The stack pointer (Rsp, Sp).
    pub fn sp(&self) -> u64 {
        match self {
            TriageContext::X64(c) => c.gpr[4],
            TriageContext::Arm64(c) => c.sp,
        }
    }
    /// The frame pointer (Rbp, Fp/X29).
    pub fn frame_pointer(&self) -> u64 {
        match self {
            TriageContext::X64(c) => c.gpr[5],
            TriageContext::Arm64(c) => c.fp,
        }
    }
    /// The return address register, where the architecture has one (Lr).
    pub fn link_register(&self) -> Option<u64> {
        match self {
            TriageContext::X64(_) => None,
            TriageContext::Arm64(c) => Some(c.lr),
        }
    }

    fn parse(machine: Machine, b: Le<'_>) -> Option<Self> {
        Some(match machine {
            Machine::X64 => {
                let mut gpr = [0u64; 16];
                for (i, r) in gpr.iter_mut().enumerate() {
                    *r = b.u64(0x78 + 8 * i)?;
                }
                TriageContext::X64(X64Context {
                    context_flags: b.u32(0x30)?,
                    seg_cs: b.u16(0x38)?,
                    seg_ss: b.u16(0x42)?,
                    eflags: b.u32(0x44)?,
                    gpr,
                    rip: b.u64(0xF8)?,
                })
            }
            Machine::Arm64 => {
                let mut x = [0u64; 29];
                for (i, r) in x.iter_mut().enumerate() {
                    *r = b.u64(8 + 8 * i)?;
                }
                TriageContext::Arm64(Arm64Context {
                    context_flags: b.u32(0)?,
                    cpsr: b.u32(4)?,
                    x,
                    fp: b.u64(0xF0)?,
                    lr: b.u64(0xF8)?,
                    sp: b.u64(0x100)?,
                    pc: b.u64(0x108)?,
                })
            }
        })
    }

    /// CONTEXT sizes: x64 0x4D0, ARM64 0x390.
    fn size(machine: Machine) -> usize {
        match machine {
            Machine::X64 => 0x4D0,
            Machine::Arm64 => 0x390,
        }
    }
}

/// One entry of the driver list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriageDriver {
    /// The name from the string pool (a full path on recent Windows).
    pub name: String,
    pub base: KernelVa,
    pub size: u32,
    pub time_date_stamp: u32,
    pub checksum: u32,
}

impl TriageDriver {
    /// The file name without its directory.
    pub fn base_name(&self) -> &str {
        self.name.rsplit(['\\', '/']).next().unwrap_or(&self.name)
    }
}

/// One entry of MmUnloadedDrivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnloadedDriver {
    pub name: String,
    pub start: KernelVa,
    pub end: KernelVa,
}

/// What the KDBG copy says (KDDEBUGGER_DATA64, wdbgexts.h's offsets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KdbgCopy {
    /// nt!KdDebuggerDataBlock (from the dump header).
    pub va: KernelVa,
    /// Header.Size.
    pub size: u32,
    pub kern_base: KernelVa,
    pub ps_loaded_module_list: KernelVa,
    pub ps_active_process_head: KernelVa,
    pub pool_track_table: KernelVa,
    pub ki_processor_block: KernelVa,
    pub mm_unloaded_drivers: KernelVa,
    /// The structure offsets the kernel publishes in its debugger data.
    pub offsets: KdbgOffsets,
}

/// Offsets and sizes from KDDEBUGGER_DATA64 (0x298 onwards): the kernel's
/// own statement of its layouts, which a small dump relies on in place of
/// a PDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct KdbgOffsets {
    pub kthread_apc_process: u16,
    pub kthread_state: u16,
    pub kthread_kernel_stack: u16,
    pub kthread_initial_stack: u16,
    pub size_eprocess: u16,
    pub eprocess_peb: u16,
    pub eprocess_directory_table_base: u16,
    pub size_prcb: u16,
    pub prcb_current_thread: u16,
    pub prcb_number: u16,
    pub size_ethread: u16,
    /// Windows 8+: KTHREAD.StackLimit and StackBase.
    pub kthread_stack_limit: Option<u32>,
    pub kthread_stack_base: Option<u32>,
}

/// A secondary data blob written by a bug check callback after the
/// triage data (DUMP_BLOB_HEADER).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecondaryBlob {
    pub tag: Guid,
    pub size: u32,
}

/// The crashing thread and its process, as the copies describe them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrashingThread {
    /// KPRCB.Number of the crashing processor.
    pub processor: Option<u32>,
    /// KPRCB.CurrentThread.
    pub thread: Option<KernelVa>,
    /// KTHREAD.ApcState.Process.
    pub process: Option<KernelVa>,
    /// KTHREAD.State (2 = Running).
    pub thread_state: Option<u8>,
    pub stack_base: Option<KernelVa>,
    pub stack_limit: Option<KernelVa>,
    /// EPROCESS.DirectoryTableBase.
    pub process_directory_table_base: Option<u64>,
}

/// A readable range of the sparse memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapturedRange {
    pub va: KernelVa,
    pub len: u64,
    #[serde(skip)]
    file_offset: usize,
    /// "call stack", "data block 17", "KDBG copy".
    pub what: String,
}

/// Everything the small memory dump says, for `info`.
#[derive(Debug, Clone, Serialize)]
pub struct TriageSummary {
    pub machine: Machine,
    pub major_version: u32,
    pub build: u32,
    pub processors: u32,
    pub bug_check: NamedBugCheck,
    pub directory_table_base: PhysAddr,
    pub pfn_database: KernelVa,
    pub ps_loaded_module_list: KernelVa,
    pub ps_active_process_head: KernelVa,
    pub kd_debugger_data_block: KernelVa,
    pub system_time: FileTime,
    pub system_up_time: UpTime,
    pub product_type: u32,
    pub suite_mask: u32,
    pub required_dump_space: u64,
    /// MiniDumpFields: the parts the writer filled, by name.
    pub fields: Vec<&'static str>,
    pub fields_raw: u32,
    /// 'TRGD' at ValidOffset.
    pub complete: bool,
    pub triage: TriageHeader,
    pub exception: Option<ExceptionRecord>,
    pub context: Option<TriageContext>,
    pub crashing: CrashingThread,
    pub drivers: Vec<TriageDriver>,
    pub unloaded_drivers: Vec<UnloadedDriver>,
    pub kdbg: Option<KdbgCopy>,
    pub stack_bytes: u64,
    pub data_blocks: u64,
    pub data_block_bytes: u64,
    pub secondary_blobs: Vec<SecondaryBlob>,
    pub warnings: Vec<String>,
}

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
        let err = |kind| DumpError {
            path: path.to_path_buf(),
            kind,
        };
        let io = |what| move |source| err(DumpErrorKind::Io { what, source });
        let file = std::fs::File::open(path).map_err(io("open the file"))?;
        let meta = file.metadata().map_err(io("read the file's size"))?;
        if meta.is_dir() {
            return Err(err(DumpErrorKind::IsDirectory));
        }
        let data = if meta.len() == 0 {
            Backing::Owned(Vec::new())
        } else {
            // SAFETY: read-only map; see CrashDump::open for the contract.
            Backing::Mapped(
                unsafe { memmap2::Mmap::map(&file) }.map_err(io("memory-map the file"))?,
            )
        };
        Self::from_backing(path.to_path_buf(), data)
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

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn file_size(&self) -> u64 {
        self.data.bytes().len() as u64
    }
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
        Err(MemoryError::NotInSource {
            pa,
            va: None,
            level: None,
        })
    }
    /// No page tables are in the file: a virtual address is readable only
    /// through the captured ranges.
    fn translate(&self, va: KernelVa) -> Result<Translation, MemoryError> {
        Err(self.absent(va))
    }
    fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), MemoryError> {
        let n = self.read_virtual_partial(va, buf)?;
        if n < buf.len() {
            return Err(self.absent(KernelVa(va.0.wrapping_add(n as u64))));
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

struct Parsed {
    summary: TriageSummary,
    ranges: Vec<CapturedRange>,
    prcb: Option<(usize, usize)>,
    process: Option<(usize, usize)>,
    thread: Option<(usize, usize)>,
}

fn bad(msg: impl Into<String>) -> HeaderError {
    HeaderError::BadTriage(msg.into())
}

fn parse(file: &[u8]) -> Result<Parsed, HeaderError> {
    let b = Le(file);
    let len = file.len();
    if !file.starts_with(b"PAGEDU64") {
        return Err(HeaderError::BadSignature {
            found: escape_ascii(file.get(..8).unwrap_or(file)),
        });
    }
    if len < HEADER_SIZE + toff::SIZE {
        return Err(bad(format!(
            "the file is {len} bytes and ends before its TRIAGE_DUMP64 header (0x2000-0x2080)"
        )));
    }
    let u32_at = |o: usize| b.u32(o).unwrap_or(0);
    let u64_at = |o: usize| b.u64(o).unwrap_or(0);
    let dump_type = u32_at(off::DUMP_TYPE);
    if dump_type != DUMP_TYPE_TRIAGE {
        return Err(bad(format!("DumpType is {dump_type}, not 4")));
    }
    let machine = match u32_at(off::MACHINE_IMAGE_TYPE) {
        MACHINE_AMD64 => Machine::X64,
        MACHINE_ARM64 => Machine::Arm64,
        m => {
            return Err(HeaderError::UnsupportedMachine {
                value: m,
                name: "neither x64 nor ARM64",
            });
        }
    };
    let mut warnings = Vec::new();
    let t = HEADER_SIZE;
    let tu32 = |o: usize| u32_at(t + o);
    let th = TriageHeader {
        service_pack_build: tu32(toff::SERVICE_PACK_BUILD),
        size_of_dump: tu32(toff::SIZE_OF_DUMP),
        valid_offset: tu32(toff::VALID_OFFSET),
        context_offset: tu32(toff::CONTEXT_OFFSET),
        exception_offset: tu32(toff::EXCEPTION_OFFSET),
        mm_offset: tu32(toff::MM_OFFSET),
        unloaded_drivers_offset: tu32(toff::UNLOADED_DRIVERS_OFFSET),
        prcb_offset: tu32(toff::PRCB_OFFSET),
        process_offset: tu32(toff::PROCESS_OFFSET),
        thread_offset: tu32(toff::THREAD_OFFSET),
        call_stack_offset: tu32(toff::CALL_STACK_OFFSET),
        size_of_call_stack: tu32(toff::SIZE_OF_CALL_STACK),
        driver_list_offset: tu32(toff::DRIVER_LIST_OFFSET),
        driver_count: tu32(toff::DRIVER_COUNT),
        string_pool_offset: tu32(toff::STRING_POOL_OFFSET),
        string_pool_size: tu32(toff::STRING_POOL_SIZE),
        broken_driver_offset: tu32(toff::BROKEN_DRIVER_OFFSET),
        triage_options: tu32(toff::TRIAGE_OPTIONS),
        top_of_stack: KernelVa(u64_at(t + toff::TOP_OF_STACK)),
        data_page_address: KernelVa(u64_at(t + toff::DATA_PAGE_ADDRESS)),
        data_page_offset: tu32(toff::DATA_PAGE_OFFSET),
        data_page_size: tu32(toff::DATA_PAGE_SIZE),
        debugger_data_offset: tu32(toff::DEBUGGER_DATA_OFFSET),
        debugger_data_size: tu32(toff::DEBUGGER_DATA_SIZE),
        data_blocks_offset: tu32(toff::DATA_BLOCKS_OFFSET),
        data_blocks_count: tu32(toff::DATA_BLOCKS_COUNT),
    };
    // Every writer seen (the WRK's and Windows 11's) puts the 'TRGD'
    // marker in the last 4 bytes of SizeOfDump: a header that breaks this
    // is not a TRIAGE_DUMP64 (a kernel dump whose DumpType was damaged).
    if th.valid_offset.checked_add(4) != Some(th.size_of_dump)
        || (th.size_of_dump as usize) < HEADER_SIZE + toff::SIZE
    {
        return Err(bad(format!(
            "SizeOfDump {:#x} and ValidOffset {:#x} do not fit together (ValidOffset is SizeOfDump - 4)",
            th.size_of_dump, th.valid_offset
        )));
    }
    let fields_raw = u32_at(off::MINIDUMP_FIELDS);
    // A writer that predates MiniDumpFields leaves "PAGE" there: trust the
    // offsets alone then.
    let fields_known = fields_raw != u32::from_le_bytes(*b"PAGE");
    let has = |bit: u32| !fields_known || fields_raw & bit != 0;
    let fields: Vec<&'static str> = if fields_known {
        VALID_FIELDS
            .iter()
            .filter(|(bit, _)| fields_raw & bit != 0)
            .map(|(_, n)| *n)
            .collect()
    } else {
        Vec::new()
    };

    if (th.size_of_dump as usize) > len {
        warnings.push(format!(
            "SizeOfDump is {} bytes but the file is {len}: the dump was cut short",
            th.size_of_dump
        ));
    }
    let complete = b.u32(th.valid_offset as usize) == Some(TRIAGE_VALID);
    if !complete {
        warnings.push(format!(
            "no 'TRGD' marker at ValidOffset {:#x}: the writer may not have finished",
            th.valid_offset
        ));
    }

    // Section boundaries: each section runs to the next one's start.
    let starts: Vec<usize> = {
        let mut v: Vec<usize> = [
            th.mm_offset,
            th.unloaded_drivers_offset,
            th.prcb_offset,
            th.process_offset,
            th.thread_offset,
            th.call_stack_offset,
            th.driver_list_offset,
            th.string_pool_offset,
            th.debugger_data_offset,
            th.data_blocks_offset,
            th.data_page_offset,
            th.size_of_dump,
        ]
        .iter()
        .map(|&o| o as usize)
        .filter(|&o| o >= HEADER_SIZE && o <= len)
        .collect();
        v.push(len);
        v.sort_unstable();
        v.dedup();
        v
    };
    let section = |at: u32, cap: Option<u16>, bit: u32| -> Option<(usize, usize)> {
        let at = at as usize;
        if at < HEADER_SIZE + toff::SIZE || at >= len || !has(bit) {
            return None;
        }
        let next = *starts.iter().find(|&&s| s > at)?;
        let mut n = next - at;
        if let Some(c) = cap.filter(|&c| c > 0) {
            n = n.min(c as usize);
        }
        Some((at, n))
    };

    let bug_code = u32_at(off::BUGCHECK_CODE);
    let mut params = [0u64; 4];
    for (i, p) in params.iter_mut().enumerate() {
        *p = u64_at(off::BUGCHECK_PARAMETERS + 8 * i);
    }

    // Exception record and context: in the header on every writer seen.
    let exception = (th.exception_offset != 0 && has(0x2))
        .then(|| {
            let e = Le(file.get(th.exception_offset as usize..)?);
            let n = e.u32(0x18)?.min(15) as usize;
            Some(ExceptionRecord {
                code: e.u32(0)?,
                flags: e.u32(4)?,
                address: KernelVa(e.u64(0x10)?),
                parameters: (0..n).filter_map(|i| e.u64(0x20 + 8 * i)).collect(),
            })
        })
        .flatten();
    let context = (th.context_offset != 0 && has(0x1))
        .then(|| {
            let at = th.context_offset as usize;
            let c = file.get(at..at.checked_add(TriageContext::size(machine))?)?;
            TriageContext::parse(machine, Le(c))
        })
        .flatten();
    if th.context_offset != 0 && has(0x1) && context.is_none() {
        warnings.push(format!(
            "ContextOffset {:#x} does not leave room for a CONTEXT record",
            th.context_offset
        ));
    }

    let mut ranges = Vec::new();

    // The call stack: TopOfStack up, SizeOfCallStack bytes.
    let mut stack_bytes = 0;
    if th.call_stack_offset != 0 && th.size_of_call_stack != 0 && has(0x20) {
        let at = th.call_stack_offset as usize;
        let n = th.size_of_call_stack;
        if n > MAX_CALL_STACK || at.checked_add(n as usize).is_none_or(|e| e > len) {
            warnings.push(format!(
                "the call stack ({n:#x} bytes at {at:#x}) does not fit in the file; it is ignored"
            ));
        } else {
            stack_bytes = u64::from(n);
            ranges.push(CapturedRange {
                va: th.top_of_stack,
                len: u64::from(n),
                file_offset: at,
                what: "crashing thread's stack".into(),
            });
        }
    }

    // KDBG copy, readable at KdDebuggerDataBlock.
    let kdbg_va = KernelVa(u64_at(off::KD_DEBUGGER_DATA_BLOCK));
    let mut kdbg = None;
    if th.debugger_data_offset != 0 && th.debugger_data_size != 0 && has(0x400) {
        let at = th.debugger_data_offset as usize;
        let n = th.debugger_data_size as usize;
        match file.get(at..at.saturating_add(n)) {
            Some(k) if n >= 0x340 => {
                kdbg = parse_kdbg(Le(k), kdbg_va, &mut warnings);
                if kdbg_va.0 != 0 {
                    ranges.push(CapturedRange {
                        va: kdbg_va,
                        len: n as u64,
                        file_offset: at,
                        what: "KDBG copy".into(),
                    });
                }
            }
            Some(_) => warnings.push(format!(
                "the debugger data copy is {n:#x} bytes, too small for KDDEBUGGER_DATA64"
            )),
            None => warnings.push(format!(
                "the debugger data copy ({n:#x} bytes at {at:#x}) does not fit in the file"
            )),
        }
    }

    // Data blocks: a table of (VA, offset, size), bounded by the file.
    let (mut data_blocks, mut data_block_bytes) = (0u64, 0u64);
    if th.data_blocks_offset != 0 && th.data_blocks_count != 0 && has(0x800) {
        let at = th.data_blocks_offset as usize;
        let count = th.data_blocks_count as usize;
        match count
            .checked_mul(DATA_BLOCK_SIZE)
            .and_then(|n| at.checked_add(n))
        {
            Some(end) if end <= len => {
                let mut bad_blocks = 0;
                for i in 0..count {
                    let e = at + DATA_BLOCK_SIZE * i;
                    let va = u64_at(e);
                    let offset = u32_at(e + 8) as usize;
                    let size = u32_at(e + 12) as usize;
                    if size == 0 {
                        continue;
                    }
                    if offset.checked_add(size).is_none_or(|x| x > len) || offset < end {
                        bad_blocks += 1;
                        continue;
                    }
                    data_blocks += 1;
                    data_block_bytes += size as u64;
                    ranges.push(CapturedRange {
                        va: KernelVa(va),
                        len: size as u64,
                        file_offset: offset,
                        what: format!("triage data block {i}"),
                    });
                }
                if bad_blocks > 0 {
                    warnings.push(format!(
                        "{bad_blocks} triage data blocks point outside the file; they are ignored"
                    ));
                }
            }
            _ => warnings.push(format!(
                "DataBlocksCount {count} at {at:#x} runs past the end of the file; the data blocks are ignored"
            )),
        }
    }
    // The data page (old writers): one page of memory near the fault.
    if th.data_page_offset != 0 && th.data_page_size != 0 && has(0x200) {
        let at = th.data_page_offset as usize;
        let n = th.data_page_size as usize;
        if at.checked_add(n).is_some_and(|e| e <= len) && n <= 0x10000 {
            ranges.push(CapturedRange {
                va: th.data_page_address,
                len: n as u64,
                file_offset: at,
                what: "data page".into(),
            });
        }
    }
    ranges.sort_by_key(|r| (r.va.0, r.file_offset));

    // Copies of the PRCB, process and thread.
    let offs = kdbg.as_ref().map(|k| k.offsets).unwrap_or_default();
    let prcb = section(th.prcb_offset, Some(offs.size_prcb), 0x4);
    let process = section(th.process_offset, Some(offs.size_eprocess), 0x8);
    let thread = section(th.thread_offset, Some(offs.size_ethread), 0x10);
    let crashing = crashing_thread(file, prcb, process, thread, &offs, kdbg.is_some());

    let drivers = if th.driver_list_offset != 0 && has(0x40) {
        parse_drivers(file, &th, &mut warnings)
    } else {
        Vec::new()
    };
    let unloaded_drivers = match th.unloaded_drivers_offset {
        0 => Vec::new(),
        at => parse_unloaded(file, at as usize, &mut warnings),
    };
    let secondary_blobs = parse_blobs(file, th.size_of_dump as usize, &mut warnings);

    let summary = TriageSummary {
        machine,
        major_version: u32_at(off::MAJOR_VERSION),
        build: u32_at(off::MINOR_VERSION),
        processors: u32_at(off::NUMBER_PROCESSORS),
        bug_check: NamedBugCheck {
            code: bug_code,
            name: bugcheck_name(bug_code),
            parameters: params,
        },
        directory_table_base: PhysAddr(u64_at(off::DIRECTORY_TABLE_BASE)),
        pfn_database: KernelVa(u64_at(off::PFN_DATABASE)),
        ps_loaded_module_list: KernelVa(u64_at(off::PS_LOADED_MODULE_LIST)),
        ps_active_process_head: KernelVa(u64_at(off::PS_ACTIVE_PROCESS_HEAD)),
        kd_debugger_data_block: kdbg_va,
        system_time: FileTime(u64_at(off::SYSTEM_TIME)),
        system_up_time: UpTime(u64_at(off::SYSTEM_UP_TIME)),
        product_type: u32_at(off::PRODUCT_TYPE),
        suite_mask: u32_at(off::SUITE_MASK),
        required_dump_space: u64_at(off::REQUIRED_DUMP_SPACE),
        fields,
        fields_raw,
        complete,
        triage: th,
        exception,
        context,
        crashing,
        drivers,
        unloaded_drivers,
        kdbg,
        stack_bytes,
        data_blocks,
        data_block_bytes,
        secondary_blobs,
        warnings,
    };
    Ok(Parsed {
        summary,
        ranges,
        prcb,
        process,
        thread,
    })
}

/// KDDEBUGGER_DATA64 (wdbgexts.h): header, KernBase and the fields `info`
/// shows. A copy whose OwnerTag is not 'KDBG' is reported and not used.
fn parse_kdbg(k: Le<'_>, va: KernelVa, warnings: &mut Vec<String>) -> Option<KdbgCopy> {
    if k.bytes(0x10, 4) != Some(b"KDBG") {
        warnings.push("the debugger data copy's OwnerTag is not 'KDBG'; it is ignored".into());
        return None;
    }
    let size = k.u32(0x14)?;
    let ptr = |o: usize| KernelVa(k.u64(o).unwrap_or(0));
    let h = |o: usize| k.u16(o).unwrap_or(0);
    let has = |end: usize| (size as usize) >= end && k.0.len() >= end;
    Some(KdbgCopy {
        va,
        size,
        kern_base: ptr(0x18),
        ps_loaded_module_list: ptr(0x48),
        ps_active_process_head: ptr(0x50),
        pool_track_table: ptr(0x1B8),
        ki_processor_block: ptr(0x218),
        mm_unloaded_drivers: ptr(0x220),
        offsets: KdbgOffsets {
            kthread_kernel_stack: h(0x29C),
            kthread_initial_stack: h(0x29E),
            kthread_apc_process: h(0x2A0),
            kthread_state: h(0x2A2),
            size_eprocess: h(0x2A8),
            eprocess_peb: h(0x2AA),
            eprocess_directory_table_base: h(0x2AE),
            size_prcb: h(0x2B0),
            prcb_current_thread: h(0x2B4),
            prcb_number: h(0x2BE),
            size_ethread: h(0x2C0),
            kthread_stack_limit: has(0x348).then(|| k.u32(0x340)).flatten(),
            kthread_stack_base: has(0x348).then(|| k.u32(0x344)).flatten(),
        },
    })
}

/// The crashing thread, through the offsets the kernel published in KDBG.
fn crashing_thread(
    file: &[u8],
    prcb: Option<(usize, usize)>,
    process: Option<(usize, usize)>,
    thread: Option<(usize, usize)>,
    o: &KdbgOffsets,
    have_kdbg: bool,
) -> CrashingThread {
    let field = |s: Option<(usize, usize)>, at: u64, n: usize| -> Option<&[u8]> {
        let (base, len) = s?;
        let at = usize::try_from(at).ok()?;
        if !have_kdbg || at.checked_add(n)? > len {
            return None;
        }
        file.get(base + at..base + at + n)
    };
    let u64f =
        |s, at: u64| field(s, at, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let va = |v: Option<u64>| v.filter(|&x| x != 0).map(KernelVa);
    CrashingThread {
        processor: field(prcb, u64::from(o.prcb_number), 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))),
        thread: va(
            u64f(prcb, u64::from(o.prcb_current_thread)).filter(|_| o.prcb_current_thread != 0)
        ),
        process: va(
            u64f(thread, u64::from(o.kthread_apc_process)).filter(|_| o.kthread_apc_process != 0)
        ),
        thread_state: field(thread, u64::from(o.kthread_state), 1)
            .filter(|_| o.kthread_state != 0)
            .map(|b| b[0]),
        stack_base: o
            .kthread_stack_base
            .and_then(|at| va(u64f(thread, u64::from(at)))),
        stack_limit: o
            .kthread_stack_limit
            .and_then(|at| va(u64f(thread, u64::from(at)))),
        process_directory_table_base: u64f(process, u64::from(o.eprocess_directory_table_base))
            .filter(|_| o.eprocess_directory_table_base != 0),
    }
}

fn parse_drivers(file: &[u8], th: &TriageHeader, warnings: &mut Vec<String>) -> Vec<TriageDriver> {
    let b = Le(file);
    let at = th.driver_list_offset as usize;
    let count = th.driver_count as usize;
    let fits = count
        .checked_mul(DRIVER_ENTRY_SIZE)
        .and_then(|n| at.checked_add(n))
        .is_some_and(|e| e <= file.len());
    if !fits {
        warnings.push(format!(
            "DriverCount {count} at {at:#x} runs past the end of the file; the driver list is ignored"
        ));
        return Vec::new();
    }
    let mut out = Vec::with_capacity(count);
    let mut unnamed = 0;
    for i in 0..count {
        let e = at + DRIVER_ENTRY_SIZE * i;
        let ldr = e + DRIVER_LDR;
        let name_at = b.u32(e).unwrap_or(0) as usize;
        let name = dump_string(file, name_at).unwrap_or_else(|| {
            unnamed += 1;
            String::new()
        });
        out.push(TriageDriver {
            name,
            base: KernelVa(b.u64(ldr + LDR_DLL_BASE).unwrap_or(0)),
            size: b.u32(ldr + LDR_SIZE_OF_IMAGE).unwrap_or(0),
            time_date_stamp: b.u32(ldr + LDR_TIME_DATE_STAMP).unwrap_or(0),
            checksum: b.u32(ldr + LDR_CHECKSUM).unwrap_or(0),
        });
    }
    if unnamed > 0 {
        warnings.push(format!(
            "{unnamed} driver entries have no readable name in the string pool"
        ));
    }
    out
}

/// DUMP_STRING: a ULONG length in WCHARs (see the module notes), then the
/// characters and a NUL.
fn dump_string(file: &[u8], at: usize) -> Option<String> {
    let b = Le(file);
    let n = b.u32(at)? as usize;
    // A driver path is at most a few hundred characters (MAX_PATH-ish);
    // anything longer is corrupt.
    if n > 0x800 {
        return None;
    }
    let raw = b.bytes(at + 4, n * 2)?;
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Some(String::from_utf16_lossy(&units).replace(char::from(0), ""))
}

/// MmUnloadedDrivers: a ULONG64 count, then DUMP_UNLOADED_DRIVERS64 entries
/// (the name truncated to 12 WCHARs in the entry itself).
fn parse_unloaded(file: &[u8], at: usize, warnings: &mut Vec<String>) -> Vec<UnloadedDriver> {
    let b = Le(file);
    let Some(count) = b.u64(at) else {
        warnings.push(format!(
            "UnloadedDriversOffset {at:#x} is past the end of the file"
        ));
        return Vec::new();
    };
    // The kernel keeps the last 50 (MI_UNLOADED_DRIVERS).
    if count > 256 {
        warnings.push(format!(
            "the unloaded-driver list claims {count} entries; it is ignored"
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in 0..count as usize {
        let e = at + 8 + UNLOADED_ENTRY_SIZE * i;
        let (Some(len), Some(start), Some(end)) = (b.u16(e), b.u64(e + 0x28), b.u64(e + 0x30))
        else {
            warnings.push(format!(
                "the unloaded-driver list is cut short after {i} of {count} entries"
            ));
            break;
        };
        let n = (len as usize).min(UNLOADED_NAME_BYTES) & !1;
        let raw = b.bytes(e + 0x10, n).unwrap_or(&[]);
        let units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        out.push(UnloadedDriver {
            name: String::from_utf16_lossy(&units),
            start: KernelVa(start),
            end: KernelVa(end),
        });
    }
    out
}

/// Secondary data: DUMP_BLOB_FILE_HEADER ('DumpBlob') at SizeOfDump, then
/// DUMP_BLOB_HEADERs to the end of the file.
fn parse_blobs(file: &[u8], at: usize, warnings: &mut Vec<String>) -> Vec<SecondaryBlob> {
    let b = Le(file);
    if b.bytes(at, 8) != Some(b"DumpBlob") {
        return Vec::new();
    }
    let mut out = Vec::new();
    let Some(hs) = b.u32(at + 8) else {
        return out;
    };
    let mut o = at + hs.max(16) as usize;
    while o + 0x20 <= file.len() {
        let (Some(hsize), Some(tag), Some(size), Some(pre), Some(post)) = (
            b.u32(o),
            b.array::<16>(o + 4),
            b.u32(o + 20),
            b.u32(o + 24),
            b.u32(o + 28),
        ) else {
            break;
        };
        if hsize < 0x20 {
            warnings.push(format!(
                "a secondary data blob at {o:#x} has a bad header; the rest is ignored"
            ));
            break;
        }
        let next = [hsize, pre, size, post]
            .iter()
            .try_fold(o, |acc, &x| acc.checked_add(x as usize));
        match next {
            Some(n) if n <= file.len() => {
                out.push(SecondaryBlob {
                    tag: Guid(tag),
                    size,
                });
                o = n;
            }
            _ => {
                warnings.push(format!(
                    "the secondary data blob at {o:#x} runs past the end of the file"
                ));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_dump_is_not_a_small_one() {
        let mut h = vec![0u8; 0x2100];
        h[..8].copy_from_slice(b"PAGEDU64");
        h[off::DUMP_TYPE..off::DUMP_TYPE + 4].copy_from_slice(&5u32.to_le_bytes());
        assert!(!is_small_memory_dump(&h));
        h[off::DUMP_TYPE..off::DUMP_TYPE + 4].copy_from_slice(&4u32.to_le_bytes());
        assert!(is_small_memory_dump(&h));
    }

    #[test]
    fn hostile_counts_are_bounded_by_the_file() {
        let mut f = vec![0u8; 0x3000];
        f[..8].copy_from_slice(b"PAGEDU64");
        f[off::DUMP_TYPE..off::DUMP_TYPE + 4].copy_from_slice(&4u32.to_le_bytes());
        f[off::MACHINE_IMAGE_TYPE..off::MACHINE_IMAGE_TYPE + 4]
            .copy_from_slice(&MACHINE_AMD64.to_le_bytes());
        f[off::MINIDUMP_FIELDS..off::MINIDUMP_FIELDS + 4].copy_from_slice(&0xCFFu32.to_le_bytes());
        let t = HEADER_SIZE;
        let put = |f: &mut Vec<u8>, o: usize, v: u32| {
            f[t + o..t + o + 4].copy_from_slice(&v.to_le_bytes())
        };
        put(&mut f, toff::SIZE_OF_DUMP, 0x3000);
        put(&mut f, toff::VALID_OFFSET, 0x2FFC);
        put(&mut f, toff::DRIVER_LIST_OFFSET, 0x2100);
        put(&mut f, toff::DRIVER_COUNT, u32::MAX);
        put(&mut f, toff::DATA_BLOCKS_OFFSET, 0x2100);
        put(&mut f, toff::DATA_BLOCKS_COUNT, u32::MAX);
        put(&mut f, toff::UNLOADED_DRIVERS_OFFSET, 0x2100);
        f[0x2100..0x2108].copy_from_slice(&u64::MAX.to_le_bytes());
        put(&mut f, toff::CALL_STACK_OFFSET, 0x2200);
        put(&mut f, toff::SIZE_OF_CALL_STACK, u32::MAX);
        let d = TriageDump::from_bytes("hostile.dmp", f).unwrap();
        let s = d.summary();
        assert!(s.drivers.is_empty() && s.unloaded_drivers.is_empty());
        assert_eq!(s.data_blocks, 0);
        assert_eq!(s.stack_bytes, 0);
        assert!(s.warnings.len() >= 4, "{:?}", s.warnings);
        let mut b = [0u8; 8];
        let e = d
            .read_virtual(KernelVa(0xFFFF_F800_0000_0000), &mut b)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("not in the small memory dump hostile.dmp"),
            "{e}"
        );
    }
}
