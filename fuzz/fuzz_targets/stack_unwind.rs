//! The x64 unwinder (crates/core/src/stack) on a fuzzed stack: a real
//! driver image (the kit's committed drivers, with .pdata and unwind
//! infos) mapped at a kernel address with fuzzed bytes patched into it, a
//! fuzzed stack, fuzzed registers and CONTEXT; optionally the image also
//! comes as a (patched) file from an image locator, as the symbol path
//! serves it.
//!
//! The harness is `pooldump_fuzz::targets::stack_unwind` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::stack_unwind::run(data));
