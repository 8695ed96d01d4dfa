//! pooltag.txt (any encoding the decoder accepts) and the lookups the
//! Mapped_Driver column makes (crates/core/src/pool/pooltag.rs).
//!
//! The harness is `pooldump_fuzz::targets::pooltag` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::pooltag::run(data));
