//! PoolMon and `!poolused` text read as snapshot tables: the real outputs
//! in ../shared/realworld/ as they are (`tests/cli/text_import.rs` runs the
//! same through the binary, with hand-made texts and mixed series).

#[path = "../../../tests/support/prereq.rs"]
mod support;

use pooldump_core::pool::PoolClass;
use pooldump_core::snapshot_text::{TextFormat, parse_text};

fn realworld(name: &str) -> Option<std::path::PathBuf> {
    support::shared_file(&format!("realworld/{name}"))
}

fn row<'a>(
    t: &'a pooldump_core::snapshot_text::TextTable,
    tag: &str,
    pool: PoolClass,
) -> &'a pooldump_core::snapshot::SnapshotRow {
    t.rows
        .iter()
        .find(|r| r.tag_text == tag && r.pool == pool)
        .unwrap_or_else(|| panic!("no {tag} {pool:?} row"))
}

#[test]
fn real_poolused_2_with_tabs_before_descriptions() {
    let Some(p) = realworld("poolused2-live-amd-leak.txt") else {
        return;
    };
    let bytes = std::fs::read(&p).unwrap();
    let i = parse_text(&bytes, "poolused2").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    assert_eq!(i.tables.len(), 1);
    let t = &i.tables[0];
    assert_eq!(t.format, TextFormat::PoolusedSummary);
    let amda = row(t, "amda", PoolClass::NonPaged);
    assert_eq!((amda.diff, amda.bytes), (5_768_754, 1_938_325_232));
    let amda_p = row(t, "amda", PoolClass::Paged);
    assert_eq!((amda_p.diff, amda_p.bytes), (32, 9360));
    assert_eq!(amda.driver, None, "UNKNOWN pooltag");
    assert_eq!(
        row(t, "IoWI", PoolClass::NonPaged).driver.as_deref(),
        Some("nt!io")
    );
    assert_eq!(
        row(t, "HalD", PoolClass::NonPaged).driver.as_deref(),
        Some("hal.dll")
    );
    // 8 tags; IoWI and HalD have no paged row (0 0).
    assert_eq!(t.rows.len(), 8 + 4);
    // The same text saved by PowerShell (UTF-16 with a BOM).
    let mut u16 = vec![0xFF, 0xFE];
    u16.extend(
        String::from_utf8_lossy(&bytes)
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    assert_eq!(parse_text(&u16, "utf16").unwrap().tables, i.tables);
}

#[test]
fn real_poolused_1_verbose_with_total_and_kd_preamble() {
    let Some(p) = realworld("poolused1-verbose-snippets.txt") else {
        return;
    };
    let i = parse_text(&std::fs::read(&p).unwrap(), "poolused1").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    assert_eq!(i.tables.len(), 2, "two excerpts, two tables");
    let a = &i.tables[0];
    assert_eq!(a.format, TextFormat::PoolusedVerbose);
    let appt = row(a, "APpt", PoolClass::Paged);
    assert_eq!(
        (appt.allocs, appt.frees, appt.diff, appt.bytes),
        (109_457, 107_115, 2342, 255_952)
    );
    assert_eq!(
        row(a, "ALPC", PoolClass::NonPaged).driver.as_deref(),
        Some("nt!alpc")
    );
    assert_eq!(row(a, "-UMD", PoolClass::NonPaged).bytes, 48);
    let b = &i.tables[1];
    assert_eq!(b.rows.len(), 1);
    let (np, pg) = b.total.unwrap();
    assert_eq!((np.allocs, np.bytes, pg.bytes), (1, 112, 0));
}

#[test]
fn real_poolmon_screens_display_and_log() {
    let Some(p) = realworld("poolmon-docs-examples.txt") else {
        return;
    };
    let i = parse_text(&std::fs::read(&p).unwrap(), "poolmon").unwrap();
    let formats: Vec<TextFormat> = i.tables.iter().map(|t| t.format).collect();
    use TextFormat::{PoolmonDisplay as D, PoolmonLog as L};
    assert_eq!(formats, [D, D, D, D, D, D, L]);
    // The file's `##` headings are not PoolMon's: reported by number.
    let lines: Vec<usize> = i.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [2, 17, 37, 44, 59, 72, 73, 74]);
    assert!(i.problems.iter().all(|p| p.text.starts_with("##")));
    let io = row(&i.tables[0], "Io  ", PoolClass::NonPaged);
    assert_eq!(
        (io.allocs, io.frees, io.diff, io.bytes),
        (1_021_112, 1_020_985, 127, 91_912)
    );
    assert_eq!(
        row(&i.tables[1], "NtFB", PoolClass::Paged)
            .driver
            .as_deref(),
        Some("ntfs.sys")
    );
    assert_eq!(row(&i.tables[2], "1MEM", PoolClass::NonPaged).driver, None);
    assert_eq!(
        row(&i.tables[3], "IpEQ", PoolClass::NonPaged)
            .driver
            .as_deref(),
        Some("ipsec.sys")
    );
    assert_eq!(
        row(&i.tables[3], "IpIO", PoolClass::NonPaged)
            .driver
            .as_deref(),
        Some("ipsec")
    );
    // Before and after a print job: 6 blocks, 4992 bytes leaked.
    let before = row(&i.tables[4], "Drsd", PoolClass::Paged);
    let after = row(&i.tables[5], "Drsd", PoolClass::Paged);
    assert_eq!(after.bytes - before.bytes, 4992);
    assert_eq!(after.diff - before.diff, 6);
    let thre = row(&i.tables[6], "Thre", PoolClass::NonPaged);
    assert_eq!((thre.diff, thre.bytes), (3749, 13_179_648));
    assert_eq!(thre.driver.as_deref(), Some("nt!ps"));
}
