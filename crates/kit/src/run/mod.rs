//! The machine running: processors that execute the drivers' and nt's
//! compiled code, a workload of driver work items on a simulated clock,
//! the pool changing under them, and what a debugger sees when the
//! machine stops.
//!
//! ```no_run
//! use pooldump_kit::run::{Runtime, Workload};
//! use pooldump_kit::{Machine, NtBuild, Scenario};
//! let mut m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 7));
//! let mut rt = Runtime::new(&mut m, Workload::leak());
//! // Ten simulated minutes; stops early if the machine breaks.
//! let stop = rt.advance(&mut m, 10 * 60 * 1_000_000_000);
//! println!("{stop:?} {:?}", rt.truth.tags);
//! ```
//!
//! What runs is real code: each work item starts on a processor's worker
//! thread at nt!KiStartSystemThread, which calls PspSystemThreadStartup,
//! ExpWorkerThread and the driver's worker routine; the drivers call the
//! pool through their import tables, and nt's pool entry points check
//! PoolHitTag where the real builds do (legacy: DbgBreakPoint from
//! ExpInsertPoolTracker/ExpRemovePoolTracker; segment heap: an inline int3
//! in ExAllocateHeapPool/ExFreeHeapPool). Only the routines nt.c marks
//! HOST are done here in Rust: carving and releasing blocks, charging the
//! current processor's tracker row, KeBugCheckEx and DbgPrint. A page fault
//! is delivered to nt!KiPageFault with a machine frame, as the CPU does.
//!
//! This file holds the [`Runtime`]: the processors, the clock and the
//! work queue, and running a job until it stops. `host.rs` performs nt's
//! HOST routines, `truth.rs` holds the stops and the ground truth a run
//! records, `context.rs` the CONTEXT record; `cpu` executes instructions,
//! `pool.rs` is the pool under the running machine, `workload.rs` what it
//! runs.

mod context;
pub mod cpu;
mod host;
mod pool;
mod truth;
pub mod workload;

use std::collections::{HashMap, VecDeque};

pub use context::{CONTEXT_LEN, context_bytes};
pub use cpu::{Cpu, Exit, Fault, Regs, ShadowFrame};
pub use pool::{LiveBlock, RunPool};
pub use truth::{
    BugCheck, HitRecord, PoolOp, RunTruth, Site, SiteCount, Stop, StopKind, TruthFrame,
};
pub use workload::{WorkItem, Workload};

use crate::machine::Machine;
use crate::paging::Prot;
use crate::phys::{PAGE64, page_pieces};
use context::apply_context;
use cpu::{Bus, RCX, RDX, RSP};
use truth::frames_of;

/// Instructions one work item may execute before the machine calls it a
/// hang (DPC_WATCHDOG_VIOLATION).
const BUDGET: u64 = 2_000_000;
/// Kernel stacks: KERNEL_STACK_SIZE (24 KiB), with an unmapped guard page
/// below.
const STACK_PAGES: u64 = 6;
/// nt's routines the simulator performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    AllocateBlock,
    ReleaseBlock,
    ChargeTracker,
    BugCheck,
    DbgPrint,
}

#[derive(Debug, Clone, Copy)]
struct PendingOp {
    op: PoolOp,
    tag: u32,
    bytes: u64,
}

#[derive(Debug, Clone)]
struct Job {
    /// The workload item this job runs.
    #[allow(dead_code)]
    item: usize,
    executed: u64,
    pending: Option<PendingOp>,
}

/// One processor and its worker thread.
#[derive(Debug, Clone)]
pub struct Processor {
    pub cpu: Cpu,
    /// The worker thread's KTHREAD (what a stop reports).
    pub thread: u64,
    pub kpcr: u64,
    /// The stack's top (exclusive): the work item and its request sit
    /// just below it.
    pub stack_top: u64,
    job: Option<Job>,
}

