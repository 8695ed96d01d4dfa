//! DbgKd messages carried in KD data packets (kdnet.md §5-6, windbgkd.h):
//! DBGKD_MANIPULATE_STATE64 requests and replies, the x64
//! DBGKD_ANY_WAIT_STATE_CHANGE, DBGKD_DEBUG_IO and DBGKD_FILE_IO.
//!
//! Each message keeps every header byte (unions and padding included), so
//! `parse(b).to_bytes() == b`; typed views ([`Manipulate::call`],
//! [`StateChange::event`]) decode the union on demand. WinDbg fills unused
//! fields with junk, so nothing here depends on them.

use crate::bytes::{Le, put};
use crate::packet::PacketType;

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
/// layout verified in the capture, kdnet.md §5).
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

use api_number as api;

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

/// Why a KD data packet's contents are not a DbgKd message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("a {what} needs {need} bytes, the packet holds {len}")]
    Short {
        what: &'static str,
        need: usize,
        len: usize,
    },
    #[error("KD packet type {0:?} carries no DbgKd message pooldump knows")]
    UnknownType(PacketType),
}

fn short(what: &'static str, need: usize, len: usize) -> MessageError {
    MessageError::Short { what, need, len }
}

/// A typed KD data packet body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KdMessage {
    StateChange(StateChange),
    Manipulate(Manipulate),
    DebugIo(DebugIo),
    FileIo(FileIo),
}

impl KdMessage {
    pub fn parse(kind: PacketType, data: &[u8]) -> Result<Self, MessageError> {
        Ok(match kind {
            PacketType::StateChange64 => KdMessage::StateChange(StateChange::parse(data)?),
            PacketType::StateManipulate => KdMessage::Manipulate(Manipulate::parse(data)?),
            PacketType::DebugIo => KdMessage::DebugIo(DebugIo::parse(data)?),
            PacketType::FileIo => KdMessage::FileIo(FileIo::parse(data)?),
            k => return Err(MessageError::UnknownType(k)),
        })
    }

    pub fn packet_type(&self) -> PacketType {
        match self {
            KdMessage::StateChange(_) => PacketType::StateChange64,
            KdMessage::Manipulate(_) => PacketType::StateManipulate,
            KdMessage::DebugIo(_) => PacketType::DebugIo,
            KdMessage::FileIo(_) => PacketType::FileIo,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            KdMessage::StateChange(m) => m.to_bytes(),
            KdMessage::Manipulate(m) => m.to_bytes(),
            KdMessage::DebugIo(m) => m.to_bytes(),
            KdMessage::FileIo(m) => m.to_bytes(),
        }
    }
}

/// DBGKD_MANIPULATE_STATE64: a request from the host, or the target's
/// reply with the same ApiNumber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manipulate {
    pub api: u32,
    pub processor_level: u16,
    pub processor: u16,
    /// NTSTATUS in replies; junk in WinDbg's requests.
    pub return_status: u32,
    /// The 4 bytes of union alignment.
    pub pad: u32,
    /// The 40-byte union at +0x10.
    pub args: [u8; 40],
    /// Data after the header (read results, write data, a CONTEXT).
    pub data: Vec<u8>,
}

/// The address space of a memory transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    Virtual,
    Physical,
    /// x64 control space: 0 KPCR, 1 KPRCB, 2 KSPECIAL_REGISTERS, 3 KTHREAD.
    Control,
}

/// DBGKD_GET_VERSION64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// High byte: 0 NT, 4 the boot debugger; low byte 0xF (free build).
    pub major: u16,
    /// The build number.
    pub minor: u16,
    pub protocol: u8,
    pub secondary: u8,
    /// 1 MP, 2 DATA (DebuggerDataList valid), 4 PTR64.
    pub flags: u16,
    pub machine: u16,
    pub max_packet_type: u8,
    pub max_state_change: u8,
    pub max_manipulate: u8,
    pub simulation: u8,
    pub kern_base: u64,
    pub ps_loaded_module_list: u64,
    pub debugger_data_list: u64,
}

impl Version {
    pub const FLAG_MP: u16 = 1;
    pub const FLAG_DATA: u16 = 2;
    pub const FLAG_PTR64: u16 = 4;
    pub const MACHINE_AMD64: u16 = 0x8664;

