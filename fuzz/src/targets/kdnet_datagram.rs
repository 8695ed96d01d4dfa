//! KDNET datagrams as they arrive from the network (crates/kdnet):
//! framing, AES-256-CBC and the HMAC check on the raw bytes; and, since
//! random bytes never pass the HMAC, the same input sealed with the key
//! first, so everything after the check (the KDNET header's pad and
//! sequence, the payload as a control message or a KD packet and its
//! DbgKd message) sees hostile plaintext too.
//!
//! The key is windbg-uncut's (`8.8.8.8`, with the data key its handshake
//! agreed, kdnet.md §3.5), so the capture's datagrams are seeds that open.
use pooldump_kdnet::KdnetKey;
use pooldump_kdnet::api::KdMessage;
use pooldump_kdnet::control::{Offer, Response};
use pooldump_kdnet::datagram::{self, Channel, DataKey};
use pooldump_kdnet::packet::Payload;

const DATA_KEY: [u8; 32] = [
    0x6b, 0xd9, 0x1c, 0x57, 0xbd, 0x6a, 0x55, 0x1a, 0xd3, 0x0b, 0x50, 0x9c, 0x05, 0xc0, 0xc9, 0x5b,
    0x32, 0xcc, 0x5e, 0x47, 0xa0, 0x86, 0x69, 0x07, 0xea, 0xf0, 0xb1, 0x58, 0x33, 0x84, 0xf6, 0x60,
];

fn after_open(d: &datagram::Datagram, key: &KdnetKey) {
    let payload = d.payload();
    match d.channel {
        Channel::Control => {
            if let Ok(o) = Offer::parse(payload) {
                let r = o.respond(&[7; 32]);
                let _ = r.data_key(key);
            }
            if let Ok(r) = Response::parse(payload) {
                let _ = (r.identity(), r.data_key(key));
            }
        }
        Channel::Data => {
            if let Ok(Payload::Data(p)) = Payload::parse(payload) {
                let _ = KdMessage::parse(p.kind, &p.data);
            }
        }
    }
}

pub fn run(data: &[u8]) {
    let key: KdnetKey = "8.8.8.8".parse().expect("a valid key");
    let dk = DataKey(DATA_KEY);
    if let Ok(d) = datagram::open(data, &key, Some(&dk)) {
        after_open(&d, &key);
    }
    let _ = datagram::open(data, &key, None);
    // The input as a plaintext: byte 0 picks the channel, the rest (cut to
    // whole blocks, at least one) is sealed and opened again.
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let n = (rest.len() / 16 * 16).clamp(16, 4096);
    let mut plain = rest.to_vec();
    plain.resize(n, 0);
    let channel = if sel & 1 == 0 {
        Channel::Data
    } else {
        Channel::Control
    };
    let aes = match channel {
        Channel::Data => &dk.0,
        Channel::Control => key.root_key(),
    };
    let wire = datagram::seal_plaintext(sel >> 4, channel, &plain, aes, &key.hmac_key());
    if let Ok(d) = datagram::open(&wire, &key, Some(&dk)) {
        assert_eq!(d.plaintext, plain);
        after_open(&d, &key);
    }
}