struct NtInfo {
    base: u64,
    end: u64,
    start_thread: u64,
    worker_thread: u64,
    page_fault: u64,
    break_with_status: u64,
    pool_hit_tag: u64,
}

struct DriverRt {
    name: String,
    base: u64,
    end: u64,
    routine: u64,
    /// Its routines allocate for their caller (ndis.sys).
    wrapper: bool,
    /// KMDF's framework (Wdf01000.sys).
    framework: bool,
}

/// The running machine's state, beside the machine it runs.
pub struct Runtime {
    workload: Workload,
    schedule: workload::Schedule,
    queue: VecDeque<usize>,
    clock_ns: u64,
    pub processors: Vec<Processor>,
    next_cpu: usize,
    pub pool: RunPool,
    host: HashMap<u64, Host>,
    nt: NtInfo,
    drivers: Vec<DriverRt>,
    stop: Option<Stop>,
    /// DbgPrint output not yet taken by [`Runtime::take_prints`].
    prints: Vec<String>,
    pub truth: RunTruth,
}

/// The CPU's view of memory: the machine's page tables, with their
/// protections.
struct MachineBus<'a> {
    m: &'a mut Machine,
}

impl Bus for MachineBus<'_> {
    fn read(&mut self, va: u64, out: &mut [u8], fetch: bool) -> Result<(), Fault> {
        for (cur, r) in page_pieces(va, out.len()) {
            let fault = Fault {
                va: cur,
                write: false,
                fetch,
            };
            let (pa, _, x) = self.m.asp.translate_access(&self.m.mem, cur).ok_or(fault)?;
            if fetch && !x {
                return Err(fault);
            }
            self.m.mem.read(pa, &mut out[r]);
        }
        Ok(())
    }

    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), Fault> {
        for (cur, r) in page_pieces(va, data.len()) {
            let fault = Fault {
                va: cur,
                write: true,
                fetch: false,
            };
            let (pa, w, _) = self.m.asp.translate_access(&self.m.mem, cur).ok_or(fault)?;
            if !w {
                return Err(fault);
            }
            self.m.mem.write(pa, &data[r]);
        }
        Ok(())
    }
}

fn sym(m: &Machine, name: &str) -> u64 {
    m.sym_va(name)
        .unwrap_or_else(|| panic!("{}: nt has no {name}", m.m.family))
}

/// The synthetic drivers that are loaded, with their worker routines.
fn loaded_drivers(m: &Machine) -> Vec<DriverRt> {
    let mut drivers = Vec::new();
    for d in m.drivers() {
        if let Some(md) = m
            .truth
            .kernel
            .modules
            .iter()
            .find(|md| md.base_name.eq_ignore_ascii_case(&d.info.file))
        {
            drivers.push(DriverRt {
                name: d.info.file.clone(),
                base: md.base,
                end: md.base + md.size,
                routine: md.base + d.info.routine_rva,
                wrapper: d.info.wrapper,
                framework: d.info.framework,
            });
        }
    }
    drivers
}

/// One processor per CPU, each with a worker thread, its kernel stack
/// and its KPCR, idle at `break_with_status` (the break-in int3).
fn start_processors(m: &mut Machine, break_with_status: u64) -> Vec<Processor> {
    let kprcb = m.sym_va("KiProcessorBlock");
    let nx = m.nx_kind();
    let mut processors = Vec::new();
    for i in 0..m.scenario.cpus.max(1) as u64 {
        // A guard page, then the stack; the KTHREAD on a page of its own.
        let base = m.nonpaged_reserve((STACK_PAGES + 1) * PAGE64);
        m.commit(base + PAGE64, STACK_PAGES, Prot::Data);
        let stack_top = base + (STACK_PAGES + 1) * PAGE64;
        let thread = m.pool_pages(nx, 1, 1) + 0x80;
        let kpcr = kprcb
            .map(|k| m.asp.read_u64(&m.mem, k + 8 * i).wrapping_sub(0x180))
            .unwrap_or(0);
        let mut cpu = Cpu::new();
        cpu.regs.gs_base = kpcr;
        cpu.regs.gpr[RSP] = stack_top - 0x78;
        cpu.regs.rip = break_with_status;
        processors.push(Processor {
            cpu,
            thread,
            kpcr,
            stack_top,
            job: None,
        });
    }
    processors
}

