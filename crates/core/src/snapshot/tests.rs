use super::*;
use trend::fit;

fn snap(name: &str, uptime_h: f64, rows: &[(&str, PoolClass, u64, u64, u64)]) -> Snapshot {
    let up = (uptime_h * TICKS_PER_HOUR) as u64;
    let boot = 133_000_000_000_000_000u64;
    Snapshot {
        schema: SCHEMA.into(),
        source: SourceInfo {
            kind: SourceKind::Dump,
            name: name.into(),
        },
        kernel: KernelInfo {
            build: 19041,
            kern_base: KernelVa(0xFFFF_F800_1000_0000),
            pdb: Some("ntkrnlmp.pdb X1".into()),
            processors: 2,
            physical_pages: None,
        },
        time: TimeInfo {
            system_time_filetime: Some(boot + up),
            system_time: FileTime(boot + up).rfc3339(),
            uptime_100ns: Some(up),
            uptime: Some(UpTime(up).to_string()),
            clock_source: Some(ClockSource::DumpHeader),
            taken_unix: None,
        },
        totals: SnapshotTotals::default(),
        rows: rows
            .iter()
            .map(|&(t, pool, a, f, b)| SnapshotRow::new(PoolTag::parse(t).unwrap(), pool, a, f, b))
            .collect(),
        warnings: vec![],
        diff_only: false,
    }
}

const NP: PoolClass = PoolClass::NonPaged;
const P: PoolClass = PoolClass::Paged;

#[test]
fn json_round_trips_and_checks_its_schema() {
    let s = snap("a", 1.0, &[("Leak", NP, 10, 2, 800), ("CM", P, 5, 5, 0)]);
    let back = Snapshot::from_json(s.to_json().as_bytes(), "a.json").unwrap();
    assert_eq!(back, s);
    let v3 = s.to_json().replace(SCHEMA, "pooldump.snapshot/3");
    assert!(matches!(
        Snapshot::from_json(v3.as_bytes(), "b"),
        Err(SnapshotError::Schema { .. })
    ));
    // Version 1 wrote warnings as strings: still read, with kind `other`.
    let mut with_warning = s.clone();
    with_warning.warnings = vec![Warning::new(WarningKind::Tracker, "a page is missing")];
    let mut v1: serde_json::Value = serde_json::from_str(&with_warning.to_json()).unwrap();
    v1["schema"] = "pooldump.snapshot/1".into();
    v1["warnings"] = serde_json::json!(["a page is missing"]);
    let v1 = v1.to_string();
    let back = Snapshot::from_json(v1.as_bytes(), "v1").unwrap();
    assert_eq!(
        back.warnings,
        vec![Warning::new(WarningKind::Other, "a page is missing")]
    );
    let mut dup = s.clone();
    dup.rows.push(dup.rows[0].clone());
    assert!(matches!(
        Snapshot::from_json(dup.to_json().as_bytes(), "c"),
        Err(SnapshotError::Duplicate { .. })
    ));
    assert!(Snapshot::from_json(b"[1,2]", "d").is_err());
    assert!(Snapshot::from_json(b"{\"schema\":\"pooldump.snapshot/1\"}", "e").is_err());
}

#[test]
fn diff_reports_only_moved_rows() {
    let a = snap("a", 1.0, &[("Leak", NP, 10, 2, 800), ("CM", P, 5, 5, 0)]);
    assert!(diff(&a, &a).is_empty());
    let b = snap(
        "b",
        1.5,
        &[
            ("Leak", NP, 20, 3, 1700),
            ("CM", P, 5, 5, 0),
            ("New", NP, 1, 0, 64),
        ],
    );
    let d = diff(&a, &b);
    assert_eq!(d.elapsed_secs, Some(1800.0));
    assert_eq!(d.same_boot, Some(true));
    let mut rows = d.rows.clone();
    sort_rows(&mut rows, crate::pool::PoolMonColumn::Bytes);
    let tags: Vec<&str> = rows.iter().map(|r| r.tag.as_str()).collect();
    assert_eq!(tags, ["Leak", "New "]);
    assert_eq!(rows[0].bytes, Change::new(800, 1700));
    assert_eq!(rows[0].diff.delta, 9);
    assert_eq!(rows[1].status, RowStatus::New);
    // Backwards: the leak is the biggest drop.
    let back = diff(&b, &a);
    assert!(back.rows.iter().any(|r| r.status == RowStatus::Gone));
}

