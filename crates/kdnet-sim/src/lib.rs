//! A simulated KDNET target for tests and benchmarks: a synthetic kernel
//! from `pooldump-kit`, stopped or running behind the real protocol over
//! UDP on loopback.
//!
//! It behaves as kdnet.md §8.E describes Windows: offers every
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
//! answering for a while, after N requests), [`SimTarget::set_silent`],
//! and [`SimTarget::emit`] (a breakpoint, an exception, a load-symbols
//! stop or a DbgPrint raised by the running target on its own). A stopped
//! target with nothing pending answers RESEND or RESET with its state
//! change again, as Windows' KdpSendWaitContinue does, so a debugger that
//! (re)connects to a stopped target learns where it is.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pooldump_kdnet::KdnetKey;
use pooldump_kdnet::api::{
    CONTEXT_LEN, Call, DebugIo, MAX_TRANSFER, Manipulate, SPECIAL_REGISTERS_CR3,
    SPECIAL_REGISTERS_LEN, Space, StateChange, Version, api_number, context, status,
};
use pooldump_kdnet::control::{IDENTITY_LEN, Offer, Response};
use pooldump_kdnet::datagram::{self, Channel, DataKey, Datagram, DatagramError, MAX_LEN};
use pooldump_kdnet::packet::{KdPacket, PacketType, Payload};
use pooldump_kit::Machine;
use pooldump_kit::run::{RunTruth, Runtime, StopKind};
pub use pooldump_kit::run::{WorkItem, Workload};

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
    pub key: KdnetKey,
    /// Where the target sends its offers (the debugger's address, as
    /// `bcdedit /dbgsettings net hostip: port:` configures it).
    pub host: SocketAddr,
    /// KDNET version byte (5 on Windows 10 19041).
    pub version: u8,
    /// Windows offers every 3 s; tests use less.
    pub offer_interval: Duration,
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
}

/// A session that goes wrong, at a chosen point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mishap {
    /// Requests executed (in this boot) before it happens.
    pub after_requests: u64,
    pub kind: MishapKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MishapKind {
    /// The target reboots: a new boot identity, no data key, running.
    Reboot,
    /// The target neither answers nor offers for this long (a cable
    /// pulled, a hung NIC), then carries on as if nothing happened.
    Silent(Duration),
}

/// Something a running target reports on its own ([`SimTarget::emit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEvent {
    /// A hard-coded `int3` at `pc` on `processor` (PoolHitTag's break,
    /// DbgBreakPoint): the target stops with STATUS_BREAKPOINT, Rip = pc.
    Breakpoint { processor: u16, pc: u64 },
    /// Any other exception: the target stops with `code`.
    Exception {
        processor: u16,
        pc: u64,
        code: u32,
        parameters: Vec<u64>,
        first_chance: bool,
    },
    /// An image loads: the target stops with a load-symbols state change.
    LoadSymbols {
        processor: u16,
        base: u64,
        size: u32,
        path: String,
    },
    /// DbgPrint: a DEBUG_IO PrintString; the target keeps running.
    Print { processor: u16, text: String },
}

impl SimConfig {
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
        }
    }
}

/// What the simulated target saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    pub offers_sent: u64,
    pub handshakes: u64,
    pub breakins: u64,
    /// Manipulate requests executed (each id once).
    pub requests_executed: u64,
    /// Requests executed a second time: must stay 0.
    pub double_executions: u64,
    /// Retransmitted requests recognised and only ACKed again.
    pub duplicate_requests: u64,
    pub resends_sent: u64,
    pub resets_received: u64,
    pub writes: u64,
    pub continues: u64,
    /// Inbound datagrams that did not authenticate.
    pub dropped_bad_tag: u64,
    pub dropped_other: u64,
    pub faults_dropped: u64,
    pub faults_duplicated: u64,
    pub faults_reordered: u64,
    pub faults_corrupted: u64,
    pub forged_sent: u64,
    /// Times the running machine stopped on its own (int3, bug check).
    pub stops: u64,
    /// DEBUG_IO prints sent.
    pub prints_sent: u64,
    /// Simulated nanoseconds the machine has run.
    pub sim_ns: u64,
    /// The machine bug-checked.
    pub bugchecked: bool,
    /// Whether the target runs (as opposed to stopped in the debugger).
    pub running: bool,
    /// The ContinueStatus of the last Continue/Continue2.
    pub last_continue_status: Option<u32>,
    /// SetContext requests executed.
    pub set_contexts: u64,
    /// Events raised with [`SimTarget::emit`] and sent.
    pub events_sent: u64,
    /// State changes sent again on a RESEND or RESET while stopped.
    pub stops_resent: u64,
    /// Datagrams not answered while silent.
    pub ignored_while_silent: u64,
}

