//! Microsoft's own pooltag.txt (../shared/realworld/pooltag.txt, from the
//! Debugging Tools' triage folder) read as it is, line by line
//! (`tests/cli/pooltag_real.rs` checks the Mapped_Driver precedence it
//! feeds through the binary).

#[path = "../../../tests/support/prereq.rs"]
mod support;

use pooldump_core::PoolTag;
use pooldump_core::pool::{BinaryKind, PoolTagDb};

fn real() -> Option<std::path::PathBuf> {
    support::shared_file("realworld/pooltag.txt")
}

fn t(s: &str) -> PoolTag {
    PoolTag::parse(s).unwrap()
}

#[test]
fn the_real_pooltag_txt_reads_line_by_line() {
    let Some(p) = real() else { return };
    let db = PoolTagDb::load(&p).unwrap();
    // 5,009 lines: 3 `//`, the `rem`/`REM` block, blank lines, the final
    // 0x1A; the lines that cannot be read are `       <unknown>` (876), an
    // indented binary with no tag, and `QUIC Allocation tags are Qc00
    // through QcFF` (2661), prose without a `rem`.
    assert_eq!(db.skipped, vec![876, 2661], "unreadable lines");
    assert!(db.len() > 4500, "{} entries", db.len());
    // Padded, unpadded and interior-space tags.
    assert_eq!(db.lookup(t("CM  ")).unwrap().binary, "nt!cm");
    assert_eq!(db.lookup(t("I4e ")).unwrap().binary, "tcpip.sys");
    assert_eq!(db.lookup(t("Dh 0")).unwrap().kind, BinaryKind::Unknown);
    // Patterns: `NS?? - <unknown>` and `Bu*  - <unknown>`.
    let ns = db.matches(t("NSbf"));
    assert!(ns.exact.is_none());
    assert_eq!(
        ns.pattern.unwrap().description,
        "Netware server allocations"
    );
    assert!(db.lookup(t("Bu12")).is_some());
    // <multiple>, `a or b`, FsLib, a description with ` - ` in it, and a
    // two-field line whose second field is prose.
    assert_eq!(db.lookup(t("CKRT")).unwrap().kind, BinaryKind::Multiple);
    assert!(db.lookup(t("FDEl")).unwrap().names_binary());
    assert_eq!(
        db.lookup(t("NDcw")).unwrap().description,
        "NDIS_TAG_PCW - NDIS Performance Counters"
    );
    let at = db.lookup(t("ATmp")).unwrap();
    assert_eq!(
        (at.kind.clone(), at.description.as_str()),
        (BinaryKind::Missing, "AppTag mount point")
    );
    // A tag listed twice: the first line wins, as in WinDbg.
    let first = std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Gcac "))
        .unwrap()
        .to_string();
    assert!(
        first.contains(&db.lookup(t("Gcac")).unwrap().description),
        "{first}"
    );

    // The same file saved as UTF-16 with a BOM reads the same.
    let text = std::fs::read(&p).unwrap();
    let mut u16le = vec![0xFF, 0xFE];
    u16le.extend(
        String::from_utf8_lossy(&text)
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("pooltag-utf16.txt");
    std::fs::write(&q, u16le).unwrap();
    let db16 = PoolTagDb::load(&q).unwrap();
    assert_eq!(db16.len(), db.len());
    assert_eq!(db16.skipped, db.skipped);
}
