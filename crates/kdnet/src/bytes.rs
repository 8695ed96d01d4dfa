//! Checked little-endian reads and writes over packet bytes: every field
//! of a hostile packet is decoded through these, which return `None`
//! rather than panic when an offset runs past the end.

#[derive(Clone, Copy)]
pub(crate) struct Le<'a>(pub &'a [u8]);

impl<'a> Le<'a> {
    pub fn bytes(self, off: usize, n: usize) -> Option<&'a [u8]> {
        self.0.get(off..off.checked_add(n)?)
    }
    pub fn array<const N: usize>(self, off: usize) -> Option<[u8; N]> {
        self.bytes(off, N)?.try_into().ok()
    }
    pub fn u8(self, off: usize) -> Option<u8> {
        self.0.get(off).copied()
    }
    pub fn u16(self, off: usize) -> Option<u16> {
        self.array(off).map(u16::from_le_bytes)
    }
    pub fn u32(self, off: usize) -> Option<u32> {
        self.array(off).map(u32::from_le_bytes)
    }
    pub fn u64(self, off: usize) -> Option<u64> {
        self.array(off).map(u64::from_le_bytes)
    }
}

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
