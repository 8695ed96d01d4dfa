//! The crashing thread's CONTEXT record in the dump header.

use super::CrashDump;

/// DUMP_HEADER64.ContextRecord: an x64 CONTEXT (0x4D0 bytes) at 0x348.
const CONTEXT_OFFSET: usize = 0x348;
const CONTEXT_SIZE: usize = 0x4D0;

impl CrashDump {
    /// The x64 CONTEXT record KeBugCheckEx saved in the header (the
    /// registers of the thread that crashed), as raw bytes: parse it with
    /// [`crate::stack::Registers::from_context`]. The header was checked
    /// to be 0x2000 bytes when the dump was opened, so it is always there.
    pub fn context_record(&self) -> &[u8] {
        self.file_bytes()
            .get(CONTEXT_OFFSET..CONTEXT_OFFSET + CONTEXT_SIZE)
            .unwrap_or(&[])
    }
}
