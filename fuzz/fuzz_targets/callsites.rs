//! Reading driver images taken from a dump or a live target: the call-site
//! scan, its names, both Mapped_Driver searches, and relabel maps made,
//! checked and applied against the image.
//!
//! The harness is `pooldump_fuzz::targets::callsites` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::callsites::run(data));
