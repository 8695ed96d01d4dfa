//! The proof that pooldump's KDNET client speaks Windows, not just itself:
//! every datagram of real captured traffic decrypts, authenticates,
//! re-encrypts to the exact captured bytes and parses into typed KD
//! messages.
//!
//! The captures live in ../shared/captures (never copied into the repo).
//! With CI=true a missing capture fails the test; otherwise it is skipped
//! with a message.

#[path = "../../../tests/support/prereq.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;

use pcap_parser::pcapng::Block;
use pcap_parser::{Linktype, PcapBlockOwned, PcapError};
use pooldump_kdnet::KdnetKey;
use pooldump_kdnet::api::{Call, Event, KdMessage, Manipulate, Space, Transfer, api_number};
use pooldump_kdnet::control::{Offer, Response};
use pooldump_kdnet::datagram::{self, Channel, DataKey, Datagram, DatagramError};
use pooldump_kdnet::packet::{HOST_ID_BASE, PacketType, Payload};

fn shared_capture(name: &str) -> Option<PathBuf> {
    let p = support::repo_root().join("../shared/captures").join(name);
    if p.exists() {
        return Some(p);
    }
    support::missing(&format!("the capture {}", p.display()))
}

/// One UDP datagram of a capture.
struct Udp {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    payload: Vec<u8>,
}

/// Read the UDP datagrams of a pcap or pcapng capture of Ethernet frames.
fn udp_datagrams(bytes: &[u8]) -> Vec<Udp> {
    let mut reader =
        pcap_parser::create_reader(1 << 20, std::io::Cursor::new(bytes)).expect("a pcap or pcapng");
    let mut frames: Vec<Vec<u8>> = Vec::new();
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        assert_eq!(h.network, Linktype::ETHERNET, "pcap link type")
                    }
                    PcapBlockOwned::Legacy(b) => frames.push(b.data[..b.caplen as usize].to_vec()),
                    PcapBlockOwned::NG(Block::InterfaceDescription(i)) => {
                        assert_eq!(i.linktype, Linktype::ETHERNET, "pcapng link type")
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(e)) => {
                        frames.push(e.data[..e.caplen as usize].to_vec())
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => reader.refill().expect("refill"),
            Err(e) => panic!("capture does not parse: {e:?}"),
        }
    }
    frames
        .iter()
        .filter_map(|f| {
            let p = etherparse::SlicedPacket::from_ethernet(f).ok()?;
            let (src, dst) = match p.net? {
                etherparse::NetSlice::Ipv4(ip) => (
                    IpAddr::V4(ip.header().source_addr()),
                    IpAddr::V4(ip.header().destination_addr()),
                ),
                etherparse::NetSlice::Ipv6(ip) => (
                    IpAddr::V6(ip.header().source_addr()),
                    IpAddr::V6(ip.header().destination_addr()),
                ),
                _ => return None,
            };
            let etherparse::TransportSlice::Udp(u) = p.transport? else {
                return None;
            };
            Some(Udp {
                src: (src, u.source_port()),
                dst: (dst, u.destination_port()),
                payload: u.payload().to_vec(),
            })
        })
        .collect()
}

/// What the capture walk found, by kind.
#[derive(Default, Debug)]
struct Tally {
    offers: usize,
    responses: usize,
    hellos: usize,
    breakins: usize,
    control: BTreeMap<String, usize>,
    messages: BTreeMap<String, usize>,
}

