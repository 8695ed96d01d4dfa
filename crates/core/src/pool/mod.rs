//! The pool model: what `!poolused` and PoolMon show (the tag tracker,
//! summed over every processor), the big-page table, and the filters,
//! sorts and tag-to-driver attribution the CLI offers on top.
//!
//! Every offset comes from [`KernelSymbols`](crate::symbols::KernelSymbols); sizes read from memory are
//! bounded before anything is allocated for them.
//!
//! ```
//! use pooldump_core::pool::{self, PoolClass};
//! # fn demo(mem: &dyn pooldump_core::Memory, syms: &pooldump_core::symbols::KernelSymbols,
//! #         kern_base: pooldump_core::KernelVa) -> Result<(), pooldump_core::pool::PoolError> {
//! let usage = pool::read_pool_usage(mem, syms, kern_base, &pool::TrackerOptions::default())?;
//! for row in usage.rows.iter().filter(|r| r.pool == PoolClass::NonPaged).take(5) {
//!     println!("{} {} {} {}", row.tag, row.allocs, row.frees, row.bytes);
//! }
//! # Ok(()) }
//! ```

pub mod attribution;
mod bigpool;
mod filter;
pub mod find;
pub mod pooltag;
mod read;
mod session;
mod tracker;
mod usage;

pub(crate) use bigpool::SessionBigBudget;
pub use bigpool::{
    BigPoolEntry, BigPoolOptions, BigPoolTable, read_big_pool, read_session_big_pages,
};
pub use filter::{PoolMonColumn, SortKey, TagPattern, TagPatternError, UsageQuery};
pub use pooltag::{BinaryKind, PoolTagDb, PoolTagEntry, PoolTagMatch};
pub use session::{SessionPool, SessionProcess, SessionUsage, read_session_pool};
pub use tracker::{
    Counters, PoolMonRow, PoolUsage, TagUsage, Totals, TrackerInfo, TrackerOptions, TrackerSlot,
    read_pool_usage,
};

use crate::addr::KernelVa;
use crate::memory::MemoryError;
use crate::symbols::SymbolError;

/// Paged or nonpaged, as PoolMon's Type column says it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum PoolClass {
    /// NonPagedPool, NonPagedPoolNx included (`Nonp`).
    NonPaged,
    /// PagedPool (`Paged`).
    Paged,
}

impl PoolClass {
    /// PoolMon's spelling.
    pub fn poolmon(self) -> &'static str {
        match self {
            PoolClass::NonPaged => "Nonp",
            PoolClass::Paged => "Paged",
        }
    }
}

impl std::fmt::Display for PoolClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.poolmon())
    }
}

/// Why the pool could not be read at all. Partial damage (a missing page
/// under one table) is a warning on the result instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The symbols lack a global or layout the tables need.
    #[error(transparent)]
    Symbol(#[from] SymbolError),
    /// A table or variable could not be read.
    #[error("cannot read {what} at {va}")]
    Unreadable {
        /// What (`nt!PoolTrackTable`, with where its RVA came from).
        what: String,
        /// Where it was read.
        va: KernelVa,
        /// Why the read failed.
        #[source]
        source: MemoryError,
    },
    /// A size or count is larger than any Windows build uses.
    #[error(
        "{what} is {value:#x}, which no Windows build uses (at most {limit:#x}); the dump or the symbols are wrong"
    )]
    Implausible {
        /// Which (`nt!PoolTrackTableSize`).
        what: String,
        /// The value read.
        value: u64,
        /// The largest value accepted.
        limit: u64,
    },
    /// A pointer is not a kernel address.
    #[error("{what} is {va}, which is not a kernel address; the dump or the symbols are wrong")]
    BadPointer {
        /// Which (`nt!PoolTrackTable`).
        what: String,
        /// The value read.
        va: KernelVa,
    },
}
