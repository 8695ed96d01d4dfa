//! Microsoft's own pooltag.txt (../shared/realworld/pooltag.txt, from the
//! Debugging Tools' triage folder) as it is, and the Mapped_Driver
//! precedence it feeds (docs/analyze.md).

mod support;

use std::path::PathBuf;
use std::process::Command;

use pooldump_core::PoolTag;
use pooldump_core::pool::{BinaryKind, PoolTagDb};

fn real() -> Option<PathBuf> {
    let p = support::shared_dir()?.join("realworld/pooltag.txt");
    p.is_file()
        .then_some(p.clone())
        .or_else(|| support::missing(&p.display().to_string()))
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

/// The case: `NS?? - <unknown>` used to hide netsim.sys, which
/// the image search finds (the sample's NSbf tag). Now the image evidence
/// wins over the wildcard `<unknown>` and pooltag.txt's description is
/// shown beside it; an exact line naming a binary still wins over images.
#[test]
fn image_evidence_beats_a_wildcard_unknown_and_keeps_its_description() {
    let Some(p) = real() else { return };
    let root = support::repo_root().join("testdata/sample");
    let out = Command::new(env!("CARGO_BIN_EXE_pooldump"))
        .args(["analyze"])
        .arg(root.join("MEMORY.DMP"))
        .arg("--symbol-path")
        .arg(root.join("symbols"))
        .arg("--pooltag")
        .arg(&p)
        .args(["--offline", "--no-cache"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |tag: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(tag))
            .unwrap_or_else(|| panic!("no {tag} row in\n{text}"))
            .to_string()
    };
    assert!(
        row("NSbf").contains("netsim.sys - Netware server allocations"),
        "{}",
        row("NSbf")
    );
    // An exact line naming a binary: nt!cm for CM.
    assert!(
        row("CM ").contains("nt!cm - Configuration Manager"),
        "{}",
        row("CM ")
    );
    // Leak is not in pooltag.txt: the image search alone.
    assert!(row("Leak").contains("leakydrv.sys"), "{}", row("Leak"));
}
