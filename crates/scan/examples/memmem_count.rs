//! The floor `pooldump find` is measured against: a separate process that
//! memory-maps a file and counts one 4-byte needle with memchr's `memmem`
//! on all cores (rayon), in 4 MiB runs as `find` splits its work. No dump
//! parsing, no page tables, no pool rules: raw memory bandwidth.
//!
//!     cargo run --release -p pooldump-scan --example memmem_count -- FILE TAG
//!
//! `benches/find_process.rs` runs it beside `pooldump find` on the same
//! dump.

use rayon::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(tag)) = (args.next(), args.next()) else {
        return Err("usage: memmem_count FILE TAG".into());
    };
    let mut needle = tag.into_bytes();
    needle.resize(4, b' ');
    let file = std::fs::File::open(&path)?;
    // SAFETY: read-only map of a file nobody is expected to change while
    // this short-lived process runs.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let finder = memchr::memmem::Finder::new(&needle[..4]);
    let n: usize = map
        .par_chunks(4 << 20)
        .map(|c| finder.find_iter(c).count())
        .sum();
    println!("{n}");
    Ok(())
}
