//! `pooldump batch` against `pooldump analyze` run once per dump in a
//! shell loop: dumps per second over a kit fleet, whole
//! processes timed from outside, as a user would run them.
//!
//! Run: `cargo bench --bench batch`. The fleet (200 dumps of 64 MiB:
//! 20 machines over the ten committed builds, 10 dumps each; 12.5 GiB) is
//! written once under target/bench-dumps/ and reused. POOLDUMP_BENCH_DUMPS
//! (a multiple of 10) and POOLDUMP_BENCH_DUMP_MIB make it smaller when the
//! disk is short. Layouts come from a layout cache beside the fleet,
//! warmed before timing, for both sides.
//!
//! Measured, each three times (median and range printed):
//! - `pooldump batch FLEET -o OUT --jobs 2` (a fresh OUT each time);
//! - `for f in ...; do pooldump analyze "$f" ...; done` (bash);
//! - the same analyses as 2 processes at a time (`xargs -P 2`), the best a
//!   shell loop can do on 2 cores.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pooldump_kit::fleet::{FleetSpec, write_fleet};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fleet's directory, written if absent.
fn fleet(dumps: u64, mib: u64) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-dumps")
        .join(format!("fleet-{dumps}x{mib}m"));
    if dir.join("fleet.json").is_file() {
        return dir;
    }
    let machines = (dumps / 10).max(1) as usize;
    let mut spec = FleetSpec::new(machines, 10, 23);
    spec.corrupt = 0;
    // The base machine's dump is about 4.5 MiB; bulk pool fills the rest.
    spec.bulk_bytes = Some(mib.saturating_sub(8).max(2) << 20);
    eprintln!(
        "writing {} dumps of ~{mib} MiB to {} (once)",
        machines * 10,
        dir.display()
    );
    let t = Instant::now();
    // Two machines at a time: each holds its memory while it is written.
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(|| write_fleet(&spec, &dir))
        .unwrap();
    eprintln!("written in {:.1} s", t.elapsed().as_secs_f64());
    dir
}

fn dump_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('m'))
        .flat_map(|m| {
            std::fs::read_dir(m.path())
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "dmp"))
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v
}

/// Wall-clock seconds of `cmd`, which must succeed.
fn time(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let out = cmd.output().expect("run the command");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    // `cargo bench` passes --bench; a filter argument selects nothing here.
    let dumps = env_u64("POOLDUMP_BENCH_DUMPS", 200);
    let mib = env_u64("POOLDUMP_BENCH_DUMP_MIB", 64);
    let dir = fleet(dumps, mib);
    let files = dump_files(&dir);
    let n = files.len() as f64;
    let bytes: u64 = files
        .iter()
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum();
    let exe = env!("CARGO_BIN_EXE_pooldump");
    let symbols = dir.join("symbols");
    let cache = dir.join("cache");
    let list = dir.join("dumps.txt");
    std::fs::write(
        &list,
        files
            .iter()
            .map(|f| f.display().to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let out_root = tempfile::tempdir_in(dir.parent().unwrap()).unwrap();
    let batch = |i: usize| {
        let mut c = Command::new(exe);
        c.arg("batch")
            .arg(&dir)
            .arg("-o")
            .arg(out_root.path().join(format!("run-{i}")))
            .args(["--jobs", "2", "--offline", "--symbol-path"])
            .arg(&symbols)
            .env("POOLDUMP_CACHE_DIR", &cache)
            .env_remove("_NT_SYMBOL_PATH");
        c
    };
    let shell = |parallel: bool| {
        let script = if parallel {
            r#"xargs -P 2 -n 1 -I{} "$PD" analyze {} --offline --symbol-path "$SYM" < "$LIST" > /dev/null"#
        } else {
            r#"while read -r f; do "$PD" analyze "$f" --offline --symbol-path "$SYM" > /dev/null; done < "$LIST""#
        };
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(script)
            .env("PD", exe)
            .env("SYM", &symbols)
            .env("LIST", &list)
            .env("POOLDUMP_CACHE_DIR", &cache)
            .env_remove("_NT_SYMBOL_PATH");
        c
    };
    // Warm the page cache and the layout cache (both sides use it).
    time(&mut batch(99));
    let runs = 3;
    let b: Vec<f64> = (0..runs).map(|i| time(&mut batch(i))).collect();
    let l: Vec<f64> = (0..runs).map(|_| time(&mut shell(false))).collect();
    let p: Vec<f64> = (0..runs).map(|_| time(&mut shell(true))).collect();
    println!(
        "{} dumps, {:.1} GiB, {} cores",
        files.len(),
        bytes as f64 / (1u64 << 30) as f64,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| Run | Seconds (median, range) | Dumps/s |");
    println!("|---|---|---|");
    for (name, v) in [
        ("pooldump batch --jobs 2", b),
        ("pooldump analyze in a bash loop", l),
        ("pooldump analyze, xargs -P 2", p),
    ] {
        let (m, lo, hi) = median(v);
        println!("| {name} | {m:.2} ({lo:.2}-{hi:.2}) | {:.1} |", n / m);
    }
}
