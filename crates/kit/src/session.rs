//! Processes and sessions (docs/pool-structures.md §2).
//!
//! PsActiveProcessHead links an `_EPROCESS` per process: System (the
//! kernel's own address space) and smss.exe outside any session, then the
//! scenario's sessions' processes, each with its own PML4. A session is an
//! `_MM_SESSION_SPACE` allocated at a system-wide address (what
//! `EPROCESS.Session` holds, and where Volatility reads `SessionId`) whose
//! frames are mapped a second time at `MmSessionSpace` in the session's own
//! PML4 slot. That slot is shared by the session's processes only, so the
//! session tracker table (`ExpSessionPoolTrackTable`, or the `PoolTags`
//! pointer on Windows 11) has the same VA in every session and different
//! contents in each: a reader must go through a DTB of the right session.

use crate::builds::Allocator;
use crate::layout::StructBuf;
use crate::machine::Machine;
use crate::paging::{AddressSpace, Prot, sign_extend};
use crate::phys::{GB, PAGE64};
use crate::pool::{LEGACY_BIG, SEG_HEAP_BIG};
use crate::scenario::SessionSpec;
use crate::session_pool::{PendingSessionHeap, SessionBlock, SessionPool};
use crate::tag::{tag_string, tag_value};
use crate::tracker::{tag_hash, tag_row};
use crate::truth::{Counters, ProcessTruth, SessionTruth, TagUsage, TrackerSlot};

const SLOT: u64 = 1 << 39;
/// The size of a session's paged pool (PagedPoolStart to PagedPoolEnd).
const SESSION_POOL_BYTES: u64 = 0x1_0000_0000;
/// Session space before Windows 10 1607: 0xFFFFF900`00000000, one PML4 slot
/// (docs/pool-structures.md §6).
const LEGACY_SESSION_SLOT: u64 = 0x1F2;
/// Before the inline `PoolTags` array, the table followed the structure at
/// MmSessionSpace + 0x2000 (docs/pool-structures.md §2).
const LEGACY_TABLE_OFFSET: u64 = 0x2000;

/// A tag's session tracker counters: (key, allocs, frees, bytes).
type Charge = (u32, u64, u64, u64);

/// Freed big allocations of a tag whose stale entries the session's
/// big-page table keeps, at most.
const FREED_BIG_KEPT: u64 = 2;

/// What the process builder needs of a built session.
struct BuiltSession {
    /// The first process's address space (every session-space write goes
    /// through it).
    asp: AddressSpace,
    global_va: u64,
    truth: SessionTruth,
}

impl Machine {
    /// PML4 slot of session space.
    fn session_slot(&self) -> u64 {
        if !self.scenario.build.has_kaslr_regions() {
            return LEGACY_SESSION_SLOT;
        }
        let base = self
            .truth
            .regions
            .iter()
            .find(|r| r.name == "AssignedRegionSession")
            .expect("1607+ builds assign a session region")
            .base;
        (base >> 39) & 0x1FF
    }

    /// Build the sessions, then the processes, and link PsActiveProcessHead.
    /// Runs before the tracker is built: EPROCESS allocations are charged
    /// to 'Proc' like any other.
    pub(crate) fn build_processes(&mut self) {
        let (slot, mm_session_space, session_pool) = self.session_space();
        let specs = self.scenario.sessions.clone();
        let mut sessions: Vec<BuiltSession> = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| self.build_session(index, spec, mm_session_space, session_pool))
            .collect();

        let mut procs: Vec<(String, Option<usize>)> =
            vec![("System".into(), None), ("smss.exe".into(), None)];
        for (i, s) in specs.iter().enumerate() {
            procs.extend(s.processes.iter().map(|p| (p.clone(), Some(i))));
        }
        let mut pid = 4u64;
        let mut eprocs = Vec::new();
        for (n, (name, sess)) in procs.iter().enumerate() {
            let asp = self.process_space(n, sess.map(|i| &sessions[i]), slot);
            let session_va = sess.map(|i| sessions[i].global_va);
            let va = self.build_eprocess(n, name, pid, asp, session_va);
            if let Some(i) = sess {
                sessions[*i].truth.pids.push(pid);
            }
            self.truth.processes.push(ProcessTruth {
                eprocess: va,
                pid,
                name: name.clone(),
                dtb: asp.pml4 * PAGE64,
                session_id: sess.map(|i| specs[i].id),
            });
            eprocs.push(va);
            pid += 4 * self.rng.u64(1..40);
        }
        if let Some(&system) = eprocs.first() {
            self.set_global("PsInitialSystemProcess", system);
        }
        self.link_processes(&procs, &eprocs, &sessions);

