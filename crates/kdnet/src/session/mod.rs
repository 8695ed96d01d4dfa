//! A live KDNET session: listen, handshake, break in, and read the stopped
//! kernel through [`pooldump_core::Memory`] like a dump; then let it run,
//! wait for what it reports on its own, and stop it again.
//!
//! Reads are cut into aligned blocks of `chunk` bytes (1 KiB by default, so
//! no datagram needs IP fragmentation; never more than the 3944 bytes one
//! reply carries) that never cross a page, so an unmapped page fails only
//! its own blocks (docs/kdnet.md, "The protocol in brief"). Every block read is cached until the
//! target runs again. A virtual block the target cannot read (a transition
//! or paged-out PTE) falls back to the x64 page walk over physical reads,
//! so a live session and a dump of the same machine give the same bytes and
//! the same errors.
//!
//! # A target that runs
//!
//! [`LiveTarget::wait_event`] waits, with a deadline, for the target to
//! report something on its own while it runs: a state change (an
//! exception such as a breakpoint, or a load-symbols notification), which
//! leaves it stopped, or a debug print, after which it keeps running. The
//! stopped processor's registers are [`LiveTarget::get_context_of`] and
//! [`LiveTarget::set_context_of`]; [`LiveTarget::continue_with`] lets it
//! run again with a continue status. A lost link is recovered with
//! [`LiveTarget::reconnect`].
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use pooldump_core::KernelVa;
//! use pooldump_kdnet::{ContinueStatus, KdnetConfig, Session, TargetEvent};
//!
//! let target = Session::connect(KdnetConfig::from("port=50000,key=1.2.3.4".parse::<pooldump_kdnet::KdnetSpec>()?))?;
//! let pool_hit_tag = KernelVa(0xFFFF_F800_1234_5678); // from nt's PDB
//! let mut old = [0u8; 4];
//! pooldump_core::Memory::read_virtual(&target, pool_hit_tag, &mut old)?;
//! target.write_virtual(pool_hit_tag, b"Leak")?;
//! target.resume()?;
//! let end = Instant::now() + Duration::from_secs(60);
//! let mut hits = 0;
//! while hits < 10 && Instant::now() < end {
//!     // Short waits, so a Ctrl-C flag can be checked between them.
//!     let slice = (Instant::now() + Duration::from_millis(200)).min(end);
//!     match target.wait_event(slice)? {
//!         None => continue,
//!         Some(TargetEvent::Print { text, .. }) => eprint!("{text}"),
//!         Some(TargetEvent::Prompt { .. }) => {}
//!         Some(TargetEvent::Stopped(stop)) => {
//!             let ctx = target.get_context_of(stop.processor)?;
//!             // ... walk the stack from ctx ...
//!             hits += 1;
//!             target.continue_with(ContinueStatus::Continue)?;
//!         }
//!     }
//! }
//! // Always: stop, restore, let it run.
//! target.break_in()?;
//! target.write_virtual(pool_hit_tag, &old)?;
//! target.resume()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! This file holds [`Session`] and [`LiveTarget`]'s public face;
//! `config.rs` is [`KdnetConfig`], `events.rs` what a session reports
//! ([`StopInfo`], [`TargetEvent`], ...), `inner.rs` the protocol state
//! behind the lock and its steps, and `memory.rs` the [`Memory`] the
//! stopped target is.

mod config;
mod events;
mod inner;
mod memory;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pooldump_core::kernel::BootHints;
use pooldump_core::{KernelVa, Memory};

use crate::api::{Call, Manipulate, Space, Version, status};
use crate::error::KdnetError;
use crate::link::{Link, LinkStats};

pub use config::{DEFAULT_CHUNK, KdnetConfig};
pub use events::{ContinueStatus, LeftRunning, Reconnected, StopInfo, TargetEvent, TargetState};
use inner::{Cache, Identity, Inner, State};

/// A UDP socket waiting for a target's offer.
pub struct Session {
    sock: UdpSocket,
    cfg: KdnetConfig,
}

impl Session {
    /// Listen, wait for the target, break in and read its version:
    /// `bind` then `accept`.
    pub fn connect(cfg: KdnetConfig) -> Result<LiveTarget, KdnetError> {
        Self::bind(cfg)?.accept()
    }

    /// Listen on the configured port (0 picks a free one; see
    /// [`Session::local_addr`]).
    pub fn bind(cfg: KdnetConfig) -> Result<Self, KdnetError> {
        let addr = SocketAddr::new(cfg.bind, cfg.port);
        let sock = UdpSocket::bind(addr).map_err(|source| KdnetError::Bind { addr, source })?;
        Ok(Self { sock, cfg })
    }

