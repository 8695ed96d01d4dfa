//! The KDNET datagram: framing, AES-256-CBC and the truncated HMAC-SHA256
//! tag (docs/kdnet.md, "The protocol in brief").
//!
//! ```text
//!  0  4  "MDBG"
//!  4  1  version (echoed by the host)
//!  5  1  channel: 0 data, 1 control
//!  6  N  AES-256-CBC(P), N = len(P), a multiple of 16, no padding scheme
//! 6+N 16 tag = HMAC-SHA256(!root_key, bytes[0..6] || P)[..16], also the IV
//! ```
//!
//! `P = kdnet_hdr(8) || payload || zeros`; the header is a big-endian
//! 56-bit sequence number and a byte holding the host→target bit (0x80)
//! and the pad length. Encoding is deterministic, so sealing a decoded
//! plaintext reproduces the captured bytes exactly.

use aes::Aes256;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::key::KdnetKey;

/// The first four bytes of every KDNET datagram.
pub const MAGIC: [u8; 4] = *b"MDBG";
/// Magic, version, channel.
pub const HEADER_LEN: usize = 6;
/// The HMAC-SHA256 tag at the datagram's end, truncated to 16 bytes.
pub const TAG_LEN: usize = 16;
/// The KDNET header at the start of every plaintext.
pub const KDNET_HDR_LEN: usize = 8;
/// The smallest datagram: one cipher block and the tag.
pub const MIN_LEN: usize = HEADER_LEN + 16 + TAG_LEN;
/// The largest datagram accepted: a 4000-byte KD packet fits with room to
/// spare; anything longer is not KDNET (docs/kdnet.md, "The protocol in brief").
pub const MAX_LEN: usize = 4096 + MIN_LEN;
/// The direction bit of the KDNET header's last byte.
pub const FROM_HOST: u8 = 0x80;

/// The two KDNET channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// KD packets, the hello and break-in; keyed with the data key.
    Data,
    /// Offers and responses; keyed with the root key.
    Control,
}

impl Channel {
    /// The header's channel byte (datagram byte 5): 0 data, 1 control.
    pub fn byte(self) -> u8 {
        match self {
            Channel::Data => 0,
            Channel::Control => 1,
        }
    }
}

/// The AES key of the data channel, `SHA-256(root_key || response[8..330])`.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(pub [u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Why a datagram was dropped. Every case is counted by the session and
/// none is acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Shorter than [`MIN_LEN`], longer than [`MAX_LEN`], or not a whole
    /// number of AES blocks between header and tag.
    #[error("{len} bytes is not a KDNET datagram length (38 to 4134 bytes, 6 + 16n + 16)")]
    BadLength {
        /// The datagram's length in bytes.
        len: usize,
    },
    /// The first four bytes are not [`MAGIC`].
    #[error("no MDBG magic")]
    BadMagic,
    /// The channel byte (the value) is neither 0 (data) nor 1 (control).
    #[error("unknown channel {0}")]
    BadChannel(u8),
    /// A data-channel datagram, and no handshake has made a data key yet.
    #[error("a data-channel datagram arrived before the data key was agreed")]
    NoDataKey,
    /// The tag does not verify under the channel's key.
    #[error("the HMAC does not verify (wrong key, corrupted or forged)")]
    BadTag,
    /// The KDNET header's pad-length byte (the value) is 16 or more, or
    /// longer than the plaintext.
    #[error("the KDNET header's pad length {0} is not below 16 (or exceeds the payload)")]
    BadPad(u8),
}

/// A decrypted, authenticated datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The KDNET version byte (datagram byte 4; the host echoes the
    /// target's: 5 from a 19041 target, 4 from 1511, 2 from 8.1).
    pub version: u8,
    /// Data or control.
    pub channel: Channel,
    /// The 56-bit sequence number.
    pub seq: u64,
    /// The direction bit: set by the host (debugger) on everything it
    /// sends.
    pub from_host: bool,
    /// The pad length the header declared.
    pub pad: u8,
    /// The whole plaintext, header and padding included (the exact input
    /// to encryption).
    pub plaintext: Vec<u8>,
}

impl Datagram {
    /// The payload: the plaintext without the KDNET header and padding.
    pub fn payload(&self) -> &[u8] {
        &self.plaintext[KDNET_HDR_LEN..self.plaintext.len() - usize::from(self.pad)]
    }

