//! `pooldump symbols` end to end on kit machines: the real binary, a real
//! dump file, a symbol store on disk or behind an HTTP server on
//! 127.0.0.1, compared with the kit's ground truth.

use crate::support::symbols_http;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
use serde_json::Value;
use symbols_http::{Answer, Server};

fn pooldump(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pooldump"))
        .args(args)
        .env("POOLDUMP_CACHE_DIR", cache)
        .env_remove("_NT_SYMBOL_PATH")
        .env("NO_PROXY", "*")
        .output()
        .expect("run pooldump")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "pooldump failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

struct Case {
    m: Machine,
    dir: tempfile::TempDir,
}

impl Case {
    fn new(s: Scenario) -> Self {
        let m = Machine::build(&s);
        let dir = tempfile::tempdir().unwrap();
        m.write_dump_file(DumpKind::KernelBitmap, &dir.path().join("MEMORY.DMP"))
            .unwrap();
        m.write_symbol_store(&dir.path().join("store")).unwrap();
        Self { m, dir }
    }
    fn dump(&self) -> String {
        self.dir.path().join("MEMORY.DMP").display().to_string()
    }
    fn store(&self) -> String {
        self.dir.path().join("store").display().to_string()
    }
    fn cache(&self) -> std::path::PathBuf {
        self.dir.path().join("cache")
    }
    /// `pooldump CMD DUMP --symbol-path DIR --offline`.
    fn offline(&self, cmd: &str, dir: &Path) -> Output {
        let dir = dir.display().to_string();
        let args = [cmd, &self.dump(), "--symbol-path", &dir, "--offline"];
        pooldump(&args, &self.cache())
    }
}

#[test]
fn every_build_resolves_what_the_kit_placed() {
    for build in NtBuild::ALL {
        let c = Case::new(Scenario::small(build, 7));
        let sp = format!("srv*{}", c.store());
        let out = ok(&pooldump(
            &["symbols", &c.dump(), "--symbol-path", &sp, "--json"],
            &c.cache(),
        ));
        let r: Value = serde_json::from_str(&out).unwrap();
        let t = &c.m.truth;
        let ctx = build.name();
        assert_eq!(
            r["kernel"]["kern_base"].as_u64(),
            Some(t.kernel.kern_base),
            "{ctx}"
        );
        assert_eq!(r["sources"][0]["kind"], "pdb", "{ctx}");
        assert_eq!(r["sources"][0]["origin"]["kind"], "store", "{ctx}");
        // Every global the report lists sits where the kit wrote it.
        let mut n = 0;
        for g in r["globals"].as_array().unwrap() {
            let name = g["name"].as_str().unwrap();
            if let Some(va) = t.symbols.get(name) {
                assert_eq!(g["va"].as_u64(), Some(*va), "{ctx}: {name}");
                n += 1;
            }
        }
        assert!(n >= 10, "{ctx}: only {n} globals compared");
        let layout_size = |name: &str| {
            let layouts = r["layouts"].as_array().unwrap();
            let l = layouts.iter().find(|l| l["name"] == name);
            l.unwrap_or_else(|| panic!("{ctx}: no layout {name}"))["size"].as_u64()
        };
        assert_eq!(
            layout_size("_POOL_TRACKER_TABLE"),
            Some(t.tracker.entry_size),
            "{ctx}"
        );
        assert_eq!(
            layout_size("_POOL_TRACKER_BIG_PAGES"),
            Some(t.big_pool.entry_size),
            "{ctx}"
        );
        // Modules with their PDB identity.
        let mods = r["modules"].as_array().unwrap();
        assert_eq!(mods.len(), t.kernel.modules.len(), "{ctx}");
        for (got, want) in mods.iter().zip(&t.kernel.modules) {
            assert_eq!(got["name"].as_str(), Some(want.base_name.as_str()), "{ctx}");
            assert_eq!(got["base"].as_u64(), Some(want.base), "{ctx}");
            assert_eq!(
                got["pdb"]["pdb_name"].as_str(),
                Some(want.pdb_name.as_str())
            );
            assert_eq!(got["pdb"]["guid"].as_str(), Some(want.pdb_guid.as_str()));
            assert_eq!(got["pdb"]["age"].as_u64(), Some(u64::from(want.pdb_age)));
        }
        assert!(
            r["missing"].as_array().unwrap().is_empty(),
            "{ctx}: {}",
            r["missing"]
        );
        assert_eq!(
            r["kldr"]["bootstrap_mismatches"].as_array().unwrap().len(),
            0
        );
    }
}

#[test]
fn download_then_layout_cache_over_http() {
    let c = Case::new(Scenario::small(NtBuild::Win10_17763, 3));
    let store = Path::new(&c.store()).to_path_buf();
    let key = c.m.truth.kernel.store_key.clone();
    let pdb = std::fs::read(store.join("ntkrnlmp.pdb").join(&key).join("ntkrnlmp.pdb")).unwrap();
    let srv = Server::start(HashMap::from([(
        format!("/ntkrnlmp.pdb/{key}/ntkrnlmp.pdb"),
        Answer::File(pdb),
    )]));
    let down = c.dir.path().join("down");
    let sp = format!("srv*{}*{}", down.display(), srv.url);
    let first = ok(&pooldump(
        &["symbols", &c.dump(), "--symbol-path", &sp],
        &c.cache(),
    ));
    assert!(
        first.contains(&format!("downloaded from {}", srv.url)),
        "{first}"
    );
    let second = ok(&pooldump(
        &["symbols", &c.dump(), "--symbol-path", &sp],
        &c.cache(),
    ));
    assert!(second.contains("layout cache"), "{second}");
    assert_eq!(srv.requests().len(), 1);
    // Without the layout cache the downloaded PDB is a store hit.
    let third = ok(&pooldump(
        &["symbols", &c.dump(), "--symbol-path", &sp, "--no-cache"],
        &c.cache(),
    ));
    assert!(third.contains("cache hit in store"), "{third}");
    assert_eq!(srv.requests().len(), 1);
}

#[test]
fn an_encoded_kdbg_is_decoded_with_the_symbols() {
    let mut s = Scenario::small(NtBuild::Win10_19041, 11);
    s.kdbg_encoded = true;
    let c = Case::new(s);
    assert!(c.m.truth.kernel.kdbg_encoded);
    let sp = format!("srv*{}", c.store());
    let r: Value = serde_json::from_str(&ok(&pooldump(
        &["symbols", &c.dump(), "--symbol-path", &sp, "--json"],
        &c.cache(),
    )))
    .unwrap();
    let kd = &r["kernel"]["kdbg"];
    assert_eq!(kd["was_encoded"], Value::Bool(true), "{kd}");
    assert_eq!(kd["kern_base"].as_u64(), Some(c.m.truth.kernel.kern_base));
    assert_eq!(
        kd["va"].as_u64(),
        Some(c.m.truth.kernel.kd_debugger_data_block)
    );
    assert_eq!(
        kd["ps_loaded_module_list"].as_u64(),
        Some(c.m.truth.kernel.ps_loaded_module_list)
    );
}

#[test]
fn no_symbols_is_an_error_naming_dump_build_pdb_and_fix() {
    let c = Case::new(Scenario::small(NtBuild::Win10_19041, 5));
    let empty = c.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = pooldump(
        &[
            "symbols",
            &c.dump(),
            "--symbol-path",
            &empty.display().to_string(),
            "--offline",
            "--no-builtin",
        ],
        &c.cache(),
    );
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    for want in [
        c.dump().as_str(),
        "19041",
        "ntkrnlmp.pdb",
        c.m.truth.kernel.store_key.as_str(),
        "_NT_SYMBOL_PATH",
        "--symbol-path",
    ] {
        assert!(e.contains(want), "missing {want:?} in: {e}");
    }
}

/// Give the kernel in a dump file a GUID no build has: every RSDS record
/// of nt in the file gets 0x42 bytes (the kernel is then a revision of its
/// build that the built-in table does not know).
fn forge_guid(dump: &str, build: NtBuild) {
    let m = build.manifest();
    let guid = m.pdb.guid.replace('-', "");
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    // The GUID's on-disk order: Data1..3 little-endian, Data4 as written.
    let g = hex(&guid);
    let mut raw = Vec::new();
    raw.extend(g[0..4].iter().rev());
    raw.extend(g[4..6].iter().rev());
    raw.extend(g[6..8].iter().rev());
    raw.extend(&g[8..16]);
    let mut needle = b"RSDS".to_vec();
    needle.extend(&raw);
    let mut bytes = std::fs::read(dump).unwrap();
    let mut n = 0;
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(needle.len()).position(|w| w == needle) {
        let at = i + at;
        bytes[at + 4..at + 20].fill(0x42);
        n += 1;
        i = at + 20;
    }
    assert!(n > 0, "no RSDS record of {} in {dump}", m.pdb.guid);
    std::fs::write(dump, bytes).unwrap();
}

#[test]
fn the_builtin_table_is_announced_loudly_and_refused_where_it_cannot_be_right() {
    // A kernel that claims a real build's GUID but is not that build (the
    // kit's images are small): the table's entry for the GUID does not fit
    // it, and the error says it was the fallback and what to do.
    let c = Case::new(Scenario::small(NtBuild::Win81_9600, 5));
    let empty = c.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = c.offline("symbols", &empty);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("pooldump's built-in layout table, the fallback, cannot stand in: its entry 6.3.9600.19913 has this GUID and age, but it puts"),
        "{e}"
    );
    assert!(
        e.contains("beyond the end of this image (SizeOfImage"),
        "{e}"
    );
    assert!(e.contains("\nfix: pass --symbol-path DIR"), "{e}");

    // A revision of 19041 the table does not know: its two 19041 revisions
    // have the same layouts, so they stand in for the layouts, loudly.
    let c = Case::new(Scenario::small(NtBuild::Win10_19041, 5));
    forge_guid(&c.dump(), NtBuild::Win10_19041);
    let out = ok(&c.offline("symbols", &empty));
    assert!(out.starts_with("*** NO PDB"), "{out}");
    assert!(
        out.contains("BUILT-IN TABLE for 10.0.19041.3324 (matched by build number only"),
        "{out}"
    );
    let m = NtBuild::Win10_19041.manifest();
    assert!(out.contains(&format!(
        "_POOL_TRACKER_TABLE (size {:#x}, from built-in table)",
        m.ty("_POOL_TRACKER_TABLE").size
    )));

    // analyze then fails for want of the globals, and says the table was
    // the fallback and what to do.
    let o = c.offline("analyze", &empty);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("symbol 'PoolTrackTable' is not in"), "{e}");
    assert!(
        e.contains("note: nt's symbols came from pooldump's built-in layout table (BUILT-IN TABLE for 10.0.19041.3324 (matched by build number only"),
        "{e}"
    );
    assert!(e.contains("\nfix: pass --symbol-path DIR"), "{e}");
}

