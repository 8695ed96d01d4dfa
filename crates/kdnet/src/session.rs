//! A live KDNET session: listen, handshake, break in, and read the stopped
//! kernel through [`pooldump_core::Memory`] like a dump.
//!
//! Reads are cut into aligned blocks of `chunk` bytes (1 KiB by default, so
//! no datagram needs IP fragmentation; never more than the 3944 bytes one
//! reply carries) that never cross a page, so an unmapped page fails only
//! its own blocks (kdnet.md §9.1). Every block read is cached until the
//! target runs again. A virtual block the target cannot read (a transition
//! or paged-out PTE) falls back to the x64 page walk over physical reads,
//! so a live session and a dump of the same machine give the same bytes and
//! the same errors.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use pooldump_core::kernel::BootHints;
use pooldump_core::memory::{MemoryError, Translation, walk};
use pooldump_core::{KernelVa, Memory, PAGE_SIZE, PhysAddr};

use crate::api::{
    CONTEXT_RIP, Call, Event, Manipulate, SPECIAL_REGISTERS_CR3, SPECIAL_REGISTERS_LEN, Space,
    StateChange, Version, status,
};
use crate::error::KdnetError;
use crate::key::{KdnetKey, KdnetSpec};
use crate::link::{Link, LinkStats, Timeouts, api_name};

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
                Some(t) => Timeouts {
                    ack: t,
                    reply: t,
                    ..Timeouts::default()
                },
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
        let mut link = Link::handshake(self.sock, self.cfg.key.clone(), self.cfg.timeouts)?;
        let stop = link.break_in()?;
        let peer = link.target;
        let mut inner = Inner {
            link,
            state: State::Running,
            cache: Cache::default(),
            cache_limit: self.cfg.cache_limit,
        };
        let stop = StopInfo::from(&stop);
        let reply = inner.call_stopped(&stop, &Manipulate::get_version(stop.processor))?;
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
        let dtb = inner.read_dtb(&stop)?;
        inner.state = State::Stopped(stop);
        let target = LiveTarget {
            inner: Mutex::new(inner),
            peer,
            version,
            block,
            dtb: AtomicU64::new(dtb.0),
            kdbg: None,
        };
        Ok(target.with_kdbg())
    }
}

/// Where the target stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopInfo {
    /// The CPU that reported the stop; requests go to it.
    pub processor: u16,
    pub number_processors: u32,
    pub thread: u64,
    pub pc: u64,
    pub event: Event,
}

impl From<&StateChange> for StopInfo {
    fn from(s: &StateChange) -> Self {
        Self {
            processor: s.processor,
            number_processors: s.number_processors,
            thread: s.thread,
            pc: s.program_counter,
            event: s.event(),
        }
    }
}

enum State {
    Stopped(StopInfo),
    Running,
    Dead(String),
}

/// One cached block: its bytes, or `None` if the target could not read
/// it.
#[derive(Default)]
struct Cache {
    blocks: HashMap<(Space, u64), Option<Box<[u8]>>>,
    bytes: usize,
}

struct Inner {
    link: Link,
    state: State,
    cache: Cache,
    cache_limit: usize,
}

impl Inner {
    fn stopped(&self) -> Result<StopInfo, KdnetError> {
        match &self.state {
            State::Stopped(s) => Ok(s.clone()),
            State::Running => Err(KdnetError::Running),
            State::Dead(m) => Err(KdnetError::Dead(m.clone())),
        }
    }

