//! The host side of the KD packet layer over one KDNET association: the
//! handshake, ACKs, adaptive retransmission, RESEND/RESET recovery and
//! duplicate suppression (docs/kdnet.md, "The protocol in brief").
//!
//! Everything received is authenticated before it is looked at; whatever
//! fails (foreign source, bad framing, bad HMAC, bad KD checksum) is
//! counted in [`LinkStats`] and dropped, never acted on. Every wait has an
//! absolute deadline, so a flood of junk cannot stretch it, and every
//! recovery loop is bounded by [`Timeouts::give_up`].
//!
//! # Retransmission
//!
//! KD is stop-and-wait: one request in flight, answered by an ACK and (for
//! all but Continue) a reply. The retransmission timeout is measured, as
//! TCP does (RFC 6298): every exchange that was not retransmitted gives a
//! round-trip sample (request sent → reply, or → ACK for Continue), and
//! the timeout is `SRTT + max(G, 4·RTTVAR)` clamped to
//! `[min_rto, max_rto]`, doubled on each timeout of one request (Karn's
//! rule: no sample from a retransmitted exchange). A timeout first resends
//! the one packet that is missing: the request if it was not ACKed, a
//! RESEND (asking for the reply) if it was. Only when that has failed
//! [`Timeouts::resends_before_reset`] times, and at least
//! [`Timeouts::reset_after`] has passed, does the link send RESET, which
//! makes the target answer RESET and resend its pending packet (kdnet.md
//! §4 rule 4). Every retransmission, timeout and RESET is counted.
//!
//! The minimum timeout follows QUIC's (RFC 9002 §6.2) reasoning rather
//! than TCP's 1 s floor: TCP's floor exists for delayed ACKs, and a KD
//! target ACKs at once. A spurious retransmission costs one duplicate
//! datagram, which both sides recognise by its id.
//!
//! This file holds the `Link`: sending, receiving, ACKs, duplicate
//! suppression and what the target asks on its own. `handshake.rs` makes
//! (and remakes) the association, `exchange.rs` runs one request or
//! break-in to its answer, `timer.rs` holds the [`Timeouts`] and the
//! [`RttEstimator`], `stats.rs` the [`LinkStats`], `socket.rs` waits for
//! a datagram and `names.rs` names ApiNumbers for messages.

mod exchange;
mod handshake;
mod names;
mod socket;
mod stats;
mod timer;

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use crate::api::{DebugIo, KdMessage, api_number};
use crate::control::IDENTITY_LEN;
use crate::datagram::{self, Channel, DataKey, Datagram, DatagramError};
use crate::error::KdnetError;
use crate::key::KdnetKey;
use crate::packet::{HOST_ID_BASE, KdPacket, PacketType, Payload};

pub use names::api_name;
use socket::recv_until;
pub use stats::LinkStats;
pub use timer::{RttEstimator, Timeouts};

/// A received KD packet the caller must look at.
#[derive(Debug)]
pub(crate) enum Incoming {
    Control { kind: PacketType, id: u32 },
    Data(KdPacket),
}

/// How many target packet ids to remember for duplicate suppression.
const SEEN_IDS: usize = 64;
/// State changes and prints kept for [`Link::take_event`] at most.
const MAX_EVENTS: usize = 256;

pub(crate) struct Link {
    sock: UdpSocket,
    key: KdnetKey,
    data_key: DataKey,
    /// The version byte of the offer answered; echoed in everything sent.
    version: u8,
    pub target: SocketAddr,
    identity: [u8; IDENTITY_LEN],
    /// Next host data-channel sequence number.
    seq: u64,
    /// Next host packet id (0x80000000, +2 per new packet).
    next_id: u32,
    seen: VecDeque<u32>,
    /// No authenticated data datagram yet: a lost response is answered
    /// again on the next offer, and resent with the break-in.
    data_seen: bool,
    /// The last response on the wire, to resend while no data has come.
    response: Vec<u8>,
    pub timeouts: Timeouts,
    pub rtt: RttEstimator,
    pub stats: LinkStats,
    /// State changes and prints that arrived while we were waiting for
    /// something else, oldest first.
    events: VecDeque<KdPacket>,
    buf: Vec<u8>,
}

impl Link {
    fn send_wire(&mut self, wire: &[u8]) -> Result<(), KdnetError> {
        self.sock
            .send_to(wire, self.target)
            .map_err(|e| KdnetError::Io {
                what: format!("sending to {}", self.target),
                source: e,
            })?;
        self.stats.datagrams_out += 1;
        Ok(())
    }

    /// Send one data-channel payload.
    pub fn send(&mut self, p: &Payload) -> Result<(), KdnetError> {
        let d = Datagram::new(self.version, Channel::Data, self.seq, true, &p.to_bytes());
        self.seq = (self.seq + 1) & 0x00FF_FFFF_FFFF_FFFF;
        let wire = d
            .seal(&self.key, Some(&self.data_key))
            .map_err(KdnetError::internal)?;
        self.send_wire(&wire)
    }

    fn send_control(&mut self, kind: PacketType, id: u32) -> Result<(), KdnetError> {
        self.send(&Payload::Control { kind, id })
    }

    /// A data packet of `kind` under the next host packet id.
    fn data_packet(&mut self, kind: PacketType, data: Vec<u8>) -> KdPacket {
        let id = self.next_id;
        // Stay in the host's half of the id space.
        self.next_id = id.wrapping_add(2) | HOST_ID_BASE;
        KdPacket { kind, id, data }
    }

    /// RESET carries the next id without using it up (docs/kdnet.md, "The protocol in brief").
    fn send_reset(&mut self) -> Result<(), KdnetError> {
        self.stats.resets_sent += 1;
        self.send_control(PacketType::Reset, self.next_id)
    }

