use super::*;

#[test]
fn session_time_and_uptime() {
    // 2024-11-14 10:12:31 at UTC+8 is 02:12:31 UTC.
    let t = parse_session_time("Thu Nov 14 10:12:31.123 2024 (UTC + 8:00)").unwrap();
    assert_eq!(FileTime(t).rfc3339().unwrap(), "2024-11-14T02:12:31Z");
    assert_eq!(parse_uptime("0 days 1:00:00.500"), Some(36_005_000_000));
    let g = parse_time_arg("2024-11-14T02:12:31Z").unwrap();
    assert_eq!(g, t);
    assert_eq!(parse_time_arg("2024-11-14 02:12:31"), Some(t));
}

#[test]
fn legacy_glued_descriptions_are_cut_at_the_header_column() {
    let text = "\
0: kd> !poolused
   Sorting by  Tag

  Pool Used:
        NonPaged            Paged
 Tag    Allocs     Used    Allocs     Used
 1394        1      520         0        0UNKNOWN pooltag '1394', please update pooltag.txt
 8042        4     3944         0        0PS/2 kb and mouse , Binary: i8042prt.sys
 AGP         1      344         2      384UNKNOWN pooltag 'AGP ', please update pooltag.txt
 Tst1        1      344         2      3841394 bus driver , Binary: t.sys
";
    let i = parse_text(text.as_bytes(), "legacy.txt").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    let t = &i.tables[0];
    assert_eq!(t.format, TextFormat::PoolusedLegacy);
    let row = |tag: &str, pool| {
        t.rows
            .iter()
            .find(|r| r.tag_text == tag && r.pool == pool)
            .unwrap()
    };
    assert_eq!(row("8042", PoolClass::NonPaged).bytes, 3944);
    assert_eq!(
        row("8042", PoolClass::NonPaged).driver.as_deref(),
        Some("i8042prt.sys")
    );
    assert_eq!(row("AGP ", PoolClass::Paged).bytes, 384);
    // A description starting with digits, glued on.
    assert_eq!(row("Tst1", PoolClass::Paged).bytes, 384);
    assert_eq!(row("Tst1", PoolClass::Paged).diff, 2);
}

#[test]
fn a_file_of_no_known_format_names_the_formats_tried() {
    let e = parse_text(b"hello\nworld\n", "notes.txt").unwrap_err();
    let m = e.to_string();
    assert!(m.starts_with("notes.txt: not a PoolMon display"), "{m}");
    for f in FORMATS_TRIED {
        assert!(m.contains(f), "{m}");
    }
}

#[test]
fn hostile_rows_are_reported_not_panicked_on() {
    let text = "
 Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc
 Ab\u{c4}d Nonp 1 ( 0) 1 ( 0) 0 0 ( 0) 0
 Abcd Nonp 99999999999999999999999 ( 0) 1 ( 0) 0 0 ( 0) 0
 Abcd Nonp 1 ( 0
 Abcd Huge 1 2 3 4 5
 Ab
 Abcd Nonp 5 ( 0) 4 ( 0) 1 64 ( 0) 64
 Abcd Nonp 5 ( 0) 4 ( 0) 1 64 ( 0) 64
 Tag     Allocs         Used     Allocs         Used
 TOTAL
 Wxyz 1 2 3
 Wxyz 1 2 3 4x
";
    let i = parse_text(text.as_bytes(), "hostile").unwrap();
    let lines: Vec<usize> = i.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 9, 11, 12], "{:?}", i.problems);
    assert_eq!(i.tables[0].rows.len(), 1);
    assert_eq!(
        i.tables[1].rows[1].bytes, 4,
        "the paged Used before a glued `x`"
    );
}