impl Runtime {
    /// Get `m` ready to run `workload`: a worker thread and kernel stack per
    /// processor, nt's HOST routines and the drivers' worker routines
    /// located. Nothing runs until [`Runtime::advance`].
    pub fn new(m: &mut Machine, workload: Workload) -> Self {
        let mut host = HashMap::new();
        for (name, h) in [
            ("ExpPoolAllocateBlock", Host::AllocateBlock),
            ("ExpPoolReleaseBlock", Host::ReleaseBlock),
            ("ExpPoolChargeTracker", Host::ChargeTracker),
            ("KeBugCheckEx", Host::BugCheck),
            ("DbgPrint", Host::DbgPrint),
        ] {
            host.insert(sym(m, name), h);
        }
        let nt = NtInfo {
            base: m.kern_base,
            end: m.kern_base + m.truth.kernel.size_of_image,
            start_thread: sym(m, "KiStartSystemThread"),
            worker_thread: sym(m, "ExpWorkerThread"),
            page_fault: sym(m, "KiPageFault"),
            break_with_status: sym(m, "RtlpBreakWithStatusInstruction"),
            pool_hit_tag: sym(m, "PoolHitTag"),
        };
        let drivers = loaded_drivers(m);
        let processors = start_processors(m, nt.break_with_status);
        Self {
            schedule: workload::Schedule::new(&workload),
            workload,
            queue: VecDeque::new(),
            clock_ns: 0,
            processors,
            next_cpu: 0,
            pool: RunPool::default(),
            host,
            nt,
            drivers,
            stop: None,
            prints: Vec::new(),
            truth: RunTruth::default(),
        }
    }

    /// Simulated nanoseconds since the machine started running.
    pub fn clock_ns(&self) -> u64 {
        self.clock_ns
    }

