//! Checked little-endian reads (core's [`Le`]) and writes over packet
//! bytes: every field of a hostile packet is decoded through these, which
//! return `None` rather than panic when an offset runs past the end.

pub(crate) use pooldump_core::bytes::Le;

/// Little-endian writes into a fixed-size field area; writes past the end
/// are a bug in this crate's layouts and are ignored in release builds.
pub(crate) fn put(buf: &mut [u8], off: usize, v: &[u8]) {
    debug_assert!(
        off + v.len() <= buf.len(),
        "field at {off:#x} past {:#x}",
        buf.len()
    );
    if let Some(dst) = buf.get_mut(off..off + v.len()) {
        dst.copy_from_slice(v);
    }
}