/// Decode one whole KDNET session: verify, re-seal, parse and type every
/// datagram. Returns the tally and the data key.
fn walk_session(dgs: &[Udp], key: &KdnetKey, host_ip: IpAddr) -> (Tally, Option<DataKey>) {
    let mut data_key: Option<DataKey> = None;
    let mut t = Tally::default();
    let mut data_ids: Vec<(bool, u32)> = Vec::new();
    for (i, u) in dgs.iter().enumerate() {
        let n = i + 1;
        let d = datagram::open(&u.payload, key, data_key.as_ref())
            .unwrap_or_else(|e| panic!("datagram #{n} does not open: {e}"));
        assert_eq!(
            d.seal(key, data_key.as_ref()).unwrap(),
            u.payload,
            "datagram #{n} does not re-encrypt to the captured bytes"
        );
        assert_eq!(d.from_host, u.src.0 == host_ip, "#{n}: direction bit");
        match d.channel {
            Channel::Control => {
                if d.from_host {
                    let r = Response::parse(d.payload()).expect("host control = response");
                    data_key = Some(r.data_key(key));
                    t.responses += 1;
                } else {
                    Offer::parse(d.payload()).expect("target control = offer");
                    t.offers += 1;
                }
            }
            Channel::Data => match Payload::parse(d.payload())
                .unwrap_or_else(|e| panic!("#{n}: KD packet: {e}"))
            {
                Payload::Hello(_) => t.hellos += 1,
                Payload::BreakIn => t.breakins += 1,
                Payload::Control { kind, id } => {
                    *t.control.entry(format!("{kind:?}")).or_default() += 1;
                    if kind == PacketType::Acknowledge {
                        // An ACK names a data packet the other side sent.
                        assert!(
                            data_ids.contains(&(!d.from_host, id)),
                            "#{n}: ACK of {id:#x}, never sent"
                        );
                    }
                }
                Payload::Data(p) => {
                    // Host ids live at 0x80000000 and up, target ids
                    // below; both are even (docs/kdnet.md, "The protocol in brief").
                    assert_eq!(
                        p.id & HOST_ID_BASE != 0,
                        d.from_host,
                        "#{n}: id {:#x}",
                        p.id
                    );
                    assert_eq!(p.id % 2, 0, "#{n}: odd id {:#x}", p.id);
                    data_ids.push((d.from_host, p.id));
                    let m =
                        KdMessage::parse(p.kind, &p.data).unwrap_or_else(|e| panic!("#{n}: {e}"));
                    assert_eq!(m.to_bytes(), p.data, "#{n}: message does not round-trip");
                    let dir = if d.from_host { "host" } else { "target" };
                    let name = format!("{} ({dir})", describe(&m, n));
                    *t.messages.entry(name).or_default() += 1;
                }
            },
        }
    }
    (t, data_key)
}

/// A name for the tally; panics on anything that did not decode to a
/// typed message.
fn describe(m: &KdMessage, n: usize) -> String {
    match m {
        KdMessage::StateChange(s) => match s.event() {
            Event::Exception { code, .. } => format!("StateChange Exception {code:#x}"),
            Event::LoadSymbols { path, unload, .. } => {
                // Unload notifications carry no path.
                assert!(
                    unload || !path.is_empty(),
                    "#{n}: load-symbols without a path"
                );
                "StateChange LoadSymbols".into()
            }
            Event::CommandString => "StateChange CommandString".into(),
            Event::Other => panic!("#{n}: unknown NewState {:#x}", s.new_state),
        },
        KdMessage::Manipulate(m) => {
            let call = m.call();
            assert!(
                !matches!(call, Call::Other),
                "#{n}: unmodelled ApiNumber {:#x}",
                m.api
            );
            check_manipulate(m, &call, n);
            let kind = match call {
                Call::Read(t) => format!("Read {:?}", t.space),
                Call::Write(t) => format!("Write {:?}", t.space),
                c => format!("{c:?}")
                    .split([' ', '(', '{'])
                    .next()
                    .unwrap_or("")
                    .to_string(),
            };
            format!("Manipulate {kind}")
        }
        KdMessage::DebugIo(d) => {
            assert_eq!(d.api, api_number::PRINT_STRING, "#{n}");
            "DebugIo".into()
        }
        KdMessage::FileIo(f) => format!("FileIo {:#x}", f.api),
    }
}

/// Replies to reads carry no more data than ActualBytesRead says.
fn check_manipulate(m: &Manipulate, call: &Call, n: usize) {
    if let Call::Read(Transfer { actual, count, .. }) = call
        && !m.data.is_empty()
    {
        assert_eq!(
            m.data.len(),
            *actual as usize,
            "#{n}: read data vs ActualBytesRead"
        );
        assert!(actual <= count, "#{n}");
    }
}