#[test]
fn nt_symbol_path_is_used_and_symbol_path_overrides_it() {
    let c = Case::new(Scenario::small(NtBuild::Win10_14393, 9));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "symbols",
            c.dump().leak() as &str,
            "--offline",
            "--no-builtin",
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_pooldump"))
            .args(&args)
            .env("POOLDUMP_CACHE_DIR", c.cache())
            .env("_NT_SYMBOL_PATH", format!("srv*{}", c.store()))
            .arg("--no-cache")
            .output()
            .unwrap()
    };
    let out = ok(&run(&[]));
    assert!(out.contains("cache hit in store"), "{out}");
    let empty = c.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = run(&["--symbol-path", empty.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not in this directory"));
}

/// A forward proxy on 127.0.0.1 that answers `CONNECT host:port` (how ureq
/// reaches any URL through a proxy) and then plays the origin server inside
/// the tunnel: it serves `body` for `GET path` and 404 otherwise. It records
/// the CONNECT targets and the tunnelled request lines.
struct ConnectProxy {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start(path: String, body: Vec<u8>) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                // Read one request head; return its first line.
                let head = |r: &mut BufReader<std::net::TcpStream>| -> Option<String> {
                    let mut first = String::new();
                    r.read_line(&mut first).ok()?;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).ok()? == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    Some(first.trim_end().to_string())
                };
                let Some(connect) = head(&mut r) else {
                    continue;
                };
                log.lock().unwrap().push(connect.clone());
                if !connect.starts_with("CONNECT ") {
                    let _ = conn
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n");
                    continue;
                }
                let _ = conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let Some(get) = head(&mut r) else { continue };
                log.lock().unwrap().push(get.clone());
                if get == format!("GET {path} HTTP/1.1") {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(&body);
                } else {
                    let _ = conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            }
        });
        Self { url, seen }
    }
}

