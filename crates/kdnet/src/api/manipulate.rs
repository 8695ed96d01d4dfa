//! DBGKD_MANIPULATE_STATE64: the host's requests (memory, CONTEXT,
//! version, continue, ...) and the target's replies, with the typed view
//! of its 40-byte union ([`Call`]).

use super::numbers::api_number as api;
use super::numbers::{MANIPULATE_LEN, MAX_TRANSFER};
use crate::bytes::{Le, put};

kd_layout! {
    /// DBGKD_MANIPULATE_STATE64: a request from the host, or the target's
    /// reply with the same ApiNumber.
    pub struct Manipulate = ("DBGKD_MANIPULATE_STATE64", MANIPULATE_LEN) {
        header {
            /// DBGKD_MANIPULATE_STATE64.ApiNumber: which request
            /// ([`api_number`](super::api_number)).
            pub api: u32,
            /// ProcessorLevel (0 in pooldump's requests).
            pub processor_level: u16,
            /// Processor: the CPU the request is for (the one that
            /// reported the stop, for memory reads).
            pub processor: u16,
            /// NTSTATUS in replies; junk in WinDbg's requests.
            pub return_status: u32,
            /// The 4 bytes of union alignment.
            pub pad: u32,
            /// The 40-byte union at +0x10.
            pub args: [u8; 40],
        }
        /// Data after the header (read results, write data, a CONTEXT).
        pub data: Vec<u8>,
    }
}

/// The address space of a memory transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// Kernel virtual addresses, translated by the stopped CPU's page
    /// tables (DbgKdRead/WriteVirtualMemoryApi).
    Virtual,
    /// Physical addresses (DbgKdRead/WritePhysicalMemoryApi).
    Physical,
    /// x64 control space: 0 KPCR, 1 KPRCB, 2 KSPECIAL_REGISTERS, 3 KTHREAD.
    Control,
}

kd_layout! {
    /// DBGKD_GET_VERSION64, the union of a GetVersion reply.
    pub struct Version: [u8; 40] {
        /// High byte: 0 NT, 4 the boot debugger; low byte 0xF (free build).
        pub major: u16,
        /// The build number.
        pub minor: u16,
        /// ProtocolVersion: the KD protocol revision.
        pub protocol: u8,
        /// KdSecondaryVersion.
        pub secondary: u8,
        /// 1 MP, 2 DATA (DebuggerDataList valid), 4 PTR64.
        pub flags: u16,
        /// MachineType: an IMAGE_FILE_MACHINE value ([`Version::MACHINE_AMD64`]).
        pub machine: u16,
        /// MaxPacketType: PACKET_TYPE_MAX, one past the highest PacketType
        /// the target knows.
        pub max_packet_type: u8,
        /// MaxStateChange: DbgKdMaximumStateChange -
        /// DbgKdMinimumStateChange.
        pub max_state_change: u8,
        /// MaxManipulate: DbgKdMaximumManipulate -
        /// DbgKdMinimumManipulate.
        pub max_manipulate: u8,
        /// Simulation: non-zero on a simulated machine.
        pub simulation: u8,
        /// `Unused[1]`, the padding before KernBase.
        pub unused: u16,
        /// KernBase: where nt is loaded.
        pub kern_base: u64,
        /// PsLoadedModuleList: the address of the loaded-module list head.
        pub ps_loaded_module_list: u64,
        /// DebuggerDataList: the address of KdDebuggerDataBlock's list
        /// (valid when [`Version::FLAG_DATA`] is set).
        pub debugger_data_list: u64,
    }
}

impl Version {
    /// DBGKD_VERS_FLAG_MP: a multiprocessor kernel.
    pub const FLAG_MP: u16 = 1;
    /// DBGKD_VERS_FLAG_DATA: DebuggerDataList is valid.
    pub const FLAG_DATA: u16 = 2;
    /// DBGKD_VERS_FLAG_PTR64: 64-bit pointers.
    pub const FLAG_PTR64: u16 = 4;
    /// IMAGE_FILE_MACHINE_AMD64: the only MachineType pooldump reads.
    pub const MACHINE_AMD64: u16 = 0x8664;

    /// The boot debugger (winload), not the kernel's KD.
    pub fn is_boot_debugger(&self) -> bool {
        self.major >> 8 == 4
    }
}

/// DBGKD_CONTINUE2 (x64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continue2 {
    /// ContinueStatus: DBG_CONTINUE, DBG_EXCEPTION_HANDLED or
    /// DBG_EXCEPTION_NOT_HANDLED.
    pub status: u32,
    /// ControlSet.TraceFlag: non-zero to single-step.
    pub trace_flag: u32,
    /// ControlSet.Dr7: the debug-control register to load (WinDbg sends
    /// 0x400).
    pub dr7: u64,
    /// ControlSet.CurrentSymbolStart: the range to step through (1 with
    /// an end of 0: none).
    pub symbol_start: u64,
    /// ControlSet.CurrentSymbolEnd.
    pub symbol_end: u64,
}

