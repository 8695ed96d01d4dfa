//! The event API for a target that runs (the PoolHitTag loop on
//! a lossy link): waiting for what the running target reports on its
//! own, the stopped processor's registers, continuing with a status, and
//! getting a lost session back, against the simulated target over a lossy
//! loopback link. Every wait is bounded; every test leaves the target
//! running.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use pooldump_core::{KernelVa, Memory};
use pooldump_kdnet::api::{Event, context, status};
use pooldump_kdnet::{
    ContinueStatus, KdnetConfig, KdnetError, LiveTarget, Session, TargetEvent, TargetState,
    Timeouts,
};
use pooldump_kdnet_sim::{Faults, SimConfig, SimEvent, SimTarget};
use pooldump_kit::{Machine, scenario};

const KEY: &str = "5.6.7.8";

fn timeouts(give_up: Duration) -> Timeouts {
    Timeouts {
        offer: Duration::from_secs(20),
        give_up,
        ..Timeouts::default()
    }
}

/// A target for the sample machine, connected; and nt!PoolHitTag's
/// address.
fn connect(faults: Faults, seed: u64, t: Timeouts) -> (SimTarget, LiveTarget, u64) {
    let m = Machine::build(&scenario::sample());
    let hit_tag = m.sym_va("PoolHitTag").expect("nt!PoolHitTag");
    let session = Session::bind(KdnetConfig {
        port: 0,
        key: KEY.parse().unwrap(),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        timeouts: t,
        chunk: 1024,
        cache_limit: 1 << 30,
    })
    .unwrap();
    let mut cfg = SimConfig::new(KEY.parse().unwrap(), session.local_addr().unwrap());
    cfg.faults = faults;
    cfg.seed = seed;
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let live = session.accept().expect("connects");
    (sim, live, hit_tag)
}

/// The next event, waiting in short slices as a caller that checks for
/// Ctrl-C would; fails the test after `limit`.
fn next_event(live: &LiveTarget, limit: Duration) -> TargetEvent {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let slice = (Instant::now() + Duration::from_millis(100)).min(end);
        if let Some(ev) = live.wait_event(slice).expect("waits") {
            return ev;
        }
    }
    panic!("no event within {limit:?}");
}

fn stopped(ev: TargetEvent) -> pooldump_kdnet::StopInfo {
    match ev {
        TargetEvent::Stopped(s) => s,
        other => panic!("expected a stop, got {other:?}"),
    }
}

/// An `int3` in nt's code (lld pads functions with 0xCC) and an address
/// that is not one.
fn int3_and_not(live: &LiveTarget) -> (u64, u64) {
    let text = live.kern_base().0 + 0x1000;
    let mut code = vec![0u8; 0x400];
    live.read_virtual(KernelVa(text), &mut code).unwrap();
    let cc = code
        .iter()
        .position(|&b| b == 0xCC)
        .expect("an int3 in .text");
    let other = code.iter().position(|&b| b != 0xCC).unwrap();
    (text + cc as u64, text + other as u64)
}