    /// A datagram to send, with the plaintext built from `payload`.
    pub fn new(version: u8, channel: Channel, seq: u64, from_host: bool, payload: &[u8]) -> Self {
        let pad = (16 - (KDNET_HDR_LEN + payload.len()) % 16) % 16;
        let mut plaintext = Vec::with_capacity(KDNET_HDR_LEN + payload.len() + pad);
        plaintext.extend_from_slice(&(seq & 0x00FF_FFFF_FFFF_FFFF).to_be_bytes()[1..]);
        plaintext.push(if from_host { FROM_HOST } else { 0 } | pad as u8);
        plaintext.extend_from_slice(payload);
        plaintext.resize(plaintext.len() + pad, 0);
        Self {
            version,
            channel,
            seq: seq & 0x00FF_FFFF_FFFF_FFFF,
            from_host,
            pad: pad as u8,
            plaintext,
        }
    }

    /// Encrypt and tag: the bytes to put on the wire. The control channel
    /// uses the root key; the data channel `data_key`.
    pub fn seal(
        &self,
        key: &KdnetKey,
        data_key: Option<&DataKey>,
    ) -> Result<Vec<u8>, DatagramError> {
        let aes_key = match self.channel {
            Channel::Control => key.root_key(),
            Channel::Data => &data_key.ok_or(DatagramError::NoDataKey)?.0,
        };
        Ok(seal_plaintext(
            self.version,
            self.channel,
            &self.plaintext,
            aes_key,
            &key.hmac_key(),
        ))
    }
}

/// Seal an exact plaintext (a multiple of 16 bytes) under `aes_key`.
pub fn seal_plaintext(
    version: u8,
    channel: Channel,
    plaintext: &[u8],
    aes_key: &[u8; 32],
    hmac_key: &[u8; 32],
) -> Vec<u8> {
    debug_assert_eq!(plaintext.len() % 16, 0, "KDNET plaintexts are whole blocks");
    let header = [
        MAGIC[0],
        MAGIC[1],
        MAGIC[2],
        MAGIC[3],
        version,
        channel.byte(),
    ];
    let tag = tag(hmac_key, &header, plaintext);
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&header);
    out.extend_from_slice(plaintext);
    let n = plaintext.len();
    let body = &mut out[HEADER_LEN..];
    // The plaintext is whole blocks, so NoPadding cannot fail; a failure
    // would leave the body as plaintext, which the debug assert above and
    // the capture tests rule out.
    let _ = cbc::Encryptor::<Aes256>::new(aes_key.into(), (&tag).into())
        .encrypt_padded::<NoPadding>(body, n);
    out.extend_from_slice(&tag);
    out
}

fn tag(hmac_key: &[u8; 32], header: &[u8], plaintext: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(hmac_key)
        .expect("HMAC takes a key of any length");
    mac.update(header);
    mac.update(plaintext);
    let full = mac.finalize().into_bytes();
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&full[..TAG_LEN]);
    t
}

/// Check the framing of a received datagram without any key: its channel,
/// if the length, magic and channel are plausible.
pub fn peek_channel(wire: &[u8]) -> Result<(u8, Channel), DatagramError> {
    let len = wire.len();
    if !(MIN_LEN..=MAX_LEN).contains(&len) || !(len - HEADER_LEN - TAG_LEN).is_multiple_of(16) {
        return Err(DatagramError::BadLength { len });
    }
    if wire[..4] != MAGIC {
        return Err(DatagramError::BadMagic);
    }
    let channel = match wire[5] {
        0 => Channel::Data,
        1 => Channel::Control,
        c => return Err(DatagramError::BadChannel(c)),
    };
    Ok((wire[4], channel))
}

