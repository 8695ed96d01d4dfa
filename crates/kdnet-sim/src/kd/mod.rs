//! The target's thread: the machine and its kernel debugger (KD), with
//! the KDNET association as the target keeps it, and the loop that runs
//! the machine on its clock, offers, and answers what arrives, until told
//! to stop or its lifetime ends.
//!
//! `wire.rs` is the link (offers, faults, framing, ACKs and resends, what
//! each packet means), `execute.rs` the manipulate requests and the
//! machine's memory as the debugger sees it.

mod execute;
mod wire;

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pooldump_kdnet::api::{CONTEXT_LEN, DebugIo, StateChange, StoppedAt, api_number, context};
use pooldump_kdnet::control::IDENTITY_LEN;
use pooldump_kdnet::datagram::{DataKey, MAX_LEN};
use pooldump_kdnet::packet::PacketType;
use pooldump_kit::Machine;
use pooldump_kit::run::{RunTruth, Runtime, StopKind};

use crate::config::{Mishap, SimConfig};
use crate::report::{SimEnd, SimEvent, SimStats};

pub(crate) enum Cmd {
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

pub(crate) struct Target {
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
    pub(crate) fn new(
        m: Machine,
        cfg: SimConfig,
        sock: UdpSocket,
        stats: Arc<Mutex<SimStats>>,
    ) -> Self {
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

    pub(crate) fn run(mut self, rx: Receiver<Cmd>) -> SimEnd {
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
            let at = StoppedAt {
                processor: stop.cpu as u16,
                number_processors: cpus,
                thread: stop.thread,
                pc: stop.pc,
            };
            let sc = StateChange::breakpoint(at, &stream);
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
        let stopped_pc = (!running).then_some(self.pc);
        self.stat(|s| {
            s.running = running;
            s.stopped_pc = stopped_pc;
        });
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
        let at = |processor: u16, pc: u64| StoppedAt {
            processor,
            number_processors: cpus,
            thread: STOPPED_THREAD,
            pc,
        };
        match ev {
            SimEvent::Breakpoint { processor, pc } if on(processor) => {
                self.pc = pc;
                let mut stream = [0u8; 16];
                self.read_virtual(pc, &mut stream);
                context::set_reg(&mut self.contexts[processor as usize], context::RIP, pc);
                let sc = StateChange::breakpoint(at(processor, pc), &stream);
                self.stop_with(sc);
            }
            SimEvent::Exception {
                processor,
                pc,
                code,
                parameters,
                first_chance,
            } if on(processor) => {
                self.pc = pc;
                let mut stream = [0u8; 16];
                self.read_virtual(pc, &mut stream);
                context::set_reg(&mut self.contexts[processor as usize], context::RIP, pc);
                let sc = StateChange::exception(
                    at(processor, pc),
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
                let sc = StateChange::load_symbols(at(processor, self.pc), base, size, &path);
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
}
