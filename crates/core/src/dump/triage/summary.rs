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
    /// IMAGE_FILE_MACHINE_AMD64 (0x8664).
    X64,
    /// IMAGE_FILE_MACHINE_ARM64 (0xAA64).
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
    /// ServicePackBuild: the service pack level the writer recorded.
    pub service_pack_build: u32,
    /// SizeOfDump: the bytes of triage data, from the start of the file; secondary data blobs
    /// follow at this offset.
    pub size_of_dump: u32,
    /// ValidOffset: where the 'TRGD' end marker sits (always SizeOfDump - 4; a header that breaks
    /// this is refused).
    pub valid_offset: u32,
    /// ContextOffset: file offset of the crash CONTEXT record (0: none).
    pub context_offset: u32,
    /// ExceptionOffset: file offset of the EXCEPTION_RECORD64 (0: none).
    pub exception_offset: u32,
    /// MmOffset: file offset of the memory manager information (not read by pooldump).
    pub mm_offset: u32,
    /// UnloadedDriversOffset: file offset of the MmUnloadedDrivers copy (0: none).
    pub unloaded_drivers_offset: u32,
    /// PrcbOffset: file offset of the crashing processor's KPRCB copy.
    pub prcb_offset: u32,
    /// ProcessOffset: file offset of the crashing thread's EPROCESS copy.
    pub process_offset: u32,
    /// ThreadOffset: file offset of the crashing thread's ETHREAD copy.
    pub thread_offset: u32,
    /// CallStackOffset: file offset of the crashing thread's kernel stack bytes.
    pub call_stack_offset: u32,
    /// SizeOfCallStack: bytes of kernel stack captured from TopOfStack up (the writer caps it at 16
    /// KiB).
    pub size_of_call_stack: u32,
    /// DriverListOffset: file offset of the DUMP_DRIVER_ENTRY64 array.
    pub driver_list_offset: u32,
    /// DriverCount: entries in the driver list.
    pub driver_count: u32,
    /// StringPoolOffset: file offset of the DUMP_STRING pool that holds the driver names.
    pub string_pool_offset: u32,
    /// StringPoolSize: bytes of the string pool.
    pub string_pool_size: u32,
    /// BrokenDriverOffset: file offset of the entry of the driver blamed for the crash (0: none).
    pub broken_driver_offset: u32,
    /// TriageOptions: the options the writer ran with (not interpreted here).
    pub triage_options: u32,
    /// TopOfStack: the virtual address of the first captured stack byte (the crashing thread's
    /// stack pointer).
    pub top_of_stack: KernelVa,
    /// DataPageAddress: the virtual address of the one data page old writers keep near the fault.
    pub data_page_address: KernelVa,
    /// DataPageOffset: file offset of that data page (0: none).
    pub data_page_offset: u32,
    /// DataPageSize: bytes of that data page.
    pub data_page_size: u32,
    /// DebuggerDataOffset: file offset of the KDDEBUGGER_DATA64 copy.
    pub debugger_data_offset: u32,
    /// DebuggerDataSize: bytes of the KDDEBUGGER_DATA64 copy.
    pub debugger_data_size: u32,
    /// DataBlocksOffset: file offset of the TRIAGE_DATA_BLOCK table (address, offset, size each).
    pub data_blocks_offset: u32,
    /// DataBlocksCount: entries in the triage data block table.
    pub data_blocks_count: u32,
}

/// The bug check, with its name when it is a known code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedBugCheck {
    /// BugCheckCode from the dump header (0x0A, 0x139, ...).
    pub code: u32,
    /// The code's symbolic name (`IRQL_NOT_LESS_OR_EQUAL`), None for a code pooldump does not know.
    pub name: Option<&'static str>,
    /// BugCheckParameter1..4, as the header states them; their meaning depends on the code.
    pub parameters: [u64; 4],
}

/// EXCEPTION_RECORD64 in the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionRecord {
    /// ExceptionCode (an NTSTATUS such as 0xC0000005, STATUS_ACCESS_VIOLATION).
    pub code: u32,
    /// ExceptionFlags (1: EXCEPTION_NONCONTINUABLE).
    pub flags: u32,
    /// ExceptionAddress: where the exception was raised.
    pub address: KernelVa,
    /// ExceptionInformation[0..NumberParameters], at most 15 (EXCEPTION_MAXIMUM_PARAMETERS).
    pub parameters: Vec<u64>,
}

/// The crash CONTEXT record, per architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "machine", rename_all = "lowercase")]
pub enum TriageContext {
    /// An x64 (AMD64) CONTEXT.
    X64(X64Context),
    /// An ARM64 CONTEXT.
    Arm64(Arm64Context),
}

