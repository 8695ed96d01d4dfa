//! Type records pdb2 0.11 cannot parse without panicking, found by reading
//! the type stream's bytes before pdb2 sees them.
//!
//! pdb2 answers some malformed records with an `unreachable!()` (in every
//! build) or unbounded recursion, and gives no access to a record's bytes
//! before it parses them, so a hostile PDB would abort pooldump. The
//! fuzzer (`pdb_layouts`, docs/security.md) found each case below. Such
//! records are reported as unparsable instead, as pdb2's own errors are.
//!
//! * LF_POINTER with a pointer mode above 4 or a pointer kind above 0x0c:
//!   `PointerAttributes::pointer_mode` (called while parsing) and
//!   `pointer_kind` (called by `size()`) reach `unreachable!()`.
//! * LF_VTSHAPE with a descriptor above 7: `VirtualTableShapeDescriptor::
//!   from_u4` reaches `unreachable!()` (descriptors are 4-bit; 8-15 unused).
//! * LF_FIELDLIST: pdb2 parses each member with the function that parses
//!   top-level records, so a field list can hold either of the above, or
//!   another field list, nested without limit ("recursion is endless fun
//!   because [STACK OVERFLOW]", says pdb2). A field list is handed to pdb2
//!   only if every member is of a kind compilers write in field lists, none
//!   of which can panic; its members are walked exactly as pdb2 reads them
//!   (tpi/data.rs, `parse_type_data`), so the walk and pdb2 agree on where
//!   each member starts.
//!
//! pdb2's other `unreachable!()`s follow a match on the same leaf (they
//! cannot be reached) or need debug assertions, which it is built without
//! (root Cargo.toml). Written by hand because no crate checks this: the
//! checks are about one crate's implementation, not the format.

use std::collections::HashMap;

const LF_VTSHAPE: u16 = 0x000a;
const LF_ENUMERATE_ST: u16 = 0x0403;
const LF_POINTER: u16 = 0x1002;
const LF_FIELDLIST: u16 = 0x1203;
const LF_BCLASS: u16 = 0x1400;
const LF_VBCLASS: u16 = 0x1401;
const LF_IVBCLASS: u16 = 0x1402;
const LF_INDEX: u16 = 0x1404;
const LF_MEMBER_ST: u16 = 0x1405;
const LF_STMEMBER_ST: u16 = 0x1406;
const LF_METHOD_ST: u16 = 0x1407;
const LF_NESTTYPE_ST: u16 = 0x1408;
const LF_VFUNCTAB: u16 = 0x1409;
const LF_ONEMETHOD_ST: u16 = 0x140b;
const LF_NESTTYPEEX_ST: u16 = 0x140d;
/// Leaves above this end their names with a NUL; up to it (the `_ST`
/// kinds), a length byte comes first.
const LF_ST_MAX: u16 = 0x1500;
const LF_ENUMERATE: u16 = 0x1502;
const LF_MEMBER: u16 = 0x150d;
const LF_STMEMBER: u16 = 0x150e;
const LF_METHOD: u16 = 0x150f;
const LF_NESTTYPE: u16 = 0x1510;
const LF_ONEMETHOD: u16 = 0x1511;
const LF_NESTTYPEEX: u16 = 0x1512;
const LF_BINTERFACE: u16 = 0x151a;
const LF_NUMERIC: u16 = 0x8000;
const LF_CHAR: u16 = 0x8000;
const LF_SHORT: u16 = 0x8001;
const LF_USHORT: u16 = 0x8002;
const LF_LONG: u16 = 0x8003;
const LF_ULONG: u16 = 0x8004;
const LF_QUADWORD: u16 = 0x8009;
const LF_UQUADWORD: u16 = 0x800a;