    /// The boot debugger (winload), not the kernel's KD.
    pub fn is_boot_debugger(&self) -> bool {
        self.major >> 8 == 4
    }

    fn parse(a: &[u8; 40]) -> Self {
        let b = Le(a);
        Self {
            major: b.u16(0).unwrap_or(0),
            minor: b.u16(2).unwrap_or(0),
            protocol: b.u8(4).unwrap_or(0),
            secondary: b.u8(5).unwrap_or(0),
            flags: b.u16(6).unwrap_or(0),
            machine: b.u16(8).unwrap_or(0),
            max_packet_type: b.u8(10).unwrap_or(0),
            max_state_change: b.u8(11).unwrap_or(0),
            max_manipulate: b.u8(12).unwrap_or(0),
            simulation: b.u8(13).unwrap_or(0),
            kern_base: b.u64(16).unwrap_or(0),
            ps_loaded_module_list: b.u64(24).unwrap_or(0),
            debugger_data_list: b.u64(32).unwrap_or(0),
        }
    }

    fn write(&self, a: &mut [u8; 40]) {
        put(a, 0, &self.major.to_le_bytes());
        put(a, 2, &self.minor.to_le_bytes());
        a[4] = self.protocol;
        a[5] = self.secondary;
        put(a, 6, &self.flags.to_le_bytes());
        put(a, 8, &self.machine.to_le_bytes());
        a[10] = self.max_packet_type;
        a[11] = self.max_state_change;
        a[12] = self.max_manipulate;
        a[13] = self.simulation;
        put(a, 16, &self.kern_base.to_le_bytes());
        put(a, 24, &self.ps_loaded_module_list.to_le_bytes());
        put(a, 32, &self.debugger_data_list.to_le_bytes());
    }
}

/// DBGKD_CONTINUE2 (x64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continue2 {
    pub status: u32,
    pub trace_flag: u32,
    pub dr7: u64,
    pub symbol_start: u64,
    pub symbol_end: u64,
}

/// The typed view of a manipulate request or reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// ReadVirtual/Physical/ControlSpace. `actual` is ActualBytesRead in
    /// replies (CacheFlags in physical requests).
    Read {
        space: Space,
        address: u64,
        count: u32,
        actual: u32,
    },
    Write {
        space: Space,
        address: u64,
        count: u32,
        actual: u32,
    },
    GetVersion(Version),
    GetContext,
    SetContext {
        flags: u32,
    },
    GetContextEx {
        offset: u32,
        count: u32,
        copied: u32,
    },
    SetContextEx {
        offset: u32,
        count: u32,
        copied: u32,
    },
    Continue {
        status: u32,
    },
    Continue2(Continue2),
    WriteBreakPoint {
        address: u64,
        handle: u32,
    },
    RestoreBreakPoint {
        handle: u32,
    },
    QueryMemory {
        address: u64,
        address_space: u32,
        flags: u32,
    },
    ReadWriteMsr {
        write: bool,
        msr: u32,
        value: u64,
    },
    SwitchProcessor,
    Reboot,
    CauseBugCheck,
    ClearAllInternalBreakpoints,
    /// An ApiNumber pooldump does not model.
    Other,
}

