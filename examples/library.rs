//! The README's "Use it as a library" example, kept compiling and running
//! (tests/cli/readme.rs checks that the README shows this file's code and runs
//! it). Run from the repository root: `cargo run --example library`.

use pooldump_core::Target;
use pooldump_core::pool::{PoolMonColumn, TrackerOptions, UsageQuery, find::FindOptions};
use pooldump_core::symbols::SymbolOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SymbolOptions::from_env() searches _NT_SYMBOL_PATH and Microsoft's server, as the CLI does.
    let symbols = SymbolOptions::local_store("testdata/sample/symbols".as_ref());
    let target = Target::open_dump("testdata/sample/MEMORY.DMP".as_ref(), &symbols)?;
    let usage = target.pool_usage(&TrackerOptions::default())?;
    let top = UsageQuery {
        sort: PoolMonColumn::Bytes.into(),
        top: Some(5),
        ..Default::default()
    };
    let top = top.apply(&usage.rows);
    for r in &top {
        println!("{} {} {} bytes", r.tag, r.pool.poolmon(), r.bytes);
    }
    // Every allocation of the top tag, as !poolfind lists them.
    let found = target.find(&[top[0].tag.into()], &FindOptions::default())?;
    for a in &found.allocations {
        println!(
            "{} {} {:#x} {} {}",
            a.va, a.tag, a.bytes, a.state, a.allocator
        );
    }
    Ok(())
}