        if let Some(s) = sessions.first() {
            // One table VA, size and mask for every session.
            // Windows 11 keeps only the per-session PoolTags pointer (the
            // manifest has no ExpSessionPoolTrackTable there).
            self.set_global("ExpSessionPoolTrackTable", s.truth.table_va);
            self.set_global("ExpSessionPoolTrackTableSize", s.truth.table_size);
            self.set_global("ExpSessionPoolTrackTableMask", s.truth.table_size - 1);
        }
        self.truth.sessions = sessions.into_iter().map(|s| s.truth).collect();
    }

    /// Session space: its PML4 slot, and MmSessionSpace and the session
    /// pool, the same VAs in every session.
    fn session_space(&mut self) -> (u64, u64, u64) {
        let slot = self.session_slot();
        assert_ne!(
            slot, self.asp.self_map,
            "session slot collides with the self-map"
        );
        assert_eq!(
            self.asp.pml4e(&self.mem, slot),
            0,
            "the kernel maps something in the session slot"
        );
        let session_base = sign_extend(slot * SLOT);
        // Session paged pool is [3 GiB, 7 GiB) into session space (its
        // PagedPoolStart..End); the structure lies outside it.
        let session_pool = session_base + 0xC000_0000;
        let mm_session_space = if self.scenario.build.has_kaslr_regions() {
            // A draw that falls inside the pool moves past it (the other
            // draws give the addresses they always gave).
            let gb = match self.rng.u64(1..0x40) {
                g @ 3..7 => g + 4,
                g => g,
            };
            session_base + gb * GB
        } else {
            session_base + 0x7F_0000_0000
        };
        debug_assert!(
            mm_session_space < session_pool
                || mm_session_space >= session_pool + SESSION_POOL_BYTES
        );
        (slot, mm_session_space, session_pool)
    }

    /// The address space of process `n`: the kernel's for System, the
    /// session's for its first process, a fresh one sharing the session's
    /// slot for its others, a fresh one for a process outside sessions.
    fn process_space(
        &mut self,
        n: usize,
        session: Option<&BuiltSession>,
        slot: u64,
    ) -> AddressSpace {
        let asp = match (n, session) {
            (0, _) => self.asp,
            (_, Some(s)) if s.truth.pids.is_empty() => s.asp,
            (_, Some(s)) => {
                let a = AddressSpace::fresh(&mut self.mem, self.asp.self_map);
                let e = s.asp.pml4e(&self.mem, slot);
                a.set_pml4e(&mut self.mem, slot, e);
                a
            }
            (_, None) => AddressSpace::fresh(&mut self.mem, self.asp.self_map),
        };
        if n > 0 {
            self.process_spaces.push(asp);
        }
        asp
    }

    /// Allocate and write the EPROCESS of process `n` (in session
    /// `session_va`'s structure, if any); returns its VA.
    fn build_eprocess(
        &mut self,
        n: usize,
        name: &str,
        pid: u64,
        asp: AddressSpace,
        session_va: Option<u64>,
    ) -> u64 {
        let m = self.m;
        let va = self.kernel_alloc("Proc", m.ty("_EPROCESS").size);
        let mut e = StructBuf::new(m, "_EPROCESS");
        // _DISPATCHER_HEADER.Type 3 = ProcessObject.
        e.set("Pcb.Header.Type", 3)
            .set("Pcb.DirectoryTableBase", asp.pml4 * PAGE64)
            .set("UniqueProcessId", pid)
            .set_if("InheritedFromUniqueProcessId", if n == 0 { 0 } else { 4 })
            .set_if("ActiveThreads", 1 + self.rng.u64(0..40));
        let mut image = name.as_bytes().to_vec();
        image.truncate(14);
        e.set_bytes("ImageFileName", &image);
        // Created shortly after boot (System has no create time).
        if n > 0 {
            let boot = self.truth.kernel.system_time - self.truth.kernel.interrupt_time;
            let created = boot + (n as u64) * 13_000_000 + self.rng.u64(0..10_000_000);
            e.set_bytes("CreateTime", &created.to_le_bytes());
        }
        let threads = m.offset_of("_EPROCESS", "ThreadListHead");
        e.set("ThreadListHead.Flink", va + threads)
            .set("ThreadListHead.Blink", va + threads);
        if let Some(s) = session_va {
            e.set("Session", s);
        }
        self.write_va(va, &e.bytes);
        va
    }

    /// PsActiveProcessHead's ring, and each session's ProcessList of
    /// EPROCESS.SessionProcessLinks.
    fn link_processes(
        &mut self,
        procs: &[(String, Option<usize>)],
        eprocs: &[u64],
        sessions: &[BuiltSession],
    ) {
        let m = self.m;
        let head = self
            .sym_va("PsActiveProcessHead")
            .expect("every build has PsActiveProcessHead");
        let links = m.offset_of("_EPROCESS", "ActiveProcessLinks");
        let mut ring = vec![head];
        ring.extend(eprocs.iter().map(|e| e + links));
        self.link_ring(&ring);
        self.truth
            .symbols
            .insert("PsActiveProcessHead".into(), head);
        if m.ty("_EPROCESS").fields.contains_key("SessionProcessLinks")
            && m.ty("_MM_SESSION_SPACE").fields.contains_key("ProcessList")
        {
            let sl = m.offset_of("_EPROCESS", "SessionProcessLinks");
            let pl = m.offset_of("_MM_SESSION_SPACE", "ProcessList");
            for (i, s) in sessions.iter().enumerate() {
                let mut ring = vec![s.global_va + pl];
                for (p, (_, sess)) in procs.iter().enumerate() {
                    if *sess == Some(i) {
                        ring.push(eprocs[p] + sl);
                    }
                }
                self.link_ring(&ring);
            }
        }
    }

    /// Link `ring[0]` (a list head) and the entries after it into a
    /// circular doubly linked list.
    fn link_ring(&mut self, ring: &[u64]) {
        for i in 0..ring.len() {
            let flink = ring[(i + 1) % ring.len()];
            let blink = ring[(i + ring.len() - 1) % ring.len()];
            self.write_u64(ring[i], flink);
            self.write_u64(ring[i] + 8, blink);
        }
    }

    /// One session: its structure (global and session-space mappings), its
    /// tracker table and expansion table, in a fresh address space.
    fn build_session(
        &mut self,
        index: usize,
        spec: &SessionSpec,
        mm_session_space: u64,
        session_pool: u64,
    ) -> BuiltSession {
        let m = self.m;
        let entry = m.ty("_POOL_TRACKER_TABLE").size;
        let asp = AddressSpace::fresh(&mut self.mem, self.asp.self_map);
        let global_va = self.map_session_structure(asp, mm_session_space);
        let mut pool = SessionPool {
            asp,
            next: session_pool,
        };
        let (table_va, n) = self.session_table(&mut pool, mm_session_space);

        let (charges, blocks) = self.session_charges(spec);
        let filled = SessionTables::fill(m, n, charges);
        let (exp_va, exp_size) = if filled.expansion.is_empty() {
            (0, 0)
        } else {
            let pages = (filled.expansion.len() as u64 * entry).div_ceil(PAGE64);
            (pool.alloc(self, pages * PAGE64), pages * PAGE64 / entry)
        };

        // The structure, written through its system-wide address; then the
        // tables through session space (an inline table shares the
        // structure's pages).
        let pdpt_pfn = (asp.pml4e(&self.mem, (mm_session_space >> 39) & 0x1FF)
            & crate::paging::PFN_MASK)
            >> 12;
        let mut s = StructBuf::new(m, "_MM_SESSION_SPACE");
        let nproc = spec.processes.len() as u64;
        s.set("SessionId", spec.id as u64)
            .set("ReferenceCount", nproc + 1)
            .set_if("ProcessReferenceToSession", nproc)
            .set_if("SessionPageDirectoryIndex", pdpt_pfn)
            .set_if("PagedPoolStart", session_pool)
            .set_if("PagedPoolEnd", session_pool + SESSION_POOL_BYTES - 1)
            .set("PoolTrackTableExpansion", exp_va)
            .set("PoolTrackTableExpansionSize", exp_size);
        if pool_tags_pointer(m) {
            s.set("PoolTags", table_va);
        }
        self.write_va(global_va, &s.bytes);
        let bytes: Vec<u8> = filled.table.iter().flat_map(|e| e.bytes.clone()).collect();
        asp.write(&mut self.mem, table_va, &bytes);
        if exp_va != 0 {
            let bytes: Vec<u8> = filled
                .expansion
                .iter()
                .flat_map(|e| e.bytes.clone())
                .collect();
            asp.write(&mut self.mem, exp_va, &bytes);
        }
        // Their own generator, so the rest of the machine is what it was
        // before session pool held allocations.
        let mut rng = fastrand::Rng::with_seed(self.scenario.seed ^ (0x5E55_0000 | spec.id as u64));
        let mut blocks = blocks;
        rng.shuffle(&mut blocks);
        let (allocations, big_pool) = if self.scenario.build.allocator() == Allocator::Legacy {
            let (a, t) = self.place_legacy_session(&mut pool, global_va, &blocks, &mut rng);
            (a, Some(t))
        } else {
            // Placed last (session_pool.rs); the ground truth gets them then.
            self.pending_session_heaps.push(PendingSessionHeap {
                index,
                global_va,
                pool,
                end: session_pool + SESSION_POOL_BYTES,
                blocks,
                rng,
            });
            (Vec::new(), None)
        };

        BuiltSession {
            asp,
            global_va,
            truth: SessionTruth {
                id: spec.id,
                global_va,
                session_space_va: mm_session_space,
                table_va,
                table_size: n,
                expansion_va: exp_va,
                expansion_size: exp_size,
                expansion_tags: filled.exp_tags.iter().map(|k| tag_string(*k)).collect(),
                pids: Vec::new(),
                tags: filled.rows,
                allocations,
                heap_va: None,
                big_pool,
            },
        }
    }

    /// The session structure at a system-wide address, its frames mapped
    /// again at MmSessionSpace in `asp`; returns the system-wide VA.
    fn map_session_structure(&mut self, asp: AddressSpace, mm_session_space: u64) -> u64 {
        let struct_pages = self.m.ty("_MM_SESSION_SPACE").size.div_ceil(PAGE64);
        let nx = self.nx_kind();
        let global_va = self.pool_pages(nx, struct_pages, 1);
        for i in 0..struct_pages {
            let pa = self
                .asp
                .translate(&self.mem, global_va + i * PAGE64)
                .expect("just committed");
            asp.map(
                &mut self.mem,
                mm_session_space + i * PAGE64,
                pa >> 12,
                Prot::Data,
            );
        }
        global_va
    }

    /// Where the session's tracker table is and how many entries it has,
    /// by build: in session pool (a `PoolTags` pointer), inline in the
    /// structure (a `PoolTags` array) or after the structure (no
    /// `PoolTags`).
    fn session_table(&mut self, pool: &mut SessionPool, mm_session_space: u64) -> (u64, u64) {
        let m = self.m;
        let sty = m.ty("_MM_SESSION_SPACE");
        let entry = m.ty("_POOL_TRACKER_TABLE").size;
        match sty.fields.get("PoolTags") {
            Some(f) if f.is_pointer() => {
                let n = 256;
                (pool.alloc(self, n * entry), n)
            }
            Some(f) => {
                let fit = f.size / entry;
                let n = 1u64 << (63 - fit.leading_zeros());
                (mm_session_space + f.offset, n)
            }
            None => {
                assert_eq!(sty.size.div_ceil(PAGE64) * PAGE64, LEGACY_TABLE_OFFSET);
                let n = 128;
                let va = mm_session_space + LEGACY_TABLE_OFFSET;
                for i in 0..(n * entry).div_ceil(PAGE64) {
                    let f = self.mem.alloc();
                    pool.asp.map(&mut self.mem, va + i * PAGE64, f, Prot::Data);
                }
                (va, n)
            }
        }
    }

    /// The session's tags and filler tags as (key, allocs, frees, bytes);
    /// and the blocks of its tags' live allocations, whose sizes the bytes
    /// sum as the tracker charges them (a big allocation by its pages on
    /// the legacy allocator, by the bytes asked for on the segment heap),
    /// with a few freed big ones the session's big-page table still names.
    fn session_charges(&mut self, spec: &SessionSpec) -> (Vec<Charge>, Vec<SessionBlock>) {
        let mut charges: Vec<Charge> = Vec::new();
        let mut blocks = Vec::new();
        // Freed big allocations' sizes come from a generator of their own,
        // so the rest of the machine draws what it drew without them.
        let mut big_rng =
            fastrand::Rng::with_seed(self.scenario.seed ^ (0xB16_0000 | spec.id as u64));
        for t in &spec.tags {
            let key = tag_value(&t.tag);
            let sizes: Vec<u64> = (0..t.live)
                .map(|_| t.size.pick(&mut self.rng) as u64)
                .collect();
            let bytes: u64 = sizes.iter().map(|&s| self.session_charge(s)).sum();
            charges.push((key, t.live as u64 + t.freed, t.freed, bytes));
            blocks.extend(sizes.into_iter().map(|size| SessionBlock {
                key,
                size,
                live: true,
            }));
            for _ in 0..t.freed.min(FREED_BIG_KEPT) {
                let size = t.size.pick(&mut big_rng) as u64;
                if self.session_big(size) {
                    blocks.push(SessionBlock {
                        key,
                        size,
                        live: false,
                    });
                }
            }
        }
        for i in 0..spec.filler_tags {
            let key = tag_value(&filler_tag(i));
            let live = self.rng.u64(1..20);
            let freed = self.rng.u64(0..100);
            charges.push((key, live + freed, freed, live * 0x40));
        }
        (charges, blocks)
    }

    /// Whether a session allocation of `size` bytes is a big one, tracked
    /// in the session's big-page table: larger than a pool page's chunk
    /// (legacy), or 0xFE1 bytes and more (segment heap).
    pub(crate) fn session_big(&self, size: u64) -> bool {
        match self.scenario.build.allocator() {
            Allocator::Legacy => size > LEGACY_BIG,
            Allocator::SegmentHeap => size >= SEG_HEAP_BIG,
        }
    }

    /// What the session tracker charges for an allocation of `size` bytes.
    fn session_charge(&self, size: u64) -> u64 {
        match self.scenario.build.allocator() {
            Allocator::Legacy if self.session_big(size) => size.div_ceil(PAGE64) * PAGE64,
            Allocator::SegmentHeap if self.session_big(size) => size,
            _ => (size + 0x10).div_ceil(16) * 16,
        }
    }

    /// Give every process the kernel's top-level entries (after everything
    /// else is mapped, so none is missed). Each keeps its own self-map
    /// entry and its session slot.
    pub(crate) fn share_kernel_half(&mut self) {
        let keep = [self.asp.self_map, self.session_slot()];
        for asp in self.process_spaces.clone() {
            for idx in 0x100..0x200u64 {
                if keep.contains(&idx) {
                    continue;
                }
                let e = self.asp.pml4e(&self.mem, idx);
                asp.set_pml4e(&mut self.mem, idx, e);
            }
        }
    }
}

