//! The x64 DBGKD_ANY_WAIT_STATE_CHANGE: the target stopped, with what made
//! it stop ([`Event`]) and the AMD64 control report; and the state changes
//! a simulated target sends.

use super::numbers::api_number as api;
use super::numbers::{STATE_CHANGE_LEN, status};
use crate::bytes::{Le, put};

kd_layout! {
    /// The x64 DBGKD_ANY_WAIT_STATE_CHANGE: the target stopped.
    pub struct StateChange = ("DBGKD_ANY_WAIT_STATE_CHANGE", STATE_CHANGE_LEN) {
        header {
            /// NewState: DbgKdExceptionStateChange,
            /// DbgKdLoadSymbolsStateChange or DbgKdCommandStringStateChange
            /// ([`api_number`](super::api_number)`::STATE_*`).
            pub new_state: u32,
            /// ProcessorLevel.
            pub processor_level: u16,
            /// Processor: the CPU that stopped.
            pub processor: u16,
            /// NumberProcessors: the target's CPU count.
            pub number_processors: u32,
            /// The 4 bytes of alignment before Thread.
            pub pad: u32,
            /// Thread: the stopped CPU's current `_KTHREAD`.
            pub thread: u64,
            /// ProgramCounter: where it stopped.
            pub program_counter: u64,
            /// The union at +0x20 (exception record or load-symbols info).
            pub union: [u8; 0xA0],
            /// The AMD64 control report at +0xC0.
            pub control_report: [u8; 0x30],
        }
        /// The load-symbols path, if any.
        pub data: Vec<u8>,
    }
}

/// Where a (simulated) target stopped: the fixed part of the state
/// changes it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoppedAt {
    /// The processor that stopped, of `number_processors`.
    pub processor: u16,
    /// NumberProcessors: the machine's CPU count.
    pub number_processors: u32,
    /// Its current `_KTHREAD`.
    pub thread: u64,
    /// The program counter.
    pub pc: u64,
}

/// What made the target stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// DbgKdExceptionStateChange: DBGKM_EXCEPTION64.
    Exception {
        /// ExceptionRecord.ExceptionCode (STATUS_BREAKPOINT for `int3`).
        code: u32,
        /// ExceptionRecord.ExceptionFlags.
        flags: u32,
        /// ExceptionRecord.ExceptionAddress.
        address: u64,
        /// ExceptionInformation, at most 15 entries.
        parameters: Vec<u64>,
        /// FirstChance: the exception has not been offered to handlers yet.
        first_chance: bool,
    },
    /// DbgKdLoadSymbolsStateChange: DBGKD_LOAD_SYMBOLS64.
    LoadSymbols {
        /// BaseOfDll: where the image is mapped.
        base: u64,
        /// ProcessId.
        process_id: u64,
        /// CheckSum: the PE header's checksum.
        checksum: u32,
        /// SizeOfImage, in bytes.
        size: u32,
        /// UnloadSymbols: the image is unloading, not loading.
        unload: bool,
        /// The image path, bounded by PathNameLength and the packet.
        path: String,
    },
    /// DbgKdCommandStringStateChange (its strings not decoded).
    CommandString,
    /// Any other NewState.
    Other,
}

kd_layout! {
    /// The AMD64 control report (AMD64_DBGKD_CONTROL_REPORT).
    pub struct ControlReport: [u8; 0x30] {
        /// Dr6: the debug-status register.
        pub dr6: u64,
        /// Dr7: the debug-control register.
        pub dr7: u64,
        /// EFlags.
        pub eflags: u32,
        /// InstructionCount: valid bytes of `instruction_stream`.
        pub instruction_count: u16,
        /// ReportFlags: AMD64_REPORT_INCLUDES_SEGS (1) when the segment
        /// selectors are filled, AMD64_REPORT_STANDARD_CS (2).
        pub report_flags: u16,
        /// Up to 16 bytes at the PC (`instruction_count` of them valid).
        pub instruction_stream: [u8; 16],
        /// SegCs.
        pub seg_cs: u16,
        /// SegDs.
        pub seg_ds: u16,
        /// SegEs.
        pub seg_es: u16,
        /// SegFs.
        pub seg_fs: u16,
    }
}

impl StateChange {
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

    /// The AMD64 control report, decoded.
    pub fn control_report(&self) -> ControlReport {
        ControlReport::from_bytes(&self.control_report)
    }

    /// A breakpoint exception state change (for a simulated target):
    /// STATUS_BREAKPOINT at the PC, first chance, `stream` the bytes there.
    pub fn breakpoint(at: StoppedAt, stream: &[u8; 16]) -> Self {
        // ExceptionInformation[0] = BREAKPOINT_BREAK (0).
        Self::exception(at, status::BREAKPOINT, &[0], true, stream)
    }

    /// An exception state change (for a simulated target): `code` at the
    /// PC with up to 15 parameters.
    pub fn exception(
        at: StoppedAt,
        code: u32,
        parameters: &[u64],
        first_chance: bool,
        stream: &[u8; 16],
    ) -> Self {
        let mut union = [0u8; 0xA0];
        put(&mut union, 0, &code.to_le_bytes());
        put(&mut union, 0x10, &at.pc.to_le_bytes());
        let parameters = &parameters[..parameters.len().min(15)];
        put(&mut union, 0x18, &(parameters.len() as u32).to_le_bytes());
        for (i, p) in parameters.iter().enumerate() {
            put(&mut union, 0x20 + 8 * i, &p.to_le_bytes());
        }
        put(&mut union, 0x98, &u32::from(first_chance).to_le_bytes());
        let mut s = Self::with_report(at, stream);
        s.union = union;
        s
    }

    /// A load-symbols state change (for a simulated target): the image
    /// `path` mapped at `base`.
    pub fn load_symbols(at: StoppedAt, base: u64, size: u32, path: &str) -> Self {
        let mut data = path.as_bytes().to_vec();
        data.push(0);
        let mut union = [0u8; 0xA0];
        put(&mut union, 0, &(data.len() as u32).to_le_bytes());
        put(&mut union, 0x08, &base.to_le_bytes());
        put(&mut union, 0x10, &u64::MAX.to_le_bytes());
        put(&mut union, 0x1C, &size.to_le_bytes());
        let mut s = Self::with_report(at, &[0; 16]);
        s.new_state = api::STATE_LOAD_SYMBOLS;
        s.union = union;
        s.data = data;
        s
    }

    /// The fixed part with a control report as Windows fills it.
    fn with_report(at: StoppedAt, stream: &[u8; 16]) -> Self {
        let cr = ControlReport {
            dr6: 0xFFFF_0FF0,
            dr7: 0x400,
            eflags: 0x202,
            instruction_count: 16,
            report_flags: 3,
            instruction_stream: *stream,
            seg_cs: 0x10,
            seg_ds: 0x2B,
            seg_es: 0x2B,
            seg_fs: 0x53,
        };
        Self {
            new_state: api::STATE_EXCEPTION,
            processor_level: 6,
            processor: at.processor,
            number_processors: at.number_processors,
            pad: 0,
            thread: at.thread,
            program_counter: at.pc,
            union: [0; 0xA0],
            control_report: cr.to_bytes(),
            data: Vec::new(),
        }
    }
}