    /// The stats with the timer's current state.
    pub fn snapshot(&self) -> LinkStats {
        LinkStats {
            srtt: self.rtt.srtt(),
            rttvar: self.rtt.rttvar(),
            rto: self.rtt.rto(),
            ..self.stats
        }
    }

    /// The oldest state change or print that arrived outside
    /// [`Link::recv_event`].
    pub fn take_event(&mut self) -> Option<KdPacket> {
        self.events.pop_front()
    }

    fn queue_event(&mut self, p: KdPacket) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(p);
    }

    /// The next KD packet from the target, or `None` at `deadline`. Data
    /// packets are ACKed here, duplicates ACKed again and swallowed, and
    /// file I/O and prompts answered.
    pub fn recv(&mut self, deadline: Instant) -> Result<Option<Incoming>, KdnetError> {
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            let got = recv_until(&self.sock, &mut buf, deadline);
            let r = match got {
                Ok(Some((n, from))) => self.accept(&buf[..n], from),
                Ok(None) => {
                    self.buf = buf;
                    return Ok(None);
                }
                Err(e) => Err(e),
            };
            self.buf = buf;
            if let Some(incoming) = r? {
                return Ok(Some(incoming));
            }
        }
    }

    /// The next state change or print, queued or new, before `deadline`.
    /// Anything else that arrives is counted and dropped.
    pub fn recv_event(&mut self, deadline: Instant) -> Result<Option<KdPacket>, KdnetError> {
        if let Some(p) = self.events.pop_front() {
            return Ok(Some(p));
        }
        loop {
            match self.recv(deadline)? {
                None => return Ok(None),
                Some(Incoming::Data(p))
                    if matches!(p.kind, PacketType::StateChange64 | PacketType::DebugIo) =>
                {
                    return Ok(Some(p));
                }
                Some(Incoming::Data(_)) => self.stats.unexpected += 1,
                // ACKs of our probes, the target's RESET answers.
                Some(Incoming::Control { .. }) => {}
            }
        }
    }

    /// Ask a target that may be waiting for an ACK we never received to
    /// send its pending packet again: a state change or print lost on
    /// its way to us would otherwise never come (targets do not
    /// retransmit on their own; docs/kdnet.md, "The protocol in brief"). A running target with
    /// nothing pending ignores it.
    pub fn probe(&mut self) -> Result<(), KdnetError> {
        self.stats.retransmits += 1;
        self.send_control(PacketType::Resend, 0)
    }

    /// Look at one datagram; `Ok(None)` if it was dropped or consumed.
    fn accept(&mut self, wire: &[u8], from: SocketAddr) -> Result<Option<Incoming>, KdnetError> {
        self.stats.datagrams_in += 1;
        if from != self.target {
            self.stats.dropped_foreign += 1;
            return Ok(None);
        }
        let d = match datagram::open(wire, &self.key, Some(&self.data_key)) {
            Ok(d) => d,
            Err(DatagramError::BadTag) => {
                self.stats.dropped_bad_tag += 1;
                return Ok(None);
            }
            Err(_) => {
                self.stats.dropped_malformed += 1;
                return Ok(None);
            }
        };
        if d.from_host {
            // Our own direction: a reflection, not the target.
            self.stats.unexpected += 1;
            return Ok(None);
        }
        if d.channel == Channel::Control {
            return self.on_offer(&d).map(|()| None);
        }
        self.data_seen = true;
        let payload = match Payload::parse(d.payload()) {
            Ok(p) => p,
            Err(_) => {
                self.stats.dropped_bad_packet += 1;
                return Ok(None);
            }
        };
        match payload {
            Payload::Hello(_) | Payload::BreakIn => Ok(None),
            Payload::Control { kind, id } => Ok(Some(Incoming::Control { kind, id })),
            Payload::Data(p) => {
                // Rule 1: every data packet is ACKed, duplicates included.
                self.send_control(PacketType::Acknowledge, p.id)?;
                if self.seen.contains(&p.id) {
                    self.stats.duplicates += 1;
                    return Ok(None);
                }
                if self.seen.len() == SEEN_IDS {
                    self.seen.pop_front();
                }
                self.seen.push_back(p.id);
                self.service(p)
            }
        }
    }

    /// Answer what the target asks on its own: file requests get WinDbg's
    /// refusal and prompts an empty line, or the target would wait
    /// forever. Everything else goes to the caller.
    fn service(&mut self, p: KdPacket) -> Result<Option<Incoming>, KdnetError> {
        match p.kind {
            PacketType::FileIo => {
                if let Ok(KdMessage::FileIo(f)) = KdMessage::parse(p.kind, &p.data) {
                    // Sent once: a lost refusal shows up as a RESEND or a
                    // repeated request, both answered again.
                    let answer = self.data_packet(PacketType::FileIo, f.refuse().to_bytes());
                    self.send(&Payload::Data(answer))?;
                }
                Ok(None)
            }
            PacketType::DebugIo => {
                if let Ok(io) = DebugIo::parse(&p.data)
                    && io.api == api_number::GET_STRING
                {
                    let answer =
                        self.data_packet(PacketType::DebugIo, io.empty_answer().to_bytes());
                    self.send(&Payload::Data(answer))?;
                }
                self.stats.events += 1;
                Ok(Some(Incoming::Data(p)))
            }
            PacketType::StateChange64 => {
                self.stats.events += 1;
                Ok(Some(Incoming::Data(p)))
            }
            _ => Ok(Some(Incoming::Data(p))),
        }
    }
}

#[cfg(test)]
mod tests;
