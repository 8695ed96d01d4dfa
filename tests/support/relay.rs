//! A userspace lossy link between `pooldump` and the simulated target, for
//! the `kdnet_lossy` bench and for `tests/cli/kdnet_netem.rs` on kernels
//! without `sch_netem`: each datagram is delayed 1-5 ms (uniformly, so
//! later ones overtake earlier ones), lost with probability `loss` and
//! duplicated with probability `duplicate`, each way.
//!
//! The relay is the target's debugger (its offers are sent to
//! [`Relay::target_side`]) and the debugger's target (pooldump answers the
//! relay's host-side socket, which sent it the offer).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the link does to each datagram, each way.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    pub loss: f64,
    pub duplicate: f64,
    pub seed: u64,
}

pub struct Relay {
    /// Where the simulated target must send (its `SimConfig::new` host).
    pub target_side: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// A relay to pooldump at `host`, its host-side socket bound to
    /// `host_side` (loopback, or a veth address), its target side on
    /// loopback.
    pub fn spawn(host: SocketAddr, host_side: IpAddr, how: Impairment) -> Self {
        let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("relay: bind target side");
        let b = UdpSocket::bind((host_side, 0)).expect("relay: bind host side");
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let target_side = a.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(how.seed);
            let mut target: Option<SocketAddr> = None;
            // (due, to the host?, bytes)
            let mut queue: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
            let mut buf = vec![0u8; 8192];
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                queue.sort_by_key(|q| q.0);
                while queue.first().is_some_and(|q| q.0 <= now) {
                    let (_, to_host, bytes) = queue.remove(0);
                    if to_host {
                        let _ = b.send_to(&bytes, host);
                    } else if let Some(t) = target {
                        let _ = a.send_to(&bytes, t);
                    }
                }
                for (sock, to_host) in [(&a, true), (&b, false)] {
                    while let Ok((n, from)) = sock.recv_from(&mut buf) {
                        if to_host {
                            target = Some(from);
                        }
                        if rng.f64() < how.loss {
                            continue;
                        }
                        let copies = if rng.f64() < how.duplicate { 2 } else { 1 };
                        for _ in 0..copies {
                            let delay = Duration::from_micros(rng.u64(1000..=5000));
                            queue.push((Instant::now() + delay, to_host, buf[..n].to_vec()));
                        }
                    }
                }
                let wait = queue
                    .iter()
                    .map(|q| q.0.saturating_duration_since(Instant::now()))
                    .min()
                    .unwrap_or(Duration::from_millis(20))
                    .min(Duration::from_millis(20));
                let ts = rustix::event::Timespec::try_from(wait).unwrap();
                let mut fds = [
                    rustix::event::PollFd::new(&a, rustix::event::PollFlags::IN),
                    rustix::event::PollFd::new(&b, rustix::event::PollFlags::IN),
                ];
                let _ = rustix::event::poll(&mut fds, Some(&ts));
            }
        });
        Self {
            target_side,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
