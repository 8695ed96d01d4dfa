//! The ISF source and the built-in table against ground truth.
//!
//! * The real ISFs in ../shared/isf (Volatility tables of Microsoft's
//!   ntkrnlmp.pdb) give the same layouts through pooldump's ISF reader as
//!   the committed PDBs built from them give through its PDB reader.
//! * The built-in table equals the ISFs (read here with serde_json, not
//!   with pooldump's reader) and the committed manifests.
//!
//! Tests that need ../shared skip with a message unless CI=true, where a
//! missing ../shared fails them.

#[path = "../../../tests/support/prereq.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pooldump_core::symbols::isf::read_isf;
use pooldump_core::symbols::pdb::read_pdb;
use pooldump_core::symbols::{
    FieldLayout, SymbolOptions, SymbolPath, fallback, load_kernel_symbols,
};
use serde_json::Value;

fn repo() -> PathBuf {
    support::repo_root()
}

fn shared_isf() -> Option<PathBuf> {
    let p = repo().join("../shared/isf");
    if p.is_dir() {
        return Some(p);
    }
    support::missing(&format!("the ISF directory {}", p.display()))
}

/// The committed build whose PDB has this ISF's GUID-age.
fn committed_builds() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(repo().join("testdata/nt")).unwrap() {
        let d = e.unwrap().path();
        let m = d.join("layout.json");
        if m.is_file() {
            let j: Value = serde_json::from_str(&std::fs::read_to_string(m).unwrap()).unwrap();
            v.push((
                d.file_name().unwrap().to_string_lossy().into_owned(),
                j["isf"].as_str().unwrap().to_string(),
            ));
        }
    }
    v.sort();
    v
}

fn isf_json(path: &Path) -> Value {
    let mut r = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut out = Vec::new();
    lzma_rs_decompress(&mut r, &mut out);
    serde_json::from_slice(&out).unwrap()
}

fn lzma_rs_decompress(r: &mut impl std::io::BufRead, out: &mut Vec<u8>) {
    // xz through the system's xz tool would add an external dependency;
    // the ISF reader's own decoder is not used so the check stays
    // independent of the code under test.
    let mut data = Vec::new();
    std::io::Read::read_to_end(r, &mut data).unwrap();
    let mut c = std::io::Cursor::new(data);
    lzma_rs::xz_decompress(&mut c, out).unwrap();
}

fn same_field(a: &FieldLayout, b: &FieldLayout) -> bool {
    let n = |t: &str| {
        if t == "wchar" {
            "unsigned short".to_string()
        } else {
            t.to_string()
        }
    };
    a.offset == b.offset
        && a.size == b.size
        && a.bit_position == b.bit_position
        && a.bit_length == b.bit_length
        && a.count == b.count
        && a.element_size == b.element_size
        && n(&a.type_name) == n(&b.type_name)
}

#[test]
fn isf_layouts_equal_the_pdb_layouts() {
    let Some(isf_dir) = shared_isf() else { return };
    for (build, key) in committed_builds() {
        let isf_path = isf_dir.join(format!("{key}.json.xz"));
        let (id, isf, _) = read_isf(&isf_path).unwrap();
        let id = id.unwrap();
        assert_eq!(format!("{}-{}", id.guid.compact(), id.age), key);
        let pdb_path = repo().join("testdata/nt").join(&build).join("ntkrnlmp.pdb");
        let (pid, pdb, _) = read_pdb(&pdb_path, "ntkrnlmp.pdb", None).unwrap();
        assert_eq!((pid.guid, pid.age), (id.guid, id.age), "{build}");
        let mut checked = 0;
        for (ty, pt) in &pdb.types {
            if ty.starts_with("__") {
                // The generator's made-up names for named nested unions.
                continue;
            }
            let it = isf
                .types
                .get(ty)
                .unwrap_or_else(|| panic!("{build}: ISF lacks {ty}"));
            assert_eq!(it.size, pt.size, "{build}: sizeof({ty})");
            for pf in &pt.fields {
                let f = it
                    .field(&pf.name)
                    .unwrap_or_else(|| panic!("{build}: ISF {ty} lacks {}", pf.name));
                // Opaque members: a struct the PDB does not define is a
                // byte array there (or an array of byte arrays).
                let opaque = isf.types.contains_key(&f.type_name)
                    && !pdb.types.contains_key(&f.type_name)
                    && (pf.type_name == "unsigned char" || pf.type_name == "array");
                if opaque {
                    assert_eq!(
                        (f.offset, f.size),
                        (pf.offset, pf.size),
                        "{build}: {ty}.{}",
                        pf.name
                    );
                } else {
                    assert!(
                        same_field(f, pf),
                        "{build}: {ty}.{}: ISF {f:?} PDB {pf:?}",
                        pf.name
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 1000, "{build}: {checked}");
        for (en, values) in &pdb.enums {
            assert_eq!(isf.enums.get(en), Some(values), "{build}: enum {en}");
        }
    }
}

#[test]
fn isf_is_a_symbol_source_by_file_and_by_directory() {
    let Some(isf_dir) = shared_isf() else { return };
    let cv = cv_for("win10-19041");
    let mut opts = offline_options();
    opts.isf = vec![isf_dir.clone()];
    let s = load_kernel_symbols(Some(&cv), Some(19041), &opts).unwrap();
    assert_eq!(s.source().kind(), pooldump_core::symbols::SourceKind::Isf);
    let raw = isf_json(&isf_dir.join("06564D3477822C7D97F04852CBD5AFD6-1.json.xz"));
    assert_eq!(
        s.symbol_rva("PoolTrackTable"),
        raw["symbols"]["PoolTrackTable"]["address"].as_u64()
    );
    assert_eq!(s.type_size("_POOL_TRACKER_TABLE"), Some(0x38));
    // The wrong ISF file is refused and named.
    let mut opts = offline_options();
    opts.isf = vec![isf_dir.join("339E74133576439CBCDF7E0229DA3773-1.json.xz")];
    opts.builtin = false;
    let e = load_kernel_symbols(Some(&cv), Some(19041), &opts).unwrap_err();
    assert!(e.to_string().contains("339E7413"), "{e}");
}

fn offline_options() -> SymbolOptions<'static> {
    let mut o = SymbolOptions::from_env();
    o.symbol_path = SymbolPath { elements: vec![] };
    o.layout_cache = None;
    o.fetch.offline = true;
    o.builtin_supplement = false;
    o
}

/// The RSDS identity of a committed build, from its manifest.
fn cv_for(build: &str) -> pooldump_core::kernel::CodeView {
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("testdata/nt").join(build).join("layout.json"))
            .unwrap(),
    )
    .unwrap();
    let (guid, age) = m["isf"].as_str().unwrap().split_once('-').unwrap();
    pooldump_core::kernel::CodeView {
        pdb_name: "ntkrnlmp.pdb".into(),
        guid: pooldump_core::symbols::isf::parse_guid(guid).unwrap(),
        age: age.parse().unwrap(),
        store_key: m["pdb"]["store_key"].as_str().unwrap().into(),
        name_is_clean: true,
    }
}

