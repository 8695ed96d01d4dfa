//! x64 small memory dumps (DumpType 4), as Windows writes them to
//! C:\Windows\Minidump.
//!
//! The layout follows the real Windows 11 ARM64 small dump in
//! ../shared/realworld/ and the public TRIAGE_DUMP64 declaration: the
//! DUMP_HEADER64 (DumpType 4, MiniDumpFields saying which parts are
//! filled, the CONTEXT and exception record inside it), the TRIAGE_DUMP64
//! header at 0x2000, then 8-byte-aligned sections in the writer's order:
//! Mm information (version 1, 0x50 bytes), MmUnloadedDrivers, copies of the
//! KPRCB, EPROCESS and ETHREAD, the stack from Rsp to StackBase, the
//! decoded KDDEBUGGER_DATA64 (with the structure offsets the kernel
//! publishes at 0x298 onwards), the driver list (DUMP_DRIVER_ENTRY64 with
//! zeroed links and names, as Windows 11 leaves them) and its string pool
//! (full paths, length in WCHARs), the data-block table with the blocks
//! packed after it, 'TRGD' at SizeOfDump - 4, and a 'DumpBlob' secondary
//! data section.
//!
//! Every byte the dump claims about memory is read from the machine (the
//! blocks, the stack, the EPROCESS); the thread is the one structure the
//! kit does not model, so its ETHREAD is made here and recorded in the
//! truth.

use crate::dump;
use crate::machine::Machine;
use crate::phys::{PAGE, page_pieces};
use crate::truth::ProcessTruth;

/// What the small dump holds, for tests to compare pooldump with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SmallDumpTruth {
    pub build: u32,
    pub processors: u32,
    pub bugcheck_code: u32,
    pub bugcheck_parameters: [u64; 4],
    pub kern_base: u64,
    pub kdbg_va: u64,
    pub pool_track_table: u64,
    /// The crashing thread (made up: the kit has no threads) and its
    /// process (one of the machine's).
    pub thread: u64,
    pub process: u64,
    pub process_name: String,
    pub pid: u64,
    pub processor: u32,
    pub stack_base: u64,
    pub stack_limit: u64,
    pub top_of_stack: u64,
    pub stack_len: u64,
    /// (full path, base, size, TimeDateStamp) in list order.
    pub drivers: Vec<(String, u64, u64, u32)>,
    pub unloaded: Vec<(String, u64, u64)>,
    /// (VA, length) of each triage data block, in table order.
    pub blocks: Vec<(u64, u64)>,
    pub secondary_blobs: usize,
    pub file_size: u64,
}

/// What to put in the small dump beyond what the machine has.
#[derive(Debug, Clone)]
pub struct SmallDumpOptions {
    /// MmUnloadedDrivers entries (name, start, end).
    pub unloaded: Vec<(String, u64, u64)>,
    /// Which of the machine's processes crashed (index into its process
    /// list; clamped).
    pub process_index: usize,
}

impl Default for SmallDumpOptions {
    fn default() -> Self {
        Self {
            unloaded: vec![
                (
                    "oldfilt.sys".into(),
                    0xFFFF_F806_8400_0000,
                    0xFFFF_F806_8401_5000,
                ),
                (
                    "dump_storport.sys".into(),
                    0xFFFF_F806_8410_0000,
                    0xFFFF_F806_8411_E000,
                ),
            ],
            process_index: 1,
        }
    }
}

/// TRIAGE_DUMP_* bits in MiniDumpFields: context, exception, PRCB,
/// process, thread, stack, driver list, broken driver, debugger data, data
/// blocks (0xCFF, as in the real file: Mm information and the data page
/// are not flagged).
const FIELDS: u32 = 0x0CFF;
const TRIAGE: usize = dump::HEADER_SIZE;

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn align8(b: &mut Vec<u8>) {
    b.resize(b.len().div_ceil(8) * 8, 0);
}

