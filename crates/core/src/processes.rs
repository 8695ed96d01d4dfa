//! The process list: PsActiveProcessHead's ring of `_EPROCESS`
//! (`ActiveProcessLinks`), with each process's page-table root and session,
//! laid out by the symbols' `_EPROCESS` and `_KPROCESS`. Session-pool
//! analysis needs one address space per session; `!process 0 0` shows the
//! same list.

use serde::Serialize;

use crate::addr::{KernelVa, PhysAddr};
use crate::bytes::Le;
use crate::kernel::ring::Ring;
use crate::memory::Memory;
use crate::symbols::{KernelSymbols, SymbolError};

/// One `_EPROCESS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    /// The EPROCESS's address (`!process`'s PROCESS value).
    pub eprocess: KernelVa,
    /// `UniqueProcessId`.
    pub pid: u64,
    /// `ImageFileName` (15 bytes, as `!process` prints it).
    pub name: String,
    /// `Pcb.DirectoryTableBase`, as stored.
    pub dtb: PhysAddr,
    /// `Session`: the process's `_MM_SESSION_SPACE`, 0 for System and
    /// other processes outside any session.
    pub session: KernelVa,
}

/// What the walk found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessList {
    /// The processes in list order (PsActiveProcessHead's).
    pub processes: Vec<Process>,
    /// The ring returned to its head.
    pub complete: bool,
    /// Why the walk ended early, when it did.
    pub warnings: Vec<String>,
}

/// The members the walk reads, from the symbols.
#[derive(Debug, Clone, Copy)]
struct EprocessLayout {
    links: u64,
    pid: u64,
    name: u64,
    dtb: u64,
    session: Option<u64>,
    read_size: usize,
}

impl EprocessLayout {
    fn new(syms: &KernelSymbols) -> Result<Self, SymbolError> {
        let f = |p: &str| syms.field("_EPROCESS", p).map(|f| f.offset);
        let links = f("ActiveProcessLinks")?;
        let pid = f("UniqueProcessId")?;
        let name = f("ImageFileName")?;
        let dtb = f("Pcb.DirectoryTableBase")?;
        let session = f("Session").ok();
        let end = [
            links + 16,
            pid + 8,
            name + 15,
            dtb + 8,
            session.unwrap_or(0) + 8,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        Ok(Self {
            links,
            pid,
            name,
            dtb,
            session,
            read_size: end as usize,
        })
    }
}

/// Bounds on the walk.
#[derive(Debug, Clone)]
pub struct ProcessWalkLimits {
    /// Entries visited at most (PIDs are multiples of 4 below 2^26 or so;
    /// a real system has hundreds to a few thousand processes).
    pub max_processes: usize,
}

impl Default for ProcessWalkLimits {
    fn default() -> Self {
        Self {
            max_processes: 1 << 16,
        }
    }
}

/// Walk PsActiveProcessHead. A broken link ends the walk with a warning
/// and what was read so far; only missing symbols are an error.
pub fn walk_processes<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    limits: &ProcessWalkLimits,
) -> Result<ProcessList, SymbolError> {
    let layout = EprocessLayout::new(syms)?;
    let head = KernelVa(
        kern_base
            .0
            .wrapping_add(syms.require_symbol_rva("PsActiveProcessHead")?),
    );
    let ring = Ring {
        head,
        links: layout.links,
        entry_size: layout.read_size,
        max_entries: limits.max_processes,
        head_name: "nt!PsActiveProcessHead",
        link_name: "process link",
        entry_name: "_EPROCESS",
        entries_name: "processes",
    };
    let mut list = ProcessList::default();
    let end = ring.walk(mem, |e| {
        let b = Le(e.bytes);
        let q = |o: u64| b.u64(o as usize).unwrap_or(0);
        let name_bytes = b.bytes(layout.name as usize, 15).unwrap_or(&[]);
        let name_len = name_bytes.iter().position(|c| *c == 0).unwrap_or(15);
        list.processes.push(Process {
            eprocess: e.va,
            pid: q(layout.pid),
            name: crate::bytes::escape_ascii(&name_bytes[..name_len]),
            dtb: PhysAddr(q(layout.dtb)),
            session: KernelVa(layout.session.map_or(0, q)),
        });
    });
    list.complete = end.is_complete();
    list.warnings.extend(ring.warning(&end));
    Ok(list)
}
