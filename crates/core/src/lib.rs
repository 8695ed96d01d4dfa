//! pooldump-core: Windows kernel pool analysis.
//!
//! Data flows one way: a source ([`memory::Memory`]: crash dump, live
//! session, raw image) → kernel identity and layouts → the pool model →
//! typed rows. Rendering lives in the binary.

pub mod addr;
pub mod bytes;
pub mod callsites;
pub mod dump;
pub mod fsio;
pub mod hittag;
pub mod kernel;
pub mod memory;
pub mod pagemap;
pub mod pool;
pub mod relabel;
pub mod snapshot;
pub mod snapshot_text;
pub mod stack;
pub mod symbols;
pub mod tag;
pub mod target;

#[cfg(test)]
mod testutil;

pub use addr::{KernelVa, PAGE_SIZE, Pfn, PhysAddr};
pub use dump::{CrashDump, DumpError};
pub use memory::{Memory, MemoryError, MemoryExt, ProcessSpace, PxeLevel};
pub use tag::PoolTag;
pub use target::{OpenError, Target};