impl Manipulate {
    pub fn parse(d: &[u8]) -> Result<Self, MessageError> {
        let b = Le(d);
        let args: [u8; 40] =
            b.array(0x10)
                .ok_or(short("DBGKD_MANIPULATE_STATE64", MANIPULATE_LEN, d.len()))?;
        Ok(Self {
            api: b.u32(0).unwrap_or(0),
            processor_level: b.u16(4).unwrap_or(0),
            processor: b.u16(6).unwrap_or(0),
            return_status: b.u32(8).unwrap_or(0),
            pad: b.u32(0xC).unwrap_or(0),
            args,
            data: d[MANIPULATE_LEN..].to_vec(),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(MANIPULATE_LEN + self.data.len());
        v.extend_from_slice(&self.api.to_le_bytes());
        v.extend_from_slice(&self.processor_level.to_le_bytes());
        v.extend_from_slice(&self.processor.to_le_bytes());
        v.extend_from_slice(&self.return_status.to_le_bytes());
        v.extend_from_slice(&self.pad.to_le_bytes());
        v.extend_from_slice(&self.args);
        v.extend_from_slice(&self.data);
        v
    }

    fn arg_u32(&self, off: usize) -> u32 {
        Le(&self.args).u32(off).unwrap_or(0)
    }

    fn arg_u64(&self, off: usize) -> u64 {
        Le(&self.args).u64(off).unwrap_or(0)
    }

    /// Decode the union by ApiNumber.
    pub fn call(&self) -> Call {
        let transfer = |space| (space, self.arg_u64(0), self.arg_u32(8), self.arg_u32(12));
        let read = |space| {
            let (space, address, count, actual) = transfer(space);
            Call::Read {
                space,
                address,
                count,
                actual,
            }
        };
        let write = |space| {
            let (space, address, count, actual) = transfer(space);
            Call::Write {
                space,
                address,
                count,
                actual,
            }
        };
        match self.api {
            api::READ_VIRTUAL_MEMORY => read(Space::Virtual),
            api::READ_PHYSICAL_MEMORY => read(Space::Physical),
            api::READ_CONTROL_SPACE => read(Space::Control),
            api::WRITE_VIRTUAL_MEMORY => write(Space::Virtual),
            api::WRITE_PHYSICAL_MEMORY => write(Space::Physical),
            api::WRITE_CONTROL_SPACE => write(Space::Control),
            api::GET_VERSION => Call::GetVersion(Version::parse(&self.args)),
            api::GET_CONTEXT => Call::GetContext,
            api::SET_CONTEXT => Call::SetContext {
                flags: self.arg_u32(0),
            },
            api::GET_CONTEXT_EX => Call::GetContextEx {
                offset: self.arg_u32(0),
                count: self.arg_u32(4),
                copied: self.arg_u32(8),
            },
            api::SET_CONTEXT_EX => Call::SetContextEx {
                offset: self.arg_u32(0),
                count: self.arg_u32(4),
                copied: self.arg_u32(8),
            },
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

    pub fn get_version(processor: u16) -> Self {
        Self::request(api::GET_VERSION, processor)
    }

    pub fn get_context(processor: u16) -> Self {
        Self::request(api::GET_CONTEXT, processor)
    }

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
        v.write(&mut self.args);
    }
}

/// The x64 DBGKD_ANY_WAIT_STATE_CHANGE: the target stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub new_state: u32,
    pub processor_level: u16,
    pub processor: u16,
    pub number_processors: u32,
    pub pad: u32,
    pub thread: u64,
    pub program_counter: u64,
    /// The union at +0x20 (exception record or load-symbols info).
    pub union: [u8; 0xA0],
    /// The AMD64 control report at +0xC0.
    pub control_report: [u8; 0x30],
    /// The load-symbols path, if any.
    pub data: Vec<u8>,
}

/// What made the target stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Exception {
        code: u32,
        flags: u32,
        address: u64,
        /// ExceptionInformation, at most 15 entries.
        parameters: Vec<u64>,
        first_chance: bool,
    },
    LoadSymbols {
        base: u64,
        process_id: u64,
        checksum: u32,
        size: u32,
        unload: bool,
        /// The image path, bounded by PathNameLength and the packet.
        path: String,
    },
    CommandString,
    Other,
}

/// The fields of the AMD64 control report pooldump uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlReport {
    pub dr6: u64,
    pub dr7: u64,
    pub eflags: u32,
    pub instruction_count: u16,
    pub report_flags: u16,
    /// Up to 16 bytes at the PC (`instruction_count` of them valid).
    pub instruction_stream: [u8; 16],
    pub seg_cs: u16,
}

