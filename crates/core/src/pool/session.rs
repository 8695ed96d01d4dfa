//! Session pool: what `!poolused 8` shows (docs/pool-structures.md §2).
//!
//! Tags of session pool allocations are tracked apart from the global
//! tracker, in a table in session space: one VA (nt!ExpSessionPoolTrackTable,
//! or each session's `_MM_SESSION_SPACE.PoolTags` pointer on Windows 11)
//! that every session maps to its own pages. So each session is read
//! through the page tables of one of its processes, found on
//! PsActiveProcessHead by `EPROCESS.Session`. The table has
//! ExpSessionPoolTrackTableSize entries (a power of two, no overflow slot,
//! no per-processor copies); tags that found no slot sit in the session's
//! own expansion table (`PoolTrackTableExpansion`).

use serde::Serialize;

use crate::warning::{Warning, WarningKind};

use std::cell::RefCell;

use super::SessionBigBudget;
use super::bigpool::BigPoolTable;
use super::read::{Array, describe_missing, read_array, read_nt_var};
use super::tracker::{EntryLayout, push_rows, read_expansion_table, totals, warn_clamped};
use super::{PoolError, TagUsage, Totals, TrackerOptions, TrackerSlot};
use crate::addr::{KernelVa, PhysAddr};
use crate::memory::{Memory, MemoryExt, ProcessSpace};
use crate::processes::{Process, ProcessList};
use crate::symbols::{Field, KernelSymbols, SymbolError};
use crate::tag::PoolTag;

/// A process of a session, as `!session` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionProcess {
    /// EPROCESS.UniqueProcessId.
    pub pid: u64,
    /// EPROCESS.ImageFileName (at most 15 characters).
    pub name: String,
}

/// One session's tracker.
#[derive(Debug, Clone, Serialize)]
pub struct SessionUsage {
    /// `_MM_SESSION_SPACE.SessionId`; None when the structure is unreadable.
    pub session_id: Option<u32>,
    /// The `_MM_SESSION_SPACE` its processes point at (`EPROCESS.Session`).
    pub session_space: KernelVa,
    /// The session's processes, as found on PsActiveProcessHead.
    pub processes: Vec<SessionProcess>,
    /// The page tables the session's table was read through.
    pub dtb: PhysAddr,
    /// The table (a session-space address).
    pub table: KernelVa,
    /// ExpSessionPoolTrackTableSize: entries in the table.
    pub size: u64,
    /// _MM_SESSION_SPACE.PoolTrackTableExpansion (0 when absent).
    pub expansion: KernelVa,
    /// _MM_SESSION_SPACE.PoolTrackTableExpansionSize: its entries.
    pub expansion_size: u64,
    /// Expansion entries in use.
    pub expansion_used: u64,
    /// One row per tag and pool type with any activity, in tag order.
    pub rows: Vec<TagUsage>,
    /// The session's figures, all tags summed.
    pub totals: Totals,
    /// The session's own big-page table (`PoolTrackBigPages`), live
    /// entries then freed ones: session pool's allocations too big for a
    /// pool page (legacy) or of 0xFE1 bytes and more (segment heap), which
    /// the global PoolBigPageTable does not hold. `None` when the session
    /// has none or it could not be read (said in `warnings`).
    pub big_pages: Option<BigPoolTable>,
    /// What could not be read in this session.
    pub warnings: Vec<Warning>,
}

/// Every session's usage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionPool {
    /// By session id.
    pub sessions: Vec<SessionUsage>,
    /// Processes on PsActiveProcessHead (with or without a session).
    pub processes: usize,
    /// ExpSessionPoolTrackTableSize.
    pub table_size: u64,
    /// What could not be read before the sessions (the process list, the table's globals).
    pub warnings: Vec<Warning>,
}

/// Where each session's table is.
enum TableSource {
    /// nt!ExpSessionPoolTrackTable: one session-space VA.
    Global(KernelVa),
    /// `_MM_SESSION_SPACE.PoolTags` holds a pointer (Windows 11).
    Pointer(u64),
    /// `_MM_SESSION_SPACE.PoolTags` is the table itself, read through the
    /// structure's system-wide address (when the global is not in the
    /// symbols).
    Inline(u64),
}

/// Read the session trackers of every session on `procs`.
pub fn read_session_pool<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    procs: &ProcessList,
    opts: &TrackerOptions,
) -> Result<SessionPool, PoolError> {
    let layout = EntryLayout::new(syms)?;
    let groups = sessions_of(procs);
    if groups.is_empty() {
        return Ok(SessionPool {
            processes: procs.processes.len(),
            warnings: vec![Warning::new(
                WarningKind::SessionPool,
                format!(
                    "none of the {} processes on PsActiveProcessHead belongs to a session",
                    procs.processes.len()
                ),
            )],
            ..Default::default()
        });
    }
    let mut warnings = Vec::new();
    let r = SessionRead::new(mem, syms, kern_base, opts, layout, &mut warnings)?;
    let mut sessions: Vec<SessionUsage> = groups
        .into_iter()
        .filter_map(|(session, members)| r.session(session, &members, &mut warnings))
        .collect();
    sessions.sort_by_key(|s| (s.session_id.unwrap_or(u32::MAX), s.session_space));
    Ok(SessionPool {
        sessions,
        processes: procs.processes.len(),
        table_size: r.size,
        warnings: Warning::all(WarningKind::SessionPool, warnings),
    })
}