impl Machine {
    /// `len` bytes at `va` if every page is mapped.
    fn try_read(&self, va: u64, len: usize) -> Option<Vec<u8>> {
        let mut out = vec![0u8; len];
        // A range that wraps past the top of the address space is unmapped.
        va.checked_add(len.saturating_sub(1) as u64)?;
        for (cur, r) in page_pieces(va, len) {
            let pa = self.asp.translate(&self.mem, cur)?;
            self.mem.read(pa, &mut out[r]);
        }
        Some(out)
    }

    /// Write an x64 small memory dump of the machine.
    pub fn small_dump(&self, opts: &SmallDumpOptions) -> (Vec<u8>, SmallDumpTruth) {
        let c = self.crashed_thread(opts);
        let kdbg = self.triage_kdbg(c.apc_process);
        let blocks = self.triage_blocks(c.process);
        let drivers = self.triage_drivers();

        // Lay the file out in the writer's order.
        let mut f = self.triage_header(&opts.unloaded);
        put_structures(&mut f, &c, &kdbg);
        put_drivers(&mut f, &drivers);
        put_blocks(&mut f, &blocks);
        put_secondary_data(&mut f, self.header.build);
        let total = f.len() as u64;
        put64(&mut f, dump::off::REQUIRED_DUMP_SPACE, total);

        let truth = self.small_truth(opts, &c, &drivers, &blocks, total);
        (f, truth)
    }

    /// The crashing thread: the process's EPROCESS read from memory, an
    /// ETHREAD made up for it, CPU 0's PRCB running it and its stack.
    fn crashed_thread(&self, opts: &SmallDumpOptions) -> Crashed<'_> {
        let m = self.m;
        let off = |ty: &str, f: &str| m.offset_of(ty, f) as usize;
        let size = |ty: &str| m.ty(ty).size as usize;

        // The crashing process: one of the machine's, its EPROCESS read
        // from memory.
        let procs = &self.truth.processes;
        let p = &procs[opts.process_index.min(procs.len().saturating_sub(1))];
        let eprocess = self
            .try_read(p.eprocess, size("_EPROCESS"))
            .expect("the kit maps every EPROCESS");
        // The thread: an ETHREAD that is not in memory (the kit has no
        // threads), placed in nonpaged pool's address range.
        let thread_va = (p.eprocess + 0x10_0000) & !0xFFF | 0x080;
        let (stack_limit, stack_base) = self
            .crash_stack
            .unwrap_or((self.stack, self.stack + 2 * PAGE as u64));
        let rsp = self.header.context_rsp;
        let mut ethread = vec![0u8; size("_ETHREAD")];
        let apc_process = off("_KTHREAD", "ApcState") + 0x20; // _KAPC_STATE.Process
        put64(&mut ethread, apc_process, p.eprocess);
        ethread[off("_KTHREAD", "State")] = 2; // Running
        put64(&mut ethread, off("_KTHREAD", "StackBase"), stack_base);
        put64(&mut ethread, off("_KTHREAD", "StackLimit"), stack_limit);
        put64(&mut ethread, off("_KTHREAD", "KernelStack"), rsp);
        put64(
            &mut ethread,
            off("_KTHREAD", "InitialStack"),
            stack_base - 0x1D0,
        );
        let cid = off("_ETHREAD", "Cid");
        put64(&mut ethread, cid, p.pid);
        put64(&mut ethread, cid + 8, p.pid + 4);
        // The PRCB of CPU 0: CurrentThread and Number.
        let mut prcb = vec![0u8; size("_KPRCB")];
        put64(&mut prcb, off("_KPRCB", "CurrentThread"), thread_va);
        put32(&mut prcb, off("_KPRCB", "Number"), 0);

