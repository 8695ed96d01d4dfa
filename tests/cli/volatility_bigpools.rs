//! Volatility 3 cross-check of the synthetic kernel kit.
//!
//! Volatility's `windows.bigpools`, run on a dump the kit writes, with an
//! ISF that Volatility's own `pdbconv` makes from the committed PDB, must
//! list exactly the big-page table entries recorded in the kit's ground
//! truth: the live ones without `--show-free`, live and freed (flagged
//! `Free`) with it. Nothing here is compared with pooldump's own code: this
//! checks that the kit's dumps are what an independent tool reads as
//! Windows. docs/checks-volatility.md has the commands and what Volatility
//! needs of a dump.
//!
//! Volatility is found in a venv at `$POOLDUMP_VOL_VENV` or
//! `<repo>/target/vol-venv` (`python3 -m venv target/vol-venv &&
//! target/vol-venv/bin/pip install volatility3==2.28.2`). Without it the
//! tests skip, unless `CI=true`.

use crate::support;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use pooldump_kit::machine::tag_value;
use pooldump_kit::truth::BigEntry;
use pooldump_kit::{DumpKind, Machine, NtBuild, PoolKind, Scenario, SizeSpec, TagSpec};
use serde_json::Value;

/// Volatility masks pointer-typed fields with the x64 layer's address mask
/// (Intel32e: 48 virtual-address bits), so a `PVOID Va` prints without its
/// sign extension. Where the PDB types Va as ULONGLONG (8.1 and later) the
/// value prints as stored.
const VOL_POINTER_MASK: u64 = (1 << 48) - 1;

#[test]
fn win10_19041_bitmap_full_and_complete_dumps() {
    // 64 MiB of RAM keeps the full and complete dumps at 64 MiB each.
    check_build(
        NtBuild::Win10_19041,
        Some(64),
        &[
            DumpKind::KernelBitmap,
            DumpKind::Full,
            DumpKind::CompleteBitmap,
        ],
    );
}

#[test]
fn win7_7601_kernel_bitmap() {
    check_build(NtBuild::Win7_7601, None, &[DumpKind::KernelBitmap]);
}

#[test]
fn win11_22000_kernel_bitmap() {
    check_build(NtBuild::Win11_22000, None, &[DumpKind::KernelBitmap]);
}

/// The builds the tests above leave out (all pass with Volatility 2.28.2);
/// about 6 s each, so only on request.
#[test]
#[ignore = "slow (about 6 s a build); run with --ignored"]
fn every_other_build_kernel_bitmap() {
    let done = [
        NtBuild::Win10_19041,
        NtBuild::Win7_7601,
        NtBuild::Win11_22000,
    ];
    for build in NtBuild::ALL.into_iter().filter(|b| !done.contains(b)) {
        check_build(build, None, &[DumpKind::KernelBitmap]);
    }
}

/// A Python venv holding volatility3.
struct Vol {
    python: PathBuf,
    vol: PathBuf,
}

/// The venv, or None (after saying why on stderr) when the test should
/// skip. Fails instead under `CI=true`, or when `$POOLDUMP_VOL_VENV` names a
/// directory without Volatility (a misconfiguration, not an absent tool).
fn volatility() -> Option<Vol> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let (venv, explicit) = match std::env::var_os("POOLDUMP_VOL_VENV") {
        Some(v) => (PathBuf::from(v), true),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vol-venv"),
            false,
        ),
    };
    let vol = Vol {
        python: venv.join("bin/python"),
        vol: venv.join("bin/vol"),
    };
    if vol.python.is_file() && vol.vol.is_file() {
        return Some(vol);
    }
    let what = format!(
        "Volatility 3 ({} has no bin/python and bin/vol; set POOLDUMP_VOL_VENV, or: \
         python3 -m venv target/vol-venv && \
         target/vol-venv/bin/pip install volatility3==2.28.2)",
        venv.display()
    );
    if ci || explicit {
        panic!("{what} is missing");
    }
    support::missing(&what)
}

