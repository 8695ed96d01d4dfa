//! PoolMon and `!poolused` text as snapshots (`snapshot --from-text`,
//! crates/core/src/snapshot_text.rs).
//!
//! The harness is `pooldump_fuzz::targets::text_import` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::text_import::run(data));
