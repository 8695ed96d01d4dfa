//! What a small memory dump holds, as parsed: the TRIAGE_DUMP64 header,
//! the bug check and exception, the crash CONTEXT per architecture, the
//! driver lists, the KDBG copy and the offsets it publishes, the crashing
//! thread, the captured ranges, and the [`TriageSummary`] of it all.

use std::fmt;

use serde::Serialize;

use crate::addr::{KernelVa, PhysAddr};
use crate::bytes::Le;
use crate::dump::time::{FileTime, UpTime};
use crate::kernel::Guid;

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

    pub(super) fn parse(machine: Machine, b: Le<'_>) -> Option<Self> {
        Some(match machine {
            Machine::X64 => TriageContext::X64(X64Context {
                context_flags: b.u32(0x30)?,
                seg_cs: b.u16(0x38)?,
                seg_ss: b.u16(0x42)?,
                eflags: b.u32(0x44)?,
                gpr: registers(b, 0x78)?,
                rip: b.u64(0xF8)?,
            }),
            Machine::Arm64 => TriageContext::Arm64(Arm64Context {
                context_flags: b.u32(0)?,
                cpsr: b.u32(4)?,
                x: registers(b, 8)?,
                fp: b.u64(0xF0)?,
                lr: b.u64(0xF8)?,
                sp: b.u64(0x100)?,
                pc: b.u64(0x108)?,
            }),
        })
    }

    /// CONTEXT sizes: x64 0x4D0, ARM64 0x390.
    pub(super) fn size(machine: Machine) -> usize {
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
    pub(super) file_offset: usize,
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

/// `N` consecutive 64-bit registers of a CONTEXT, from `at`.
fn registers<const N: usize>(b: Le<'_>, at: usize) -> Option<[u64; N]> {
    let mut r = [0u64; N];
    for (i, v) in r.iter_mut().enumerate() {
        *v = b.u64(at + 8 * i)?;
    }
    Some(r)
}
