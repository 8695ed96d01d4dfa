//! The host side of the KD packet layer over one KDNET association: the
//! handshake, ACKs, retransmission, RESEND/RESET recovery and duplicate
//! suppression (kdnet.md §3, §4, §9.3).
//!
//! Everything received is authenticated before it is looked at; whatever
//! fails (foreign source, bad framing, bad HMAC, bad KD checksum) is
//! counted in [`LinkStats`] and dropped, never acted on. Every wait has an
//! absolute deadline, so a flood of junk cannot stretch it, and every
//! retry loop has a bounded number of attempts.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::api::{KdMessage, Manipulate, StateChange, api_number};
use crate::control::{IDENTITY_LEN, Offer};
use crate::datagram::{self, Channel, DataKey, Datagram, DatagramError, MAX_LEN};
use crate::error::KdnetError;
use crate::key::KdnetKey;
use crate::packet::{HOST_ID_BASE, KdPacket, PacketType, Payload};

/// How long to wait, and how often to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long to wait for the target's first offer. Targets offer every
    /// 3 s; the default covers three periods.
    pub offer: Duration,
    /// How long to wait for an ACK before retransmitting (WinDbg: ~0.5 s).
    pub ack: Duration,
    /// How long to wait for a reply once the request is ACKed (page-ins
    /// can be slow).
    pub reply: Duration,
    /// Attempts per request (and per break-in) before the target is
    /// declared gone. Every third one also sends RESET to resynchronise.
    pub attempts: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            offer: Duration::from_secs(10),
            ack: Duration::from_millis(500),
            reply: Duration::from_secs(2),
            attempts: 8,
        }
    }
}

impl Timeouts {
    /// The longest one request can take before it fails.
    pub fn request_bound(&self) -> Duration {
        self.reply.max(self.ack) * self.attempts.max(1)
    }
}

/// What the link saw. Drops are counted by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Datagrams from an address other than the target's.
    pub dropped_foreign: u64,
    /// Not KDNET: wrong length, magic or channel.
    pub dropped_malformed: u64,
    /// The HMAC did not verify: corrupted or forged.
    pub dropped_bad_tag: u64,
    /// Authenticated, but not a valid KD packet (length or checksum).
    pub dropped_bad_packet: u64,
    /// Data packets seen before (ACKed again, not acted on).
    pub duplicates: u64,
    /// Our packets sent again after a timeout or RESEND.
    pub retransmits: u64,
    pub resets_sent: u64,
    /// Offers seen after the handshake (targets keep offering).
    pub offers: u64,
    /// Handshakes made (more than one when a response was lost).
    pub handshakes: u64,
    /// Authenticated packets that answered nothing we asked.
    pub unexpected: u64,
}

/// A received KD packet the caller must look at.
#[derive(Debug)]
pub(crate) enum Incoming {
    Control { kind: PacketType, id: u32 },
    Data(KdPacket),
}

/// How many target packet ids to remember for duplicate suppression.
const SEEN_IDS: usize = 64;

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
    /// again on the next offer.
    data_seen: bool,
    pub timeouts: Timeouts,
    pub stats: LinkStats,
    /// A state change that arrived while we were waiting for something
    /// else.
    pub pending_stop: Option<StateChange>,
    buf: Vec<u8>,
}

impl Link {
    /// Wait for the target's offer on `sock`, answer it and derive the
    /// data key.
    pub fn handshake(
        sock: UdpSocket,
        key: KdnetKey,
        timeouts: Timeouts,
    ) -> Result<Self, KdnetError> {
        let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
        let deadline = Instant::now() + timeouts.offer;
        let mut buf = vec![0u8; MAX_LEN + 64];
        let mut stats = LinkStats::default();
        loop {
            let Some((n, from)) = recv_until(&sock, &mut buf, deadline)? else {
                return Err(KdnetError::NoOffer {
                    port,
                    waited: timeouts.offer,
                });
            };
            stats.datagrams_in += 1;
            let wire = &buf[..n];
            match datagram::peek_channel(wire) {
                Ok((_, Channel::Control)) => {}
                // Data from an earlier association cannot be read yet.
                Ok((_, Channel::Data)) => {
                    stats.unexpected += 1;
                    continue;
                }
                Err(_) => {
                    stats.dropped_malformed += 1;
                    continue;
                }
            }
            let d = match datagram::open(wire, &key, None) {
                Ok(d) => d,
                // A well-framed control datagram that does not
                // authenticate: the first offer tells us the key is wrong,
                // and waiting longer would only hang.
                Err(DatagramError::BadTag) => return Err(KdnetError::WrongKey { from }),
                Err(_) => {
                    stats.dropped_malformed += 1;
                    continue;
                }
            };
            let Ok(offer) = Offer::parse(d.payload()) else {
                stats.unexpected += 1;
                continue;
            };
            let mut link = Self {
                sock,
                key,
                data_key: DataKey([0; 32]),
                version: d.version,
                target: from,
                identity: offer.identity,
                seq: 1,
                next_id: HOST_ID_BASE,
                seen: VecDeque::with_capacity(SEEN_IDS),
                data_seen: false,
                timeouts,
                stats,
                pending_stop: None,
                buf,
            };
            link.respond(&offer, d.seq)?;
            return Ok(link);
        }
    }

