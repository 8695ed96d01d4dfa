//! A simulated KDNET target for tests and benchmarks: a synthetic kernel
//! from `pooldump-kit`, stopped or running behind the real protocol over
//! UDP on loopback.
//!
//! It behaves as docs/kdnet.md, "The protocol in brief" describes Windows: offers every
//! `offer_interval` (including during a session), a re-key on any
//! response, the hello, target ids +2, every request ACKed and executed
//! once, RESEND for a request that arrives while its own packet waits for
//! an ACK, RESET answered with RESET and a resend, reads clamped to 3944
//! bytes with partial reads reported as C0000001, and, once continued,
//! nothing but a break-in answered.
//!
//! Memory comes from the machine's physical memory (`m.mem`) through its
//! page tables, walked as the CPU walks them: a transition or paged-out
//! PTE is not readable virtually, as on a real target.
//!
//! Faults ([`Faults`]) apply to datagrams in both directions: drops,
//! duplicates, reordering; outbound also corruption and forged datagrams
//! with a bad HMAC. [`SimTarget::reboot`] changes the boot identity
//! mid-session.
//!
//! With a [`Workload`] ([`SimConfig::workload`]) the target *runs* while it
//! is resumed: its processors execute the drivers' and nt's code
//! (`pooldump_kit::run`) on a simulated clock ([`SimConfig::speed`]
//! simulated seconds per real second), the pool changes under them,
//! DbgPrint output goes to the debugger as DEBUG_IO packets, and an int3
//! (PoolHitTag's, DbgBreakPoint's) or a bug check stops the machine with a
//! STATUS_BREAKPOINT state change, as Windows does when a kernel debugger
//! is enabled. GetContext/SetContext and control space are per processor;
//! Continue resumes from the registers as the debugger left them (it must
//! step over a hard-coded int3, as WinDbg does).
//!
//! The thread is bounded: it stops when told, when the handle is dropped,
//! or after `lifetime`.
//!
//! For sessions that go wrong and for a target that runs (lossy links,
//! the event API), a few additive knobs: [`SimConfig::bind`]
//! (sit on a veth address), [`SimConfig::mishap`] (reboot, or stop
//! answering for a while, after N requests), [`SimConfig::stop_on_resume`]
//! (a stop under way when the target was frozen, raised when it runs
//! again), [`SimTarget::set_silent`],
//! and [`SimTarget::emit`] (a breakpoint, an exception, a load-symbols
//! stop or a DbgPrint raised by the running target on its own). A stopped
//! target with nothing pending answers RESEND or RESET with its state
//! change again, as Windows' KdpSendWaitContinue does, so a debugger that
//! (re)connects to a stopped target learns where it is.
//!
//! This file holds the [`SimTarget`] handle; `config.rs` is how the target
//! behaves ([`SimConfig`], [`Faults`], [`Mishap`]), `report.rs` what it
//! reports ([`SimEvent`], [`SimStats`], [`SimEnd`]), and `kd/` the
//! thread that is the target: the machine and its kernel debugger (KD).

#![warn(missing_docs)]

mod config;
mod kd;
mod report;

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pooldump_kit::Machine;
use pooldump_kit::run::RunTruth;

pub use config::{Faults, Mishap, MishapAt, MishapKind, SimConfig, StopOnResume};
use kd::{Cmd, Target};
pub use pooldump_kit::run::{WorkItem, Workload};
pub use report::{SimEnd, SimEvent, SimStats};

/// A running simulated target. Dropping it stops the thread.
pub struct SimTarget {
    thread: Option<JoinHandle<SimEnd>>,
    cmd: Sender<Cmd>,
    stats: Arc<Mutex<SimStats>>,
    addr: SocketAddr,
}

impl SimTarget {
    /// Bind `cfg.bind` (127.0.0.1 by default) on a free port and start
    /// offering to `cfg.host`.
    pub fn spawn(machine: Machine, cfg: SimConfig) -> std::io::Result<Self> {
        let sock = UdpSocket::bind((cfg.bind, 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(5)))?;
        let addr = sock.local_addr()?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(SimStats::default()));
        let st = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("kdnet-sim".into())
            .spawn(move || Target::new(machine, cfg, sock, st).run(rx))?;
        Ok(Self {
            thread: Some(thread),
            cmd: tx,
            stats,
            addr,
        })
    }

    /// The target's UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reboot: a new boot identity, no data key, ids from 0, running.
    /// Returns once the target has rebooted.
    pub fn reboot(&self) {
        let (tx, rx) = mpsc::channel();
        if self.cmd.send(Cmd::Reboot(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Send one forged data datagram to the debugger; returns once it is
    /// on the wire.
    pub fn forge(&self) {
        let (tx, rx) = mpsc::channel();
        if self.cmd.send(Cmd::Forge(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Stop answering (and offering) until `set_silent(false)`; returns
    /// once in effect.
    pub fn set_silent(&self, silent: bool) {
        let (tx, rx) = mpsc::channel();
        if self.cmd.send(Cmd::Silent(silent, tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Make the running target report `event` on its own, as the lead's
    /// running CPU will. Returns whether it was sent: only a running
    /// target with a debugger attached reports anything.
    pub fn emit(&self, event: SimEvent) -> bool {
        let (tx, rx) = mpsc::channel();
        if self.cmd.send(Cmd::Emit(event, tx)).is_ok() {
            return rx.recv_timeout(Duration::from_secs(10)).unwrap_or(false);
        }
        false
    }

    /// A snapshot of the target's counters so far.
    pub fn stats(&self) -> SimStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What the running machine has done so far (None without a workload).
    pub fn truth(&self) -> Option<RunTruth> {
        let (tx, rx) = mpsc::channel();
        self.cmd.send(Cmd::Truth(tx)).ok()?;
        rx.recv_timeout(Duration::from_secs(10)).ok().flatten()
    }

    /// Read `len` bytes of kernel memory at `va` as the target's CPU sees
    /// it now (None if unmapped).
    pub fn peek(&self, va: u64, len: usize) -> Option<Vec<u8>> {
        let (tx, rx) = mpsc::channel();
        self.cmd.send(Cmd::Peek(va, len, tx)).ok()?;
        rx.recv_timeout(Duration::from_secs(10)).ok().flatten()
    }

    /// Simulated seconds per real second from now on; 0 freezes the
    /// workload (the target still answers the debugger), so a test can
    /// compare what it reads with what the machine did.
    pub fn set_speed(&self, speed: f64) {
        let (tx, rx) = mpsc::channel();
        if self.cmd.send(Cmd::Speed(speed, tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Stop the target (it vanishes from the network) and take back the
    /// machine, with whatever the debugger wrote into it.
    pub fn stop(self) -> Option<Machine> {
        self.finish().map(|e| e.machine)
    }

    /// Stop the target and take back the machine and what it ran.
    pub fn finish(mut self) -> Option<SimEnd> {
        let _ = self.cmd.send(Cmd::Stop);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for SimTarget {
    fn drop(&mut self) {
        let _ = self.cmd.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
