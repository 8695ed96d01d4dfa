//! A Volatility ISF, plain JSON or xz (by its magic), through the bounded
//! reader the CLI uses (crates/symbols/src/isf.rs).
use std::path::Path;

use pooldump_core::symbols::isf::{parse_isf, read_isf_from};

pub fn run(data: &[u8]) {
    let _ = read_isf_from(data, Path::new("fuzz.json.xz"));
    let _ = parse_isf(data);
}