enum Cmd {
    /// Reboot, then say so (the caller waits, so a request sent after
    /// `reboot()` returns meets the rebooted target).
    Reboot(Sender<()>),
    Forge(Sender<()>),
    /// Send what the running machine has done so far.
    Truth(Sender<Option<RunTruth>>),
    /// Read kernel memory as the CPU sees it now (for tests).
    Peek(u64, usize, Sender<Option<Vec<u8>>>),
    /// Change the simulated clock's speed (0 freezes the workload).
    Speed(f64, Sender<()>),
    Silent(bool, Sender<()>),
    Emit(SimEvent, Sender<bool>),
    Stop,
}

/// What a stopped simulated target hands back.
pub struct SimEnd {
    pub machine: Machine,
    pub runtime: Option<Runtime>,
}

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

#[derive(PartialEq, Eq)]
enum Run {
    Running,
    Stopped,
}

/// The target's packet waiting for an ACK.
struct Pending {
    id: u32,
    payload: Vec<u8>,
}

/// The KTHREAD a simulated stop reports (opaque to the debugger).
const STOPPED_THREAD: u64 = 0xFFFF_C001_2345_6080;
/// Where the processors' (opaque) kernel stacks are said to be.
const STACKS: u64 = 0xFFFF_D000_1234_7F00;

/// How long a reordered datagram is held at most.
const HOLD: Duration = Duration::from_millis(15);

struct Target {
    m: Machine,
    rt: Option<Runtime>,
    /// Simulated time the machine has run, and when it last advanced.
    sim_ns: u64,
    last_tick: Instant,
    /// Data packets waiting for the one in flight to be acknowledged.
    outbox: VecDeque<(PacketType, Vec<u8>)>,
    /// The processor that reported the stop.
    stopped_cpu: u16,
    /// The stop's state change waits in the outbox (behind a print): a
    /// RESEND must not send it ahead of its turn.
    stop_queued: bool,
    cfg: SimConfig,
    sock: UdpSocket,
    stats: Arc<Mutex<SimStats>>,
    rng: fastrand::Rng,
    identity: [u8; IDENTITY_LEN],
    offer_counter: u16,
    offer_seq: u64,
    data_key: Option<DataKey>,
    peer: SocketAddr,
    seq: u64,
    next_id: u32,
    pending: Option<Pending>,
    last_exec: Option<u32>,
    executed: std::collections::HashSet<u32>,
    run: Run,
    /// CONTEXT per processor.
    contexts: Vec<Vec<u8>>,
    pc: u64,
    /// The state change that stopped the target and its packet id, sent
    /// again (same id: the same packet) on RESEND or RESET while nothing
    /// else is pending.
    stop_report: Option<(u32, Vec<u8>)>,
    silent_until: Option<Instant>,
    silent: bool,
    /// Requests executed in this boot (for the mishap).
    boot_requests: u64,
    mishap: Option<Mishap>,
    held_out: Option<(Instant, Vec<u8>)>,
    held_in: Option<(Instant, Vec<u8>, SocketAddr)>,
}

impl Target {
    fn new(m: Machine, cfg: SimConfig, sock: UdpSocket, stats: Arc<Mutex<SimStats>>) -> Self {
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let identity = std::array::from_fn(|_| rng.u8(..));
        let kern_base = m.truth.kernel.kern_base;
        // Where a break-in stops: RtlpBreakWithStatusInstruction on
        // Windows; any nt address serves when the build lacks the symbol.
        let pc = m
            .sym_va("RtlpBreakWithStatusInstruction")
            .unwrap_or(kern_base + 0x1000);
        let cpus = m.truth.cpus.max(1) as usize;
        let contexts = (0..cpus)
            .map(|cpu| {
                let mut c = vec![0u8; CONTEXT_LEN];
                c[0x30..0x34].copy_from_slice(&0x0010_001Fu32.to_le_bytes());
                c[0x38..0x3A].copy_from_slice(&0x10u16.to_le_bytes());
                c[0x44..0x48].copy_from_slice(&0x202u32.to_le_bytes());
                // Each processor's own (opaque) kernel stack.
                context::set_reg(&mut c, context::RSP, STACKS - cpu as u64 * 0x6000);
                context::set_reg(&mut c, context::RIP, pc);
                c
            })
            .collect();
        let peer = cfg.host;
        let mut m = m;
        let rt = cfg.workload.clone().map(|w| Runtime::new(&mut m, w));
        let mishap = cfg.mishap;
        Self {
            m,
            rt,
            sim_ns: 0,
            last_tick: Instant::now(),
            outbox: VecDeque::new(),
            stopped_cpu: 0,
            stop_queued: false,
            sock,
            stats,
            rng,
            identity,
            offer_counter: 0x97c1,
            offer_seq: 3,
            data_key: None,
            peer,
            seq: 1,
            next_id: 0,
            pending: None,
            last_exec: None,
            executed: Default::default(),
            run: Run::Running,
            contexts,
            pc,
            stop_report: None,
            silent_until: None,
            silent: false,
            boot_requests: 0,
            mishap,
            held_out: None,
            held_in: None,
            cfg,
        }
    }