    /// Where the machine is stopped, if it is.
    pub fn stopped(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    /// The machine bug-checked: it never runs again.
    pub fn is_dead(&self) -> bool {
        self.truth.bugcheck.is_some()
    }

    /// DbgPrint lines since the last call.
    pub fn take_prints(&mut self) -> Vec<String> {
        std::mem::take(&mut self.prints)
    }

    /// The debugger changed code or data: decoded instructions may be
    /// stale.
    pub fn memory_written(&mut self) {
        for p in &mut self.processors {
            p.cpu.flush_code_cache();
        }
    }

    /// Run work items due up to `until_ns` (simulated) on the clock. Returns
    /// at the first stop; the stopped item finishes after
    /// [`Runtime::resume`].
    pub fn advance(&mut self, m: &mut Machine, until_ns: u64) -> Option<Stop> {
        if self.stop.is_some() || self.is_dead() {
            return self.stop.clone();
        }
        // An item interrupted by a stop finishes first.
        if let Some(i) = self.processors.iter().position(|p| p.job.is_some())
            && let Some(s) = self.run_job(m, i)
        {
            return Some(s);
        }
        loop {
            if let Some(item) = self.queue.pop_front() {
                let cpu = self.next_cpu % self.processors.len();
                self.next_cpu += 1;
                self.start_job(m, cpu, item);
                if let Some(s) = self.run_job(m, cpu) {
                    return Some(s);
                }
                continue;
            }
            let Some((item, t)) = self.schedule.pop_due(&self.workload, until_ns) else {
                break;
            };
            self.clock_ns = self.clock_ns.max(t);
            m.set_clock(self.clock_ns);
            for _ in 0..self.workload.items[item].burst.max(1) {
                self.queue.push_back(item);
            }
        }
        self.clock_ns = self.clock_ns.max(until_ns);
        m.set_clock(self.clock_ns);
        None
    }

    /// Continue after a stop (the debugger's Continue). The stopped
    /// processor goes on from its registers as they are now (a debugger
    /// that wants to step over an int3 sets RIP first, as WinDbg does). A
    /// bug-checked machine stays stopped.
    pub fn resume(&mut self) {
        if !self.is_dead() {
            self.stop = None;
        }
    }

    /// Continue as WinDbg does after a hard-coded `int3`: when processor
    /// `cpu` stopped on one, its RIP is stepped past it first.
    pub fn resume_past_int3(&mut self, m: &Machine, cpu: usize) {
        let mut ctx = self.context(cpu);
        let rip = u64::from_le_bytes(ctx[0xF8..0x100].try_into().expect("8 bytes"));
        let mut b = [0u8; 1];
        m.asp.read(&m.mem, rip, &mut b);
        if b[0] == 0xCC {
            ctx[0xF8..0x100].copy_from_slice(&(rip + 1).to_le_bytes());
            assert!(self.set_context(cpu, &ctx), "processor {cpu} exists");
        }
        self.resume();
    }

    /// A debugger's break-in: the machine stops where the clock interrupt's
    /// KdPollBreakIn sends it, the int3 of RtlpBreakWithStatusInstruction,
    /// on processor `cpu`'s idle worker thread (work items never span a
    /// stop, so none is interrupted).
    pub fn break_in(&mut self, m: &mut Machine, cpu: usize) -> Stop {
        if let Some(s) = &self.stop {
            return s.clone();
        }
        let cpu = cpu.min(self.processors.len() - 1);
        let p = &mut self.processors[cpu];
        if p.job.is_none() {
            let gs = p.cpu.regs.gs_base;
            p.cpu.regs = Regs::default();
            p.cpu.regs.gs_base = gs;
            p.cpu.regs.gpr[RSP] = p.stack_top - 0x78;
            p.cpu.regs.rip = self.nt.break_with_status;
            p.cpu.shadow.clear();
            m.asp.write_u64(&mut m.mem, p.stack_top - 0x78, 0);
        }
        let s = Stop {
            cpu: cpu as u32,
            thread: p.thread,
            pc: p.cpu.regs.rip,
            kind: StopKind::Breakpoint,
        };
        self.stop = Some(s.clone());
        s
    }

    /// The CONTEXT record of processor `cpu` (x64, 0x4D0 bytes).
    pub fn context(&self, cpu: usize) -> Vec<u8> {
        let regs = match (&self.stop, self.processors.get(cpu)) {
            (
                Some(Stop {
                    kind: StopKind::BugCheck(b),
                    ..
                }),
                _,
            ) if b.cpu as usize == cpu => &b.context,
            (_, Some(p)) => &p.cpu.regs,
            _ => return vec![0; CONTEXT_LEN],
        };
        context_bytes(regs)
    }

    /// Replace processor `cpu`'s registers from a CONTEXT record.
    pub fn set_context(&mut self, cpu: usize, ctx: &[u8]) -> bool {
        let Some(p) = self.processors.get_mut(cpu) else {
            return false;
        };
        apply_context(&mut p.cpu.regs, ctx)
    }

    fn driver_of(&self, va: u64) -> Option<&DriverRt> {
        self.drivers.iter().find(|d| d.base <= va && va < d.end)
    }

    fn in_nt(&self, va: u64) -> bool {
        self.nt.base <= va && va < self.nt.end
    }

    /// The call site on `p`'s stack: the first return address outside nt
    /// and outside a driver that allocates for its caller (ndis.sys); where
    /// that is KMDF's framework, the driver whose code called the framework
    /// (the first address past the framework's, if that is not nt's: work
    /// the framework does from nt's threads stays the framework's).
    fn site(&self, p: usize) -> Option<Site> {
        let cpu = &self.processors[p].cpu;
        let pcs: Vec<u64> = std::iter::once(cpu.regs.rip)
            .chain(cpu.shadow.iter().rev().map(|f| f.resume))
            .collect();
        let framework = |va: u64| self.driver_of(va).is_some_and(|d| d.framework);
        let k = pcs
            .iter()
            .position(|va| !self.in_nt(*va) && !self.driver_of(*va).is_some_and(|d| d.wrapper))?;
        let k = match pcs[k..].iter().position(|va| !framework(*va)) {
            Some(j) if j > 0 && !self.in_nt(pcs[k + j]) => k + j,
            _ => k,
        };
        Some(pcs[k]).map(|va| match self.driver_of(va) {
            Some(d) => Site {
                module: d.name.clone(),
                rva: va - d.base,
            },
            None => Site {
                module: String::new(),
                rva: va,
            },
        })
    }

    /// The stack of processor `p` as the CPU built it, innermost first.
    pub fn truth_frames(&self, p: usize) -> Vec<TruthFrame> {
        let cpu = &self.processors[p].cpu;
        frames_of(&cpu.regs, &cpu.shadow)
    }

    fn start_job(&mut self, m: &mut Machine, p: usize, item: usize) {
        let w = self.workload.items[item].clone();
        *self.truth.items.entry(w.name.clone()).or_default() += 1;
        let routine = self
            .drivers
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(&w.driver))
            .map(|d| d.routine);
        let pr = &mut self.processors[p];
        let top = pr.stack_top;
        let (work, request) = (top - 0x40, top - 0x20);
        let mut wi = [0u8; 0x20];
        wi[0x10..0x18].copy_from_slice(&routine.unwrap_or(0).to_le_bytes());
        wi[0x18..0x20].copy_from_slice(&request.to_le_bytes());
        let mut rq = [0u8; 0x20];
        rq[0..4].copy_from_slice(&w.kind.to_le_bytes());
        rq[4..8].copy_from_slice(&w.flags.to_le_bytes());
        rq[8..16].copy_from_slice(&w.length.to_le_bytes());
        rq[16..24].copy_from_slice(&w.context.to_le_bytes());
        m.asp.write(&mut m.mem, work, &wi);
        m.asp.write(&mut m.mem, request, &rq);
        // The thread's first frame returns to 0: the item is done.
        let rsp = top - 0x78;
        m.asp.write_u64(&mut m.mem, rsp, 0);
        let regs = &mut pr.cpu.regs;
        let gs = regs.gs_base;
        *regs = Regs::default();
        regs.gs_base = gs;
        regs.gpr[RSP] = rsp;
        regs.gpr[RCX] = self.nt.worker_thread;
        regs.gpr[RDX] = work;
        regs.rip = self.nt.start_thread;
        pr.cpu.shadow.clear();
        pr.job = Some(Job {
            item,
            executed: 0,
            pending: None,
        });
        if routine.is_none() {
            // The driver is not loaded: nothing to run.
            pr.job = None;
        }
    }