/// Build the scenario for `build`, write each dump kind, and compare
/// Volatility's big-pool listing with the truth; every mismatch of every
/// kind is reported before failing.
fn check_build(build: NtBuild, ram_mib: Option<u64>, kinds: &[DumpKind]) {
    let Some(vol) = volatility() else {
        return;
    };
    let m = Machine::build(&scenario(build, ram_mib));
    let truth = &m.truth.big_pool;
    // A comparison of empty lists proves nothing: the scenario must put
    // live and freed entries, and a tag Volatility prints altered, in the
    // table.
    assert!(
        truth.entries.iter().any(|e| !e.freed) && truth.entries.iter().any(|e| e.freed),
        "{}: the scenario left no live or no freed big-pool entry",
        build.name()
    );
    assert!(
        truth.entries.iter().any(|e| e.tag.ends_with(' ')),
        "{}: the scenario left no space-padded big-pool tag",
        build.name()
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let cache = dir.path().join("volcache");
    std::fs::create_dir(&cache).expect("create Volatility's cache directory");
    let (symdir, isf) = convert_pdb(&vol, &m, dir.path());
    let store = dir.path().join("pdb-store");
    m.write_symbol_store(&store)
        .expect("write the symbol store");

    let mut failures = String::new();
    for (k, &kind) in kinds.iter().enumerate() {
        let dump = dir.path().join(format!("{kind:?}.dmp"));
        m.write_dump_file(kind, &dump)
            .unwrap_or_else(|e| panic!("write {}: {e}", dump.display()));
        if k == 0 {
            check_pslist(&vol, &m, &dump, &symdir, &cache, &mut failures);
        }
        for show_free in [false, true] {
            let got: Vec<Row> = bigpools(&vol, &dump, &symdir, &cache, show_free)
                .iter()
                .map(|r| Row::from_vol(r, &isf))
                .collect();
            let want: Vec<Row> = truth
                .entries
                .iter()
                .filter(|e| show_free || !e.freed)
                .map(|e| Row::from_truth(e, &isf))
                .collect();
            // pooldump's own listing must be Volatility's, entry for entry.
            let mut ours = pooldump_bigpools(&dump, &store, show_free, &isf);
            let mut theirs: Vec<&Row> = got.iter().collect();
            ours.sort_by_key(|r| r.allocation);
            theirs.sort_by_key(|r| r.allocation);
            if ours.iter().collect::<Vec<_>>() != theirs {
                let _ = writeln!(
                    failures,
                    "{} {kind:?}{}: pooldump analyze --big-pool differs from Volatility:\n{}",
                    build.name(),
                    if show_free { " --show-free" } else { "" },
                    diff(&ours, &theirs.into_iter().cloned().collect::<Vec<_>>())
                );
            }
            if got != want {
                let _ = writeln!(
                    failures,
                    "{} {kind:?} (DumpType {}){}: Volatility listed {} entries, the truth {}:\n{}",
                    build.name(),
                    kind.dump_type(),
                    if show_free { " --show-free" } else { "" },
                    got.len(),
                    want.len(),
                    diff(&got, &want)
                );
            }
        }
        // Each dump is 4-64 MiB: free the space before writing the next.
        let _ = std::fs::remove_file(&dump);
    }
    assert!(failures.is_empty(), "{failures}");
}

/// Volatility's `windows.pslist` must walk the kit's PsActiveProcessHead to
/// the same processes, and read each one's SessionId through
/// `EPROCESS.Session` as the kit's sessions say (the session analysis
/// relies on the same structures).
fn check_pslist(
    vol: &Vol,
    m: &Machine,
    dump: &Path,
    symdir: &Path,
    cache: &Path,
    failures: &mut String,
) {
    let rows = vol_rows(vol, dump, symdir, cache, &["windows.pslist"]);
    let got: Vec<(u64, String, Option<u64>)> = rows
        .iter()
        .map(|r| {
            (
                r["PID"].as_u64().unwrap_or(u64::MAX),
                r["ImageFileName"].as_str().unwrap_or("").to_string(),
                r["SessionId"].as_u64(),
            )
        })
        .collect();
    let want: Vec<(u64, String, Option<u64>)> = m
        .truth
        .processes
        .iter()
        .map(|p| (p.pid, p.name.clone(), p.session_id.map(u64::from)))
        .collect();
    assert!(
        want.iter().filter(|p| p.2.is_some()).count() >= 2,
        "the scenario has no session processes"
    );
    if got != want {
        let _ = writeln!(
            failures,
            "{}: Volatility's pslist differs from the kit's processes:\n  vol:   {got:?}\n  truth: {want:?}",
            m.scenario.build.name()
        );
    }
}

/// `Scenario::small` plus a big-pool tag padded with a space (Volatility
/// drops spaces from the tags it prints).
fn scenario(build: NtBuild, ram_mib: Option<u64>) -> Scenario {
    let mut s = Scenario::small(build, 0x5eed);
    if let Some(mib) = ram_mib {
        s.ram_mib = mib;
    }
    s.tags.push(TagSpec {
        tag: "Big ".into(),
        pool: PoolKind::Paged,
        live: 4,
        size: SizeSpec::Range {
            min: 0x1800,
            max: 0x5000,
        },
        freed: 6,
        freed_in_memory: 2,
        protected: false,
        cache_aligned: false,
    });
    s
}

/// What the test needs from the ISF pdbconv made: `_POOL_TYPE`'s names
/// (Volatility prints the PoolType by name) and whether Va is a pointer.
struct Isf {
    pool_types: HashMap<String, u64>,
    va_is_pointer: bool,
}

/// Convert nt's PDB with Volatility's own pdbconv and lay the ISF out as
/// Volatility's symbol finder expects it:
/// `<symdir>/windows/<pdb>/<GUID-upper>-<age>.json.xz`.
fn convert_pdb(vol: &Vol, m: &Machine, dir: &Path) -> (PathBuf, Isf) {
    let kernel = &m.truth.kernel;
    let pdb = m
        .write_symbol_store(&dir.join("store"))
        .expect("write the symbol store");
    let json = dir.join("nt.json");
    // `-p` names the database: pdbconv otherwise takes the name from a
    // `.pdb` string in the IPI stream, which MSVC's PDBs carry and clang's
    // do not, writes "unknown.pdb", and Volatility never matches the ISF.
    run(
        Command::new(&vol.python)
            .args(["-m", "volatility3.framework.symbols.windows.pdbconv", "-f"])
            .arg(&pdb)
            .args(["-p", kernel.pdb_name.as_str(), "-o"])
            .arg(&json),
        "pdbconv",
    );
    let text = std::fs::read_to_string(&json).expect("read pdbconv's output");
    let isf: Value = serde_json::from_str(&text).expect("pdbconv wrote JSON");

    let guid = kernel.pdb_guid.replace('-', "").to_uppercase();
    let meta = &isf["metadata"]["windows"]["pdb"];
    assert_eq!(
        (meta["GUID"].as_str(), meta["age"].as_u64()),
        (Some(guid.as_str()), Some(kernel.pdb_age as u64)),
        "the ISF's identity is not the kernel's (metadata: {meta})"
    );
    assert_eq!(meta["database"].as_str(), Some(kernel.pdb_name.as_str()));

    let symdir = dir.join("symbols");
    let isf_dir = symdir.join("windows").join(&kernel.pdb_name);
    std::fs::create_dir_all(&isf_dir).expect("create the ISF directory");
    let xz = isf_dir.join(format!("{guid}-{}.json.xz", kernel.pdb_age));
    // Python's lzma is there already (Volatility reads .xz with it).
    run(
        Command::new(&vol.python)
            .args([
                "-c",
                "import lzma, sys; data = open(sys.argv[1], 'rb').read(); \
                 open(sys.argv[2], 'wb').write(lzma.compress(data))",
            ])
            .args([json.as_os_str(), xz.as_os_str()]),
        "xz-compress the ISF",
    );

    let pool_types = isf["enums"]["_POOL_TYPE"]["constants"]
        .as_object()
        .expect("the ISF has enum _POOL_TYPE")
        .iter()
        .map(|(name, v)| (name.clone(), v.as_u64().expect("enum value")))
        .collect();
    let va = &isf["user_types"]["_POOL_TRACKER_BIG_PAGES"]["fields"]["Va"];
    assert!(va.is_object(), "the ISF has no _POOL_TRACKER_BIG_PAGES.Va");
    let isf = Isf {
        pool_types,
        va_is_pointer: va["type"]["kind"] == "pointer",
    };
    (symdir, isf)
}

/// Run `vol windows.bigpools` and return its JSON rows.
fn bigpools(vol: &Vol, dump: &Path, symdir: &Path, cache: &Path, show_free: bool) -> Vec<Value> {
    let mut plugin = vec!["windows.bigpools"];
    if show_free {
        plugin.push("--show-free");
    }
    vol_rows(vol, dump, symdir, cache, &plugin)
}

/// Run a Volatility plugin with the JSON renderer and return its rows.
fn vol_rows(vol: &Vol, dump: &Path, symdir: &Path, cache: &Path, plugin: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(&vol.vol);
    cmd.args(["--offline", "-q", "-s"])
        .arg(symdir)
        .arg("--cache-path")
        .arg(cache)
        .arg("-f")
        .arg(dump)
        .args(["-r", "json"])
        .args(plugin);
    let out = run(&mut cmd, &format!("vol {}", plugin.join(" ")));
    let text = String::from_utf8_lossy(&out);
    // stdout starts with the "Volatility 3 Framework X.Y.Z" banner, even
    // with -q.
    let json = text
        .find('[')
        .map(|i| &text[i..])
        .unwrap_or_else(|| panic!("vol printed no JSON list:\n{text}"));
    match serde_json::from_str(json) {
        Ok(Value::Array(rows)) => rows,
        _ => panic!("vol's output is not a JSON list:\n{text}"),
    }
}

/// `pooldump analyze --big-pool --json` on the same dump, as Volatility
/// would print each entry.
fn pooldump_bigpools(dump: &Path, store: &Path, show_free: bool, isf: &Isf) -> Vec<Row> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pooldump"));
    cmd.arg("analyze")
        .arg(dump)
        .arg("--symbol-path")
        .arg(store)
        .args(["--offline", "--no-cache", "--big-pool", "--json"])
        .env_remove("_NT_SYMBOL_PATH");
    if show_free {
        cmd.arg("--show-free");
    }
    let out = run(&mut cmd, "pooldump analyze --big-pool");
    let j: Value = serde_json::from_slice(&out).expect("pooldump prints JSON");
    let mask = if isf.va_is_pointer {
        VOL_POINTER_MASK
    } else {
        u64::MAX
    };
    j["big_pool"]["entries"]
        .as_array()
        .expect("big_pool.entries")
        .iter()
        .map(|e| {
            let va = u64::from_str_radix(&e["va"].as_str().unwrap().replace('`', ""), 16).unwrap();
            let free = e["freed"].as_bool().unwrap();
            let tag = vol_tag(e["tag"].as_str().unwrap());
            Row {
                allocation: (va | u64::from(free)) & mask,
                tag,
                pool_type: u64::from_str_radix(
                    e["pool_type"].as_str().unwrap().trim_start_matches("0x"),
                    16,
                )
                .unwrap(),
                bytes: e["bytes"].as_u64().unwrap(),
                free,
            }
        })
        .collect()
}