/// `HTTP_PROXY` from the environment carries the download: the symbol
/// server's host does not resolve, only the proxy can reach it. Without
/// the variable the same run fails naming the server.
#[test]
fn downloads_go_through_the_proxy_named_by_the_environment() {
    let c = Case::new(Scenario::small(NtBuild::Win10_19041, 12));
    let m = &c.m.m;
    let origin = "http://symbols.invalid/download/symbols";
    let key = format!("{}/{}/{}", m.pdb.name, m.pdb.store_key, m.pdb.name);
    let pdb = std::fs::read(
        c.m.write_symbol_store(&c.dir.path().join("origin"))
            .unwrap(),
    )
    .unwrap();
    let proxy = ConnectProxy::start(format!("/download/symbols/{key}"), pdb);
    let cache = c.dir.path().join("downloaded");
    let spath = format!("srv*{}*{origin}", cache.display());
    let run = |proxy_url: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pooldump"));
        cmd.args([
            "symbols",
            &c.dump(),
            "--no-builtin",
            "--no-cache",
            "--symbol-path",
            &spath,
        ])
        .env("POOLDUMP_CACHE_DIR", c.cache())
        .env_remove("_NT_SYMBOL_PATH");
        for v in [
            "ALL_PROXY",
            "all_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "NO_PROXY",
            "no_proxy",
        ] {
            cmd.env_remove(v);
        }
        if let Some(p) = proxy_url {
            cmd.env("HTTP_PROXY", p);
        }
        cmd.output().unwrap()
    };
    let out = ok(&run(Some(&proxy.url)));
    assert!(out.contains("downloaded from"), "{out}");
    assert_eq!(
        proxy.seen.lock().unwrap().clone(),
        vec![
            "CONNECT symbols.invalid:80 HTTP/1.1".to_string(),
            format!("GET /download/symbols/{key} HTTP/1.1")
        ]
    );
    assert!(cache.join(&key).is_file(), "the PDB is kept in the cache");

    std::fs::remove_dir_all(&cache).unwrap();
    let o = run(None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("symbols.invalid"), "{err}");
}
