//! Where the scan's allocations go: into one vector to be sorted (the
//! default), or a batch at a time to the caller's [`FindSink`] as they are
//! found, so a search's memory does not grow with its results.

use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;

use super::*;

/// Receives the allocations of a streaming search
/// ([`crate::Target::find_with`]) as the scan threads find them.
///
/// Called from the scan threads, possibly from several at once, with
/// batches of at most a few thousand allocations in no particular order:
/// neither sorted nor grouped by tag, and big-page entries come last. Each
/// allocation is delivered once (the second header of a cache-aligned
/// pair is the one kept, as in the sorted search). The per-tag totals of
/// the [`FindReport`] the search returns count every allocation delivered.
///
/// Return [`ControlFlow::Break`] to stop the search (an output that
/// failed, a reader that has enough): no more batches come and the search
/// returns [`FindError::Stopped`].
///
/// ```no_run
/// use std::ops::ControlFlow;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use pooldump_core::pool::TagPattern;
/// use pooldump_core::pool::find::{FindOptions, FoundAllocation};
/// # fn demo(t: &pooldump_core::Target<pooldump_core::CrashDump>) -> Result<(), Box<dyn std::error::Error>> {
/// let bytes = AtomicU64::new(0);
/// let sink = |batch: &[FoundAllocation]| {
///     bytes.fetch_add(batch.iter().map(|a| a.bytes).sum(), Ordering::Relaxed);
///     ControlFlow::Continue(())
/// };
/// let report = t.find_with(&[TagPattern::parse("Leak")?], &FindOptions::default(), &sink)?;
/// println!("{} bytes in {} tags", bytes.into_inner(), report.tags.len());
/// # Ok(()) }
/// ```
pub trait FindSink: Sync {
    /// Take one batch; `Break` stops the search.
    fn allocations(&self, batch: &[FoundAllocation]) -> ControlFlow<()>;
}

impl<F> FindSink for F
where
    F: Fn(&[FoundAllocation]) -> ControlFlow<()> + Sync,
{
    fn allocations(&self, batch: &[FoundAllocation]) -> ControlFlow<()> {
        self(batch)
    }
}

/// A scan thread hands its allocations on once it holds this many (and
/// at the end of every chunk): 256 KiB per thread at most.
pub(super) const BATCH: usize = 4096;

/// The destination of the scan's allocations.
pub(super) enum Found<'a> {
    /// Kept for sorting, each with the key that identifies one
    /// allocation's headers (two headers of a cache-aligned allocation on
    /// different pages share it; the sort puts them side by side).
    Kept(Mutex<Vec<(FoundAllocation, Option<u64>)>>),
    /// Handed to the sink; only the per-tag totals stay.
    Streamed {
        sink: &'a dyn FindSink,
        tally: Mutex<Tally>,
        stopped: AtomicBool,
    },
}

impl<'a> Found<'a> {
    pub(super) fn streamed(sink: &'a dyn FindSink) -> Self {
        Found::Streamed {
            sink,
            tally: Mutex::new(Tally::new()),
            stopped: AtomicBool::new(false),
        }
    }

    pub(super) fn is_streamed(&self) -> bool {
        matches!(self, Found::Streamed { .. })
    }

    /// The sink asked to stop: the scan skips what is left.
    pub(super) fn stopped(&self) -> bool {
        match self {
            Found::Kept(_) => false,
            Found::Streamed { stopped, .. } => stopped.load(Ordering::Relaxed),
        }
    }

    /// Move `batch` on: into the kept vector, or (through `plain`, a
    /// buffer the caller reuses) to the sink.
    pub(super) fn deliver(
        &self,
        batch: &mut Vec<(FoundAllocation, Option<u64>)>,
        plain: &mut Vec<FoundAllocation>,
    ) {
        if batch.is_empty() {
            return;
        }
        match self {
            Found::Kept(all) => {
                // One vector grown in place: one copy of the results,
                // not a vector per chunk merged (two copies at the peak).
                let mut all = all.lock().unwrap_or_else(|e| e.into_inner());
                all.append(batch);
            }
            Found::Streamed { .. } => {
                plain.clear();
                plain.extend(batch.drain(..).map(|(a, _)| a));
                self.stream(plain);
            }
        }
    }

    /// Count `list` and hand it to the sink (nothing once it stopped).
    pub(super) fn stream(&self, list: &[FoundAllocation]) {
        let Found::Streamed {
            sink,
            tally: totals,
            stopped,
        } = self
        else {
            return;
        };
        if list.is_empty() || stopped.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
            for a in list {
                tally(&mut t, a);
            }
        }
        if sink.allocations(list).is_break() {
            stopped.store(true, Ordering::Relaxed);
        }
    }

    /// What was kept (empty when streamed) and the totals counted while
    /// streaming (empty when kept).
    pub(super) fn into_parts(self) -> (Vec<(FoundAllocation, Option<u64>)>, Tally) {
        match self {
            Found::Kept(all) => (
                all.into_inner().unwrap_or_else(|e| e.into_inner()),
                Tally::new(),
            ),
            Found::Streamed { tally, .. } => (
                Vec::new(),
                tally.into_inner().unwrap_or_else(|e| e.into_inner()),
            ),
        }
    }
}
