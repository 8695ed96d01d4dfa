//! The KDNET key (`bcdedit /dbgsettings net ... key:w.x.y.z`) and the
//! connection spec WinDbg takes as `-k net:port=50000,key=w.x.y.z`
//! (docs/kdnet.md, "The protocol in brief").

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// A parsed KDNET key: the 32-byte root key and the HMAC key derived from
/// it.
///
/// `root_key = le64(w) || le64(x) || le64(y) || le64(z)`, each part a
/// base-36 number (docs/kdnet.md, "The protocol in brief"). The HMAC key is the root key with every
/// bit inverted and never changes during a session.
///
/// ```
/// use pooldump_kdnet::KdnetKey;
/// let k: KdnetKey = "8.8.8.8".parse().unwrap();
/// assert_eq!(k.root_key()[0], 8);
/// assert_eq!(k.hmac_key()[0], 0xF7);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KdnetKey {
    root: [u8; 32],
}

/// The key never appears in messages or logs.
impl std::fmt::Debug for KdnetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KdnetKey(..)")
    }
}

/// Why a key string was rejected. The key itself is never echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not four dot-separated parts.
    #[error("a KDNET key has four dot-separated parts (w.x.y.z), this one has {count}")]
    PartCount {
        /// The number of dot-separated parts found.
        count: usize,
    },
    /// A part has no digits.
    #[error("part {part} of the KDNET key is empty")]
    EmptyPart {
        /// Which part, counted from 1.
        part: usize,
    },
    /// A part holds a character that is not a base-36 digit.
    #[error(
        "part {part} of the KDNET key holds a character outside 0-9 and a-z (a KDNET key is base 36)"
    )]
    BadCharacter {
        /// Which part, counted from 1.
        part: usize,
    },
    /// A part's value exceeds u64::MAX.
    #[error(
        "part {part} of the KDNET key does not fit in 64 bits (the largest part is 3w5e11264sgsf)"
    )]
    Overflow {
        /// Which part, counted from 1.
        part: usize,
    },
}

impl KdnetKey {
    /// A key from its 32 root-key bytes.
    pub fn from_root(root: [u8; 32]) -> Self {
        Self { root }
    }

    /// The AES-256 key of the control channel (and input to the data key).
    pub fn root_key(&self) -> &[u8; 32] {
        &self.root
    }

    /// The HMAC-SHA256 key of both channels: `!root_key`.
    pub fn hmac_key(&self) -> [u8; 32] {
        self.root.map(|b| !b)
    }
}

impl FromStr for KdnetKey {
    type Err = KeyError;

    /// Parse `w.x.y.z`. Base-36 digits are accepted in either case:
    /// bcdedit only generates lower case, and `A` and `a` are the same
    /// digit, so rejecting upper case would only punish a retyped key.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 4 {
            return Err(KeyError::PartCount { count: parts.len() });
        }
        let mut root = [0u8; 32];
        for (i, p) in parts.iter().enumerate() {
            let part = i + 1;
            if p.is_empty() {
                return Err(KeyError::EmptyPart { part });
            }
            let mut v: u64 = 0;
            for c in p.chars() {
                let d = c.to_digit(36).ok_or(KeyError::BadCharacter { part })?;
                v = v
                    .checked_mul(36)
                    .and_then(|v| v.checked_add(u64::from(d)))
                    .ok_or(KeyError::Overflow { part })?;
            }
            root[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        Ok(Self { root })
    }
}

/// The default UDP port of `bcdedit /dbgsettings net`.
pub const DEFAULT_PORT: u16 = 50000;

