//! Open a crash dump, print the top five tags by bytes, then every
//! allocation of the top tag.
//!
//!     cargo run -p pooldump-core --example top_tags -- testdata/sample/MEMORY.DMP testdata/sample/symbols
//!
//! The second argument is a symbol path (a directory or store; without
//! it, `_NT_SYMBOL_PATH` as WinDbg reads it).

use pooldump_core::pool::{SortKey, TrackerOptions, UsageQuery, find::FindOptions};
use pooldump_core::{Target, symbols::SymbolOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let dump = args.next().ok_or("usage: top_tags DUMP [SYMBOL_DIR]")?;
    let opts = match args.next() {
        Some(dir) => SymbolOptions::local_store(dir.as_ref()),
        None => SymbolOptions::from_env(),
    };
    let target = Target::open_dump(dump.as_ref(), &opts)?;
    let usage = target.pool_usage(&TrackerOptions::default())?;
    let query = UsageQuery {
        sort: SortKey::Bytes,
        top: Some(5),
        ..Default::default()
    };
    let top = query.apply(&usage.rows);
    for r in &top {
        println!(
            "{} {:?} allocs {} frees {} bytes {}",
            r.tag, r.pool, r.allocs, r.frees, r.bytes
        );
    }
    let first = top.first().ok_or("the tracker has no tags")?;
    let found = target.find(&[first.tag.into()], &FindOptions::default())?;
    for a in &found.allocations {
        println!(
            "{} {} {:#x} {} {}",
            a.va, a.tag, a.bytes, a.state, a.allocator
        );
    }
    Ok(())
}
