//! A decrypted KDNET payload: the KD packet layer (leader, type, id,
//! ByteCount, checksum) and the DbgKd messages in it, state changes,
//! manipulate-state replies, debug I/O and file I/O, decoded as the
//! session decodes them (crates/kdnet/src/packet.rs, api.rs, session.rs).
use pooldump_kdnet::StopInfo;
use pooldump_kdnet::api::{DebugIo, FileIo, KdMessage, Manipulate, StateChange};
use pooldump_kdnet::packet::{KdPacket, PacketType, Payload};

fn message(m: &KdMessage) {
    match m {
        KdMessage::StateChange(sc) => state_change(sc),
        KdMessage::Manipulate(mm) => manipulate(mm),
        KdMessage::DebugIo(io) => {
            let _ = io.text();
            let _ = io.empty_answer();
        }
        KdMessage::FileIo(f) => {
            let _ = f.path();
            let _ = f.refuse();
        }
    }
    let bytes = m.to_bytes();
    let again = KdMessage::parse(m.packet_type(), &bytes).expect("a message re-parses");
    assert_eq!(&again, m);
}

fn state_change(sc: &StateChange) {
    let _ = sc.event();
    let _ = sc.control_report();
    let stop = StopInfo::from(sc);
    let _ = format!("{stop:?} {}", stop.is_breakpoint());
}

fn manipulate(m: &Manipulate) {
    let _ = format!("{:?}", m.call());
}

pub fn run(data: &[u8]) {
    if let Ok(p) = Payload::parse(data) {
        assert_eq!(Payload::parse(&p.to_bytes()).as_ref(), Ok(&p));
        if let Payload::Data(p) = p
            && let Ok(m) = KdMessage::parse(p.kind, &p.data)
        {
            message(&m);
        }
    }
    // The same bytes as each message body, so every decoder sees every
    // input (the packet layer's checksum would otherwise gate them).
    for kind in [
        PacketType::StateChange64,
        PacketType::StateManipulate,
        PacketType::DebugIo,
        PacketType::FileIo,
    ] {
        if let Ok(m) = KdMessage::parse(kind, data) {
            message(&m);
        }
    }
    if let Ok(io) = DebugIo::parse(data) {
        let _ = io.text();
    }
    if let Ok(f) = FileIo::parse(data) {
        let _ = f.path();
    }
    if let Some(p) = KdPacket::new(PacketType::StateManipulate, 0x8080_0000, data.to_vec()) {
        let wire = Payload::Data(p.clone()).to_bytes();
        assert_eq!(Payload::parse(&wire), Ok(Payload::Data(p)));
    }
}
