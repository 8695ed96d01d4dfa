//! One dump, analysed through the library's front door
//! ([`Target::open_dump`], [`Target::pool_usage`], [`Target::attribute`])
//! into what the fleet tables hold: the dump's facts and its tag rows.
//!
//! Nothing here reads pool structures itself; this module only decides
//! what of a [`Target`] goes into a row.

use std::path::Path;
use std::time::Instant;

use pooldump_core::dump::CrashDump;
use pooldump_core::pool::{PoolError, PoolTagDb, TagUsage, TrackerOptions};
use pooldump_core::symbols::SymbolOptions;
use pooldump_core::{OpenError, Target, Warning};
use sha2::{Digest, Sha256};

use crate::key::ContentKey;

/// How each dump is analysed.
pub struct AnalyzeOptions<'a> {
    /// Where nt's PDB comes from (symbol path, cache, download).
    pub symbols: SymbolOptions<'a>,
    /// pooltag.txt for the Mapped_Driver column (it comes before the image
    /// search, as in `pooldump analyze`).
    pub pooltag: Option<PoolTagDb>,
    /// Search the loaded drivers' images for tags pooltag.txt does not name.
    pub search_images: bool,
}

/// What became of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Analysed: its tag rows are in the tags table.
    Ok,
    /// Could not be analysed; the dumps table says why.
    Error,
    /// The same content as another path already analysed (same
    /// [`ContentKey`]): not analysed again.
    Duplicate,
}

impl Status {
    /// `ok`, `error` or `duplicate`: the dumps table's `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Duplicate => "duplicate",
        }
    }
}

/// What the dump says about itself and its machine. Every field is
/// optional: a dump that fails part way still tells what it could.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DumpFacts {
    /// The build number (DUMP_HEADER64.MinorVersion).
    pub build: Option<u32>,
    /// DUMP_HEADER64.NumberProcessors.
    pub processors: Option<u32>,
    /// "bitmap dump", "full memory dump", ...
    pub dump_type: Option<String>,
    /// SystemTime: when the dump was written, microseconds since the Unix
    /// epoch (UTC).
    pub system_time_us: Option<i64>,
    /// SystemUpTime in seconds.
    pub uptime_secs: Option<f64>,
    /// SystemTime - SystemUpTime: when the machine booted.
    pub boot_time_us: Option<i64>,
    /// DUMP_HEADER64.BugCheckCode (0xE2 for a manually initiated crash).
    pub bugcheck_code: Option<u32>,
    /// DUMP_HEADER64.BugCheckParameter1 to 4.
    pub bugcheck_parameters: Option<[u64; 4]>,
    /// nt's PDB name from its CodeView record, e.g. `ntkrnlmp.pdb`; None
    /// when the kernel was not opened or has no CodeView record.
    pub pdb_name: Option<String>,
    /// nt's symbol-store key (GUID and age in hex, as the symbol server's
    /// directory names it), None likewise.
    pub pdb_key: Option<String>,
    /// KernBase: where nt was loaded (chosen at random at every boot since
    /// Windows 10 1607); None when the kernel was not opened.
    pub kern_base: Option<u64>,
    /// DUMP_HEADER64.PfnDataBase: the PFN database's address (randomised
    /// at every boot likewise).
    pub pfn_database: Option<u64>,
    /// The boot this dump was taken in: see [`boot_id`].
    pub boot_id: Option<String>,
    /// Loaded modules on PsLoadedModuleList.
    pub modules: Option<u32>,
}

/// One row of the tags table: PoolMon's columns for one tag of one dump.
pub use pooldump_core::pool::PoolMonRow as TagRow;

/// Pool totals of one dump, per pool: PoolMon's header line.
pub use pooldump_core::pool::Totals as DumpTotals;

