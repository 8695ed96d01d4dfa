//! Session pool in the frame scan: each session's paged pool is mapped at
//! the same addresses in every session, through page tables only that
//! session's processes use (docs/pool-structures.md §2, §6). The dump
//! header's DirectoryTableBase is one process's: it maps one session (or
//! none), so a walk of it alone would leave every other session's pool
//! frames without an address. `!poolfind Tag 4` reads session space
//! through the current process context, one session at a time; here
//! every session on PsActiveProcessHead is walked through one of its own
//! processes, and all are merged into the map at once.

use super::*;
use crate::memory::ProcessSpace;
use crate::pool::session::sessions_of;
use crate::processes::{ProcessList, ProcessWalkLimits, walk_processes};

/// Session space spans one PML4 slot at most: a `PagedPoolStart..End`
/// wider than that is not a session's pool.
const MAX_SESSION_POOL: u64 = 1 << 39;

/// One session's paged pool, as mapped for the scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionPoolMap {
    /// `_MM_SESSION_SPACE.SessionId`.
    pub session_id: u32,
    /// The `_MM_SESSION_SPACE` (`EPROCESS.Session`).
    pub session_space: KernelVa,
    /// `PagedPoolStart..=PagedPoolEnd`.
    pub range: VaRange,
    /// The page tables walked (its first process whose tables map any of
    /// the range).
    pub dtb: PhysAddr,
    /// Pages of the range mapped.
    pub mapped_pages: u64,
    /// The session's own segment heap (19H1+), as its segments' signatures
    /// name it: met while checking the headers found in its pool, so
    /// `None` on the legacy allocator, or when no header found there lay
    /// in a segment that vouched for its heap.
    pub heap: Option<KernelVa>,
    /// The session's own big-page table (`PoolTrackBigPages`) and its
    /// entries whose tag matched; `None` when it was not read (no
    /// `big_pool`), the session has none, or it could not be read.
    pub big_pages: Option<BigPoolScan>,
}