        let stack = self
            .try_read(rsp, (stack_base - rsp) as usize)
            .expect("the kit maps its kernel stack");
        Crashed {
            process: p,
            eprocess,
            thread_va,
            ethread,
            apc_process,
            prcb,
            stack_limit,
            stack_base,
            rsp,
            stack,
        }
    }

    /// KDDEBUGGER_DATA64, decoded, with the offsets the kernel publishes.
    fn triage_kdbg(&self, apc_process: usize) -> Vec<u8> {
        let m = self.m;
        let off = |ty: &str, f: &str| m.offset_of(ty, f) as usize;
        let size = |ty: &str| m.ty(ty).size as usize;
        let kdbg_va = self.header.kd_debugger_data_block;
        let kdbg_size = crate::kdbg::block_size(self.header.build);
        let mut kdbg = vec![0u8; kdbg_size];
        put64(&mut kdbg, 0, kdbg_va);
        put64(&mut kdbg, 8, kdbg_va);
        kdbg[0x10..0x14].copy_from_slice(b"KDBG");
        put32(&mut kdbg, 0x14, kdbg_size as u32);
        put64(&mut kdbg, 0x18, self.kern_base);
        for (name, at) in crate::kdbg::FIELDS {
            if let Some(v) = self.sym_va(name) {
                put64(&mut kdbg, *at, v);
            }
        }
        put16(&mut kdbg, 0x29C, off("_KTHREAD", "KernelStack") as u16);
        put16(&mut kdbg, 0x29E, off("_KTHREAD", "InitialStack") as u16);
        put16(&mut kdbg, 0x2A0, apc_process as u16);
        put16(&mut kdbg, 0x2A2, off("_KTHREAD", "State") as u16);
        put16(&mut kdbg, 0x2A8, size("_EPROCESS") as u16);
        put16(&mut kdbg, 0x2AA, off("_EPROCESS", "Peb") as u16);
        put16(
            &mut kdbg,
            0x2AE,
            off("_KPROCESS", "DirectoryTableBase") as u16,
        );
        put16(&mut kdbg, 0x2B0, (size("_KPRCB") & 0xFFFF) as u16);
        put16(&mut kdbg, 0x2B4, off("_KPRCB", "CurrentThread") as u16);
        put16(&mut kdbg, 0x2BE, off("_KPRCB", "Number") as u16);
        put16(&mut kdbg, 0x2C0, size("_ETHREAD") as u16);
        if kdbg_size >= 0x348 {
            put32(&mut kdbg, 0x340, off("_KTHREAD", "StackLimit") as u32);
            put32(&mut kdbg, 0x344, off("_KTHREAD", "StackBase") as u32);
        }
        kdbg
    }

    /// Triage data blocks: memory the kernel keeps for the debugger (the
    /// kernel's header, PsLoadedModuleList, the process and what the bug
    /// check parameters point at), those that are mapped.
    fn triage_blocks(&self, p: &ProcessTruth) -> Vec<(u64, Vec<u8>)> {
        let h = &self.header;
        let mut wanted: Vec<(u64, usize)> = vec![
            (self.kern_base, 0x100),
            (h.ps_loaded_module_list, 0x10),
            (p.eprocess, 0x100),
        ];
        for prm in h.bugcheck_parameters {
            if prm >> 47 == 0x1_FFFF {
                wanted.push((prm & !0xF, 0xA0));
            }
        }
        wanted
            .into_iter()
            .filter_map(|(va, n)| Some((va, self.try_read(va, n)?)))
            .collect()
    }

    /// Drivers (full path, base, size, TimeDateStamp, CheckSum), the last
    /// two from their images.
    fn triage_drivers(&self) -> Vec<(String, u64, u64, u32, u32)> {
        self.truth
            .kernel
            .modules
            .iter()
            .map(|md| {
                let pe = self.try_read(md.base, 0x200).unwrap_or_default();
                let lfanew = pe
                    .get(0x3C..0x40)
                    .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
                let at = |o: usize| {
                    pe.get(lfanew + o..lfanew + o + 4)
                        .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()))
                };
                (md.full_name.clone(), md.base, md.size, at(8), at(0x58))
            })
            .collect()
    }

    /// The DUMP_HEADER64, the TRIAGE_DUMP64 header, the Mm information
    /// and MmUnloadedDrivers.
    fn triage_header(&self, unloaded: &[(String, u64, u64)]) -> Vec<u8> {
        let mut f = dump::header(&self.header, 4, None, 0);
        put32(&mut f, dump::off::MINIDUMP_FIELDS, FIELDS);
        f.resize(TRIAGE + 0x80, 0);
        put32(&mut f, t(0x0C), dump::off::CONTEXT as u32);
        put32(&mut f, t(0x10), dump::off::EXCEPTION as u32);
        put32(&mut f, t(0x44), 0xFFFF_FFFF); // TriageOptions, as in the real file

        let mm = f.len();
        f.resize(mm + 0x50, 0);
        put32(&mut f, mm, 1);
        put32(&mut f, mm + 4, 0x50);
        put32(&mut f, t(0x14), mm as u32);

        let unl = f.len();
        f.resize(unl + 8 + 0x38 * unloaded.len(), 0);
        put64(&mut f, unl, unloaded.len() as u64);
        for (i, (name, start, end)) in unloaded.iter().enumerate() {
            let e = unl + 8 + 0x38 * i;
            let units: Vec<u16> = name.encode_utf16().take(12).collect();
            put16(&mut f, e, (units.len() * 2) as u16);
            put16(&mut f, e + 2, (units.len() * 2) as u16);
            for (k, u) in units.iter().enumerate() {
                put16(&mut f, e + 0x10 + 2 * k, *u);
            }
            put64(&mut f, e + 0x28, *start);
            put64(&mut f, e + 0x30, *end);
        }
        put32(&mut f, t(0x18), unl as u32);
        align8(&mut f);
        f
    }

    /// What the dump holds, for tests.
    fn small_truth(
        &self,
        opts: &SmallDumpOptions,
        c: &Crashed,
        drivers: &[(String, u64, u64, u32, u32)],
        blocks: &[(u64, Vec<u8>)],
        total: u64,
    ) -> SmallDumpTruth {
        let h = &self.header;
        let name = {
            let at = self.m.offset_of("_EPROCESS", "ImageFileName") as usize;
            let raw = &c.eprocess[at..at + 15];
            let end = raw.iter().position(|&c| c == 0).unwrap_or(15);
            String::from_utf8_lossy(&raw[..end]).into_owned()
        };
        SmallDumpTruth {
            build: h.build,
            processors: h.number_processors,
            bugcheck_code: h.bugcheck_code,
            bugcheck_parameters: h.bugcheck_parameters,
            kern_base: self.kern_base,
            kdbg_va: h.kd_debugger_data_block,
            pool_track_table: self.sym_va("PoolTrackTable").unwrap_or(0),
            thread: c.thread_va,
            process: c.process.eprocess,
            process_name: name,
            pid: c.process.pid,
            processor: 0,
            stack_base: c.stack_base,
            stack_limit: c.stack_limit,
            top_of_stack: c.rsp,
            stack_len: c.stack.len() as u64,
            drivers: drivers
                .iter()
                .map(|d| (d.0.clone(), d.1, d.2, d.3))
                .collect(),
            // The entry keeps 12 WCHARs of the name, as the real file shows
            // ("dump_storpor").
            unloaded: opts
                .unloaded
                .iter()
                .map(|(n, a, b)| (n.chars().take(12).collect(), *a, *b))
                .collect(),
            blocks: blocks.iter().map(|(v, b)| (*v, b.len() as u64)).collect(),
            secondary_blobs: 1,
            file_size: total,
        }
    }
}