    /// One request while stopped; a fatal error ends the session.
    fn call_stopped(
        &mut self,
        stop: &StopInfo,
        req: &Manipulate,
    ) -> Result<Manipulate, KdnetError> {
        let _ = stop;
        match self.link.transact(req) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(KdnetError::internal(
                "a request that expects a reply got none",
            )),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn call(&mut self, req: &Manipulate) -> Result<Manipulate, KdnetError> {
        let stop = self.stopped()?;
        self.call_stopped(&stop, req)
    }

    fn fail(&mut self, e: KdnetError) -> KdnetError {
        if e.is_fatal() {
            self.state = State::Dead(e.to_string());
            self.cache = Cache::default();
        }
        e
    }

    /// CR3 from KSPECIAL_REGISTERS (control space item 2), without PCID
    /// bits. Kernel mappings are shared by every address space, so the
    /// stopped thread's CR3 translates kernel addresses.
    fn read_dtb(&mut self, stop: &StopInfo) -> Result<PhysAddr, KdnetError> {
        let r = self.call_stopped(
            stop,
            &Manipulate::read(Space::Control, stop.processor, 2, SPECIAL_REGISTERS_LEN),
        )?;
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
        let stop = self.stopped()?;
        let r = self.call_stopped(&stop, &Manipulate::read(space, stop.processor, addr, len))?;
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

    fn resume(&mut self) -> Result<(), KdnetError> {
        let stop = self.stopped()?;
        // A hard-coded int3 does not advance RIP; step over it as WinDbg
        // does, or the target stops again at once (kdnet.md §6).
        let ctx = self.call_stopped(&stop, &Manipulate::get_context(stop.processor))?;
        if ctx.return_status == status::SUCCESS
            && let Some(rip) = ctx
                .data
                .get(CONTEXT_RIP..CONTEXT_RIP + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        {
            let at = self.call_stopped(
                &stop,
                &Manipulate::read(Space::Virtual, stop.processor, rip, 1),
            )?;
            if at.return_status == status::SUCCESS && at.data.first() == Some(&0xCC) {
                let mut c = ctx.data.clone();
                c[CONTEXT_RIP..CONTEXT_RIP + 8].copy_from_slice(&(rip + 1).to_le_bytes());
                self.call_stopped(&stop, &Manipulate::set_context(stop.processor, &c))?;
            }
        }
        let r = self
            .link
            .transact(&Manipulate::continue2(stop.processor, status::DBG_CONTINUE));
        self.cache = Cache::default();
        match r {
            Ok(_) => {
                self.state = State::Running;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

/// A stopped Windows kernel on the other end of a KDNET session. It
/// implements [`Memory`], so everything that reads a dump reads it.
///
/// Dropping it resumes the target if it is still stopped: a production
/// machine must not be left frozen by an error path.
pub struct LiveTarget {
    inner: Mutex<Inner>,
    peer: SocketAddr,
    version: Version,
    block: u32,
    dtb: AtomicU64,
    kdbg: Option<KernelVa>,
}

impl LiveTarget {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; the
        // protocol state is still consistent enough to fail cleanly.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follow DebuggerDataList's Flink to KdDebuggerDataBlock (its
    /// Header.List is at offset 0). Absent without the DATA flag.
    fn with_kdbg(mut self) -> Self {
        let list = self.version.debugger_data_list;
        if self.version.flags & Version::FLAG_DATA != 0 && list != 0 {
            let mut b = [0u8; 8];
            if self.read_virtual(KernelVa(list), &mut b).is_ok() {
                let flink = KernelVa(u64::from_le_bytes(b));
                self.kdbg = flink.is_kernel().then_some(flink);
            }
        }
        self
    }

    /// The target's GetVersion reply.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// nt's base, from GetVersion.
    pub fn kern_base(&self) -> KernelVa {
        KernelVa(self.version.kern_base)
    }

    /// PsLoadedModuleList, from GetVersion.
    pub fn ps_loaded_module_list(&self) -> KernelVa {
        KernelVa(self.version.ps_loaded_module_list)
    }

    /// KdDebuggerDataBlock, found through GetVersion's DebuggerDataList.
    pub fn kdbg_va(&self) -> Option<KernelVa> {
        self.kdbg
    }

    /// Where kernel identification starts, as a dump header's fields
    /// would: the KDBG and PsLoadedModuleList GetVersion gave.
    pub fn boot_hints(&self) -> BootHints {
        BootHints {
            kd_debugger_data_block: self.kdbg.unwrap_or_default(),
            ps_loaded_module_list: self.ps_loaded_module_list(),
        }
    }

    /// The build number GetVersion reported (MinorVersion).
    pub fn build(&self) -> u32 {
        u32::from(self.version.minor)
    }

    /// The target's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Where the target is stopped, or why it is not.
    pub fn stop_info(&self) -> Result<StopInfo, KdnetError> {
        self.lock().stopped()
    }

    /// Forget every cached read (they are also dropped whenever the
    /// target runs).
    pub fn flush_cache(&self) {
        self.lock().cache = Cache::default();
    }

    /// Datagram and recovery counters.
    pub fn stats(&self) -> LinkStats {
        self.lock().link.stats
    }

    /// Let the target run (Continue2 with DBG_CONTINUE, stepping over a
    /// hard-coded int3). The read cache is dropped.
    pub fn resume(&self) -> Result<(), KdnetError> {
        self.lock().resume()
    }

    /// Stop a running target again and refresh the kernel DTB.
    pub fn break_in(&self) -> Result<StopInfo, KdnetError> {
        let mut g = self.lock();
        match &g.state {
            State::Stopped(s) => return Ok(s.clone()),
            State::Dead(m) => return Err(KdnetError::Dead(m.clone())),
            State::Running => {}
        }
        let sc = match g.link.break_in() {
            Ok(s) => s,
            Err(e) => return Err(g.fail(e)),
        };
        let stop = StopInfo::from(&sc);
        let dtb = g.read_dtb(&stop)?;
        self.dtb.store(dtb.0, Ordering::Relaxed);
        g.cache = Cache::default();
        g.state = State::Stopped(stop.clone());
        Ok(stop)
    }

    /// Write kernel virtual memory (for example nt!PoolHitTag), in chunks.
    pub fn write_virtual(&self, va: KernelVa, data: &[u8]) -> Result<(), KdnetError> {
        let mut g = self.lock();
        let stop = g.stopped()?;
        let step = self.block as usize;
        for (i, part) in data.chunks(step).enumerate() {
            let at = va.0.wrapping_add((i * step) as u64);
            let r = g.call(&Manipulate::write(Space::Virtual, stop.processor, at, part))?;
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

    /// The stopped CPU's CONTEXT (x64, 0x4D0 bytes).
    pub fn get_context(&self) -> Result<Vec<u8>, KdnetError> {
        let mut g = self.lock();
        let stop = g.stopped()?;
        let r = g.call(&Manipulate::get_context(stop.processor))?;
        if r.return_status != status::SUCCESS {
            return Err(KdnetError::Refused {
                what: "GetContext".into(),
                status: r.return_status,
            });
        }
        Ok(r.data)
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
        format!("KDNET target {} (build {})", self.peer, self.version.minor)
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
            let _ = g.resume();
        }
    }
}

impl std::fmt::Debug for LiveTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTarget")
            .field("peer", &self.peer)
            .field("version", &self.version)
            .field("kdbg", &self.kdbg)
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
}
