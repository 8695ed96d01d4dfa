//! A bounded walk of a kernel `LIST_ENTRY` ring: structures linked through
//! a `LIST_ENTRY {Flink +0, Blink +8}` inside each, entered from a head
//! `LIST_ENTRY` outside them (`PsLoadedModuleList`, `PsActiveProcessHead`).
//!
//! The links come from the target, so they are hostile: the walk stops,
//! and says why, at a link that is not a kernel address, at an entry it
//! has already visited, at an entry it cannot read, or after a cap on the
//! entries; it never loops or allocates by what the links say.

use std::collections::HashSet;

use crate::addr::KernelVa;
use crate::bytes::Le;
use crate::memory::{Memory, MemoryError, MemoryExt};

/// One ring to walk, and the words its messages use.
#[derive(Debug, Clone)]
pub struct Ring<'a> {
    /// The head `LIST_ENTRY`; the ring is complete when a Flink returns
    /// to it.
    pub head: KernelVa,
    /// Where the `LIST_ENTRY` is inside each entry: a link points there.
    pub links: u64,
    /// Bytes read per entry, from its start (through the links and every
    /// field the caller wants).
    pub entry_size: usize,
    /// Entries visited at most.
    pub max_entries: usize,
    /// The head as messages name it (`nt!PsActiveProcessHead`).
    pub head_name: &'a str,
    /// A link (`process link`).
    pub link_name: &'a str,
    /// One entry (`_EPROCESS`).
    pub entry_name: &'a str,
    /// Entries, counted (`processes`).
    pub entries_name: &'a str,
}

/// One entry of the ring, as read.
#[derive(Debug, Clone, Copy)]
pub struct RingEntry<'b> {
    /// Where the entry starts (its link minus [`Ring::links`]).
    pub va: KernelVa,
    /// Its first [`Ring::entry_size`] bytes.
    pub bytes: &'b [u8],
    /// The link the walk came from (the head, or the previous entry's
    /// links): the entry's Blink should point there.
    pub prev: KernelVa,
}

/// How a walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingEnd {
    /// A Flink returned to the head.
    Complete,
    /// The head could not be read.
    HeadUnreadable(MemoryError),
    /// [`Ring::max_entries`] entries were visited without returning to the
    /// head.
    Capped,
    /// The link after `prev` points to `link`, not a kernel address.
    NotKernel { prev: KernelVa, link: KernelVa },
    /// The link after `prev` points to `link`, an entry already visited,
    /// after `visited` entries.
    Loop {
        prev: KernelVa,
        link: KernelVa,
        visited: usize,
    },
    /// The entry at `entry` could not be read.
    Unreadable { entry: KernelVa, error: MemoryError },
}

impl RingEnd {
    pub fn is_complete(&self) -> bool {
        *self == RingEnd::Complete
    }
}

impl Ring<'_> {
    /// Walk the ring from its head, calling `visit` with each entry in
    /// Flink order, and say how the walk ended.
    pub fn walk<M: Memory + ?Sized>(
        &self,
        mem: &M,
        mut visit: impl FnMut(RingEntry<'_>),
    ) -> RingEnd {
        let mut cur = match mem.read_pointer(self.head) {
            Ok(p) => p,
            Err(e) => return RingEnd::HeadUnreadable(e),
        };
        let mut prev = self.head;
        let mut visited = HashSet::new();
        let mut buf = vec![0u8; self.entry_size];
        loop {
            if cur == self.head {
                return RingEnd::Complete;
            }
            if visited.len() >= self.max_entries {
                return RingEnd::Capped;
            }
            if !cur.is_kernel() {
                return RingEnd::NotKernel { prev, link: cur };
            }
            if !visited.insert(cur) {
                return RingEnd::Loop {
                    prev,
                    link: cur,
                    visited: visited.len(),
                };
            }
            let va = KernelVa(cur.0.wrapping_sub(self.links));
            if let Err(error) = mem.read_virtual(va, &mut buf) {
                return RingEnd::Unreadable { entry: va, error };
            }
            visit(RingEntry {
                va,
                bytes: &buf,
                prev,
            });
            prev = cur;
            cur = KernelVa(Le(&buf).u64(self.links as usize).unwrap_or(0));
        }
    }

    /// The warning for a walk that ended as `end`: none when the ring was
    /// complete.
    pub fn warning(&self, end: &RingEnd) -> Option<String> {
        let Ring {
            head,
            max_entries,
            head_name,
            link_name,
            entry_name,
            entries_name,
            ..
        } = self;
        Some(match end {
            RingEnd::Complete => return None,
            RingEnd::HeadUnreadable(e) => format!("cannot read {head_name} at {head}: {e}"),
            RingEnd::Capped => format!(
                "stopped after {max_entries} {entries_name} without returning to {head_name} (iteration cap)"
            ),
            RingEnd::NotKernel { prev, link } => format!(
                "the {link_name} after {prev} points to {link}, not a kernel address; the list is cut there"
            ),
            RingEnd::Loop {
                prev,
                link,
                visited,
            } => format!(
                "the {link_name} after {prev} loops back to {link}, an entry already visited, without returning to {head_name}; the list is cut there after {visited} {entries_name}"
            ),
            RingEnd::Unreadable { entry, error } => {
                format!("cannot read the {entry_name} at {entry}: {error}; the list is cut there")
            }
        })
    }
}