/// The x64 CONTEXT's control and integer registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct X64Context {
    /// ContextFlags: which register groups the record holds (CONTEXT_CONTROL, CONTEXT_INTEGER,
    /// ...).
    pub context_flags: u32,
    /// SegCs: the code segment selector (0x10 in kernel mode).
    pub seg_cs: u16,
    /// SegSs: the stack segment selector.
    pub seg_ss: u16,
    /// EFlags.
    pub eflags: u32,
    /// Rax, Rcx, Rdx, Rbx, Rsp, Rbp, Rsi, Rdi, R8..R15, in CONTEXT order.
    pub gpr: [u64; 16],
    /// Rip: the instruction pointer at the crash.
    pub rip: u64,
}

/// The ARM64 CONTEXT's control and integer registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arm64Context {
    /// ContextFlags: which register groups the record holds.
    pub context_flags: u32,
    /// Cpsr: the processor state (flags and exception level).
    pub cpsr: u32,
    /// X0..X28.
    pub x: [u64; 29],
    /// Fp (X29): the frame pointer.
    pub fp: u64,
    /// Lr (X30): the link register, the return address of the current function.
    pub lr: u64,
    /// Sp: the stack pointer.
    pub sp: u64,
    /// Pc: the program counter at the crash.
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
    /// DllBase: where the image is loaded.
    pub base: KernelVa,
    /// SizeOfImage, in bytes.
    pub size: u32,
    /// TimeDateStamp from the image's PE header (seconds since 1970); with SizeOfImage it names the
    /// file on a symbol server.
    pub time_date_stamp: u32,
    /// CheckSum from the image's PE header.
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
    /// The driver's file name, at most 12 characters (the entry holds no more).
    pub name: String,
    /// StartAddress: where the image was loaded.
    pub start: KernelVa,
    /// EndAddress: one past the image's last byte.
    pub end: KernelVa,
}

/// What the KDBG copy says (KDDEBUGGER_DATA64, wdbgexts.h's offsets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KdbgCopy {
    /// nt!KdDebuggerDataBlock (from the dump header).
    pub va: KernelVa,
    /// Header.Size.
    pub size: u32,
    /// KernBase: where ntoskrnl is loaded.
    pub kern_base: KernelVa,
    /// PsLoadedModuleList: the head of the loaded-module list.
    pub ps_loaded_module_list: KernelVa,
    /// PsActiveProcessHead: the head of the process list.
    pub ps_active_process_head: KernelVa,
    /// PoolTrackTable: nt!PoolTrackTable, the per-tag counters (the table itself is not in a small
    /// dump).
    pub pool_track_table: KernelVa,
    /// KiProcessorBlock: the array of KPRCB pointers, one per processor.
    pub ki_processor_block: KernelVa,
    /// MmUnloadedDrivers: the kernel's array of recently unloaded drivers.
    pub mm_unloaded_drivers: KernelVa,
    /// The structure offsets the kernel publishes in its debugger data.
    pub offsets: KdbgOffsets,
}

/// Offsets and sizes from KDDEBUGGER_DATA64 (0x298 onwards): the kernel's
/// own statement of its layouts, which a small dump relies on in place of
/// a PDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct KdbgOffsets {
    /// OffsetKThreadApcProcess: KTHREAD.ApcState.Process (0: not published).
    pub kthread_apc_process: u16,
    /// OffsetKThreadState: KTHREAD.State (0: not published).
    pub kthread_state: u16,
    /// OffsetKThreadKernelStack: KTHREAD.KernelStack.
    pub kthread_kernel_stack: u16,
    /// OffsetKThreadInitialStack: KTHREAD.InitialStack.
    pub kthread_initial_stack: u16,
    /// SizeEProcess: the size of EPROCESS in bytes.
    pub size_eprocess: u16,
    /// OffsetEprocessPeb: EPROCESS.Peb.
    pub eprocess_peb: u16,
    /// OffsetEprocessDirectoryTableBase: KPROCESS.DirectoryTableBase (0: not published).
    pub eprocess_directory_table_base: u16,
    /// SizePrcb: the size of KPRCB in bytes (may exceed the PRCB copy the file holds).
    pub size_prcb: u16,
    /// OffsetPrcbCurrentThread: KPRCB.CurrentThread (0: not published).
    pub prcb_current_thread: u16,
    /// OffsetPrcbNumber: KPRCB.Number.
    pub prcb_number: u16,
    /// SizeEThread: the size of ETHREAD in bytes.
    pub size_ethread: u16,
    /// Windows 8+: KTHREAD.StackLimit and StackBase.
    pub kthread_stack_limit: Option<u32>,
    /// Windows 8+: KTHREAD.StackBase's offset; None when the copy is too old to hold it.
    pub kthread_stack_base: Option<u32>,
}