/// One dump's outcome: a dumps-table row and its tag rows.
#[derive(Debug, Clone)]
pub struct DumpRecord {
    /// The dump's path as given to the batch.
    pub path: String,
    /// The [`ContentKey`] in hex.
    /// Empty when the file could not be read to compute one.
    pub dump_id: String,
    /// The file's size in bytes.
    pub size: u64,
    /// Analysed, failed or a duplicate.
    pub status: Status,
    /// Why the dump was not analysed, with its causes (None when
    /// [`Status::Ok`]; for a duplicate, the path that gave the content).
    pub error: Option<String>,
    /// What the dump says about itself (the header's facts even when the
    /// analysis failed, if the header could be read).
    pub facts: DumpFacts,
    /// PoolMon's rows, one per tag and pool type (empty unless
    /// [`Status::Ok`]).
    pub rows: Vec<TagRow>,
    /// The tracker's totals (None unless [`Status::Ok`]).
    pub totals: Option<DumpTotals>,
    /// What the analysis noticed and worked around (opening the dump and
    /// reading the tracker).
    pub warnings: Vec<Warning>,
    /// Wall-clock seconds the analysis took.
    pub seconds: f64,
}

impl DumpRecord {
    /// A record for a dump that was not analysed.
    pub fn failed(path: &Path, key: Option<&ContentKey>, size: u64, error: String) -> Self {
        Self {
            path: path.display().to_string(),
            dump_id: key.map(|k| k.hex()).unwrap_or_default(),
            size,
            status: Status::Error,
            error: Some(error),
            facts: DumpFacts::default(),
            rows: Vec::new(),
            totals: None,
            warnings: Vec::new(),
            seconds: 0.0,
        }
    }

    /// The record of a path whose content another path already gave.
    pub fn duplicate(path: &Path, key: &ContentKey, size: u64, of: &str) -> Self {
        Self {
            status: Status::Duplicate,
            error: Some(format!("the same content as {of}")),
            ..Self::failed(path, Some(key), size, String::new())
        }
    }
}

/// Why a dump could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// A small memory (minidump/triage) dump, which holds no pool: the
    /// explanation of what it holds instead.
    #[error("{0}")]
    SmallDump(String),
    /// The dump, its kernel or nt's symbols could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The pool tag tracker (PoolTrackTable) could not be read.
    #[error("{path}: build {build}: reading the pool tag tracker: {source}")]
    Pool {
        /// The dump's path.
        path: String,
        /// The dump's build number.
        build: u32,
        /// Why the tracker read failed.
        #[source]
        source: PoolError,
    },
}

/// Open a kernel dump with its symbols; a small memory dump (which holds
/// no pool) is refused with the reason.
pub fn open(path: &Path, symbols: &SymbolOptions<'_>) -> Result<Target<CrashDump>, AnalyzeError> {
    if let Some(why) = small_dump_explanation(path) {
        return Err(AnalyzeError::SmallDump(why));
    }
    Ok(Target::open_dump(path, symbols)?)
}

fn small_dump_explanation(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::new();
    let f = std::fs::File::open(path).ok()?;
    f.take(0x1000).read_to_end(&mut head).ok()?;
    if !pooldump_core::dump::triage::is_small_memory_dump(&head) {
        return None;
    }
    Some(match pooldump_core::dump::TriageDump::open(path) {
        Ok(t) => t.no_pool_explanation(),
        Err(e) => e.to_string(),
    })
}

/// Analyse the dump at `path` (whose key and size the caller computed).
/// Never fails: an error, or a panic inside the analysis, becomes a record
/// with [`Status::Error`], so one bad dump cannot stop a batch.
pub fn analyze_file(
    path: &Path,
    key: &ContentKey,
    size: u64,
    opts: &AnalyzeOptions<'_>,
) -> DumpRecord {
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| analyze(path, opts)));
    let mut r = match outcome {
        Ok(Ok(mut r)) => {
            r.dump_id = key.hex();
            r.size = size;
            r
        }
        Ok(Err(e)) => {
            let mut r = DumpRecord::failed(path, Some(key), size, error_chain(&e));
            // The header may still be readable where the rest was not.
            if !matches!(e, AnalyzeError::SmallDump(_))
                && let Ok(d) = CrashDump::open(path)
            {
                r.facts = header_facts(&d);
            }
            r
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            DumpRecord::failed(
                path,
                Some(key),
                size,
                format!(
                    "{}: internal error (a bug in pooldump): {what}",
                    path.display()
                ),
            )
        }
    };
    r.seconds = started.elapsed().as_secs_f64();
    r
}

