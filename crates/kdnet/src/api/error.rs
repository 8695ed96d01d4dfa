//! Why a KD data packet's contents are not a DbgKd message.

use crate::packet::PacketType;

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

pub(super) fn short(what: &'static str, need: usize, len: usize) -> MessageError {
    MessageError::Short { what, need, len }
}
