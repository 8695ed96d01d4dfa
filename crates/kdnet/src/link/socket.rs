//! Waiting for one datagram with a deadline, on a non-blocking socket.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use crate::error::KdnetError;

/// Receive one datagram before `deadline` (the socket is non-blocking).
///
/// The wait is poll(2) (WSAPoll on Windows) with a timespec, not the
/// socket's receive timeout: SO_RCVTIMEO counts in kernel ticks (4 ms at
/// HZ=250), which would put a floor of one tick under every retransmission
/// timer, ten times the round trip of a LAN.
pub(super) fn recv_until(
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
