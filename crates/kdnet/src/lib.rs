//! pooldump-kdnet: a KDNET client, so pooldump can analyse a Windows
//! kernel that is running now as it analyses a crash dump.
//!
//! Layers, bottom up (kdnet.md in the project's shared specs has the
//! capture-verified details):
//!
//! - [`key`]: the `w.x.y.z` key and WinDbg's `-k net:port=P,key=K` spec;
//! - [`datagram`]: MDBG framing, AES-256-CBC, the HMAC-SHA256 tag;
//! - [`control`]: the target's offer and the host's response (data key);
//! - [`packet`]: the KD packet (leaders, types, ids, checksum);
//! - [`api`]: DbgKd messages (manipulate requests, state changes, I/O);
//! - [`link`]: ACKs, retransmission, RESEND/RESET, duplicate suppression;
//! - [`session`]: [`Session::connect`] → [`LiveTarget`], which implements
//!   [`pooldump_core::Memory`].
//!
//! ```no_run
//! use pooldump_core::{Memory, MemoryExt};
//! use pooldump_kdnet::{KdnetConfig, KdnetSpec, Session};
//! let spec: KdnetSpec = "net:port=50000,key=1.2.3.4".parse()?;
//! let target = Session::connect(KdnetConfig::from(spec))?;
//! let mz = target.read_u16(target.kern_base())?;
//! assert_eq!(mz, 0x5A4D);
//! target.resume()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod api;
mod bytes;
pub mod control;
pub mod datagram;
mod error;
pub mod key;
pub mod link;
pub mod packet;
pub mod session;

pub use error::KdnetError;
pub use key::{DEFAULT_PORT, KdnetKey, KdnetSpec, KeyError, SpecError};
pub use link::{LinkStats, RttEstimator, Timeouts};
pub use session::{
    ContinueStatus, KdnetConfig, LeftRunning, LiveTarget, Reconnected, Session, StopInfo,
    TargetEvent, TargetState,
};