fn analyze(path: &Path, opts: &AnalyzeOptions<'_>) -> Result<DumpRecord, AnalyzeError> {
    let target = open(path, &opts.symbols)?;
    let (rows, totals, mut warnings) = tag_rows(&target, opts.pooltag.as_ref(), opts.search_images)
        .map_err(|source| AnalyzeError::Pool {
            path: path.display().to_string(),
            build: target.mem.header().build(),
            source,
        })?;
    let mut all = target.warnings.clone();
    all.append(&mut warnings);
    Ok(DumpRecord {
        path: path.display().to_string(),
        dump_id: String::new(),
        size: target.mem.file_size(),
        status: Status::Ok,
        error: None,
        facts: facts(&target),
        rows,
        totals: Some(totals),
        warnings: all,
        seconds: 0.0,
    })
}

/// Every tag of the tracker (tags whose counters are all zero left out, as
/// PoolMon does), each with its Mapped_Driver, and the totals and warnings
/// of the read.
pub fn tag_rows(
    target: &Target<CrashDump>,
    pooltag: Option<&PoolTagDb>,
    search_images: bool,
) -> Result<(Vec<TagRow>, DumpTotals, Vec<Warning>), PoolError> {
    let usage = target.pool_usage(&TrackerOptions::default())?;
    let mut rows = usage.rows;
    target.attribute(&mut rows, pooltag, search_images);
    Ok((
        rows.iter().map(TagUsage::poolmon_row).collect(),
        usage.totals,
        usage.warnings,
    ))
}

/// What the header says, without the kernel.
pub fn header_facts(d: &CrashDump) -> DumpFacts {
    let h = d.header();
    let system_time_us = h
        .system_time
        .unix_seconds()
        .map(|_| filetime_to_unix_us(h.system_time.0));
    let uptime_ticks = h.system_up_time.0;
    DumpFacts {
        build: Some(h.build()),
        processors: Some(h.number_processors),
        dump_type: Some(h.dump_type.to_string()),
        system_time_us,
        uptime_secs: Some(uptime_ticks as f64 / 1e7),
        boot_time_us: system_time_us.map(|t| t - (uptime_ticks / 10) as i64),
        bugcheck_code: Some(h.bug_check.code),
        bugcheck_parameters: Some(h.bug_check.parameters),
        pfn_database: Some(h.pfn_database.u64()),
        ..DumpFacts::default()
    }
}

/// The header's facts and nt's identity.
pub fn facts(t: &Target<CrashDump>) -> DumpFacts {
    let mut f = header_facts(&t.mem);
    let cv = t.kernel.image.codeview.as_ref();
    f.pdb_name = cv.map(|c| c.pdb_name.clone());
    f.pdb_key = cv.map(|c| c.store_key.clone());
    f.kern_base = Some(t.kern_base().u64());
    f.modules = t.modules.as_ref().map(|m| m.modules.len() as u32);
    f.boot_id = boot_id(&f);
    f
}

/// A name for the boot a dump was taken in, so the dumps of one boot
/// (where a leak can grow: a reboot empties the pool) group together.
///
/// A kernel dump carries no machine identifier: no computer name, no
/// machine GUID (those live in the registry, which is not read). What it
/// does carry is fixed for one boot and chosen afresh at the next: since
/// Windows 10 1607 (build 14393) both KernBase and the PFN database's
/// address are randomised at every boot, so the boot is named by the build,
/// nt's PDB key, KernBase and PfnDataBase. Older builds lay the kernel out
/// the same way at every boot, so for them the boot time (SystemTime -
/// SystemUpTime, to the minute) is added; a clock correction of a minute
/// or more during one boot then splits it in two.
pub fn boot_id(f: &DumpFacts) -> Option<String> {
    let build = f.build?;
    let kern_base = f.kern_base?;
    let mut h = Sha256::new();
    h.update(build.to_le_bytes());
    h.update(f.pdb_key.as_deref().unwrap_or("").as_bytes());
    h.update(kern_base.to_le_bytes());
    h.update(f.pfn_database.unwrap_or(0).to_le_bytes());
    if build < 14393 {
        let minute = f.boot_time_us? / 60_000_000;
        h.update(minute.to_le_bytes());
    }
    let d = h.finalize();
    Some(d[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// FILETIME (100 ns since 1601) to microseconds since 1970.
fn filetime_to_unix_us(ticks: u64) -> i64 {
    const EPOCH_DELTA_US: i64 = 11_644_473_600 * 1_000_000;
    (ticks / 10) as i64 - EPOCH_DELTA_US
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