/// The members a field list may hold and be handed to pdb2.
const MEMBER_KINDS: [u16; 20] = [
    LF_MEMBER,
    LF_MEMBER_ST,
    LF_NESTTYPE,
    LF_NESTTYPE_ST,
    LF_NESTTYPEEX,
    LF_NESTTYPEEX_ST,
    LF_METHOD,
    LF_METHOD_ST,
    LF_ONEMETHOD,
    LF_ONEMETHOD_ST,
    LF_BCLASS,
    LF_BINTERFACE,
    LF_VFUNCTAB,
    LF_STMEMBER,
    LF_STMEMBER_ST,
    LF_ENUMERATE,
    LF_ENUMERATE_ST,
    LF_VBCLASS,
    LF_IVBCLASS,
    LF_INDEX,
];

/// Is a symbol record of `kind` one pooldump reads, and so hands to pdb2's
/// parser: publics (`S_PUB32`), data (`S_LDATA32`, `S_GDATA32`) and
/// procedures (`S_LPROC32`, `S_GPROC32` and their `_ST`, `_ID` and DPC
/// forms), whose parsers only read fields in order. Other kinds are never
/// parsed: pdb2's `S_DEFRANGE*` parsers subtract from the record's length
/// before checking it (a panic with overflow checks), found by the fuzzer
/// (`pdb_layouts`, through the stack symbolizer).
pub fn symbol_kind_is_read(kind: u16) -> bool {
    matches!(
        kind,
        0x110e | 0x1009 // S_PUB32, S_PUB32_ST
            | 0x110c | 0x110d | 0x1007 | 0x1008 // S_LDATA32, S_GDATA32, _ST
            | 0x110f | 0x1110 | 0x100a | 0x100b // S_LPROC32, S_GPROC32, _ST
            | 0x1146 | 0x1147 | 0x1155 | 0x1156 // _ID, S_LPROC32_DPC(_ID)
    )
}

/// Does the DBI stream's header (NewDBIHdr) state substream sizes whose
/// sum overflows a u32? pdb2 adds six of them in u32 to find the optional
/// debug header (`DBIExtraStreams::new`, reached by `address_map()` and
/// `sections()`): a panic with overflow checks (debug builds and tests),
/// a wrapped offset without. No real PDB comes near 4 GiB. Found by the
/// fuzzer (`pdb_layouts`).
pub(crate) fn dbi_sizes_overflow(stream: &[u8]) -> bool {
    // ModInfo, SectionContribution, SectionMap, SourceInfo, TypeServerMap
    // and ECSubstream sizes, in pdb2's order.
    let b = pooldump_io::bytes::Le(stream);
    [24, 28, 32, 36, 40, 52]
        .iter()
        .try_fold(0u32, |sum, &at| sum.checked_add(b.u32(at).unwrap_or(0)))
        .is_none()
}

/// Refuse a type stream (TPI) whose header or record count would make
/// pdb2 misbehave, found by the fuzzer (`pdb_layouts`):
///
/// * more records than u32 type indices from the first can number: pdb2
///   numbers records as it iterates (`ItemIter::next` adds 1 in u32, after
///   the last record too: a panic with overflow checks);
/// * a maximum index that claims more types than the stream's bytes can
///   hold (each record takes at least 4): pdb2's `TypeFinder` reserves
///   memory for that many at once, 2 GiB for a claim of 2^32 types.
///
/// A real stream's first index is 0x1000 and its maximum is the first plus
/// its record count.
pub(super) fn check_type_stream(stream: &[u8]) -> Result<(), String> {
    let b = pooldump_io::bytes::Le(stream);
    let (Some(header_size), Some(first), Some(max)) = (b.u32(4), b.u32(8), b.u32(12)) else {
        return Ok(());
    };
    let claimed = u64::from(max.saturating_sub(first));
    if claimed > stream.len() as u64 / 4 {
        return Err(format!(
            "its type stream claims {claimed} types, more than its {} bytes can hold: the file is damaged",
            stream.len()
        ));
    }
    let mut at = header_size as usize;
    let mut count = 0u64;
    while let Some(len) = b.u16(at) {
        at += 2 + usize::from(len);
        count += 1;
    }
    if u64::from(first) + count > u64::from(u32::MAX) {
        return Err(
            "its type stream holds more records than type indices can number: the file is damaged"
                .into(),
        );
    }
    Ok(())
}