#[test]
fn windbg_uncut_decodes_verifies_and_reencrypts() {
    let Some(path) = shared_capture("windbg-uncut.pcapng.gz") else {
        return;
    };
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let dgs = udp_datagrams(&raw);
    // The capture's README: 955 UDP datagrams.
    assert_eq!(dgs.len(), 955);
    let key: KdnetKey = "8.8.8.8".parse().unwrap();
    // The host is where the target's first datagram (an offer) went.
    let host_ip = dgs[0].dst.0;
    assert_eq!(
        dgs[0].src.1, dgs[0].dst.1,
        "offers go from port p to port p"
    );
    let (t, dk) = walk_session(&dgs, &key, host_ip);
    // docs/kdnet.md, "The protocol in brief", computed independently of this crate.
    let want = "6bd91c57bd6a551ad30b509c05c0c95b32cc5e47a0866907eaf0b1583384f660";
    let got: String = dk
        .expect("a response")
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(got, want);
    eprintln!("{t:#?}");
    assert_eq!(t.responses, 1);
    assert!(t.offers > 1, "offers keep arriving during the session");
    assert_eq!(t.hellos, 1);
    for needed in [
        "Manipulate GetVersion",
        "Manipulate Read Virtual",
        "Manipulate Read Control",
        "Manipulate GetContext",
        "Manipulate Continue2",
        "StateChange Exception 0x80000003",
        "StateChange LoadSymbols",
        "DebugIo",
    ] {
        assert!(
            t.messages.keys().any(|k| k.starts_with(needed)),
            "no {needed} in the capture: {:?}",
            t.messages
        );
    }
    for c in ["Acknowledge", "Resend", "Reset"] {
        assert!(t.control.contains_key(c), "no {c}: {:?}", t.control);
    }
}

#[test]
fn kek_v5_offers_authenticate_and_data_needs_the_missing_response() {
    let Some(path) = shared_capture("kek.pcap") else {
        return;
    };
    let dgs = udp_datagrams(&std::fs::read(path).unwrap());
    assert!(!dgs.is_empty());
    let key: KdnetKey = "1.2.3.4".parse().unwrap();
    let (mut offers, mut data) = (Vec::new(), 0usize);
    for (i, u) in dgs.iter().enumerate() {
        let (version, channel) = datagram::peek_channel(&u.payload)
            .unwrap_or_else(|e| panic!("frame {}: not KDNET: {e}", i + 1));
        assert_eq!(version, 5);
        match channel {
            Channel::Control => {
                let d = datagram::open(&u.payload, &key, None).unwrap();
                assert_eq!(d.seal(&key, None).unwrap(), u.payload);
                assert!(!d.from_host);
                let o = Offer::parse(d.payload()).unwrap();
                assert_eq!(o.target.port(), u.src.1);
                offers.push(o);
            }
            Channel::Data => {
                // The response that set the data key was not captured.
                assert_eq!(
                    datagram::open(&u.payload, &key, None),
                    Err(DatagramError::NoDataKey)
                );
                data += 1;
            }
        }
    }
    // docs/kdnet.md, "The protocol in brief": 10 offer frames; every frame appears twice.
    assert_eq!(offers.len(), 10);
    offers.dedup();
    assert_eq!(offers.len(), 5);
    assert!(data > 0);
    // One boot: the identity never changes, the counter rises.
    assert!(offers.windows(2).all(|w| w[0].identity == w[1].identity));
    assert!(
        offers
            .windows(2)
            .all(|w| w[1].counter == w[0].counter.wrapping_add(1))
    );
}

