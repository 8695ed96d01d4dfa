//! Pool tags.
//!
//! A tag is four bytes stored little-endian in a ULONG: the text `Abc ` is
//! the value `0x20636241` (docs/pool-structures.md §8). Display prints the bytes in memory
//! order, as PoolMon and `!poolfind` do; non-printable bytes are escaped so a
//! hostile tag cannot write control characters to a terminal.

use std::fmt;

/// The PROTECTED_POOL bit: the top bit of the fourth tag byte. Win7 object
/// tags carry it in pool headers; tracker and big-table keys have it
/// stripped (docs/pool-structures.md §4).
pub const PROTECTED_POOL: u32 = 0x8000_0000;

/// A four-byte pool tag.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PoolTag(pub u32);

impl PoolTag {
    /// The tag whose memory bytes are `b`.
    pub const fn from_bytes(b: [u8; 4]) -> Self {
        Self(u32::from_le_bytes(b))
    }
    /// Bytes in memory order (the order they are displayed in).
    pub const fn bytes(self) -> [u8; 4] {
        self.0.to_le_bytes()
    }
    /// The tag's ULONG, as PoolTrackTable's Key holds it (`Leak` is 0x6b61654c).
    pub const fn value(self) -> u32 {
        self.0
    }
    /// The tag without the PROTECTED_POOL bit.
    pub const fn unprotected(self) -> Self {
        Self(self.0 & !PROTECTED_POOL)
    }
    /// The PROTECTED_POOL bit (0x80000000) is set.
    pub const fn is_protected(self) -> bool {
        self.0 & PROTECTED_POOL != 0
    }
    /// Parse a tag as a user types it: up to four characters, padded with
    /// spaces at the end as Windows pads short tags (`CM` is `CM  `), or a
    /// numeric value written `0x...` as `!poolfind` accepts it.
    pub fn parse(s: &str) -> Result<Self, ParseTagError> {
        if let Some(hex) = s.strip_prefix("0x") {
            return u32::from_str_radix(hex, 16)
                .map(PoolTag)
                .map_err(|_| ParseTagError::BadNumber(s.to_string()));
        }
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 4 || !s.is_ascii() {
            return Err(ParseTagError::BadLength(s.to_string()));
        }
        let mut out = [b' '; 4];
        out[..b.len()].copy_from_slice(b);
        Ok(Self::from_bytes(out))
    }
}

impl fmt::Display for PoolTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.bytes() {
            // A backslash is escaped too, or the bytes `\x41` would read
            // back (serde, `parse_display`) as `A`.
            if (0x20..0x7F).contains(&b) && b != b'\\' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for PoolTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PoolTag('{self}' = {:#010x})", self.0)
    }
}

impl std::str::FromStr for PoolTag {
    type Err = ParseTagError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for PoolTag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PoolTag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_display(&s).ok_or_else(|| serde::de::Error::custom(format!("bad pool tag {s:?}")))
    }
}

/// Inverse of `Display` (which escapes non-printable bytes as `\xNN`).
fn parse_display(s: &str) -> Option<PoolTag> {
    let mut out = Vec::with_capacity(4);
    let mut rest = s.as_bytes();
    while let Some((&c, tail)) = rest.split_first() {
        if c == b'\\' && tail.first() == Some(&b'x') && tail.len() >= 3 {
            let hex = std::str::from_utf8(&tail[1..3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[3..];
        } else {
            out.push(c);
            rest = tail;
        }
    }
    if out.is_empty() || out.len() > 4 {
        return None;
    }
    out.resize(4, b' ');
    Some(PoolTag::from_bytes([out[0], out[1], out[2], out[3]]))
}

/// Error from parsing a tag typed by a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseTagError {
    /// Empty, longer than four characters, or not ASCII (the text as given).
    #[error("pool tag `{0}` must be 1 to 4 ASCII characters (shorter tags are padded with spaces)")]
    BadLength(String),
    /// `0x` followed by something that is not a 32-bit hex number.
    #[error("pool tag `{0}` is not a valid 0x... number")]
    BadNumber(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_value_agree() {
        // docs/pool-structures.md §8: `Abc ` is 0x20636241; WinDbg writes it as ' cbA'.
        let t = PoolTag::parse("Abc").unwrap();
        assert_eq!(t.value(), 0x2063_6241);
        assert_eq!(PoolTag::parse("0x20636241").unwrap(), t);
        assert_eq!(t.to_string(), "Abc ");
    }

    #[test]
    fn protected_bit_is_escaped_and_strippable() {
        let t = PoolTag::from_bytes(*b"Pro\xe3");
        assert!(t.is_protected());
        assert_eq!(t.to_string(), "Pro\\xe3");
        assert_eq!(t.unprotected(), PoolTag::parse("Proc").unwrap());
    }

    #[test]
    fn serde_round_trips_escaped_tags() {
        for t in [
            PoolTag::from_bytes(*b"Pro\xe3"),
            PoolTag::parse("CM").unwrap(),
            PoolTag(0),
            PoolTag::from_bytes(*b"\\x41"),
            PoolTag::from_bytes(*b"\\x0 "),
            PoolTag::from_bytes(*b"a\\b\\"),
        ] {
            let j = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<PoolTag>(&j).unwrap(), t, "{j}");
        }
    }

    #[test]
    fn a_backslash_is_escaped() {
        assert_eq!(PoolTag::from_bytes(*b"\\x41").to_string(), "\\x5cx41");
        // Text written before backslashes were escaped still reads.
        assert_eq!(
            parse_display("a\\b").unwrap(),
            PoolTag::from_bytes(*b"a\\b ")
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(PoolTag::parse("").is_err());
        assert!(PoolTag::parse("Toolong").is_err());
        assert!(PoolTag::parse("0xZZ").is_err());
        assert!(PoolTag::parse("é").is_err());
    }
}
