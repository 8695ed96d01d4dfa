use super::*;

/// The first table of `text`, which must read without a problem, and its
/// rows' tags.
fn read_clean(text: &str, name: &str) -> (TextTable, Vec<String>) {
    let i = parse_text(text.as_bytes(), name).unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    let t = i.tables[0].clone();
    let tags = t.rows.iter().map(|r| r.tag_text.clone()).collect();
    (t, tags)
}

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

#[test]
fn a_legacy_total_row_wider_than_its_columns_is_read_whole() {
    // The TOTAL row's sums overrun the header's columns and nothing
    // follows them: no description is glued on, so nothing is cut off.
    let text = "\
  Pool Used:
            NonPaged            Paged
 Tag    Allocs     Used    Allocs     Used
 Qrs1        2      640         0        0Made-up driver , Binary: qrs.sys
 Qrs2        0        0         3        02048 bytes glued on
 TOTAL     7654321 987654321     45678 24681357
";
    let i = parse_text(text.as_bytes(), "legacy-total.txt").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    let t = &i.tables[0];
    let (np, pg) = t.total.unwrap();
    assert_eq!((np.diff, np.bytes), (7_654_321, 987_654_321));
    assert_eq!((pg.diff, pg.bytes), (45_678, 24_681_357));
    // A glued description that starts with digits is still cut off.
    let q2 = t.rows.iter().find(|r| r.tag_text == "Qrs2").unwrap();
    assert_eq!((q2.diff, q2.bytes), (3, 0));
}

#[test]
fn collapsed_poolmon_rows_with_short_tags_are_read() {
    // A published copy whose runs of spaces became one: a tag shorter than
    // four characters is followed by one space, then the Type word.
    let text = "\
Tag Type Allocs Frees Diff Bytes Per Alloc
Qq Nonp 500 ( 2) 480 ( 1) 20 2560 ( 128) 128
Z Paged 9 ( 0) 3 ( 0) 6 600 ( 0) 100
Wxyz Nonp 7 ( 0) 7 ( 0) 0 0 ( 0) 0
";
    let (t, tags) = read_clean(text, "collapsed.txt");
    assert_eq!(t.format, TextFormat::PoolmonDisplay);
    assert_eq!(tags, ["Qq  ", "Z   ", "Wxyz"]);
    let qq = &t.rows[0];
    assert_eq!(
        (qq.pool, qq.allocs, qq.frees, qq.diff, qq.bytes),
        (PoolClass::NonPaged, 500, 480, 20, 2560)
    );
    assert_eq!(t.rows[1].pool, PoolClass::Paged);
}

#[test]
fn poolmon_total_lines_are_totals_not_rows() {
    // PoolMon's `e` key adds `Total  Nonp` / `Total Paged` lines, printed
    // from column 0 with the rows' columns.
    let screen = |paged_bytes: u64| {
        format!(
            " Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc

 Mno1 Nonp        40 (   0)        30 (   0)       10    1280 (     0)    128
 Mno2 Paged       12 (   3)         2 (   0)       10     640 (    64)     64

Total  Nonp        40 (   0)        30 (   0)       10    1280 (     0)    128
Total Paged        12 (   3)         2 (   0)       10 {paged_bytes:7} (    64)     64
"
        )
    };
    let i = parse_text(screen(640).as_bytes(), "totals.txt").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    let t = &i.tables[0];
    assert_eq!(t.rows.len(), 2, "{:?}", t.rows);
    let (np, pg) = t.total.unwrap();
    assert_eq!((np.allocs, np.frees, np.diff, np.bytes), (40, 30, 10, 1280));
    assert_eq!((pg.allocs, pg.bytes), (12, 640));
    let total_warnings = |text: String| {
        let i = parse_text(text.as_bytes(), "totals.txt").unwrap();
        let s = to_snapshot(&i, None, Path::new("totals.txt"), TextTime::Unknown);
        assert_eq!(s.totals.paged.bytes, 640);
        s.warnings
            .into_iter()
            .filter(|w| w.message.contains("PoolMon's Total lines say"))
            .count()
    };
    assert_eq!(total_warnings(screen(640)), 0);
    // Rows that do not add up to the totals (the window cut the list
    // short) are said to be incomplete.
    assert_eq!(total_warnings(screen(99_999)), 1);
}

