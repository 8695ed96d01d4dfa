//! pooldump-io: checked reads of hostile input, shared by pooldump's
//! crates (the symbol reader, the pool model, the CLI).
//!
//! Everything pooldump reads comes from outside: dump headers, PE headers,
//! PDB streams, symbol-store files, tag lists. These three small pieces are
//! what every reader of such input needs, kept in one crate so the symbol
//! crate (`pooldump-symbols`) and the pool model (`pooldump-core`) share
//! them without depending on each other:
//!
//! - [`bytes`]: little-endian fields over untrusted bytes, `None` instead
//!   of a panic when a field runs past the end;
//! - [`input`]: a whole file read under a size cap that also caps the
//!   memory the read costs;
//! - [`fsio`]: `tempfile` errors without the temporary file's name.
//!
//! ```
//! use pooldump_io::bytes::Le;
//!
//! let header = [0x4d, 0x5a, 0x90, 0x00];
//! assert_eq!(Le(&header).u16(0), Some(0x5a4d));
//! assert_eq!(Le(&header).u32(2), None); // runs past the end
//! ```

#![warn(missing_docs)]

pub mod bytes;
pub mod fsio;
pub mod input;
