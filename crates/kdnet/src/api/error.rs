//! Why a KD data packet's contents are not a DbgKd message.

use crate::packet::PacketType;

/// Why a KD data packet's contents are not a DbgKd message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The packet is shorter than the message's fixed header.
    #[error("a {what} needs {need} bytes, the packet holds {len}")]
    Short {
        /// The Windows structure expected, e.g. `DBGKD_MANIPULATE_STATE64`.
        what: &'static str,
        /// Its size in bytes before its data.
        need: usize,
        /// The packet's data length in bytes.
        len: usize,
    },
    /// The KD packet's PacketType is not one of the four that carry a
    /// DbgKd message (state change, manipulate, debug I/O, file I/O).
    #[error("KD packet type {0:?} carries no DbgKd message pooldump knows")]
    UnknownType(PacketType),
}

pub(super) fn short(what: &'static str, need: usize, len: usize) -> MessageError {
    MessageError::Short { what, need, len }
}