    fn stat(&self, f: impl FnOnce(&mut SimStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn run(mut self, rx: Receiver<Cmd>) -> SimEnd {
        let end = Instant::now() + self.cfg.lifetime;
        let mut next_offer = Instant::now();
        self.stat(|s| s.running = self.run == Run::Running);
        let mut buf = vec![0u8; MAX_LEN + 64];
        while Instant::now() < end {
            match rx.try_recv() {
                Ok(Cmd::Stop) | Err(TryRecvError::Disconnected) => break,
                Ok(Cmd::Reboot(done)) => {
                    self.reboot();
                    let _ = done.send(());
                    next_offer = Instant::now();
                }
                Ok(Cmd::Forge(done)) => {
                    self.forge();
                    let _ = done.send(());
                }
                Ok(Cmd::Truth(tx)) => {
                    let _ = tx.send(self.rt.as_ref().map(|r| r.truth.clone()));
                }
                Ok(Cmd::Speed(v, tx)) => {
                    self.tick();
                    self.cfg.speed = v.max(0.0);
                    let _ = tx.send(());
                }
                Ok(Cmd::Peek(va, len, tx)) => {
                    let mut b = vec![0u8; len.min(1 << 20)];
                    let n = self.read_virtual(va, &mut b);
                    let _ = tx.send((n == b.len()).then_some(b));
                }
                Ok(Cmd::Silent(on, done)) => {
                    self.silent = on;
                    let _ = done.send(());
                }
                Ok(Cmd::Emit(ev, done)) => {
                    let sent = self.emit(ev);
                    let _ = done.send(sent);
                }
                Err(TryRecvError::Empty) => {}
            }
            if self.silent_until.is_some_and(|t| Instant::now() >= t) {
                self.silent_until = None;
            }
            // The machine runs whether or not the link works.
            self.tick();
            if self.is_silent() {
                // Nothing goes out; whatever comes in is lost.
                if self.sock.recv_from(&mut buf).is_ok() {
                    self.stat(|s| s.ignored_while_silent += 1);
                }
                continue;
            }
            self.flush_outbox();
            if Instant::now() >= next_offer {
                self.offer();
                next_offer = Instant::now() + self.cfg.offer_interval;
            }
            self.flush_held();
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(_) => continue,
            };
            let wire = buf[..n].to_vec();
            self.inbound(wire, from);
        }
        SimEnd {
            machine: self.m,
            runtime: self.rt,
        }
    }

    /// Let the machine run for the real time since the last tick.
    fn tick(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_tick);
        self.last_tick = now;
        if self.run != Run::Running {
            return;
        }
        let Some(rt) = self.rt.as_mut() else {
            return;
        };
        self.sim_ns += (dt.as_secs_f64() * self.cfg.speed * 1e9) as u64;
        let stop = rt.advance(&mut self.m, self.sim_ns);
        for text in rt.take_prints() {
            let mut d = DebugIo {
                api: api_number::PRINT_STRING,
                processor_level: 6,
                processor: 0,
                args: [0; 8],
                data: text.into_bytes(),
            };
            d.args[..4].copy_from_slice(&(d.data.len() as u32).to_le_bytes());
            self.outbox.push_back((PacketType::DebugIo, d.to_bytes()));
            self.stat(|s| s.prints_sent += 1);
        }
        let sim_ns = self.sim_ns;
        self.stat(|s| s.sim_ns = sim_ns);
        if let Some(stop) = stop {
            self.stopped_cpu = stop.cpu as u16;
            self.pc = stop.pc;
            let bugchecked = matches!(stop.kind, StopKind::BugCheck(_));
            self.stat(|s| {
                s.stops += 1;
                s.bugchecked |= bugchecked;
            });
            let mut stream = [0u8; 16];
            self.read_virtual(stop.pc, &mut stream);
            let cpus = self.m.truth.cpus.max(1);
            let sc = StateChange::breakpoint(stop.cpu as u16, cpus, stop.thread, stop.pc, &stream);
            // After the prints before it; sent again on RESEND while stopped.
            let bytes = sc.to_bytes();
            self.set_run(Run::Stopped);
            // Known (with its packet id) once flush_outbox sends it.
            self.stop_report = None;
            self.outbox.push_back((PacketType::StateChange64, bytes));
            self.stop_queued = true;
        }
    }

