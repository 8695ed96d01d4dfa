//! Rows a full and a small dump's headers both hold, rendered one way for
//! both.

use pooldump_core::dump::{FileTime, UpTime};

use crate::render::{Section, hex};

/// The build and what MajorVersion says of it (0xF free, 0xC checked), as
/// a full and a small dump's Dump section show them.
pub(super) fn windows_build(build: u32, major_version: u32) -> String {
    let kind = match major_version {
        0xF => "free",
        0xC => "checked",
        _ => "unknown kind",
    };
    format!("{build} ({kind}, MajorVersion {major_version:#x})")
}

/// The processor count and the clocks, as a full and a small dump's
/// headers both hold them.
pub(super) fn clock_rows(s: &mut Section, processors: u32, time: &FileTime, up: &UpTime) {
    s.row("Processors", processors.to_string());
    s.row("System time", time.to_string());
    s.row("System uptime", up.to_string());
}

/// A bug check's four parameters: `(0x1, 0x2, 0x3, 0x4)`.
pub(super) fn bug_check_parameters(p: [u64; 4]) -> String {
    format!("({})", p.map(hex).join(", "))
}