    fn run_job(&mut self, m: &mut Machine, p: usize) -> Option<Stop> {
        loop {
            let job = self.processors[p].job.as_mut()?;
            if job.executed >= BUDGET {
                return self.bugcheck(m, p, 0x133, [1, 0, 0, 0]);
            }
            job.executed += 1;
            let rip = self.processors[p].cpu.regs.rip;
            if rip == 0 {
                self.processors[p].job = None;
                return None;
            }
            if let Some(h) = self.host.get(&rip).copied() {
                if let Some(s) = self.host_call(m, p, h) {
                    return Some(s);
                }
                continue;
            }
            let r = {
                let mut bus = MachineBus { m };
                self.processors[p].cpu.step(&mut bus)
            };
            self.truth.instructions += 1;
            match r {
                Ok(()) => {}
                Err(Exit::Breakpoint) => return Some(self.breakpoint(m, p)),
                Err(Exit::PageFault(f)) => {
                    let nested = self.processors[p].cpu.shadow.iter().any(|s| s.trap);
                    if nested {
                        // A fault while handling a fault: UNEXPECTED_KERNEL_MODE_TRAP
                        // (double fault).
                        return self.bugcheck(m, p, 0x7F, [8, 0, 0, 0]);
                    }
                    let handler = self.nt.page_fault;
                    let mut bus = MachineBus { m };
                    if self.processors[p]
                        .cpu
                        .deliver_page_fault(&mut bus, f, handler)
                        .is_err()
                    {
                        return self.bugcheck(m, p, 0x7F, [8, 0, 0, 0]);
                    }
                }
                Err(Exit::Invalid { rip, text }) => {
                    self.truth.invalid.push(format!("{rip:#x}: {text}"));
                    // An illegal instruction in kernel mode:
                    // KMODE_EXCEPTION_NOT_HANDLED (STATUS_ILLEGAL_INSTRUCTION).
                    return self.bugcheck(m, p, 0x1E, [0xC000_001D, rip, 0, 0]);
                }
                Err(Exit::Host(_)) | Err(Exit::Returned) => {}
            }
        }
    }