impl StateChange {
    pub fn parse(d: &[u8]) -> Result<Self, MessageError> {
        let b = Le(d);
        let union: [u8; 0xA0] = b.array(0x20).ok_or(short(
            "DBGKD_ANY_WAIT_STATE_CHANGE",
            STATE_CHANGE_LEN,
            d.len(),
        ))?;
        let control_report: [u8; 0x30] = b.array(0xC0).ok_or(short(
            "DBGKD_ANY_WAIT_STATE_CHANGE",
            STATE_CHANGE_LEN,
            d.len(),
        ))?;
        Ok(Self {
            new_state: b.u32(0).unwrap_or(0),
            processor_level: b.u16(4).unwrap_or(0),
            processor: b.u16(6).unwrap_or(0),
            number_processors: b.u32(8).unwrap_or(0),
            pad: b.u32(0xC).unwrap_or(0),
            thread: b.u64(0x10).unwrap_or(0),
            program_counter: b.u64(0x18).unwrap_or(0),
            union,
            control_report,
            data: d[STATE_CHANGE_LEN..].to_vec(),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(STATE_CHANGE_LEN + self.data.len());
        v.extend_from_slice(&self.new_state.to_le_bytes());
        v.extend_from_slice(&self.processor_level.to_le_bytes());
        v.extend_from_slice(&self.processor.to_le_bytes());
        v.extend_from_slice(&self.number_processors.to_le_bytes());
        v.extend_from_slice(&self.pad.to_le_bytes());
        v.extend_from_slice(&self.thread.to_le_bytes());
        v.extend_from_slice(&self.program_counter.to_le_bytes());
        v.extend_from_slice(&self.union);
        v.extend_from_slice(&self.control_report);
        v.extend_from_slice(&self.data);
        v
    }

    /// Decode the union by NewState.
    pub fn event(&self) -> Event {
        let u = Le(&self.union);
        match self.new_state {
            api::STATE_EXCEPTION => {
                let n = u.u32(0x18).unwrap_or(0).min(15) as usize;
                Event::Exception {
                    code: u.u32(0).unwrap_or(0),
                    flags: u.u32(4).unwrap_or(0),
                    address: u.u64(0x10).unwrap_or(0),
                    parameters: (0..n).filter_map(|i| u.u64(0x20 + 8 * i)).collect(),
                    first_chance: u.u32(0x98).unwrap_or(0) != 0,
                }
            }
            api::STATE_LOAD_SYMBOLS => {
                let len = (u.u32(0).unwrap_or(0) as usize).min(self.data.len());
                let raw = &self.data[..len];
                let raw = raw.split(|&c| c == 0).next().unwrap_or(raw);
                Event::LoadSymbols {
                    base: u.u64(0x08).unwrap_or(0),
                    process_id: u.u64(0x10).unwrap_or(0),
                    checksum: u.u32(0x18).unwrap_or(0),
                    size: u.u32(0x1C).unwrap_or(0),
                    unload: u.u8(0x20).unwrap_or(0) != 0,
                    path: String::from_utf8_lossy(raw).into_owned(),
                }
            }
            api::STATE_COMMAND_STRING => Event::CommandString,
            _ => Event::Other,
        }
    }

    pub fn control_report(&self) -> ControlReport {
        let c = Le(&self.control_report);
        ControlReport {
            dr6: c.u64(0).unwrap_or(0),
            dr7: c.u64(8).unwrap_or(0),
            eflags: c.u32(0x10).unwrap_or(0),
            instruction_count: c.u16(0x14).unwrap_or(0),
            report_flags: c.u16(0x16).unwrap_or(0),
            instruction_stream: c.array(0x18).unwrap_or([0; 16]),
            seg_cs: c.u16(0x28).unwrap_or(0),
        }
    }

    /// A breakpoint exception state change (for a simulated target):
    /// STATUS_BREAKPOINT at `pc`, first chance, `stream` the bytes at PC.
    pub fn breakpoint(
        processor: u16,
        number_processors: u32,
        thread: u64,
        pc: u64,
        stream: &[u8; 16],
    ) -> Self {
        // ExceptionInformation[0] = BREAKPOINT_BREAK (0).
        Self::exception(
            processor,
            number_processors,
            thread,
            pc,
            status::BREAKPOINT,
            &[0],
            true,
            stream,
        )
    }

    /// An exception state change (for a simulated target): `code` at
    /// `pc` with up to 15 parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn exception(
        processor: u16,
        number_processors: u32,
        thread: u64,
        pc: u64,
        code: u32,
        parameters: &[u64],
        first_chance: bool,
        stream: &[u8; 16],
    ) -> Self {
        let mut union = [0u8; 0xA0];
        put(&mut union, 0, &code.to_le_bytes());
        put(&mut union, 0x10, &pc.to_le_bytes());
        let parameters = &parameters[..parameters.len().min(15)];
        put(&mut union, 0x18, &(parameters.len() as u32).to_le_bytes());
        for (i, p) in parameters.iter().enumerate() {
            put(&mut union, 0x20 + 8 * i, &p.to_le_bytes());
        }
        put(&mut union, 0x98, &u32::from(first_chance).to_le_bytes());
        let mut s = Self::with_report(processor, number_processors, thread, pc, stream);
        s.union = union;
        s
    }

    /// A load-symbols state change (for a simulated target): the image
    /// `path` mapped at `base`.
    pub fn load_symbols(
        processor: u16,
        number_processors: u32,
        thread: u64,
        pc: u64,
        base: u64,
        size: u32,
        path: &str,
    ) -> Self {
        let mut data = path.as_bytes().to_vec();
        data.push(0);
        let mut union = [0u8; 0xA0];
        put(&mut union, 0, &(data.len() as u32).to_le_bytes());
        put(&mut union, 0x08, &base.to_le_bytes());
        put(&mut union, 0x10, &u64::MAX.to_le_bytes());
        put(&mut union, 0x1C, &size.to_le_bytes());
        let mut s = Self::with_report(processor, number_processors, thread, pc, &[0; 16]);
        s.new_state = api::STATE_LOAD_SYMBOLS;
        s.union = union;
        s.data = data;
        s
    }

    /// The fixed part with a control report as Windows fills it.
    fn with_report(
        processor: u16,
        number_processors: u32,
        thread: u64,
        pc: u64,
        stream: &[u8; 16],
    ) -> Self {
        let mut cr = [0u8; 0x30];
        put(&mut cr, 0, &0xFFFF_0FF0u64.to_le_bytes());
        put(&mut cr, 8, &0x400u64.to_le_bytes());
        put(&mut cr, 0x10, &0x202u32.to_le_bytes());
        put(&mut cr, 0x14, &16u16.to_le_bytes());
        put(&mut cr, 0x16, &3u16.to_le_bytes());
        put(&mut cr, 0x18, stream);
        put(&mut cr, 0x28, &0x10u16.to_le_bytes());
        for (i, s) in [0x2Bu16, 0x2B, 0x53].iter().enumerate() {
            put(&mut cr, 0x2A + 2 * i, &s.to_le_bytes());
        }
        Self {
            new_state: api::STATE_EXCEPTION,
            processor_level: 6,
            processor,
            number_processors,
            pad: 0,
            thread,
            program_counter: pc,
            union: [0; 0xA0],
            control_report: cr,
            data: Vec::new(),
        }
    }
}

/// DBGKD_DEBUG_IO: the target printing (or prompting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugIo {
    pub api: u32,
    pub processor_level: u16,
    pub processor: u16,
    /// PrintString: LengthOfString; GetString: prompt and read lengths.
    pub args: [u8; 8],
    pub data: Vec<u8>,
}

