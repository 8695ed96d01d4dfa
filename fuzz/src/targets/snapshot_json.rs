//! A snapshot file (pooldump.snapshot/2 JSON) and what diff and trend do
//! with it (crates/core/src/snapshot.rs).
use pooldump_core::snapshot::{Snapshot, TrendOptions, diff, trend};

pub fn run(data: &[u8]) {
    let Ok(s) = Snapshot::from_json(data, "fuzz.json") else {
        return;
    };
    let _ = s.label();
    let _ = s.boot_time();
    let _ = s.same_boot(&s);
    let back = s.to_json();
    let again = Snapshot::from_json(back.as_bytes(), "round trip");
    assert!(
        again.is_ok(),
        "a snapshot pooldump wrote must read back: {again:?}"
    );
    let d = diff(&s, &s);
    let _ = d.is_empty();
    let _ = trend(&[s.clone(), s.clone(), s], &TrendOptions::default());
}
