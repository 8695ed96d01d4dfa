//! The TRIAGE_DUMP64 format: its field offsets, the sizes of the entries
//! its sections hold, and the MiniDumpFields bits that say which parts
//! the writer filled.

use super::summary::TriageHeader;

/// The DumpType of a small memory dump.
pub(super) const DUMP_TYPE_TRIAGE: u32 = 4;
/// 'TRGD' at ValidOffset: the writer finished.
pub(super) const TRIAGE_VALID: u32 = u32::from_le_bytes(*b"TRGD");
/// IMAGE_FILE_MACHINE_AMD64 and _ARM64.
pub(super) const MACHINE_AMD64: u32 = 0x8664;
pub(super) const MACHINE_ARM64: u32 = 0xAA64;

/// TRIAGE_DUMP64 field offsets, relative to its start at 0x2000.
pub(super) mod toff {
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
pub(super) const DRIVER_ENTRY_SIZE: usize = 0x90;
pub(super) const DRIVER_LDR: usize = 8;
pub(super) const LDR_DLL_BASE: usize = 0x30;
pub(super) const LDR_SIZE_OF_IMAGE: usize = 0x40;
pub(super) const LDR_CHECKSUM: usize = 0x78;
pub(super) const LDR_TIME_DATE_STAMP: usize = 0x80;
/// DUMP_UNLOADED_DRIVERS64: UNICODE_STRING64, 24 bytes of name, start, end.
pub(super) const UNLOADED_ENTRY_SIZE: usize = 0x38;
pub(super) const UNLOADED_NAME_BYTES: usize = 24;
/// TRIAGE_DATA_BLOCK: Address (8), Offset (4), Size (4).
pub(super) const DATA_BLOCK_SIZE: usize = 16;
/// The writer caps the stack at 16 KiB (MAX_TRIAGE_STACK_SIZE); real
/// stacks are at most a few pages. A larger claim is refused.
pub(super) const MAX_CALL_STACK: u32 = 1 << 20;

/// Reads the TRIAGE_DUMP64 offset of one part (0: not in the file).
pub(super) type PartOffset = fn(&TriageHeader) -> u32;

/// The MiniDumpFields bits of a small memory dump (TRIAGE_DUMP_*), each with
/// the part it stands for and the TRIAGE_DUMP64 offset that locates that
/// part. A bit can be set while its offset is 0, so nothing of that part is
/// in the file: both public Windows 10/11 small dumps flag "broken driver"
/// (0x80) with BrokenDriverOffset 0.
pub(super) const VALID_FIELDS: &[(u32, &str, PartOffset)] = &[
    (0x0001, "context", |t| t.context_offset),
    (0x0002, "exception", |t| t.exception_offset),
    (0x0004, "PRCB", |t| t.prcb_offset),
    (0x0008, "process", |t| t.process_offset),
    (0x0010, "thread", |t| t.thread_offset),
    (0x0020, "stack", |t| t.call_stack_offset),
    (0x0040, "driver list", |t| t.driver_list_offset),
    (0x0080, "broken driver", |t| t.broken_driver_offset),
    (0x0100, "Mm information", |t| t.mm_offset),
    (0x0200, "data page", |t| t.data_page_offset),
    (0x0400, "debugger data", |t| t.debugger_data_offset),
    (0x0800, "data blocks", |t| t.data_blocks_offset),
];

/// MiniDumpFields: which parts the writer filled. A writer that predates
/// it leaves "PAGE" there: trust the offsets alone then.
pub(super) struct Fields {
    pub raw: u32,
    known: bool,
}

impl Fields {
    pub(super) fn of(raw: u32) -> Self {
        Self {
            raw,
            known: raw != u32::from_le_bytes(*b"PAGE"),
        }
    }

    /// The writer filled the part `bit` stands for (or did not say).
    pub(super) fn has(&self, bit: u32) -> bool {
        !self.known || self.raw & bit != 0
    }

    /// The parts the file holds, by name: flagged and given an offset
    /// (none when the field is not known).
    pub(super) fn names(&self, th: &TriageHeader) -> Vec<&'static str> {
        if self.known {
            VALID_FIELDS
                .iter()
                .filter(|(bit, _, offset)| self.raw & bit != 0 && offset(th) != 0)
                .map(|(_, n, _)| *n)
                .collect()
        } else {
            Vec::new()
        }
    }
}
