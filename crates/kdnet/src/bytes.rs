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

/// A fixed-size little-endian field of a DbgKd message header: what
/// `kd_layout!` (api/layout.rs) reads and writes, one field after another.
pub(crate) trait Field: Sized {
    const SIZE: usize;
    /// The field at `off`, or `None` if it runs past the end.
    fn read(b: Le<'_>, off: usize) -> Option<Self>;
    /// Append the field's bytes.
    fn write(&self, out: &mut Vec<u8>);
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            const SIZE: usize = size_of::<$t>();
            fn read(b: Le<'_>, off: usize) -> Option<Self> {
                b.array(off).map(<$t>::from_le_bytes)
            }
            fn write(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64);

/// Raw bytes kept as they are (unions, padding).
impl<const N: usize> Field for [u8; N] {
    const SIZE: usize = N;
    fn read(b: Le<'_>, off: usize) -> Option<Self> {
        b.array(off)
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

/// Reads fields in wire order from the start of `bytes`.
pub(crate) struct Fields<'a> {
    bytes: Le<'a>,
    at: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes: Le(bytes),
            at: 0,
        }
    }

    /// The next field, or `None` if the bytes end first.
    pub(crate) fn next<T: Field>(&mut self) -> Option<T> {
        let v = T::read(self.bytes, self.at)?;
        self.at += T::SIZE;
        Some(v)
    }

    /// Everything after the fields read so far.
    pub(crate) fn rest(&self) -> Option<&'a [u8]> {
        self.bytes.0.get(self.at..)
    }
}
