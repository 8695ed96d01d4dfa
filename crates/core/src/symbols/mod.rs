//! nt's symbols: global RVAs, struct layouts and enums, from the kernel's
//! PDB, a Volatility ISF file, or a built-in table for known builds.
//!
//! Everything that reads symbols without memory (symbol paths, stores,
//! servers and caches, the PDB and ISF readers, the built-in table) is the
//! `pooldump-symbols` crate, re-exported here whole; this module adds what
//! needs the kernel in memory: [`load_kernel_symbols`] (find nt, read its
//! CodeView record, load its symbols, check them against the image) and
//! [`images::SymbolPathImages`] (driver images for stack walks and
//! attribution, from the symbol path).
//!
//! Analysis code asks [`KernelSymbols`] for every offset it uses, and
//! never hard-codes one:
//!
//! ```
//! # fn demo(syms: &pooldump_core::symbols::KernelSymbols) -> Result<(), pooldump_core::symbols::SymbolError> {
//! let entry = syms.require_type_size("_POOL_TRACKER_TABLE")?;          // 0x28, 0x38 or 0x50
//! let table = syms.require_symbol_rva("PoolTrackTable")?;             // RVA from nt's base
//! let pool_type = syms.field("_POOL_HEADER", "PoolType")?;            // unit offset + bits
//! let regions = syms.field("_MI_VISIBLE_STATE", "SystemVaRegions[1].BaseAddress")?;
//! let paged = syms.enum_value("_MI_ASSIGNED_REGION_TYPES", "AssignedRegionPagedPool");
//! # let _ = (entry, table, pool_type, regions, paged); Ok(()) }
//! ```
//!
//! Loading ([`load_kernel_symbols`]) tries, in order: a PDB file given
//! explicitly, ISF files given explicitly, the layout cache (layouts read
//! from this PDB before), the symbol path (`_NT_SYMBOL_PATH` syntax: local
//! directories, symbol stores, HTTP symbol servers), and finally the
//! built-in table. Every answer says which source it came from
//! ([`SourceKind`]), and the loader records where the PDB came from
//! ([`SymbolSource`]).
//!
//! The API of this module (`KernelSymbols`, `Field`, `SymbolAnswer`,
//! `SymbolError`, `load_kernel_symbols`, `SymbolOptions`) is stable for the
//! pool analysis.

pub mod images;
mod loader;
mod refine;

pub use pooldump_symbols::*;

pub use refine::refine_kernel_identity;

pub use loader::{
    BuiltInMisfit, LoadError, SymbolOptions, check_builtin_fits, load_kernel_symbols,
};

#[cfg(test)]
mod tests;