/// The records of a type stream (TPI: a header whose size is at 4 and
/// first type index at 8, then records of a u16 length and the leaf) that
/// must not be handed to pdb2, by type index, with their leaf kind.
pub(super) fn undecodable_records(stream: &[u8]) -> HashMap<u32, u16> {
    let mut bad = HashMap::new();
    let b = pooldump_io::bytes::Le(stream);
    let (Some(header_size), Some(first)) = (b.u32(4), b.u32(8)) else {
        return bad;
    };
    let mut at = header_size as usize;
    let mut index = first;
    while let Some(len) = b.u16(at) {
        let data = at + 2;
        let end = (data + usize::from(len)).min(stream.len());
        let record = stream.get(data..end).unwrap_or_default();
        if let Some(leaf) = undecodable(record) {
            bad.insert(index, leaf);
        }
        at = data + usize::from(len);
        index = index.wrapping_add(1);
    }
    bad
}

/// The leaf of `record` (leaf and body) if pdb2 would panic on it.
fn undecodable(record: &[u8]) -> Option<u16> {
    let mut c = Cursor::new(record);
    let leaf = c.u16()?;
    let bad = match leaf {
        LF_POINTER => c
            .skip(4)
            .and_then(|()| c.u32())
            .is_some_and(|attr| (attr >> 5) & 7 > 4 || attr & 0x1f > 0x0c),
        LF_VTSHAPE => vtshape_is_bad(&mut c),
        LF_FIELDLIST => !field_list_is_safe(&mut c),
        _ => false,
    };
    bad.then_some(leaf)
}

/// A u16 count, then the descriptors packed two to a byte, low nibble
/// first; pdb2 decodes them in order until the count or the record ends.
fn vtshape_is_bad(c: &mut Cursor<'_>) -> bool {
    let Some(count) = c.u16() else {
        return false;
    };
    for i in 0..usize::from(count) {
        let Some(byte) = c.peek_at(i / 2) else {
            return false;
        };
        let descriptor = if i % 2 == 0 { byte & 0xF } else { byte >> 4 };
        if descriptor > 7 {
            return true;
        }
    }
    false
}

/// Walk a field list's members as pdb2 does. Safe when every member is of
/// a [`MEMBER_KINDS`] kind up to the end, or up to where pdb2 stops with an
/// error (a short record, a numeric leaf it does not know).
fn field_list_is_safe(c: &mut Cursor<'_>) -> bool {
    while !c.is_empty() {
        // pdb2 peeks the leaf, then parses it again as the member's.
        let Some(leaf) = c.u16() else {
            return true;
        };
        if !MEMBER_KINDS.contains(&leaf) {
            return false;
        }
        if member(leaf, c).and_then(|()| c.padding()).is_none() {
            return true;
        }
    }
    true
}

/// Step over one member's fields after its leaf, as pdb2 0.11 parses them;
/// `None` where pdb2 fails.
fn member(leaf: u16, c: &mut Cursor<'_>) -> Option<()> {
    match leaf {
        // u16 padding, a type index to continue with.
        LF_INDEX => c.skip(6),
        // attributes, type, offset, name
        LF_MEMBER | LF_MEMBER_ST => {
            c.skip(6)?;
            c.unsigned()?;
            c.name(leaf)
        }
        // attributes or padding, type, name
        LF_NESTTYPE | LF_NESTTYPE_ST | LF_NESTTYPEEX | LF_NESTTYPEEX_ST => {
            c.skip(6)?;
            c.name(leaf)
        }
        // count, method list, name
        LF_METHOD | LF_METHOD_ST => {
            c.skip(6)?;
            c.name(leaf)
        }
        // attributes, type, a vtable offset for introducing virtuals, name
        LF_ONEMETHOD | LF_ONEMETHOD_ST => {
            let attributes = c.u16()?;
            c.skip(4)?;
            if matches!((attributes & 0x1c) >> 2, 4 | 6) {
                c.skip(4)?;
            }
            c.name(leaf)
        }
        // attributes, type, offset
        LF_BCLASS | LF_BINTERFACE => {
            c.skip(6)?;
            c.unsigned()
        }
        // padding, type
        LF_VFUNCTAB => c.skip(6),
        // attributes, type, name
        LF_STMEMBER | LF_STMEMBER_ST => {
            c.skip(6)?;
            c.name(leaf)
        }
        // attributes, value, name
        LF_ENUMERATE | LF_ENUMERATE_ST => {
            c.skip(2)?;
            c.variant()?;
            c.name(leaf)
        }
        // attributes, base class, base pointer, two offsets
        LF_VBCLASS | LF_IVBCLASS => {
            c.skip(10)?;
            c.unsigned()?;
            c.unsigned()
        }
        _ => None,
    }
}