    /// Send the next queued data packet once nothing waits for an ACK.
    fn flush_outbox(&mut self) {
        if self.pending.is_some() || self.data_key.is_none() {
            return;
        }
        if let Some((kind, data)) = self.outbox.pop_front() {
            if kind == PacketType::StateChange64 {
                self.stop_queued = false;
                self.send_data(kind, data.clone());
                // Sent again, with the same id, on RESEND while stopped.
                self.stop_report = self.pending.as_ref().map(|p| (p.id, data));
            } else {
                self.send_data(kind, data);
            }
        }
    }

    fn reboot(&mut self) {
        self.identity = std::array::from_fn(|_| self.rng.u8(..));
        self.data_key = None;
        self.pending = None;
        self.last_exec = None;
        self.executed.clear();
        self.next_id = 0;
        self.seq = 1;
        self.set_run(Run::Running);
        self.boot_requests = 0;
        // Nothing of the old boot is still to be said.
        self.outbox.clear();
        self.stop_queued = false;
        if let Some(rt) = self.rt.as_mut() {
            rt.resume();
        }
    }

    fn is_silent(&self) -> bool {
        self.silent || self.silent_until.is_some()
    }

    fn set_run(&mut self, run: Run) {
        if run == Run::Running {
            self.stop_report = None;
        }
        let running = run == Run::Running;
        self.run = run;
        self.stat(|s| s.running = running);
    }

    /// Stop with `sc` and report it.
    fn stop_with(&mut self, sc: StateChange) {
        let bytes = sc.to_bytes();
        self.set_run(Run::Stopped);
        self.send_data(PacketType::StateChange64, bytes.clone());
        self.stop_report = self.pending.as_ref().map(|p| (p.id, bytes));
    }

    /// A test's event, raised by the running target.
    fn emit(&mut self, ev: SimEvent) -> bool {
        if self.run != Run::Running || self.data_key.is_none() {
            return false;
        }
        let cpus = self.m.truth.cpus.max(1);
        let on = |p: u16| usize::from(p) < cpus as usize;
        match ev {
            SimEvent::Breakpoint { processor, pc } if on(processor) => {
                let mut stream = [0u8; 16];
                self.read_virtual(pc, &mut stream);
                context::set_reg(&mut self.contexts[processor as usize], context::RIP, pc);
                let sc = StateChange::breakpoint(processor, cpus, STOPPED_THREAD, pc, &stream);
                self.stop_with(sc);
            }
            SimEvent::Exception {
                processor,
                pc,
                code,
                parameters,
                first_chance,
            } if on(processor) => {
                let mut stream = [0u8; 16];
                self.read_virtual(pc, &mut stream);
                context::set_reg(&mut self.contexts[processor as usize], context::RIP, pc);
                let sc = StateChange::exception(
                    processor,
                    cpus,
                    STOPPED_THREAD,
                    pc,
                    code,
                    &parameters,
                    first_chance,
                    &stream,
                );
                self.stop_with(sc);
            }
            SimEvent::LoadSymbols {
                processor,
                base,
                size,
                path,
            } if on(processor) => {
                let sc = StateChange::load_symbols(
                    processor,
                    cpus,
                    STOPPED_THREAD,
                    self.pc,
                    base,
                    size,
                    &path,
                );
                self.stop_with(sc);
            }
            SimEvent::Print { processor, text } => {
                let io = DebugIo::print(processor, &text);
                self.send_data(PacketType::DebugIo, io.to_bytes());
            }
            _ => return false,
        }
        self.stat(|s| s.events_sent += 1);
        true
    }

