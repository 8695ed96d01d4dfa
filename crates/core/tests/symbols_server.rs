//! The symbol-path search and download against a real HTTP server on
//! 127.0.0.1 serving a symbol store: a 404 server first in the path, a
//! redirect, a corrupt file, a PDB whose GUID does not match, a server
//! error; then the local store and layout cache on the second run.

#[path = "../../../tests/support/prereq.rs"]
mod support;
#[path = "../../../tests/support/symbols_http.rs"]
mod symbols_http;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pooldump_core::kernel::CodeView;
use pooldump_core::symbols::store::find_pdb;
use pooldump_core::symbols::{
    FetchOptions, KernelSymbols, LayoutCache, PdbOrigin, PdbRequest, SourceKind, SymbolOptions,
    SymbolPath, SymbolSource, load_kernel_symbols,
};
use symbols_http::committed::{manifest, pdb_bytes, request};
use symbols_http::{Answer, Server, fetch_options};

fn codeview(build: &str) -> CodeView {
    let r = request(build);
    CodeView {
        pdb_name: r.name.to_string(),
        guid: r.guid,
        age: r.age,
        store_key: r.key(),
        name_is_clean: true,
    }
}

/// `/ntkrnlmp.pdb/<KEY>/ntkrnlmp.pdb` for a build.
fn store_url_path(build: &str) -> String {
    format!(
        "/ntkrnlmp.pdb/{}/ntkrnlmp.pdb",
        manifest(build)["pdb"]["store_key"].as_str().unwrap()
    )
}

/// Why `find_pdb` found no PDB for a build on `sp`, with [`fetch`]'s
/// options.
fn refusal(sp: &SymbolPath, build: &str) -> String {
    find_pdb(sp, &request(build), &fetch_options())
        .unwrap_err()
        .to_string()
}

/// A server with `answer` at a build's store path (and 404 elsewhere).
fn serving(build: &str, answer: Answer) -> Server {
    Server::start(HashMap::from([(store_url_path(build), answer)]))
}

