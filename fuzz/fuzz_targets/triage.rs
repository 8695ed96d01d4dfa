//! A small memory dump (DumpType 4, C:\Windows\Minidump): the triage
//! header, the driver list and its strings, the captured ranges, the
//! CONTEXT, and reads through them (crates/core/src/dump/triage.rs).
//!
//! The harness is `pooldump_fuzz::targets::triage` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::triage::run(data));
