//! A Volatility ISF, plain JSON or xz (by its magic), through the bounded
//! reader the CLI uses (crates/symbols/src/isf.rs).
//!
//! The harness is `pooldump_fuzz::targets::isf` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::isf::run(data));
