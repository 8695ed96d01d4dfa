//! A relabel map file (hostile if a user is handed one), read and used
//! against the kit's drivers loaded in memory and as files.
//!
//! The harness is `pooldump_fuzz::targets::relabel_map` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::relabel_map::run(data));
