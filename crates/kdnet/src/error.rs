//! Session errors. Each names the peer or port and says what to check.

use std::net::SocketAddr;
use std::time::Duration;

/// Why a KDNET session could not start or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum KdnetError {
    /// The UDP socket could not be bound (port in use, address not local).
    #[error("cannot listen on UDP {addr}: {source}")]
    Bind {
        /// The local address and port asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Sending, receiving or configuring the socket failed.
    #[error("KDNET socket error while {what}: {source}")]
    Io {
        /// What was being done, e.g. `receiving`.
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
    #[error(
        "no KDNET offer arrived on UDP port {port} within {waited:?}: check that the target runs with `bcdedit /debug on` and `bcdedit /dbgsettings net hostip:<this machine> port:{port}`, and that no firewall drops UDP port {port}"
    )]
    /// No target offered a connection while we listened.
    NoOffer {
        /// The UDP port listened on.
        port: u16,
        /// How long we listened.
        waited: Duration,
    },
    #[error(
        "the offer from {from} does not authenticate with this key: the target uses a different key (run `bcdedit /dbgsettings` on the target to see it)"
    )]
    /// Offers came, but none authenticated with our key.
    WrongKey {
        /// The target whose offer failed.
        from: SocketAddr,
    },
    #[error(
        "the target {target} stopped answering: no reply to {what} after {attempts} attempts over {waited:.1?} (it may have rebooted, hung, or lost its network)"
    )]
    /// A packet was sent again and again without an ACK or reply.
    NoResponse {
        /// The target's address.
        target: SocketAddr,
        /// The request that went unanswered (its API name, or `break-in`).
        what: String,
        /// Times it was sent.
        attempts: u32,
        /// Time from the first send to giving up.
        waited: Duration,
    },
    #[error(
        "the target {target} rebooted (its offer carries a new boot identity); the memory being read is gone, connect again"
    )]
    /// The target offered again with a new boot identity mid-session.
    TargetRebooted {
        /// The target's address.
        target: SocketAddr,
    },
    /// The target answered a request with a failure status
    /// (DBGKD_MANIPULATE_STATE64.ReturnStatus), or less than was asked.
    #[error("the target refused {what} with status {status:#010x}")]
    Refused {
        /// The request, e.g. `GetContext of processor 0`.
        what: String,
        /// ReturnStatus as received (STATUS_SUCCESS when only the count
        /// fell short).
        status: u32,
    },
    #[error(
        "the target's machine type is {machine:#06x}; pooldump reads x64 (0x8664) kernels only"
    )]
    /// DBGKD_GET_VERSION64.MachineType is not IMAGE_FILE_MACHINE_AMD64.
    NotAmd64 {
        /// The MachineType reported.
        machine: u16,
    },
    #[error(
        "the target is in the boot debugger (winload; GetVersion MajorVersion {major:#06x}), not the kernel: it has no kernel pool yet; continue the boot, or configure `bcdedit /bootdebug off`"
    )]
    /// DBGKD_GET_VERSION64.MajorVersion says the boot debugger (winload)
    /// answered, not the kernel.
    BootDebugger {
        /// The MajorVersion reported.
        major: u16,
    },
    /// A request needs a stopped target and this one runs.
    #[error("the target is running; break in first")]
    Running,
    /// Waiting for events needs a running target and this one is stopped.
    #[error("the target is stopped; continue it before waiting for events")]
    Stopped,
    #[error(
        "lost the link to the target {target} and could not get it back within {waited:?} ({cause}). The target may still be stopped in the debugger: once it is reachable, connect again (pooldump resumes it)"
    )]
    /// The link was lost and no new session could be made in time.
    ReconnectFailed {
        /// The target's address.
        target: SocketAddr,
        /// How long reconnecting was tried.
        waited: Duration,
        /// What went wrong: no offer came, or the new session failed.
        cause: String,
    },
    /// An earlier fatal error ended the session (its message); every
    /// later call returns this.
    #[error("the KDNET session ended earlier: {0}")]
    Dead(String),
    /// The OS random source failed while making the handshake's nonce.
    #[error("no random bytes for the handshake: {0}")]
    Random(String),
    /// The client broke its own rules (a malformed state change taken in,
    /// a CONTEXT of the wrong size passed): a bug, described.
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
