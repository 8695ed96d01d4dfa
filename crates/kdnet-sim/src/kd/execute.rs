//! Executing the debugger's manipulate requests on the machine: memory
//! reads and writes, GetVersion, CONTEXTs, continue; and the machine's
//! memory as a debugger sees it (virtual through the page tables,
//! physical RAM, control space).

use std::ops::Range;
use std::time::Instant;

use pooldump_kdnet::api::{
    CONTEXT_LEN, Call, MAX_TRANSFER, Manipulate, SPECIAL_REGISTERS_CR3, SPECIAL_REGISTERS_LEN,
    Space, Transfer, Version, status,
};

use super::{Run, STOPPED_THREAD, Target};
use crate::config::MishapAt;

impl Target {
    /// Execute one manipulate request; its reply, or `None` for a
    /// continue (the target then runs) and for what a bug-checked machine
    /// cannot do.
    pub(super) fn execute(&mut self, req: &Manipulate) -> Option<Manipulate> {
        let fail = || Some(req.reply(status::UNSUCCESSFUL, Vec::new()));
        match req.call() {
            Call::Read(t) => Some(self.execute_read(req, t.space, t.address, t.count)),
            Call::Write(Transfer {
                space: Space::Virtual,
                address,
                count,
                ..
            }) => Some(self.execute_write(req, address, count)),
            Call::GetVersion(_) => Some(self.version_reply(req)),
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
                self.execute_continue(status);
                None
            }
            _ => fail(),
        }
    }

    /// ReadVirtual/Physical/ControlSpace: what is readable from `address`
    /// on, at most one reply's worth; partial reads fail with the bytes
    /// read.
    fn execute_read(&self, req: &Manipulate, space: Space, address: u64, count: u32) -> Manipulate {
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
        r
    }

    /// WriteVirtualMemory: as much as is mapped, counted in the reply.
    fn execute_write(&mut self, req: &Manipulate, address: u64, count: u32) -> Manipulate {
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
        r
    }

    /// GetVersion as Windows 10 x64 answers it.
    fn version_reply(&self, req: &Manipulate) -> Manipulate {
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
            unused: 0,
            kern_base: t.kernel.kern_base,
            ps_loaded_module_list: t.kernel.ps_loaded_module_list,
            debugger_data_list: t.kernel.kd_debugger_data_block,
        };
        let mut r = req.reply(status::SUCCESS, Vec::new());
        r.set_version(&v);
        r
    }

    /// Continue/Continue2: the machine runs again, unless it bug-checked.
    fn execute_continue(&mut self, status: u32) {
        self.stat(|s| {
            s.continues += 1;
            s.last_continue_status = Some(status);
        });
        if let Some(rt) = self.rt.as_mut() {
            rt.resume();
            if rt.is_dead() {
                // A bug-checked machine never runs again.
                return;
            }
        }
        self.set_run(Run::Running);
        self.last_tick = Instant::now();
        // Armed only in the tests that ask for it: the statistics are
        // looked at then alone (and their lock is let go before `emit`,
        // which takes it again).
        if let Some(m) = self.mishap
            && let MishapAt::ResumeAfterWrites(n) = m.at
            && self.stats.lock().unwrap_or_else(|e| e.into_inner()).writes >= n
        {
            self.strike(m.kind);
        }
        if let Some(after) = self.cfg.stop_on_resume.as_ref().map(|s| s.after_writes) {
            let writes = self.stats.lock().unwrap_or_else(|e| e.into_inner()).writes;
            if writes >= after
                && let Some(s) = self.cfg.stop_on_resume.take()
            {
                self.emit(s.event);
            }
        }
    }

    /// Virtual read as the CPU sees memory: stops at the first page that
    /// is not present. Returns the bytes read.
    pub(super) fn read_virtual(&self, va: u64, out: &mut [u8]) -> usize {
        let m = &self.m;
        by_page(va, out.len(), |cur, r| match m.asp.translate(&m.mem, cur) {
            Some(pa) => {
                m.mem.read(pa, &mut out[r]);
                true
            }
            None => false,
        })
    }

    fn write_virtual(&mut self, va: u64, data: &[u8]) -> usize {
        let m = &mut self.m;
        by_page(va, data.len(), |cur, r| {
            match m.asp.translate(&m.mem, cur) {
                Some(pa) => {
                    m.mem.write(pa, &data[r]);
                    true
                }
                None => false,
            }
        })
    }

    /// Physical read: RAM only (frames never touched read as zeros).
    fn read_physical(&self, pa: u64, out: &mut [u8]) -> usize {
        let mem = &self.m.mem;
        by_page(pa, out.len(), |cur, r| {
            let ram = mem.is_ram(cur >> 12);
            if ram {
                mem.read(cur, &mut out[r]);
            }
            ram
        })
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

/// Walk `len` bytes at `va` page by page: `step(address, range of the
/// bytes)` moves one page's piece and answers whether the page was there.
/// Returns the bytes done before the first page that was not.
fn by_page(va: u64, len: usize, mut step: impl FnMut(u64, Range<usize>) -> bool) -> usize {
    let mut done = 0;
    while done < len {
        let cur = va.wrapping_add(done as u64);
        let n = (0x1000 - (cur & 0xFFF) as usize).min(len - done);
        if !step(cur, done..done + n) {
            break;
        }
        done += n;
    }
    done
}
