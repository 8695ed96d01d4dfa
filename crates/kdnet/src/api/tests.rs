use super::*;

#[test]
fn requests_round_trip_and_decode() {
    let r = Manipulate::read(Space::Virtual, 1, 0xFFFF_F800_0000_1000, 5000);
    let back = Manipulate::parse(&r.to_bytes()).unwrap();
    assert_eq!(back, r);
    assert_eq!(
        back.call(),
        Call::Read(Transfer {
            space: Space::Virtual,
            address: 0xFFFF_F800_0000_1000,
            count: MAX_TRANSFER,
            actual: 0
        })
    );
    let c = Manipulate::continue2(0, status::DBG_CONTINUE);
    assert_eq!(
        c.call(),
        Call::Continue2(Continue2 {
            status: status::DBG_CONTINUE,
            trace_flag: 0,
            dr7: 0x400,
            symbol_start: 1,
            symbol_end: 0
        })
    );
    // Every byte of the union distinct, so a field at the wrong offset or
    // of the wrong width shows.
    let raw: [u8; 40] = std::array::from_fn(|i| i as u8 + 1);
    let want = Version::from_bytes(&raw);
    assert_eq!(want.minor, 0x0403);
    assert_eq!(want.protocol, 5);
    assert_eq!(want.machine, 0x0A09);
    assert_eq!(want.simulation, 14);
    assert_eq!(
        want.kern_base,
        u64::from_le_bytes(raw[16..24].try_into().unwrap())
    );
    assert_eq!(
        want.debugger_data_list,
        u64::from_le_bytes(raw[32..].try_into().unwrap())
    );
    let mut v = Manipulate::get_version(0).reply(0, Vec::new());
    v.set_version(&want);
    assert_eq!(v.args, raw);
    assert_eq!(
        Manipulate::parse(&v.to_bytes()).unwrap().call(),
        Call::GetVersion(want)
    );
}

#[test]
fn state_change_round_trips() {
    let at = StoppedAt {
        processor: 0,
        number_processors: 2,
        thread: 0xFFFF_8000_1234_0000,
        pc: 0xFFFF_F802_6BD7_2B90,
    };
    let s = StateChange::breakpoint(at, &[0xCC; 16]);
    let b = s.to_bytes();
    assert_eq!(b.len(), STATE_CHANGE_LEN);
    let back = StateChange::parse(&b).unwrap();
    assert_eq!(back, s);
    assert!(matches!(
        back.event(),
        Event::Exception {
            code: status::BREAKPOINT,
            first_chance: true,
            ..
        }
    ));
    assert_eq!(back.control_report().instruction_stream[0], 0xCC);
    // The report's tail as Windows fills it: SegCs, SegDs, SegEs, SegFs.
    assert_eq!(b[0xC0 + 0x28..0xF0], [0x10, 0, 0x2B, 0, 0x2B, 0, 0x53, 0]);
    assert_eq!(back.control_report().to_bytes(), s.control_report);
    assert!(matches!(
        StateChange::parse(&b[..0x80]),
        Err(MessageError::Short { .. })
    ));
}
