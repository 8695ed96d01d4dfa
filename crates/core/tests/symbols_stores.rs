//! Real symbol stores and servers: compressed `.pd_` files (CAB),
//! `file.ptr` redirects, two-tier stores (`index2.txt`), a server that
//! redirects to blob storage or loops, `.pd_` after a `.pdb` 404 — all
//! against the loopback server the other symbol tests use — and an ISF
//! converted from a PDB file (`"database": "unknown.pdb"`).

#[path = "../../../tests/support/prereq.rs"]
mod support;
#[path = "../../../tests/support/symbols_http.rs"]
mod symbols_http;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use pooldump_core::kernel::CodeView;
use pooldump_core::symbols::store::find_pdb;
use pooldump_core::symbols::{PdbOrigin, SymbolOptions, SymbolPath, load_kernel_symbols};
use serde_json::Value;
use symbols_http::committed::{manifest, pdb_bytes, request};
use symbols_http::{Answer, Server, fetch_options};

const B: &str = "win10-19041";

fn key_path(build: &str) -> String {
    format!("/ntkrnlmp.pdb/{}", request(build).key())
}

/// A CAB holding `data` as `name`, MSZIP-compressed, as symstore /compress
/// and makecab write `.pd_` files.
fn cab_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = cab::CabinetBuilder::new();
    b.add_folder(cab::CompressionType::MsZip).add_file(name);
    let mut w = b.build(std::io::Cursor::new(Vec::new())).unwrap();
    while let Some(mut f) = w.next_file().unwrap() {
        f.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// `srv*STORE*UPSTREAM`: `upstream` (a server or a store) through the
/// downstream store `store`.
fn srv_path(store: &Path, upstream: &str) -> SymbolPath {
    SymbolPath::parse(&format!("srv*{}*{upstream}", store.display()), store)
}

#[test]
fn a_compressed_pdb_after_a_404_for_the_plain_name() {
    let pdb = pdb_bytes(B);
    let packed = cab_of("ntkrnlmp.pdb", &pdb);
    assert!(packed.len() < pdb.len(), "MSZIP compresses a PDB");
    let srv = Server::start(HashMap::from([(
        format!("{}/ntkrnlmp.pd_", key_path(B)),
        Answer::File(packed),
    )]));
    let tmp = tempfile::tempdir().unwrap();
    let req = request(B);
    let found = find_pdb(&srv_path(tmp.path(), &srv.url), &req, &fetch_options()).unwrap();
    assert_eq!(
        srv.requests(),
        [
            format!("{}/ntkrnlmp.pdb", key_path(B)),
            format!("{}/ntkrnlmp.pd_", key_path(B))
        ]
    );
    assert_eq!(found.path, req.store_path(tmp.path()));
    assert_eq!(
        std::fs::read(&found.path).unwrap(),
        pdb,
        "expanded into the store"
    );
    assert!(matches!(found.origin, PdbOrigin::Downloaded { ref url, .. } if url.ends_with(".pd_")));
    // Next time it is a store hit.
    let again = find_pdb(&srv_path(tmp.path(), &srv.url), &req, &fetch_options()).unwrap();
    assert!(matches!(again.origin, PdbOrigin::Store { .. }));
    assert_eq!(srv.requests().len(), 2);
}

#[test]
fn a_redirect_to_blob_storage_on_another_host_is_followed() {
    let blob = Server::start(HashMap::from([(
        "/sym/abc?sig=1".to_string(),
        Answer::File(pdb_bytes(B)),
    )]));
    let msdl = Server::start(HashMap::from([(
        format!("{}/ntkrnlmp.pdb", key_path(B)),
        Answer::Redirect(format!("{}/sym/abc?sig=1", blob.url)),
    )]));
    let tmp = tempfile::tempdir().unwrap();
    let found = find_pdb(
        &srv_path(tmp.path(), &msdl.url),
        &request(B),
        &fetch_options(),
    )
    .unwrap();
    assert_eq!(std::fs::read(&found.path).unwrap(), pdb_bytes(B));
    assert_eq!(blob.requests(), ["/sym/abc?sig=1"]);
}

#[test]
fn a_redirect_loop_is_bounded_and_said() {
    let srv = Server::start(HashMap::from([
        (
            format!("{}/ntkrnlmp.pdb", key_path(B)),
            Answer::Redirect("/loop".into()),
        ),
        ("/loop".to_string(), Answer::Redirect("/loop".into())),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let e = find_pdb(
        &srv_path(tmp.path(), &srv.url),
        &request(B),
        &fetch_options(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("more than 10 redirects"), "{e}");
    let n = srv.requests().len();
    assert!((10..=12).contains(&n), "{n} requests");
}

#[test]
fn file_ptr_from_a_server_and_its_msg() {
    let share = tempfile::tempdir().unwrap();
    let target = share.path().join("ntkrnlmp.pdb");
    std::fs::write(&target, pdb_bytes(B)).unwrap();
    let srv = Server::start(HashMap::from([(
        format!("{}/file.ptr", key_path(B)),
        Answer::File(format!("PATH:{}", target.display()).into_bytes()),
    )]));
    let tmp = tempfile::tempdir().unwrap();
    let req = request(B);
    let found = find_pdb(&srv_path(tmp.path(), &srv.url), &req, &fetch_options()).unwrap();
    assert_eq!(
        srv.requests().last().unwrap(),
        &format!("{}/file.ptr", key_path(B))
    );
    assert_eq!(std::fs::read(&found.path).unwrap(), pdb_bytes(B));
    assert_eq!(
        found.path,
        req.store_path(tmp.path()),
        "copied into the store"
    );

    let msg = Server::start(HashMap::from([(
        format!("{}/file.ptr", key_path(B)),
        Answer::File(b"MSG: this file was removed from the store".to_vec()),
    )]));
    let tmp = tempfile::tempdir().unwrap();
    let e = find_pdb(&srv_path(tmp.path(), &msg.url), &req, &fetch_options())
        .unwrap_err()
        .to_string();
    assert!(e.contains("file.ptr says: this file was removed"), "{e}");
}

#[test]
fn local_stores_compressed_two_tier_and_file_ptr() {
    let req = request(B);
    let pdb = pdb_bytes(B);

    // A flat store with only the compressed file: expanded in place.
    let flat = tempfile::tempdir().unwrap();
    let d = flat.path().join("ntkrnlmp.pdb").join(req.key());
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("ntkrnlmp.pd_"), cab_of("ntkrnlmp.pdb", &pdb)).unwrap();
    let sp = SymbolPath::parse(&flat.path().display().to_string(), flat.path());
    let found = find_pdb(&sp, &req, &fetch_options()).unwrap();
    assert_eq!(std::fs::read(&found.path).unwrap(), pdb);

    // A two-tier store (index2.txt): <store>/nt/ntkrnlmp.pdb/<key>/.
    let two = tempfile::tempdir().unwrap();
    std::fs::write(two.path().join("index2.txt"), "").unwrap();
    let d = two.path().join("nt").join("ntkrnlmp.pdb").join(req.key());
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("ntkrnlmp.pdb"), &pdb).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let sp = srv_path(cache.path(), &two.path().display().to_string());
    let found = find_pdb(&sp, &req, &fetch_options()).unwrap();
    assert_eq!(
        found.origin,
        PdbOrigin::Store {
            store: two.path().to_path_buf()
        }
    );
    assert_eq!(std::fs::read(&found.path).unwrap(), pdb);

    // A store whose key directory holds a file.ptr to a compressed file.
    let ptr = tempfile::tempdir().unwrap();
    let share = tempfile::tempdir().unwrap();
    let packed = share.path().join("ntkrnlmp.pd_");
    std::fs::write(&packed, cab_of("ntkrnlmp.pdb", &pdb)).unwrap();
    let d = ptr.path().join("ntkrnlmp.pdb").join(req.key());
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("file.ptr"), format!("PATH:{}\r\n", packed.display())).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let sp = srv_path(cache.path(), &ptr.path().display().to_string());
    let found = find_pdb(&sp, &req, &fetch_options()).unwrap();
    assert_eq!(
        found.path,
        req.store_path(cache.path()),
        "expanded downstream"
    );
    assert_eq!(std::fs::read(&found.path).unwrap(), pdb);

    // A `.pd_` that is not a CAB is refused and named.
    let bad = tempfile::tempdir().unwrap();
    let d = bad.path().join("ntkrnlmp.pdb").join(req.key());
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("ntkrnlmp.pd_"), b"MSCF but not really").unwrap();
    let sp = SymbolPath::parse(&bad.path().display().to_string(), bad.path());
    let e = find_pdb(&sp, &req, &fetch_options())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ntkrnlmp.pd_") && e.contains("not a valid compressed file (CAB)"),
        "{e}"
    );
}

