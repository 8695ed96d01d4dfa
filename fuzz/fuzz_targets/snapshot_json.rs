//! A snapshot file (pooldump.snapshot/2 JSON) and what diff and trend do
//! with it (crates/core/src/snapshot.rs).
//!
//! The harness is `pooldump_fuzz::targets::snapshot_json` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::snapshot_json::run(data));
