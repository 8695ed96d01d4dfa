//! Unit tests over hand-made layouts; the committed PDBs, ISFs and the
//! built-in table are checked in crates/core/tests/symbols_*.rs.

use super::*;

fn sample() -> KernelSymbols {
    let mut l = Layouts::default();
    l.symbols.insert("A".into(), 0x1000);
    l.symbols.insert("Table".into(), 0x2000);
    l.symbols.insert("Next".into(), 0x2800);
    let f = |name: &str, offset, size, ty: &str| FieldLayout {
        name: name.into(),
        offset,
        size,
        type_name: ty.into(),
        ..Default::default()
    };
    l.types.insert(
        "_REGION".into(),
        TypeLayout {
            size: 16,
            union: false,
            fields: vec![
                f("BaseAddress", 0, 8, "unsigned long long"),
                f("NumberOfBytes", 8, 8, "unsigned long long"),
            ],
        },
    );
    let mut arr = f("Regions", 0x10, 48, "_REGION");
    arr.count = Some(3);
    arr.element_size = Some(16);
    let mut bits = f("PoolType", 2, 2, "unsigned short");
    bits.bit_position = Some(8);
    bits.bit_length = Some(8);
    l.types.insert(
        "_STATE".into(),
        TypeLayout {
            size: 0x40,
            union: false,
            fields: vec![f("Flags", 0, 4, "unsigned long"), bits, arr],
        },
    );
    l.enums.insert(
        "_E".into(),
        [("One".to_string(), 1i64)].into_iter().collect(),
    );
    let id = PdbIdentity {
        name: "ntkrnlmp.pdb".into(),
        guid: Guid([1; 16]),
        age: 2,
    };
    KernelSymbols::new(
        id,
        SymbolSource::Isf {
            path: "x.json".into(),
        },
        l,
    )
}

#[test]
fn resolves_nested_paths_and_bitfields() {
    let s = sample();
    let f = s.field("_STATE", "Regions[2].NumberOfBytes").unwrap();
    assert_eq!((f.offset, f.size), (0x10 + 2 * 16 + 8, 8));
    assert_eq!(f.source, SourceKind::Isf);
    let r = s.field("_STATE", "Regions").unwrap();
    assert_eq!((r.count, r.element_size), (Some(3), Some(16)));
    let b = s.field("_STATE", "PoolType").unwrap();
    assert!(b.is_bitfield());
    let mut inst = [0u8; 0x40];
    inst[2..4].copy_from_slice(&0xAB07u16.to_le_bytes());
    assert_eq!(b.read_u64(&inst), Some(0xAB));
    assert_eq!(s.enum_value("_E", "One"), Some(1));
    assert_eq!(s.array_bound("Table", 8), Some(0x100));
}

#[test]
fn path_errors_name_what_is_wrong() {
    let s = sample();
    for (path, want) in [
        ("Regions[3].BaseAddress", "out of bounds"),
        ("Regions.BaseAddress", "index it"),
        ("Flags[0]", "not an array"),
        ("Flags.X", "not a struct"),
        ("Regions[x]", "not an index"),
        ("Regions[1", "unclosed"),
        ("", "empty"),
    ] {
        let e = s.field("_STATE", path).unwrap_err().to_string();
        assert!(e.contains(want), "{path}: {e}");
    }
    let e = s.field("_STATE", "Nope").unwrap_err().to_string();
    assert!(
        e.contains("no member 'Nope'") && e.contains("ntkrnlmp.pdb"),
        "{e}"
    );
    let e = s.require_symbol_rva("Missing").unwrap_err().to_string();
    assert!(e.contains("'Missing'") && e.contains("ISF x.json"), "{e}");
}

#[test]
fn isf_json_is_read_with_all_type_kinds() {
    let json = br#"{
      "metadata": {"windows": {"pdb": {"GUID": "06564D3477822C7D97F04852CBD5AFD6", "age": 1, "database": "ntkrnlmp.pdb"}}},
      "base_types": {"unsigned short": {"size": 2}, "unsigned long long": {"size": 8},
                     "int": {"size": 4}, "pointer": {"size": 8}},
      "enums": {"_E": {"base": "int", "size": 4, "constants": {"A": 0, "B": 7}}},
      "symbols": {"G": {"address": 4096}},
      "user_types": {
        "_S": {"kind": "struct", "size": 48, "fields": {
          "Bits": {"offset": 2, "type": {"kind": "bitfield", "bit_position": 8, "bit_length": 4,
                   "type": {"kind": "base", "name": "unsigned short"}}},
          "P": {"offset": 8, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "_S"}}},
          "E": {"offset": 16, "type": {"kind": "enum", "name": "_E"}},
          "A": {"offset": 24, "type": {"kind": "array", "count": 3,
                "subtype": {"kind": "base", "name": "unsigned long long"}}}}},
        "_U": {"kind": "union", "size": 8, "fields": {}}}
    }"#;
    let (id, l, w) = isf::parse_isf(json).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let id = id.unwrap();
    assert_eq!(id.store_key(), "06564D3477822C7D97F04852CBD5AFD61");
    assert_eq!(id.guid.to_string(), "06564D34-7782-2C7D-97F0-4852CBD5AFD6");
    let s = KernelSymbols::new(id, SymbolSource::Isf { path: "t".into() }, l);
    let b = s.field("_S", "Bits").unwrap();
    assert_eq!(
        (b.offset, b.size, b.bit_position, b.bit_length),
        (2, 2, Some(8), Some(4))
    );
    let p = s.field("_S", "P").unwrap();
    assert!(p.is_pointer() && p.pointee.as_deref() == Some("_S"));
    let e = s.field("_S", "E").unwrap();
    assert_eq!(
        (e.type_name.as_str(), e.enum_name.as_deref()),
        ("int", Some("_E"))
    );
    let a = s.field("_S", "A[2]").unwrap();
    assert_eq!((a.offset, a.size), (24 + 16, 8));
    assert!(s.type_layout("_U").unwrap().0.union);
    assert_eq!(s.symbol_rva("G"), Some(4096));
    assert_eq!(s.enum_value("_E", "B"), Some(7));
}

