//! The protocol's numbers: DbgKd ApiNumbers, the statuses it carries, the
//! register offsets of the x64 CONTEXT, and the sizes of its messages.

/// DbgKd ApiNumber values (windbgkd.h).
pub mod api_number {
    /// DbgKdReadVirtualMemoryApi: read target virtual memory (DBGKD_READ_MEMORY64).
    pub const READ_VIRTUAL_MEMORY: u32 = 0x3130;
    /// DbgKdWriteVirtualMemoryApi: write target virtual memory (DBGKD_WRITE_MEMORY64).
    pub const WRITE_VIRTUAL_MEMORY: u32 = 0x3131;
    /// DbgKdGetContextApi: the stopped processor's CONTEXT.
    pub const GET_CONTEXT: u32 = 0x3132;
    /// DbgKdSetContextApi: replace the stopped processor's CONTEXT.
    pub const SET_CONTEXT: u32 = 0x3133;
    /// DbgKdWriteBreakPointApi: plant a software breakpoint (DBGKD_WRITE_BREAKPOINT64).
    pub const WRITE_BREAKPOINT: u32 = 0x3134;
    /// DbgKdRestoreBreakPointApi: remove one by its handle (DBGKD_RESTORE_BREAKPOINT).
    pub const RESTORE_BREAKPOINT: u32 = 0x3135;
    /// DbgKdContinueApi: resume with a ContinueStatus (DBGKD_CONTINUE).
    pub const CONTINUE: u32 = 0x3136;
    /// DbgKdReadControlSpaceApi: per-processor control data (on x64, item 2 is KSPECIAL_REGISTERS).
    pub const READ_CONTROL_SPACE: u32 = 0x3137;
    /// DbgKdWriteControlSpaceApi: write control space.
    pub const WRITE_CONTROL_SPACE: u32 = 0x3138;
    /// DbgKdReadIoSpaceApi: read an I/O port (DBGKD_READ_WRITE_IO64).
    pub const READ_IO_SPACE: u32 = 0x3139;
    /// DbgKdWriteIoSpaceApi: write an I/O port.
    pub const WRITE_IO_SPACE: u32 = 0x313A;
    /// DbgKdRebootApi: reboot the target (no reply).
    pub const REBOOT: u32 = 0x313B;
    /// DbgKdContinueApi2: resume with a ContinueStatus and trace/DR7 control (DBGKD_CONTINUE2).
    pub const CONTINUE2: u32 = 0x313C;
    /// DbgKdReadPhysicalMemoryApi: read target physical memory.
    pub const READ_PHYSICAL_MEMORY: u32 = 0x313D;
    /// DbgKdWritePhysicalMemoryApi: write target physical memory.
    pub const WRITE_PHYSICAL_MEMORY: u32 = 0x313E;
    /// DbgKdGetVersionApi: DBGKD_GET_VERSION64 (KernBase, PsLoadedModuleList, DebuggerDataList).
    pub const GET_VERSION: u32 = 0x3146;
    /// DbgKdCauseBugCheckApi: make the target bug-check.
    pub const CAUSE_BUGCHECK: u32 = 0x3149;
    /// DbgKdSwitchProcessor: stop on another processor (its number in Processor).
    pub const SWITCH_PROCESSOR: u32 = 0x3150;
    /// DbgKdReadMachineSpecificRegister (DBGKD_READ_WRITE_MSR).
    pub const READ_MSR: u32 = 0x3152;
    /// DbgKdWriteMachineSpecificRegister (DBGKD_READ_WRITE_MSR).
    pub const WRITE_MSR: u32 = 0x3153;
    /// DbgKdClearAllInternalBreakpointsApi: drop every internal breakpoint (no reply).
    pub const CLEAR_ALL_INTERNAL_BREAKPOINTS: u32 = 0x315A;
    /// DbgKdQueryMemoryApi: which address space an address is in (DBGKD_QUERY_MEMORY).
    pub const QUERY_MEMORY: u32 = 0x315C;
    /// DbgKdGetContextExApi: a byte range of the CONTEXT (DBGKD_CONTEXT_EX).
    pub const GET_CONTEXT_EX: u32 = 0x315F;
    /// DbgKdSetContextExApi: write a byte range of the CONTEXT (DBGKD_CONTEXT_EX).
    pub const SET_CONTEXT_EX: u32 = 0x3160;

    /// DbgKdExceptionStateChange: the target stopped on an exception
    /// (DBGKM_EXCEPTION64); the first of the state-change numbers.
    pub const STATE_EXCEPTION: u32 = 0x3030;
    /// DbgKdLoadSymbolsStateChange: an image loaded or unloaded (DBGKD_LOAD_SYMBOLS64).
    pub const STATE_LOAD_SYMBOLS: u32 = 0x3031;
    /// DbgKdCommandStringStateChange: the target asks the debugger to run a command string.
    pub const STATE_COMMAND_STRING: u32 = 0x3032;

    /// DbgKdPrintStringApi: DbgPrint output (DBGKD_DEBUG_IO, PACKET_TYPE_KD_DEBUG_IO).
    pub const PRINT_STRING: u32 = 0x3230;
    /// DbgKdGetStringApi: DbgPrompt, asking the debugger for a line.
    pub const GET_STRING: u32 = 0x3231;

    /// DbgKdCreateFileApi: open a file on the debugger host (DBGKD_FILE_IO, `.kdfiles`).
    pub const FILE_CREATE: u32 = 0x3430;
    /// DbgKdReadFileApi: read from a handle DbgKdCreateFileApi returned.
    pub const FILE_READ: u32 = 0x3431;
    /// DbgKdWriteFileApi: write to such a handle.
    pub const FILE_WRITE: u32 = 0x3432;
    /// DbgKdCloseFileApi: close such a handle.
    pub const FILE_CLOSE: u32 = 0x3433;
}