/// DBGKD_READ_MEMORY64 / DBGKD_WRITE_MEMORY64: a memory transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// The address space, from the ApiNumber.
    pub space: Space,
    /// TargetBaseAddress: the first byte (a control-space item number for
    /// [`Space::Control`]).
    pub address: u64,
    /// TransferCount: bytes asked for (at most [`MAX_TRANSFER`]).
    pub count: u32,
    /// ActualBytesRead/Written in replies (CacheFlags in physical
    /// requests).
    pub actual: u32,
}

/// DBGKD_CONTEXT_EX: a slice of the CONTEXT (Get/SetContextEx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextEx {
    /// Offset: the first CONTEXT byte.
    pub offset: u32,
    /// ByteCount: bytes of the CONTEXT to copy.
    pub count: u32,
    /// BytesCopied in replies.
    pub copied: u32,
}

/// The typed view of a manipulate request or reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// ReadVirtual/Physical/ControlSpace.
    Read(Transfer),
    /// WriteVirtual/Physical/ControlSpace.
    Write(Transfer),
    /// GetVersion: the union is DBGKD_GET_VERSION64 (zero in requests).
    GetVersion(Version),
    /// GetContext: the reply's data is the CONTEXT.
    GetContext,
    /// SetContext: the request's data is the CONTEXT.
    SetContext {
        /// DBGKD_SET_CONTEXT.ContextFlags (copied from the CONTEXT's).
        flags: u32,
    },
    /// GetContextEx: a slice of the CONTEXT.
    GetContextEx(ContextEx),
    /// SetContextEx: write a slice of the CONTEXT.
    SetContextEx(ContextEx),
    /// Continue (DBGKD_CONTINUE).
    Continue {
        /// ContinueStatus.
        status: u32,
    },
    /// Continue2 (DBGKD_CONTINUE2).
    Continue2(Continue2),
    /// WriteBreakPoint (DBGKD_WRITE_BREAKPOINT64).
    WriteBreakPoint {
        /// BreakPointAddress.
        address: u64,
        /// BreakPointHandle: set by the target in the reply.
        handle: u32,
    },
    /// RestoreBreakPoint (DBGKD_RESTORE_BREAKPOINT).
    RestoreBreakPoint {
        /// BreakPointHandle from WriteBreakPoint's reply.
        handle: u32,
    },
    /// QueryMemory (DBGKD_QUERY_MEMORY).
    QueryMemory {
        /// Address.
        address: u64,
        /// AddressSpace: DBGKD_QUERY_MEMORY_VIRTUAL (0) in the request;
        /// PROCESS (0), SESSION (1) or KERNEL (2) in the reply.
        address_space: u32,
        /// Flags: DBGKD_QUERY_MEMORY_READ/WRITE/EXECUTE/FIXED bits.
        flags: u32,
    },
    /// ReadMachineSpecificRegister or WriteMachineSpecificRegister
    /// (DBGKD_READ_WRITE_MSR).
    ReadWriteMsr {
        /// The Write form.
        write: bool,
        /// Msr: the register number.
        msr: u32,
        /// DataValueHigh:DataValueLow.
        value: u64,
    },
    /// SwitchProcessor: stop on the request's Processor instead.
    SwitchProcessor,
    /// Reboot.
    Reboot,
    /// CauseBugCheck.
    CauseBugCheck,
    /// ClearAllInternalBreakpoints.
    ClearAllInternalBreakpoints,
    /// An ApiNumber pooldump does not model.
    Other,
}

impl Manipulate {
    fn arg_u32(&self, off: usize) -> u32 {
        Le(&self.args).u32(off).unwrap_or(0)
    }

    fn arg_u64(&self, off: usize) -> u64 {
        Le(&self.args).u64(off).unwrap_or(0)
    }

    fn context_ex(&self) -> ContextEx {
        ContextEx {
            offset: self.arg_u32(0),
            count: self.arg_u32(4),
            copied: self.arg_u32(8),
        }
    }

