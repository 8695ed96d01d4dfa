//! The x64 page-table walk over fuzzed physical memory: translation and
//! virtual reads (memory.rs) and the whole-space walk that maps frames to
//! addresses for the scanner (pagemap.rs).
//!
//! The harness is `pooldump_fuzz::targets::page_walk` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::page_walk::run(data));