    /// The address and port actually bound (the port chosen when the
    /// configuration asked for 0).
    pub fn local_addr(&self) -> Result<SocketAddr, KdnetError> {
        self.sock.local_addr().map_err(|source| KdnetError::Io {
            what: "reading the local address".into(),
            source,
        })
    }

    /// Wait for the target's offer, answer it, break in, and identify the
    /// kernel (GetVersion, the KDBG through DebuggerDataList, CR3).
    pub fn accept(self) -> Result<LiveTarget, KdnetError> {
        let block = self.cfg.block_size();
        let link = Link::handshake(self.sock, self.cfg.key.clone(), self.cfg.timeouts)?;
        let mut inner = Inner {
            link,
            state: State::Running,
            cache: Cache::default(),
            cache_limit: self.cfg.cache_limit,
            contexts: HashMap::new(),
            ident: Identity::default(),
            lost: false,
            rebooted: false,
            quiet_since: Instant::now(),
        };
        let stop = inner.break_in()?;
        inner.state = State::Stopped(stop.clone());
        let target = LiveTarget {
            inner: Mutex::new(inner),
            block,
            dtb: AtomicU64::new(0),
        };
        // From here on an error drops `target`, which lets the target run
        // again: a refused or unusable kernel is not left frozen.
        {
            let mut g = target.lock();
            g.identify(&stop)?;
            let dtb = g.read_dtb(stop.processor)?;
            target.dtb.store(dtb.0, Ordering::Relaxed);
        }
        target.find_kdbg();
        Ok(target)
    }
}

/// A Windows kernel on the other end of a KDNET session: stopped (then it
/// implements [`Memory`], so everything that reads a dump reads it) or
/// running (then [`LiveTarget::wait_event`] reports what it does).
///
/// Dropping it resumes the target if it is still stopped: a production
/// machine must not be left frozen by an error path.
pub struct LiveTarget {
    inner: Mutex<Inner>,
    block: u32,
    dtb: AtomicU64,
}

impl LiveTarget {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; the
        // protocol state is still consistent enough to fail cleanly.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follow DebuggerDataList's Flink to KdDebuggerDataBlock (its
    /// Header.List is at offset 0). Absent without the DATA flag.
    fn find_kdbg(&self) {
        let v = self.version();
        let list = v.debugger_data_list;
        let mut kdbg = None;
        if v.flags & Version::FLAG_DATA != 0 && list != 0 {
            let mut b = [0u8; 8];
            if self.read_virtual(KernelVa(list), &mut b).is_ok() {
                let flink = KernelVa(u64::from_le_bytes(b));
                kdbg = flink.is_kernel().then_some(flink);
            }
        }
        self.lock().ident.kdbg = kdbg;
    }

    /// The target's GetVersion reply.
    pub fn version(&self) -> Version {
        self.lock().ident.version
    }

    /// nt's base, from GetVersion.
    pub fn kern_base(&self) -> KernelVa {
        KernelVa(self.version().kern_base)
    }

    /// PsLoadedModuleList, from GetVersion.
    pub fn ps_loaded_module_list(&self) -> KernelVa {
        KernelVa(self.version().ps_loaded_module_list)
    }

    /// KdDebuggerDataBlock, found through GetVersion's DebuggerDataList.
    pub fn kdbg_va(&self) -> Option<KernelVa> {
        self.lock().ident.kdbg
    }

    /// Where kernel identification starts, as a dump header's fields
    /// would: the KDBG and PsLoadedModuleList GetVersion gave.
    pub fn boot_hints(&self) -> BootHints {
        BootHints {
            kd_debugger_data_block: self.kdbg_va().unwrap_or_default(),
            ps_loaded_module_list: self.ps_loaded_module_list(),
        }
    }

    /// The build number GetVersion reported (MinorVersion).
    pub fn build(&self) -> u32 {
        u32::from(self.version().minor)
    }

    /// The target's address.
    pub fn peer(&self) -> SocketAddr {
        self.lock().link.target
    }

    /// Where the target is stopped, or why it is not.
    pub fn stop_info(&self) -> Result<StopInfo, KdnetError> {
        self.lock().stopped().cloned()
    }

    /// Whether the target runs, where it stopped, or why the session
    /// ended.
    pub fn state(&self) -> TargetState {
        self.lock().state.clone()
    }

    /// Forget every cached read (they are also dropped whenever the
    /// target runs).
    pub fn flush_cache(&self) {
        self.lock().cache = Cache::default();
    }

    /// Datagram, request and recovery counters, and the retransmission
    /// timer's state.
    pub fn stats(&self) -> LinkStats {
        self.lock().link.snapshot()
    }

    /// Let the target run: [`ContinueStatus::Continue`], stepping over a
    /// hard-coded int3. The read cache is dropped.
    pub fn resume(&self) -> Result<(), KdnetError> {
        self.continue_with(ContinueStatus::Continue)
    }

