//! The protocol's numbers: DbgKd ApiNumbers, the statuses it carries, the
//! register offsets of the x64 CONTEXT, and the sizes of its messages.

/// DbgKd ApiNumber values (windbgkd.h).
pub mod api_number {
    pub const READ_VIRTUAL_MEMORY: u32 = 0x3130;
    pub const WRITE_VIRTUAL_MEMORY: u32 = 0x3131;
    pub const GET_CONTEXT: u32 = 0x3132;
    pub const SET_CONTEXT: u32 = 0x3133;
    pub const WRITE_BREAKPOINT: u32 = 0x3134;
    pub const RESTORE_BREAKPOINT: u32 = 0x3135;
    pub const CONTINUE: u32 = 0x3136;
    pub const READ_CONTROL_SPACE: u32 = 0x3137;
    pub const WRITE_CONTROL_SPACE: u32 = 0x3138;
    pub const READ_IO_SPACE: u32 = 0x3139;
    pub const WRITE_IO_SPACE: u32 = 0x313A;
    pub const REBOOT: u32 = 0x313B;
    pub const CONTINUE2: u32 = 0x313C;
    pub const READ_PHYSICAL_MEMORY: u32 = 0x313D;
    pub const WRITE_PHYSICAL_MEMORY: u32 = 0x313E;
    pub const GET_VERSION: u32 = 0x3146;
    pub const CAUSE_BUGCHECK: u32 = 0x3149;
    pub const SWITCH_PROCESSOR: u32 = 0x3150;
    pub const READ_MSR: u32 = 0x3152;
    pub const WRITE_MSR: u32 = 0x3153;
    pub const CLEAR_ALL_INTERNAL_BREAKPOINTS: u32 = 0x315A;
    pub const QUERY_MEMORY: u32 = 0x315C;
    pub const GET_CONTEXT_EX: u32 = 0x315F;
    pub const SET_CONTEXT_EX: u32 = 0x3160;

    /// DbgKdExceptionStateChange and friends.
    pub const STATE_EXCEPTION: u32 = 0x3030;
    pub const STATE_LOAD_SYMBOLS: u32 = 0x3031;
    pub const STATE_COMMAND_STRING: u32 = 0x3032;

    pub const PRINT_STRING: u32 = 0x3230;
    pub const GET_STRING: u32 = 0x3231;

    pub const FILE_CREATE: u32 = 0x3430;
    pub const FILE_READ: u32 = 0x3431;
    pub const FILE_WRITE: u32 = 0x3432;
    pub const FILE_CLOSE: u32 = 0x3433;
}

/// NTSTATUS and debugger status values the protocol uses.
pub mod status {
    pub const SUCCESS: u32 = 0;
    pub const UNSUCCESSFUL: u32 = 0xC000_0001;
    pub const NO_SUCH_FILE: u32 = 0xC000_000F;
    pub const BREAKPOINT: u32 = 0x8000_0003;
    pub const DBG_CONTINUE: u32 = 0x0001_0002;
    pub const DBG_EXCEPTION_HANDLED: u32 = 0x0001_0001;
    pub const DBG_EXCEPTION_NOT_HANDLED: u32 = 0x8001_0001;
}

/// Offsets of the registers in the x64 CONTEXT (winnt.h; Rip and the
/// layout verified in the capture, docs/kdnet.md, "The protocol in brief").
pub mod context {
    pub const CONTEXT_FLAGS: usize = 0x30;
    pub const SEG_CS: usize = 0x38;
    pub const SEG_SS: usize = 0x42;
    pub const EFLAGS: usize = 0x44;
    pub const DR7: usize = 0x70;
    pub const RAX: usize = 0x78;
    pub const RCX: usize = 0x80;
    pub const RDX: usize = 0x88;
    pub const RBX: usize = 0x90;
    pub const RSP: usize = 0x98;
    pub const RBP: usize = 0xA0;
    pub const RSI: usize = 0xA8;
    pub const RDI: usize = 0xB0;
    pub const R8: usize = 0xB8;
    pub const R9: usize = 0xC0;
    pub const R10: usize = 0xC8;
    pub const R11: usize = 0xD0;
    pub const R12: usize = 0xD8;
    pub const R13: usize = 0xE0;
    pub const R14: usize = 0xE8;
    pub const R15: usize = 0xF0;
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
pub const DEBUG_IO_LEN: usize = 0x10;
pub const FILE_IO_LEN: usize = 0x40;
/// x64 CONTEXT.
pub const CONTEXT_LEN: usize = 0x4D0;
/// CONTEXT.Rip.
pub const CONTEXT_RIP: usize = 0xF8;
/// KSPECIAL_REGISTERS as WinDbg reads it (control space item 2).
pub const SPECIAL_REGISTERS_LEN: u32 = 0xE0;
/// KSPECIAL_REGISTERS.Cr3.
pub const SPECIAL_REGISTERS_CR3: usize = 0x10;