/// Sessions (their `EPROCESS.Session`) and their processes, in the order
/// their first process appears.
pub(crate) fn sessions_of(procs: &ProcessList) -> Vec<(KernelVa, Vec<&Process>)> {
    let mut groups: Vec<(KernelVa, Vec<&Process>)> = Vec::new();
    for p in procs.processes.iter().filter(|p| p.session.0 != 0) {
        match groups.iter_mut().find(|(s, _)| *s == p.session) {
            Some((_, v)) => v.push(p),
            None => groups.push((p.session, vec![p])),
        }
    }
    groups
}

/// What reading every session's table needs: the table's size and where
/// it is, and the `_MM_SESSION_SPACE` fields read per session.
struct SessionRead<'a, M: ?Sized> {
    mem: &'a M,
    syms: &'a KernelSymbols,
    /// What the sessions' big-page tables may still hold together.
    big_budget: RefCell<SessionBigBudget>,
    opts: &'a TrackerOptions,
    layout: EntryLayout,
    size: u64,
    source: TableSource,
    id_field: Field,
    exp_field: Option<Field>,
    exp_size_field: Option<Field>,
}

impl<'a, M: Memory + ?Sized> SessionRead<'a, M> {
    fn new(
        mem: &'a M,
        syms: &'a KernelSymbols,
        kern_base: KernelVa,
        opts: &'a TrackerOptions,
        layout: EntryLayout,
        warnings: &mut Vec<String>,
    ) -> Result<Self, PoolError> {
        // The three globals are SIZE_T / PVOID.
        let global = |name: &str| read_nt_var(mem, syms, kern_base, name, 8);
        let size = global("ExpSessionPoolTrackTableSize")?;
        if !(1..=opts.max_entries).contains(&size) {
            return Err(PoolError::Implausible {
                what: super::read::var_label(syms, "ExpSessionPoolTrackTableSize"),
                value: size,
                limit: opts.max_entries,
            });
        }
        if let Ok(mask) = global("ExpSessionPoolTrackTableMask")
            && (!size.is_power_of_two() || mask != size - 1)
        {
            warnings.push(format!(
                "ExpSessionPoolTrackTableSize {size:#x} and ExpSessionPoolTrackTableMask {mask:#x} are not the kernel's 2^n / 2^n-1 pair"
            ));
        }
        let ss = "_MM_SESSION_SPACE";
        let source = if syms.symbol("ExpSessionPoolTrackTable").is_some() {
            let t = KernelVa(global("ExpSessionPoolTrackTable")?);
            if !t.is_kernel() {
                return Err(PoolError::BadPointer {
                    what: super::read::var_label(syms, "ExpSessionPoolTrackTable"),
                    va: t,
                });
            }
            TableSource::Global(t)
        } else {
            match syms.field(ss, "PoolTags").ok() {
                Some(f) if f.is_pointer() => TableSource::Pointer(f.offset),
                Some(f) => TableSource::Inline(f.offset),
                None => {
                    return Err(PoolError::Symbol(SymbolError::MissingSymbol {
                        name: "ExpSessionPoolTrackTable".into(),
                        symbols: syms.describe(),
                    }));
                }
            }
        };
        Ok(Self {
            mem,
            syms,
            big_budget: RefCell::new(SessionBigBudget::new(opts.max_session_big_entries)),
            opts,
            layout,
            size,
            source,
            id_field: syms.field(ss, "SessionId")?,
            exp_field: syms.field(ss, "PoolTrackTableExpansion").ok(),
            exp_size_field: syms.field(ss, "PoolTrackTableExpansionSize").ok(),
        })
    }

    /// One session's usage, or `None` (with a warning) when no process of
    /// it reaches its table.
    fn session(
        &self,
        session: KernelVa,
        members: &[&Process],
        warnings: &mut Vec<String>,
    ) -> Option<SessionUsage> {
        if !session.is_kernel() {
            warnings.push(format!(
                "process {} ({}) has Session {session}, not a kernel address; skipped",
                members[0].pid, members[0].name
            ));
            return None;
        }
        let mut w = Vec::new();
        let session_id = match self
            .mem
            .read_u32(session.wrapping_add(self.id_field.offset))
        {
            Ok(v) => Some(v),
            Err(e) => {
                w.push(format!("cannot read the session's SessionId: {e}"));
                None
            }
        };
        let (dtb, table, arr) = match self.find_table(session, members) {
            Ok(found) => found,
            Err(why) => {
                warnings.push(format!(
                    "session {} at {session}: {why}",
                    session_id.map_or_else(|| "?".to_string(), |i| i.to_string()),
                ));
                return None;
            }
        };
        if !arr.missing.is_empty() {
            w.push(format!(
                "session tracker at {table}: {} are not in the dump; those slots' tags are left out",
                describe_missing(&arr)
            ));
        }
        let mut rows = self.rows(&arr);
        let (exp, exp_size, exp_used) = self.expansion(session, dtb, &mut rows, &mut w);
        warn_clamped(&rows, &mut w);
        rows.sort_by_key(|r| (r.tag.bytes(), r.pool));
        let big_pages = self.big_pages(session, dtb, &mut w);
        Some(SessionUsage {
            session_id,
            session_space: session,
            processes: members
                .iter()
                .map(|p| SessionProcess {
                    pid: p.pid,
                    name: p.name.clone(),
                })
                .collect(),
            dtb,
            table,
            size: self.size,
            expansion: exp,
            expansion_size: exp_size,
            expansion_used: exp_used,
            totals: totals(&rows),
            rows,
            big_pages,
            warnings: Warning::all(WarningKind::SessionPool, w),
        })
    }

