//! The KD packet inside a KDNET data-channel payload (docs/kdnet.md, "The protocol in brief").
//!
//! ```text
//!  0 u32 PacketLeader  "0000" data | "iiii" control
//!  4 u16 PacketType
//!  6 u16 ByteCount     data bytes that follow (0 for control packets)
//!  8 u32 PacketId
//! 12 u32 Checksum      wrapping byte sum of the data; 0 for control
//! 16 ..  data
//! ```
//!
//! Unlike serial KDCOM there is no trailing 0xAA and one packet fills one
//! datagram exactly. A data-channel payload may instead be the 12-byte
//! hello (leader 0) or the 1-byte break-in `b`.

use crate::bytes::Le;

/// PACKET_LEADER (`0000`): the PacketLeader of a data packet.
pub const DATA_LEADER: u32 = 0x3030_3030;
/// CONTROL_PACKET_LEADER (`iiii`): the PacketLeader of ACK, RESEND, RESET.
pub const CONTROL_LEADER: u32 = 0x6969_6969;
/// sizeof(KD_PACKET): the header before the data.
pub const KD_HEADER_LEN: usize = 16;
/// PACKET_MAX_SIZE: the largest ByteCount.
pub const PACKET_MAX_SIZE: usize = 4000;
/// The host's break-in request.
pub const BREAKIN_BYTE: u8 = 0x62;
/// The target's first data datagram after the handshake.
pub const HELLO_LEN: usize = 12;
/// The first host packet id; hosts count up by 2 (docs/kdnet.md, "The protocol in brief").
pub const HOST_ID_BASE: u32 = 0x8000_0000;

/// KD PacketType values (windbgkd.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// PACKET_TYPE_UNUSED (0).
    Unused,
    /// PACKET_TYPE_KD_STATE_CHANGE32 (1): a 32-bit target's state change.
    StateChange32,
    /// PACKET_TYPE_KD_STATE_MANIPULATE (2): DBGKD_MANIPULATE_STATE64
    /// requests and replies.
    StateManipulate,
    /// PACKET_TYPE_KD_DEBUG_IO (3): DBGKD_DEBUG_IO (DbgPrint, DbgPrompt).
    DebugIo,
    /// PACKET_TYPE_KD_ACKNOWLEDGE (4): control packet, the id received.
    Acknowledge,
    /// PACKET_TYPE_KD_RESEND (5): control packet, send the last packet again.
    Resend,
    /// PACKET_TYPE_KD_RESET (6): control packet, resynchronise packet ids.
    Reset,
    /// PACKET_TYPE_KD_STATE_CHANGE64 (7): DBGKD_ANY_WAIT_STATE_CHANGE.
    StateChange64,
    /// PACKET_TYPE_KD_POLL_BREAKIN (8): serial transports only.
    PollBreakin,
    /// PACKET_TYPE_KD_TRACE_IO (9).
    TraceIo,
    /// PACKET_TYPE_KD_CONTROL_REQUEST (10).
    ControlRequest,
    /// PACKET_TYPE_KD_FILE_IO (11): DBGKD_FILE_IO (`.kdfiles`).
    FileIo,
    /// Any other PacketType value, kept as received.
    Other(u16),
}

impl PacketType {
    /// The type of a KD_PACKET.PacketType value; unknown values become
    /// [`PacketType::Other`].
    pub fn from_u16(v: u16) -> Self {
        use PacketType::*;
        match v {
            0 => Unused,
            1 => StateChange32,
            2 => StateManipulate,
            3 => DebugIo,
            4 => Acknowledge,
            5 => Resend,
            6 => Reset,
            7 => StateChange64,
            8 => PollBreakin,
            9 => TraceIo,
            10 => ControlRequest,
            11 => FileIo,
            v => Other(v),
        }
    }