/// Where to listen and with which key: WinDbg's `-k net:port=P,key=K`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdnetSpec {
    /// The UDP port the target sends its offers to (the host listens on
    /// it).
    pub port: u16,
    /// The key both sides use (`key=`, bcdedit's `key:`).
    pub key: KdnetKey,
    /// The local address to listen on: all interfaces, as WinDbg does,
    /// unless `bind=` says otherwise (a pooldump extension, used by tests
    /// to stay on loopback).
    pub bind: IpAddr,
    /// How long to wait for an ACK or a reply before sending again, when
    /// `retry=MS` says so (a pooldump extension: the defaults suit a LAN;
    /// a loopback test or a fast lab link can retry much sooner).
    pub retry: Option<std::time::Duration>,
}

/// Why a connection spec was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No `key=` option.
    #[error("the KDNET spec has no key= (expected port=N,key=w.x.y.z)")]
    MissingKey,
    /// `port=` (the value) is not 1-65535.
    #[error("the KDNET spec's port '{0}' is not a UDP port number (1-65535)")]
    BadPort(String),
    /// `bind=` (the value) is not an IP address.
    #[error("the KDNET spec's bind address '{0}' is not an IP address")]
    BadBind(String),
    /// `key=` is not a valid KDNET key.
    #[error("the KDNET spec's key: {0}")]
    Key(#[from] KeyError),
    /// An option (its name) other than port=, key=, bind=, retry=.
    #[error(
        "the KDNET spec's option '{0}' is not supported (pooldump understands port=, key=, bind= and retry=)"
    )]
    Unsupported(String),
    /// An option (as written) without `=value`.
    #[error("the KDNET spec's option '{0}' has no value (expected name=value)")]
    NoValue(String),
    /// `retry=` (the value) is not 10-60000 milliseconds.
    #[error("the KDNET spec's retry '{0}' is not a number of milliseconds from 10 to 60000")]
    BadRetry(String),
    /// An option (its name) given twice.
    #[error("the KDNET spec names '{0}' twice")]
    Repeated(String),
}

impl FromStr for KdnetSpec {
    type Err = SpecError;

