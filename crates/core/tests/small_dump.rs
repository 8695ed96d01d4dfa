//! Small memory dumps (DumpType 4) read through the library: the real
//! Windows 11 ARM64 file in ../shared/realworld/ field by field, x64 ones
//! the kit writes against its truth, and damaged ones.
//! `tests/cli/small_dump.rs` runs `info`, `analyze`, `find`, `stack` and
//! `snapshot` on them.

#[path = "../../../tests/support/prereq.rs"]
mod support;

use pooldump_core::dump::triage::{Machine, TriageContext};
use pooldump_core::dump::{AnyDump, TriageDump, open_any};
use pooldump_core::{KernelVa, Memory, MemoryError};
use pooldump_kit::triage::SmallDumpOptions;
use pooldump_kit::{Machine as KitMachine, NtBuild, Scenario};

fn real() -> Option<std::path::PathBuf> {
    support::shared_file("realworld/triage-arm64-22000.dmp")
}

/// The values below were read off the file by hand (a hex dump against
/// the TRIAGE_DUMP64 declaration), not by pooldump.
#[test]
fn the_real_arm64_small_dump_reads_as_windows_wrote_it() {
    let Some(p) = real() else { return };
    let d = match open_any(&p).unwrap() {
        AnyDump::Small(d) => d,
        AnyDump::Kernel(_) => panic!("a DumpType 4 file opened as a kernel dump"),
    };
    let s = d.summary();
    assert_eq!(s.machine, Machine::Arm64);
    assert_eq!((s.build, s.processors), (22000, 8));
    assert_eq!(s.bug_check.code, 0x1C8);
    assert_eq!(
        s.bug_check.name,
        Some("MANUALLY_INITIATED_POWER_BUTTON_HOLD")
    );
    assert_eq!(
        s.bug_check.parameters,
        [0x1B58, 0xFFFF_F803_F3A2_0860, 0, 0]
    );
    assert!(s.complete, "the 'TRGD' marker at ValidOffset");
    assert_eq!(s.triage.size_of_dump, 0xAC46C);
    assert_eq!(s.triage.top_of_stack, KernelVa(0xFFFF_E00E_0E4B_C4A0));
    // The driver list: 245 entries, names from the string pool.
    assert_eq!(s.drivers.len(), 245);
    assert_eq!(s.drivers[0].name, r"\SystemRoot\system32\ntoskrnl.exe");
    assert_eq!(s.drivers[0].base, KernelVa(0xFFFF_F803_F2E0_0000));
    assert_eq!(s.drivers[0].size, 0x103E000);
    assert_eq!(s.drivers[0].time_date_stamp, 0xDF29_1B09);
    assert_eq!(s.drivers[244].base_name(), "terminpt.sys");
    assert_eq!(s.unloaded_drivers.len(), 11);
    assert_eq!(s.unloaded_drivers[0].name, "MSKSSRV.sys");
    assert_eq!(s.unloaded_drivers[0].start, KernelVa(0xFFFF_F803_FA16_0000));
    assert_eq!(s.unloaded_drivers[10].name, "WdBoot.sys");
    // KDBG copy: KernBase agrees with the driver list's nt entry.
    let k = s.kdbg.as_ref().unwrap();
    assert_eq!(k.kern_base, s.drivers[0].base);
    assert_eq!(k.ps_loaded_module_list, s.ps_loaded_module_list);
    assert_eq!(k.pool_track_table, KernelVa(0xFFFF_F803_F3A1_69F8));
    // Crashing thread through the offsets the kernel published in KDBG.
    let c = &s.crashing;
    assert_eq!(c.processor, Some(0));
    assert_eq!(c.thread, Some(KernelVa(0xFFFF_BB8E_B171_9180)));
    assert_eq!(c.process, Some(KernelVa(0xFFFF_BB8E_B169_0080)));
    assert_eq!(c.thread_state, Some(2));
    assert_eq!(c.stack_base, Some(KernelVa(0xFFFF_E00E_0E4B_D000)));
    // The stack runs from TopOfStack to the thread's StackBase.
    assert_eq!(
        s.triage.top_of_stack.0 + s.stack_bytes,
        c.stack_base.unwrap().0
    );
    // ARM64 CONTEXT: Sp is the top of the captured stack, Pc the
    // exception address.
    let ctx = d.context().unwrap();
    assert!(matches!(ctx, TriageContext::Arm64(_)));
    assert_eq!(ctx.sp(), s.triage.top_of_stack.0);
    assert_eq!(ctx.pc(), s.exception.as_ref().unwrap().address.0);
    assert_eq!(s.data_blocks, 679);
    assert_eq!(s.secondary_blobs.len(), 42);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);

    // The sparse memory: the stack, a data block and the KDBG copy read
    // at their addresses; anything else fails naming what is missing.
    let mut w = [0u8; 8];
    d.read_virtual(KernelVa(ctx.sp()), &mut w).unwrap();
    let mut kd = [0u8; 4];
    d.read_virtual(KernelVa(s.kd_debugger_data_block.0 + 0x10), &mut kd)
        .unwrap();
    assert_eq!(&kd, b"KDBG");
    // Bug check parameter 2 points into a data block the kernel kept.
    let mut blk = [0u8; 16];
    d.read_virtual(KernelVa(s.bug_check.parameters[1]), &mut blk)
        .unwrap();
    // nt's first 0x100 bytes are a data block: the MZ header.
    let mut mz = [0u8; 2];
    d.read_virtual(k.kern_base, &mut mz).unwrap();
    assert_eq!(&mz, b"MZ");
    let e = d
        .read_virtual(KernelVa(k.kern_base.0 + 0x100), &mut w)
        .unwrap_err();
    assert!(matches!(e, MemoryError::NotCaptured { .. }), "{e:?}");
    assert!(
        e.to_string().contains("not in the small memory dump"),
        "{e}"
    );
    assert!(e.to_string().contains("triage data block"), "{e}");
    let mut tail = [0u8; 0x200];
    assert_eq!(d.read_virtual_partial(k.kern_base, &mut tail), Ok(0x100));
    assert!(d.translate(k.kern_base).is_err());
}

