//! pooldump-core: Windows kernel pool analysis.
//!
//! Open a crash dump, print the top five tags by bytes (PoolMon's columns),
//! then every allocation of the top tag (`!poolfind`):
//!
//! ```
//! use pooldump_core::pool::{PoolMonColumn, TrackerOptions, UsageQuery, find::FindOptions};
//! use pooldump_core::{Target, symbols::SymbolOptions};
//! # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/sample");
//! let opts = SymbolOptions::local_store(&dir.join("symbols")); // or SymbolOptions::from_env()
//! let target = Target::open_dump(&dir.join("MEMORY.DMP"), &opts)?;
//! let usage = target.pool_usage(&TrackerOptions::default())?;
//! let top = UsageQuery { sort: PoolMonColumn::Bytes.into(), top: Some(5), ..Default::default() }.apply(&usage.rows);
//! for r in &top {
//!     println!("{} {:?} allocs {} frees {} bytes {}", r.tag, r.pool, r.allocs, r.frees, r.bytes);
//! }
//! let found = target.find(&[top[0].tag.into()], &FindOptions::default())?;
//! for a in &found.allocations {
//!     println!("{} {} {:#x} {} {}", a.va, a.tag, a.bytes, a.state, a.allocator);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A live target is the same [`Target`] over a KDNET session
//! (`pooldump_kdnet::Session::connect`, then [`Target::new`]); any other
//! source implements [`Memory`] (physical reads and the kernel's DTB).
//! The repository's `examples/library.rs` is this program (the README's);
//! `examples/live.rs` does the same on a live target.
//!
//! A [`Target`] also gives the big-page table ([`Target::big_pool`]),
//! session pool ([`Target::session_pool`]), Mapped_Driver
//! ([`Target::attribute`]), a snapshot for diff and trend
//! ([`Target::snapshot`]), the pool call sites of its drivers
//! ([`Target::call_sites`]) and a stack walker over its modules
//! ([`Target::stack_walker`]).
//!
//! Data flows one way: a source ([`memory::Memory`]: crash dump, live
//! session, raw image) → kernel identity and layouts → the pool model →
//! typed rows. Rendering lives in the binary.

#![warn(missing_docs)]

pub mod addr;
pub mod callsites;
pub mod dump;
pub mod hittag;
pub mod kernel;
pub mod memory;
pub mod pagemap;
pub mod pool;
pub mod processes;
pub mod relabel;
pub mod snapshot;
pub mod snapshot_text;
pub mod stack;
pub mod symbols;
pub mod tag;
pub mod target;
pub mod text;
pub mod warning;

// Checked reads of hostile bytes and files, at their old paths
// (`pooldump_core::bytes::Le`, `pooldump_core::input::read_capped`).
pub use pooldump_io::{bytes, fsio, input};

#[cfg(test)]
mod testutil;

pub use addr::{KernelVa, PAGE_SIZE, Pfn, PhysAddr};
pub use dump::{CrashDump, DumpError};
pub use memory::{Memory, MemoryError, MemoryExt, PageFile, PhysExtent, ProcessSpace, PxeLevel};
pub use tag::PoolTag;
pub use target::{OpenError, Target};
pub use warning::{Warning, WarningKind};