#[test]
fn a_reboot_is_flagged() {
    let a = snap("a", 5.0, &[("Leak", NP, 10, 2, 800)]);
    let mut b = snap("b", 0.5, &[("Leak", NP, 3, 0, 300)]);
    b.kernel.kern_base = KernelVa(0xFFFF_F800_2000_0000);
    let d = diff(&a, &b);
    assert_eq!(d.same_boot, Some(false));
    assert!(
        d.warnings
            .iter()
            .any(|w| w.message.contains("different boots"))
    );
}

#[test]
fn steady_growth_outranks_a_bigger_burst_and_noise() {
    let noise = [7u64, 1, 9, 3, 8, 2, 6, 4];
    let snaps: Vec<Snapshot> = (0..8)
        .map(|i| {
            let leak = 1000 + 300 * i;
            let burst = if i >= 4 { 90_000 } else { 1000 };
            let n = 5000 + 1000 * noise[i as usize];
            snap(
                &format!("s{i}"),
                1.0 + 0.5 * i as f64,
                &[
                    ("Leak", NP, 10 + i, 0, leak),
                    ("Brst", NP, 10 + i, 0, burst),
                    ("Nois", P, 100 + i, 50, n),
                    ("Flat", P, 3, 1, 100),
                    ("Down", P, 50, 10 + i, 4000 - 100 * i),
                ],
            )
        })
        .collect();
    // Out of order on purpose: the trend sorts by time.
    let mut shuffled = snaps.clone();
    shuffled.swap(0, 5);
    let t = trend(&shuffled, &TrendOptions::default());
    assert_eq!(t.axis, TimeAxis::Uptime);
    let by = |tag: &str| t.tags.iter().find(|x| x.tag == tag).unwrap();
    assert_eq!(t.tags[0].tag, "Leak");
    assert_eq!(t.tags[0].rank, 1);
    assert_eq!(by("Leak").verdict, Verdict::SteadyGrowth);
    assert!((by("Leak").bytes_per_hour - 600.0).abs() < 1e-6);
    assert!((by("Leak").r2 - 1.0).abs() < 1e-9);
    assert_eq!(by("Leak").grew, 7);
    assert_eq!(by("Brst").verdict, Verdict::UnsteadyGrowth);
    assert_eq!(by("Brst").grew, 1);
    assert!(by("Brst").bytes_growth > by("Leak").bytes_growth);
    assert_ne!(by("Nois").verdict, Verdict::SteadyGrowth);
    assert_eq!(by("Flat").verdict, Verdict::Flat);
    assert_eq!(by("Down").verdict, Verdict::Shrinking);
    assert_eq!(t.tags.last().unwrap().verdict, Verdict::Shrinking);
    assert!(
        t.warnings
            .iter()
            .any(|w| w.message.contains("sorted by time"))
    );
    assert_eq!(t.points[0].source, "s0");
}

#[test]
fn degenerate_series_do_not_divide_by_zero() {
    let a = snap("a", 1.0, &[("Leak", NP, 10, 2, 800)]);
    let t = trend(&[a.clone(), a.clone()], &TrendOptions::default());
    assert!(
        t.tags
            .iter()
            .all(|x| x.bytes_per_hour == 0.0 && x.r2 == 0.0)
    );
    assert!(t.warnings.iter().any(|w| w.message.contains("same time")));
    let t = trend(&[], &TrendOptions::default());
    assert!(t.tags.is_empty());
    let t = trend(&[a], &TrendOptions::default());
    assert_eq!(t.tags[0].verdict, Verdict::Flat);
}

#[test]
fn least_squares() {
    let f = fit(&[0.0, 1.0, 2.0], &[1, 3, 5]);
    assert!((f.slope - 2.0).abs() < 1e-12 && (f.r2 - 1.0).abs() < 1e-12);
    let f = fit(&[0.0, 1.0, 2.0, 3.0], &[0, 10, 0, 10]);
    assert!(f.r2 < 0.3);
}
