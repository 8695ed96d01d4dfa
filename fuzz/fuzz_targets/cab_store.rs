//! A compressed symbol-store file (`ntkrnlmp.pd_`, a CAB with MSZIP or
//! LZX) read as crates/symbols/src/store/cab.rs expands it: the cabinet's
//! folders and file entries, then the file's data, capped.
//!
//! The harness is `pooldump_fuzz::targets::cab_store` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::cab_store::run(data));