/// Whether the build's session structure points at its tracker table
/// (`PoolTags` a pointer).
fn pool_tags_pointer(m: &crate::layout::Manifest) -> bool {
    m.ty("_MM_SESSION_SPACE")
        .fields
        .get("PoolTags")
        .is_some_and(|f| f.is_pointer())
}

/// A session's tracker table and expansion table, filled, and the rows
/// they make.
struct SessionTables {
    table: Vec<StructBuf<'static>>,
    expansion: Vec<StructBuf<'static>>,
    exp_tags: Vec<u32>,
    rows: Vec<TagUsage>,
}

impl SessionTables {
    /// Charge the tags to an `n`-entry table: hash, probe the whole table
    /// (no overflow slot), then the expansion table.
    fn fill(
        m: &'static crate::layout::Manifest,
        n: u64,
        charges: Vec<(u32, u64, u64, u64)>,
    ) -> Self {
        let mut slots = vec![0u32; n as usize];
        let mut t = SessionTables {
            table: (0..n)
                .map(|_| StructBuf::new(m, "_POOL_TRACKER_TABLE"))
                .collect(),
            expansion: Vec::new(),
            exp_tags: Vec::new(),
            rows: Vec::new(),
        };
        let counter_bits =
            (m.ty("_POOL_TRACKER_TABLE").fields["PagedAllocs"].size * 8).min(64) as u32;
        for (key, allocs, frees, bytes) in charges {
            let mut i = (tag_hash(key) as u64 & (n - 1)) as usize;
            let mut slot = None;
            for _ in 0..n {
                if slots[i] == 0 || slots[i] == key {
                    slots[i] = key;
                    slot = Some(TrackerSlot::Hashed { index: i as u64 });
                    break;
                }
                i = (i + 1) & (n as usize - 1);
            }
            let (buf, slot) = match slot {
                Some(s) => (&mut t.table[i], s),
                None => {
                    let j = match t.exp_tags.iter().position(|k| *k == key) {
                        Some(j) => j,
                        None => {
                            t.exp_tags.push(key);
                            t.expansion.push(StructBuf::new(m, "_POOL_TRACKER_TABLE"));
                            t.expansion.len() - 1
                        }
                    };
                    (
                        &mut t.expansion[j],
                        TrackerSlot::Expansion { index: j as u64 },
                    )
                }
            };
            buf.set("Key", key as u64)
                .set("PagedAllocs", allocs)
                .set("PagedFrees", frees)
                .set("PagedBytes", bytes);
            let c = Counters {
                allocs,
                frees,
                bytes,
            };
            t.rows.push(tag_row(key, true, c, slot, counter_bits));
        }
        t
    }
}

