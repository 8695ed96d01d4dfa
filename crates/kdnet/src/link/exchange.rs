//! One request at a time: a manipulate request and its reply, and the
//! break-in, each resent on the retransmission timer until answered or
//! given up (the module documentation of [`crate::link`] has the rules).

use std::time::Instant;

use crate::api::{Call, Manipulate, api_number};
use crate::error::KdnetError;
use crate::packet::{KdPacket, PacketType, Payload};

use super::names::api_name;
use super::{Incoming, Link};

/// A manipulate request in flight: what went out, what came back, and its
/// retransmission state.
struct Exchange {
    id: u32,
    packet: Payload,
    expects_reply: bool,
    started: Instant,
    /// When the request last went out: after a RESEND from the target,
    /// which discarded the earlier copy, the round trip counts from the
    /// copy it asked for.
    sent: Instant,
    acked: bool,
    /// Karn's rule: an exchange retransmitted on a timeout gives no
    /// sample (which copy was answered is unknown).
    retransmitted: bool,
    /// Timeouts since the last RESET, and in all.
    failures: u32,
    attempts: u32,
    deadline: Instant,
}

impl Link {
    /// Send a manipulate request and wait for its reply (or, for Continue
    /// and Continue2, only its ACK: the target then runs).
    pub fn transact(&mut self, req: &Manipulate) -> Result<Option<Manipulate>, KdnetError> {
        let expects_reply = !matches!(req.api, api_number::CONTINUE | api_number::CONTINUE2);
        let packet = self.data_packet(PacketType::StateManipulate, req.to_bytes());
        let id = packet.id;
        let packet = Payload::Data(packet);
        self.stats.requests += 1;
        self.send(&packet)?;
        let started = Instant::now();
        let mut x = Exchange {
            id,
            packet,
            expects_reply,
            started,
            sent: started,
            acked: false,
            retransmitted: false,
            failures: 0,
            attempts: 1,
            deadline: started + self.rtt.rto(),
        };
        loop {
            match self.recv(x.deadline)? {
                Some(Incoming::Control {
                    kind: PacketType::Acknowledge,
                    id: a,
                }) if a == x.id => {
                    if !x.expects_reply {
                        if !x.retransmitted {
                            self.rtt.sample(x.sent.elapsed());
                        }
                        self.rtt.completed();
                        return Ok(None);
                    }
                    if !x.acked {
                        x.acked = true;
                        // The reply follows the ACK at once; give it a
                        // full timer from here.
                        x.deadline = x.deadline.max(Instant::now() + self.rtt.rto());
                    }
                }
                Some(Incoming::Control {
                    kind: PacketType::Resend,
                    ..
                }) => {
                    // The target wants our unacknowledged packet again, or
                    // is still waiting for an ACK of its own: re-ACK what
                    // we saw last and resend the request.
                    if !x.acked {
                        if let Some(&last) = self.seen.back() {
                            self.send_control(PacketType::Acknowledge, last)?;
                        }
                        self.stats.retransmits += 1;
                        self.send(&x.packet)?;
                        x.sent = Instant::now();
                        x.deadline = x.sent + self.rtt.rto();
                    }
                }
                Some(Incoming::Control { .. }) => {}
                Some(Incoming::Data(p)) => {
                    if let Some(done) = self.during_exchange(req, &x, p) {
                        return Ok(done);
                    }
                }
                None => self.exchange_timed_out(req, &mut x)?,
            }
        }
    }

    /// A data packet that came while `x` waited: its reply (which also
    /// proves the request arrived), or an event to queue. `Some` when the
    /// exchange is over, with what `transact` returns.
    fn during_exchange(
        &mut self,
        req: &Manipulate,
        x: &Exchange,
        p: KdPacket,
    ) -> Option<Option<Manipulate>> {
        match p.kind {
            PacketType::StateManipulate => match Manipulate::parse(&p.data) {
                Ok(m) if x.expects_reply && answers(req, &m) => {
                    if !x.retransmitted {
                        self.rtt.sample(x.sent.elapsed());
                    }
                    self.rtt.completed();
                    if let Call::Read(_) = req.call() {
                        self.stats.reads += 1;
                        self.stats.read_bytes += m.data.len() as u64;
                    }
                    return Some(Some(m));
                }
                _ => self.stats.unexpected += 1,
            },
            PacketType::StateChange64 | PacketType::DebugIo => {
                let stop = p.kind == PacketType::StateChange64;
                self.queue_event(p);
                if stop && !x.expects_reply {
                    // The target stopped again right after
                    // continuing: the continue took effect.
                    self.rtt.completed();
                    return Some(None);
                }
            }
            _ => self.stats.unexpected += 1,
        }
        None
    }

    /// The timer of `x` expired: give up after [`super::Timeouts::give_up`],
    /// else back off and resend what is missing (the request, or a RESEND
    /// for the reply), with RESET once resending alone has not helped.
    fn exchange_timed_out(&mut self, req: &Manipulate, x: &mut Exchange) -> Result<(), KdnetError> {
        self.stats.timeouts += 1;
        x.failures += 1;
        let waited = x.started.elapsed();
        if waited >= self.timeouts.give_up {
            return Err(KdnetError::NoResponse {
                target: self.target,
                what: api_name(req.api),
                attempts: x.attempts,
                waited,
            });
        }
        x.attempts += 1;
        self.rtt.back_off();
        if x.failures >= self.timeouts.resends_before_reset && waited >= self.timeouts.reset_after {
            // Resending alone did not help: RESET makes the
            // target answer RESET and resend its pending
            // packet (docs/kdnet.md, "The protocol in brief").
            self.send_reset()?;
            x.failures = 0;
        }
        self.stats.retransmits += 1;
        x.retransmitted = true;
        if x.acked {
            // The reply was lost: ask for it again.
            self.send_control(PacketType::Resend, 0)?;
        } else {
            self.send(&x.packet)?;
        }
        x.deadline = Instant::now() + self.rtt.rto();
        Ok(())
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

/// Whether `reply` answers `req`: the same ApiNumber and, for memory
/// transfers, the same address (a stale reply must never fill another
/// read).
fn answers(req: &Manipulate, reply: &Manipulate) -> bool {
    if req.api != reply.api || req.processor != reply.processor {
        return false;
    }
    match (req.call(), reply.call()) {
        (Call::Read(a), Call::Read(b)) | (Call::Write(a), Call::Write(b)) => a.address == b.address,
        _ => true,
    }
}
