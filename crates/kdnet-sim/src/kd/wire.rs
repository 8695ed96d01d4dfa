//! The target's side of the link (docs/kdnet.md, "The protocol in brief"): offers, the faults on
//! each datagram in both directions, framing, ACKs, RESEND and RESET, the
//! handshake's re-keying, and what each packet from the debugger means.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV6};
use std::time::Instant;

use pooldump_kdnet::api::{Manipulate, Space, StateChange, StoppedAt, context};
use pooldump_kdnet::control::{Offer, Response};
use pooldump_kdnet::datagram::{self, Channel, Datagram, DatagramError};
use pooldump_kdnet::packet::{KdPacket, PacketType, Payload};

use super::{HOLD, Pending, Run, STOPPED_THREAD, Target};
use crate::config::{MishapAt, MishapKind};

impl Target {
    pub(super) fn offer(&mut self) {
        let v6 = |a: SocketAddr| match a {
            SocketAddr::V4(a) => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0),
            SocketAddr::V6(a) => a,
        };
        let me = self
            .sock
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let debugger = if self.data_key.is_some() {
            v6(self.peer)
        } else {
            SocketAddrV6::new(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 0, 0, 0)
        };
        let payload = Offer::build(
            self.offer_counter,
            &self.identity,
            v6(me),
            v6(self.cfg.host),
            debugger,
        );
        self.offer_counter = self.offer_counter.wrapping_add(1);
        // The offer's sequence number looks time-based (+3 per 3 s).
        self.offer_seq += 3;
        let d = Datagram::new(
            self.cfg.version,
            Channel::Control,
            self.offer_seq,
            false,
            &payload,
        );
        if let Ok(wire) = d.seal(&self.cfg.key, None) {
            self.stat(|s| s.offers_sent += 1);
            let to = self.cfg.host;
            self.transmit(wire, to);
        }
    }

    /// Inbound faults, then handling.
    pub(super) fn inbound(&mut self, wire: Vec<u8>, from: SocketAddr) {
        let f = self.cfg.faults;
        if self.rng.f64() < f.drop {
            self.stat(|s| s.faults_dropped += 1);
            return;
        }
        if self.held_in.is_none() && self.rng.f64() < f.reorder {
            self.stat(|s| s.faults_reordered += 1);
            self.held_in = Some((Instant::now(), wire, from));
            return;
        }
        let dup = self.rng.f64() < f.duplicate;
        self.handle(&wire, from);
        if dup {
            self.stat(|s| s.faults_duplicated += 1);
            self.handle(&wire, from);
        }
        if let Some((_, w, from)) = self.held_in.take() {
            self.handle(&w, from);
        }
    }

    pub(super) fn flush_held(&mut self) {
        if let Some((t, _, _)) = &self.held_in
            && t.elapsed() > HOLD
            && let Some((_, w, from)) = self.held_in.take()
        {
            self.handle(&w, from);
        }
        if let Some((t, _)) = &self.held_out
            && t.elapsed() > HOLD
            && let Some((_, w)) = self.held_out.take()
        {
            let _ = self.sock.send_to(&w, self.peer);
        }
    }

    /// Outbound faults, then the wire.
    fn transmit(&mut self, mut wire: Vec<u8>, to: SocketAddr) {
        let f = self.cfg.faults;
        if self.rng.f64() < f.drop {
            self.stat(|s| s.faults_dropped += 1);
            return;
        }
        if self.rng.f64() < f.corrupt {
            let i = self.rng.usize(4..wire.len());
            wire[i] ^= 1 << self.rng.u8(0..8);
            self.stat(|s| s.faults_corrupted += 1);
        }
        if self.held_out.is_none() && self.rng.f64() < f.reorder {
            self.stat(|s| s.faults_reordered += 1);
            self.held_out = Some((Instant::now(), wire));
            return;
        }
        let _ = self.sock.send_to(&wire, to);
        if self.rng.f64() < f.duplicate {
            self.stat(|s| s.faults_duplicated += 1);
            let _ = self.sock.send_to(&wire, to);
        }
        if let Some((_, w)) = self.held_out.take() {
            let _ = self.sock.send_to(&w, to);
        }
    }

    /// Send a data-channel payload.
    fn send(&mut self, p: &Payload) {
        let Some(dk) = self.data_key.clone() else {
            return;
        };
        let bytes = p.to_bytes();
        let d = Datagram::new(self.cfg.version, Channel::Data, self.seq, false, &bytes);
        self.seq += 1;
        if let Ok(wire) = d.seal(&self.cfg.key, Some(&dk)) {
            let peer = self.peer;
            self.transmit(wire, peer);
        }
        if let Payload::Data(_) = p
            && self.rng.f64() < self.cfg.faults.forge
        {
            self.forge();
        }
    }

    /// A datagram that claims to be the target's reply with other bytes
    /// in it, but was made without the HMAC key: its tag is random.
    pub(super) fn forge(&mut self) {
        let Some(dk) = self.data_key.clone() else {
            return;
        };
        let mut reply = Manipulate::read(Space::Virtual, 0, self.pc, 64).reply(0, vec![0x41; 64]);
        reply.set_actual(64);
        let id = self.pending.as_ref().map_or(self.next_id, |p| p.id);
        let p = Payload::Data(KdPacket {
            kind: PacketType::StateManipulate,
            id,
            data: reply.to_bytes(),
        });
        let d = Datagram::new(
            self.cfg.version,
            Channel::Data,
            self.seq,
            false,
            &p.to_bytes(),
        );
        if let Ok(mut wire) = d.seal(&self.cfg.key, Some(&dk)) {
            let n = wire.len();
            for b in &mut wire[n - 16..] {
                *b = self.rng.u8(..);
            }
            let _ = self.sock.send_to(&wire, self.peer);
            self.stat(|s| s.forged_sent += 1);
        }
    }

    fn send_control(&mut self, kind: PacketType, id: u32) {
        self.send(&Payload::Control { kind, id });
    }

    /// Send a new data packet and keep it until ACKed.
    pub(super) fn send_data(&mut self, kind: PacketType, data: Vec<u8>) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(2) & 0x7FFF_FFFF;
        let payload = Payload::Data(KdPacket { kind, id, data });
        self.pending = Some(Pending {
            id,
            payload: payload.to_bytes(),
        });
        self.send(&payload);
    }

    /// RESEND and RESET: the pending packet again, or, when a stopped
    /// target has none, its state change (Windows' KdpSendWaitContinue
    /// sends the state change again when KdReceivePacket says the
    /// debugger needs a resend).
    fn resend_pending_or_stop(&mut self) {
        if self.pending.is_some() {
            self.resend_pending();
        } else if self.run == Run::Stopped
            && !self.stop_queued
            && let Some((id, data)) = self.stop_report.clone()
        {
            self.stat(|s| s.stops_resent += 1);
            let payload = Payload::Data(KdPacket {
                kind: PacketType::StateChange64,
                id,
                data,
            });
            self.pending = Some(Pending {
                id,
                payload: payload.to_bytes(),
            });
            self.send(&payload);
        }
    }

    fn resend_pending(&mut self) {
        if let Some(p) = &self.pending
            && let Ok(payload) = Payload::parse(&p.payload)
        {
            self.send(&payload);
        }
    }

    fn handle(&mut self, wire: &[u8], from: SocketAddr) {
        let d = match datagram::open(wire, &self.cfg.key, self.data_key.as_ref()) {
            Ok(d) => d,
            Err(DatagramError::BadTag) => {
                self.stat(|s| s.dropped_bad_tag += 1);
                return;
            }
            Err(_) => {
                self.stat(|s| s.dropped_other += 1);
                return;
            }
        };
        if !d.from_host {
            self.stat(|s| s.dropped_other += 1);
            return;
        }
        match d.channel {
            Channel::Control => self.on_response(&d, from),
            Channel::Data => match Payload::parse(d.payload()) {
                Ok(p) => self.on_payload(p),
                Err(_) => {
                    // ReactOS kddll asks again on a checksum or length
                    // error.
                    self.stat(|s| s.dropped_other += 1);
                    self.send_control(PacketType::Resend, 0);
                }
            },
        }
    }

    /// A response re-keys the data channel at any time (docs/kdnet.md, "The protocol in brief").
    fn on_response(&mut self, d: &Datagram, from: SocketAddr) {
        let Ok(r) = Response::parse(d.payload()) else {
            self.stat(|s| s.dropped_other += 1);
            return;
        };
        if r.identity() != self.identity {
            self.stat(|s| s.dropped_other += 1);
            return;
        }
        self.data_key = Some(r.data_key(&self.cfg.key));
        self.peer = from;
        self.seq = 1;
        // A new key is a new debugger (or the same one starting over):
        // its packet ids are not the old one's.
        self.last_exec = None;
        self.executed.clear();
        self.stat(|s| s.handshakes += 1);
        // The hello: the host's IPv4 address, bytes reversed.
        let mut hello = [0u8; 12];
        if let SocketAddr::V4(a) = from {
            let mut o = a.ip().octets();
            o.reverse();
            hello[8..].copy_from_slice(&o);
        }
        self.send(&Payload::Hello(hello));
    }

    fn on_payload(&mut self, p: Payload) {
        match p {
            Payload::BreakIn => {
                if self.run == Run::Running {
                    self.stat(|s| s.breakins += 1);
                    self.stopped_cpu = 0;
                    let thread = match self.rt.as_mut() {
                        Some(rt) => {
                            let s = rt.break_in(&mut self.m, 0);
                            self.pc = s.pc;
                            s.thread
                        }
                        None => STOPPED_THREAD,
                    };
                    let mut stream = [0u8; 16];
                    self.read_virtual(self.pc, &mut stream);
                    context::set_reg(&mut self.contexts[0], context::RIP, self.pc);
                    let at = StoppedAt {
                        processor: 0,
                        number_processors: self.m.truth.cpus.max(1),
                        thread,
                        pc: self.pc,
                    };
                    let sc = StateChange::breakpoint(at, &stream);
                    if self.rt.is_some() {
                        let bytes = sc.to_bytes();
                        self.set_run(Run::Stopped);
                        self.stop_report = None;
                        self.outbox.push_back((PacketType::StateChange64, bytes));
                        self.stop_queued = true;
                        self.flush_outbox();
                    } else {
                        self.stop_with(sc);
                    }
                } else {
                    self.resend_pending();
                }
            }
            Payload::Control { kind, id } => match kind {
                PacketType::Acknowledge if self.pending.as_ref().is_some_and(|p| p.id == id) => {
                    self.pending = None;
                }
                PacketType::Resend => self.resend_pending_or_stop(),
                PacketType::Reset => {
                    self.stat(|s| s.resets_received += 1);
                    let cur = self.pending.as_ref().map_or(self.next_id, |p| p.id);
                    self.send_control(PacketType::Reset, cur);
                    self.resend_pending_or_stop();
                }
                _ => {}
            },
            Payload::Data(p) => self.on_request(p),
            Payload::Hello(_) => {}
        }
    }

    fn on_request(&mut self, p: KdPacket) {
        if p.kind != PacketType::StateManipulate {
            self.send_control(PacketType::Acknowledge, p.id);
            return;
        }
        if self.last_exec == Some(p.id) {
            // A retransmission: ACK again, never execute twice; if its
            // reply is still unacknowledged, send that again too.
            self.stat(|s| s.duplicate_requests += 1);
            self.send_control(PacketType::Acknowledge, p.id);
            self.resend_pending();
            return;
        }
        if self.pending.is_some() {
            // Still waiting for the debugger's ACK (uncut #196).
            self.stat(|s| s.resends_sent += 1);
            self.send_control(PacketType::Resend, 0);
            return;
        }
        if self.run == Run::Running {
            self.send_control(PacketType::Acknowledge, p.id);
            return;
        }
        let Ok(req) = Manipulate::parse(&p.data) else {
            self.send_control(PacketType::Acknowledge, p.id);
            return;
        };
        if !self.executed.insert(p.id) {
            self.stat(|s| s.double_executions += 1);
        }
        self.last_exec = Some(p.id);
        self.stat(|s| s.requests_executed += 1);
        self.boot_requests += 1;
        // Executed before the ACK goes out so that the effects (and the
        // statistics) are in place when the debugger sees the ACK; the
        // wire order is still ACK, then reply.
        let reply = self.execute(&req);
        self.send_control(PacketType::Acknowledge, p.id);
        if let Some(reply) = reply {
            self.send_data(PacketType::StateManipulate, reply.to_bytes());
        }
        if let Some(m) = self.mishap
            && let MishapAt::Requests(n) = m.at
            && self.boot_requests >= n
        {
            self.strike(m.kind);
        }
    }

    /// The configured mishap happens now (once).
    pub(super) fn strike(&mut self, kind: MishapKind) {
        self.mishap = None;
        match kind {
            MishapKind::Reboot => self.reboot(),
            MishapKind::Silent(d) => self.silent_until = Some(Instant::now() + d),
        }
    }
}