/// Every field pooldump reads from a kit-made x64 small dump equals what
/// the kit put there (its truth, read from the machine it built).
#[test]
fn kit_x64_small_dumps_read_back_as_written() {
    for (build, seed) in [
        (NtBuild::Win7_7601, 3),
        (NtBuild::Win10_19041, 7),
        (NtBuild::Win11_22000, 11),
    ] {
        let m = KitMachine::build(&Scenario::small(build, seed));
        let (bytes, t) = m.small_dump(&SmallDumpOptions::default());
        assert_eq!(bytes.len() as u64, t.file_size);
        let d = TriageDump::from_bytes("kit-small.dmp", bytes).unwrap();
        let s = d.summary();
        assert_eq!(s.machine, Machine::X64, "{build:?}");
        assert_eq!(s.build, t.build);
        assert_eq!(s.processors, t.processors);
        assert_eq!(s.bug_check.code, t.bugcheck_code);
        assert_eq!(s.bug_check.parameters, t.bugcheck_parameters);
        assert!(
            s.complete && s.warnings.is_empty(),
            "{build:?}: {:?}",
            s.warnings
        );
        let k = s.kdbg.as_ref().unwrap();
        assert_eq!(k.kern_base.0, t.kern_base);
        assert_eq!(k.va.0, t.kdbg_va);
        assert_eq!(k.pool_track_table.0, t.pool_track_table);
        let c = &s.crashing;
        assert_eq!(c.processor, Some(t.processor));
        assert_eq!(c.thread, Some(KernelVa(t.thread)), "{build:?}");
        assert_eq!(c.process, Some(KernelVa(t.process)), "{build:?}");
        // KDDEBUGGER_DATA64 publishes KTHREAD.StackBase/StackLimit from
        // Windows 8 (its 0x340 bytes before that end short of them).
        let has = |v: u64| (t.build >= 9200).then_some(KernelVa(v));
        assert_eq!(c.stack_base, has(t.stack_base), "{build:?}");
        assert_eq!(c.stack_limit, has(t.stack_limit), "{build:?}");
        assert_eq!(s.triage.top_of_stack.0, t.top_of_stack);
        assert_eq!(s.stack_bytes, t.stack_len);
        let drivers: Vec<_> = s
            .drivers
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.base.0,
                    u64::from(d.size),
                    d.time_date_stamp,
                )
            })
            .collect();
        assert_eq!(drivers, t.drivers);
        let unloaded: Vec<_> = s
            .unloaded_drivers
            .iter()
            .map(|u| (u.name.clone(), u.start.0, u.end.0))
            .collect();
        assert_eq!(unloaded, t.unloaded);
        assert_eq!(s.data_blocks as usize, t.blocks.len());
        assert_eq!(s.secondary_blobs.len(), t.secondary_blobs);
        let ctx = d.context().unwrap();
        assert!(matches!(ctx, TriageContext::X64(_)));
        assert_eq!(ctx.sp(), t.top_of_stack);

        // Each block and the stack read through Memory equal the machine's
        // own memory; the byte after a block is not there.
        for (va, len) in &t.blocks {
            let mut got = vec![0u8; *len as usize];
            d.read_virtual(KernelVa(*va), &mut got).unwrap();
            let mut want = vec![0u8; *len as usize];
            m.asp.read(&m.mem, *va, &mut want);
            assert_eq!(got, want, "{build:?} block at {va:#x}");
        }
        let mut stack = vec![0u8; t.stack_len as usize];
        d.read_virtual(KernelVa(t.top_of_stack), &mut stack)
            .unwrap();
        let mut want = vec![0u8; t.stack_len as usize];
        m.asp.read(&m.mem, t.top_of_stack, &mut want);
        assert_eq!(stack, want);
        let e = d
            .read_virtual(KernelVa(t.stack_base), &mut [0u8; 8])
            .unwrap_err();
        assert!(matches!(e, MemoryError::NotCaptured { .. }), "{e:?}");
    }
}