#[test]
fn a_running_target_reports_prints_breakpoints_exceptions_and_image_loads() {
    let (sim, live, hit_tag) = connect(Faults::lossy(0.10), 3, timeouts(Duration::from_secs(15)));
    let (int3, not_int3) = int3_and_not(&live);
    live.write_virtual(KernelVa(hit_tag), b"Leak").unwrap();
    // Before running there is nothing to wait for.
    assert!(matches!(
        live.wait_event(Instant::now() + Duration::from_millis(50)),
        Err(KdnetError::Stopped)
    ));
    live.resume().unwrap();
    assert_eq!(live.state(), TargetState::Running);
    let before = sim.stats().set_contexts;

    // A DbgPrint: returned once, the target keeps running.
    assert!(sim.emit(SimEvent::Print {
        processor: 1,
        text: "leakydrv: hello\n".into(),
    }));
    assert_eq!(
        next_event(&live, Duration::from_secs(10)),
        TargetEvent::Print {
            processor: 1,
            text: "leakydrv: hello\n".into()
        }
    );
    assert_eq!(live.state(), TargetState::Running);
    assert!(sim.stats().running);

    // A hard-coded int3 on CPU 1, as PoolHitTag's break.
    assert!(sim.emit(SimEvent::Breakpoint {
        processor: 1,
        pc: int3,
    }));
    let stop = stopped(next_event(&live, Duration::from_secs(10)));
    assert_eq!(
        (stop.processor, stop.number_processors, stop.pc),
        (1, 2, int3)
    );
    assert!(stop.is_breakpoint());
    assert!(matches!(
        stop.event,
        Event::Exception {
            code: status::BREAKPOINT,
            first_chance: true,
            address,
            ..
        } if address == int3
    ));
    assert_eq!(stop.report.instruction_stream[0], 0xCC);
    assert!(!sim.stats().running);
    // Registers of the processor that stopped, and of the other one.
    let c1 = live.get_context_of(1).unwrap();
    let c0 = live.get_context_of(0).unwrap();
    assert_eq!(context::reg(&c1, context::RIP), Some(int3));
    assert_ne!(
        context::reg(&c0, context::RSP),
        context::reg(&c1, context::RSP)
    );
    // Memory reads while stopped.
    let mut tag = [0u8; 4];
    live.read_virtual(KernelVa(hit_tag), &mut tag).unwrap();
    assert_eq!(&tag, b"Leak");
    // Continue: the int3 is stepped over (SetContext with Rip + 1).
    live.continue_with(ContinueStatus::Continue).unwrap();
    let s = sim.stats();
    assert!(s.running);
    assert_eq!(s.set_contexts, before + 1);
    assert_eq!(s.last_continue_status, Some(status::DBG_CONTINUE));

    // An exception continued as not handled: Rip is left alone.
    assert!(sim.emit(SimEvent::Exception {
        processor: 0,
        pc: not_int3,
        code: 0xC000_0005,
        parameters: vec![1, 0xDEAD_0000],
        first_chance: true,
    }));
    let stop = stopped(next_event(&live, Duration::from_secs(10)));
    assert_eq!(
        stop.event,
        Event::Exception {
            code: 0xC000_0005,
            flags: 0,
            address: not_int3,
            parameters: vec![1, 0xDEAD_0000],
            first_chance: true,
        }
    );
    assert!(!stop.is_breakpoint());
    live.continue_with(ContinueStatus::ExceptionNotHandled)
        .unwrap();
    let s = sim.stats();
    assert_eq!(s.set_contexts, before + 1);
    assert_eq!(
        s.last_continue_status,
        Some(status::DBG_EXCEPTION_NOT_HANDLED)
    );

    // A breakpoint continued as handled, then an image load.
    assert!(sim.emit(SimEvent::Breakpoint {
        processor: 0,
        pc: int3,
    }));
    stopped(next_event(&live, Duration::from_secs(10)));
    live.continue_with(ContinueStatus::ExceptionHandled)
        .unwrap();
    assert_eq!(sim.stats().set_contexts, before + 2);
    assert!(sim.emit(SimEvent::LoadSymbols {
        processor: 0,
        base: 0xFFFF_F806_1000_0000,
        size: 0x7000,
        path: "\\SystemRoot\\system32\\drivers\\newdrv.sys".into(),
    }));
    let stop = stopped(next_event(&live, Duration::from_secs(10)));
    assert_eq!(
        stop.event,
        Event::LoadSymbols {
            base: 0xFFFF_F806_1000_0000,
            process_id: u64::MAX,
            checksum: 0,
            size: 0x7000,
            unload: false,
            path: "\\SystemRoot\\system32\\drivers\\newdrv.sys".into(),
        }
    );
    live.resume().unwrap();
    // Not a breakpoint: continued without touching Rip.
    assert_eq!(sim.stats().set_contexts, before + 2);

    // Each event came back exactly once, whatever the link duplicated or
    // lost; nothing was executed twice; the target runs.
    let (s, l) = (sim.stats(), live.stats());
    assert_eq!(s.events_sent, 5, "{s:?}");
    // The break-in at connect and the five events, once each.
    assert_eq!(l.events, 6, "{l:?}");
    assert!(s.faults_dropped > 0 && s.faults_duplicated > 0, "{s:?}");
    assert_eq!(s.double_executions, 0);
    assert!(s.running);
    assert!(matches!(
        live.wait_event(Instant::now() + Duration::from_millis(100)),
        Ok(None)
    ));
}