#[test]
fn isf_files_plain_xz_and_broken() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("a.json");
    std::fs::write(&plain, br#"{"symbols": {"X": {"address": 16}}}"#).unwrap();
    let (id, l, _) = isf::read_isf(&plain).unwrap();
    assert!(id.is_none());
    assert_eq!(l.symbols["X"], 16);
    let bad_xz = dir.path().join("b.json.xz");
    std::fs::write(&bad_xz, b"\xFD7zXZ\x00garbage").unwrap();
    let e = isf::read_isf(&bad_xz).unwrap_err().to_string();
    assert!(e.contains("b.json.xz") && e.contains("xz"), "{e}");
    let not_json = dir.path().join("c.json");
    std::fs::write(&not_json, b"[1,2").unwrap();
    let e = isf::read_isf(&not_json).unwrap_err().to_string();
    assert!(e.contains("not a Volatility ISF"), "{e}");
}

#[test]
fn an_isf_xz_that_asks_for_a_huge_dictionary_is_refused_before_decoding() {
    // `xz --lzma2=dict=1536MiB` of `{"metadata":{}}`: 72 bytes that would
    // have the decoder allocate 1.5 GiB.
    let xz = b"\xfd\x37\x7a\x58\x5a\x00\x00\x04\xe6\xd6\xb4\x46\x02\x00\x21\x01\x25\x00\x00\x00\x3b\x78\x7b\x41\x01\x00\x0e\x7b\x22\x6d\x65\x74\x61\x64\x61\x74\x61\x22\x3a\x7b\x7d\x7d\x00\x00\x65\x66\x98\x10\x74\x80\xc2\xf7\x00\x01\x27\x0f\xdf\x1a\xfc\x6a\x1f\xb6\xf3\x7d\x01\x00\x00\x00\x00\x04\x59\x5a";
    let e = isf::read_isf_from(&xz[..], std::path::Path::new("big.json.xz"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "big.json.xz asks for an xz dictionary larger than 65 MiB (xz -9 uses 64 MiB, ISF packs 8 MiB); refusing it"
    );
}

#[test]
fn the_builtin_table_decodes_and_is_chosen_by_guid_or_build() {
    let all = fallback::builds();
    assert!(all.len() >= 9, "{}", all.len());
    for b in all {
        let id = b.identity().unwrap();
        assert_eq!(
            fallback::by_guid(&id.name, &id.guid, id.age).map(|x| &x.guid),
            Some(&b.guid)
        );
        assert!(
            b.layouts.types.contains_key("_POOL_TRACKER_TABLE"),
            "{}",
            b.build_string
        );
        assert!(
            b.layouts.symbols.contains_key("PoolTrackTable"),
            "{}",
            b.build_string
        );
    }
    // Two 22000 revisions: the newest wins by build number.
    assert_eq!(
        fallback::by_build_number(22000).unwrap().build_string,
        "10.0.22000.2538"
    );
    assert!(fallback::by_build_number(1234).is_none());
}

#[test]
fn the_layout_cache_round_trips_and_refuses_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let cache = LayoutCache::new(dir.path());
    let s = sample();
    let l = (*s.layers()[0].layouts).clone();
    assert_eq!(cache.load(&s.identity).unwrap(), None);
    let p = cache.store(&s.identity, &l).unwrap();
    assert_eq!(cache.load(&s.identity).unwrap(), Some(l.clone()));
    // Another identity at the same path (a renamed file) is refused.
    let other = PdbIdentity {
        age: 3,
        ..s.identity.clone()
    };
    std::fs::copy(&p, cache.path(&other)).unwrap();
    assert!(cache.load(&other).unwrap_err().contains("another PDB"));
    std::fs::write(&p, b"PDLC\x09\x00\x00\x00").unwrap();
    assert!(cache.load(&s.identity).unwrap_err().contains("format 9"));
    std::fs::write(&p, b"junk").unwrap();
    assert!(
        cache
            .load(&s.identity)
            .unwrap_err()
            .contains("not a pooldump")
    );
}

#[test]
fn by_build_number_only_where_the_table_knows_the_layouts_are_the_same() {
    // 19041: two revisions with the same layouts.
    assert_eq!(
        fallback::by_build_number_checked(19041)
            .unwrap()
            .build_string,
        "10.0.19041.3324"
    );
    // 22000: two revisions whose layouts differ only in the name the
    // compiler made up for one anonymous member type.
    assert_eq!(
        fallback::by_build_number_checked(22000)
            .unwrap()
            .build_string,
        "10.0.22000.2538"
    );
    // One revision alone proves nothing about another.
    let e = fallback::by_build_number_checked(7601).unwrap_err();
    assert!(e.contains("only revision 6.1.7601.24540"), "{e}");
    let e = fallback::by_build_number_checked(1234).unwrap_err();
    assert!(e.starts_with("it has no build 1234"), "{e}");
}
