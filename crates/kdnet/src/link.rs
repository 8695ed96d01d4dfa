//! The host side of the KD packet layer over one KDNET association: the
//! handshake, ACKs, adaptive retransmission, RESEND/RESET recovery and
//! duplicate suppression (kdnet.md §3, §4, §9.3).
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

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::api::{Call, DebugIo, KdMessage, Manipulate, api_number};
use crate::control::{IDENTITY_LEN, Offer};
use crate::datagram::{self, Channel, DataKey, Datagram, DatagramError, MAX_LEN};
use crate::error::KdnetError;
use crate::key::KdnetKey;
use crate::packet::{HOST_ID_BASE, KdPacket, PacketType, Payload};

/// How long to wait, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long to wait for the target's first offer. Targets offer every
    /// 3 s; the default covers three periods.
    pub offer: Duration,
    /// The retransmission timeout before any round trip was measured.
    pub initial_rto: Duration,
    /// The smallest retransmission timeout, however fast the link.
    pub min_rto: Duration,
    /// The largest, however slow the link or long the back-off.
    pub max_rto: Duration,
    /// A fixed retransmission timeout instead of the measured one
    /// (`retry=MS` in the connection spec): no adaptation, no back-off.
    pub fixed_rto: Option<Duration>,
    /// Timeouts of one request, each answered by resending the missing
    /// packet, before RESET is tried as well.
    pub resends_before_reset: u32,
    /// RESET is never sent before one request has waited this long: a
    /// short burst of loss is ridden out by resending alone.
    pub reset_after: Duration,
    /// A request (or break-in) that has not been answered after this long
    /// fails with [`KdnetError::NoResponse`] and ends the session.
    pub give_up: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            offer: Duration::from_secs(10),
            // Before the first sample: well below WinDbg's ~0.5 s timer
            // (the first exchanges are idempotent: a response, a RESEND, a
            // break-in, so an early resend costs one datagram), above a
            // LAN's round trip.
            initial_rto: Duration::from_millis(100),
            // poll(2) waits with hrtimer precision (~50 us slack).
            min_rto: Duration::from_micros(200),
            max_rto: Duration::from_secs(2),
            fixed_rto: None,
            resends_before_reset: 4,
            reset_after: Duration::from_millis(250),
            give_up: Duration::from_secs(15),
        }
    }
}

impl Timeouts {
    /// `retry=`: a fixed retransmission timeout, everything else default.
    pub fn fixed(rto: Duration) -> Self {
        Self {
            fixed_rto: Some(rto),
            ..Self::default()
        }
    }
}

/// The retransmission timer of RFC 6298 (§2, §5): a smoothed round-trip
/// time and its variation, with exponential back-off. As in QUIC (RFC 9002
/// §6.2.1), the back-off ends when an exchange completes, not only when it
/// gives a sample: on a link that reorders, many exchanges are resent and
/// give none, and a back-off kept until the next sample ratchets the timer
/// up to its ceiling.
///
/// ```
/// use std::time::Duration;
/// use pooldump_kdnet::{RttEstimator, Timeouts};
/// let mut r = RttEstimator::new(&Timeouts::default());
/// assert_eq!(r.rto(), Duration::from_millis(100)); // no sample yet
/// r.sample(Duration::from_millis(10));
/// // SRTT 10 ms, RTTVAR 5 ms: RTO = 10 + 4 * 5 ms.
/// assert_eq!(r.rto(), Duration::from_millis(30));
/// r.back_off();
/// assert_eq!(r.rto(), Duration::from_millis(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// The timer before back-off.
    base: Duration,
    /// Timeouts since the last completed exchange (the back-off exponent).
    backoff: u32,
    min: Duration,
    max: Duration,
    fixed: bool,
}

/// RFC 6298's clock granularity G: the variance term never goes below it.
/// The clock is `Instant` and the wait poll(2) with a timespec, so G is the
/// timer slack, not a tick.
const GRANULARITY: Duration = Duration::from_micros(100);

