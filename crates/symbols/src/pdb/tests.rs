//! The type reader on type streams written here, record by record, in the
//! forms Microsoft's compiler writes (cvinfo.h), wrapped in a minimal MSF
//! container.

use super::*;

const LF_FIELDLIST: u16 = 0x1203;
const LF_MEMBER: u16 = 0x150d;
const LF_STRUCTURE: u16 = 0x1505;
/// CV_prop_t: the record carries a unique (decorated) name.
const HAS_UNIQUE_NAME: u16 = 0x200;
const T_INT4: u32 = 0x0074;
const T_UCHAR: u32 = 0x0020;
const T_QUAD: u32 = 0x0013;
/// `void *` in an x86 PDB (32-bit near pointer mode) and in an x64 one.
const T_32PVOID: u32 = 0x0403;
const T_64PVOID: u32 = 0x0603;

/// A record: leaf, body, then LF_PAD bytes to a 4-byte boundary.
fn record(leaf: u16, body: &[u8]) -> Vec<u8> {
    let mut r = leaf.to_le_bytes().to_vec();
    r.extend_from_slice(body);
    while !(r.len() + 2).is_multiple_of(4) {
        r.push(0xf0 | (4 - (r.len() + 2) % 4) as u8);
    }
    r
}

/// An LF_MEMBER (public) for a field list.
fn member(name: &str, ty: u32, offset: u16) -> Vec<u8> {
    let mut body = 3u16.to_le_bytes().to_vec();
    body.extend_from_slice(&ty.to_le_bytes());
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    record(LF_MEMBER, &body)
}

fn field_list(members: &[Vec<u8>]) -> Vec<u8> {
    let mut list = LF_FIELDLIST.to_le_bytes().to_vec();
    list.extend(members.concat());
    list
}

