//! A compressed symbol-store file (`ntkrnlmp.pd_`, a CAB with MSZIP or
//! LZX) read as crates/symbols/src/store/cab.rs expands it: the cabinet's
//! folders and file entries (after `check_cabinet`, as the store checks
//! them), then the file's data, capped.
use std::io::Read;

/// What the fuzzer lets one expansion produce (the store's cap is 1 GiB;
/// the decoder's memory does not depend on it).
const CAP: u64 = 16 << 20;

pub fn run(data: &[u8]) {
    let mut reader = std::io::Cursor::new(data);
    if pooldump_core::symbols::store::check_cabinet(&mut reader).is_err() {
        return;
    }
    let Ok(mut cab) = cab::Cabinet::new(reader) else {
        return;
    };
    let names: Vec<(String, u32)> = cab
        .folder_entries()
        .flat_map(|f| f.file_entries())
        .map(|e| (e.name().to_string(), e.uncompressed_size()))
        .take(8)
        .collect();
    for (name, size) in names {
        if let Ok(r) = cab.read_file(&name) {
            // As the store reads it: one byte past the stated size.
            let limit = (u64::from(size) + 1).min(CAP);
            let _ = std::io::copy(&mut r.take(limit), &mut std::io::sink());
        }
    }
}