/// The crashing thread and what the small dump copies of it.
struct Crashed<'a> {
    process: &'a ProcessTruth,
    eprocess: Vec<u8>,
    thread_va: u64,
    ethread: Vec<u8>,
    /// Offset of `_KAPC_STATE.Process` in the ETHREAD.
    apc_process: usize,
    prcb: Vec<u8>,
    stack_limit: u64,
    stack_base: u64,
    rsp: u64,
    /// The stack from `rsp` to `stack_base`.
    stack: Vec<u8>,
}

/// Offset `o` of the TRIAGE_DUMP64 header in the file.
fn t(o: usize) -> usize {
    TRIAGE + o
}

/// The PRCB, EPROCESS and ETHREAD copies, the stack and the decoded
/// KDDEBUGGER_DATA64.
fn put_structures(f: &mut Vec<u8>, c: &Crashed, kdbg: &[u8]) {
    for (field, bytes) in [(0x1C, &c.prcb), (0x20, &c.eprocess), (0x24, &c.ethread)] {
        let at = f.len();
        f.extend_from_slice(bytes);
        align8(f);
        put32(f, t(field), at as u32);
    }
    let cs = f.len();
    f.extend_from_slice(&c.stack);
    align8(f);
    put32(f, t(0x28), cs as u32);
    put32(f, t(0x2C), c.stack.len() as u32);
    put64(f, t(0x48), c.rsp);

    let kd = f.len();
    f.extend_from_slice(kdbg);
    align8(f);
    put32(f, t(0x70), kd as u32);
    put32(f, t(0x74), kdbg.len() as u32);
}