/// Hostile small dumps: every TRIAGE_DUMP64 field set to values that point
/// anywhere, and the file cut at many lengths. Opening, summarising and
/// reading never panic and never allocate what a field claims.
#[test]
fn damaged_small_dumps_fail_or_read_without_panicking() {
    let m = KitMachine::build(&Scenario::small(NtBuild::Win10_19041, 5));
    let (good, t) = m.small_dump(&SmallDumpOptions::default());
    let len = good.len() as u32;
    let check = |bytes: Vec<u8>| {
        if let Ok(d) = TriageDump::from_bytes("damaged.dmp", bytes) {
            let _ = d.no_pool_explanation();
            let _ = serde_json::to_string(d.summary()).unwrap();
            let mut b = [0u8; 64];
            for va in [t.top_of_stack, t.kern_base, t.kdbg_va, u64::MAX - 8, 0] {
                let _ = d.read_virtual(KernelVa(va), &mut b);
                let _ = d.read_virtual_partial(KernelVa(va), &mut b);
            }
        }
    };
    for field in (0..0x80).step_by(4) {
        for v in [0, 1, 0x2000, len - 1, len, len + 1, 0x7FFF_FFFF, u32::MAX] {
            let mut b = good.clone();
            b[0x2000 + field..0x2004 + field].copy_from_slice(&v.to_le_bytes());
            check(b);
        }
    }
    for cut in (0..good.len()).step_by(997) {
        check(good[..cut].to_vec());
    }
}