    fn respond(&mut self, offer: &Offer, seq: u64) -> Result<(), KdnetError> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| KdnetError::Random(e.to_string()))?;
        let resp = offer.respond(&random);
        // The response echoes the offer's sequence number.
        let d = Datagram::new(self.version, Channel::Control, seq, true, &resp.payload);
        let wire = d.seal(&self.key, None).map_err(KdnetError::internal)?;
        self.send_wire(&wire)?;
        self.data_key = resp.data_key(&self.key);
        self.stats.handshakes += 1;
        Ok(())
    }

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

    /// Take the next host packet id.
    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        // Stay in the host's half of the id space.
        self.next_id = id.wrapping_add(2) | HOST_ID_BASE;
        id
    }

    /// RESET carries the next id without using it up (kdnet.md §4).
    fn send_reset(&mut self) -> Result<(), KdnetError> {
        self.stats.resets_sent += 1;
        self.send_control(PacketType::Reset, self.next_id)
    }

    /// The next KD packet from the target, or `None` at `deadline`. Data
    /// packets are ACKed here, duplicates ACKed again and swallowed, and
    /// debug and file I/O answered.
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

    /// Offers keep coming every 3 s. One with a new boot identity means
    /// the target rebooted; before any data has flowed, an offer means our
    /// response was lost, so answer it again.
    fn on_offer(&mut self, d: &Datagram) -> Result<(), KdnetError> {
        let Ok(offer) = Offer::parse(d.payload()) else {
            self.stats.unexpected += 1;
            return Ok(());
        };
        self.stats.offers += 1;
        if offer.identity != self.identity {
            return Err(KdnetError::TargetRebooted {
                target: self.target,
            });
        }
        if !self.data_seen {
            self.respond(&offer, d.seq)?;
        }
        Ok(())
    }

    /// Answer what the target asks on its own: print strings need only the
    /// ACK; file requests get WinDbg's refusal or the target would wait.
    fn service(&mut self, p: KdPacket) -> Result<Option<Incoming>, KdnetError> {
        match p.kind {
            PacketType::DebugIo => Ok(None),
            PacketType::FileIo => {
                if let Ok(KdMessage::FileIo(f)) = KdMessage::parse(p.kind, &p.data) {
                    let id = self.take_id();
                    // Sent once: a lost refusal shows up as a RESEND or a
                    // repeated request, both answered again.
                    self.send(&Payload::Data(KdPacket {
                        kind: PacketType::FileIo,
                        id,
                        data: f.refuse().to_bytes(),
                    }))?;
                }
                Ok(None)
            }
            _ => Ok(Some(Incoming::Data(p))),
        }
    }

    /// Send a manipulate request and wait for its reply (or, for Continue
    /// and Continue2, only its ACK: the target then runs).
    pub fn transact(&mut self, req: &Manipulate) -> Result<Option<Manipulate>, KdnetError> {
        let expects_reply = !matches!(req.api, api_number::CONTINUE | api_number::CONTINUE2);
        let id = self.take_id();
        let packet = Payload::Data(KdPacket {
            kind: PacketType::StateManipulate,
            id,
            data: req.to_bytes(),
        });
        self.send(&packet)?;
        let started = Instant::now();
        let mut acked = false;
        let mut attempts = 1u32;
        let mut deadline = started + self.timeouts.ack;
        loop {
            match self.recv(deadline)? {
                Some(Incoming::Control {
                    kind: PacketType::Acknowledge,
                    id: a,
                }) if a == id => {
                    if !expects_reply {
                        return Ok(None);
                    }
                    if !acked {
                        acked = true;
                        deadline = Instant::now() + self.timeouts.reply;
                    }
                }
                Some(Incoming::Control {
                    kind: PacketType::Resend,
                    ..
                }) => {
                    // The target wants our unacknowledged packet again, or
                    // is still waiting for an ACK of its own: re-ACK what
                    // we saw last and resend the request.
                    if !acked {
                        if let Some(&last) = self.seen.back() {
                            self.send_control(PacketType::Acknowledge, last)?;
                        }
                        self.stats.retransmits += 1;
                        self.send(&packet)?;
                    }
                }
                Some(Incoming::Control { .. }) => {}
                Some(Incoming::Data(p)) => match p.kind {
                    PacketType::StateManipulate => match Manipulate::parse(&p.data) {
                        // The reply also proves the request arrived.
                        Ok(m) if expects_reply && answers(req, &m) => return Ok(Some(m)),
                        _ => self.stats.unexpected += 1,
                    },
                    PacketType::StateChange64 => {
                        if let Ok(s) = StateChange::parse(&p.data) {
                            self.pending_stop = Some(s);
                        }
                        if !expects_reply {
                            // The target stopped again right after
                            // continuing: the continue took effect.
                            return Ok(None);
                        }
                    }
                    _ => self.stats.unexpected += 1,
                },
                None => {
                    attempts += 1;
                    if attempts > self.timeouts.attempts {
                        return Err(KdnetError::NoResponse {
                            target: self.target,
                            what: api_name(req.api),
                            attempts: self.timeouts.attempts,
                            waited: started.elapsed(),
                        });
                    }
                    if attempts.is_multiple_of(3) {
                        // RESET makes the target answer RESET and resend
                        // its pending packet (kdnet.md §4 rule 4).
                        self.send_reset()?;
                    }
                    self.stats.retransmits += 1;
                    if acked {
                        // The reply was lost: ask for it again.
                        self.send_control(PacketType::Resend, 0)?;
                        deadline = Instant::now() + self.timeouts.reply;
                    } else {
                        self.send(&packet)?;
                        deadline = Instant::now() + self.timeouts.ack;
                    }
                }
            }
        }
    }

    /// Stop the target: RESEND (a target already stopped resends its
    /// state change), then the break-in byte, until a state change comes.
    pub fn break_in(&mut self) -> Result<StateChange, KdnetError> {
        if let Some(s) = self.pending_stop.take() {
            return Ok(s);
        }
        let started = Instant::now();
        for _ in 0..self.timeouts.attempts.max(1) {
            self.send_control(PacketType::Resend, 0)?;
            self.send(&Payload::BreakIn)?;
            let deadline = Instant::now() + self.timeouts.ack.max(self.timeouts.reply / 2);
            while let Some(incoming) = self.recv(deadline)? {
                if let Incoming::Data(p) = incoming {
                    if p.kind == PacketType::StateChange64
                        && let Ok(s) = StateChange::parse(&p.data)
                    {
                        return Ok(s);
                    }
                    self.stats.unexpected += 1;
                }
            }
            self.stats.retransmits += 1;
        }
        Err(KdnetError::NoResponse {
            target: self.target,
            what: "break-in".into(),
            attempts: self.timeouts.attempts,
            waited: started.elapsed(),
        })
    }
}

/// Whether `reply` answers `req`: the same ApiNumber and, for memory
/// transfers, the same address (a stale reply must never fill another
/// read).
fn answers(req: &Manipulate, reply: &Manipulate) -> bool {
    use crate::api::Call;
    if req.api != reply.api {
        return false;
    }
    match (req.call(), reply.call()) {
        (Call::Read { address: a, .. }, Call::Read { address: b, .. })
        | (Call::Write { address: a, .. }, Call::Write { address: b, .. }) => a == b,
        _ => true,
    }
}

/// Receive one datagram before `deadline`.
fn recv_until(
    sock: &UdpSocket,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<Option<(usize, SocketAddr)>, KdnetError> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait))
            .map_err(|e| KdnetError::Io {
                what: "setting the socket timeout".into(),
                source: e,
            })?;
        match sock.recv_from(buf) {
            Ok(r) => return Ok(Some(r)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // An ICMP port-unreachable from an earlier send surfaces here
            // on some systems; the target may come back, so keep waiting.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(KdnetError::Io {
                    what: "receiving".into(),
                    source: e,
                });
            }
        }
    }
}

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
