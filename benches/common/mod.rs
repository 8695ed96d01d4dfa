//! Benchmark dumps: generated once by the kit into target/bench-dumps/ and
//! reused (a 1 GiB dump takes about 3 s to write).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pooldump_core::symbols::{LayoutCache, SymbolOptions};
use pooldump_kit::bulk::BulkSpec;
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};

/// The workspace's root (the directory with Cargo.lock above the crate
/// this bench belongs to): benches of every crate share its
/// `target/bench-dumps/`.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(here)
        .to_path_buf()
}

/// `target/bench-dumps/<name>/{MEMORY.DMP,symbols/}` for a machine with
/// `pool_bytes` of bulk pool and `big_live` big-pool allocations in a
/// table of `big_table` entries. Set POOLDUMP_BENCH_GIB to override the
/// size of the dumps benches ask for in GiB.
pub fn bench_dump(name: &str, pool_bytes: u64, big_live: u32, big_table: u64) -> PathBuf {
    let dir = workspace_root().join("target/bench-dumps").join(name);
    let dump = dir.join("MEMORY.DMP");
    if dump.is_file() && dir.join("symbols").is_dir() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let mut s = Scenario::small(NtBuild::Win10_19041, 1);
    s.cpus = 8;
    s.ram_mib = pool_bytes / (1 << 20) + 1024;
    s.big_pool.table_size = big_table;
    s.bulk = Some(BulkSpec {
        bytes: pool_bytes,
        tags: 3000,
        big_live,
        big_freed: big_live / 8,
    });
    let m = Machine::build(&s);
    let tmp = dir.join("MEMORY.DMP.tmp");
    m.write_dump_file(DumpKind::KernelBitmap, &tmp).unwrap();
    m.write_symbol_store(&dir.join("symbols")).unwrap();
    std::fs::rename(&tmp, &dump).unwrap();
    dir
}

/// Size in GiB from POOLDUMP_BENCH_GIB, else `default`.
pub fn gib(default: u64) -> u64 {
    std::env::var("POOLDUMP_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Offline symbols from the bench dump's own store, with a layout cache
/// beside it ("cached symbols").
pub fn symbol_options(dir: &Path) -> SymbolOptions<'static> {
    let mut o = SymbolOptions::local_store(&dir.join("symbols"));
    o.layout_cache = Some(LayoutCache::new(dir.join("layout-cache")));
    o
}

/// Bulk tags as the kit names them: an upper-case letter, then three of
/// [a-z0-9] (see pooldump_kit::bulk); `n` of them spread over the 3000
/// (from the eighth, which has headers as well as big-page entries).
pub fn bulk_tags(n: usize) -> Vec<pooldump_core::pool::TagPattern> {
    const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|k| {
            let i = ((k * 2999 / n.max(1) + 7) % 3000) as u32;
            let mut b = [0u8; 4];
            b[0] = b'A' + (i % 26) as u8;
            let mut r = i / 26;
            for c in b.iter_mut().skip(1) {
                *c = REST[(r % 36) as usize];
                r /= 36;
            }
            pooldump_core::pool::TagPattern::parse(std::str::from_utf8(&b).unwrap()).unwrap()
        })
        .collect()
}

/// A free UDP port on 127.0.0.1 for a simulated KDNET target.
pub fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
    s.local_addr().unwrap().port()
}

/// The median of `v` (the upper one of an even count); NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
