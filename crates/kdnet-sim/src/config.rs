//! How the simulated target behaves: the key and addresses, the faults on
//! its link, its workload and clock, and what goes wrong when
//! ([`Mishap`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use pooldump_kdnet::KdnetKey;
use pooldump_kit::run::Workload;

/// Fault probabilities, each in 0..=1, applied per datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Lose the datagram (either direction).
    pub drop: f64,
    /// Deliver it twice (either direction).
    pub duplicate: f64,
    /// Hold it back and deliver it after the next one (either direction).
    pub reorder: f64,
    /// Flip a byte of an outbound datagram.
    pub corrupt: f64,
    /// Send, next to an outbound data datagram, a forged copy whose
    /// payload claims different memory bytes, with a tag that cannot
    /// verify.
    pub forge: f64,
}

impl Faults {
    /// Loss, duplicates and reordering, each with probability `p`.
    pub fn lossy(p: f64) -> Self {
        Self {
            drop: p,
            duplicate: p,
            reorder: p,
            ..Self::default()
        }
    }
}

/// How the simulated target behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The KDNET key (`bcdedit /dbgsettings net key:`) the debugger must
    /// also use.
    pub key: KdnetKey,
    /// Where the target sends its offers (the debugger's address, as
    /// `bcdedit /dbgsettings net hostip: port:` configures it).
    pub host: SocketAddr,
    /// KDNET version byte (5 on Windows 10 19041).
    pub version: u8,
    /// Windows offers every 3 s; tests use less.
    pub offer_interval: Duration,
    /// Faults on the link (none by default).
    pub faults: Faults,
    /// Seed of the fault and identity generator.
    pub seed: u64,
    /// The thread ends after this long whatever happens.
    pub lifetime: Duration,
    /// What the machine does while it runs; `None`: it only answers the
    /// debugger (a machine that never changes).
    pub workload: Option<Workload>,
    /// Simulated seconds per real second while running.
    pub speed: f64,
    /// The local address to bind (127.0.0.1 by default; a veth address
    /// for the network-namespace tests).
    pub bind: IpAddr,
    /// Something that happens once, after the target executed a number of
    /// requests.
    pub mishap: Option<Mishap>,
    /// A stop already under way when the debugger froze the target,
    /// raised once as soon as a Continue lets it run.
    pub stop_on_resume: Option<StopOnResume>,
}

/// A processor frozen by a break-in between nt's check of a tag against
/// PoolHitTag and the `int3` that follows it: once the debugger lets the
/// target run again, it executes that `int3` at once, whatever PoolHitTag
/// holds by then. Raised after the target executed `after_writes` memory
/// writes (a debugger's PoolHitTag set and restored: 2).
#[derive(Debug, Clone)]
pub struct StopOnResume {
    /// Write requests executed before the stop is armed.
    pub after_writes: u64,
    /// The stop, as [`SimTarget::emit`](crate::SimTarget::emit) raises it.
    pub event: crate::SimEvent,
}

/// A session that goes wrong, at a chosen point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mishap {
    /// When it happens.
    pub at: MishapAt,
    /// What goes wrong.
    pub kind: MishapKind,
}

/// When a [`Mishap`] strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MishapAt {
    /// Once this many requests have been executed in this boot.
    Requests(u64),
    /// When the debugger lets the target run after it executed this many
    /// memory writes: a debugger that set nt!PoolHitTag and resumed the
    /// target is struck at 1, while it waits for the target's stops.
    ResumeAfterWrites(u64),
}

/// What a [`Mishap`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MishapKind {
    /// The target reboots: a new boot identity, no data key, running.
    Reboot,
    /// The target neither answers nor offers for this long (a cable
    /// pulled, a hung NIC), then carries on as if nothing happened.
    Silent(Duration),
}

impl SimConfig {
    /// A target for `key` that offers to `host` every 300 ms, KDNET
    /// version 5, no faults, no workload, seed 1, 60 simulated seconds per
    /// real second, bound to 127.0.0.1, for at most 300 s.
    pub fn new(key: KdnetKey, host: SocketAddr) -> Self {
        Self {
            key,
            host,
            version: 5,
            offer_interval: Duration::from_millis(300),
            faults: Faults::default(),
            seed: 1,
            lifetime: Duration::from_secs(300),
            workload: None,
            speed: 60.0,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            mishap: None,
            stop_on_resume: None,
        }
    }
}