#[test]
fn builtin_table_equals_the_isfs() {
    let Some(isf_dir) = shared_isf() else { return };
    assert!(fallback::builds().len() >= 10);
    for b in fallback::builds() {
        let raw = isf_json(&isf_dir.join(format!("{}-{}.json.xz", b.guid, b.age)));
        assert_eq!(
            raw["metadata"]["windows"]["pdb"]["GUID"].as_str(),
            Some(b.guid.as_str())
        );
        for (name, rva) in &b.layouts.symbols {
            assert_eq!(
                raw["symbols"][name]["address"].as_u64(),
                Some(*rva),
                "{}: {name}",
                b.build_string
            );
        }
        for (ty, t) in &b.layouts.types {
            let ut = &raw["user_types"][ty];
            assert_eq!(
                ut["size"].as_u64(),
                Some(t.size),
                "{}: {ty}",
                b.build_string
            );
            for f in &t.fields {
                let rf = &ut["fields"][&f.name];
                assert_eq!(
                    rf["offset"].as_u64(),
                    Some(f.offset),
                    "{}: {ty}.{}",
                    b.build_string,
                    f.name
                );
                let rt = &rf["type"];
                if rt["kind"] == "bitfield" {
                    assert_eq!(rt["bit_position"].as_u64(), f.bit_position.map(u64::from));
                    assert_eq!(rt["bit_length"].as_u64(), f.bit_length.map(u64::from));
                }
                if rt["kind"] == "array" {
                    assert_eq!(
                        rt["count"].as_u64(),
                        f.count,
                        "{}: {ty}.{}",
                        b.build_string,
                        f.name
                    );
                }
            }
        }
        for (en, values) in &b.layouts.enums {
            let want: BTreeMap<String, i64> = raw["enums"][en]["constants"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
                .collect();
            assert_eq!(values, &want, "{}: {en}", b.build_string);
        }
    }
}

#[test]
fn builtin_table_equals_the_committed_manifests() {
    let mut seen = 0;
    for (build, key) in committed_builds() {
        let m: Value = serde_json::from_str(
            &std::fs::read_to_string(repo().join("testdata/nt").join(&build).join("layout.json"))
                .unwrap(),
        )
        .unwrap();
        let (guid, age) = key.split_once('-').unwrap();
        let b = fallback::builds()
            .iter()
            .find(|b| b.guid == guid && b.age.to_string() == age)
            .unwrap_or_else(|| panic!("{build}: {key} is not in the built-in table"));
        assert_eq!(b.build, m["build"].as_u64().unwrap() as u32, "{build}");
        assert_eq!(
            b.build_string,
            m["build_string"].as_str().unwrap(),
            "{build}"
        );
        for (ty, t) in &b.layouts.types {
            let mt = &m["types"][ty];
            assert_eq!(mt["size"].as_u64(), Some(t.size), "{build}: {ty}");
            for f in &t.fields {
                let mf = &mt["fields"][&f.name];
                let ctx = format!("{build}: {ty}.{}", f.name);
                assert_eq!(mf["offset"].as_u64(), Some(f.offset), "{ctx}");
                assert_eq!(mf["size"].as_u64(), Some(f.size), "{ctx}");
                assert_eq!(
                    mf["bit_position"].as_u64(),
                    f.bit_position.map(u64::from),
                    "{ctx}"
                );
                assert_eq!(
                    mf["bit_length"].as_u64(),
                    f.bit_length.map(u64::from),
                    "{ctx}"
                );
                assert_eq!(mf["count"].as_u64(), f.count, "{ctx}");
                seen += 1;
            }
        }
        for (en, values) in &b.layouts.enums {
            if let Some(me) = m["enums"].get(en) {
                let want: BTreeMap<String, i64> = me
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
                    .collect();
                assert_eq!(values, &want, "{build}: {en}");
            }
        }
        // Array globals: the manifest's declared count is the gap bound.
        if let Some(c) = m["symbols"]["ExPoolTagTables"]["count"].as_u64() {
            assert_eq!(
                b.layouts.symbol_sizes.get("ExPoolTagTables"),
                Some(&(c * 8)),
                "{build}"
            );
        }
    }
    assert!(seen > 300, "{seen}");
}
