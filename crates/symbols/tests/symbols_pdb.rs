//! Layouts and symbols read from every committed nt PDB equal the build's
//! ground-truth manifest (testdata/nt/<build>/layout.json, written from the
//! real build's symbol table by testdata/nt/build.py, not by pooldump).

use std::path::{Path, PathBuf};

use pooldump_symbols::Guid;
use pooldump_symbols::{
    KernelSymbols, PdbIdentity, SourceKind, SymbolSource, pdb::read_identity, pdb::read_pdb,
};
use serde_json::Value;

const BUILDS: [&str; 10] = [
    "win7-7601",
    "win81-9600",
    "win10-14393",
    "win10-17763",
    "win10-18362",
    "win10-19041",
    "win10-19041-public",
    "server2022-20348",
    "win11-22000",
    "win11-22000-318",
];

fn dir(build: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/nt")
        .join(build)
}

fn manifest(build: &str) -> Value {
    let text = std::fs::read_to_string(dir(build).join("layout.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `06564D34-7782-2C7D-97F0-4852CBD5AFD6` as written in the manifest.
fn manifest_guid(m: &Value) -> String {
    m["pdb"]["guid"].as_str().unwrap().to_string()
}

fn load(build: &str) -> (KernelSymbols, Vec<String>) {
    let path = dir(build).join("ntkrnlmp.pdb");
    let (id, layouts, warnings) = read_pdb(&path, "ntkrnlmp.pdb", None).unwrap();
    let src = SymbolSource::Pdb {
        path: Some(path),
        origin: None,
        layout_cache: None,
        cache_hit: false,
    };
    (KernelSymbols::new(id, src, layouts), warnings)
}

/// The PDB says T_USHORT where the real one says T_WCHAR (the C generator
/// has no wchar_t; docs/testdata-nt.md §3): the same 2-byte unit.
fn norm(t: &str) -> &str {
    if t == "wchar" { "unsigned short" } else { t }
}

#[test]
fn pdb_identity_matches_the_manifest() {
    for b in BUILDS {
        let m = manifest(b);
        let (guid, age) = read_identity(&dir(b).join("ntkrnlmp.pdb")).unwrap();
        assert_eq!(guid.to_string(), manifest_guid(&m), "{b}");
        assert_eq!(u64::from(age), m["pdb"]["age"].as_u64().unwrap(), "{b}");
        let id = PdbIdentity {
            name: "ntkrnlmp.pdb".into(),
            guid,
            age,
        };
        assert_eq!(
            id.store_key(),
            m["pdb"]["store_key"].as_str().unwrap(),
            "{b}"
        );
    }
}

#[test]
fn every_symbol_rva_matches_the_manifest() {
    for b in BUILDS {
        let m = manifest(b);
        let (s, _) = load(b);
        let syms = m["symbols"].as_object().unwrap();
        assert!(syms.len() > 30, "{b}: manifest has {} symbols", syms.len());
        for (name, sym) in syms {
            let want = sym["rva"].as_u64().unwrap();
            assert_eq!(s.symbol_rva(name), Some(want), "{b}: {name}");
            assert_eq!(s.symbol(name).unwrap().source, SourceKind::Pdb);
        }
        // ExPoolTagTables' bound: the manifest's declared element count.
        let count = m["symbols"]["ExPoolTagTables"]["count"].as_u64().unwrap();
        assert_eq!(s.array_bound("ExPoolTagTables", 8), Some(count), "{b}");
    }
}

#[test]
fn every_type_and_field_matches_the_manifest() {
    for b in BUILDS {
        let m = manifest(b);
        let (s, _) = load(b);
        let mut fields = 0;
        let mut bitfields = 0;
        for (ty, t) in m["types"].as_object().unwrap() {
            assert_eq!(s.type_size(ty), t["size"].as_u64(), "{b}: sizeof({ty})");
            let union = t.get("kind").and_then(Value::as_str) == Some("union");
            assert_eq!(
                s.type_layout(ty).unwrap().0.union,
                union,
                "{b}: {ty} union?"
            );
            for (name, f) in t["fields"].as_object().unwrap() {
                let got = s
                    .field(ty, name)
                    .unwrap_or_else(|e| panic!("{b}: {ty}.{name}: {e}"));
                let ctx = format!("{b}: {ty}.{name}");
                assert_eq!(Some(got.offset), f["offset"].as_u64(), "{ctx} offset");
                assert_eq!(Some(got.size), f["size"].as_u64(), "{ctx} size");
                fields += 1;
                if f.get("opaque").is_some() {
                    // The PDB has a byte array of the struct's size.
                    continue;
                }
                let want_ty = f["type"].as_str().unwrap();
                assert_eq!(norm(&got.type_name), norm(want_ty), "{ctx} type");
                assert_eq!(
                    got.bit_position.map(u64::from),
                    f.get("bit_position").and_then(Value::as_u64),
                    "{ctx} bit position"
                );
                assert_eq!(
                    got.bit_length.map(u64::from),
                    f.get("bit_length").and_then(Value::as_u64),
                    "{ctx} bit length"
                );
                bitfields += usize::from(got.bit_length.is_some());
                assert_eq!(
                    got.count,
                    f.get("count").and_then(Value::as_u64),
                    "{ctx} count"
                );
                assert_eq!(
                    got.element_size,
                    f.get("element_size").and_then(Value::as_u64),
                    "{ctx} element size"
                );
                if let Some(e) = f.get("enum").and_then(Value::as_str)
                    && m["enums"].get(e).is_some()
                {
                    assert_eq!(got.enum_name.as_deref(), Some(e), "{ctx} enum");
                }
                if want_ty == "pointer"
                    && let Some(p) = f.get("pointee").and_then(Value::as_str)
                    && m["types"].get(p).is_some()
                {
                    assert_eq!(got.pointee.as_deref(), Some(p), "{ctx} pointee");
                }
            }
        }
        assert!(fields > 1000 && bitfields > 100, "{b}: {fields} fields");
        for (en, values) in m["enums"].as_object().unwrap() {
            let got = s
                .enum_values(en)
                .unwrap_or_else(|| panic!("{b}: enum {en}"));
            let want: std::collections::BTreeMap<String, i64> = values
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
                .collect();
            assert_eq!(got, &want, "{b}: enum {en}");
        }
    }
}

#[test]
fn pool_header_bitfields_use_the_builds_storage_units() {
    // 7601: ULONG units, bits 0/8/16/24 of offset 0; 9600+: USHORT units
    // (docs/testdata-nt.md §7). Both from the manifest, checked above; here
    // the absolute bit of each field is the same in every build.
    for b in BUILDS {
        let (s, _) = load(b);
        for (field, abs_bit) in [
            ("PreviousSize", 0),
            ("PoolIndex", 8),
            ("BlockSize", 16),
            ("PoolType", 24),
        ] {
            let f = s.field("_POOL_HEADER", field).unwrap();
            let bit = f.offset * 8 + u64::from(f.bit_position.unwrap());
            assert_eq!(bit, abs_bit, "{b}: _POOL_HEADER.{field}");
            let unit = if b == "win7-7601" { 4 } else { 2 };
            assert_eq!(f.size, unit, "{b}: _POOL_HEADER.{field} unit");
        }
    }
}

/// A member's offset in its type, as the manifest has it.
fn manifest_offset(m: &Value, ty: &str, member: &str) -> u64 {
    m["types"][ty]["fields"][member]["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("the manifest has no {ty}.{member}"))
}

#[test]
fn nested_paths_resolve_like_the_manifest() {
    for b in ["win10-14393", "win10-19041", "win11-22000"] {
        let m = manifest(b);
        let (s, _) = load(b);
        let regions = manifest_offset(&m, "_MI_VISIBLE_STATE", "SystemVaRegions");
        let elem = m["types"]["_MI_VISIBLE_STATE"]["fields"]["SystemVaRegions"]["element_size"]
            .as_u64()
            .unwrap();
        let base = manifest_offset(&m, "_MI_SYSTEM_VA_ASSIGNMENT", "BaseAddress");
        let vs = manifest_offset(&m, "_MI_SYSTEM_INFORMATION", "Vs");
        let field = |ty: &str, path: &str| s.field(ty, path).unwrap().offset;
        assert_eq!(
            field("_MI_VISIBLE_STATE", "SystemVaRegions[1].BaseAddress"),
            regions + elem + base,
            "{b}"
        );
        assert_eq!(
            field("_MI_SYSTEM_INFORMATION", "Vs.SystemVaRegions"),
            vs + regions,
            "{b}"
        );
    }
}

#[test]
fn publics_only_pdb_resolves_globals_through_s_pub32() {
    let b = "win10-19041-public";
    let m = manifest(b);
    assert_eq!(m["pdb"]["has_global_data_records"], Value::Bool(false));
    let (s, _) = load(b);
    for name in [
        "PoolTrackTable",
        "PoolBigPageTable",
        "ExPoolTagTables",
        "KiWaitNever",
    ] {
        assert_eq!(
            s.symbol_rva(name),
            m["symbols"][name]["rva"].as_u64(),
            "{name}"
        );
        // No S_GDATA32, so no type size: the bound is the gap to the next
        // public symbol.
        assert_eq!(s.symbol(name).unwrap().size, None, "{name}");
    }
    let gap_bound = s.array_bound("ExPoolTagTables", 8).unwrap();
    assert!(
        gap_bound >= m["symbols"]["ExPoolTagTables"]["count"].as_u64().unwrap(),
        "{gap_bound}"
    );
}

#[test]
fn kldr_layout_matches_the_bootstrap_offsets() {
    for b in BUILDS {
        let (s, _) = load(b);
        let (l, ty) = s.kldr_layout().unwrap();
        let want = if matches!(b, "win7-7601" | "win81-9600") {
            "_LDR_DATA_TABLE_ENTRY"
        } else {
            "_KLDR_DATA_TABLE_ENTRY"
        };
        assert_eq!(ty, want, "{b}");
        let m = manifest(b);
        assert_eq!(
            l.dll_base as u64,
            m["types"][want]["fields"]["DllBase"]["offset"]
                .as_u64()
                .unwrap()
        );
        let mismatches = s
            .check_kldr_bootstrap(&pooldump_symbols::KLDR_BOOTSTRAP)
            .unwrap();
        assert!(mismatches.is_empty(), "{b}: {mismatches:?}");
    }
    // A bootstrap table that is off is reported field by field.
    let (s, _) = load("win10-19041");
    let mut wrong = pooldump_symbols::KLDR_BOOTSTRAP;
    wrong.size_of_image += 8;
    let msgs = s.check_kldr_bootstrap(&wrong).unwrap();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("SizeOfImage"), "{}", msgs[0]);
}

#[test]
fn a_wrong_pdb_is_refused_before_its_types_are_read() {
    let path = dir("win10-19041").join("ntkrnlmp.pdb");
    let err = read_pdb(&path, "ntkrnlmp.pdb", Some((Guid([7; 16]), 1))).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("wrong PDB") && msg.contains("06564D34"),
        "{msg}"
    );
}

#[test]
fn damaged_pdbs_are_errors_not_panics() {
    let good = std::fs::read(dir("win10-19041").join("ntkrnlmp.pdb")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("ntkrnlmp.pdb");
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for len in [0, 31, 512, 4096, 8192, good.len() / 2, good.len() - 1] {
        cases.push(good[..len].to_vec());
    }
    // Flip bytes in the MSF directory, stream headers and type records.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut b = good.clone();
        let at = (seed as usize) % b.len();
        b[at] ^= 0xFF;
        cases.push(b);
    }
    let mut errors = 0;
    for c in cases {
        std::fs::write(&p, &c).unwrap();
        match read_pdb(&p, "ntkrnlmp.pdb", None) {
            Ok(_) => {}
            Err(e) => {
                assert!(e.to_string().contains("ntkrnlmp.pdb"), "{e}");
                errors += 1;
            }
        }
    }
    assert!(errors >= 7, "truncated files must be errors ({errors})");
}