impl DebugIo {
    pub fn parse(d: &[u8]) -> Result<Self, MessageError> {
        let b = Le(d);
        let args = b
            .array(8)
            .ok_or(short("DBGKD_DEBUG_IO", DEBUG_IO_LEN, d.len()))?;
        Ok(Self {
            api: b.u32(0).unwrap_or(0),
            processor_level: b.u16(4).unwrap_or(0),
            processor: b.u16(6).unwrap_or(0),
            args,
            data: d[DEBUG_IO_LEN..].to_vec(),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(DEBUG_IO_LEN + self.data.len());
        v.extend_from_slice(&self.api.to_le_bytes());
        v.extend_from_slice(&self.processor_level.to_le_bytes());
        v.extend_from_slice(&self.processor.to_le_bytes());
        v.extend_from_slice(&self.args);
        v.extend_from_slice(&self.data);
        v
    }

    /// The printed text (PrintString) or the prompt (GetString), bounded
    /// by the packet.
    pub fn text(&self) -> String {
        let n = (Le(&self.args).u32(0).unwrap_or(0) as usize).min(self.data.len());
        String::from_utf8_lossy(&self.data[..n]).into_owned()
    }

    /// A PrintString (for a simulated target).
    pub fn print(processor: u16, text: &str) -> Self {
        let mut args = [0u8; 8];
        put(&mut args, 0, &(text.len() as u32).to_le_bytes());
        Self {
            api: api::PRINT_STRING,
            processor_level: 6,
            processor,
            args,
            data: text.as_bytes().to_vec(),
        }
    }

    /// The debugger's answer to a GetString prompt: an empty line
    /// (LengthOfStringRead 0), so the target does not wait for a person.
    pub fn empty_answer(&self) -> Self {
        let mut args = self.args;
        put(&mut args, 4, &0u32.to_le_bytes());
        Self {
            api: self.api,
            processor_level: self.processor_level,
            processor: self.processor,
            args,
            data: Vec::new(),
        }
    }
}

/// DBGKD_FILE_IO: the target asking the debugger for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIo {
    pub api: u32,
    pub status: u32,
    pub args: [u8; 56],
    pub data: Vec<u8>,
}

impl FileIo {
    pub fn parse(d: &[u8]) -> Result<Self, MessageError> {
        let b = Le(d);
        let args = b
            .array(8)
            .ok_or(short("DBGKD_FILE_IO", FILE_IO_LEN, d.len()))?;
        Ok(Self {
            api: b.u32(0).unwrap_or(0),
            status: b.u32(4).unwrap_or(0),
            args,
            data: d[FILE_IO_LEN..].to_vec(),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FILE_IO_LEN + self.data.len());
        v.extend_from_slice(&self.api.to_le_bytes());
        v.extend_from_slice(&self.status.to_le_bytes());
        v.extend_from_slice(&self.args);
        v.extend_from_slice(&self.data);
        v
    }

    /// The debugger's refusal, as WinDbg answers a file it does not serve:
    /// the request echoed with STATUS_NO_SUCH_FILE and no data.
    pub fn refuse(&self) -> Self {
        Self {
            api: self.api,
            status: status::NO_SUCH_FILE,
            args: self.args,
            data: Vec::new(),
        }
    }

    /// The UTF-16 path of a CreateFile request.
    pub fn path(&self) -> String {
        let units: Vec<u16> = self
            .data
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16_lossy(&units)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_decode() {
        let r = Manipulate::read(Space::Virtual, 1, 0xFFFF_F800_0000_1000, 5000);
        let back = Manipulate::parse(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.call(),
            Call::Read {
                space: Space::Virtual,
                address: 0xFFFF_F800_0000_1000,
                count: MAX_TRANSFER,
                actual: 0
            }
        );
        let c = Manipulate::continue2(0, status::DBG_CONTINUE);
        assert_eq!(
            c.call(),
            Call::Continue2(Continue2 {
                status: status::DBG_CONTINUE,
                trace_flag: 0,
                dr7: 0x400,
                symbol_start: 1,
                symbol_end: 0
            })
        );
        let mut v = Manipulate::get_version(0).reply(0, Vec::new());
        let want = Version {
            major: 0xF,
            minor: 19041,
            protocol: 6,
            secondary: 2,
            flags: 7,
            machine: Version::MACHINE_AMD64,
            max_packet_type: 12,
            max_state_change: 3,
            max_manipulate: 0x31,
            simulation: 0,
            kern_base: 0xFFFF_F802_6BC1_8000,
            ps_loaded_module_list: 0xFFFF_F802_6BEE_22D0,
            debugger_data_list: 0xFFFF_F802_6BEF_91F0,
        };
        v.set_version(&want);
        assert_eq!(
            Manipulate::parse(&v.to_bytes()).unwrap().call(),
            Call::GetVersion(want)
        );
    }

    #[test]
    fn state_change_round_trips() {
        let s = StateChange::breakpoint(
            0,
            2,
            0xFFFF_8000_1234_0000,
            0xFFFF_F802_6BD7_2B90,
            &[0xCC; 16],
        );
        let b = s.to_bytes();
        assert_eq!(b.len(), STATE_CHANGE_LEN);
        let back = StateChange::parse(&b).unwrap();
        assert_eq!(back, s);
        assert!(matches!(
            back.event(),
            Event::Exception {
                code: status::BREAKPOINT,
                first_chance: true,
                ..
            }
        ));
        assert_eq!(back.control_report().instruction_stream[0], 0xCC);
        assert!(matches!(
            StateChange::parse(&b[..0x80]),
            Err(MessageError::Short { .. })
        ));
    }
}
