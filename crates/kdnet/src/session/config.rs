//! How to connect: the port and key, where to listen, the timeouts, and
//! how reads are cut into blocks and cached.

use crate::key::{KdnetKey, KdnetSpec};
use crate::link::Timeouts;

/// How to connect.
#[derive(Debug, Clone)]
pub struct KdnetConfig {
    /// UDP port the debugger listens on (WinDbg's `port=`, bcdedit's
    /// `port:`; 0 picks a free one).
    pub port: u16,
    /// The KDNET key (WinDbg's `key=`, bcdedit's `key:`).
    pub key: KdnetKey,
    /// Local address to listen on (all interfaces by default).
    pub bind: std::net::IpAddr,
    /// Retransmission and wait timeouts (fixed when the spec's `retry=`
    /// says so, adaptive otherwise).
    pub timeouts: Timeouts,
    /// Bytes per read request and cache block: a power of two from 64 to
    /// 2048 (values in between are rounded down, others clamped).
    pub chunk: u32,
    /// Cached bytes kept per stop before the cache is emptied.
    pub cache_limit: usize,
}

/// The default read size: 1 KiB keeps every datagram under a 1500-byte
/// MTU; whether targets handle IP fragments is unknown (docs/kdnet.md, "The protocol in brief").
pub const DEFAULT_CHUNK: u32 = 1024;

impl From<KdnetSpec> for KdnetConfig {
    fn from(s: KdnetSpec) -> Self {
        Self {
            port: s.port,
            key: s.key,
            bind: s.bind,
            timeouts: match s.retry {
                Some(t) => Timeouts::fixed(t),
                None => Timeouts::default(),
            },
            chunk: DEFAULT_CHUNK,
            cache_limit: 1 << 30,
        }
    }
}

impl KdnetConfig {
    pub(super) fn block_size(&self) -> u32 {
        let c = self.chunk.clamp(64, 2048);
        1 << (31 - c.leading_zeros())
    }
}
