//! Why pooldump reads PDBs with `pdb2` and not `pdb` 0.8: a struct whose
//! field list the linker split with LF_INDEX (testdata/pdb-fixtures/,
//! built by build.py there: 3000 `unsigned long long` members plus three
//! bitfields). `pdb` 0.8.0 fails on the continuation leaf; `pdb2` (through
//! pooldump's reader) reads every member.

use std::path::PathBuf;

use pdb::FallibleIterator;
use pooldump_symbols::pdb::read_pdb;

const MEMBERS: u64 = 3000;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/pdb-fixtures/lfindex.pdb")
}

/// Members of `_LF_INDEX_FIXTURE` as `pdb` 0.8 sees them, or its error.
fn members_with_pdb_0_8() -> Result<usize, String> {
    let file = std::fs::File::open(fixture()).map_err(|e| e.to_string())?;
    let mut pdb = pdb::PDB::open(file).map_err(|e| e.to_string())?;
    let tpi = pdb.type_information().map_err(|e| e.to_string())?;
    let mut finder = tpi.finder();
    let mut iter = tpi.iter();
    let mut fields = None;
    while let Some(t) = iter.next().map_err(|e| e.to_string())? {
        finder.update(&iter);
        if let Ok(pdb::TypeData::Class(c)) = t.parse()
            && c.name.to_string() == "_LF_INDEX_FIXTURE"
            && !c.properties.forward_reference()
        {
            fields = c.fields;
        }
    }
    let mut next = fields;
    let mut n = 0;
    while let Some(idx) = next {
        let item = finder.find(idx).map_err(|e| e.to_string())?;
        match item.parse().map_err(|e| e.to_string())? {
            pdb::TypeData::FieldList(l) => {
                n += l.fields.len();
                next = l.continuation;
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Ok(n)
}

#[test]
fn pdb_0_8_cannot_read_a_field_list_split_with_lf_index() {
    match members_with_pdb_0_8() {
        Err(e) => eprintln!("pdb 0.8 fails as documented: {e}"),
        Ok(n) => assert!(
            (n as u64) < MEMBERS + 3,
            "pdb 0.8 read all {n} members: the LF_INDEX bug is fixed upstream, revisit docs/symbols.md"
        ),
    }
}

#[test]
fn pdb2_reads_every_member_of_the_split_field_list() {
    let (_, layouts, warnings) = read_pdb(&fixture(), "lfindex.pdb", None).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let t = &layouts.types["_LF_INDEX_FIXTURE"];
    // The ULONG tail unit is padded to the struct's 8-byte alignment.
    assert_eq!(t.size, MEMBERS * 8 + 8);
    assert_eq!(t.fields.len() as u64, MEMBERS + 3);
    for i in [0, 1, 1499, 2998, 2999] {
        let f = t.field(&format!("Member{i:04}")).unwrap();
        assert_eq!((f.offset, f.size), (i * 8, 8), "Member{i:04}");
        assert_eq!(f.type_name, "unsigned long long");
    }
    for (name, pos, len) in [("TailLow", 0, 5), ("TailMid", 5, 12), ("TailHigh", 17, 15)] {
        let f = t.field(name).unwrap();
        assert_eq!(f.offset, MEMBERS * 8, "{name}");
        assert_eq!(
            (f.bit_position, f.bit_length),
            (Some(pos), Some(len)),
            "{name}"
        );
        assert_eq!(f.size, 4, "{name}: ULONG unit");
    }
    assert!(layouts.symbols.contains_key("LfIndexFixture"));
    assert_eq!(layouts.symbol_sizes["LfIndexFixture"], MEMBERS * 8 + 8);
}
