//! A live KDNET session: listen, handshake, break in, and read the stopped
//! kernel through [`pooldump_core::Memory`] like a dump; then let it run,
//! wait for what it reports on its own, and stop it again.
//!
//! Reads are cut into aligned blocks of `chunk` bytes (1 KiB by default, so
//! no datagram needs IP fragmentation; never more than the 3944 bytes one
//! reply carries) that never cross a page, so an unmapped page fails only
//! its own blocks (kdnet.md §9.1). Every block read is cached until the
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

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pooldump_core::kernel::BootHints;
use pooldump_core::memory::{MemoryError, Translation, walk};
use pooldump_core::{KernelVa, Memory, PAGE_SIZE, PhysAddr};

use crate::api::{
    CONTEXT_LEN, CONTEXT_RIP, Call, ControlReport, DebugIo, Event, Manipulate,
    SPECIAL_REGISTERS_CR3, SPECIAL_REGISTERS_LEN, Space, StateChange, Version, api_number, status,
};
use crate::error::KdnetError;
use crate::key::{KdnetKey, KdnetSpec};
use crate::link::{Link, LinkStats, Timeouts, api_name};
use crate::packet::{KdPacket, PacketType};

/// How to connect.
#[derive(Debug, Clone)]
pub struct KdnetConfig {
    pub port: u16,
    pub key: KdnetKey,
    /// Local address to listen on (all interfaces by default).
    pub bind: std::net::IpAddr,
    pub timeouts: Timeouts,
    /// Bytes per read request and cache block: a power of two from 64 to
    /// 2048 (values in between are rounded down, others clamped).
    pub chunk: u32,
    /// Cached bytes kept per stop before the cache is emptied.
    pub cache_limit: usize,
}

/// The default read size: 1 KiB keeps every datagram under a 1500-byte
/// MTU; whether targets handle IP fragments is unknown (kdnet.md §9.1).
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
    fn block_size(&self) -> u32 {
        let c = self.chunk.clamp(64, 2048);
        1 << (31 - c.leading_zeros())
    }
}

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

/// Where the target stopped, from its state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopInfo {
    /// The CPU that reported the stop; requests go to it.
    pub processor: u16,
    pub number_processors: u32,
    /// The KTHREAD running on that CPU.
    pub thread: u64,
    pub pc: u64,
    /// Why it stopped: the exception (code, address, first chance,
    /// parameters) or the image whose symbols to load.
    pub event: Event,
    /// The AMD64 control report: Dr6/Dr7, EFlags, CS, and up to 16
    /// instruction bytes at the PC.
    pub report: ControlReport,
}

impl From<&StateChange> for StopInfo {
    fn from(s: &StateChange) -> Self {
        Self {
            processor: s.processor,
            number_processors: s.number_processors,
            thread: s.thread,
            pc: s.program_counter,
            event: s.event(),
            report: s.control_report(),
        }
    }
}

impl StopInfo {
    /// A breakpoint exception (`int3`, `__debugbreak`, a break-in,
    /// PoolHitTag's break): STATUS_BREAKPOINT.
    pub fn is_breakpoint(&self) -> bool {
        matches!(
            self.event,
            Event::Exception {
                code: status::BREAKPOINT,
                ..
            }
        )
    }
}

/// What a running target reported on its own ([`LiveTarget::wait_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetEvent {
    /// The target stopped: an exception (a breakpoint such as
    /// PoolHitTag's, an assertion, a fault) or a load-symbols
    /// notification. It stays stopped until
    /// [`LiveTarget::continue_with`] or [`LiveTarget::resume`]; memory
    /// and registers can be read meanwhile.
    Stopped(StopInfo),
    /// DbgPrint output (DEBUG_IO PrintString). The target keeps running.
    Print { processor: u16, text: String },
    /// A DbgPrompt (DEBUG_IO GetString). pooldump answered it with an
    /// empty line, so the target keeps running.
    Prompt { processor: u16, text: String },
}