/// The driver list (DUMP_DRIVER_ENTRY64) and its string pool.
fn put_drivers(f: &mut Vec<u8>, drivers: &[(String, u64, u64, u32, u32)]) {
    let dl = f.len();
    f.resize(dl + 0x90 * drivers.len(), 0);
    align8(f);
    let pool = f.len();
    for (i, (name, base, sz, ts, ck)) in drivers.iter().enumerate() {
        let e = dl + 0x90 * i;
        let at = f.len();
        put32(f, e, at as u32);
        put64(f, e + 8 + 0x30, *base);
        put32(f, e + 8 + 0x40, *sz as u32);
        put32(f, e + 8 + 0x78, *ck);
        put32(f, e + 8 + 0x80, *ts);
        let units: Vec<u16> = name.encode_utf16().collect();
        f.extend_from_slice(&(units.len() as u32).to_le_bytes());
        for u in units.iter().chain([&0u16]) {
            f.extend_from_slice(&u.to_le_bytes());
        }
        align8(f);
    }
    put32(f, t(0x30), dl as u32);
    put32(f, t(0x34), drivers.len() as u32);
    put32(f, t(0x38), pool as u32);
    let pool_size = (f.len() - pool) as u32;
    put32(f, t(0x3C), pool_size);
}

/// The data-block table with the blocks packed after it, and the 'TRGD'
/// marker that ends SizeOfDump.
fn put_blocks(f: &mut Vec<u8>, blocks: &[(u64, Vec<u8>)]) {
    let db = f.len();
    let mut data = f.len() + 16 * blocks.len();
    f.resize(data, 0);
    for (i, (va, bytes)) in blocks.iter().enumerate() {
        let e = db + 16 * i;
        put64(f, e, *va);
        put32(f, e + 8, data as u32);
        put32(f, e + 12, bytes.len() as u32);
        f.extend_from_slice(bytes);
        data += bytes.len();
    }
    put32(f, t(0x78), db as u32);
    put32(f, t(0x7C), blocks.len() as u32);
    align8(f);
    // SizeOfDump covers the 'TRGD' marker at its end.
    let valid = f.len();
    f.extend_from_slice(b"TRGD");
    let size_of_dump = f.len() as u32;
    put32(f, t(0x04), size_of_dump);
    put32(f, t(0x08), valid as u32);
}

/// The 'DumpBlob' secondary data a bug check callback adds.
fn put_secondary_data(f: &mut Vec<u8>, build: u32) {
    f.extend_from_slice(b"DumpBlob");
    f.extend_from_slice(&0x10u32.to_le_bytes());
    f.extend_from_slice(&(0xF000_0000 | build).to_le_bytes());
    let blob = b"pooldump-kit secondary data";
    f.extend_from_slice(&0x20u32.to_le_bytes());
    f.extend_from_slice(&[0x4B; 16]);
    f.extend_from_slice(&(blob.len() as u32).to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    let post = blob.len().div_ceil(8) * 8 - blob.len();
    f.extend_from_slice(&(post as u32).to_le_bytes());
    f.extend_from_slice(blob);
    f.resize(f.len() + post, 0);
}
