//! Many dumps in parallel: rayon across dumps, each dump analysed by one
//! worker from open to rows, results committed in parts as they come.
//!
//! Memory is bounded per dump, not per batch: a worker holds one dump's
//! working set (its mapping, page map, symbols and rows); finished records
//! wait in a channel bounded to two per worker and in the part being
//! gathered (at most `commit_every` records, rows only). Nothing grows with
//! the number of dumps but the list of inputs and the done set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::FleetError;
use crate::key::ContentKey;
use crate::record::{AnalyzeOptions, DumpRecord, Status, analyze_file};
use crate::store::ResultStore;

/// How a batch runs.
pub struct BatchOptions<'a> {
    /// How each dump is analysed (symbols, pooltag.txt, image search).
    pub analyze: AnalyzeOptions<'a>,
    /// Dumps analysed at once (default: one per core).
    pub jobs: Option<usize>,
    /// Commit a part after this many dumps...
    pub commit_every: usize,
    /// ... or when the oldest uncommitted dump finished this long ago.
    pub commit_after: Duration,
}

/// What a batch tells its progress display. Called from the thread that
/// commits (never from two threads at once).
pub trait BatchProgress {
    /// The plan: dumps to analyse and their bytes, and inputs skipped as
    /// already done.
    fn planned(&self, _dumps: u64, _bytes: u64, _skipped: u64) {}
    /// One dump finished (analysed or failed).
    fn finished(&self, _record: &DumpRecord) {}
    /// A part was committed: `dumps` rows, `done` in the output so far.
    fn committed(&self, _part: &Path, _dumps: usize, _done: usize) {}
}

/// No display.
impl BatchProgress for () {}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchSummary {
    /// Input files.
    pub inputs: usize,
    /// Already in the output (same content key and path): not touched.
    pub skipped: usize,
    /// Analysed in this run, with and without success.
    pub analysed: usize,
    /// Of `analysed`, those that ended in [`Status::Error`].
    pub failed: usize,
    /// Paths whose content another path gave (recorded, not analysed).
    pub duplicates: usize,
    /// Parts committed.
    pub parts: usize,
}

/// A dump to analyse.
struct Work {
    path: PathBuf,
    key: ContentKey,
    size: u64,
}

/// Analyse every input not already in `store`, committing parts as
/// records come. Fails only when the output cannot be written.
pub fn run(
    inputs: &[PathBuf],
    store: &mut ResultStore,
    opts: &BatchOptions<'_>,
    progress: &dyn BatchProgress,
) -> Result<BatchSummary, FleetError> {
    let mut out = Committer {
        summary: BatchSummary {
            inputs: inputs.len(),
            ..Default::default()
        },
        pending: Vec::new(),
        oldest: None,
        progress,
    };
    let (immediate, work) = plan(inputs, store, &mut out.summary);
    let bytes = work.iter().map(|w| w.size).sum();
    progress.planned(work.len() as u64, bytes, out.summary.skipped as u64);
    for r in immediate {
        out.push(r);
    }

    let jobs = opts.jobs.unwrap_or_else(rayon::current_num_threads).max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .thread_name(|i| format!("pooldump-batch-{i}"))
        .build()
        .map_err(|e| FleetError::Threads(e.to_string()))?;
    let (tx, rx) = mpsc::sync_channel::<DumpRecord>(2 * jobs);
    let analyze = &opts.analyze;
    let work = &work;
    let stop = AtomicBool::new(false);
    let stop = &stop;
    std::thread::scope(|scope| -> Result<(), FleetError> {
        let workers = scope.spawn(move || {
            pool.install(|| {
                // One dump per task: rayon's adaptive splitting would hand
                // a worker a run of neighbours, which is no better.
                work.par_iter().with_max_len(1).for_each_with(tx, |tx, w| {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let r = analyze_file(&w.path, &w.key, w.size, analyze);
                    // The receiver is gone only when committing failed;
                    // the batch is stopping then.
                    let _ = tx.send(r);
                });
            });
        });
        let result = out.receive(&rx, store, opts);
        // Workers start no new dump, and a send fails at once.
        stop.store(true, Ordering::Relaxed);
        drop(rx);
        let _ = workers.join();
        result.and_then(|()| out.commit(store))
    })?;
    Ok(out.summary)
}

