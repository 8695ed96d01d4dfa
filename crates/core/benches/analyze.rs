//! `analyze` on a multi-GiB dump with cached symbols (target: well under a
//! second), and the big-page table walk of a 2^18-entry table.
//!
//! Run: `cargo bench -p pooldump-core --bench analyze` (POOLDUMP_BENCH_GIB=8 for an 8 GiB
//! dump; the first run writes it under target/bench-dumps/).

#[path = "../../../benches/common/mod.rs"]
mod common;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pooldump_core::Target;
use pooldump_core::pool::{BigPoolOptions, TrackerOptions};

fn analyze(c: &mut Criterion) {
    let gib = common::gib(2);
    let dir = common::bench_dump(&format!("analyze-{gib}g"), gib << 30, 20_000, 1 << 16);
    let opts = common::symbol_options(&dir);
    // Warm the layout cache: "cached symbols".
    Target::open_dump(&dir.join("MEMORY.DMP"), &opts).unwrap();
    let mut g = c.benchmark_group("analyze");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function(
        format!("open + tracker + big pool, {gib} GiB dump, cached layouts"),
        |b| {
            b.iter(|| {
                let t = Target::open_dump(&dir.join("MEMORY.DMP"), &opts).unwrap();
                let u = t.pool_usage(&TrackerOptions::default()).unwrap();
                let big = t.big_pool(&BigPoolOptions::default()).unwrap();
                (u.rows.len(), big.live_count)
            })
        },
    );
    g.finish();
}

fn big_pool_walk(c: &mut Criterion) {
    let dir = common::bench_dump("bigpool-2e18", 64 << 20, 60_000, 1 << 18);
    let opts = common::symbol_options(&dir);
    let t = Target::open_dump(&dir.join("MEMORY.DMP"), &opts).unwrap();
    let probe = t.big_pool(&BigPoolOptions::default()).unwrap();
    assert_eq!(probe.size, 1 << 18);
    let mut g = c.benchmark_group("big_pool");
    g.sample_size(20);
    g.bench_function(
        format!("walk 2^18 entries ({} live)", probe.live_count),
        |b| b.iter(|| t.big_pool(&BigPoolOptions::default()).unwrap().live_count),
    );
    g.finish();
}

criterion_group!(benches, analyze, big_pool_walk);
criterion_main!(benches);
