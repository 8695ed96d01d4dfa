//! WinDbg-style names for ApiNumbers, for messages.

use crate::api::api_number;

/// A WinDbg-style name for an ApiNumber, for messages.
pub fn api_name(api: u32) -> String {
    use api_number::*;
    let name = match api {
        READ_VIRTUAL_MEMORY => "ReadVirtualMemory",
        WRITE_VIRTUAL_MEMORY => "WriteVirtualMemory",
        GET_CONTEXT => "GetContext",
        SET_CONTEXT => "SetContext",
        CONTINUE => "Continue",
        CONTINUE2 => "Continue2",
        READ_CONTROL_SPACE => "ReadControlSpace",
        READ_PHYSICAL_MEMORY => "ReadPhysicalMemory",
        WRITE_PHYSICAL_MEMORY => "WritePhysicalMemory",
        GET_VERSION => "GetVersion",
        _ => return format!("DbgKd API {api:#x}"),
    };
    format!("DbgKd{name}Api")
}
