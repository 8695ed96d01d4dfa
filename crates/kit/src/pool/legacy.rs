//! The legacy allocator (Win7 to 1809): 4 KiB pool pages carved into
//! chunks whose `_POOL_HEADER`s chain through PreviousSize (docs/pool-structures.md §4);
//! a freed chunk keeps its tag with PoolType 0.

use crate::layout::StructBuf;
use crate::machine::Machine;
use crate::phys::PAGE64;
use crate::scenario::PoolKind;
use crate::tag::tag_string;
use crate::truth::{Allocation, AllocatorKind};

use super::format::{PAGED_POOLS, round16};
use super::state::{LegacyPage, Req};

impl Machine {
    pub(super) fn legacy_small(&mut self, r: &Req) -> Allocation {
        let units = round16(r.size + 0x10) / 16;
        if !r.live && !self.legacy_free_fits(r.kind, units) {
            // A free chunk next to another free chunk would have coalesced,
            // and one that starts a page would have released it: keep it
            // for after the next live chunk so its stale header survives.
            self.pool
                .deferred_frees
                .entry(r.kind)
                .or_default()
                .push(r.clone());
            return self.legacy_deferred_placeholder(r);
        }
        let a = self.legacy_chunk(r, units);
        if r.live {
            let next = self
                .pool
                .deferred_frees
                .get(&r.kind)
                .and_then(|v| v.last())
                .cloned();
            if let Some(next) = next {
                let u = round16(next.size + 0x10) / 16;
                if self.legacy_free_fits(r.kind, u) {
                    self.pool.deferred_frees.get_mut(&r.kind).map(|v| v.pop());
                    let b = self.legacy_chunk(&next, u);
                    self.truth.allocations.push(b);
                }
            }
        }
        a
    }

    /// Can a free chunk of `units` go next on the open page: after a live
    /// chunk, and without opening a new page?
    pub(super) fn legacy_free_fits(&self, kind: PoolKind, units: u64) -> bool {
        self.pool
            .legacy
            .get(&kind)
            .is_some_and(|p| p.used > 0 && !p.last_free && p.used + units * 16 <= PAGE64)
    }

    /// Deferred frees are placed later; the placeholder is dropped by
    /// `place` callers through `finish_pool_pages`.
    fn legacy_deferred_placeholder(&mut self, r: &Req) -> Allocation {
        Allocation {
            va: 0,
            header_va: None,
            extra_header_va: None,
            tag: tag_string(r.key),
            tag_value: r.key,
            pool: r.kind,
            size: r.size,
            block_bytes: 0,
            live: false,
            stale_header: false,
            allocator: AllocatorKind::LegacyPage,
            pa: None,
            in_dump: false,
            protected: false,
        }
    }

    pub(super) fn legacy_chunk(&mut self, r: &Req, units: u64) -> Allocation {
        let need_new = match self.pool.legacy.get(&r.kind) {
            None => true,
            Some(p) => p.used + units * 16 > PAGE64,
        };
        if need_new {
            self.close_legacy_page(r.kind);
            let va = self.pool_pages(r.kind, 1, 1);
            let pool_index = if r.kind.is_paged() {
                self.rng.u64(1..=PAGED_POOLS)
            } else {
                0
            };
            self.pool.legacy.insert(
                r.kind,
                LegacyPage {
                    va,
                    used: 0,
                    last_units: 0,
                    last_header: 0,
                    last_free: false,
                    pool_index,
                },
            );
        }
        let (h, prev, index) = {
            let p = &self.pool.legacy[&r.kind];
            (
                p.va + p.used,
                if p.used == 0 { 0 } else { p.last_units },
                p.pool_index,
            )
        };
        let ptype = if r.live {
            self.header_pool_type(r.kind, false)
        } else {
            0
        };
        let hdr = self.pool_header(prev, index, units, ptype, r.header_tag);
        self.write_va(h, &hdr);
        if r.live {
            self.fill_body(h + 0x10, r.size);
        } else {
            // A free chunk's body starts with its free-list links.
            let link = self.nonpaged.base + self.rng.u64(0..0x100_0000) * 16;
            self.write_u64(h + 0x10, link);
            self.write_u64(h + 0x18, link + 0x20);
        }
        let p = self.pool.legacy.get_mut(&r.kind).expect("page exists");
        p.used += units * 16;
        p.last_units = units;
        p.last_header = h;
        p.last_free = !r.live;
        self.alloc_record(r, h + 0x10, Some(h), units * 16, AllocatorKind::LegacyPage)
    }

    /// The rest of a page becomes one free chunk (merged into a free
    /// predecessor, as the allocator coalesces).
    pub(super) fn close_legacy_page(&mut self, kind: PoolKind) {
        let Some(p) = self.pool.legacy.remove(&kind) else {
            return;
        };
        let rest = PAGE64 - p.used;
        if rest == 0 {
            return;
        }
        if p.last_free {
            // Free chunks only follow live ones, so the merged chunk never
            // spans the whole page (BlockSize fits its 8 bits).
            let units = p.last_units + rest / 16;
            debug_assert!(units < 256);
            if let Some(a) = self
                .truth
                .allocations
                .iter_mut()
                .rev()
                .find(|a| a.header_va == Some(p.last_header))
            {
                a.block_bytes = units * 16;
            }
            let hdr = self.read_header_bytes(p.last_header);
            let mut h = StructBuf::new(self.m, "_POOL_HEADER");
            h.bytes.copy_from_slice(&hdr);
            h.set("BlockSize", units);
            let b = h.bytes;
            self.write_va(p.last_header, &b);
        } else {
            let hdr = self.pool_header(p.last_units, p.pool_index, rest / 16, 0, 0);
            self.write_va(p.va + p.used, &hdr);
        }
    }

    // The running machine (run/pool.rs) frees and seals through these.

    /// End the open legacy page of `kind` with a free chunk, as the
    /// allocator leaves it between calls (the page stays open).
    pub(crate) fn seal_legacy_page(&mut self, kind: PoolKind) {
        let Some(p) = self.pool.legacy.get(&kind) else {
            return;
        };
        let rest = PAGE64 - p.used;
        if rest == 0 || p.last_free {
            return;
        }
        let (at, prev, index) = (p.va + p.used, p.last_units, p.pool_index);
        let hdr = self.pool_header(prev, index, rest / 16, 0, 0);
        self.write_va(at, &hdr);
    }

    /// Free a legacy chunk: PoolType 0, the tag and sizes kept.
    pub(crate) fn legacy_release(&mut self, header: u64) {
        let raw = self.read_header_bytes(header);
        let mut h = StructBuf::new(self.m, "_POOL_HEADER");
        h.bytes.copy_from_slice(&raw);
        h.set("PoolType", 0);
        let b = h.bytes;
        self.write_va(header, &b);
    }
}
