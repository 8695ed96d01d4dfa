//! How the map writes addresses (`0xfffff80612341064`) and bytes
//! (`4c65616b`), for people reading it.

/// Addresses as `0xfffff80612341064` in the map, for people reading it.
pub(super) mod hex_va {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::addr::KernelVa;

    pub fn serialize<S: Serializer>(v: &KernelVa, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:#x}", v.0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KernelVa, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad address {s:?}")))
    }

    pub fn parse(s: &str) -> Option<KernelVa> {
        let h = s.strip_prefix("0x")?;
        u64::from_str_radix(&h.replace('`', ""), 16)
            .ok()
            .map(KernelVa)
    }
}

pub(super) mod hex_va_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::addr::KernelVa;

    pub fn serialize<S: Serializer>(v: &Option<KernelVa>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(&format_args!("{:#x}", v.0)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KernelVa>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::hex_va::parse(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("bad address {s:?}"))),
        }
    }
}

/// Four bytes as `4c65616b`.
pub(super) mod hex4 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn text(b: &[u8; 4]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    pub fn serialize<S: Serializer>(b: &[u8; 4], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 4], D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("bad bytes {s:?} (want 8 hex digits)"));
        if s.len() != 8 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 4];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(out)
    }
}
