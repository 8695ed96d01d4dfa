//! DbgKd messages carried in KD data packets (docs/kdnet.md, "The protocol in brief", windbgkd.h):
//! DBGKD_MANIPULATE_STATE64 requests and replies, the x64
//! DBGKD_ANY_WAIT_STATE_CHANGE, DBGKD_DEBUG_IO and DBGKD_FILE_IO.
//!
//! Each message keeps every header byte (unions and padding included), so
//! `parse(b).to_bytes() == b`; typed views ([`Manipulate::call`],
//! [`StateChange::event`]) decode the union on demand. WinDbg fills unused
//! fields with junk, so nothing here depends on them.
//!
//! This file holds [`KdMessage`], the typed body of any data packet; each
//! message has its own file (`manipulate.rs`, `state_change.rs`, `io.rs`
//! for DEBUG_IO and FILE_IO), `numbers.rs` holds the protocol's numbers
//! (ApiNumbers, statuses, CONTEXT offsets, message sizes), `error.rs`
//! [`MessageError`] and `layout.rs` the macro that makes each message's
//! `parse` and `to_bytes` from its field list.

#[macro_use]
mod layout;
mod error;
mod io;
mod manipulate;
mod numbers;
mod state_change;

use crate::packet::PacketType;

pub use error::MessageError;
pub use io::{DebugIo, FileIo};
pub use manipulate::{Call, ContextEx, Continue2, Manipulate, Space, Transfer, Version};
pub use numbers::{
    CONTEXT_LEN, CONTEXT_RIP, DEBUG_IO_LEN, FILE_IO_LEN, MANIPULATE_LEN, MAX_TRANSFER,
    SPECIAL_REGISTERS_CR3, SPECIAL_REGISTERS_LEN, STATE_CHANGE_LEN, api_number, context, status,
};
pub use state_change::{ControlReport, Event, StateChange, StoppedAt};

/// A typed KD data packet body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KdMessage {
    /// PACKET_TYPE_KD_STATE_CHANGE64: the target stopped (or reports a
    /// load/unload) and waits for the debugger.
    StateChange(StateChange),
    /// PACKET_TYPE_KD_STATE_MANIPULATE: a debugger request or the
    /// target's reply.
    Manipulate(Manipulate),
    /// PACKET_TYPE_KD_DEBUG_IO: DbgPrint output or a DbgPrompt.
    DebugIo(DebugIo),
    /// PACKET_TYPE_KD_FILE_IO: the target's `.kdfiles` requests.
    FileIo(FileIo),
}

impl KdMessage {
    /// Decode the data of a KD packet of type `kind`; an error when the
    /// type carries no DbgKd message or the data is short for its header.
    pub fn parse(kind: PacketType, data: &[u8]) -> Result<Self, MessageError> {
        Ok(match kind {
            PacketType::StateChange64 => KdMessage::StateChange(StateChange::parse(data)?),
            PacketType::StateManipulate => KdMessage::Manipulate(Manipulate::parse(data)?),
            PacketType::DebugIo => KdMessage::DebugIo(DebugIo::parse(data)?),
            PacketType::FileIo => KdMessage::FileIo(FileIo::parse(data)?),
            k => return Err(MessageError::UnknownType(k)),
        })
    }

    /// The KD PacketType that carries this message.
    pub fn packet_type(&self) -> PacketType {
        match self {
            KdMessage::StateChange(_) => PacketType::StateChange64,
            KdMessage::Manipulate(_) => PacketType::StateManipulate,
            KdMessage::DebugIo(_) => PacketType::DebugIo,
            KdMessage::FileIo(_) => PacketType::FileIo,
        }
    }

    /// The packet data: the message's header bytes, then its data.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            KdMessage::StateChange(m) => m.to_bytes(),
            KdMessage::Manipulate(m) => m.to_bytes(),
            KdMessage::DebugIo(m) => m.to_bytes(),
            KdMessage::FileIo(m) => m.to_bytes(),
        }
    }
}

#[cfg(test)]
mod tests;
