//! Live KDNET sessions against the simulated target over loopback: reads
//! through the session must give the synthetic machine's exact bytes,
//! whatever the network does, and failures must be clear and bounded.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use pooldump_core::kernel::{self, BootHints, KLDR_BOOTSTRAP, ScanLimits, WalkLimits};
use pooldump_core::{KernelVa, Memory, MemoryError, PhysAddr};
use pooldump_kdnet::{KdnetConfig, KdnetError, LiveTarget, Session, Timeouts};
use pooldump_kdnet_sim::{Faults, SimConfig, SimTarget};
use pooldump_kit::{Machine, NtBuild, Scenario};

const KEY: &str = "1.2.3.4";

/// The default, adaptive timers (the simulated target answers in
/// microseconds, and they adapt to it), with a shorter bound on a target
/// that stopped answering so the tests that make one do not wait long.
fn fast() -> Timeouts {
    Timeouts {
        offer: Duration::from_secs(20),
        give_up: Duration::from_secs(5),
        ..Timeouts::default()
    }
}

fn config(key: &str, timeouts: Timeouts) -> KdnetConfig {
    KdnetConfig {
        port: 0,
        key: key.parse().unwrap(),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        timeouts,
        chunk: 1024,
        cache_limit: 1 << 30,
    }
}

/// Start a target for `m` and connect to it.
fn connect(
    m: Machine,
    faults: Faults,
    seed: u64,
    timeouts: Timeouts,
) -> (SimTarget, Result<LiveTarget, KdnetError>) {
    let session = Session::bind(config(KEY, timeouts)).unwrap();
    let mut cfg = SimConfig::new(KEY.parse().unwrap(), session.local_addr().unwrap());
    cfg.faults = faults;
    cfg.seed = seed;
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let live = session.accept();
    (sim, live)
}

fn machine(seed: u64) -> Machine {
    Machine::build(&Scenario::small(NtBuild::Win10_19041, seed))
}

/// The kit's own view of virtual memory (panics on unmapped pages, so only
/// for ranges the truth says are mapped).
fn kit_bytes(m: &Machine, va: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    m.asp.read(&m.mem, va, &mut b);
    b
}

#[test]
fn reads_under_loss_duplicates_and_reordering_give_the_machines_bytes() {
    let m = machine(11);
    let truth = m.truth.clone();
    let t = &truth.tracker;
    let table_len = (t.size * t.entry_size) as usize;
    let want_table = kit_bytes(&m, t.table_va, table_len);
    let kdbg = truth.kernel.kd_debugger_data_block;
    let want_kdbg = kit_bytes(&m, kdbg, 0x340);
    let dtb = truth.kernel.dtb;
    let mut want_pml4 = vec![0u8; 0x1000];
    m.mem.read(dtb, &mut want_pml4);

    let faults = Faults {
        corrupt: 0.02,
        forge: 0.02,
        ..Faults::lossy(0.10)
    };
    let (sim, live) = connect(m, faults, 5, fast());
    let live = live.expect("connects through 10% loss");

    // Identity from GetVersion and the KDBG through DebuggerDataList.
    assert_eq!(live.kern_base().0, truth.kernel.kern_base);
    assert_eq!(
        live.ps_loaded_module_list().0,
        truth.kernel.ps_loaded_module_list
    );
    assert_eq!(live.kdbg_va(), Some(KernelVa(kdbg)));
    assert_eq!(live.kernel_dtb(), PhysAddr(dtb));

    // The whole tracker table, the KDBG and the PML4, byte for byte.
    let mut got = vec![0u8; table_len];
    live.read_virtual(KernelVa(t.table_va), &mut got).unwrap();
    assert!(got == want_table, "tracker table differs");
    let mut got = vec![0u8; want_kdbg.len()];
    live.read_virtual(KernelVa(kdbg), &mut got).unwrap();
    assert_eq!(got, want_kdbg);
    let mut got = vec![0u8; 0x1000];
    live.read_physical(PhysAddr(dtb), &mut got).unwrap();
    assert_eq!(got, want_pml4);

    // The same kernel identity and module list as the kit built.
    let hints = BootHints {
        kd_debugger_data_block: live.kdbg_va().unwrap(),
        ps_loaded_module_list: live.ps_loaded_module_list(),
    };
    let k = kernel::identify(&live, &hints, None, &ScanLimits::default()).unwrap();
    assert_eq!(k.kern_base.0, truth.kernel.kern_base);
    let cv = k.image.codeview.expect("nt's RSDS");
    assert_eq!(cv.store_key, truth.kernel.store_key);
    let list = kernel::walk_loaded_modules(
        &live,
        live.ps_loaded_module_list(),
        &KLDR_BOOTSTRAP,
        &WalkLimits::default(),
    );
    assert!(list.complete, "{:?}", list.warnings);
    let got: Vec<(String, u64, u64)> = list
        .modules
        .iter()
        .map(|m| (m.name.clone(), m.base.0, u64::from(m.size)))
        .collect();
    let want: Vec<(String, u64, u64)> = truth
        .kernel
        .modules
        .iter()
        .map(|m| (m.base_name.clone(), m.base, m.size))
        .collect();
    assert_eq!(got, want);

    // Faults happened and were survived; nothing ran twice.
    let s = sim.stats();
    let l = live.stats();
    assert!(
        s.faults_dropped > 0 && s.faults_duplicated > 0 && s.faults_reordered > 0,
        "{s:?}"
    );
    assert_eq!(s.double_executions, 0, "{s:?}");
    assert!(l.retransmits > 0, "{l:?}");
    // Every forged or corrupted datagram that reached us was dropped.
    assert!(l.dropped_bad_tag + l.dropped_malformed > 0, "{l:?}");
    live.resume().unwrap();
    assert!(sim.stats().continues >= 1);
}

