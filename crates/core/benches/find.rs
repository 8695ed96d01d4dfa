//! `find` at memory bandwidth: GB/s of `find` end to end (page-table walk,
//! big-page table, frame scan, heap checks, tracker) against raw
//! `memchr::memmem` over the same mapped bytes, in the same run, with 1
//! and 2 threads; then the cost of 1, 8 and 64 tags at once.
//!
//! Run: `cargo bench -p pooldump-core --bench find`. The first run writes a 1 GiB dump to
//! target/bench-dumps/1g/ (the same dump as `cargo run --release -p
//! pooldump-kit -- big --size 1G --out target/bench-dumps/1g`);
//! `POOLDUMP_BENCH_GIB=8 cargo bench -p pooldump-core --bench find` uses an 8 GiB one
//! (target/bench-dumps/8g/, written by this bench: `pooldump-kit big`
//! cannot lay out more than 2 GiB, see large_dump). docs/performance.md
//! has the figures.

#[path = "../../../benches/common/mod.rs"]
mod common;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pooldump_core::pool::find::{Engine, FindOptions};
use pooldump_core::{CrashDump, PAGE_SIZE, Target};
use pooldump_scan::{HeaderLayout, Rules, Scanner, TagMask};
use rayon::prelude::*;

/// The dump `pooldump-kit big --size <N>G` writes (3000 bulk tags, 70,000
/// big-pool allocations), generated here if absent.
fn bench_dir() -> (std::path::PathBuf, u64) {
    let gib = common::gib(1);
    let dir = common::bench_dump(&format!("{gib}g"), gib << 30, 70_000, 1 << 16);
    (dir, gib)
}

/// The dump's page data in 4 MiB runs, as `find` splits it.
fn runs(d: &CrashDump) -> Vec<&[u8]> {
    let file = d.file_bytes();
    let chunk = 4 << 20;
    let mut v = Vec::new();
    for e in d.extents() {
        let start = e.file_offset as usize;
        let backed = ((file.len() as u64).saturating_sub(e.file_offset) / PAGE_SIZE).min(e.pages);
        let bytes = &file[start..start + (backed * PAGE_SIZE) as usize];
        v.extend(bytes.chunks(chunk));
    }
    v
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn find_opts(threads: usize, engine: Engine) -> FindOptions<'static> {
    FindOptions {
        threads: Some(threads),
        engine,
        ..FindOptions::default()
    }
}