/// `src` without C comments (test_pkt.h comments out whole arrays).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    loop {
        let line = rest.find("//");
        let block = rest.find("/*");
        match (line, block) {
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |e| &rest[l + e..]);
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                rest = rest[b..].find("*/").map_or("", |e| &rest[b + e + 2..]);
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// The C arrays of test_pkt.h, by name.
fn c_arrays(src: &str) -> Vec<(String, Vec<u8>)> {
    let src = strip_comments(src);
    let mut out = Vec::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find("[] = {") {
        let name = rest[..i]
            .rsplit([' ', '\n', '\t'])
            .next()
            .unwrap_or("")
            .to_string();
        let body_start = i + "[] = {".len();
        let end = rest[body_start..]
            .find("};")
            .map_or(rest.len(), |e| body_start + e);
        let bytes = rest[body_start..end]
            .split(',')
            .filter_map(|t| {
                let t = t.trim();
                t.strip_prefix("0x")
                    .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
            })
            .collect();
        out.push((name, bytes));
        rest = &rest[end..];
    }
    out
}

#[test]
fn libkdnet_v2_packets_verify() {
    let Some(path) = shared_capture("test_pkt.h") else {
        return;
    };
    let arrays = c_arrays(&std::fs::read_to_string(path).unwrap());
    let key: KdnetKey = "1.1.1.1".parse().unwrap();
    let get = |n: &str| {
        arrays
            .iter()
            .find(|(name, _)| name == n)
            .unwrap_or_else(|| panic!("no array {n}"))
            .1
            .clone()
    };
    let resp = datagram::open(&get("poke_resp"), &key, None).unwrap();
    assert!(resp.from_host);
    let dk = Response::parse(resp.payload()).unwrap().data_key(&key);
    let mut typed = BTreeMap::new();
    for (name, wire) in &arrays {
        // `next` is called malformed (docs/kdnet.md, "The protocol in brief"): its source is mostly
        // commented-out fragments. Without the comments one whole datagram
        // remains, and it verifies like the others.
        if name == "unciphered_go" {
            // A decrypted host plaintext: KDNET header, then a KD packet
            // whose checksum must hold.
            let pad = usize::from(wire[7] & 0x7F);
            assert_ne!(wire[7] & 0x80, 0, "host direction bit");
            let p = Payload::parse(&wire[8..wire.len() - pad]).expect("a KD packet");
            let Payload::Data(p) = p else {
                panic!("not data")
            };
            let m = KdMessage::parse(p.kind, &p.data).unwrap();
            typed.insert(name.clone(), describe(&m, 0));
            continue;
        }
        let d: Datagram =
            datagram::open(wire, &key, Some(&dk)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.version, 2, "{name}");
        assert_eq!(
            d.seal(&key, Some(&dk)).unwrap(),
            *wire,
            "{name}: re-encryption"
        );
        if d.channel == Channel::Control {
            continue;
        }
        let kind = match Payload::parse(d.payload()).unwrap_or_else(|e| panic!("{name}: {e}")) {
            Payload::Data(p) => {
                let m = KdMessage::parse(p.kind, &p.data).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(m.to_bytes(), p.data);
                describe(&m, 0)
            }
            other => format!("{other:?}")
                .split([' ', '(', '{'])
                .next()
                .unwrap_or("")
                .to_string(),
        };
        typed.insert(name.clone(), kind);
    }
    eprintln!("{typed:#?}");
    assert_eq!(typed["break_data"], "BreakIn");
    assert_eq!(typed["conncheck"], "Hello");
    assert!(typed["wait_state"].starts_with("StateChange Exception 0x80000003"));
    assert!(typed["get_version_api_resp"].starts_with("Manipulate GetVersion"));
    assert!(typed["read_virtual_memory_api_resp"].starts_with("Manipulate Read Virtual"));
    // The GetVersion reply names the kernel (docs/kdnet.md, "The protocol in brief", Win8.1 9600).
    let d = datagram::open(&get("get_version_api_resp"), &key, Some(&dk)).unwrap();
    let Payload::Data(p) = Payload::parse(d.payload()).unwrap() else {
        panic!("not data")
    };
    let m = Manipulate::parse(&p.data).unwrap();
    let Call::GetVersion(v) = m.call() else {
        panic!("not GetVersion")
    };
    assert_eq!((v.minor, v.machine, v.flags), (9600, 0x8664, 7));
    assert_eq!(v.kern_base, 0xfffff8026bc18000);
    assert_eq!(v.debugger_data_list, 0xfffff8026bef91f0);
    let _ = Space::Virtual;
}
