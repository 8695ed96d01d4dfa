//! The handshake (docs/kdnet.md, "The protocol in brief"): wait for the target's offer, answer it and
//! derive the data key; start a new association after a reboot or a lost
//! link; and the offers that keep coming once connected.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::control::Offer;
use crate::datagram::{self, Channel, DataKey, Datagram, DatagramError, MAX_LEN};
use crate::error::KdnetError;
use crate::key::KdnetKey;
use crate::packet::HOST_ID_BASE;

use super::Link;
use super::socket::recv_until;
use super::{LinkStats, RttEstimator, SEEN_IDS, Timeouts};

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

    /// Offers keep coming every 3 s. One with a new boot identity means
    /// the target rebooted; before any data has flowed, an offer means our
    /// response was lost, so answer it again.
    pub(super) fn on_offer(&mut self, d: &Datagram) -> Result<(), KdnetError> {
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