/// Volatility's pdbconv, run on a PDB file rather than on a download,
/// writes `"database": "unknown.pdb"`: the ISF is matched by GUID and age
/// and the difference is said.
#[test]
fn an_isf_named_unknown_pdb_is_matched_by_guid_and_age() {
    let Some(shared) = support::shared_dir() else {
        return;
    };
    let m = manifest(B);
    let isf_name = format!("{}.json.xz", m["isf"].as_str().unwrap());
    let src = shared.join("isf").join(&isf_name);
    let mut xz = std::io::BufReader::new(std::fs::File::open(&src).unwrap());
    let mut json = Vec::new();
    lzma_rs::xz_decompress(&mut xz, &mut json).unwrap();
    let mut v: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["metadata"]["windows"]["pdb"]["database"], "ntkrnlmp.pdb");
    v["metadata"]["windows"]["pdb"]["database"] = "unknown.pdb".into();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("windows").join("unknown.pdb");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(
        tree.join(isf_name.trim_end_matches(".xz")),
        serde_json::to_vec(&v).unwrap(),
    )
    .unwrap();
    let r = request(B);
    let cv = CodeView {
        pdb_name: "ntkrnlmp.pdb".into(),
        guid: r.guid,
        age: r.age,
        store_key: r.key(),
        name_is_clean: true,
    };
    let mut opts = SymbolOptions::local_store(dir.path());
    opts.isf = vec![dir.path().to_path_buf()];
    let syms = load_kernel_symbols(Some(&cv), Some(19041), &opts).unwrap();
    assert!(
        syms.warnings
            .iter()
            .any(|w| w.contains("`unknown.pdb`, not `ntkrnlmp.pdb`") && w.contains("GUID and age")),
        "{:?}",
        syms.warnings
    );
    assert!(syms.type_size("_POOL_TRACKER_TABLE").is_some());
}