    /// The session's own expansion table (`PoolTrackTableExpansion` and its
    /// size in `_MM_SESSION_SPACE`), read through `dtb`, into `rows`: its
    /// address, size and the entries used.
    fn expansion(
        &self,
        session: KernelVa,
        dtb: PhysAddr,
        rows: &mut Vec<TagUsage>,
        w: &mut Vec<String>,
    ) -> (KernelVa, u64, u64) {
        let read_ptr = |f: &Option<Field>| -> Option<u64> {
            f.as_ref()
                .and_then(|f| self.mem.read_u64(session.wrapping_add(f.offset)).ok())
        };
        let exp = KernelVa(read_ptr(&self.exp_field).unwrap_or(0));
        let exp_size = read_ptr(&self.exp_size_field).unwrap_or(0);
        let used = read_expansion_table(
            &ProcessSpace::new(self.mem, dtb),
            &self.layout,
            exp,
            exp_size,
            "the session's PoolTrackTableExpansion",
            self.opts,
            rows,
            w,
        )
        .unwrap_or_else(|e| {
            w.push(format!("{e}; its tags are missing"));
            0
        });
        (exp, exp_size, used)
    }

    /// The session's big-page table, read through `dtb`; what went wrong
    /// goes to `w`.
    fn big_pages(
        &self,
        session: KernelVa,
        dtb: PhysAddr,
        w: &mut Vec<String>,
    ) -> Option<BigPoolTable> {
        if self.opts.max_session_big_entries == 0 {
            return None;
        }
        let view = ProcessSpace::new(self.mem, dtb);
        let read = self
            .big_budget
            .borrow_mut()
            .read(&view, self.syms, session, true);
        match read {
            Ok(t) => {
                let t = t?;
                w.extend(t.warnings.iter().map(|x| format!("big pages: {x}")));
                Some(t)
            }
            Err(e) => {
                w.push(format!("its big-page table cannot be read: {e}"));
                None
            }
        }
    }

    /// Try the session's processes in turn until one's page tables reach
    /// the table: the page tables used, the table and its entries, or why
    /// none did.
    fn find_table(
        &self,
        session: KernelVa,
        members: &[&Process],
    ) -> Result<(PhysAddr, KernelVa, Array), String> {
        let (mem, size) = (self.mem, self.size);
        let mut last_error = None;
        for p in members.iter().filter(|p| p.dtb.0 & !0xFFF != 0) {
            let view = ProcessSpace::new(mem, p.dtb);
            let (table, through_session) = match self.source {
                TableSource::Global(t) => (t, true),
                TableSource::Pointer(off) => match view.read_u64(session.wrapping_add(off)) {
                    Ok(t) => (KernelVa(t), true),
                    Err(e) => {
                        last_error = Some(format!("cannot read its PoolTags pointer: {e}"));
                        continue;
                    }
                },
                TableSource::Inline(off) => (session.wrapping_add(off), false),
            };
            if !table.is_kernel() {
                last_error = Some(format!("its PoolTags is {table}, not a kernel address"));
                break;
            }
            let arr = if through_session {
                read_array(&view, table, size, self.layout.size)
            } else {
                read_array(mem, table, size, self.layout.size)
            };
            if arr.missing_count() == size {
                last_error = Some(format!(
                    "its table at {table} is not readable through process {} ({}): {}",
                    p.pid,
                    p.name,
                    describe_missing(&arr)
                ));
                continue;
            }
            return Ok((p.dtb, table, arr));
        }
        Err(last_error.unwrap_or_else(|| "no process of it has page tables".into()))
    }

    /// The rows of a session's table: every keyed slot (the table has no
    /// overflow slot and no per-processor copies).
    fn rows(&self, arr: &Array) -> Vec<TagUsage> {
        let layout = &self.layout;
        let mut rows = Vec::new();
        for i in (0..self.size).filter(|&i| !arr.is_missing(i)) {
            let e = arr.entry(i, layout.size);
            let k = layout.key(e);
            if k == 0 {
                continue;
            }
            let mut v = [0; 6];
            layout.add(&mut v, layout.values(e));
            push_rows(
                &mut rows,
                PoolTag(k),
                TrackerSlot::Hashed { index: i },
                v,
                layout.counter_mask,
                self.opts.include_zero,
            );
        }
        rows
    }
}