    /// The KD_PACKET.PacketType value.
    pub fn to_u16(self) -> u16 {
        use PacketType::*;
        match self {
            Unused => 0,
            StateChange32 => 1,
            StateManipulate => 2,
            DebugIo => 3,
            Acknowledge => 4,
            Resend => 5,
            Reset => 6,
            StateChange64 => 7,
            PollBreakin => 8,
            TraceIo => 9,
            ControlRequest => 10,
            FileIo => 11,
            Other(v) => v,
        }
    }
}

/// One data-channel payload, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The target's 12-byte hello after the handshake; hosts skip it.
    Hello([u8; HELLO_LEN]),
    /// The host's break-in request.
    BreakIn,
    /// A KD control packet (ACK, RESEND, RESET).
    Control {
        /// Acknowledge, Resend or Reset.
        kind: PacketType,
        /// KD_PACKET.PacketId: the id acknowledged (Acknowledge), the next
        /// id (Reset), 0 (Resend).
        id: u32,
    },
    /// A KD data packet, its checksum verified.
    Data(KdPacket),
}

/// A KD data packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdPacket {
    /// KD_PACKET.PacketType.
    pub kind: PacketType,
    /// KD_PACKET.PacketId: host packets count up by 2 from
    /// [`HOST_ID_BASE`]; a repeated id is a retransmission.
    pub id: u32,
    /// The ByteCount bytes after the header: a DbgKd message
    /// ([`crate::api::KdMessage`]).
    pub data: Vec<u8>,
}

/// Why a payload was not a KD packet. Dropped and counted, never acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than [`KD_HEADER_LEN`] (and not a hello or break-in).
    #[error("the payload is {len} bytes, too short for a KD packet header")]
    Short {
        /// The payload's length in bytes.
        len: usize,
    },
    /// PacketLeader (the value) is neither [`DATA_LEADER`] nor
    /// [`CONTROL_LEADER`].
    #[error("unknown KD packet leader {0:#010x}")]
    BadLeader(u32),
    /// ByteCount disagrees with the payload's length.
    #[error("KD ByteCount {count} plus the header is not the payload's {len} bytes")]
    LengthMismatch {
        /// KD_PACKET.ByteCount.
        count: usize,
        /// The payload's length in bytes.
        len: usize,
    },
    /// ByteCount (the value) exceeds [`PACKET_MAX_SIZE`].
    #[error("KD ByteCount {0} exceeds PACKET_MAX_SIZE (4000)")]
    TooLong(usize),
    /// KD_PACKET.Checksum is not the byte sum of the data.
    #[error("KD checksum {got:#010x} does not match the data's {want:#010x}")]
    Checksum {
        /// The Checksum field.
        got: u32,
        /// The sum computed from the data.
        want: u32,
    },
    /// A control packet with a non-zero ByteCount (the value).
    #[error("a KD control packet carries {0} data bytes")]
    ControlWithData(usize),
}

/// The KD checksum: the wrapping sum of the data bytes.
pub fn checksum(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |s, &b| s.wrapping_add(u32::from(b)))
}

impl Payload {
    /// Parse a data-channel payload (the plaintext without KDNET header
    /// and padding).
    pub fn parse(p: &[u8]) -> Result<Self, PacketError> {
        if p == [BREAKIN_BYTE] {
            return Ok(Payload::BreakIn);
        }
        let b = Le(p);
        let leader = b.u32(0).ok_or(PacketError::Short { len: p.len() })?;
        if leader == 0 && p.len() == HELLO_LEN {
            let mut h = [0u8; HELLO_LEN];
            h.copy_from_slice(p);
            return Ok(Payload::Hello(h));
        }
        if p.len() < KD_HEADER_LEN {
            return Err(PacketError::Short { len: p.len() });
        }
        let kind = PacketType::from_u16(b.u16(4).unwrap_or(0));
        let count = usize::from(b.u16(6).unwrap_or(0));
        let id = b.u32(8).unwrap_or(0);
        let sum = b.u32(12).unwrap_or(0);
        if count > PACKET_MAX_SIZE {
            return Err(PacketError::TooLong(count));
        }
        if KD_HEADER_LEN + count != p.len() {
            return Err(PacketError::LengthMismatch {
                count,
                len: p.len(),
            });
        }
        let data = &p[KD_HEADER_LEN..];
        match leader {
            CONTROL_LEADER => {
                if count != 0 {
                    return Err(PacketError::ControlWithData(count));
                }
                Ok(Payload::Control { kind, id })
            }
            DATA_LEADER => {
                let want = checksum(data);
                if sum != want {
                    return Err(PacketError::Checksum { got: sum, want });
                }
                Ok(Payload::Data(KdPacket {
                    kind,
                    id,
                    data: data.to_vec(),
                }))
            }
            l => Err(PacketError::BadLeader(l)),
        }
    }