/// Decrypt and authenticate a received datagram. Nothing in it is trusted
/// until the tag verifies (compared in constant time); only then is the
/// KDNET header read.
pub fn open(
    wire: &[u8],
    key: &KdnetKey,
    data_key: Option<&DataKey>,
) -> Result<Datagram, DatagramError> {
    let (version, channel) = peek_channel(wire)?;
    let aes_key = match channel {
        Channel::Control => key.root_key(),
        Channel::Data => &data_key.ok_or(DatagramError::NoDataKey)?.0,
    };
    let body_end = wire.len() - TAG_LEN;
    let got: [u8; TAG_LEN] = wire[body_end..]
        .try_into()
        .map_err(|_| DatagramError::BadLength { len: wire.len() })?;
    let mut plaintext = wire[HEADER_LEN..body_end].to_vec();
    cbc::Decryptor::<Aes256>::new(aes_key.into(), (&got).into())
        .decrypt_padded::<NoPadding>(&mut plaintext)
        .map_err(|_| DatagramError::BadLength { len: wire.len() })?;
    let want = tag(&key.hmac_key(), &wire[..HEADER_LEN], &plaintext);
    if !bool::from(want.ct_eq(&got)) {
        return Err(DatagramError::BadTag);
    }
    let last = plaintext[KDNET_HDR_LEN - 1];
    let pad = last & !FROM_HOST;
    if pad >= 16 || usize::from(pad) > plaintext.len() - KDNET_HDR_LEN {
        return Err(DatagramError::BadPad(pad));
    }
    let mut seq = [0u8; 8];
    seq[1..].copy_from_slice(&plaintext[..7]);
    Ok(Datagram {
        version,
        channel,
        seq: u64::from_be_bytes(seq),
        from_host: last & FROM_HOST != 0,
        pad,
        plaintext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// docs/kdnet.md, "The protocol in brief": whole datagrams from windbg-uncut, key 8.8.8.8, with
    /// its data key.
    #[test]
    fn spec_vectors_decrypt_and_reseal() {
        let key: KdnetKey = "8.8.8.8".parse().unwrap();
        let dk = DataKey(
            unhex("6bd91c57bd6a551ad30b509c05c0c95b32cc5e47a0866907eaf0b1583384f660")
                .try_into()
                .unwrap(),
        );
        let cases = [
            (
                "000000000000010c 00000000000000000102a8c0 000000000000000000000000",
                "4d44424704002fa399cffa8f888c766d5e595a843c6dee47e25b8c9e098bd63242f627753eddfb5900eab024ca9c9c435055f1c8e7d2",
            ),
            (
                "0000000000000188 69696969 0500 0000 00000000 00000000 0000000000000000",
                "4d44424704000c3e6d1655f7c70b5d8a875f9032af003152b7f200de2491adb391c109d86f1e94bbfcb63ea493ff1e588fdbaab8575f",
            ),
            (
                "0000000000000480 303030300200380000000080c0100000 46310000ffffffff0301000025000000f0c63f25017f0000e8f5c7d20000000068f6c7d22500000090933a25f77f00000000000000000000",
                "4d44424704001118cc23b38f47b72fe168e192f9c6dce8c1b2eb99112b4cffd118599dd1ddf96631694ce58e213509eaed661ad4ae70bd20a2d20a0482095717437809f099c3b8b5ef734f7fa620162a7b8fc21e1ba74c1a0554da4f189664ea33cf88ad2942",
            ),
        ];
        for (plain, wire) in cases {
            let (plain, wire) = (unhex(plain), unhex(wire));
            let d = open(&wire, &key, Some(&dk)).unwrap();
            assert_eq!(d.plaintext, plain);
            assert_eq!(d.seal(&key, Some(&dk)).unwrap(), wire);
        }
    }

    #[test]
    fn new_pads_and_round_trips() {
        let key: KdnetKey = "1.2.3.4".parse().unwrap();
        let dk = DataKey([7; 32]);
        for n in [0usize, 1, 7, 8, 9, 23, 24, 100] {
            let payload: Vec<u8> = (0..n as u8).collect();
            let d = Datagram::new(5, Channel::Data, 0x1234, true, &payload);
            assert_eq!(d.plaintext.len() % 16, 0);
            let wire = d.seal(&key, Some(&dk)).unwrap();
            let back = open(&wire, &key, Some(&dk)).unwrap();
            assert_eq!(back, d);
            assert_eq!(back.payload(), &payload[..]);
        }
    }

    #[test]
    fn tampering_anywhere_fails_the_tag() {
        let key: KdnetKey = "1.2.3.4".parse().unwrap();
        let dk = DataKey([7; 32]);
        let wire = Datagram::new(5, Channel::Data, 9, false, b"hello world")
            .seal(&key, Some(&dk))
            .unwrap();
        for i in 4..wire.len() {
            let mut w = wire.clone();
            w[i] ^= 0x01;
            let e = open(&w, &key, Some(&dk)).unwrap_err();
            // Flipping the channel byte gives an unknown channel.
            assert!(
                matches!(
                    e,
                    DatagramError::BadTag | DatagramError::BadChannel(_) | DatagramError::NoDataKey
                ),
                "byte {i}: {e:?}"
            );
        }
        let other: KdnetKey = "1.2.3.5".parse().unwrap();
        assert_eq!(open(&wire, &other, Some(&dk)), Err(DatagramError::BadTag));
        assert_eq!(
            open(&wire[..wire.len() - 1], &key, Some(&dk)),
            Err(DatagramError::BadLength {
                len: wire.len() - 1
            })
        );
    }
}
