//! What the link saw and did, counted for the caller ([`LinkStats`]).

use std::time::Duration;

/// What the link saw and did. Drops are counted by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// UDP datagrams received on the session's socket.
    pub datagrams_in: u64,
    /// UDP datagrams sent.
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
    /// RESET control packets sent (resynchronising packet ids).
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
    /// The round-trip time's variation (RFC 6298's RTTVAR).
    pub rttvar: Duration,
    /// The retransmission timeout in force, backoff included.
    pub rto: Duration,
}