#[test]
fn poolmon_mapped_driver_descriptions_are_not_drivers() {
    let text = "\
Tag  Type     Allocs            Frees            Diff   Bytes      Per Alloc  Mapped_Driver

Rst1 Paged        10 (   0)         5 (   0)        5     320 (     0)     64 [Made up widget cache]
Rst2 Paged        10 (   0)         5 (   0)        5     320 (     0)     64 [rstdrv]
Rst3 Nonp         10 (   0)         5 (   0)        5     320 (     0)     64 [rst.sys - Widget lists]
";
    let i = parse_text(text.as_bytes(), "mapped.txt").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    let drivers: Vec<Option<&str>> = i.tables[0]
        .rows
        .iter()
        .map(|r| r.driver.as_deref())
        .collect();
    assert_eq!(drivers, [None, Some("rstdrv"), Some("rst.sys")]);
}

#[test]
fn the_kd_cache_report_before_a_table_is_understood() {
    let text = "\
1: kd> !poolused 2
Using a machine size of 3e8f1 pages to configure the kd cache

*** CacheSize too low - increasing to 64 MB

Max cache size is       : 67108864 bytes (0x10000 KB) 
Total memory in cache   : 4321 bytes (0x5 KB) 
Number of regions cached: 17
99 full reads broken into 120 partial reads
    counts: 80 cached/40 uncached, 66.67% cached
    bytes : 5000 cached/2500 uncached, 66.67% cached
** Transition PTEs are implicitly decoded
** Prototype PTEs are implicitly decoded
..
 Sorting by NonPaged Pool Consumed

               NonPaged                  Paged
 Tag     Allocs         Used     Allocs         Used

 Uvw1        12        49152          0            0\tMade-up buffers , Binary: uvw.sys
";
    let i = parse_text(text.as_bytes(), "kdcache.txt").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    assert_eq!(i.tables[0].rows[0].bytes, 49152);
}

#[test]
fn snapshots_appended_under_one_header_are_tables_of_their_own() {
    // PoolSnap appends each run to its log: the header once, then a blank
    // line and the rows of each run.
    let text = "\
\x20Tag  Type     Allocs     Frees      Diff   Bytes  Per Alloc

 Hij1 Nonp         50        10        40    5120        128
 Hij2 Paged         8         8         0       0          0

 Hij1 Nonp         90        10        80   10240        128
 Hij2 Paged        12         9         3     192         64
";
    let i = parse_text(text.as_bytes(), "poolsnap.log").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    assert_eq!(i.tables.len(), 2);
    assert_eq!(i.tables[1].header_line, 6);
    let hij1 = |t: &TextTable| t.rows.iter().find(|r| r.tag_text == "Hij1").unwrap().bytes;
    assert_eq!((hij1(&i.tables[0]), hij1(&i.tables[1])), (5120, 10240));
    // One log copied with a blank line after every row stays one table.
    let spaced = text.lines().take(5).collect::<Vec<_>>().join("\n\n");
    let i = parse_text(spaced.as_bytes(), "spaced.log").unwrap();
    assert_eq!(i.tables.len(), 1);
    assert_eq!(i.tables[0].rows.len(), 2);
}

#[test]
fn rows_that_do_not_line_up_with_tag_are_read_by_their_words() {
    // A screen pasted with its header indented one column more than some
    // rows: the four characters under `Tag` would cut `Kqrs` to `qrs `.
    let text = "
    Memory: 8000K Avail: 2000K PageFlts: 3 InRam Krnl: 500K P: 600K

     Tag  Type    Allocs          Frees         Diff   Bytes      Per Alloc

     Ab   Paged     400 (   0)     300 (   0)    100   25600 (     0)  256
    Kqrs  Paged    2200 (   4)    2000 (   2)    200   12800 (   128)   64
     Zz9  Nonp       10 (   0)       9 (   0)      1      48 (     0)   48
    Wv 1  Nonp        5 (   0)       1 (   0)      4     256 (     0)   64
";
    let (t, tags) = read_clean(text, "shifted.txt");
    assert_eq!(tags, ["Ab  ", "Kqrs", "Zz9 ", "Wv 1"]);
    assert_eq!(t.rows[1].bytes, 12800);
}