#[test]
fn forged_datagrams_are_dropped_counted_and_never_acted_on() {
    let m = machine(12);
    let va = m.truth.kernel.kern_base;
    let want = kit_bytes(&m, va, 0x2000);
    let (sim, live) = connect(m, Faults::default(), 1, fast());
    let live = live.unwrap();
    let before = live.stats().dropped_bad_tag;
    // Forged replies claiming 0x41 bytes, sent while reads are under way.
    let mut got = vec![0u8; 0x2000];
    for i in 0..4 {
        sim.forge();
        live.read_virtual(
            KernelVa(va + i * 0x800),
            &mut got[i as usize * 0x800..][..0x800],
        )
        .unwrap();
    }
    assert_eq!(got, want);
    let forged = sim.stats().forged_sent;
    assert_eq!(forged, 4);
    // Loopback keeps order: the last forgery is queued before the reply
    // to this read, so the read drains it.
    let mut b = [0u8; 8];
    live.read_virtual(KernelVa(va + 0x3000), &mut b).unwrap();
    assert_eq!(live.stats().dropped_bad_tag - before, forged);
}

#[test]
fn corrupted_datagrams_are_dropped_and_reads_stay_exact() {
    let m = machine(13);
    let t = m.truth.tracker.clone();
    let len = (t.size * t.entry_size) as usize;
    let want = kit_bytes(&m, t.table_va, len);
    let faults = Faults {
        corrupt: 0.15,
        ..Faults::default()
    };
    let (sim, live) = connect(m, faults, 9, fast());
    let live = live.unwrap();
    let mut got = vec![0u8; len];
    live.read_virtual(KernelVa(t.table_va), &mut got).unwrap();
    assert!(got == want);
    let s = sim.stats();
    let l = live.stats();
    assert!(s.faults_corrupted > 0);
    // A flipped bit fails the HMAC or the framing, never the data.
    assert!(l.dropped_bad_tag + l.dropped_malformed > 0, "{l:?}");
    assert_eq!(s.double_executions, 0);
}

#[test]
fn wrong_key_is_a_clear_error_after_the_first_offer() {
    let session = Session::bind(config("1.2.3.5", fast())).unwrap();
    let cfg = SimConfig::new(KEY.parse().unwrap(), session.local_addr().unwrap());
    let _sim = SimTarget::spawn(machine(14), cfg).unwrap();
    match session.accept() {
        Err(KdnetError::WrongKey { .. }) => {}
        other => panic!("expected WrongKey, got {other:?}"),
    }
}

#[test]
fn no_target_is_a_clear_error_not_a_hang() {
    let mut t = fast();
    t.offer = Duration::from_millis(300);
    let err = Session::connect(config(KEY, t)).unwrap_err();
    assert!(matches!(err, KdnetError::NoOffer { .. }), "{err}");
    assert!(err.to_string().contains("bcdedit"), "{err}");
}

