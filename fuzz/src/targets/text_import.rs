//! PoolMon and `!poolused` text as snapshots (`snapshot --from-text`,
//! crates/core/src/snapshot_text.rs).
use pooldump_core::snapshot_text::parse_text;

pub fn run(data: &[u8]) {
    if let Ok(import) = parse_text(data, "fuzz.txt") {
        let _ = format!("{import:?}");
    }
}