    fn offer(&mut self) {
        let v6 = |a: SocketAddr| match a {
            SocketAddr::V4(a) => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0),
            SocketAddr::V6(a) => a,
        };
        let me = self
            .sock
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let debugger = if self.data_key.is_some() {
            v6(self.peer)
        } else {
            SocketAddrV6::new(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 0, 0, 0)
        };
        let payload = Offer::build(
            self.offer_counter,
            &self.identity,
            v6(me),
            v6(self.cfg.host),
            debugger,
        );
        self.offer_counter = self.offer_counter.wrapping_add(1);
        // The offer's sequence number looks time-based (+3 per 3 s).
        self.offer_seq += 3;
        let d = Datagram::new(
            self.cfg.version,
            Channel::Control,
            self.offer_seq,
            false,
            &payload,
        );
        if let Ok(wire) = d.seal(&self.cfg.key, None) {
            self.stat(|s| s.offers_sent += 1);
            let to = self.cfg.host;
            self.transmit(wire, to);
        }
    }

    /// Inbound faults, then handling.
    fn inbound(&mut self, wire: Vec<u8>, from: SocketAddr) {
        let f = self.cfg.faults;
        if self.rng.f64() < f.drop {
            self.stat(|s| s.faults_dropped += 1);
            return;
        }
        if self.held_in.is_none() && self.rng.f64() < f.reorder {
            self.stat(|s| s.faults_reordered += 1);
            self.held_in = Some((Instant::now(), wire, from));
            return;
        }
        let dup = self.rng.f64() < f.duplicate;
        self.handle(&wire, from);
        if dup {
            self.stat(|s| s.faults_duplicated += 1);
            self.handle(&wire, from);
        }
        if let Some((_, w, from)) = self.held_in.take() {
            self.handle(&w, from);
        }
    }

    fn flush_held(&mut self) {
        if let Some((t, _, _)) = &self.held_in
            && t.elapsed() > HOLD
            && let Some((_, w, from)) = self.held_in.take()
        {
            self.handle(&w, from);
        }
        if let Some((t, _)) = &self.held_out
            && t.elapsed() > HOLD
            && let Some((_, w)) = self.held_out.take()
        {
            let _ = self.sock.send_to(&w, self.peer);
        }
    }

    /// Outbound faults, then the wire.
    fn transmit(&mut self, mut wire: Vec<u8>, to: SocketAddr) {
        let f = self.cfg.faults;
        if self.rng.f64() < f.drop {
            self.stat(|s| s.faults_dropped += 1);
            return;
        }
        if self.rng.f64() < f.corrupt {
            let i = self.rng.usize(4..wire.len());
            wire[i] ^= 1 << self.rng.u8(0..8);
            self.stat(|s| s.faults_corrupted += 1);
        }
        if self.held_out.is_none() && self.rng.f64() < f.reorder {
            self.stat(|s| s.faults_reordered += 1);
            self.held_out = Some((Instant::now(), wire));
            return;
        }
        let _ = self.sock.send_to(&wire, to);
        if self.rng.f64() < f.duplicate {
            self.stat(|s| s.faults_duplicated += 1);
            let _ = self.sock.send_to(&wire, to);
        }
        if let Some((_, w)) = self.held_out.take() {
            let _ = self.sock.send_to(&w, to);
        }
    }

    /// Send a data-channel payload.
    fn send(&mut self, p: &Payload) {
        let Some(dk) = self.data_key.clone() else {
            return;
        };
        let bytes = p.to_bytes();
        let d = Datagram::new(self.cfg.version, Channel::Data, self.seq, false, &bytes);
        self.seq += 1;
        if let Ok(wire) = d.seal(&self.cfg.key, Some(&dk)) {
            let peer = self.peer;
            self.transmit(wire, peer);
        }
        if let Payload::Data(_) = p
            && self.rng.f64() < self.cfg.faults.forge
        {
            self.forge();
        }
    }

    /// A datagram that claims to be the target's reply with other bytes
    /// in it, but was made without the HMAC key: its tag is random.
    fn forge(&mut self) {
        let Some(dk) = self.data_key.clone() else {
            return;
        };
        let mut reply = Manipulate::read(Space::Virtual, 0, self.pc, 64).reply(0, vec![0x41; 64]);
        reply.set_actual(64);
        let id = self.pending.as_ref().map_or(self.next_id, |p| p.id);
        let p = Payload::Data(KdPacket {
            kind: PacketType::StateManipulate,
            id,
            data: reply.to_bytes(),
        });
        let d = Datagram::new(
            self.cfg.version,
            Channel::Data,
            self.seq,
            false,
            &p.to_bytes(),
        );
        if let Ok(mut wire) = d.seal(&self.cfg.key, Some(&dk)) {
            let n = wire.len();
            for b in &mut wire[n - 16..] {
                *b = self.rng.u8(..);
            }
            let _ = self.sock.send_to(&wire, self.peer);
            self.stat(|s| s.forged_sent += 1);
        }
    }

    fn send_control(&mut self, kind: PacketType, id: u32) {
        self.send(&Payload::Control { kind, id });
    }

    /// Send a new data packet and keep it until ACKed.
    fn send_data(&mut self, kind: PacketType, data: Vec<u8>) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(2) & 0x7FFF_FFFF;
        let payload = Payload::Data(KdPacket { kind, id, data });
        self.pending = Some(Pending {
            id,
            payload: payload.to_bytes(),
        });
        self.send(&payload);
    }

    /// RESEND and RESET: the pending packet again, or, when a stopped
    /// target has none, its state change (Windows' KdpSendWaitContinue
    /// sends the state change again when KdReceivePacket says the
    /// debugger needs a resend).
    fn resend_pending_or_stop(&mut self) {
        if self.pending.is_some() {
            self.resend_pending();
        } else if self.run == Run::Stopped
            && !self.stop_queued
            && let Some((id, data)) = self.stop_report.clone()
        {
            self.stat(|s| s.stops_resent += 1);
            let payload = Payload::Data(KdPacket {
                kind: PacketType::StateChange64,
                id,
                data,
            });
            self.pending = Some(Pending {
                id,
                payload: payload.to_bytes(),
            });
            self.send(&payload);
        }
    }

    fn resend_pending(&mut self) {
        if let Some(p) = &self.pending
            && let Ok(payload) = Payload::parse(&p.payload)
        {
            self.send(&payload);
        }
    }

    fn handle(&mut self, wire: &[u8], from: SocketAddr) {
        let d = match datagram::open(wire, &self.cfg.key, self.data_key.as_ref()) {
            Ok(d) => d,
            Err(DatagramError::BadTag) => {
                self.stat(|s| s.dropped_bad_tag += 1);
                return;
            }
            Err(_) => {
                self.stat(|s| s.dropped_other += 1);
                return;
            }
        };
        if !d.from_host {
            self.stat(|s| s.dropped_other += 1);
            return;
        }
        match d.channel {
            Channel::Control => self.on_response(&d, from),
            Channel::Data => match Payload::parse(d.payload()) {
                Ok(p) => self.on_payload(p),
                Err(_) => {
                    // ReactOS kddll asks again on a checksum or length
                    // error.
                    self.stat(|s| s.dropped_other += 1);
                    self.send_control(PacketType::Resend, 0);
                }
            },
        }
    }

    /// A response re-keys the data channel at any time (kdnet.md §3.3).
    fn on_response(&mut self, d: &Datagram, from: SocketAddr) {
        let Ok(r) = Response::parse(d.payload()) else {
            self.stat(|s| s.dropped_other += 1);
            return;
        };
        if r.identity() != self.identity {
            self.stat(|s| s.dropped_other += 1);
            return;
        }
        self.data_key = Some(r.data_key(&self.cfg.key));
        self.peer = from;
        self.seq = 1;
        // A new key is a new debugger (or the same one starting over):
        // its packet ids are not the old one's.
        self.last_exec = None;
        self.executed.clear();
        self.stat(|s| s.handshakes += 1);
        // The hello: the host's IPv4 address, bytes reversed.
        let mut hello = [0u8; 12];
        if let SocketAddr::V4(a) = from {
            let mut o = a.ip().octets();
            o.reverse();
            hello[8..].copy_from_slice(&o);
        }
        self.send(&Payload::Hello(hello));
    }

    fn on_payload(&mut self, p: Payload) {
        match p {
            Payload::BreakIn => {
                if self.run == Run::Running {
                    self.stat(|s| s.breakins += 1);
                    self.stopped_cpu = 0;
                    let thread = match self.rt.as_mut() {
                        Some(rt) => {
                            let s = rt.break_in(&mut self.m, 0);
                            self.pc = s.pc;
                            s.thread
                        }
                        None => STOPPED_THREAD,
                    };
                    let mut stream = [0u8; 16];
                    self.read_virtual(self.pc, &mut stream);
                    context::set_reg(&mut self.contexts[0], context::RIP, self.pc);
                    let sc = StateChange::breakpoint(
                        0,
                        self.m.truth.cpus.max(1),
                        thread,
                        self.pc,
                        &stream,
                    );
                    if self.rt.is_some() {
                        let bytes = sc.to_bytes();
                        self.set_run(Run::Stopped);
                        self.stop_report = None;
                        self.outbox.push_back((PacketType::StateChange64, bytes));
                        self.stop_queued = true;
                        self.flush_outbox();
                    } else {
                        self.stop_with(sc);
                    }
                } else {
                    self.resend_pending();
                }
            }
            Payload::Control { kind, id } => match kind {
                PacketType::Acknowledge if self.pending.as_ref().is_some_and(|p| p.id == id) => {
                    self.pending = None;
                }
                PacketType::Resend => self.resend_pending_or_stop(),
                PacketType::Reset => {
                    self.stat(|s| s.resets_received += 1);
                    let cur = self.pending.as_ref().map_or(self.next_id, |p| p.id);
                    self.send_control(PacketType::Reset, cur);
                    self.resend_pending_or_stop();
                }
                _ => {}
            },
            Payload::Data(p) => self.on_request(p),
            Payload::Hello(_) => {}
        }
    }

    fn on_request(&mut self, p: KdPacket) {
        if p.kind != PacketType::StateManipulate {
            self.send_control(PacketType::Acknowledge, p.id);
            return;
        }
        if self.last_exec == Some(p.id) {
            // A retransmission: ACK again, never execute twice; if its
            // reply is still unacknowledged, send that again too.
            self.stat(|s| s.duplicate_requests += 1);
            self.send_control(PacketType::Acknowledge, p.id);
            self.resend_pending();
            return;
        }
        if self.pending.is_some() {
            // Still waiting for the debugger's ACK (uncut #196).
            self.stat(|s| s.resends_sent += 1);
            self.send_control(PacketType::Resend, 0);
            return;
        }
        if self.run == Run::Running {
            self.send_control(PacketType::Acknowledge, p.id);
            return;
        }
        let Ok(req) = Manipulate::parse(&p.data) else {
            self.send_control(PacketType::Acknowledge, p.id);
            return;
        };
        if !self.executed.insert(p.id) {
            self.stat(|s| s.double_executions += 1);
        }
        self.last_exec = Some(p.id);
        self.stat(|s| s.requests_executed += 1);
        self.boot_requests += 1;
        // Executed before the ACK goes out so that the effects (and the
        // statistics) are in place when the debugger sees the ACK; the
        // wire order is still ACK, then reply.
        let reply = self.execute(&req);
        self.send_control(PacketType::Acknowledge, p.id);
        if let Some(reply) = reply {
            self.send_data(PacketType::StateManipulate, reply.to_bytes());
        }
        if let Some(m) = self.mishap
            && self.boot_requests >= m.after_requests
        {
            self.mishap = None;
            match m.kind {
                MishapKind::Reboot => self.reboot(),
                MishapKind::Silent(d) => self.silent_until = Some(Instant::now() + d),
            }
        }
    }

    fn execute(&mut self, req: &Manipulate) -> Option<Manipulate> {
        let fail = || Some(req.reply(status::UNSUCCESSFUL, Vec::new()));
        match req.call() {
            Call::Read {
                space,
                address,
                count,
                ..
            } => {
                let mut data = vec![0u8; count.min(MAX_TRANSFER) as usize];
                let n = match space {
                    Space::Virtual => self.read_virtual(address, &mut data),
                    Space::Physical => self.read_physical(address, &mut data),
                    Space::Control => self.read_control(req.processor, address, &mut data),
                };
                data.truncate(n);
                let st = if n == count as usize {
                    status::SUCCESS
                } else {
                    status::UNSUCCESSFUL
                };
                let mut r = req.reply(st, data);
                r.set_actual(n as u32);
                Some(r)
            }
            Call::Write {
                space: Space::Virtual,
                address,
                count,
                ..
            } => {
                let n = (count as usize).min(req.data.len());
                let written = self.write_virtual(address, &req.data[..n]);
                self.stat(|s| s.writes += 1);
                if let Some(rt) = self.rt.as_mut() {
                    rt.memory_written();
                }
                let st = if written == n {
                    status::SUCCESS
                } else {
                    status::UNSUCCESSFUL
                };
                let mut r = req.reply(st, Vec::new());
                r.set_actual(written as u32);
                Some(r)
            }
            Call::GetVersion(_) => {
                let t = &self.m.truth;
                // DebuggerDataList is &KdpDebuggerDataListHead on Windows,
                // whose Flink is the block. The kit links the block's
                // Header.List to itself (its manifests have no list-head
                // symbol), so the block is its own head: its Flink is
                // still the block.
                let v = Version {
                    major: 0x000F,
                    minor: t.build_number as u16,
                    protocol: 6,
                    secondary: 2,
                    flags: Version::FLAG_MP | Version::FLAG_DATA | Version::FLAG_PTR64,
                    machine: Version::MACHINE_AMD64,
                    max_packet_type: 12,
                    max_state_change: 3,
                    max_manipulate: 0x31,
                    simulation: 0,
                    kern_base: t.kernel.kern_base,
                    ps_loaded_module_list: t.kernel.ps_loaded_module_list,
                    debugger_data_list: t.kernel.kd_debugger_data_block,
                };
                let mut r = req.reply(status::SUCCESS, Vec::new());
                r.set_version(&v);
                Some(r)
            }
            Call::GetContext => match self.rt.as_ref() {
                Some(rt) if usize::from(req.processor) < rt.processors.len() => {
                    Some(req.reply(status::SUCCESS, rt.context(usize::from(req.processor))))
                }
                Some(_) => fail(),
                None => match self.contexts.get(usize::from(req.processor)) {
                    Some(c) => Some(req.reply(status::SUCCESS, c.clone())),
                    None => fail(),
                },
            },
            Call::SetContext { .. } if req.data.len() >= CONTEXT_LEN => {
                let ctx = &req.data[..CONTEXT_LEN];
                let ok = match self.rt.as_mut() {
                    Some(rt) => rt.set_context(usize::from(req.processor), ctx),
                    None => match self.contexts.get_mut(usize::from(req.processor)) {
                        Some(c) => {
                            *c = ctx.to_vec();
                            true
                        }
                        None => false,
                    },
                };
                if !ok {
                    return fail();
                }
                self.stat(|s| s.set_contexts += 1);
                Some(req.reply(status::SUCCESS, Vec::new()))
            }
            Call::Continue { status }
            | Call::Continue2(pooldump_kdnet::api::Continue2 { status, .. }) => {
                self.stat(|s| {
                    s.continues += 1;
                    s.last_continue_status = Some(status);
                });
                if let Some(rt) = self.rt.as_mut() {
                    rt.resume();
                    if rt.is_dead() {
                        // A bug-checked machine never runs again.
                        return None;
                    }
                }
                self.set_run(Run::Running);
                self.last_tick = Instant::now();
                None
            }
            _ => fail(),
        }
    }

    /// Virtual read as the CPU sees memory: stops at the first page that
    /// is not present. Returns the bytes read.
    fn read_virtual(&self, va: u64, out: &mut [u8]) -> usize {
        let mut done = 0;
        while done < out.len() {
            let cur = va.wrapping_add(done as u64);
            let n = (0x1000 - (cur & 0xFFF) as usize).min(out.len() - done);
            let Some(pa) = self.m.asp.translate(&self.m.mem, cur) else {
                break;
            };
            self.m.mem.read(pa, &mut out[done..done + n]);
            done += n;
        }
        done
    }

    fn write_virtual(&mut self, va: u64, data: &[u8]) -> usize {
        let mut done = 0;
        while done < data.len() {
            let cur = va.wrapping_add(done as u64);
            let n = (0x1000 - (cur & 0xFFF) as usize).min(data.len() - done);
            let Some(pa) = self.m.asp.translate(&self.m.mem, cur) else {
                break;
            };
            self.m.mem.write(pa, &data[done..done + n]);
            done += n;
        }
        done
    }

    /// Physical read: RAM only (frames never touched read as zeros).
    fn read_physical(&self, pa: u64, out: &mut [u8]) -> usize {
        let mut done = 0;
        while done < out.len() {
            let cur = pa.wrapping_add(done as u64);
            if !self.m.mem.is_ram(cur >> 12) {
                break;
            }
            let n = (0x1000 - (cur & 0xFFF) as usize).min(out.len() - done);
            self.m.mem.read(cur, &mut out[done..done + n]);
            done += n;
        }
        done
    }

    /// x64 control space of a processor: 0 KPCR, 1 KPRCB, 2
    /// KSPECIAL_REGISTERS, 3 KTHREAD.
    fn read_control(&self, processor: u16, item: u64, out: &mut [u8]) -> usize {
        if processor as u32 >= self.m.truth.cpus.max(1) {
            return 0;
        }
        let prcb = self
            .m
            .truth
            .symbols
            .get("KiProcessorBlock")
            .map(|&kpb| {
                let mut b = [0u8; 8];
                self.read_virtual(kpb + 8 * processor as u64, &mut b);
                u64::from_le_bytes(b)
            })
            .unwrap_or(0);
        let bytes = match item {
            0 => prcb.wrapping_sub(0x180).to_le_bytes().to_vec(),
            1 => prcb.to_le_bytes().to_vec(),
            2 => {
                let mut s = vec![0u8; SPECIAL_REGISTERS_LEN as usize];
                s[0..8].copy_from_slice(&0x8005_0033u64.to_le_bytes());
                s[SPECIAL_REGISTERS_CR3..SPECIAL_REGISTERS_CR3 + 8]
                    .copy_from_slice(&self.m.truth.kernel.dtb.to_le_bytes());
                s[0x18..0x20].copy_from_slice(&0x0035_06F8u64.to_le_bytes());
                s
            }
            3 => self
                .rt
                .as_ref()
                .and_then(|rt| rt.processors.get(processor as usize))
                .map_or(STOPPED_THREAD, |p| p.thread)
                .to_le_bytes()
                .to_vec(),
            _ => return 0,
        };
        let n = out.len().min(bytes.len());
        out[..n].copy_from_slice(&bytes[..n]);
        n
    }
}
