//! The library on a live target: listen for a KDNET target (the settings
//! WinDbg's `-k net:port=N,key=K` takes), break in, find nt, print the five
//! tags holding the most bytes, then let the target run again.
//!
//! Against the simulated machine (run from the repository root):
//!
//! ```sh
//! cargo run --release -p pooldump-kit-cli -- serve --kdnet port=50000,key=1.2.3.4 &
//! cargo run --example live -- port=50000,key=1.2.3.4 pooldump-demo-symbols
//! ```

use pooldump_core::Target;
use pooldump_core::pool::{PoolMonColumn, TrackerOptions, UsageQuery};
use pooldump_core::symbols::SymbolOptions;
use pooldump_kdnet::{KdnetSpec, Session};

const USAGE: &str = "usage: live port=N,key=W.X.Y.Z SYMBOL_DIR";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let spec: KdnetSpec = args.next().ok_or(USAGE)?.parse()?;
    let symbols = SymbolOptions::local_store(args.next().ok_or(USAGE)?.as_ref());
    // Waits for the target's offer; the target stays stopped while we read.
    let live = Session::connect(spec.into())?;
    let (hints, build) = (live.boot_hints(), Some(live.build()));
    let target = Target::new(live, &hints, build, &symbols)?;
    let usage = target.pool_usage(&TrackerOptions::default())?;
    let query = UsageQuery {
        sort: PoolMonColumn::Bytes.into(),
        top: Some(5),
        ..Default::default()
    };
    for r in query.apply(&usage.rows) {
        println!("{} {} {} bytes", r.tag, r.pool.poolmon(), r.bytes);
    }
    // Dropping the target resumes the machine.
    Ok(())
}