    /// The payload's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Payload::Hello(h) => h.to_vec(),
            Payload::BreakIn => vec![BREAKIN_BYTE],
            Payload::Control { kind, id } => {
                let mut v = Vec::with_capacity(KD_HEADER_LEN);
                v.extend_from_slice(&CONTROL_LEADER.to_le_bytes());
                v.extend_from_slice(&kind.to_u16().to_le_bytes());
                v.extend_from_slice(&0u16.to_le_bytes());
                v.extend_from_slice(&id.to_le_bytes());
                v.extend_from_slice(&0u32.to_le_bytes());
                v
            }
            Payload::Data(p) => {
                let mut v = Vec::with_capacity(KD_HEADER_LEN + p.data.len());
                v.extend_from_slice(&DATA_LEADER.to_le_bytes());
                v.extend_from_slice(&p.kind.to_u16().to_le_bytes());
                // Callers keep data within PACKET_MAX_SIZE; see KdPacket::new.
                v.extend_from_slice(&(p.data.len() as u16).to_le_bytes());
                v.extend_from_slice(&p.id.to_le_bytes());
                v.extend_from_slice(&checksum(&p.data).to_le_bytes());
                v.extend_from_slice(&p.data);
                v
            }
        }
    }
}

impl KdPacket {
    /// A data packet; `None` if the data exceeds PACKET_MAX_SIZE.
    pub fn new(kind: PacketType, id: u32, data: Vec<u8>) -> Option<Self> {
        (data.len() <= PACKET_MAX_SIZE).then_some(Self { kind, id, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_data_round_trip() {
        for p in [
            Payload::Control {
                kind: PacketType::Acknowledge,
                id: 0x8000_0000,
            },
            Payload::Control {
                kind: PacketType::Resend,
                id: 0,
            },
            Payload::Data(
                KdPacket::new(PacketType::StateManipulate, 4, vec![1, 2, 3, 250]).unwrap(),
            ),
            Payload::BreakIn,
            Payload::Hello([0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0xa8, 0xc0]),
        ] {
            assert_eq!(Payload::parse(&p.to_bytes()).unwrap(), p);
        }
    }

    #[test]
    fn bad_packets_are_refused() {
        let good =
            Payload::Data(KdPacket::new(PacketType::StateManipulate, 4, vec![9; 20]).unwrap())
                .to_bytes();
        let mut bad_sum = good.clone();
        bad_sum[20] ^= 1;
        assert!(matches!(
            Payload::parse(&bad_sum),
            Err(PacketError::Checksum { .. })
        ));
        assert!(matches!(
            Payload::parse(&good[..good.len() - 1]),
            Err(PacketError::LengthMismatch { .. })
        ));
        let mut long = good.clone();
        long[6..8].copy_from_slice(&5000u16.to_le_bytes());
        assert_eq!(Payload::parse(&long), Err(PacketError::TooLong(5000)));
        let mut leader = good;
        leader[0] = 0x31;
        assert!(matches!(
            Payload::parse(&leader),
            Err(PacketError::BadLeader(_))
        ));
        assert!(matches!(
            Payload::parse(&[1, 2]),
            Err(PacketError::Short { .. })
        ));
    }
}