/// A session on a fault-free link that has read the kernel's first bytes;
/// then `mishap` befalls the target (it may keep it running): the session,
/// the kernel base, and the error of the next read.
fn read_after_mishap(
    seed: u64,
    mishap: impl FnOnce(SimTarget) -> Option<SimTarget>,
) -> (Option<SimTarget>, LiveTarget, u64, MemoryError) {
    let m = machine(seed);
    let va = m.truth.kernel.kern_base;
    let (sim, live) = connect(m, Faults::default(), 1, fast());
    let live = live.unwrap();
    let mut b = [0u8; 8];
    live.read_virtual(KernelVa(va), &mut b).unwrap();
    let sim = mishap(sim);
    let e = live
        .read_virtual(KernelVa(va + 0x5000), &mut b)
        .unwrap_err();
    (sim, live, va, e)
}

#[test]
fn a_vanished_target_ends_the_session_with_a_clear_error() {
    let (_, live, va, e) = read_after_mishap(15, |sim| {
        drop(sim.stop());
        None
    });
    let MemoryError::Transport(msg) = &e else {
        panic!("{e:?}")
    };
    assert!(msg.contains("stopped answering"), "{msg}");
    // Later reads fail at once with the cause, not after another timeout.
    let mut b = [0u8; 8];
    let e = live
        .read_virtual(KernelVa(va + 0x6000), &mut b)
        .unwrap_err();
    assert!(e.to_string().contains("ended earlier"), "{e}");
    assert!(matches!(live.resume(), Err(KdnetError::Dead(_))));
}

#[test]
fn a_reboot_mid_session_is_reported() {
    let (_sim, _live, _, e) = read_after_mishap(16, |sim| {
        sim.reboot();
        Some(sim)
    });
    assert!(e.to_string().contains("rebooted"), "{e}");
}

#[test]
fn resume_break_in_and_write() {
    let m = machine(17);
    let va = m.truth.kernel.kern_base + 0x40;
    let (sim, live) = connect(m, Faults::lossy(0.05), 3, fast());
    let live = live.unwrap();
    live.resume().unwrap();
    let mut b = [0u8; 4];
    let e = live.read_virtual(KernelVa(va), &mut b).unwrap_err();
    assert!(e.to_string().contains("running"), "{e}");
    let stop = live.break_in().unwrap();
    assert_eq!(stop.processor, 0);
    live.write_virtual(KernelVa(va), b"Leak").unwrap();
    live.read_virtual(KernelVa(va), &mut b).unwrap();
    assert_eq!(&b, b"Leak");
    live.resume().unwrap();
    drop(live);
    let m = sim.stop().expect("the machine back");
    assert_eq!(kit_bytes(&m, va, 4), b"Leak");
}

#[test]
fn unmapped_and_transition_pages_read_as_in_a_dump() {
    let mut s = Scenario::small(NtBuild::Win10_19041, 18);
    s.transition = 0.2;
    s.paged_out = 0.1;
    let m = Machine::build(&s);
    let dump = pooldump_core::CrashDump::from_bytes(
        "MEMORY.DMP",
        m.dump_bytes(pooldump_kit::DumpKind::Full),
    )
    .unwrap();
    // Paged-out pages the kit left in transition are readable from the
    // dump through the page walk; the live session must agree.
    let transition: Vec<u64> = m.truth.pages.transition.clone();
    let paged_out: Vec<u64> = m.truth.pages.paged_out.clone();
    let (_sim, live) = connect(m, Faults::default(), 1, fast());
    let live = live.unwrap();
    assert!(!transition.is_empty(), "the scenario has transition pages");
    for va in transition.iter().take(8) {
        let mut a = vec![0u8; 0x1000];
        let mut b = vec![0u8; 0x1000];
        dump.read_virtual(KernelVa(*va), &mut a).unwrap();
        live.read_virtual(KernelVa(*va), &mut b).unwrap();
        assert!(a == b, "transition page {va:#x}");
    }
    // A paged-out page fails as in the dump: its PTE is not present.
    assert!(!paged_out.is_empty(), "the scenario has paged-out pages");
    for va in paged_out.iter().take(4) {
        let mut a = [0u8; 64];
        let (e1, e2) = (
            dump.read_virtual(KernelVa(*va), &mut a).unwrap_err(),
            live.read_virtual(KernelVa(*va), &mut a).unwrap_err(),
        );
        assert_eq!(e1, e2);
    }
    // An unmapped address fails with the same error as the dump's.
    let hole = KernelVa(0xFFFF_F6FB_0000_0000u64.wrapping_add(0x1234_5000));
    let mut b = [0u8; 16];
    assert_eq!(
        live.read_virtual(hole, &mut b).unwrap_err(),
        dump.read_virtual(hole, &mut b).unwrap_err()
    );
}
