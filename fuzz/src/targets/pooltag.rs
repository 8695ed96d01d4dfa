//! pooltag.txt (any encoding the decoder accepts) and the lookups the
//! Mapped_Driver column makes (crates/core/src/pool/pooltag.rs).
use pooldump_core::PoolTag;
use pooldump_core::pool::pooltag::{PoolTagDb, decode_text};

pub fn run(data: &[u8]) {
    let text = decode_text(data);
    let db = PoolTagDb::parse(&text);
    let _ = db.len();
    for tag in [*b"Leak", *b"Ntf0", *b"    ", [0, 0, 0, 0], *b"MmSt"] {
        let t = PoolTag::from_bytes(tag);
        let _ = db.lookup(t);
        let _ = db.matches(t);
    }
    if data.len() >= 4 {
        let t = PoolTag::from_bytes([data[0], data[1], data[2], data[3]]);
        let _ = db.lookup(t);
    }
}
