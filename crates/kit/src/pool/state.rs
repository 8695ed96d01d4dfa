//! What placement remembers between allocations: the open legacy page of
//! each pool, frees waiting for a live neighbour, the segments and
//! subsegments of the segment heap, and every big allocation (for the
//! big-page table). The machine holds one [`PoolState`].

use std::collections::BTreeMap;

use crate::scenario::PoolKind;

/// One allocation request.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub key: u32,
    pub header_tag: u32,
    pub kind: PoolKind,
    pub size: u64,
    pub live: bool,
    pub cache_aligned: bool,
}

#[derive(Default)]
pub(crate) struct PoolState {
    pub(super) legacy: BTreeMap<PoolKind, LegacyPage>,
    pub(super) deferred_frees: BTreeMap<PoolKind, Vec<Req>>,
    pub segments: BTreeMap<PoolKind, Vec<Segment>>,
    pub(super) lfh: BTreeMap<(PoolKind, u64), usize>,
    pub lfh_subs: Vec<LfhSub>,
    pub(super) vs: BTreeMap<PoolKind, usize>,
    pub vs_subs: Vec<VsSub>,
    /// VS chunks whose pool header moved to the next page's start, by
    /// that header: the chunk header is not right in front of it.
    pub vs_moved: BTreeMap<u64, u64>,
    pub big: Vec<BigRec>,
    /// Segments linked into their heaps' lists (the running machine adds
    /// segments after the build wrote them).
    pub segments_linked: usize,
    /// A session's own heap: headers say PagedPoolSession.
    pub session: bool,
}

impl PoolState {
    /// A session's own heap's state.
    pub(crate) fn for_session() -> Self {
        Self {
            session: true,
            ..Self::default()
        }
    }
}

pub(super) struct LegacyPage {
    pub va: u64,
    pub used: u64,
    pub last_units: u64,
    pub last_header: u64,
    pub last_free: bool,
    pub pool_index: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub va: u64,
    pub(super) next_page: u64,
}

pub(crate) struct LfhSub {
    pub va: u64,
    pub block: u64,
    pub first: u64,
    pub count: u64,
    pub next: u64,
    pub allocated: Vec<bool>,
}

pub(crate) struct VsSub {
    pub va: u64,
    pub seg: u64,
    pub off: u64,
    pub prev_units: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct BigRec {
    pub va: u64,
    pub key: u32,
    pub pool_type: u32,
    pub bytes: u64,
    pub freed: bool,
}