impl RttEstimator {
    pub fn new(t: &Timeouts) -> Self {
        let (base, fixed) = match t.fixed_rto {
            Some(f) => (f, true),
            None => (t.initial_rto.clamp(t.min_rto, t.max_rto), false),
        };
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            base,
            backoff: 0,
            min: t.min_rto,
            max: t.max_rto.max(t.min_rto),
            fixed,
        }
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        if self.fixed {
            return self.base;
        }
        self.base
            .checked_mul(1u32 << self.backoff.min(16))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The smoothed round-trip time, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// A round trip measured on an exchange that was not retransmitted.
    pub fn sample(&mut self, r: Duration) {
        let (srtt, rttvar) = match self.srtt {
            // §2.2: the first measurement.
            None => (r, r / 2),
            // §2.3: alpha = 1/8, beta = 1/4.
            Some(s) => {
                let err = s.abs_diff(r);
                ((s * 7 + r) / 8, (self.rttvar * 3 + err) / 4)
            }
        };
        self.srtt = Some(srtt);
        self.rttvar = rttvar;
        self.backoff = 0;
        if !self.fixed {
            self.base = (srtt + (rttvar * 4).max(GRANULARITY)).clamp(self.min, self.max);
        }
    }

    /// §5.5: a timeout doubles the timer, up to the ceiling.
    pub fn back_off(&mut self) {
        if self.rto() < self.max {
            self.backoff += 1;
        }
    }

    /// An exchange completed (perhaps after retransmissions, so without a
    /// sample): the link works again, and the back-off ends.
    pub fn completed(&mut self) {
        self.backoff = 0;
    }
}

/// What the link saw and did. Drops are counted by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Datagrams from an address other than the target's.
    pub dropped_foreign: u64,
    /// Not KDNET: wrong length, magic or channel.
    pub dropped_malformed: u64,
    /// The HMAC did not verify: corrupted, forged, or under an old key.
    pub dropped_bad_tag: u64,
    /// Authenticated, but not a valid KD packet (length or checksum).
    pub dropped_bad_packet: u64,
    /// Data packets seen before (ACKed again, not acted on).
    pub duplicates: u64,
    /// Requests made: each one round trip when nothing is lost.
    pub requests: u64,
    /// Of which memory reads (virtual, physical, control space).
    pub reads: u64,
    /// Bytes those reads returned.
    pub read_bytes: u64,
    /// Retransmission timers that expired.
    pub timeouts: u64,
    /// Our packets sent again: requests, RESENDs asking for a reply, the
    /// handshake response, break-ins.
    pub retransmits: u64,
    pub resets_sent: u64,
    /// Offers seen after the handshake (targets keep offering).
    pub offers: u64,
    /// Handshakes made (more than one when a response was lost, or after
    /// a reconnect).
    pub handshakes: u64,
    /// State changes and debug prints received.
    pub events: u64,
    /// Events dropped because too many were waiting to be read.
    pub events_dropped: u64,
    /// Authenticated packets that answered nothing we asked.
    pub unexpected: u64,
    /// Smoothed round-trip time and the timeout now in force.
    pub srtt: Option<Duration>,
    pub rttvar: Duration,
    pub rto: Duration,
}

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

/// A valid offer, where it came from and how it was framed.
struct Offered {
    offer: Offer,
    seq: u64,
    version: u8,
    from: SocketAddr,
}

impl Link {
    /// Wait for the target's offer on `sock`, answer it and derive the
    /// data key.
    pub fn handshake(
        sock: UdpSocket,
        key: KdnetKey,
        timeouts: Timeouts,
    ) -> Result<Self, KdnetError> {
        sock.set_nonblocking(true).map_err(|e| KdnetError::Io {
            what: "making the socket non-blocking".into(),
            source: e,
        })?;
        let mut buf = vec![0u8; MAX_LEN + 64];
        let mut stats = LinkStats::default();
        let deadline = Instant::now() + timeouts.offer;
        let o = await_offer(&sock, &key, &mut buf, &mut stats, deadline, timeouts.offer)?;
        let mut link = Self {
            sock,
            key,
            data_key: DataKey([0; 32]),
            version: o.version,
            target: o.from,
            identity: o.offer.identity,
            seq: 1,
            next_id: HOST_ID_BASE,
            seen: VecDeque::with_capacity(SEEN_IDS),
            data_seen: false,
            response: Vec::new(),
            rtt: RttEstimator::new(&timeouts),
            timeouts,
            stats,
            events: VecDeque::new(),
            buf,
        };
        link.respond(&o.offer, o.seq)?;
        Ok(link)
    }