/// The `i`th generated session tag: 'S' and three base-36 digits.
pub fn filler_tag(i: u32) -> String {
    const D: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let d = |k: u32| D[(k % 36) as usize] as char;
    format!("S{}{}{}", d(i / 1296), d(i / 36), d(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NtBuild, Scenario};

    /// Every build: each session's table, read through one of its
    /// processes' PML4s, holds that session's keys at the recorded slots;
    /// the System PML4 does not map session space at all.
    #[test]
    fn session_tables_are_per_session() {
        for build in NtBuild::ALL {
            let mut s = Scenario::small(build, 11);
            s.sessions[1].filler_tags = 300;
            let mc = Machine::build(&s);
            assert_eq!(mc.truth.processes[0].name, "System");
            assert_eq!(mc.truth.sessions.len(), 2, "{build:?}");
            let t0 = &mc.truth.sessions[0];
            let t1 = &mc.truth.sessions[1];
            assert_eq!(t0.table_va, t1.table_va, "one VA for every session");
            assert!(mc.asp.translate(&mc.mem, t0.table_va).is_none());
            assert!(
                !t1.expansion_tags.is_empty(),
                "{build:?}: 300 fillers spill"
            );
            let key_off = mc.m.offset_of("_POOL_TRACKER_TABLE", "Key");
            let entry = mc.m.ty("_POOL_TRACKER_TABLE").size;
            for st in &mc.truth.sessions {
                let p = mc
                    .truth
                    .processes
                    .iter()
                    .find(|p| p.session_id == Some(st.id))
                    .unwrap();
                let asp = AddressSpace {
                    pml4: p.dtb >> 12,
                    self_map: mc.asp.self_map,
                };
                // The kernel half is shared.
                assert_eq!(
                    asp.translate(&mc.mem, mc.kern_base),
                    mc.asp.translate(&mc.mem, mc.kern_base)
                );
                for row in &st.tags {
                    let va = match row.slot {
                        TrackerSlot::Hashed { index } => st.table_va + index * entry,
                        TrackerSlot::Expansion { index } => st.expansion_va + index * entry,
                        TrackerSlot::Overflow => unreachable!(),
                    };
                    let mut k = [0u8; 4];
                    asp.read(&mc.mem, va + key_off, &mut k);
                    assert_eq!(
                        u32::from_le_bytes(k),
                        row.tag_value,
                        "{build:?} {}",
                        row.tag
                    );
                }
                // SessionId through the system-wide address.
                let id_off = mc.m.offset_of("_MM_SESSION_SPACE", "SessionId");
                let mut id = [0u8; 4];
                mc.asp.read(&mc.mem, st.global_va + id_off, &mut id);
                assert_eq!(u32::from_le_bytes(id), st.id);
            }
        }
    }

    #[test]
    fn filler_tags_are_distinct() {
        let v: std::collections::BTreeSet<String> = (0..2000).map(filler_tag).collect();
        assert_eq!(v.len(), 2000);
        assert_eq!(filler_tag(0), "S000");
    }
}
