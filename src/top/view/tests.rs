use std::time::Duration;

use super::*;
use crate::args::ReadArgs;
use crate::snapshot::LiveArgs;
use pooldump_core::PoolTag;
use pooldump_core::snapshot::{
    KernelInfo, SCHEMA, SnapshotRow, SnapshotTotals, SourceInfo, SourceKind, TimeInfo,
};

fn snap(rows: &[(&str, PoolClass, u64, u64, u64)]) -> Snapshot {
    Snapshot {
        schema: SCHEMA.into(),
        source: SourceInfo {
            kind: SourceKind::Dump,
            name: "t".into(),
        },
        kernel: KernelInfo {
            build: 19041,
            kern_base: pooldump_core::KernelVa(0xFFFF_F800_0000_0000),
            pdb: None,
            processors: 1,
            physical_pages: Some(1024),
        },
        time: TimeInfo::default(),
        totals: SnapshotTotals::default(),
        rows: (rows.iter())
            .map(|&(t, pool, a, f, b)| SnapshotRow::new(PoolTag::parse(t).unwrap(), pool, a, f, b))
            .collect(),
        warnings: vec![],
        diff_only: false,
    }
}

fn view(cur: Snapshot, prev: Option<Snapshot>) -> View {
    let args = Args {
        source: None,
        live: LiveArgs { kdnet: None },
        read: ReadArgs {
            symbols: crate::common::SymbolArgs {
                symbol_path: None,
                pdb: None,
                isf: vec![],
                offline: true,
                no_builtin: false,
                no_cache: true,
            },
            pooltag: None,
            no_image_search: true,
        },
        filter: FilterArgs {
            pool: PoolChoice::Both,
            include: vec![],
            exclude: vec![],
        },
        since: None,
        sort: TopSort::Tag,
        totals: false,
        interval: Duration::from_secs(5),
        once: true,
    };
    View::new(cur, prev, &args, "t".into(), false)
}

fn press(v: &mut View, c: char) {
    v.key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
}

fn tags(v: &View) -> Vec<String> {
    v.rows()
        .iter()
        .map(|r| r.tag.trim_end().to_string())
        .collect()
}

#[test]
fn poolmon_keys_sort_filter_and_quit() {
    const NP: PoolClass = PoolClass::NonPaged;
    const P: PoolClass = PoolClass::Paged;
    let before = snap(&[("Aaaa", NP, 10, 5, 500), ("Bbbb", P, 100, 1, 99)]);
    let after = snap(&[
        ("Aaaa", NP, 12, 5, 700),
        ("Bbbb", P, 100, 1, 99),
        ("Cccc", NP, 1, 0, 5000),
    ]);
    let mut v = view(after, Some(before));
    assert_eq!(tags(&v), ["Aaaa", "Bbbb", "Cccc"]);
    press(&mut v, 'b');
    assert_eq!(tags(&v), ["Cccc", "Aaaa", "Bbbb"]);
    press(&mut v, 'b');
    assert_eq!(tags(&v), ["Bbbb", "Aaaa", "Cccc"]);
    press(&mut v, 'a');
    assert_eq!(tags(&v), ["Bbbb", "Aaaa", "Cccc"]);
    press(&mut v, '(');
    assert_eq!(tags(&v), ["Aaaa", "Cccc", "Bbbb"]);
    press(&mut v, 'p');
    assert_eq!(tags(&v), ["Aaaa", "Cccc"]);
    press(&mut v, 'p');
    assert_eq!(tags(&v), ["Bbbb"]);
    press(&mut v, 'p');
    assert_eq!(tags(&v).len(), 3);
    let text = v.text(120);
    // PoolMon's change columns: Aaaa gained 2 allocs and 200 bytes.
    let a = text.lines().find(|l| l.contains("Aaaa")).unwrap();
    let mut squeezed = a.split_whitespace().collect::<Vec<_>>().join(" ");
    while squeezed.contains("( ") {
        squeezed = squeezed.replace("( ", "(");
    }
    assert!(squeezed.contains("12 (+2) 5 (0) 7 700 (+200) 100"), "{a}");
    assert!(text.contains("Mapped_Driver") && text.contains("Memory: 4096K"));
    assert_eq!(
        v.key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE)),
        Flow::Quit
    );
}

#[test]
fn totals_toggle_and_scrolling_stay_in_bounds() {
    let rows: Vec<(String, PoolClass, u64, u64, u64)> = (0..200)
        .map(|i| (format!("T{i:03}"), PoolClass::Paged, 10, 1, i))
        .collect();
    let r: Vec<(&str, PoolClass, u64, u64, u64)> = rows
        .iter()
        .map(|(t, p, a, f, b)| (t.as_str(), *p, *a, *f, *b))
        .collect();
    let mut v = view(snap(&r), None);
    for _ in 0..500 {
        v.key(KeyEvent::new(KeyCode::PageDown, KeyModifiers::NONE));
    }
    let screen = render_text(&mut v, 100, 30);
    assert!(screen.contains("T199"), "{screen}");
    press(&mut v, 'e');
    let screen = render_text(&mut v, 100, 30);
    assert!(screen.contains("TOTAL"));
    v.key(KeyEvent::new(KeyCode::Home, KeyModifiers::NONE));
    let screen = render_text(&mut v, 100, 30);
    assert!(screen.contains("T000") && !screen.contains("T199"));
}
