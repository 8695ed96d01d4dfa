//! PoolHitTag analysis (crates/core/src/hittag) on a fuzzed stop: the
//! stack walk, the call site (past KMDF's framework), the caller's code and
//! its size argument traced into its callers, over committed images at
//! fuzzed bases with a fuzzed stack and registers.
//!
//! The harness is `pooldump_fuzz::targets::hittag` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::hittag::run(data));