    /// Accepts `port=P,key=K`, WinDbg's `net:port=P,key=K` and the whole
    /// `-k net:port=P,key=K`. The port defaults to 50000 as in bcdedit.
    /// Host-initiated mode (`target=`) is refused: its packet format is
    /// unknown (docs/kdnet.md, "The protocol in brief").
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let mut rest = s.trim();
        if let Some(r) = rest.strip_prefix("-k") {
            rest = r.trim_start();
        }
        if let Some(r) = rest.strip_prefix("net:") {
            rest = r;
        }
        let (mut port, mut key, mut bind, mut retry) = (None, None, None, None);
        for item in rest.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| SpecError::NoValue(item.to_string()))?;
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim();
            let repeated = || SpecError::Repeated(name.clone());
            match name.as_str() {
                "port" => {
                    let p = value
                        .parse::<u16>()
                        .ok()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| SpecError::BadPort(value.to_string()))?;
                    if port.replace(p).is_some() {
                        return Err(repeated());
                    }
                }
                "key" => {
                    if key.replace(value.parse::<KdnetKey>()?).is_some() {
                        return Err(repeated());
                    }
                }
                "bind" => {
                    let a = value
                        .parse::<IpAddr>()
                        .map_err(|_| SpecError::BadBind(value.to_string()))?;
                    if bind.replace(a).is_some() {
                        return Err(repeated());
                    }
                }
                "retry" => {
                    let ms = value
                        .parse::<u64>()
                        .ok()
                        .filter(|ms| (10..=60_000).contains(ms))
                        .ok_or_else(|| SpecError::BadRetry(value.to_string()))?;
                    if retry
                        .replace(std::time::Duration::from_millis(ms))
                        .is_some()
                    {
                        return Err(repeated());
                    }
                }
                _ => return Err(SpecError::Unsupported(name)),
            }
        }
        Ok(Self {
            port: port.unwrap_or(DEFAULT_PORT),
            key: key.ok_or(SpecError::MissingKey)?,
            bind: bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// docs/kdnet.md, "The protocol in brief": vectors checked against captures and AeroCTF's notes.
    #[test]
    fn root_keys_match_the_spec_vectors() {
        let cases = [
            (
                "8.8.8.8",
                "0800000000000000080000000000000008000000000000000800000000000000",
            ),
            (
                "1.2.3.4",
                "0100000000000000020000000000000003000000000000000400000000000000",
            ),
            (
                "17890.af3489a.9345kjm.lio147",
                "84c61e0000000000ce21d6470500000042f7f19a04000000a7e18d4d00000000",
            ),
            (
                "1m770ts6ru0p.3671pemyie4i.2b8djy3wt5et.1p99ir125v4q",
                "b9569fcc7cf9f30202b242b33852cb05a5ac940b08223904da42f63667b01b03",
            ),
            (
                "fbd6s5l1ggvi.3ht327jwm1xbs.2cgwi0jzi8xb9.17jc41w5ndod7",
                "6e1ea994a5daf91bf8a4c9508192cde5a548388677264b9a9ba7c0ee1c94864f",
            ),
        ];
        for (k, want) in cases {
            let key: KdnetKey = k.parse().unwrap();
            assert_eq!(hex(key.root_key()), want, "{k}");
        }
        let k: KdnetKey = "8.8.8.8".parse().unwrap();
        assert_eq!(hex(&k.hmac_key()), "f7ffffffffffffff".repeat(4));
    }

    #[test]
    fn largest_part_fits_and_one_more_overflows() {
        assert!("3w5e11264sgsf.0.0.0".parse::<KdnetKey>().is_ok());
        assert_eq!(
            "0.3w5e11264sgsg.0.0".parse::<KdnetKey>(),
            Err(KeyError::Overflow { part: 2 })
        );
    }

    #[test]
    fn bad_keys_are_named() {
        for (key, why) in [
            ("1.2.3", KeyError::PartCount { count: 3 }),
            ("1..3.4", KeyError::EmptyPart { part: 2 }),
            ("1.2.3.4_", KeyError::BadCharacter { part: 4 }),
            ("1.2.3.4.5", KeyError::PartCount { count: 5 }),
        ] {
            assert_eq!(key.parse::<KdnetKey>(), Err(why), "{key}");
        }
        assert_eq!(
            "A.b.C.d".parse::<KdnetKey>().unwrap(),
            "a.b.c.d".parse().unwrap()
        );
    }

    #[test]
    fn specs_in_windbg_and_short_spelling() {
        let want = KdnetSpec {
            port: 50001,
            key: "a.b.c.d".parse().unwrap(),
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            retry: None,
        };
        for s in [
            "port=50001,key=a.b.c.d",
            "net:port=50001,key=a.b.c.d",
            "-k net:port=50001,key=a.b.c.d",
            "key=a.b.c.d, port=50001",
        ] {
            assert_eq!(s.parse::<KdnetSpec>().unwrap(), want, "{s}");
        }
        let d: KdnetSpec = "key=1.2.3.4,bind=127.0.0.1".parse().unwrap();
        assert_eq!(d.port, DEFAULT_PORT);
        let r: KdnetSpec = "key=1.2.3.4,retry=50".parse().unwrap();
        assert_eq!(r.retry, Some(std::time::Duration::from_millis(50)));
        assert!("key=1.2.3.4,retry=5".parse::<KdnetSpec>().is_err());
        assert_eq!(d.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            "port=50000".parse::<KdnetSpec>(),
            Err(SpecError::MissingKey)
        );
        assert_eq!(
            "port=0,key=1.2.3.4".parse::<KdnetSpec>(),
            Err(SpecError::BadPort("0".into()))
        );
        assert_eq!(
            "port=5,key=1.2.3.4,target=10.0.0.1".parse::<KdnetSpec>(),
            Err(SpecError::Unsupported("target".into()))
        );
        assert!(matches!(
            "port=5,key=1.2".parse::<KdnetSpec>(),
            Err(SpecError::Key(KeyError::PartCount { count: 2 }))
        ));
    }
}
