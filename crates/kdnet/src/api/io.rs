//! The target talking to the debugger on its own: DBGKD_DEBUG_IO (a
//! DbgPrint, or a prompt) and DBGKD_FILE_IO (asking for a file).

use super::numbers::api_number as api;
use super::numbers::{DEBUG_IO_LEN, FILE_IO_LEN, status};
use crate::bytes::{Le, put};

kd_layout! {
    /// DBGKD_DEBUG_IO: the target printing (or prompting).
    pub struct DebugIo = ("DBGKD_DEBUG_IO", DEBUG_IO_LEN) {
        header {
            /// DBGKD_DEBUG_IO.ApiNumber: DbgKdPrintStringApi or
            /// DbgKdGetStringApi.
            pub api: u32,
            /// ProcessorLevel.
            pub processor_level: u16,
            /// Processor: the CPU that printed or prompted.
            pub processor: u16,
            /// PrintString: LengthOfString; GetString: prompt and read lengths.
            pub args: [u8; 8],
        }
        /// The string printed or the prompt (LengthOfString bytes of it
        /// count), or the debugger's answer to a prompt.
        pub data: Vec<u8>,
    }
}

impl DebugIo {
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

kd_layout! {
    /// DBGKD_FILE_IO: the target asking the debugger for a file.
    pub struct FileIo = ("DBGKD_FILE_IO", FILE_IO_LEN) {
        header {
            /// DBGKD_FILE_IO.ApiNumber: DbgKdCreateFileApi, ReadFile,
            /// WriteFile or CloseFile.
            pub api: u32,
            /// Status: the NTSTATUS in the debugger's answer.
            pub status: u32,
            /// The request's union (CreateFile's access and options, a
            /// handle, an offset and length), kept as bytes.
            pub args: [u8; 56],
        }
        /// CreateFile: the UTF-16 path; ReadFile/WriteFile: file bytes.
        pub data: Vec<u8>,
    }
}

impl FileIo {
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
        let units: Vec<u16> = Le(&self.data)
            .utf16_units()
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16_lossy(&units)
    }
}
