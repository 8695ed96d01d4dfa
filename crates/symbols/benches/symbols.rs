//! The two ways a run gets nt's layouts: parsing the PDB (first run) and
//! reading the layout cache (every later run on the same build), plus the
//! queries the analysis makes. Run with
//! `cargo bench -p pooldump-symbols --bench symbols`.

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use pooldump_symbols::isf::read_isf;
use pooldump_symbols::pdb::read_pdb;
use pooldump_symbols::{KernelSymbols, LayoutCache, SymbolSource};

/// The repository's root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pdb(build: &str) -> PathBuf {
    repo().join("testdata/nt").join(build).join("ntkrnlmp.pdb")
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("layouts");
    for build in ["win7-7601", "win10-19041", "server2022-20348"] {
        let path = pdb(build);
        g.bench_function(format!("parse_pdb/{build}"), |b| {
            b.iter(|| read_pdb(&path, "ntkrnlmp.pdb", None).unwrap())
        });
        let (id, layouts, _) = read_pdb(&path, "ntkrnlmp.pdb", None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = LayoutCache::new(dir.path());
        cache.store(&id, &layouts).unwrap();
        g.bench_function(format!("layout_cache_hit/{build}"), |b| {
            b.iter(|| cache.load(&id).unwrap().unwrap())
        });
    }
    // A real-sized layout set: every type and symbol of the real 19041
    // symbol table (1 600+ types, ~40 000 symbols), when ../shared is there.
    let isf = repo().join("../shared/isf/06564D3477822C7D97F04852CBD5AFD6-1.json.xz");
    if isf.is_file() {
        g.bench_function("parse_isf/real-19041", |b| {
            b.iter(|| read_isf(&isf).unwrap())
        });
        let (id, layouts, _) = read_isf(&isf).unwrap();
        let id = id.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = LayoutCache::new(dir.path());
        cache.store(&id, &layouts).unwrap();
        g.bench_function("layout_cache_hit/real-19041", |b| {
            b.iter(|| cache.load(&id).unwrap().unwrap())
        });
    } else {
        eprintln!("{} is not there: real-sized cases skipped", isf.display());
    }
    g.finish();

    let (id, layouts, _) = read_pdb(&pdb("win10-19041"), "ntkrnlmp.pdb", None).unwrap();
    let syms = KernelSymbols::new(
        id,
        SymbolSource::Isf {
            path: "bench".into(),
        },
        layouts,
    );
    c.bench_function("query/field_path", |b| {
        b.iter(|| {
            syms.field("_MI_VISIBLE_STATE", "SystemVaRegions[1].BaseAddress")
                .unwrap()
        })
    });
    c.bench_function("query/symbol_rva", |b| {
        b.iter(|| syms.symbol_rva("PoolBigPageTable").unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