/// How to continue from a stop (DBGKD_CONTINUE2's status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContinueStatus {
    /// DBG_CONTINUE (0x00010002): carry on, as WinDbg's `g`.
    Continue,
    /// DBG_EXCEPTION_HANDLED (0x00010001): `gh`.
    ExceptionHandled,
    /// DBG_EXCEPTION_NOT_HANDLED (0x80010001): `gn`, the kernel dispatches
    /// the exception (for a breakpoint nobody handles: a bug check).
    ExceptionNotHandled,
}

impl ContinueStatus {
    pub fn code(self) -> u32 {
        match self {
            ContinueStatus::Continue => status::DBG_CONTINUE,
            ContinueStatus::ExceptionHandled => status::DBG_EXCEPTION_HANDLED,
            ContinueStatus::ExceptionNotHandled => status::DBG_EXCEPTION_NOT_HANDLED,
        }
    }
}

/// The result of [`LiveTarget::reconnect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnected {
    /// Where the target is stopped now.
    pub stop: StopInfo,
    /// The target rebooted in between (a new boot identity in its offer,
    /// or a new KernBase): everything written to its memory before is
    /// gone, and addresses from the old boot no longer apply.
    pub rebooted: bool,
}

/// What [`LiveTarget::leave_running`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftRunning {
    /// The target was running already.
    WasRunning,
    /// It was stopped and has been resumed.
    Resumed,
    /// The link had been lost; it was re-established and the target
    /// resumed.
    Reconnected { rebooted: bool },
    /// The target rebooted during the session: it runs (a new boot).
    Rebooted,
}

/// Whether the target runs, and where it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Stopped(StopInfo),
    Running,
    /// The session failed; [`LiveTarget::reconnect`] may bring it back.
    Dead(String),
}

type State = TargetState;

/// One cached block: its bytes, or `None` if the target could not read
/// it.
#[derive(Default)]
struct Cache {
    blocks: HashMap<(Space, u64), Option<Box<[u8]>>>,
    bytes: usize,
}

/// What GetVersion and the KDBG say; refreshed by a reconnect.
#[derive(Debug, Clone, Copy)]
struct Identity {
    version: Version,
    kdbg: Option<KernelVa>,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            version: Version {
                major: 0,
                minor: 0,
                protocol: 0,
                secondary: 0,
                flags: 0,
                machine: 0,
                max_packet_type: 0,
                max_state_change: 0,
                max_manipulate: 0,
                simulation: 0,
                kern_base: 0,
                ps_loaded_module_list: 0,
                debugger_data_list: 0,
            },
            kdbg: None,
        }
    }
}

struct Inner {
    link: Link,
    state: State,
    cache: Cache,
    cache_limit: usize,
    /// CONTEXTs read (or set) during this stop, by processor.
    contexts: HashMap<u16, Vec<u8>>,
    ident: Identity,
    /// The session died because the target stopped answering (not
    /// because it rebooted): it may be stopped, waiting for us.
    lost: bool,
    /// The session died because the target rebooted: it runs.
    rebooted: bool,
    /// While running: when the target was last heard from or probed.
    /// Kept across `wait_event` calls, so a caller that waits in short
    /// slices (to check for Ctrl-C) still probes for a lost report.
    quiet_since: Instant,
}

impl Inner {
    fn stopped(&self) -> Result<&StopInfo, KdnetError> {
        match &self.state {
            State::Stopped(s) => Ok(s),
            State::Running => Err(KdnetError::Running),
            State::Dead(m) => Err(KdnetError::Dead(m.clone())),
        }
    }