    /// Start a new association on the same socket: wait up to `wait` for
    /// an offer (from this boot or a new one), answer it, and forget the
    /// old association's sequence numbers, duplicates and queued events.
    /// Host packet ids keep counting, so no new request can be mistaken
    /// for one the target already executed. Returns whether the target's
    /// boot identity changed (it rebooted).
    pub fn rehandshake(&mut self, wait: Duration) -> Result<bool, KdnetError> {
        let deadline = Instant::now() + wait;
        let mut buf = std::mem::take(&mut self.buf);
        let got = await_offer(
            &self.sock,
            &self.key,
            &mut buf,
            &mut self.stats,
            deadline,
            wait,
        );
        self.buf = buf;
        let o = got?;
        let rebooted = o.offer.identity != self.identity;
        self.version = o.version;
        self.target = o.from;
        self.identity = o.offer.identity;
        self.seq = 1;
        self.seen.clear();
        self.events.clear();
        self.data_seen = false;
        self.respond(&o.offer, o.seq)?;
        Ok(rebooted)
    }

    fn respond(&mut self, offer: &Offer, seq: u64) -> Result<(), KdnetError> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| KdnetError::Random(e.to_string()))?;
        let resp = offer.respond(&random);
        // The response echoes the offer's sequence number.
        let d = Datagram::new(self.version, Channel::Control, seq, true, &resp.payload);
        let wire = d.seal(&self.key, None).map_err(KdnetError::internal)?;
        self.send_wire(&wire)?;
        self.response = wire;
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
    /// retransmit on their own; kdnet.md §8.A). A running target with
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

    /// Answer what the target asks on its own: file requests get WinDbg's
    /// refusal and prompts an empty line, or the target would wait
    /// forever. Everything else goes to the caller.
    fn service(&mut self, p: KdPacket) -> Result<Option<Incoming>, KdnetError> {
        match p.kind {
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
            PacketType::DebugIo => {
                if let Ok(io) = DebugIo::parse(&p.data)
                    && io.api == api_number::GET_STRING
                {
                    let id = self.take_id();
                    self.send(&Payload::Data(KdPacket {
                        kind: PacketType::DebugIo,
                        id,
                        data: io.empty_answer().to_bytes(),
                    }))?;
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
        self.stats.requests += 1;
        self.send(&packet)?;
        let started = Instant::now();
        // When the request last went out: after a RESEND from the target,
        // which discarded the earlier copy, the round trip counts from the
        // copy it asked for.
        let mut sent = started;
        let mut acked = false;
        // Karn's rule: an exchange retransmitted on a timeout gives no
        // sample (which copy was answered is unknown).
        let mut retransmitted = false;
        // Timeouts since the last RESET, and in all.
        let mut failures = 0u32;
        let mut attempts = 1u32;
        let mut deadline = started + self.rtt.rto();
        loop {
            match self.recv(deadline)? {
                Some(Incoming::Control {
                    kind: PacketType::Acknowledge,
                    id: a,
                }) if a == id => {
                    if !expects_reply {
                        if !retransmitted {
                            self.rtt.sample(sent.elapsed());
                        }
                        self.rtt.completed();
                        return Ok(None);
                    }
                    if !acked {
                        acked = true;
                        // The reply follows the ACK at once; give it a
                        // full timer from here.
                        deadline = deadline.max(Instant::now() + self.rtt.rto());
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
                        sent = Instant::now();
                        deadline = sent + self.rtt.rto();
                    }
                }
                Some(Incoming::Control { .. }) => {}
                Some(Incoming::Data(p)) => match p.kind {
                    PacketType::StateManipulate => match Manipulate::parse(&p.data) {
                        // The reply also proves the request arrived.
                        Ok(m) if expects_reply && answers(req, &m) => {
                            if !retransmitted {
                                self.rtt.sample(sent.elapsed());
                            }
                            self.rtt.completed();
                            if let Call::Read { .. } = req.call() {
                                self.stats.reads += 1;
                                self.stats.read_bytes += m.data.len() as u64;
                            }
                            return Ok(Some(m));
                        }
                        _ => self.stats.unexpected += 1,
                    },
                    PacketType::StateChange64 | PacketType::DebugIo => {
                        let stop = p.kind == PacketType::StateChange64;
                        self.queue_event(p);
                        if stop && !expects_reply {
                            // The target stopped again right after
                            // continuing: the continue took effect.
                            self.rtt.completed();
                            return Ok(None);
                        }
                    }
                    _ => self.stats.unexpected += 1,
                },
                None => {
                    self.stats.timeouts += 1;
                    failures += 1;
                    let waited = started.elapsed();
                    if waited >= self.timeouts.give_up {
                        return Err(KdnetError::NoResponse {
                            target: self.target,
                            what: api_name(req.api),
                            attempts,
                            waited,
                        });
                    }
                    attempts += 1;
                    self.rtt.back_off();
                    if failures >= self.timeouts.resends_before_reset
                        && waited >= self.timeouts.reset_after
                    {
                        // Resending alone did not help: RESET makes the
                        // target answer RESET and resend its pending
                        // packet (kdnet.md §4 rule 4).
                        self.send_reset()?;
                        failures = 0;
                    }
                    self.stats.retransmits += 1;
                    retransmitted = true;
                    if acked {
                        // The reply was lost: ask for it again.
                        self.send_control(PacketType::Resend, 0)?;
                    } else {
                        self.send(&packet)?;
                    }
                    deadline = Instant::now() + self.rtt.rto();
                }
            }
        }
    }

    /// Stop the target: RESEND (a target already stopped resends its
    /// state change), then the break-in byte, until a state change comes.
    /// While no data has arrived since the handshake, the response is
    /// resent too (it may have been lost). Returns the state change; a
    /// stop already queued is returned at once.
    pub fn break_in(&mut self) -> Result<KdPacket, KdnetError> {
        if let Some(i) = self
            .events
            .iter()
            .position(|p| p.kind == PacketType::StateChange64)
        {
            // Prints before it stay queued for the caller.
            if let Some(p) = self.events.remove(i) {
                return Ok(p);
            }
        }
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if attempts > 1 {
                self.stats.retransmits += 1;
                if !self.data_seen && !self.response.is_empty() {
                    let wire = self.response.clone();
                    self.send_wire(&wire)?;
                }
            }
            self.send_control(PacketType::Resend, 0)?;
            self.send(&Payload::BreakIn)?;
            let sent = Instant::now();
            let deadline = sent + self.rtt.rto();
            while let Some(incoming) = self.recv(deadline)? {
                if let Incoming::Data(p) = incoming {
                    match p.kind {
                        PacketType::StateChange64 => {
                            if attempts == 1 {
                                self.rtt.sample(sent.elapsed());
                            }
                            self.rtt.completed();
                            return Ok(p);
                        }
                        PacketType::DebugIo => self.queue_event(p),
                        _ => self.stats.unexpected += 1,
                    }
                }
            }
            self.stats.timeouts += 1;
            let waited = started.elapsed();
            if waited >= self.timeouts.give_up {
                return Err(KdnetError::NoResponse {
                    target: self.target,
                    what: "break-in".into(),
                    attempts,
                    waited,
                });
            }
            self.rtt.back_off();
        }
    }
}

/// Wait for a valid offer before `deadline`. A well-framed control
/// datagram that does not authenticate ends the wait: the key is wrong,
/// and waiting longer would only hang.
fn await_offer(
    sock: &UdpSocket,
    key: &KdnetKey,
    buf: &mut [u8],
    stats: &mut LinkStats,
    deadline: Instant,
    waited: Duration,
) -> Result<Offered, KdnetError> {
    let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
    loop {
        let Some((n, from)) = recv_until(sock, buf, deadline)? else {
            return Err(KdnetError::NoOffer { port, waited });
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
        let d = match datagram::open(wire, key, None) {
            Ok(d) => d,
            Err(DatagramError::BadTag) => return Err(KdnetError::WrongKey { from }),
            Err(_) => {
                stats.dropped_malformed += 1;
                continue;
            }
        };
        if d.from_host {
            stats.unexpected += 1;
            continue;
        }
        let Ok(offer) = Offer::parse(d.payload()) else {
            stats.unexpected += 1;
            continue;
        };
        return Ok(Offered {
            offer,
            seq: d.seq,
            version: d.version,
            from,
        });
    }
}

/// Whether `reply` answers `req`: the same ApiNumber and, for memory
/// transfers, the same address (a stale reply must never fill another
/// read).
fn answers(req: &Manipulate, reply: &Manipulate) -> bool {
    if req.api != reply.api || req.processor != reply.processor {
        return false;
    }
    match (req.call(), reply.call()) {
        (Call::Read { address: a, .. }, Call::Read { address: b, .. })
        | (Call::Write { address: a, .. }, Call::Write { address: b, .. }) => a == b,
        _ => true,
    }
}

/// Receive one datagram before `deadline` (the socket is non-blocking).
///
/// The wait is poll(2) (WSAPoll on Windows) with a timespec, not the
/// socket's receive timeout: SO_RCVTIMEO counts in kernel ticks (4 ms at
/// HZ=250), which would put a floor of one tick under every retransmission
/// timer, ten times the round trip of a LAN.
fn recv_until(
    sock: &UdpSocket,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<Option<(usize, SocketAddr)>, KdnetError> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        match sock.recv_from(buf) {
            Ok(r) => return Ok(Some(r)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            // An ICMP port-unreachable from an earlier send surfaces here
            // on some systems; the target may come back, so keep waiting.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                return Err(KdnetError::Io {
                    what: "receiving".into(),
                    source: e,
                });
            }
        }
        let wait = Timespec::try_from(deadline - now).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(sock, PollFlags::IN)];
        match poll(&mut fds, Some(&wait)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(KdnetError::Io {
                    what: "waiting for the target".into(),
                    source: e.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_timer_follows_rfc_6298() {
        let t = Timeouts::default();
        let mut r = RttEstimator::new(&t);
        assert_eq!(r.rto(), t.initial_rto);
        assert_eq!(r.srtt(), None);
        // §2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR.
        r.sample(ms(40));
        assert_eq!(r.srtt(), Some(ms(40)));
        assert_eq!(r.rttvar(), ms(20));
        assert_eq!(r.rto(), ms(120));
        // §2.3: RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|, SRTT = 7/8 SRTT + 1/8 R.
        r.sample(ms(80));
        assert_eq!(r.rttvar(), ms(25));
        assert_eq!(r.srtt(), Some(ms(45)));
        assert_eq!(r.rto(), ms(145));
        // §5.5: back-off doubles, up to the ceiling.
        for _ in 0..10 {
            r.back_off();
        }
        assert_eq!(r.rto(), t.max_rto);
        // A new sample recomputes (§5.7).
        r.sample(ms(45));
        assert!(r.rto() < ms(200), "{:?}", r.rto());
        // A completed exchange ends the back-off without a sample.
        let before = r.rto();
        r.back_off();
        r.back_off();
        assert_eq!(r.rto(), before * 4);
        r.completed();
        assert_eq!(r.rto(), before);
    }

    #[test]
    fn the_timer_has_a_floor_a_granularity_and_a_fixed_mode() {
        let t = Timeouts::default();
        let mut r = RttEstimator::new(&t);
        // A loopback target: many identical 50 us round trips drive the
        // variance to zero; the timer stays at SRTT + G, above the floor.
        for _ in 0..100 {
            r.sample(Duration::from_micros(50));
        }
        assert!(r.rttvar() < Duration::from_micros(5));
        assert_eq!(r.rto(), t.min_rto);
        let mut f = RttEstimator::new(&Timeouts::fixed(ms(50)));
        assert_eq!(f.rto(), ms(50));
        f.sample(ms(1));
        f.back_off();
        assert_eq!(f.rto(), ms(50));
        // Measurements are still kept for the statistics.
        assert_eq!(f.srtt(), Some(ms(1)));
    }
}
