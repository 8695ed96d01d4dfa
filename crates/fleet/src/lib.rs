//! pooldump-fleet: many crash dumps at once, as tables.
//!
//! Each dump goes through the library's front door
//! ([`pooldump_core::Target`]: open, [`pool_usage`], [`attribute`]) and
//! becomes a [`DumpRecord`]: the dump's facts (build, nt's PDB, KernBase,
//! the boot it was taken in, time, bug check) and PoolMon's rows. Records
//! become two Arrow tables ([`table`]), written as Parquet or NDJSON part
//! files ([`store`]) by a batch that runs dumps in parallel and resumes
//! where a killed run stopped ([`batch`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use pooldump_core::symbols::SymbolOptions;
//! use pooldump_fleet::{AnalyzeOptions, BatchOptions, Format, ResultStore};
//!
//! let (dumps, _) = pooldump_fleet::inputs::expand(&["dumps/".to_string()])?;
//! let mut store = ResultStore::open("results".as_ref(), Format::Parquet)?;
//! let opts = BatchOptions {
//!     analyze: AnalyzeOptions {
//!         symbols: SymbolOptions::from_env(),
//!         pooltag: None,
//!         search_images: true,
//!     },
//!     jobs: None,
//!     commit_every: 64,
//!     commit_after: Duration::from_secs(30),
//! };
//! let summary = pooldump_fleet::batch::run(&dumps, &mut store, &opts, &())?;
//! println!("{} analysed, {} failed, {} skipped", summary.analysed, summary.failed, summary.skipped);
//! # Ok::<(), pooldump_fleet::FleetError>(())
//! ```
//!
//! [`pool_usage`]: pooldump_core::Target::pool_usage
//! [`attribute`]: pooldump_core::Target::attribute

pub mod batch;
pub mod inputs;
pub mod key;
pub mod record;
pub mod store;
pub mod table;

use std::path::PathBuf;

pub use batch::{BatchOptions, BatchProgress, BatchSummary};
pub use key::ContentKey;
pub use record::{AnalyzeOptions, DumpFacts, DumpRecord, Status, TagRow};
pub use store::{Format, ResultStore};

/// Why a batch could not go on (a dump's own failure is never one: it is
/// a row of the dumps table).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("building the tables: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("{}: not a dumps part of `pooldump batch`: {why}", path.display())]
    NotADumpsPart { path: PathBuf, why: String },
    #[error(
        "{}: holds {found} parts from an earlier batch; rerun with --format {found} to resume it, or write {wanted} to another directory",
        dir.display()
    )]
    OtherFormat {
        dir: PathBuf,
        found: &'static str,
        wanted: &'static str,
    },
    #[error("{input}: {why}")]
    Input { input: String, why: String },
    #[error("cannot start the worker threads: {0}")]
    Threads(String),
}