    /// Let the target run from the current stop with `how`. After a
    /// breakpoint exception continued as handled, a hard-coded `int3` at
    /// Rip is stepped over first (SetContext with Rip + 1), as WinDbg
    /// does; [`ContinueStatus::ExceptionNotHandled`] leaves Rip alone so
    /// the kernel dispatches the exception. The read cache and the
    /// CONTEXTs read during the stop are dropped.
    pub fn continue_with(&self, how: ContinueStatus) -> Result<(), KdnetError> {
        self.lock().continue_with(how)
    }

    /// Stop a running target (or take the stop it already reported, not
    /// yet returned by [`LiveTarget::wait_event`]) and refresh the kernel
    /// DTB. Bounded by [`Timeouts::give_up`](crate::Timeouts::give_up).
    pub fn break_in(&self) -> Result<StopInfo, KdnetError> {
        let mut g = self.lock();
        match &g.state {
            State::Stopped(s) => return Ok(s.clone()),
            State::Dead(m) => return Err(KdnetError::Dead(m.clone())),
            State::Running => {}
        }
        let stop = g.break_in()?;
        let dtb = g.read_dtb(stop.processor)?;
        self.dtb.store(dtb.0, Ordering::Relaxed);
        g.state = State::Stopped(stop.clone());
        Ok(stop)
    }

    /// Wait until `deadline` for the running target to report something
    /// on its own.
    ///
    /// - A state change (KD_STATE_CHANGE64: an exception, such as the
    ///   STATUS_BREAKPOINT that PoolHitTag raises, or a load-symbols
    ///   notification) is returned as [`TargetEvent::Stopped`], and the
    ///   target is stopped: read it, then continue it.
    /// - A debug print is returned as [`TargetEvent::Print`]; the target
    ///   keeps running. A prompt is answered with an empty line and
    ///   returned as [`TargetEvent::Prompt`].
    /// - Every data packet is ACKed once per id; a duplicate is ACKed
    ///   again and not returned twice. Offers from the same boot and the
    ///   hello are ignored; an offer with a new boot identity is
    ///   [`KdnetError::TargetRebooted`].
    ///
    /// `Ok(None)` at the deadline. While nothing arrives, a RESEND is sent
    /// every few round trips (at least every second), so a state change
    /// lost on its way here is sent again (targets do not retransmit on
    /// their own). Fails with [`KdnetError::Stopped`] if the target is
    /// stopped: continue it first.
    pub fn wait_event(&self, deadline: Instant) -> Result<Option<TargetEvent>, KdnetError> {
        let mut g = self.lock();
        match &g.state {
            State::Running => {}
            State::Stopped(_) => return Err(KdnetError::Stopped),
            State::Dead(m) => return Err(KdnetError::Dead(m.clone())),
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                // Queued events are still handed out at the deadline.
                return Ok(g.link.take_event().and_then(|p| g.event(p)));
            }
            let probe_every =
                (g.link.rtt.rto() * 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
            let probe_at = g.quiet_since + probe_every;
            if now >= probe_at {
                // Quiet for too long: a report may have been lost.
                g.quiet_since = now;
                if let Err(e) = g.link.probe() {
                    return Err(g.fail(e));
                }
                continue;
            }
            match g.link.recv_event(deadline.min(probe_at)) {
                Err(e) => return Err(g.fail(e)),
                Ok(Some(p)) => {
                    g.quiet_since = Instant::now();
                    if let Some(ev) = g.event(p) {
                        return Ok(Some(ev));
                    }
                }
                Ok(None) => {}
            }
        }
    }

    /// The CONTEXT (x64, 0x4D0 bytes) of the processor that stopped.
    pub fn get_context(&self) -> Result<Vec<u8>, KdnetError> {
        let mut g = self.lock();
        let p = g.stopped()?.processor;
        g.context(p)
    }

    /// The CONTEXT of any processor while the target is stopped: the one
    /// that reported the stop has its live registers, the others the
    /// state they were frozen in. Read once per stop and cached
    /// ([`crate::api::context`] has the register offsets).
    pub fn get_context_of(&self, processor: u16) -> Result<Vec<u8>, KdnetError> {
        self.lock().context(processor)
    }

    /// Replace a processor's CONTEXT (0x4D0 bytes) while stopped; it takes
    /// effect when the target continues.
    pub fn set_context_of(&self, processor: u16, context: &[u8]) -> Result<(), KdnetError> {
        self.lock().set_context(processor, context)
    }

