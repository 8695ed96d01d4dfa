//! A kernel dump file: DUMP_HEADER64, the run list or SDMP/FDMP bitmap,
//! kdmp-parser's map and its cross-check, then page lookups and reads
//! through the result (crates/core/src/dump).
//!
//! The harness is `pooldump_fuzz::targets::dump_open` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::dump_open::run(data));
