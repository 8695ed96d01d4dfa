//! PoolMon and `!poolused` text as snapshots (`snapshot --from-text`,
//! crates/core/src/snapshot_text.rs).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pooldump_core::snapshot_text::parse_text;

fuzz_target!(|data: &[u8]| {
    if let Ok(import) = parse_text(data, "fuzz.txt") {
        let _ = format!("{import:?}");
    }
});