/// A secondary data blob written by a bug check callback after the
/// triage data (DUMP_BLOB_HEADER).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecondaryBlob {
    /// The blob's tag: the GUID its bug check callback registered.
    pub tag: Guid,
    /// DataSize: the blob's payload in bytes.
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
    /// KTHREAD.StackBase: the top (highest address) of the kernel stack; None without the Windows
    /// 8+ offsets or a thread copy.
    pub stack_base: Option<KernelVa>,
    /// KTHREAD.StackLimit: the lowest address of the kernel stack; None as for `stack_base`.
    pub stack_limit: Option<KernelVa>,
    /// EPROCESS.DirectoryTableBase.
    pub process_directory_table_base: Option<u64>,
}

/// A readable range of the sparse memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapturedRange {
    /// The kernel virtual address of the first byte.
    pub va: KernelVa,
    /// The range's length in bytes.
    pub len: u64,
    #[serde(skip)]
    pub(super) file_offset: usize,
    /// "call stack", "data block 17", "KDBG copy".
    pub what: String,
}

/// Everything the small memory dump says, for `info`.
#[derive(Debug, Clone, Serialize)]
pub struct TriageSummary {
    /// The crashed machine's architecture (MachineImageType).
    pub machine: Machine,
    /// MajorVersion from the dump header (0xF for a free build, 0xC for a checked build).
    pub major_version: u32,
    /// MinorVersion from the dump header: the Windows build number (19041, 22621, ...).
    pub build: u32,
    /// NumberProcessors.
    pub processors: u32,
    /// The bug check code, its name and its four parameters.
    pub bug_check: NamedBugCheck,
    /// DirectoryTableBase: the physical address of the kernel's page tables (no tables are in the
    /// file).
    pub directory_table_base: PhysAddr,
    /// PfnDataBase: the virtual address of the PFN database.
    pub pfn_database: KernelVa,
    /// PsLoadedModuleList, from the dump header.
    pub ps_loaded_module_list: KernelVa,
    /// PsActiveProcessHead, from the dump header.
    pub ps_active_process_head: KernelVa,
    /// KdDebuggerDataBlock: where the KDBG lives in the crashed kernel.
    pub kd_debugger_data_block: KernelVa,
    /// SystemTime: when the machine crashed.
    pub system_time: FileTime,
    /// SystemUpTime: how long it had been running.
    pub system_up_time: UpTime,
    /// ProductType (1 workstation, 2 domain controller, 3 server).
    pub product_type: u32,
    /// SuiteMask (the VER_SUITE_* bits).
    pub suite_mask: u32,
    /// RequiredDumpSpace: the file size the writer announced, in bytes.
    pub required_dump_space: u64,
    /// The parts the file holds, by name: those MiniDumpFields flags whose TRIAGE_DUMP64 offset is
    /// not 0 (Windows flags "broken driver" even when it blamed no driver and left the offset 0).
    pub fields: Vec<&'static str>,
    /// MiniDumpFields as stored ("PAGE" from a writer that predates it: every part is then trusted
    /// by its offset).
    pub fields_raw: u32,
    /// 'TRGD' at ValidOffset.
    pub complete: bool,
    /// The TRIAGE_DUMP64 header itself.
    pub triage: TriageHeader,
    /// The exception record; None when the file holds none (ExceptionOffset 0 or its MiniDumpFields
    /// bit clear).
    pub exception: Option<ExceptionRecord>,
    /// The crash CONTEXT; None when the file holds none or it does not fit.
    pub context: Option<TriageContext>,
    /// The crashing processor, thread and process, read from the copies through the KDBG offsets.
    pub crashing: CrashingThread,
    /// The loaded drivers, in list order (empty when the file holds no list).
    pub drivers: Vec<TriageDriver>,
    /// The MmUnloadedDrivers copy, in the order the file lists them (the kernel
    /// keeps the last 50).
    pub unloaded_drivers: Vec<UnloadedDriver>,
    /// The KDBG copy; None when absent, too small, or its OwnerTag is not 'KDBG'.
    pub kdbg: Option<KdbgCopy>,
    /// Bytes of the crashing thread's stack in the file (0: none).
    pub stack_bytes: u64,
    /// How many triage data blocks were taken (empty blocks and blocks outside the file are not
    /// counted).
    pub data_blocks: u64,
    /// Bytes in those data blocks.
    pub data_block_bytes: u64,
    /// The secondary data blobs bug check callbacks wrote after SizeOfDump.
    pub secondary_blobs: Vec<SecondaryBlob>,
    /// What did not parse or fit, one sentence each (a truncated file, a list that runs past the
    /// end, ...).
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