/// An LF_STRUCTURE definition of `count` members.
fn structure(name: &str, unique: Option<&str>, fields: u32, count: u16, size: u16) -> Vec<u8> {
    let props = if unique.is_some() { HAS_UNIQUE_NAME } else { 0 };
    let mut body = count.to_le_bytes().to_vec();
    body.extend_from_slice(&props.to_le_bytes());
    body.extend_from_slice(&fields.to_le_bytes());
    body.extend_from_slice(&[0; 8]); // no base list, no vtable shape
    body.extend_from_slice(&size.to_le_bytes());
    for s in std::iter::once(name).chain(unique) {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    record(LF_STRUCTURE, &body)
}

/// A TPI stream (56-byte header, first index 0x1000) of `records`.
fn type_stream(records: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = records
        .iter()
        .flat_map(|r| (r.len() as u16).to_le_bytes().into_iter().chain(r.clone()))
        .collect();
    let mut s = Vec::new();
    for v in [
        20040203,
        56,
        0x1000,
        0x1000 + records.len() as u32,
        body.len() as u32,
    ] {
        s.extend_from_slice(&u32::to_le_bytes(v));
    }
    s.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // no hash stream
    s.resize(56, 0);
    s.extend(body);
    s
}

/// An MSF 7.00 file holding `streams`: superblock, two free block maps,
/// the block map, the directory (one block each), then the streams.
fn msf(streams: &[&[u8]]) -> Vec<u8> {
    const BLOCK: usize = 4096;
    let mut blocks = vec![vec![0u8; BLOCK]; 5];
    let mut dir: Vec<u8> = (streams.len() as u32).to_le_bytes().to_vec();
    for s in streams {
        dir.extend_from_slice(&(s.len() as u32).to_le_bytes());
    }
    for s in streams {
        for chunk in s.chunks(BLOCK) {
            dir.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
            let mut b = chunk.to_vec();
            b.resize(BLOCK, 0);
            blocks.push(b);
        }
    }
    blocks[3][..4].copy_from_slice(&4u32.to_le_bytes());
    blocks[4][..dir.len()].copy_from_slice(&dir);
    let superblock = &mut blocks[0];
    superblock[..32].copy_from_slice(b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0");
    let n = blocks.len();
    for (at, v) in [(32, BLOCK), (36, 1), (40, n), (44, dir.len()), (52, 3)] {
        blocks[0][at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
    }
    blocks.concat()
}

/// The layouts and warnings the type reader makes of `records`.
fn read(records: &[Vec<u8>]) -> (Layouts, Vec<String>) {
    let stream = type_stream(records);
    let bytes = msf(&[&[], &[], &stream]);
    let mut pdb = PDB::open(std::io::Cursor::new(bytes)).expect("the MSF opens");
    let tpi = pdb.type_information().expect("the type stream parses");
    let mut finder = tpi.finder();
    let (mut layouts, mut warnings) = (Layouts::default(), Vec::new());
    let undecodable = crate::pdb_prescan::undecodable_records(&stream);
    read_types(&tpi, &mut finder, undecodable, &mut layouts, &mut warnings).expect("types read");
    (layouts, warnings)
}

#[test]
fn base_type_pointers_take_the_size_of_their_mode() {
    let (l, warnings) = read(&[
        field_list(&[member("p32", T_32PVOID, 0), member("p64", T_64PVOID, 4)]),
        structure("S", None, 0x1000, 2, 12),
    ]);
    assert!(warnings.is_empty(), "{warnings:?}");
    let s = &l.types["S"];
    let size = |n: &str| s.field(n).map(|f| (f.size, f.type_name.as_str()));
    assert_eq!(size("p32"), Some((4, "pointer")));
    assert_eq!(size("p64"), Some((8, "pointer")));
}

#[test]
fn anonymous_types_sharing_msvcs_placeholder_unique_name_stay_apart() {
    // MSVC names two different anonymous structs `.?AU<unnamed-tag>@@`;
    // a third carries a unique name of its own, as clang writes them.
    const TAG: &str = ".?AU<unnamed-tag>@@";
    const OWN: &str = ".?AU<unnamed-type-u>@_OUTER@@";
    let (l, warnings) = read(&[
        field_list(&[member("a", T_INT4, 0)]),
        structure("<unnamed-tag>", Some(TAG), 0x1000, 1, 4),
        field_list(&[member("x", T_QUAD, 0), member("y", T_QUAD, 8)]),
        structure("<unnamed-tag>", Some(TAG), 0x1002, 2, 16),
        field_list(&[member("c", T_UCHAR, 0)]),
        structure("<unnamed-tag>", Some(OWN), 0x1004, 1, 1),
        field_list(&[
            member("u1", 0x1001, 0),
            member("u2", 0x1003, 8),
            member("u3", 0x1005, 24),
        ]),
        structure("_OUTER", Some(".?AU_OUTER@@"), 0x1006, 3, 32),
    ]);
    assert!(warnings.is_empty(), "{warnings:?}");
    let outer = &l.types["_OUTER"];
    for (member, size, fields) in [
        ("u1", 4, vec!["a"]),
        ("u2", 16, vec!["x", "y"]),
        ("u3", 1, vec!["c"]),
    ] {
        let f = outer.field(member).unwrap();
        assert_eq!(f.size, size, "{member}");
        let t = &l.types[&f.type_name];
        assert_eq!(t.size, size, "{member}: {}", f.type_name);
        let names: Vec<&str> = t.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, fields, "{member}");
    }
    assert_eq!(outer.field("u3").unwrap().type_name, OWN);
    assert!(!l.types.contains_key(TAG));
}

#[test]
fn only_the_synthetic_layout_helpers_are_skipped() {
    let (l, _) = read(&[
        field_list(&[
            member("NumberParameters", T_INT4, 0),
            member("__unusedAlignment", T_INT4, 4),
            member("__pad0", T_UCHAR, 8),
            member("__tail", T_UCHAR, 9),
            member("__size", T_UCHAR, 10),
        ]),
        structure("_EXCEPTION_RECORD64", None, 0x1000, 5, 12),
    ]);
    let names: Vec<&str> = l.types["_EXCEPTION_RECORD64"]
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["NumberParameters", "__unusedAlignment"]);
}