/// Sort the inputs: records known at once (unreadable files, duplicates of
/// a dump already analysed or seen earlier in this run), and the dumps to
/// analyse. Inputs already in `store` are counted as skipped.
fn plan(
    inputs: &[PathBuf],
    store: &ResultStore,
    summary: &mut BatchSummary,
) -> (Vec<DumpRecord>, Vec<Work>) {
    // The content keys, read in parallel (132 KiB per dump at most).
    let keyed: Vec<(PathBuf, std::io::Result<(ContentKey, u64)>)> = inputs
        .par_iter()
        .map(|p| (p.clone(), ContentKey::of_file(p)))
        .collect();
    let mut immediate = Vec::new();
    let mut work = Vec::new();
    // Keys first seen in this run, and the path that has them.
    let mut seen: HashMap<ContentKey, String> = HashMap::new();
    for (path, k) in keyed {
        let shown = path.display().to_string();
        match k {
            Err(_) if store.done_without_key(&shown) => summary.skipped += 1,
            Err(e) => immediate.push(DumpRecord::failed(
                &path,
                None,
                0,
                format!("{shown}: cannot read the file: {e}"),
            )),
            Ok((key, size)) => {
                let done = store.done_with_key(&key.hex());
                if done.iter().any(|d| d.path == shown) {
                    summary.skipped += 1;
                } else if let Some(first) = done.first() {
                    immediate.push(DumpRecord::duplicate(&path, &key, size, &first.path));
                } else if let Some(first) = seen.get(&key) {
                    immediate.push(DumpRecord::duplicate(&path, &key, size, first));
                } else {
                    seen.insert(key, shown);
                    work.push(Work { path, key, size });
                }
            }
        }
    }
    (immediate, work)
}

/// Records on their way to the store: counted, reported, and committed as
/// a part every `commit_every` records or `commit_after`.
struct Committer<'p> {
    summary: BatchSummary,
    pending: Vec<DumpRecord>,
    /// When the oldest pending record came.
    oldest: Option<Instant>,
    progress: &'p dyn BatchProgress,
}

impl Committer<'_> {
    fn push(&mut self, r: DumpRecord) {
        match r.status {
            Status::Ok => self.summary.analysed += 1,
            Status::Error => {
                self.summary.analysed += 1;
                self.summary.failed += 1;
            }
            Status::Duplicate => self.summary.duplicates += 1,
        }
        self.progress.finished(&r);
        self.pending.push(r);
    }

    fn commit(&mut self, store: &mut ResultStore) -> Result<(), FleetError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let part = store.commit(&self.pending)?;
        self.summary.parts += 1;
        self.progress
            .committed(&part, self.pending.len(), store.done_count());
        self.pending.clear();
        Ok(())
    }

    /// Take the workers' records until they are done, committing on the
    /// way; stops at the first commit that fails.
    fn receive(
        &mut self,
        rx: &mpsc::Receiver<DumpRecord>,
        store: &mut ResultStore,
        opts: &BatchOptions<'_>,
    ) -> Result<(), FleetError> {
        loop {
            let wait = match self.oldest {
                Some(t) => opts.commit_after.saturating_sub(t.elapsed()),
                None => Duration::from_secs(3600),
            };
            match rx.recv_timeout(wait) {
                Ok(r) => {
                    self.push(r);
                    self.oldest.get_or_insert_with(Instant::now);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let due = self
                .oldest
                .is_some_and(|t| t.elapsed() >= opts.commit_after);
            if self.pending.len() >= opts.commit_every.max(1) || due {
                self.commit(store)?;
                self.oldest = None;
            }
        }
    }
}