    /// One request that expects a reply; a fatal error ends the session.
    fn request(&mut self, req: &Manipulate) -> Result<Manipulate, KdnetError> {
        match self.link.transact(req) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(KdnetError::internal(
                "a request that expects a reply got none",
            )),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// A request while stopped.
    fn call(&mut self, req: &Manipulate) -> Result<Manipulate, KdnetError> {
        self.stopped()?;
        self.request(req)
    }

    fn fail(&mut self, e: KdnetError) -> KdnetError {
        if e.is_fatal() {
            self.lost = matches!(e, KdnetError::NoResponse { .. });
            self.rebooted = matches!(e, KdnetError::TargetRebooted { .. });
            self.state = State::Dead(e.to_string());
            self.forget_stop();
        }
        e
    }

    /// Drop everything that is only true while the target stays stopped.
    fn forget_stop(&mut self) {
        self.cache = Cache::default();
        self.contexts.clear();
    }

    /// Stop the target (or take the stop it already reported).
    fn break_in(&mut self) -> Result<StopInfo, KdnetError> {
        let p = match self.link.break_in() {
            Ok(p) => p,
            Err(e) => return Err(self.fail(e)),
        };
        let sc = StateChange::parse(&p.data).map_err(|e| {
            self.fail(KdnetError::Internal(format!(
                "the target's state change is malformed: {e}"
            )))
        })?;
        self.forget_stop();
        Ok(StopInfo::from(&sc))
    }

    /// GetVersion: refuse the boot debugger and non-x64 targets.
    fn identify(&mut self, stop: &StopInfo) -> Result<(), KdnetError> {
        let reply = self.request(&Manipulate::get_version(stop.processor))?;
        let version = match reply.call() {
            Call::GetVersion(v) if reply.return_status == status::SUCCESS => v,
            _ => {
                return Err(KdnetError::Refused {
                    what: api_name(reply.api),
                    status: reply.return_status,
                });
            }
        };
        if version.is_boot_debugger() {
            return Err(KdnetError::BootDebugger {
                major: version.major,
            });
        }
        if version.machine != Version::MACHINE_AMD64 {
            return Err(KdnetError::NotAmd64 {
                machine: version.machine,
            });
        }
        self.ident = Identity {
            version,
            kdbg: None,
        };
        Ok(())
    }

    /// CR3 from KSPECIAL_REGISTERS (control space item 2), without PCID
    /// bits. Kernel mappings are shared by every address space, so the
    /// stopped thread's CR3 translates kernel addresses.
    fn read_dtb(&mut self, processor: u16) -> Result<PhysAddr, KdnetError> {
        let r = self.request(&Manipulate::read(
            Space::Control,
            processor,
            2,
            SPECIAL_REGISTERS_LEN,
        ))?;
        let cr3 = r
            .data
            .get(SPECIAL_REGISTERS_CR3..SPECIAL_REGISTERS_CR3 + 8)
            .filter(|_| r.return_status == status::SUCCESS)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or(KdnetError::Refused {
                what: "ReadControlSpace(KSPECIAL_REGISTERS)".into(),
                status: r.return_status,
            })?;
        Ok(PhysAddr(cr3 & walk::PFN_MASK))
    }

    /// Read one block, from the cache or the target.
    fn block(
        &mut self,
        space: Space,
        addr: u64,
        len: u32,
        out: &mut [u8],
    ) -> Result<bool, KdnetError> {
        if let Some(b) = self.cache.blocks.get(&(space, addr)) {
            return Ok(match b {
                Some(bytes) => {
                    let n = out.len().min(bytes.len());
                    out[..n].copy_from_slice(&bytes[..n]);
                    true
                }
                None => false,
            });
        }
        let processor = self.stopped()?.processor;
        let r = self.request(&Manipulate::read(space, processor, addr, len))?;
        let actual = match r.call() {
            Call::Read { actual, .. } => actual as usize,
            _ => 0,
        };
        // Trust ActualBytesRead only as far as the data that came with it.
        let ok = r.return_status == status::SUCCESS
            && actual >= len as usize
            && r.data.len() >= len as usize;
        let entry = ok.then(|| r.data[..len as usize].to_vec().into_boxed_slice());
        if let Some(b) = &entry {
            let n = out.len().min(b.len());
            out[..n].copy_from_slice(&b[..n]);
        }
        if self.cache.bytes + len as usize > self.cache_limit {
            self.cache = Cache::default();
        }
        self.cache.bytes += len as usize;
        self.cache.blocks.insert((space, addr), entry);
        Ok(ok)
    }

    /// A processor's CONTEXT, read once per stop.
    fn context(&mut self, processor: u16) -> Result<Vec<u8>, KdnetError> {
        if let Some(c) = self.contexts.get(&processor) {
            return Ok(c.clone());
        }
        let r = self.call(&Manipulate::get_context(processor))?;
        if r.return_status != status::SUCCESS || r.data.len() < CONTEXT_LEN {
            return Err(KdnetError::Refused {
                what: format!("GetContext of processor {processor}"),
                status: r.return_status,
            });
        }
        let ctx = r.data[..CONTEXT_LEN].to_vec();
        self.contexts.insert(processor, ctx.clone());
        Ok(ctx)
    }

    fn set_context(&mut self, processor: u16, ctx: &[u8]) -> Result<(), KdnetError> {
        if ctx.len() != CONTEXT_LEN {
            return Err(KdnetError::Internal(format!(
                "a CONTEXT is {CONTEXT_LEN:#x} bytes, not {:#x}",
                ctx.len()
            )));
        }
        let r = self.call(&Manipulate::set_context(processor, ctx))?;
        if r.return_status != status::SUCCESS {
            return Err(KdnetError::Refused {
                what: format!("SetContext of processor {processor}"),
                status: r.return_status,
            });
        }
        self.contexts.insert(processor, ctx.to_vec());
        Ok(())
    }

    /// Continue2 from the current stop. For a breakpoint continued as
    /// handled, a hard-coded int3 is stepped over first (Rip + 1), as
    /// WinDbg does: the kernel does not advance Rip for BREAKPOINT_BREAK,
    /// and the target would stop again at once (kdnet.md §6).
    fn continue_with(&mut self, how: ContinueStatus) -> Result<(), KdnetError> {
        let stop = self.stopped()?.clone();
        if stop.is_breakpoint() && how != ContinueStatus::ExceptionNotHandled {
            let mut ctx = self.context(stop.processor)?;
            let rip = u64::from_le_bytes(
                ctx[CONTEXT_RIP..CONTEXT_RIP + 8]
                    .try_into()
                    .map_err(KdnetError::internal)?,
            );
            // The control report carries the bytes at the PC: no read
            // needed when Rip is still there.
            let at = if rip == stop.pc && stop.report.instruction_count > 0 {
                Some(stop.report.instruction_stream[0])
            } else {
                let r = self.call(&Manipulate::read(Space::Virtual, stop.processor, rip, 1))?;
                (r.return_status == status::SUCCESS)
                    .then(|| r.data.first().copied())
                    .flatten()
            };
            if at == Some(0xCC) {
                ctx[CONTEXT_RIP..CONTEXT_RIP + 8].copy_from_slice(&(rip + 1).to_le_bytes());
                self.set_context(stop.processor, &ctx)?;
            }
        }
        let r = self
            .link
            .transact(&Manipulate::continue2(stop.processor, how.code()));
        self.forget_stop();
        match r {
            Ok(_) => {
                self.state = State::Running;
                self.quiet_since = Instant::now();
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Turn a state change or print into an event; `None` for anything
    /// else.
    fn event(&mut self, p: KdPacket) -> Option<TargetEvent> {
        match p.kind {
            PacketType::StateChange64 => {
                let sc = StateChange::parse(&p.data).ok()?;
                let stop = StopInfo::from(&sc);
                if matches!(&self.state, State::Stopped(s) if *s == stop) {
                    // The stop we know, sent again (a RESEND crossed it).
                    return None;
                }
                self.forget_stop();
                self.state = State::Stopped(stop.clone());
                Some(TargetEvent::Stopped(stop))
            }
            PacketType::DebugIo => {
                let io = DebugIo::parse(&p.data).ok()?;
                match io.api {
                    api_number::PRINT_STRING => Some(TargetEvent::Print {
                        processor: io.processor,
                        text: io.text(),
                    }),
                    api_number::GET_STRING => Some(TargetEvent::Prompt {
                        processor: io.processor,
                        text: io.text(),
                    }),
                    _ => None,
                }
            }
            _ => None,
        }
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
    /// DTB. Bounded by [`Timeouts::give_up`].
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
                Call::Write { actual, .. } => actual as usize,
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

    fn transport(e: KdnetError) -> MemoryError {
        MemoryError::Transport(e.to_string())
    }

    /// Read `buf` from `space` block by block; returns how many bytes were
    /// read before the first block the target could not read.
    fn read_blocks(&self, space: Space, addr: u64, buf: &mut [u8]) -> Result<usize, MemoryError> {
        let bs = u64::from(self.block);
        let mut done = 0usize;
        let mut g = self.lock();
        while done < buf.len() {
            let cur = addr.wrapping_add(done as u64);
            let base = cur & !(bs - 1);
            let off = (cur - base) as usize;
            let n = (bs as usize - off).min(buf.len() - done);
            let mut tmp = [0u8; 2048];
            let ok = g
                .block(space, base, self.block, &mut tmp[..bs as usize])
                .map_err(Self::transport)?;
            if !ok {
                break;
            }
            buf[done..done + n].copy_from_slice(&tmp[off..off + n]);
            done += n;
        }
        Ok(done)
    }

    /// The virtual read: the target's own ReadVirtualMemory per block, and
    /// for blocks it cannot read, the page walk (transition pages) with
    /// the walk's error if that fails too.
    fn read_virtual_inner(
        &self,
        va: KernelVa,
        buf: &mut [u8],
        partial: bool,
    ) -> Result<usize, MemoryError> {
        let mut done = 0usize;
        while done < buf.len() {
            let cur = va
                .checked_add(done as u64)
                .filter(|v| v.is_canonical())
                .ok_or(MemoryError::NonCanonical { va })?;
            done += self.read_blocks(Space::Virtual, cur.0, &mut buf[done..])?;
            if done == buf.len() {
                break;
            }
            let cur = KernelVa(va.0.wrapping_add(done as u64));
            let n = ((PAGE_SIZE - cur.page_offset()) as usize).min(buf.len() - done);
            let step = self.translate(cur).and_then(|t| {
                self.read_physical(t.pa, &mut buf[done..done + n])
                    .map_err(|e| via(e, cur))
            });
            match step {
                Ok(()) => done += n,
                Err(_) if partial && done > 0 => return Ok(done),
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

fn via(e: MemoryError, va: KernelVa) -> MemoryError {
    match e {
        MemoryError::NotInSource {
            pa,
            va: None,
            level,
        } => MemoryError::NotInSource {
            pa,
            va: Some(va),
            level,
        },
        e => e,
    }
}

impl Memory for LiveTarget {
    fn describe(&self) -> String {
        format!("KDNET target {} (build {})", self.peer(), self.build())
    }

    fn kernel_dtb(&self) -> PhysAddr {
        PhysAddr(self.dtb.load(Ordering::Relaxed))
    }

    fn read_physical(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        let n = self.read_blocks(Space::Physical, pa.0, buf)?;
        if n < buf.len() {
            return Err(MemoryError::NotInSource {
                pa: PhysAddr(pa.0.wrapping_add(n as u64)),
                va: None,
                level: None,
            });
        }
        Ok(())
    }

    fn translate(&self, va: KernelVa) -> Result<Translation, MemoryError> {
        walk::translate(self, self.kernel_dtb(), va)
    }

    fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.read_virtual_inner(va, buf, false).map(|_| ())
    }

    fn read_virtual_partial(&self, va: KernelVa, buf: &mut [u8]) -> Result<usize, MemoryError> {
        self.read_virtual_inner(va, buf, true)
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
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_powers_of_two_within_one_reply() {
        let cfg = |chunk| KdnetConfig {
            chunk,
            ..KdnetConfig::from("key=1.2.3.4".parse::<KdnetSpec>().unwrap())
        };
        assert_eq!(cfg(1024).block_size(), 1024);
        assert_eq!(cfg(1000).block_size(), 512);
        assert_eq!(cfg(3944).block_size(), 2048);
        assert_eq!(cfg(0).block_size(), 64);
        assert_eq!(cfg(u32::MAX).block_size(), 2048);
    }

    #[test]
    fn retry_fixes_the_timer() {
        let c = KdnetConfig::from("key=1.2.3.4,retry=50".parse::<KdnetSpec>().unwrap());
        assert_eq!(c.timeouts.fixed_rto, Some(Duration::from_millis(50)));
        let c = KdnetConfig::from("key=1.2.3.4".parse::<KdnetSpec>().unwrap());
        assert_eq!(c.timeouts, Timeouts::default());
    }
}