    /// Decode the union by ApiNumber.
    pub fn call(&self) -> Call {
        let transfer = |space| Transfer {
            space,
            address: self.arg_u64(0),
            count: self.arg_u32(8),
            actual: self.arg_u32(12),
        };
        match self.api {
            api::READ_VIRTUAL_MEMORY => Call::Read(transfer(Space::Virtual)),
            api::READ_PHYSICAL_MEMORY => Call::Read(transfer(Space::Physical)),
            api::READ_CONTROL_SPACE => Call::Read(transfer(Space::Control)),
            api::WRITE_VIRTUAL_MEMORY => Call::Write(transfer(Space::Virtual)),
            api::WRITE_PHYSICAL_MEMORY => Call::Write(transfer(Space::Physical)),
            api::WRITE_CONTROL_SPACE => Call::Write(transfer(Space::Control)),
            api::GET_VERSION => Call::GetVersion(Version::from_bytes(&self.args)),
            api::GET_CONTEXT => Call::GetContext,
            api::SET_CONTEXT => Call::SetContext {
                flags: self.arg_u32(0),
            },
            api::GET_CONTEXT_EX => Call::GetContextEx(self.context_ex()),
            api::SET_CONTEXT_EX => Call::SetContextEx(self.context_ex()),
            api::CONTINUE => Call::Continue {
                status: self.arg_u32(0),
            },
            api::CONTINUE2 => Call::Continue2(Continue2 {
                status: self.arg_u32(0),
                trace_flag: self.arg_u32(4),
                dr7: self.arg_u64(8),
                symbol_start: self.arg_u64(16),
                symbol_end: self.arg_u64(24),
            }),
            api::WRITE_BREAKPOINT => Call::WriteBreakPoint {
                address: self.arg_u64(0),
                handle: self.arg_u32(8),
            },
            api::RESTORE_BREAKPOINT => Call::RestoreBreakPoint {
                handle: self.arg_u32(0),
            },
            api::QUERY_MEMORY => Call::QueryMemory {
                address: self.arg_u64(0),
                address_space: self.arg_u32(16),
                flags: self.arg_u32(20),
            },
            api::READ_MSR | api::WRITE_MSR => Call::ReadWriteMsr {
                write: self.api == api::WRITE_MSR,
                msr: self.arg_u32(0),
                value: u64::from(self.arg_u32(4)) | u64::from(self.arg_u32(8)) << 32,
            },
            api::SWITCH_PROCESSOR => Call::SwitchProcessor,
            api::REBOOT => Call::Reboot,
            api::CAUSE_BUGCHECK => Call::CauseBugCheck,
            api::CLEAR_ALL_INTERNAL_BREAKPOINTS => Call::ClearAllInternalBreakpoints,
            _ => Call::Other,
        }
    }

    /// A request with zeroed fields.
    pub fn request(api: u32, processor: u16) -> Self {
        Self {
            api,
            processor_level: 0,
            processor,
            return_status: 0,
            pad: 0,
            args: [0; 40],
            data: Vec::new(),
        }
    }

    /// Read `count` bytes (at most [`MAX_TRANSFER`]) of `space` at
    /// `address`.
    pub fn read(space: Space, processor: u16, address: u64, count: u32) -> Self {
        let api = match space {
            Space::Virtual => api::READ_VIRTUAL_MEMORY,
            Space::Physical => api::READ_PHYSICAL_MEMORY,
            Space::Control => api::READ_CONTROL_SPACE,
        };
        let mut m = Self::request(api, processor);
        put(&mut m.args, 0, &address.to_le_bytes());
        put(&mut m.args, 8, &count.min(MAX_TRANSFER).to_le_bytes());
        m
    }

    /// Write `data` (at most [`MAX_TRANSFER`] bytes; the caller chunks).
    pub fn write(space: Space, processor: u16, address: u64, data: &[u8]) -> Self {
        let api = match space {
            Space::Virtual => api::WRITE_VIRTUAL_MEMORY,
            Space::Physical => api::WRITE_PHYSICAL_MEMORY,
            Space::Control => api::WRITE_CONTROL_SPACE,
        };
        let data = &data[..data.len().min(MAX_TRANSFER as usize)];
        let mut m = Self::request(api, processor);
        put(&mut m.args, 0, &address.to_le_bytes());
        put(&mut m.args, 8, &(data.len() as u32).to_le_bytes());
        m.data = data.to_vec();
        m
    }

    /// A GetVersion request (DBGKD_GET_VERSION64 in the reply).
    pub fn get_version(processor: u16) -> Self {
        Self::request(api::GET_VERSION, processor)
    }

    /// A GetContext request for `processor`'s CONTEXT.
    pub fn get_context(processor: u16) -> Self {
        Self::request(api::GET_CONTEXT, processor)
    }

    /// A SetContext request carrying `context` (a whole x64 CONTEXT,
    /// [`CONTEXT_LEN`](super::CONTEXT_LEN) bytes); ContextFlags copied
    /// from its +0x30.
    pub fn set_context(processor: u16, context: &[u8]) -> Self {
        let mut m = Self::request(api::SET_CONTEXT, processor);
        let flags = Le(context).u32(0x30).unwrap_or(0);
        put(&mut m.args, 0, &flags.to_le_bytes());
        m.data = context.to_vec();
        m
    }

    /// Continue2 as WinDbg sends it: no tracing, Dr7 0x400, no symbol
    /// range (start 1, end 0).
    pub fn continue2(processor: u16, status: u32) -> Self {
        let mut m = Self::request(api::CONTINUE2, processor);
        put(&mut m.args, 0, &status.to_le_bytes());
        put(&mut m.args, 8, &0x400u64.to_le_bytes());
        put(&mut m.args, 16, &1u64.to_le_bytes());
        m
    }

    /// The target's reply to this request: the header echoed, the status
    /// set, `data` appended (a simulated target uses this).
    pub fn reply(&self, status: u32, data: Vec<u8>) -> Self {
        let mut r = self.clone();
        r.return_status = status;
        r.data = data;
        r
    }

    /// Set ActualBytesRead/Written in a memory reply.
    pub fn set_actual(&mut self, n: u32) {
        put(&mut self.args, 12, &n.to_le_bytes());
    }

    /// Fill a GetVersion reply.
    pub fn set_version(&mut self, v: &Version) {
        self.args = v.to_bytes();
    }
}
