//! Hits counted: one row per call site (the first frame outside nt, or
//! the driver's frame that called KMDF's framework), with
//! allocations and frees apart, bytes requested, and each distinct stack
//! with its count; stops that were not pool calls listed apart.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DecidedBy, Hit, HitKind, PoolCall};
use crate::addr::KernelVa;

/// One frame of a stack as WinDbg's `kb` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrameRow {
    /// RSP while the frame's function runs (`kb`'s Child-SP).
    pub child_sp: KernelVa,
    /// Where the frame's function returns (`kb`'s RetAddr); None when the walk could not tell.
    pub ret_addr: Option<KernelVa>,
    /// Where the frame's function is executing.
    pub pc: KernelVa,
    /// `module!function+0xoff`.
    pub call_site: String,
}

/// A distinct stack (by its frames' PCs) and how often it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackRow {
    /// Hits with this stack.
    pub count: u64,
    /// The frames of its first occurrence.
    pub frames: Vec<FrameRow>,
    /// Why the walk ended.
    pub end: String,
}

/// A call site and what was seen there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteRow {
    /// The return address into the caller (`module!function+0xoff`).
    pub site: String,
    /// The return address into the caller, as an address.
    pub site_va: KernelVa,
    /// The caller's `call` instruction, when decoded.
    pub call_va: Option<KernelVa>,
    /// The caller's module's short name (`leakydrv`), when in a module.
    pub module: Option<String>,
    /// Where the site called KMDF's framework, which then called the pool
    /// for it: the framework's frame the site returns from
    /// (`Wdf01000!imp_WdfMemoryCreate+0x5a`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
    /// Hits that allocated.
    pub allocs: u64,
    /// Hits that freed.
    pub frees: u64,
    /// Sum of the sizes requested by the allocations whose size is known.
    pub bytes_requested: u64,
    /// Allocations whose size the caller's code did not tell.
    pub unknown_sizes: u64,
    /// How the kind was decided (the last hit's reason).
    pub decided_by: Vec<DecidedBy>,
    /// Distinct stacks through the site (at most 64; most frequent first
    /// once [`HitTable::sorted`]).
    pub stacks: Vec<StackRow>,
}

/// A stop that was not a pool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtherStop {
    /// Where the stop was (the first frame's PC).
    pub pc: KernelVa,
    /// The same, named (`module!function+0xoff`).
    pub at: String,
    /// Why it is not a pool call.
    pub reason: String,
    /// Stops at this PC for this reason.
    pub count: u64,
}

/// Call sites, sorted by hits (most first), and the other stops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HitTable {
    /// Call sites (most hits first once [`HitTable::sorted`]).
    pub sites: Vec<SiteRow>,
    /// Stops that were not pool calls.
    pub other: Vec<OtherStop>,
    /// Stops analysed.
    pub hits: u64,
    /// Stops that were pool calls.
    pub pool_hits: u64,
}

/// Distinct stacks kept per site at most.
const MAX_STACKS_PER_SITE: usize = 64;

impl HitTable {
    /// Count one analysed stop.
    pub fn add(&mut self, hit: &Hit) {
        self.hits += 1;
        let frames: Vec<FrameRow> = hit
            .trace
            .frames
            .iter()
            .zip(&hit.symbols)
            .map(|(f, s)| FrameRow {
                child_sp: f.child_sp,
                ret_addr: f.ret_addr,
                pc: f.pc,
                call_site: s.to_string(),
            })
            .collect();
        let (call, decided_by) = match &hit.kind {
            HitKind::Pool { call, decided_by } => (*call, decided_by.clone()),
            HitKind::Other { reason } => {
                let pc = hit.trace.frames.first().map_or(KernelVa(0), |f| f.pc);
                let at = hit
                    .symbols
                    .first()
                    .map_or_else(|| pc.to_string(), |s| s.to_string());
                match self
                    .other
                    .iter_mut()
                    .find(|o| o.pc == pc && &o.reason == reason)
                {
                    Some(o) => o.count += 1,
                    None => self.other.push(OtherStop {
                        pc,
                        at,
                        reason: reason.clone(),
                        count: 1,
                    }),
                }
                return;
            }
        };
        self.pool_hits += 1;
        let k = hit.site.expect("a pool hit has a site");
        let site_va = hit.trace.frames[k].pc;
        let row = match self.sites.iter().position(|r| r.site_va == site_va) {
            Some(i) => &mut self.sites[i],
            None => {
                self.sites.push(SiteRow {
                    site: hit.symbols[k].to_string(),
                    site_va,
                    call_va: hit.call.map(|c| KernelVa(c.va)),
                    module: hit.symbols[k].module.clone(),
                    through: (hit.caller != hit.site)
                        .then(|| k.checked_sub(1).map(|i| hit.symbols[i].to_string()))
                        .flatten(),
                    allocs: 0,
                    frees: 0,
                    bytes_requested: 0,
                    unknown_sizes: 0,
                    decided_by: Vec::new(),
                    stacks: Vec::new(),
                });
                self.sites.last_mut().expect("just pushed")
            }
        };
        match call {
            PoolCall::Alloc => {
                row.allocs += 1;
                match hit.size {
                    Some(n) => row.bytes_requested = row.bytes_requested.saturating_add(n),
                    None => row.unknown_sizes += 1,
                }
            }
            PoolCall::Free => row.frees += 1,
        }
        if !row.decided_by.contains(&decided_by) {
            row.decided_by.push(decided_by);
        }
        let key: Vec<KernelVa> = frames.iter().map(|f| f.pc).collect();
        let same = |s: &StackRow| s.frames.iter().map(|f| f.pc).eq(key.iter().copied());
        if let Some(i) = row.stacks.iter().position(same) {
            row.stacks[i].count += 1;
        } else if row.stacks.len() < MAX_STACKS_PER_SITE {
            row.stacks.push(StackRow {
                count: 1,
                frames,
                end: hit.trace.end.to_string(),
            });
        }
    }

    /// Count a stop the caller knows is not a pool call (an exception
    /// other than a breakpoint, a load-symbols notification).
    pub fn add_other(&mut self, pc: KernelVa, reason: String) {
        self.hits += 1;
        match self
            .other
            .iter_mut()
            .find(|o| o.pc == pc && o.reason == reason)
        {
            Some(o) => o.count += 1,
            None => self.other.push(OtherStop {
                pc,
                at: pc.to_string(),
                reason,
                count: 1,
            }),
        }
    }

    /// Sites by total hits (most first), then by address; stacks by count.
    pub fn sorted(mut self) -> Self {
        self.sites
            .sort_by(|a, b| (b.allocs + b.frees, a.site_va).cmp(&(a.allocs + a.frees, b.site_va)));
        for s in &mut self.sites {
            s.stacks.sort_by_key(|x| std::cmp::Reverse(x.count));
        }
        self.other.sort_by_key(|x| std::cmp::Reverse(x.count));
        self
    }

    /// Hits per site by kind, for comparisons: (site, call) -> count.
    pub fn counts(&self) -> BTreeMap<(String, PoolCall), u64> {
        let mut m = BTreeMap::new();
        for s in &self.sites {
            if s.allocs > 0 {
                m.insert((s.site.clone(), PoolCall::Alloc), s.allocs);
            }
            if s.frees > 0 {
                m.insert((s.site.clone(), PoolCall::Free), s.frees);
            }
        }
        m
    }
}
