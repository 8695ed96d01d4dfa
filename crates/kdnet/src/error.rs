//! Session errors. Each names the peer or port and says what to check.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KdnetError {
    #[error("cannot listen on UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("KDNET socket error while {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "no KDNET offer arrived on UDP port {port} within {waited:?}: check that the target runs with `bcdedit /debug on` and `bcdedit /dbgsettings net hostip:<this machine> port:{port}`, and that no firewall drops UDP port {port}"
    )]
    NoOffer { port: u16, waited: Duration },
    #[error(
        "the offer from {from} does not authenticate with this key: the target uses a different key (run `bcdedit /dbgsettings` on the target to see it)"
    )]
    WrongKey { from: SocketAddr },
    #[error(
        "the target {target} stopped answering: no reply to {what} after {attempts} attempts over {waited:.1?} (it may have rebooted, hung, or lost its network)"
    )]
    NoResponse {
        target: SocketAddr,
        what: String,
        attempts: u32,
        waited: Duration,
    },
    #[error(
        "the target {target} rebooted (its offer carries a new boot identity); the memory being read is gone, connect again"
    )]
    TargetRebooted { target: SocketAddr },
    #[error("the target refused {what} with status {status:#010x}")]
    Refused { what: String, status: u32 },
    #[error(
        "the target's machine type is {machine:#06x}; pooldump reads x64 (0x8664) kernels only"
    )]
    NotAmd64 { machine: u16 },
    #[error(
        "the target is in the boot debugger (winload; GetVersion MajorVersion {major:#06x}), not the kernel: it has no kernel pool yet; continue the boot, or configure `bcdedit /bootdebug off`"
    )]
    BootDebugger { major: u16 },
    #[error("the target is running; break in first")]
    Running,
    #[error("the target is stopped; continue it before waiting for events")]
    Stopped,
    #[error(
        "lost the link to the target {target} and could not get it back within {waited:?} ({cause}). The target may still be stopped in the debugger: once it is reachable, connect again (pooldump resumes it)"
    )]
    ReconnectFailed {
        target: SocketAddr,
        waited: Duration,
        /// What went wrong: no offer came, or the new session failed.
        cause: String,
    },
    #[error("the KDNET session ended earlier: {0}")]
    Dead(String),
    #[error("no random bytes for the handshake: {0}")]
    Random(String),
    #[error("internal error in the KDNET client: {0}")]
    Internal(String),
}

impl KdnetError {
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        KdnetError::Internal(e.to_string())
    }

    /// Errors after which the association cannot be used again.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            KdnetError::Refused { .. }
                | KdnetError::Running
                | KdnetError::Stopped
                | KdnetError::NotAmd64 { .. }
        )
    }
}
