//! A PDB (MSF 7): identity, the type stream into struct layouts, the
//! global symbols into RVAs (crates/symbols/src/pdb/), then the
//! lookups the analysis makes on the result.
//!
//! The harness is `pooldump_fuzz::targets::pdb_layouts` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::pdb_layouts::run(data));