/// A tag as Volatility prints it: without the bytes outside 0x21..0x7E
/// (POOL_TRACKER_BIG_PAGES.get_key drops them, spaces included).
fn vol_tag(tag: &str) -> String {
    tag_value(tag)
        .to_le_bytes()
        .into_iter()
        .filter(|b| (0x21..0x7F).contains(b))
        .map(char::from)
        .collect()
}

/// One big-pool entry as Volatility prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    /// The Va field, free bit included.
    allocation: u64,
    tag: String,
    pool_type: u64,
    bytes: u64,
    free: bool,
}

impl Row {
    fn from_vol(r: &Value, isf: &Isf) -> Row {
        let field = |k: &str| {
            r.get(k)
                .unwrap_or_else(|| panic!("vol row without {k}: {r}"))
        };
        let int = |k: &str| {
            field(k)
                .as_u64()
                .unwrap_or_else(|| panic!("vol row's {k} is not an integer: {r}"))
        };
        let text = |k: &str| {
            field(k)
                .as_str()
                .unwrap_or_else(|| panic!("vol row's {k} is not a string: {r}"))
        };
        let ptype = text("PoolType");
        let pool_type = isf
            .pool_types
            .get(ptype)
            .copied()
            .or_else(|| ptype.strip_prefix("Unknown choice ")?.parse().ok())
            .unwrap_or_else(|| panic!("vol printed an unknown PoolType: {r}"));
        let free = match text("Status") {
            "Free" => true,
            "Allocated" => false,
            _ => panic!("vol row with an unknown Status: {r}"),
        };
        Row {
            allocation: int("Allocation"),
            tag: text("Tag").to_string(),
            pool_type,
            bytes: int("NumberOfBytes"),
            free,
        }
    }

