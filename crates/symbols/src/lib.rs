//! pooldump-symbols: the Windows kernel's symbols (global RVAs, struct
//! layouts, enums) from its PDB, a Volatility ISF file or a built-in table
//! of known builds, and the means to find that PDB: `_NT_SYMBOL_PATH`
//! parsing, local directories, symbol stores (two-tier, CAB-compressed
//! `.pd_`, `file.ptr`), HTTP symbol servers and the layout cache.
//!
//! The crate knows nothing of dumps or memory: it is handed a PDB's name,
//! GUID and age (from a kernel image's CodeView record, which
//! `pooldump-core` reads) or a file, and answers with [`Layouts`].
//! `pooldump-core` loads the kernel's symbols from memory with it and
//! re-exports it as `pooldump_core::symbols`.
//!
//! Read a local PDB, then ask for what analysis code needs:
//!
//! ```
//! use pooldump_symbols::{KernelSymbols, SymbolSource, pdb::read_pdb};
//! # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/sample/symbols");
//! let pdb = dir.join("ntkrnlmp.pdb/06564D3477822C7D97F04852CBD5AFD61/ntkrnlmp.pdb");
//! let (identity, layouts, _warnings) = read_pdb(&pdb, "ntkrnlmp.pdb", None)?;
//! let source = SymbolSource::Pdb { path: Some(pdb), origin: None, layout_cache: None, cache_hit: false };
//! let syms = KernelSymbols::new(identity, source, layouts);
//! let entry = syms.require_type_size("_POOL_TRACKER_TABLE")?;  // 0x28, 0x38 or 0x50
//! let table = syms.require_symbol_rva("PoolTrackTable")?;     // RVA from nt's base
//! let pool_type = syms.field("_POOL_HEADER", "PoolType")?;    // unit offset + bits
//! assert!(pool_type.is_bitfield());
//! # let _ = (entry, table);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Finding a PDB along a symbol path ([`store::find_pdb`]) looks in local
//! directories and stores first, then asks HTTP(S) servers and downloads
//! into the downstream store, verified before it is moved into place.
//!
//! # Features
//!
//! - `download` (default): symbol servers over HTTP(S), through `ureq` with
//!   `rustls`. Without it, `srv*https://...` elements are skipped with a
//!   note in the attempts and only local directories and stores are read,
//!   so a program that reads local PDBs builds no HTTP client and no TLS
//!   stack: `cargo tree -p pooldump-symbols --no-default-features -e normal`
//!   lists neither `ureq` nor `rustls` (the repository's CI checks it).

#![warn(missing_docs)]

pub mod cache;
pub mod fallback;
mod guid;
pub mod isf;
mod kernel_symbols;
mod key;
mod kldr;
pub mod layout;
pub mod name;
pub mod pdb;
mod pdb_prescan;
mod source;
pub mod store;
pub mod symbol_path;

pub use cache::{LayoutCache, default_cache_dir};
pub use guid::Guid;
pub use kernel_symbols::{Field, KernelSymbols, SymbolAnswer, SymbolError};
pub use kldr::{KLDR_BOOTSTRAP, KldrLayout};
pub use layout::{FieldLayout, Layouts, TypeLayout};
pub use name::{PdbName, PdbNameError};
pub use source::{BuiltInMatch, PdbIdentity, SourceKind, SymbolLayer, SymbolSource};
pub use store::{Attempt, DownloadProgress, FetchOptions, FoundPdb, PdbOrigin, PdbRequest};
pub use symbol_path::{MICROSOFT_SYMBOL_SERVER, SymbolPath, SymbolPathElement, Upstream};

/// What to tell a user whose symbols are missing or lack something, in
/// this platform's terms: the CLI appends it to such errors. On Windows,
/// WinDbg's usual `srv*C:\\symbols*...`; elsewhere the per-user cache
/// pooldump already downloads into ([`default_cache_dir`]), since a
/// Windows path means nothing there. `isf_given`: the user passed `--isf`
/// already (and it could not serve), so it is not suggested again.
pub fn symbol_path_hint(isf_given: bool) -> String {
    let give = if isf_given {
        "pass --symbol-path DIR (a directory or symbol store holding the PDB) or --pdb FILE"
    } else {
        "pass --symbol-path DIR (a directory or symbol store holding the PDB), --pdb FILE or --isf FILE"
    };
    if cfg!(windows) {
        format!(
            "{give}, or set _NT_SYMBOL_PATH=srv*C:\\symbols*{MICROSOFT_SYMBOL_SERVER} to download it"
        )
    } else {
        let store = default_cache_dir()
            .map(|c| c.join("symbols").display().to_string())
            .unwrap_or_else(|| "~/.cache/pooldump/symbols".into());
        format!(
            "{give}; or, with network access, let pooldump download it: without --offline and _NT_SYMBOL_PATH it uses srv*{store}*{MICROSOFT_SYMBOL_SERVER} (export _NT_SYMBOL_PATH='srv*DIR*{MICROSOFT_SYMBOL_SERVER}' for another store)"
        )
    }
}

#[cfg(test)]
mod tests;
