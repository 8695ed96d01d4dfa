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

#![warn(missing_docs)]

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
    /// Creating, listing, writing, renaming or reading a file of the
    /// output directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Writing a Parquet part, or reading an earlier one on resume, failed.
    #[error("{}: {source}", path.display())]
    Parquet {
        /// The part file.
        path: PathBuf,
        /// What the parquet crate said.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The records did not fit the tables' Arrow schema.
    #[error("building the tables: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A `dumps-*` part found on resume lacks the columns (`dump_id`,
    /// `path`, `status`) a batch writes, or a line of it is not JSON.
    #[error("{}: not a dumps part of `pooldump batch`: {why}", path.display())]
    NotADumpsPart {
        /// The part file.
        path: PathBuf,
        /// The missing column or the parse error.
        why: String,
    },
    #[error(
        "{}: holds {found} parts from an earlier batch; rerun with --format {found} to resume it, or write {wanted} to another directory",
        dir.display()
    )]
    /// The output directory already holds parts of the other [`Format`].
    OtherFormat {
        /// The output directory.
        dir: PathBuf,
        /// The format of the parts it holds ([`Format::extension`]).
        found: &'static str,
        /// The format asked for.
        wanted: &'static str,
    },
    /// An input argument is neither a file, a directory nor a valid glob
    /// pattern, or is a pattern that matches no file.
    #[error("{input}: {why}")]
    Input {
        /// The argument as given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
    /// The rayon pool for `jobs` threads could not be built (the message).
    #[error("cannot start the worker threads: {0}")]
    Threads(String),
}