    /// Re-establish a session that was lost, on the same socket.
    ///
    /// Waits up to `wait` for the target's next offer (targets offer
    /// every 3 s while they run, and while stopped in the debugger),
    /// answers it with a new data key, breaks in (a target that is already
    /// stopped resends its state change), reads GetVersion and CR3 again,
    /// and returns with the target stopped, so the caller can restore
    /// what it changed and resume.
    ///
    /// It guarantees, on `Ok`: the target is stopped and the session is
    /// usable as after [`Session::accept`]; caches and CONTEXTs are
    /// empty; `rebooted` says whether this is a new boot (then memory
    /// written before is gone and old addresses may be wrong).
    ///
    /// It does not guarantee: that events the target reported while the
    /// link was down are delivered (they are lost); that a continue sent
    /// just before the loss took effect (the target may have run and
    /// stopped again: the stop returned is the current one); or anything
    /// about a target that does not offer within `wait` (then
    /// [`KdnetError::ReconnectFailed`], and the session stays dead).
    pub fn reconnect(&self, wait: Duration) -> Result<Reconnected, KdnetError> {
        let mut g = self.lock();
        let target = g.link.target;
        let old_base = g.ident.version.kern_base;
        let r = (|| {
            let new_boot = g.link.rehandshake(wait)?;
            g.state = State::Running;
            let stop = g.break_in()?;
            g.identify(&stop)?;
            let dtb = g.read_dtb(stop.processor)?;
            g.state = State::Stopped(stop.clone());
            Ok::<_, KdnetError>((stop, dtb, new_boot))
        })();
        let (stop, dtb, new_boot) = match r {
            Ok(x) => x,
            Err(cause) => {
                let cause = match cause {
                    KdnetError::NoOffer { port, .. } => {
                        format!("no offer arrived on UDP port {port}")
                    }
                    e => e.to_string(),
                };
                let e = KdnetError::ReconnectFailed {
                    target,
                    waited: wait,
                    cause,
                };
                g.state = State::Dead(e.to_string());
                g.forget_stop();
                return Err(e);
            }
        };
        self.dtb.store(dtb.0, Ordering::Relaxed);
        let rebooted = new_boot || g.ident.version.kern_base != old_base;
        g.lost = false;
        g.rebooted = false;
        drop(g);
        self.find_kdbg();
        Ok(Reconnected { stop, rebooted })
    }

    /// Whether the session died because the target stopped answering (as
    /// opposed to rebooting, or never failing): then it may be stopped,
    /// and [`reconnect`](Self::reconnect) may get it back.
    pub fn link_lost(&self) -> bool {
        let g = self.lock();
        matches!(g.state, State::Dead(_)) && g.lost
    }

    /// Leave the target running, whatever became of the session: resume
    /// it if it is stopped; if the link was lost (the target stopped
    /// answering), [`reconnect`](Self::reconnect) within `wait` and
    /// resume; nothing if it runs or rebooted. Restores nothing else: a
    /// caller that changed memory reconnects itself, restores, and then
    /// resumes.
    pub fn leave_running(&self, wait: Duration) -> Result<LeftRunning, KdnetError> {
        let (state, lost, rebooted) = {
            let g = self.lock();
            (g.state.clone(), g.lost, g.rebooted)
        };
        match state {
            State::Running => Ok(LeftRunning::WasRunning),
            State::Stopped(_) => self.resume().map(|()| LeftRunning::Resumed),
            State::Dead(_) if rebooted => Ok(LeftRunning::Rebooted),
            State::Dead(_) if lost => {
                let r = self.reconnect(wait)?;
                self.resume()?;
                Ok(LeftRunning::Reconnected {
                    rebooted: r.rebooted,
                })
            }
            State::Dead(m) => Err(KdnetError::Dead(m)),
        }
    }

    /// Write kernel virtual memory (for example nt!PoolHitTag), in chunks.
    pub fn write_virtual(&self, va: KernelVa, data: &[u8]) -> Result<(), KdnetError> {
        let mut g = self.lock();
        let processor = g.stopped()?.processor;
        let step = self.block as usize;
        for (i, part) in data.chunks(step).enumerate() {
            let at = va.0.wrapping_add((i * step) as u64);
            let r = g.call(&Manipulate::write(Space::Virtual, processor, at, part))?;
            let written = match r.call() {
                Call::Write(t) => t.actual as usize,
                _ => 0,
            };
            if r.return_status != status::SUCCESS || written != part.len() {
                return Err(KdnetError::Refused {
                    what: format!("WriteVirtualMemory at {}", KernelVa(at)),
                    status: r.return_status,
                });
            }
        }
        // Writes make cached virtual and physical copies stale.
        g.cache = Cache::default();
        Ok(())
    }
}

impl Drop for LiveTarget {
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        if matches!(g.state, State::Stopped(_)) {
            let _ = g.continue_with(ContinueStatus::Continue);
        }
    }
}

impl std::fmt::Debug for LiveTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("LiveTarget")
            .field("peer", &g.link.target)
            .field("version", &g.ident.version)
            .field("kdbg", &g.ident.kdbg)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