/// Add every session's paged pool (`_MM_SESSION_SPACE.PagedPoolStart` to
/// `PagedPoolEnd`) to `map`, each walked through one of its processes in
/// `procs` ([`crate::processes::walk_processes`]), as that session's
/// mappings ([`PageMap::add_session`]); what could not be done goes to
/// `warnings`. The walks share `opts`' bounds with the walk that made
/// `map`. Returns the sessions mapped, by id.
pub fn map_session_pools<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    procs: &ProcessList,
    map: &mut PageMap,
    opts: &PageMapOptions,
    warnings: &mut Vec<String>,
) -> Vec<SessionPoolMap> {
    let Some(fields) = SessionFields::new(syms) else {
        warnings.push(
            "the symbols lack _MM_SESSION_SPACE's SessionId, PagedPoolStart or PagedPoolEnd: session pool is found only where the dump's own page tables map it"
                .into(),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    // Tables read by every walk so far, the kernel's included, whether or
    // not a walk mapped anything.
    let mut spent = map.stats.tables_read;
    // Mapping runs kept so far, the same way.
    let mut kept = map.mappings().len() as u64;
    let mut walks = Vec::new();
    let mut skipped = Skipped::default();
    for (session, members) in sessions_of(procs) {
        let (id, range) = match fields.pool_range(mem, session) {
            Ok(r) => r,
            Err(why) => {
                skipped.note(why);
                continue;
            }
        };
        // One budget for all the walks, the kernel's included: a hostile
        // process list cannot multiply the bounds by its sessions.
        let left = PageMapOptions {
            max_tables: opts.max_tables.saturating_sub(spent),
            max_mappings: opts.max_mappings.saturating_sub(kept),
        };
        if left.max_tables == 0 || left.max_mappings == 0 {
            warnings.push(format!(
                "the page-table walks reached their bounds before session {id}: its pool and those after it are not mapped"
            ));
            break;
        }
        // Every process of a session shares its session-space tables: a
        // few tries are enough.
        let walked = members.iter().take(4).find_map(|p| {
            let space = ProcessSpace::new(mem, p.dtb);
            let w = PageMap::walk(&space, Some(&[range]), &left);
            spent += w.stats.tables_read;
            (!w.mappings().is_empty()).then_some((p.dtb, w))
        });
        let Some((dtb, walk)) = walked else {
            // A session whose pool has no resident page: nothing to scan.
            continue;
        };
        let mapped_pages = walk.mappings().iter().map(|m| m.pages).sum();
        kept += walk.mappings().len() as u64;
        walks.push((walk, id));
        out.push(SessionPoolMap {
            session_id: id,
            session_space: session,
            range,
            dtb,
            mapped_pages,
            heap: None,
            big_pages: None,
        });
    }
    map.add_sessions(walks);
    if let Some(first) = skipped.first {
        let more = match skipped.count {
            1 => String::new(),
            n => format!(" (and {} more sessions like it)", n - 1),
        };
        warnings.push(format!("{first}{more}: its pool is not mapped"));
    }
    out.sort_by_key(|s| s.session_id);
    out
}

/// Session `id` for a look at one address (`!session -s N`): its
/// `_MM_SESSION_SPACE`, pool range and the page tables of its first
/// process, with nothing mapped yet.
pub(super) fn session_by_id<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    id: u32,
) -> Result<SessionPoolMap, PoolAtError> {
    let err = |why: String| PoolAtError::Session { id, why };
    let fields = SessionFields::new(syms).ok_or_else(|| {
        err("the symbols lack _MM_SESSION_SPACE's SessionId, PagedPoolStart or PagedPoolEnd".into())
    })?;
    let procs = walk_processes(mem, syms, kern_base, &ProcessWalkLimits::default())
        .map_err(|e| err(format!("the process list cannot be read ({e})")))?;
    let mut known = Vec::new();
    for (session, members) in sessions_of(&procs) {
        let Ok((sid, range)) = fields.pool_range(mem, session) else {
            continue;
        };
        if sid == id {
            let first = members
                .first()
                .expect("a session is listed with its processes");
            return Ok(SessionPoolMap {
                session_id: id,
                session_space: session,
                range,
                dtb: first.dtb,
                mapped_pages: 0,
                heap: None,
                big_pages: None,
            });
        }
        known.push(sid.to_string());
    }
    Err(err(if known.is_empty() {
        "no process on PsActiveProcessHead is in a session".into()
    } else {
        format!(
            "not on PsActiveProcessHead (its sessions: {})",
            known.join(", ")
        )
    }))
}

/// What reading a session-space address through the source's own page
/// tables shows: whose session they are (the process current at the crash,
/// or a live target's).
pub(super) fn current_session_note<M: Memory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    kern_base: KernelVa,
    va: KernelVa,
) -> String {
    // As KPROCESS.DirectoryTableBase holds them: PCID bits dropped.
    let root = |dtb: PhysAddr| ProcessSpace::new(mem, dtb).kernel_dtb();
    let dtb = root(mem.kernel_dtb());
    let whose = walk_processes(mem, syms, kern_base, &ProcessWalkLimits::default())
        .ok()
        .and_then(|procs| {
            let p = procs.processes.into_iter().find(|p| root(p.dtb) == dtb)?;
            if p.session.0 == 0 {
                return Some(format!("{}'s, in no session", p.name));
            }
            let id = SessionFields::new(syms)?.pool_range(mem, p.session).ok()?.0;
            Some(format!("{}'s, in session {id}", p.name))
        })
        .unwrap_or_else(|| "those of no process on PsActiveProcessHead".into());
    format!(
        "{va} is session space, read through the source's own page tables ({whose}): each session maps it to frames of its own, and --session N reads it through session N's"
    )
}

/// Sessions left out, said once however many a hostile process list
/// makes: the first reason and a count.
#[derive(Default)]
struct Skipped {
    first: Option<String>,
    count: u64,
}

impl Skipped {
    fn note(&mut self, why: String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(why);
        }
    }
}

/// The `_MM_SESSION_SPACE` members that place a session's pool.
struct SessionFields {
    id: Field,
    start: Field,
    end: Field,
}

impl SessionFields {
    fn new(syms: &KernelSymbols) -> Option<Self> {
        let f = |m: &str| syms.field("_MM_SESSION_SPACE", m).ok();
        Some(Self {
            id: f("SessionId")?,
            start: f("PagedPoolStart")?,
            end: f("PagedPoolEnd")?,
        })
    }

    /// The session at `session`: its id and `PagedPoolStart..=PagedPoolEnd`,
    /// or why they are not a session's pool.
    fn pool_range<M: Memory + ?Sized>(
        &self,
        mem: &M,
        session: KernelVa,
    ) -> Result<(u32, VaRange), String> {
        let at = |f: &Field| KernelVa(session.0.wrapping_add(f.offset));
        let (Ok(id), Ok(start), Ok(end)) = (
            mem.read_u32(at(&self.id)),
            mem.read_u64(at(&self.start)),
            mem.read_u64(at(&self.end)),
        ) else {
            return Err(format!("the _MM_SESSION_SPACE at {session} cannot be read"));
        };
        if !KernelVa(start).is_kernel() || end < start || end - start >= MAX_SESSION_POOL {
            return Err(format!(
                "session {id}'s PagedPoolStart {} to PagedPoolEnd {} is not a session pool range",
                KernelVa(start),
                KernelVa(end)
            ));
        }
        Ok((id, VaRange::new(start, end)))
    }
}