fn one_tag(c: &mut Criterion) {
    let (dir, gib) = bench_dir();
    let opts = common::symbol_options(&dir);
    let t = Target::open_dump(&dir.join("MEMORY.DMP"), &opts).unwrap();
    let runs = runs(&t.mem);
    let bytes: u64 = runs.iter().map(|r| r.len() as u64).sum();
    let tag = common::bulk_tags(1);
    let needle = tag[0].exact().unwrap().bytes();
    let finder = memchr::memmem::Finder::new(&needle);
    // Sanity: find sees what memmem sees at header positions, and the
    // tracker agrees with it.
    let probe = t.find(&tag, &find_opts(2, Engine::Auto)).unwrap();
    let row = &probe.tags[0];
    eprintln!(
        "{gib} GiB dump: {bytes} bytes of page data; tag {}: {} allocated, {} free, tracker {:?}",
        row.tag, row.allocated, row.free, row.tracker
    );

    let mut g = c.benchmark_group(format!("find one tag, {gib} GiB"));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(bytes));
    for threads in [1, 2] {
        let p = pool(threads);
        // Warm the mapping once so both read the same resident pages.
        p.install(|| {
            runs.par_iter()
                .map(|r| finder.find_iter(r).count())
                .sum::<usize>()
        });
        g.bench_function(
            BenchmarkId::new("raw memmem", format!("{threads} thread(s)")),
            |b| {
                b.iter(|| {
                    p.install(|| {
                        runs.par_iter()
                            .map(|r| finder.find_iter(r).count())
                            .sum::<usize>()
                    })
                })
            },
        );
        let o = find_opts(threads, Engine::Auto);
        g.bench_function(
            BenchmarkId::new("find end to end", format!("{threads} thread(s)")),
            |b| b.iter(|| t.find(&tag, &o).unwrap().allocations.len()),
        );
    }
    // Each pass from the page cache into a fresh mapping: what one CLI run
    // pays, with the scanned pages dropped again (bounded RSS).
    let path = dir.join("MEMORY.DMP");
    g.bench_function(
        BenchmarkId::new("raw memmem, fresh map", "2 thread(s)"),
        |b| {
            let p = pool(2);
            let layout: Vec<(usize, usize)> = runs
                .iter()
                .map(|r| {
                    (
                        r.as_ptr() as usize - t.mem.file_bytes().as_ptr() as usize,
                        r.len(),
                    )
                })
                .collect();
            b.iter(|| {
                let f = std::fs::File::open(&path).unwrap();
                // SAFETY: a read-only map of a file nothing writes during the
                // benchmark.
                let m = unsafe { memmap2::Mmap::map(&f).unwrap() };
                p.install(|| {
                    layout
                        .par_iter()
                        .map(|&(o, n)| finder.find_iter(&m[o..o + n]).count())
                        .sum::<usize>()
                })
            })
        },
    );
    // The CLI's options: scanned pages released as the scan goes.
    let released = FindOptions {
        release_scanned: true,
        ..find_opts(2, Engine::Auto)
    };
    g.bench_function(
        BenchmarkId::new("find, releasing scanned pages", "2 thread(s)"),
        |b| b.iter(|| t.find(&tag, &released).unwrap().allocations.len()),
    );
    g.bench_function(
        BenchmarkId::new("open + find (the CLI's work)", "2 thread(s)"),
        |b| {
            b.iter(|| {
                let t = Target::open_dump(&path, &opts).unwrap();
                t.find(&tag, &released).unwrap().allocations.len()
            })
        },
    );
    g.finish();
}

fn many_tags(c: &mut Criterion) {
    let (dir, gib) = bench_dir();
    let t = Target::open_dump(&dir.join("MEMORY.DMP"), &common::symbol_options(&dir)).unwrap();
    let bytes: u64 = runs(&t.mem).iter().map(|r| r.len() as u64).sum();
    let mut g = c.benchmark_group(format!("find N tags, {gib} GiB, 2 threads"));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(bytes));
    for n in [1usize, 8, 64] {
        let tags = common::bulk_tags(n);
        let probe = t.find(&tags, &find_opts(2, Engine::Auto)).unwrap();
        eprintln!("{n} tags: {} allocations found", probe.allocations.len());
        for engine in [Engine::Auto, Engine::Stride, Engine::AhoCorasick] {
            let o = find_opts(2, engine);
            g.bench_function(BenchmarkId::new(engine.name(), format!("{n} tags")), |b| {
                b.iter(|| t.find(&tags, &o).unwrap().allocations.len())
            });
        }
    }
    g.finish();
}

/// The candidate engines alone (tag and alignment, no header checks) over
/// the same bytes: what the number of tags costs the inner loop.
fn engines(c: &mut Criterion) {
    let (dir, gib) = bench_dir();
    let t = Target::open_dump(&dir.join("MEMORY.DMP"), &common::symbol_options(&dir)).unwrap();
    let runs = runs(&t.mem);
    let bytes: u64 = runs.iter().map(|r| r.len() as u64).sum();
    let p = pool(2);
    let mut g = c.benchmark_group(format!("engine only, {gib} GiB, 2 threads"));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(bytes));
    for n in [1usize, 8, 64] {
        let masks: Vec<TagMask> = common::bulk_tags(n)
            .iter()
            .map(|t| TagMask::exact(t.exact().unwrap().value()))
            .collect();
        for engine in [Engine::Memmem, Engine::Stride, Engine::AhoCorasick] {
            let Ok(s) = Scanner::new(&masks, HeaderLayout::X64, Rules::SegmentHeap, engine) else {
                continue;
            };
            g.bench_function(BenchmarkId::new(engine.name(), format!("{n} tags")), |b| {
                b.iter(|| {
                    p.install(|| {
                        runs.par_iter()
                            .map(|r| s.count_candidates(r))
                            .sum::<usize>()
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, one_tag, many_tags, engines);
criterion_main!(benches);
