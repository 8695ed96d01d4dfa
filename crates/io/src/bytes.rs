//! Checked little-endian reads over untrusted bytes.
//!
//! Dump headers, KDBG blocks and PE headers come from files and memory an
//! attacker (or a bit flip) controls. Every field is decoded through these
//! accessors, which return `None` instead of panicking when an offset or a
//! length runs past the end; nothing is transmuted.

/// A borrowed byte range with checked little-endian accessors.
#[derive(Clone, Copy)]
pub struct Le<'a>(pub &'a [u8]);

impl<'a> Le<'a> {
    /// `n` bytes at `off`, or `None` if they are not all there.
    pub fn bytes(self, off: usize, n: usize) -> Option<&'a [u8]> {
        self.0.get(off..off.checked_add(n)?)
    }

    /// `N` bytes at `off` as an array, or `None` if they are not all there.
    pub fn array<const N: usize>(self, off: usize) -> Option<[u8; N]> {
        self.bytes(off, N)?.try_into().ok()
    }

    /// A byte at `off`, or `None` if it runs past the end.
    pub fn u8(self, off: usize) -> Option<u8> {
        self.0.get(off).copied()
    }

    /// A little-endian `u16` at `off`, or `None` if it runs past the end.
    pub fn u16(self, off: usize) -> Option<u16> {
        self.array(off).map(u16::from_le_bytes)
    }

    /// A little-endian `u32` at `off`, or `None` if it runs past the end.
    pub fn u32(self, off: usize) -> Option<u32> {
        self.array(off).map(u32::from_le_bytes)
    }

    /// A little-endian `u64` at `off`, or `None` if it runs past the end.
    pub fn u64(self, off: usize) -> Option<u64> {
        self.array(off).map(u64::from_le_bytes)
    }

    /// The bytes as little-endian UTF-16 code units (WCHARs), as Windows
    /// stores strings; an odd last byte is dropped.
    pub fn utf16_units(self) -> impl Iterator<Item = u16> + 'a {
        self.0
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    }
}

/// Render bytes for a message: printable ASCII as is, anything else as
/// `\xNN`, so hostile bytes cannot put control characters on a terminal.
pub fn escape_ascii(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7F).contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_checked() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let v = Le(&b);
        assert_eq!(v.u16(0), Some(0x0201));
        assert_eq!(v.u32(5), Some(0x0908_0706));
        assert_eq!(v.u32(6), None);
        assert_eq!(v.u64(usize::MAX - 2), None);
        assert_eq!(v.bytes(9, 0), Some(&[][..]));
        assert_eq!(v.bytes(10, 0), None);
    }

    #[test]
    fn utf16_units_are_little_endian_and_drop_an_odd_byte() {
        let units: Vec<u16> = Le(b"L\0e\0\xac\x20k").utf16_units().collect();
        assert_eq!(units, [u16::from(b'L'), u16::from(b'e'), 0x20ac]);
        assert_eq!(String::from_utf16_lossy(&units), "Le\u{20ac}");
    }

    #[test]
    fn escapes_control_bytes() {
        assert_eq!(escape_ascii(b"PAGE\x1b[2J\xff"), "PAGE\\x1b[2J\\xff");
    }
}
