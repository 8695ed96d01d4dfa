//! The walkers that follow pointers and sizes read from the target's
//! memory, on fuzzed kernel memory (every address reads the input
//! cyclically, with optional holes), with a real build's layouts from the
//! built-in table: the pool tracker and its per-processor tables and
//! expansion table, the big-page table, the process list and session pool
//! (crates/core/src/pool), the module list and KDBG (crates/core/src/kernel).
//!
//! The harness is `pooldump_fuzz::targets::pool_walkers` (fuzz/src/targets/), shared
//! with the regression tests that replay the crashers on stable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pooldump_fuzz::targets::pool_walkers::run(data));