#[test]
fn waiting_is_bounded_even_when_the_target_is_silent() {
    let (sim, live, _) = connect(Faults::default(), 4, timeouts(Duration::from_secs(5)));
    live.resume().unwrap();
    for silent in [false, true] {
        sim.set_silent(silent);
        let t = Instant::now();
        assert!(matches!(
            live.wait_event(t + Duration::from_millis(400)),
            Ok(None)
        ));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(live.state(), TargetState::Running);
    }
    // A break-in into a silent target fails within the bound, clearly.
    let t = Instant::now();
    let e = live.break_in().unwrap_err();
    assert!(matches!(e, KdnetError::NoResponse { .. }), "{e}");
    assert!(e.to_string().contains("stopped answering"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(matches!(live.state(), TargetState::Dead(_)));
    sim.set_silent(false);
}

#[test]
fn a_lost_link_is_reconnected_restored_and_resumed() {
    let (sim, live, hit_tag) = connect(Faults::lossy(0.05), 5, timeouts(Duration::from_secs(2)));
    let hit_tag = KernelVa(hit_tag);
    let mut old = [0u8; 4];
    live.read_virtual(hit_tag, &mut old).unwrap();
    live.write_virtual(hit_tag, b"Leak").unwrap();
    live.resume().unwrap();

    // The link goes away while the target runs: a break-in fails...
    sim.set_silent(true);
    assert!(matches!(
        live.break_in(),
        Err(KdnetError::NoResponse { .. })
    ));
    let mut b = [0u8; 4];
    assert!(live.read_virtual(hit_tag, &mut b).is_err());
    // ...and when it is back, the session is re-established on the same
    // socket, the target stopped, restored and resumed.
    sim.set_silent(false);
    let r = live.reconnect(Duration::from_secs(10)).expect("reconnects");
    assert!(!r.rebooted);
    assert_eq!(live.state(), TargetState::Stopped(r.stop.clone()));
    live.read_virtual(hit_tag, &mut b).unwrap();
    assert_eq!(&b, b"Leak", "the same boot: memory as we left it");
    live.write_virtual(hit_tag, &old).unwrap();
    live.resume().unwrap();
    assert!(sim.stats().running);
    assert!(sim.stats().handshakes >= 2);
    drop(live);
    let m = sim.stop().unwrap();
    let mut now = [0u8; 4];
    m.asp.read(&m.mem, hit_tag.0, &mut now);
    assert_eq!(now, old, "PoolHitTag restored");
}

#[test]
fn a_reboot_is_reported_and_a_new_session_made_on_the_same_socket() {
    let (sim, live, _) = connect(Faults::default(), 6, timeouts(Duration::from_secs(5)));
    live.resume().unwrap();
    sim.reboot();
    // The next offer carries a new boot identity.
    let end = Instant::now() + Duration::from_secs(10);
    let e = loop {
        match live.wait_event(Instant::now() + Duration::from_millis(100)) {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < end, "no sign of the reboot"),
        }
    };
    assert!(matches!(e, KdnetError::TargetRebooted { .. }), "{e}");
    let r = live.reconnect(Duration::from_secs(10)).expect("reconnects");
    assert!(r.rebooted);
    assert!(!sim.stats().running);
    live.resume().unwrap();
    assert!(sim.stats().running);
}

#[test]
fn a_failed_reconnect_is_a_clear_error_and_bounded() {
    let (sim, live, _) = connect(Faults::default(), 7, timeouts(Duration::from_secs(5)));
    live.resume().unwrap();
    sim.set_silent(true);
    let t = Instant::now();
    let e = live.reconnect(Duration::from_millis(800)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(matches!(e, KdnetError::ReconnectFailed { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("could not get it back") && msg.contains("connect again"),
        "{msg}"
    );
    assert!(matches!(live.state(), TargetState::Dead(_)));
    // Back on the network: the same handle recovers.
    sim.set_silent(false);
    live.reconnect(Duration::from_secs(10)).unwrap();
    live.resume().unwrap();
    assert!(sim.stats().running);
}
