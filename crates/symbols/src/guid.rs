//! A PDB's GUID: half of the key that ties a kernel image to its PDB (the
//! other half is the age), as the image's CodeView record and the PDB's
//! own header carry it.

use std::fmt;

use serde::{Serialize, Serializer};

/// A PDB's GUID in its Windows byte order (Data1..3 little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Data1, Data2, Data3 and Data4.
    fn parts(&self) -> (u32, u16, u16, &[u8]) {
        let b = &self.0;
        (
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            &b[8..],
        )
    }

    /// `3177D31000BA7590DED335936C93E374`: the GUID part of a symbol-store
    /// key.
    pub fn compact(&self) -> String {
        let (d1, d2, d3, d4) = self.parts();
        let mut s = format!("{d1:08X}{d2:04X}{d3:04X}");
        for b in d4 {
            s.push_str(&format!("{b:02X}"));
        }
        s
    }
}

/// `3177D310-00BA-7590-DED3-35936C93E374`.
impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (d1, d2, d3, d4) = self.parts();
        write!(f, "{d1:08X}-{d2:04X}-{d3:04X}-{:02X}{:02X}-", d4[0], d4[1])?;
        for b in &d4[2..] {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
