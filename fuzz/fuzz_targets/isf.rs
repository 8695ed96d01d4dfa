//! A Volatility ISF, plain JSON or xz (by its magic), through the bounded
//! reader the CLI uses (crates/core/src/symbols/isf.rs).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pooldump_core::symbols::isf::{parse_isf, read_isf_from};

fuzz_target!(|data: &[u8]| {
    let _ = read_isf_from(data, Path::new("fuzz.json.xz"));
    let _ = parse_isf(data);
});