/// A cursor over a record that answers `None` where pdb2's `ParseBuffer`
/// answers an error.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, at: 0 }
    }

    fn is_empty(&self) -> bool {
        self.at >= self.b.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn peek_at(&self, k: usize) -> Option<u8> {
        self.b.get(self.at.checked_add(k)?).copied()
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// pdb2's `parse_unsigned`.
    fn unsigned(&mut self) -> Option<()> {
        match self.u16()? {
            v if v < LF_NUMERIC => Some(()),
            LF_CHAR => self.skip(1),
            LF_USHORT => self.skip(2),
            LF_ULONG => self.skip(4),
            LF_UQUADWORD => self.skip(8),
            _ => None,
        }
    }

    /// pdb2's `Variant` (signed and unsigned numeric leaves).
    fn variant(&mut self) -> Option<()> {
        match self.u16()? {
            v if v < LF_NUMERIC => Some(()),
            LF_CHAR => self.skip(1),
            LF_SHORT | LF_USHORT => self.skip(2),
            LF_LONG | LF_ULONG => self.skip(4),
            LF_QUADWORD | LF_UQUADWORD => self.skip(8),
            _ => None,
        }
    }

    /// pdb2's `parse_string`: NUL-terminated, or length-prefixed for the
    /// `_ST` kinds.
    fn name(&mut self, leaf: u16) -> Option<()> {
        if leaf > LF_ST_MAX {
            let rest = self.b.get(self.at..)?;
            let nul = rest.iter().position(|&b| b == 0)?;
            self.skip(nul + 1)
        } else {
            let n = self.u8()?;
            self.skip(usize::from(n))
        }
    }

    /// pdb2's `parse_padding`: bytes 0xF0 and up; 0xF1-0xFF also say how
    /// many bytes (with themselves) to skip.
    fn padding(&mut self) -> Option<()> {
        while let Some(p) = self.peek_at(0) {
            if p < 0xf0 {
                break;
            }
            self.at += 1;
            if p > 0xf0 {
                self.skip(usize::from(p & 0x0f) - 1)?;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A type stream of `records` (each leaf and body) after a 56-byte
    /// header whose first index is 0x1000.
    fn stream(records: &[Vec<u8>]) -> Vec<u8> {
        let mut s = vec![0u8; 56];
        s[4..8].copy_from_slice(&56u32.to_le_bytes());
        s[8..12].copy_from_slice(&0x1000u32.to_le_bytes());
        for r in records {
            s.extend_from_slice(&(r.len() as u16).to_le_bytes());
            s.extend_from_slice(r);
        }
        s
    }

    fn leaf(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut v = kind.to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// LF_MEMBER: public, type 0x74, offset 8, "Count", then padding to 4.
    fn member_count() -> Vec<u8> {
        let mut m = leaf(LF_MEMBER, &[3, 0, 0x74, 0, 0, 0, 8, 0]);
        m.extend_from_slice(b"Count\0");
        m.extend_from_slice(&[0xf2, 0xf1]);
        m
    }

    #[test]
    fn well_formed_records_pass() {
        let pointer = leaf(LF_POINTER, &[0x74, 0, 0, 0, 0x0c, 0, 1, 0]);
        let vtshape = leaf(LF_VTSHAPE, &[3, 0, 0x77, 0x07]);
        let mut list = leaf(LF_FIELDLIST, &member_count());
        list.extend(member_count());
        // An enumerator with an LF_ULONG value, an LF_INDEX continuation.
        list.extend(leaf(LF_ENUMERATE, &[3, 0, 0x04, 0x80, 1, 0, 0, 0]));
        list.extend_from_slice(b"E\0");
        list.extend(leaf(LF_INDEX, &[0, 0, 0x00, 0x10, 0, 0]));
        assert!(undecodable_records(&stream(&[pointer, vtshape, list])).is_empty());
    }

    #[test]
    fn pointer_modes_and_kinds_pdb2_cannot_decode_are_found() {
        let mode7 = leaf(LF_POINTER, &[0x74, 0, 0, 0, 0xec, 0, 0, 0]);
        let kind13 = leaf(LF_POINTER, &[0x74, 0, 0, 0, 0x0d, 0, 0, 0]);
        let bad = undecodable_records(&stream(&[mode7, kind13]));
        assert_eq!(bad.get(&0x1000), Some(&LF_POINTER));
        assert_eq!(bad.get(&0x1001), Some(&LF_POINTER));
    }

    #[test]
    fn a_vtable_shape_with_an_unused_descriptor_is_found() {
        // The third descriptor (low nibble of the second byte) is 8.
        let bad = leaf(LF_VTSHAPE, &[3, 0, 0x00, 0x08]);
        // Beyond the count, a nibble is never decoded.
        let ok = leaf(LF_VTSHAPE, &[3, 0, 0x00, 0x80]);
        let found = undecodable_records(&stream(&[bad, ok]));
        assert_eq!(found.len(), 1);
        assert_eq!(found.get(&0x1000), Some(&LF_VTSHAPE));
    }

    #[test]
    fn a_field_list_holding_anything_but_members_is_found() {
        for inner in [
            leaf(LF_VTSHAPE, &[1, 0, 0x0f]),
            leaf(LF_POINTER, &[0x74, 0, 0, 0, 0xec, 0, 0, 0]),
            // A field list in a field list: pdb2 recurses once per level.
            leaf(LF_FIELDLIST, &leaf(LF_FIELDLIST, &[])),
        ] {
            let mut list = leaf(LF_FIELDLIST, &member_count());
            list.extend(inner);
            let found = undecodable_records(&stream(&[list]));
            assert_eq!(found.get(&0x1000), Some(&LF_FIELDLIST));
        }
    }

    #[test]
    fn a_member_is_found_where_pdb2_looks_for_it() {
        // The member's name holds the bytes of an LF_POINTER with pointer
        // mode 7: not a member boundary, so the list is fine.
        let mut list = leaf(LF_FIELDLIST, &[]);
        list.extend(leaf(LF_MEMBER, &[3, 0, 0x74, 0, 0, 0, 8, 0]));
        list.extend_from_slice(b"\x02\x10\x74\x11\x11\x11\xec\x11\0");
        assert!(undecodable_records(&stream(&[list.clone()])).is_empty());
        // An LF_USHORT offset is two more bytes; a member after it is
        // walked from the right place.
        let mut list = leaf(LF_FIELDLIST, &[]);
        list.extend(leaf(LF_MEMBER, &[3, 0, 0x74, 0, 0, 0, 0x02, 0x80, 0, 1]));
        list.extend_from_slice(b"A\0");
        list.extend(leaf(LF_VTSHAPE, &[1, 0, 0x0f]));
        assert_eq!(
            undecodable_records(&stream(&[list])).get(&0x1000),
            Some(&LF_FIELDLIST)
        );
        // A list pdb2 gives up on (an unknown numeric leaf) before any
        // foreign leaf is an error there, not a panic: passed on.
        let mut list = leaf(LF_FIELDLIST, &[]);
        list.extend(leaf(LF_MEMBER, &[3, 0, 0x74, 0, 0, 0, 0x05, 0x80]));
        list.extend(leaf(LF_VTSHAPE, &[1, 0, 0x0f]));
        assert!(undecodable_records(&stream(&[list])).is_empty());
    }

    #[test]
    fn type_streams_pdb2_would_overflow_or_overreserve_for_are_found() {
        let mut s = stream(&[leaf(LF_POINTER, &[0; 8]), leaf(LF_POINTER, &[0; 8])]);
        s[12..16].copy_from_slice(&0x1002u32.to_le_bytes());
        assert_eq!(check_type_stream(&s), Ok(()));
        // pdb2 adds 1 after every record, the last one too.
        s[8..12].copy_from_slice(&(u32::MAX - 2).to_le_bytes());
        s[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(check_type_stream(&s), Ok(()));
        s[8..12].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
        assert!(
            check_type_stream(&s)
                .unwrap_err()
                .contains("more records than type indices")
        );
        // 2^32 - 0x1001 types claimed in 80 bytes.
        s[8..12].copy_from_slice(&0x1000u32.to_le_bytes());
        let e = check_type_stream(&s).unwrap_err();
        assert!(
            e.contains("claims 4294963199 types, more than its 80 bytes"),
            "{e}"
        );
    }

    #[test]
    fn dbi_sizes_that_overflow_are_found() {
        let mut dbi = vec![0u8; 64];
        dbi[24..28].copy_from_slice(&0x1000u32.to_le_bytes());
        dbi[52..56].copy_from_slice(&0x100u32.to_le_bytes());
        assert!(!dbi_sizes_overflow(&dbi));
        dbi[36..40].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        assert!(dbi_sizes_overflow(&dbi));
        // A short stream: pdb2 fails to read the header itself.
        assert!(!dbi_sizes_overflow(&dbi[..30]));
    }

    #[test]
    fn the_committed_pdbs_have_nothing_undecodable() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut seen = 0;
        for pdb in [
            "testdata/nt/win7-7601/ntkrnlmp.pdb",
            "testdata/nt/win10-19041/ntkrnlmp.pdb",
            "testdata/nt/win11-22000/ntkrnlmp.pdb",
            "testdata/drivers/leakydrv.pdb",
            "testdata/pdb-fixtures/lfindex.pdb",
        ] {
            let file = std::fs::File::open(root.join(pdb)).unwrap();
            let mut pdb2 = pdb2::PDB::open(file).unwrap();
            let dbi = pdb2.raw_stream(pdb2::StreamIndex(3)).unwrap().unwrap();
            assert!(!dbi_sizes_overflow(&dbi), "{pdb}");
            let tpi = pdb2.raw_stream(pdb2::StreamIndex(2)).unwrap().unwrap();
            assert_eq!(check_type_stream(&tpi), Ok(()), "{pdb}");
            let mut tpi = tpi.as_slice().to_vec();
            assert!(undecodable_records(&tpi).is_empty(), "{pdb}");
            // The walk reaches the real field lists: the first one's first
            // member turned into a nested field list is found.
            let b = pooldump_io::bytes::Le(&tpi);
            let (mut at, mut index) = (b.u32(4).unwrap() as usize, b.u32(8).unwrap());
            while b.u16(at + 2) != Some(LF_FIELDLIST) {
                at += 2 + usize::from(b.u16(at).unwrap());
                index += 1;
            }
            tpi[at + 4..at + 6].copy_from_slice(&LF_FIELDLIST.to_le_bytes());
            let found = undecodable_records(&tpi);
            assert_eq!(found.len(), 1, "{pdb}");
            assert_eq!(found.get(&index), Some(&LF_FIELDLIST), "{pdb}");
            seen += 1;
        }
        assert_eq!(seen, 5);
    }
}