#[test]
fn a_header_under_a_markdown_heading_mark_is_a_header() {
    // Web pages render a pasted screen's header line as a heading: `## `
    // before `Tag` shifts the header, the rows stay at column 0.
    let text = "\
Memory: 9000K Avail: 3000K PageFlts: 7 InRam Krnl: 400K P: 300K

## Tag   Type  Allocs       Frees        Diff    Bytes       Per Alloc

Ab    Paged   1500  ( 0)  1400  ( 0)   100    51200   ( 0)   512
Kqrs  Paged    900 ( 12)   800  ( 6)   100     6400 ( 256)    64
";
    let (t, tags) = read_clean(text, "heading.md");
    assert_eq!(t.format, TextFormat::PoolmonDisplay);
    assert_eq!(tags, ["Ab  ", "Kqrs"]);
    assert_eq!((t.rows[0].diff, t.rows[0].bytes), (100, 51200));
    // Other words before `Tag` still make it prose, not a header.
    assert!(parse_text(b"see the Tag Type Allocs Frees Diff Bytes\n", "prose").is_err());
}

#[test]
fn a_rule_line_under_the_header_is_not_a_problem() {
    let text = "\
 Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc
 ---------------------------------------------------------------------------
 Mnop Nonp        30 (   0)        10 (   0)       20    2560 (     0)    128
 ===========================================================================
";
    let i = parse_text(text.as_bytes(), "ruled.txt").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    assert_eq!(i.tables[0].rows.len(), 1);
}

#[test]
fn a_refusal_names_the_line_that_looks_like_a_header() {
    // A copy that lost its line breaks: the header is inside one line.
    let text = "Notes\n0: kd> !poolused Sorting by Tag Pool Used: NonPaged Paged Tag Allocs Used Allocs Used Qrst 1 64 0 0\n";
    let m = parse_text(text.as_bytes(), "flat.txt")
        .unwrap_err()
        .to_string();
    assert!(
        m.starts_with("flat.txt: not a PoolMon display")
            && m.contains("(line 2 has a header's words but does not start with `Tag`")
            && m.contains("were the line breaks lost?"),
        "{m}"
    );
    // A header whose columns are of no known layout (an OCR copy that
    // split it over two lines).
    let text = "              Used      Allocs     Paged     Used\nTag        Allocs\n  Qrst   10   640   0   0\n";
    let m = parse_text(text.as_bytes(), "ocr.txt")
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("(line 2 has a header's words but its columns are neither PoolMon's"),
        "{m}"
    );
}

#[test]
fn collapsed_legacy_rows_keep_every_glued_digit() {
    // Spaces collapsed: the columns no longer line up, so the last number
    // is not cut where its header word ends (here inside `123456789`).
    let text = "\
Pool Used:
NonPaged Paged
Tag Allocs Used Allocs Used
Qrst 1234 123456789 12 123456789Glued description , Binary: q.sys
Uvw 1 64 0 0UNKNOWN pooltag 'Uvw ', please update pooltag.txt
";
    let i = parse_text(text.as_bytes(), "collapsed-legacy.txt").unwrap();
    assert!(i.problems.is_empty(), "{:?}", i.problems);
    let t = &i.tables[0];
    assert_eq!(t.format, TextFormat::PoolusedLegacy);
    let paged = t
        .rows
        .iter()
        .find(|r| r.tag_text == "Qrst" && r.pool == PoolClass::Paged)
        .unwrap();
    assert_eq!((paged.diff, paged.bytes), (12, 123_456_789));
    assert_eq!(
        t.rows.iter().find(|r| r.tag_text == "Uvw ").unwrap().bytes,
        64
    );
}

#[test]
fn an_empty_poolmon_screen_is_not_called_a_log() {
    // PoolMon /s on a machine with no session pool: the header, no rows.
    let text = " Memory:  100000K Avail:   50000K  PageFlts:    12   InRam Krnl: 1000K P: 2000K
 All sessions pool information
 Tag  Type     Allocs            Frees            Diff   Bytes       Per Alloc
";
    let m = parse_text(text.as_bytes(), "empty.txt")
        .unwrap_err()
        .to_string();
    assert_eq!(
        m,
        "empty.txt: the PoolMon (display or /n log) table at line 3 has no rows it could read"
    );
}
