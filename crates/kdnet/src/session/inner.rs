//! The session's state behind [`LiveTarget`](super::LiveTarget)'s lock:
//! the link, whether the target runs, the read cache and the CONTEXTs of
//! this stop, what GetVersion said; and the protocol steps on it (break
//! in, identify, read a block, get or set a CONTEXT, continue, turn a
//! packet into an event).

use std::collections::HashMap;
use std::time::Instant;

use pooldump_core::memory::walk;
use pooldump_core::{KernelVa, PhysAddr};

use crate::api::{
    CONTEXT_LEN, CONTEXT_RIP, Call, DebugIo, Manipulate, SPECIAL_REGISTERS_CR3,
    SPECIAL_REGISTERS_LEN, Space, StateChange, Version, api_number, status,
};
use crate::error::KdnetError;
use crate::link::{Link, api_name};
use crate::packet::{KdPacket, PacketType};

use super::events::{ContinueStatus, StopInfo, TargetEvent, TargetState};

pub(super) type State = TargetState;

/// One cached block: its bytes, or `None` if the target could not read
/// it.
#[derive(Default)]
pub(super) struct Cache {
    blocks: HashMap<(Space, u64), Option<Box<[u8]>>>,
    bytes: usize,
}

/// What GetVersion and the KDBG say; refreshed by a reconnect.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Identity {
    pub version: Version,
    pub kdbg: Option<KernelVa>,
}

pub(super) struct Inner {
    pub(super) link: Link,
    pub(super) state: State,
    pub(super) cache: Cache,
    pub(super) cache_limit: usize,
    /// CONTEXTs read (or set) during this stop, by processor.
    pub(super) contexts: HashMap<u16, Vec<u8>>,
    pub(super) ident: Identity,
    /// The session died because the target stopped answering (not
    /// because it rebooted): it may be stopped, waiting for us.
    pub(super) lost: bool,
    /// The session died because the target rebooted: it runs.
    pub(super) rebooted: bool,
    /// While running: when the target was last heard from or probed.
    /// Kept across `wait_event` calls, so a caller that waits in short
    /// slices (to check for Ctrl-C) still probes for a lost report.
    pub(super) quiet_since: Instant,
}

impl Inner {
    pub(super) fn stopped(&self) -> Result<&StopInfo, KdnetError> {
        match &self.state {
            State::Stopped(s) => Ok(s),
            State::Running => Err(KdnetError::Running),
            State::Dead(m) => Err(KdnetError::Dead(m.clone())),
        }
    }

    /// One request that expects a reply; a fatal error ends the session.
    pub(super) fn request(&mut self, req: &Manipulate) -> Result<Manipulate, KdnetError> {
        match self.link.transact(req) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(KdnetError::internal(
                "a request that expects a reply got none",
            )),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// A request while stopped.
    pub(super) fn call(&mut self, req: &Manipulate) -> Result<Manipulate, KdnetError> {
        self.stopped()?;
        self.request(req)
    }

    pub(super) fn fail(&mut self, e: KdnetError) -> KdnetError {
        if e.is_fatal() {
            self.lost = matches!(e, KdnetError::NoResponse { .. });
            self.rebooted = matches!(e, KdnetError::TargetRebooted { .. });
            self.state = State::Dead(e.to_string());
            self.forget_stop();
        }
        e
    }

    /// Drop everything that is only true while the target stays stopped.
    pub(super) fn forget_stop(&mut self) {
        self.cache = Cache::default();
        self.contexts.clear();
    }

    /// Stop the target (or take the stop it already reported).
    pub(super) fn break_in(&mut self) -> Result<StopInfo, KdnetError> {
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
    pub(super) fn identify(&mut self, stop: &StopInfo) -> Result<(), KdnetError> {
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
    pub(super) fn read_dtb(&mut self, processor: u16) -> Result<PhysAddr, KdnetError> {
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
    pub(super) fn block(
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
            Call::Read(t) => t.actual as usize,
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
    pub(super) fn context(&mut self, processor: u16) -> Result<Vec<u8>, KdnetError> {
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

    pub(super) fn set_context(&mut self, processor: u16, ctx: &[u8]) -> Result<(), KdnetError> {
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
    /// and the target would stop again at once (docs/kdnet.md, "The protocol in brief").
    pub(super) fn continue_with(&mut self, how: ContinueStatus) -> Result<(), KdnetError> {
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
    pub(super) fn event(&mut self, p: KdPacket) -> Option<TargetEvent> {
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
