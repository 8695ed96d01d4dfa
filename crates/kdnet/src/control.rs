//! Control-channel messages: the target's offer and the host's response,
//! from which both sides derive the data key (docs/kdnet.md, "The protocol in brief").
//!
//! Offsets below are into the plaintext `P`; the payload starts at `P[8]`.

use std::net::{Ipv6Addr, SocketAddrV6};

use sha2::{Digest, Sha256};

use crate::datagram::{DataKey, KDNET_HDR_LEN};
use crate::key::KdnetKey;

/// `P[9]`, the control message type, of an offer (target to host).
pub const MSG_OFFER: u8 = 1;
/// `P[9]` of a response (host to target).
pub const MSG_RESPONSE: u8 = 2;
/// The response payload (P[8..330]) that the data key hashes.
pub const RESPONSE_LEN: usize = 322;
/// The offer payload as Windows sends it (P[8..352]).
pub const OFFER_LEN: usize = 344;
/// The bytes of the offer that identify the target's boot (P[12..42]).
pub const IDENTITY_LEN: usize = 30;

/// A target's offer ("poke"), sent every ~3 s for as long as it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// P[10..12]: +1 per offer.
    pub counter: u16,
    /// P[12..42]: constant for one boot; a new value means the target
    /// rebooted.
    pub identity: [u8; IDENTITY_LEN],
    /// The target's own address and port.
    pub target: SocketAddrV6,
    /// The host address the target was configured with.
    pub host: SocketAddrV6,
    /// The debugger currently connected (`::ffff:0.0.0.0` when none).
    pub debugger: SocketAddrV6,
    /// The payload, as the response must copy P[10..42] from it.
    raw: Vec<u8>,
}

/// Why a control message was not an offer or a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The payload is shorter than the fields parsed.
    #[error("the control message is {len} bytes, shorter than an offer's {need}")]
    Short {
        /// The payload's length in bytes.
        len: usize,
        /// The bytes an offer (or response) needs.
        need: usize,
    },
    /// `P[9]`, the message type (the value), is not [`MSG_OFFER`] (or
    /// [`MSG_RESPONSE`] where one is expected).
    #[error("control message type {0} is not an offer (1) or response (2)")]
    NotOffer(u8),
}

/// P offset of the first address field.
const ADDRS: usize = 42;

impl Offer {
    /// Parse an offer payload (`P[8..]`). Only fields up to `P[96]` are
    /// required; the zero tail is not checked.
    pub fn parse(payload: &[u8]) -> Result<Self, ControlError> {
        let need = 96 - KDNET_HDR_LEN;
        if payload.len() < need {
            return Err(ControlError::Short {
                len: payload.len(),
                need,
            });
        }
        if payload[1] != MSG_OFFER {
            return Err(ControlError::NotOffer(payload[1]));
        }
        let p = |off: usize| off - KDNET_HDR_LEN;
        let addr = |off: usize| {
            let ip: [u8; 16] = payload[p(off)..p(off) + 16].try_into().unwrap_or([0; 16]);
            let port = u16::from_be_bytes([payload[p(off) + 16], payload[p(off) + 17]]);
            SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0)
        };
        let mut identity = [0u8; IDENTITY_LEN];
        identity.copy_from_slice(&payload[p(12)..p(42)]);
        Ok(Self {
            counter: u16::from_le_bytes([payload[p(10)], payload[p(11)]]),
            identity,
            target: addr(ADDRS),
            host: addr(ADDRS + 18),
            debugger: addr(ADDRS + 36),
            raw: payload.to_vec(),
        })
    }

    /// Build an offer payload (for a simulated target).
    pub fn build(
        counter: u16,
        identity: &[u8; IDENTITY_LEN],
        target: SocketAddrV6,
        host: SocketAddrV6,
        debugger: SocketAddrV6,
    ) -> Vec<u8> {
        let mut b = vec![0u8; OFFER_LEN];
        b[0] = 1;
        b[1] = MSG_OFFER;
        b[2..4].copy_from_slice(&counter.to_le_bytes());
        b[4..34].copy_from_slice(identity);
        for (i, a) in [target, host, debugger].iter().enumerate() {
            let at = ADDRS - KDNET_HDR_LEN + 18 * i;
            b[at..at + 16].copy_from_slice(&a.ip().octets());
            b[at + 16..at + 18].copy_from_slice(&a.port().to_be_bytes());
        }
        b
    }

    /// The host's response to this offer, with 32 bytes the host chose.
    pub fn respond(&self, host_random: &[u8; 32]) -> Response {
        let mut b = vec![0u8; RESPONSE_LEN];
        b[0] = 1;
        b[1] = MSG_RESPONSE;
        b[2..34].copy_from_slice(&self.raw[2..34]);
        b[34..66].copy_from_slice(host_random);
        Response { payload: b }
    }
}

/// The host's response (P[8..330], then 6 bytes of padding on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// P[8..330], [`RESPONSE_LEN`] bytes: type, the offer's counter and
    /// identity copied, the host's random bytes; the data key hashes it.
    pub payload: Vec<u8>,
}

impl Response {
    /// Accept a response payload (for a simulated target).
    pub fn parse(payload: &[u8]) -> Result<Self, ControlError> {
        if payload.len() < RESPONSE_LEN {
            return Err(ControlError::Short {
                len: payload.len(),
                need: RESPONSE_LEN,
            });
        }
        if payload[1] != MSG_RESPONSE {
            return Err(ControlError::NotOffer(payload[1]));
        }
        Ok(Self {
            payload: payload[..RESPONSE_LEN].to_vec(),
        })
    }

    /// The offer identity this response answers (P[12..42]).
    pub fn identity(&self) -> &[u8] {
        &self.payload[4..34]
    }

    /// `data_key = SHA-256(root_key || P[8..330])`.
    pub fn data_key(&self, key: &KdnetKey) -> DataKey {
        let mut h = Sha256::new();
        h.update(key.root_key());
        h.update(&self.payload);
        DataKey(h.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_builds_parses_and_responds() {
        let id = [0x5A; IDENTITY_LEN];
        let v4 = |a: [u8; 4], p| {
            SocketAddrV6::new(std::net::Ipv4Addr::from(a).to_ipv6_mapped(), p, 0, 0)
        };
        let b = Offer::build(
            0x97c1,
            &id,
            v4([192, 168, 1, 105], 50000),
            v4([192, 168, 1, 101], 50000),
            v4([0, 0, 0, 0], 0),
        );
        let o = Offer::parse(&b).unwrap();
        assert_eq!(o.counter, 0x97c1);
        assert_eq!(o.identity, id);
        assert_eq!(o.target.port(), 50000);
        assert_eq!(
            o.host.ip().to_ipv4_mapped(),
            Some([192, 168, 1, 101].into())
        );
        let r = o.respond(&[9; 32]);
        assert_eq!(r.payload.len(), RESPONSE_LEN);
        assert_eq!(r.identity(), &id);
        assert_eq!(Response::parse(&r.payload).unwrap(), r);
        assert!(matches!(
            Offer::parse(&r.payload),
            Err(ControlError::NotOffer(2))
        ));
    }
}