/// `srv*DIR*FIRST;srv*DIR*SECOND`: two servers in turn, one downstream
/// store.
fn two_servers(dir: &Path, first: &Server, second: &Server) -> SymbolPath {
    let d = dir.display();
    SymbolPath::parse(
        &format!("srv*{d}*{};srv*{d}*{}", first.url, second.url),
        dir,
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_404_server_first_then_a_download_then_a_cache_hit() {
    let b = "win10-19041";
    let empty = Server::start(HashMap::new());
    let good = serving(b, Answer::File(pdb_bytes(b)));
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("sym");
    let text = format!(
        "srv*{}*{};srv*{}*{}",
        cache.display(),
        empty.url,
        cache.display(),
        good.url
    );
    let sp = SymbolPath::parse(&text, tmp.path());
    let req = request(b);
    let found = find_pdb(&sp, &req, &fetch_options()).unwrap();
    assert_eq!(
        found.origin,
        PdbOrigin::Downloaded {
            url: format!("{}{}", good.url, store_url_path(b)),
            store: cache.clone()
        }
    );
    assert_eq!(found.path, req.store_path(&cache));
    assert_eq!(std::fs::read(&found.path).unwrap(), pdb_bytes(b));
    assert!(
        found.attempts.iter().any(|a| a.outcome.contains("404")),
        "{:?}",
        found.attempts
    );
    // symsrv's order on a 404: the plain name, the compressed one, a
    // file.ptr.
    let key_dir = store_url_path(b)
        .trim_end_matches("/ntkrnlmp.pdb")
        .to_string();
    assert_eq!(
        empty.requests(),
        [
            store_url_path(b),
            format!("{key_dir}/ntkrnlmp.pd_"),
            format!("{key_dir}/file.ptr")
        ]
    );
    // No temporary file is left next to the download.
    assert_eq!(files_under(&cache), std::slice::from_ref(&found.path));

    // The second search is a store hit: no server is asked again.
    let again = find_pdb(&sp, &req, &fetch_options()).unwrap();
    assert_eq!(
        again.origin,
        PdbOrigin::Store {
            store: cache.clone()
        }
    );
    assert_eq!(good.requests().len(), 1);
    assert_eq!(empty.requests().len(), 3);
}

#[test]
fn a_redirect_is_followed() {
    let b = "win81-9600";
    let srv = Server::start(HashMap::from([
        (store_url_path(b), Answer::Redirect("/blob/abc123".into())),
        ("/blob/abc123".into(), Answer::File(pdb_bytes(b))),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let sp = SymbolPath::parse(
        &format!("srv*{}*{}", tmp.path().display(), srv.url),
        tmp.path(),
    );
    let found = find_pdb(&sp, &request(b), &fetch_options()).unwrap();
    assert!(matches!(found.origin, PdbOrigin::Downloaded { .. }));
    assert_eq!(
        srv.requests(),
        [store_url_path(b), "/blob/abc123".to_string()]
    );
    assert_eq!(std::fs::read(&found.path).unwrap(), pdb_bytes(b));
}

#[test]
fn a_corrupt_file_is_refused_and_not_kept() {
    let b = "win10-19041";
    let srv = serving(b, Answer::File(b"<html>proxy login</html>".repeat(100)));
    let later = serving(b, Answer::File(pdb_bytes(b)));
    let tmp = tempfile::tempdir().unwrap();
    let sp = two_servers(tmp.path(), &srv, &later);
    let e = refusal(&sp, b);
    assert!(e.contains(&srv.url) && e.contains("not a valid PDB"), "{e}");
    assert!(
        files_under(tmp.path()).is_empty(),
        "{:?}",
        files_under(tmp.path())
    );
    // A server that serves garbage stops the search: it is not hidden.
    assert!(later.requests().is_empty());
}

#[test]
fn a_pdb_with_another_guid_is_refused_and_not_kept() {
    let want = "win10-19041";
    let srv = serving(want, Answer::File(pdb_bytes("win10-18362")));
    let tmp = tempfile::tempdir().unwrap();
    let sp = SymbolPath::parse(
        &format!("srv*{}*{}", tmp.path().display(), srv.url),
        tmp.path(),
    );
    let e = refusal(&sp, want);
    assert!(e.contains("wrong PDB") && e.contains("35A038B1"), "{e}");
    assert!(files_under(tmp.path()).is_empty());
}

#[test]
fn a_server_error_stops_the_search_with_a_clear_message() {
    let b = "win10-19041";
    let broken = serving(b, Answer::Status(503));
    let good = serving(b, Answer::File(pdb_bytes(b)));
    let tmp = tempfile::tempdir().unwrap();
    let sp = two_servers(tmp.path(), &broken, &good);
    let e = refusal(&sp, b);
    assert!(e.contains("HTTP 503") && e.contains(&broken.url), "{e}");
    assert!(good.requests().is_empty());
}

#[test]
fn offline_skips_servers_and_says_so() {
    let b = "win10-19041";
    let srv = Server::start(HashMap::new());
    let tmp = tempfile::tempdir().unwrap();
    let sp = SymbolPath::parse(
        &format!("srv*{}*{}", tmp.path().display(), srv.url),
        tmp.path(),
    );
    let opts = FetchOptions {
        offline: true,
        ..fetch_options()
    };
    let e = find_pdb(&sp, &request(b), &opts).unwrap_err().to_string();
    assert!(e.contains("offline"), "{e}");
    assert!(srv.requests().is_empty());
}

#[test]
fn local_stores_accept_both_age_cases_and_skip_wrong_files() {
    let b = "win10-19041";
    let req = request(b);
    let tmp = tempfile::tempdir().unwrap();
    // Lower-case age hex (addr-symbolizer's layout); age 1 has no case, so
    // check the key spelling with a made-up age too.
    let key_lower = req.key_lower_age();
    let p = tmp
        .path()
        .join("ntkrnlmp.pdb")
        .join(&key_lower)
        .join("ntkrnlmp.pdb");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, pdb_bytes(b)).unwrap();
    let sp = SymbolPath::parse(&format!("srv*{}", tmp.path().display()), tmp.path());
    let found = find_pdb(&sp, &req, &fetch_options()).unwrap();
    assert_eq!(found.path, p);
    // With age 0xAB the two spellings differ: a file under the lower-case
    // key is looked at (and here refused, since its age is 1).
    let big_age = PdbRequest {
        age: 0xab,
        ..req.clone()
    };
    assert!(big_age.key().ends_with("AB") && big_age.key_lower_age().ends_with("ab"));
    let lower = tmp
        .path()
        .join("ntkrnlmp.pdb")
        .join(big_age.key_lower_age())
        .join("ntkrnlmp.pdb");
    std::fs::create_dir_all(lower.parent().unwrap()).unwrap();
    std::fs::write(&lower, pdb_bytes(b)).unwrap();
    let e = find_pdb(&sp, &big_age, &fetch_options())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&big_age.key_lower_age()) && e.contains("age 1"),
        "{e}"
    );

    // A plain directory holding the wrong build's PDB under the right
    // name: skipped, and said so.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("ntkrnlmp.pdb"), pdb_bytes("win7-7601")).unwrap();
    let sp = SymbolPath::parse(&d.path().display().to_string(), d.path());
    let e = find_pdb(&sp, &req, &fetch_options())
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong PDB") && e.contains("339E7413"), "{e}");
}

#[test]
fn cache_star_copies_files_found_later() {
    let b = "win10-14393";
    let req = request(b);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("ntkrnlmp.pdb"), pdb_bytes(b)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let text = format!("cache*{};{}", cache.path().display(), src.path().display());
    let sp = SymbolPath::parse(&text, cache.path());
    let found = find_pdb(&sp, &req, &fetch_options()).unwrap();
    assert_eq!(found.path, req.store_path(cache.path()));
    let again = find_pdb(&sp, &req, &fetch_options()).unwrap();
    assert!(matches!(again.origin, PdbOrigin::Store { .. }));
}

#[test]
fn hostile_pdb_names_never_reach_a_path_or_url() {
    let srv = Server::start(HashMap::new());
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = SymbolOptions::from_env();
    opts.symbol_path = SymbolPath::parse(
        &format!("srv*{}*{}", tmp.path().display(), srv.url),
        tmp.path(),
    );
    opts.layout_cache = None;
    opts.builtin = false;
    opts.fetch.proxy_from_env = false;
    for name in ["..", "a\u{0}b.pdb", "x/..", "sp ace.pdb", "C:", "..\\..\\"] {
        let mut cv = codeview("win10-19041");
        cv.pdb_name = name.into();
        let e = load_kernel_symbols(Some(&cv), None, &opts).unwrap_err();
        assert!(e.to_string().contains("not safe"), "{name:?}: {e}");
    }
    let mut cv = codeview("win10-19041");
    cv.name_is_clean = false;
    assert!(load_kernel_symbols(Some(&cv), None, &opts).is_err());
    // A build path keeps only its last component.
    let mut cv = codeview("win10-19041");
    cv.pdb_name = r"d:\os\obj\amd64fre\ntkrnlmp.pdb".into();
    let _ = load_kernel_symbols(Some(&cv), None, &opts);
    for r in srv.requests() {
        assert!(!r.contains("..") && r.starts_with("/ntkrnlmp.pdb/"), "{r}");
    }
    assert!(files_under(tmp.path()).is_empty());
}

#[test]
fn the_layout_cache_serves_the_second_run() {
    let b = "server2022-20348";
    let srv = serving(b, Answer::File(pdb_bytes(b)));
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = SymbolOptions::from_env();
    opts.symbol_path = SymbolPath::parse(
        &format!("srv*{}*{}", tmp.path().join("sym").display(), srv.url),
        tmp.path(),
    );
    opts.layout_cache = Some(LayoutCache::new(tmp.path().join("cache")));
    opts.fetch.proxy_from_env = false;
    opts.builtin_supplement = false;
    let cv = codeview(b);
    let first = load_kernel_symbols(Some(&cv), Some(20348), &opts).unwrap();
    let SymbolSource::Pdb {
        cache_hit,
        origin,
        layout_cache,
        ..
    } = first.source().clone()
    else {
        panic!("{:?}", first.source())
    };
    assert!(!cache_hit);
    assert!(matches!(origin, Some(PdbOrigin::Downloaded { .. })));
    let cache_file = layout_cache.unwrap();
    assert!(cache_file.is_file());

    // Remove the PDB: the second run must not need it.
    std::fs::remove_dir_all(tmp.path().join("sym")).unwrap();
    let second = load_kernel_symbols(Some(&cv), Some(20348), &opts).unwrap();
    assert!(matches!(
        second.source(),
        SymbolSource::Pdb {
            cache_hit: true,
            ..
        }
    ));
    assert_eq!(srv.requests().len(), 1);
    let m = manifest(b);
    for t in [
        "_POOL_TRACKER_TABLE",
        "_POOL_TRACKER_BIG_PAGES",
        "_POOL_HEADER",
    ] {
        assert_eq!(second.type_size(t), m["types"][t]["size"].as_u64(), "{t}");
        assert_eq!(second.type_layout(t), first.type_layout(t), "{t}");
    }
    assert_eq!(
        second.symbol_rva("PoolBigPageTable"),
        m["symbols"]["PoolBigPageTable"]["rva"].as_u64()
    );

    // A damaged cache file is ignored (with a warning) and rewritten.
    std::fs::write(&cache_file, b"{not json").unwrap();
    std::fs::create_dir_all(tmp.path().join("sym")).unwrap();
    let sp_dir = tmp.path().join("local");
    std::fs::create_dir_all(&sp_dir).unwrap();
    std::fs::write(sp_dir.join("ntkrnlmp.pdb"), pdb_bytes(b)).unwrap();
    opts.symbol_path = SymbolPath::parse(&sp_dir.display().to_string(), tmp.path());
    let third = load_kernel_symbols(Some(&cv), Some(20348), &opts).unwrap();
    assert!(
        third
            .warnings
            .iter()
            .any(|w| w.contains("layout cache ignored"))
    );
    assert_eq!(third.source().kind(), SourceKind::Pdb);
    assert!(
        LayoutCache::new(tmp.path().join("cache"))
            .load(&third.identity)
            .unwrap()
            .is_some()
    );
}

/// The built-in table's answer for `cv`, a GUID it does not know, on
/// `build`, whose `revisions` in the table have identical layouts: the
/// layouts only (no symbol RVAs), and a warning that says so.
fn by_build_number_only(
    cv: &CodeView,
    build: u32,
    revisions: &str,
    opts: &SymbolOptions,
) -> KernelSymbols {
    let s = load_kernel_symbols(Some(cv), Some(build), opts).unwrap();
    let w = &s.warnings[0];
    assert!(
        w.contains(&format!("matched by build number {build} only"))
            && w.contains(&format!("{revisions} have identical layouts")),
        "{:?}",
        s.warnings
    );
    assert!(s.symbol_rva("PoolTrackTable").is_none());
    s
}

#[test]
fn without_a_pdb_the_builtin_table_answers_loudly() {
    let b = "win11-22000";
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = SymbolOptions::from_env();
    opts.symbol_path = SymbolPath::parse(&tmp.path().display().to_string(), tmp.path());
    opts.layout_cache = None;
    opts.fetch.offline = true;
    let cv = codeview(b);
    let s = load_kernel_symbols(Some(&cv), Some(22000), &opts).unwrap();
    assert_eq!(s.source().kind(), SourceKind::BuiltIn);
    assert!(s.warnings[0].contains("BUILT-IN"), "{:?}", s.warnings);
    let m = manifest(b);
    assert_eq!(
        s.type_size("_POOL_TRACKER_TABLE"),
        m["types"]["_POOL_TRACKER_TABLE"]["size"].as_u64()
    );
    // By GUID, the table's symbol RVAs are the real build's (the ISF's), not
    // the synthetic image's: only their presence is checked here.
    assert!(s.symbol_rva("PoolTrackTable").is_some());

    // An unknown GUID of a build whose revisions in the table have the same
    // layouts (19041: .1415 and .3324): layouts only, said so.
    let mut other = codeview("win10-19041");
    other.guid = pooldump_core::kernel::Guid([0x42; 16]);
    let s = by_build_number_only(&other, 19041, "10.0.19041.1415, 10.0.19041.3324", &opts);
    assert_eq!(s.type_size("_POOL_TRACKER_BIG_PAGES"), Some(0x18));

    // 22000's two revisions name one anonymous member type differently
    // (`_RTLP_HP_HEAP_GLOBALS.FlagsBits`) but lay everything out alike:
    // the table stands in for an unknown GUID of 22000 too.
    by_build_number_only(&other, 22000, "10.0.22000.2538, 10.0.22000.318", &opts);
    // One revision only (9600) says nothing about another.
    let e = load_kernel_symbols(Some(&other), Some(9600), &opts).unwrap_err();
    assert!(
        e.to_string().contains("it has only revision 6.3.9600.19913 of build 9600, and another revision's layouts are not known to match it"),
        "{e}"
    );
    // An unknown build: a clear error listing what was tried.
    let e = load_kernel_symbols(Some(&other), Some(12345), &opts).unwrap_err();
    assert!(e.to_string().contains("not in this directory"), "{e}");
    assert!(e.to_string().contains("it has no build 12345 (it knows builds 7601, 9600, 14393, 17763, 18362, 19041, 20348, 22000)"), "{e}");
}