    /// What Volatility should print for a truth entry: Va with the free bit
    /// (masked if the PDB types it as a pointer), and the tag's bytes
    /// without those outside 0x21..0x7E (POOL_TRACKER_BIG_PAGES.get_key
    /// drops them, spaces included).
    fn from_truth(e: &BigEntry, isf: &Isf) -> Row {
        let mask = if isf.va_is_pointer {
            VOL_POINTER_MASK
        } else {
            u64::MAX
        };
        let tag = vol_tag(&e.tag);
        Row {
            allocation: (e.va | u64::from(e.freed)) & mask,
            tag,
            pool_type: e.pool_type as u64,
            bytes: e.bytes,
            free: e.freed,
        }
    }
}

/// Both listings side by side, mismatching lines marked.
fn diff(got: &[Row], want: &[Row]) -> String {
    let mut s = String::from("   Volatility                                       | truth\n");
    let show = |r: Option<&Row>| {
        r.map_or(String::from("-"), |r| {
            format!(
                "{:#018x} {:<4} {:#5x} {:#8x} {}",
                r.allocation,
                r.tag,
                r.pool_type,
                r.bytes,
                if r.free { "Free" } else { "Alloc" }
            )
        })
    };
    for i in 0..got.len().max(want.len()) {
        let (g, w) = (got.get(i), want.get(i));
        let mark = if g == w { ' ' } else { '!' };
        let _ = writeln!(s, "{mark}  {:<48} | {}", show(g), show(w));
    }
    s
}

/// Run a command; on failure panic with the tail of its output.
fn run(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {:?}: {e}", cmd.get_program()));
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {:?} {:?}\n--- stdout (end) ---\n{}\n--- stderr (end) ---\n{}",
            out.status,
            cmd.get_program(),
            cmd.get_args().collect::<Vec<&OsStr>>(),
            tail(&out.stdout),
            tail(&out.stderr)
        );
    }
    out.stdout
}

/// The last few KiB of a tool's output (pdbconv prints megabytes of
/// progress).
fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[b.len().saturating_sub(4000)..]);
    s.into_owned()
}