    fn breakpoint(&mut self, m: &mut Machine, p: usize) -> Stop {
        let pr = &self.processors[p];
        let pc = pr.cpu.regs.rip;
        let pending = pr.job.as_ref().and_then(|j| j.pending);
        let hit_tag = {
            let mut b = [0u8; 4];
            m.asp.read(&m.mem, self.nt.pool_hit_tag, &mut b);
            u32::from_le_bytes(b)
        };
        let site = self.site(p);
        let rec = HitRecord {
            cpu: p as u32,
            pc,
            frames: self.truth_frames(p),
            pool: pending.map(|o| (o.op, o.tag, o.bytes, site)),
            pool_hit_tag: pending.is_some_and(|o| o.tag & 0x7FFF_FFFF == hit_tag && hit_tag != 0),
        };
        self.truth.hits.push(rec);
        let s = Stop {
            cpu: p as u32,
            thread: pr.thread,
            pc,
            kind: StopKind::Breakpoint,
        };
        self.stop = Some(s.clone());
        s
    }
}

#[cfg(test)]
mod tests;

impl Machine {
    /// Run `item` on this machine until it bug-checks (stepping over any
    /// breakpoint on the way, as a debugger would), and make the dump header
    /// say so: the bug check, its parameters, and the registers at
    /// KeBugCheckEx as the header's CONTEXT. Returns the bug check with the
    /// stack the CPU built (ground truth), or None if the item finished
    /// without one within `limit_ns` of simulated time.
    pub fn crash_with(&mut self, item: WorkItem, limit_ns: u64) -> Option<BugCheck> {
        let mut rt = Runtime::new(self, Workload { items: vec![item] });
        loop {
            match rt.advance(self, limit_ns)? {
                Stop {
                    kind: StopKind::BugCheck(b),
                    cpu,
                    ..
                } => {
                    let b = *b;
                    let top = rt.processors[cpu as usize].stack_top;
                    self.crash_stack = Some((top - STACK_PAGES * PAGE64, top));
                    self.header.bugcheck_code = b.code;
                    self.header.bugcheck_parameters = b.parameters;
                    self.header.context_rip = b.context.rip;
                    self.header.context_rsp = b.context.gpr[RSP];
                    self.header.context_gprs = b.context.gpr;
                    return Some(b);
                }
                Stop { cpu, .. } => {
                    let mut ctx = rt.context(cpu as usize);
                    let rip = u64::from_le_bytes(ctx[0xF8..0x100].try_into().expect("8"));
                    ctx[0xF8..0x100].copy_from_slice(&(rip + 1).to_le_bytes());
                    rt.set_context(cpu as usize, &ctx);
                    rt.resume();
                }
            }
        }
    }
}