/// NTSTATUS and debugger status values the protocol uses.
pub mod status {
    /// STATUS_SUCCESS.
    pub const SUCCESS: u32 = 0;
    /// STATUS_UNSUCCESSFUL: a request the target could not carry out.
    pub const UNSUCCESSFUL: u32 = 0xC000_0001;
    /// STATUS_NO_SUCH_FILE: the answer to a DbgKdCreateFileApi for a file the host does not serve.
    pub const NO_SUCH_FILE: u32 = 0xC000_000F;
    /// STATUS_BREAKPOINT: the exception code of an `int3` stop.
    pub const BREAKPOINT: u32 = 0x8000_0003;
    /// DBG_CONTINUE: the ContinueStatus that resumes after a breakpoint or break-in.
    pub const DBG_CONTINUE: u32 = 0x0001_0002;
    /// DBG_EXCEPTION_HANDLED: continue, the exception handled (`gh`).
    pub const DBG_EXCEPTION_HANDLED: u32 = 0x0001_0001;
    /// DBG_EXCEPTION_NOT_HANDLED: continue, passing the exception to the target's handlers (`gn`).
    pub const DBG_EXCEPTION_NOT_HANDLED: u32 = 0x8001_0001;
}

/// Offsets of the registers in the x64 CONTEXT (winnt.h; Rip and the
/// layout verified in the capture, docs/kdnet.md, "The protocol in brief").
pub mod context {
    /// Offset of CONTEXT.ContextFlags (u32): which register groups the CONTEXT holds.
    pub const CONTEXT_FLAGS: usize = 0x30;
    /// Offset of CONTEXT.SegCs (u16).
    pub const SEG_CS: usize = 0x38;
    /// Offset of CONTEXT.SegSs (u16).
    pub const SEG_SS: usize = 0x42;
    /// Offset of CONTEXT.EFlags (u32).
    pub const EFLAGS: usize = 0x44;
    /// Offset of CONTEXT.Dr7 (u64): the debug-control register.
    pub const DR7: usize = 0x70;
    /// Offset of CONTEXT.Rax (u64).
    pub const RAX: usize = 0x78;
    /// Offset of CONTEXT.Rcx (u64).
    pub const RCX: usize = 0x80;
    /// Offset of CONTEXT.Rdx (u64).
    pub const RDX: usize = 0x88;
    /// Offset of CONTEXT.Rbx (u64).
    pub const RBX: usize = 0x90;
    /// Offset of CONTEXT.Rsp (u64).
    pub const RSP: usize = 0x98;
    /// Offset of CONTEXT.Rbp (u64).
    pub const RBP: usize = 0xA0;
    /// Offset of CONTEXT.Rsi (u64).
    pub const RSI: usize = 0xA8;
    /// Offset of CONTEXT.Rdi (u64).
    pub const RDI: usize = 0xB0;
    /// Offset of CONTEXT.R8 (u64).
    pub const R8: usize = 0xB8;
    /// Offset of CONTEXT.R9 (u64).
    pub const R9: usize = 0xC0;
    /// Offset of CONTEXT.R10 (u64).
    pub const R10: usize = 0xC8;
    /// Offset of CONTEXT.R11 (u64).
    pub const R11: usize = 0xD0;
    /// Offset of CONTEXT.R12 (u64).
    pub const R12: usize = 0xD8;
    /// Offset of CONTEXT.R13 (u64).
    pub const R13: usize = 0xE0;
    /// Offset of CONTEXT.R14 (u64).
    pub const R14: usize = 0xE8;
    /// Offset of CONTEXT.R15 (u64).
    pub const R15: usize = 0xF0;
    /// Offset of CONTEXT.Rip (u64).
    pub const RIP: usize = 0xF8;

    /// The u64 register at `offset` of a CONTEXT; `None` if it is short.
    pub fn reg(context: &[u8], offset: usize) -> Option<u64> {
        context
            .get(offset..offset + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }

    /// Set the u64 register at `offset`; `false` if the CONTEXT is short.
    pub fn set_reg(context: &mut [u8], offset: usize, value: u64) -> bool {
        match context.get_mut(offset..offset + 8) {
            Some(b) => {
                b.copy_from_slice(&value.to_le_bytes());
                true
            }
            None => false,
        }
    }
}

/// Size of DBGKD_MANIPULATE_STATE64 before its data.
pub const MANIPULATE_LEN: usize = 0x38;
/// The largest read one request can return: PACKET_MAX_SIZE - 0x38.
pub const MAX_TRANSFER: u32 = 3944;
/// Size of the x64 DBGKD_ANY_WAIT_STATE_CHANGE before its data.
pub const STATE_CHANGE_LEN: usize = 0xF0;
/// Size of DBGKD_DEBUG_IO before its data (the string).
pub const DEBUG_IO_LEN: usize = 0x10;
/// Size of DBGKD_FILE_IO before its data (path or file bytes).
pub const FILE_IO_LEN: usize = 0x40;
/// x64 CONTEXT.
pub const CONTEXT_LEN: usize = 0x4D0;
/// CONTEXT.Rip.
pub const CONTEXT_RIP: usize = 0xF8;
/// KSPECIAL_REGISTERS as WinDbg reads it (control space item 2).
pub const SPECIAL_REGISTERS_LEN: u32 = 0xE0;
/// KSPECIAL_REGISTERS.Cr3.
pub const SPECIAL_REGISTERS_CR3: usize = 0x10;
