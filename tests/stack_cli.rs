//! `pooldump stack` end to end on kit dumps whose crashing thread is
//! planted: a stack laid out as the committed images' unwind data says
//! (nt's KeBugCheckEx called from leakydrv!LeakOneRecord, called from
//! leakydrv!DriverEntry, called from nt's KiSystemStartup), and for bug
//! check 0x7E the exception's CONTEXT record with a stack of its own.
//!
//! The function RVAs and frame layouts are those of testdata/nt/
//! win10-19041/ntoskrnl.exe and testdata/drivers/leakydrv.sys (see
//! `llvm-readobj-19 --unwind` and `llvm-objdump-19 -d` on them;
//! tests/stack_unwind.rs checks the walker against the former).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pooldump_core::stack::{Reg, Registers};
use pooldump_kit::{CrashThread, DumpKind, Machine, NtBuild, Scenario};
use support::{Finished, repo_root, run_bounded};

fn pooldump(args: &[&str]) -> Finished {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pooldump"));
    c.args(args)
        .env_remove("_NT_SYMBOL_PATH")
        .env_remove("_NT_ALT_SYMBOL_PATH")
        .current_dir(repo_root());
    // Hang detector, not a timing test.
    run_bounded(&mut c, Duration::from_secs(120))
}

// nt (19041): KeBugCheckEx at 0x1040 (sub rsp,38h; the hlt loop at
// +0x30), KiSystemStartup at 0x1420 (push rsi; push rdi; sub rsp,38h).
const KE_BUG_CHECK_EX: u64 = 0x1040;
const KI_SYSTEM_STARTUP: u64 = 0x1420;
// leakydrv: LeakOneRecord at 0x1000 (sub rsp,28h; its call returns to
// +0x1a), DriverEntry at 0x10C0 (push rsi; sub rsp,20h; its call to
// LeakOneRecord returns to +0x25).
const LEAK_ONE_RECORD: u64 = 0x1000;
const DRIVER_ENTRY: u64 = 0x10C0;

struct Planted {
    nt: u64,
    drv: u64,
    rsp: [u64; 4],
    saved_rsi: u64,
    context_va: u64,
    ctx_rsp: u64,
}

/// Lay out the chain KeBugCheckEx <- LeakOneRecord <- DriverEntry <-
/// KiSystemStartup at `rsp0`, as (address, bytes) writes.
fn chain(nt: u64, drv: u64, rsp0: u64, saved_rsi: u64) -> (Vec<(u64, Vec<u8>)>, [u64; 4]) {
    let q = |v: u64| v.to_le_bytes().to_vec();
    let rsp1 = rsp0 + 0x38 + 8;
    let rsp2 = rsp1 + 0x28 + 8;
    let rsp3 = rsp2 + 0x20 + 8 + 8;
    let w = vec![
        (rsp0 + 0x38, q(drv + LEAK_ONE_RECORD + 0x1a)),
        (rsp1 + 0x28, q(drv + DRIVER_ENTRY + 0x25)),
        (rsp2 + 0x20, q(saved_rsi)),
        (rsp2 + 0x28, q(nt + KI_SYSTEM_STARTUP + 0x2b)),
        (rsp3 + 0x38, q(0x7777)), // saved rdi
        (rsp3 + 0x40, q(0x8888)), // saved rsi
        (rsp3 + 0x48, q(0)),
    ];
    (w, [rsp0, rsp1, rsp2, rsp3])
}

fn plant(m: &mut Machine, bugcheck_7e: bool) -> Planted {
    let mods = &m.truth.kernel.modules;
    let nt = mods[0].base;
    let drv = mods
        .iter()
        .find(|x| x.base_name == "leakydrv.sys")
        .expect("the kit loads leakydrv.sys")
        .base;
    let stack = m.crash_stack();
    let saved_rsi = 0xFFFF_C000_5151_5151;
    let (mut writes, rsp) = chain(nt, drv, stack.start + 0x800, saved_rsi);
    let mut gprs = [0u64; 16];
    for (i, g) in gprs.iter_mut().enumerate() {
        *g = 0xAB00 + i as u64;
    }
    // The exception's CONTEXT: LeakOneRecord faulting at +0x30 (after its
    // prolog), on the rest of the same chain.
    let ctx_rsp = stack.start + 0x1400;
    let context_va = stack.start + 0x100;
    let mut bugcheck = None;
    if bugcheck_7e {
        let (w2, _) = chain(nt, drv, ctx_rsp - 0x40, 0xFFFF_C000_6161_6161);
        // Only the part above LeakOneRecord's frame.
        writes.extend(w2.into_iter().skip(1));
        let mut r = Registers::new(drv + LEAK_ONE_RECORD + 0x30, ctx_rsp);
        r.set(Reg::Rsi, Some(0x1234));
        writes.push((context_va, r.to_context()));
        bugcheck = Some((
            0x7E,
            [0xC000_0005, drv + LEAK_ONE_RECORD + 0x30, 0, context_va],
        ));
    }
    m.plant_crash_thread(&CrashThread {
        rip: nt + KE_BUG_CHECK_EX + 0x30,
        rsp: rsp[0],
        gprs,
        writes,
        bugcheck,
    });
    Planted {
        nt,
        drv,
        rsp,
        saved_rsi,
        context_va,
        ctx_rsp,
    }
}

fn va(v: u64) -> String {
    format!("{:08x}`{:08x}", v >> 32, v & 0xFFFF_FFFF)
}

fn write(m: &Machine, dir: &Path, kind: DumpKind) -> (String, String) {
    let dump = dir.join("MEMORY.DMP");
    m.write_dump_file(kind, &dump).unwrap();
    let syms = dir.join("symbols");
    m.write_symbol_store(&syms).unwrap();
    (dump.display().to_string(), syms.display().to_string())
}

#[test]
fn prints_the_planted_crashing_stack_like_kb() {
    let mut m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 11));
    let p = plant(&mut m, false);
    let dir = tempfile::tempdir().unwrap();
    for kind in [DumpKind::KernelBitmap, DumpKind::Full] {
        let (dump, syms) = write(&m, dir.path(), kind);
        let r = pooldump(&["stack", &dump, "--symbol-path", &syms, "--offline"]);
        assert_eq!(r.code(), Some(0), "{}", r.stderr);
        let want = format!(
            " # Child-SP          RetAddr           Call Site\n\
             00 {} {} nt!KeBugCheckEx+0x30\n\
             01 {} {} leakydrv!LeakOneRecord+0x1a\n\
             02 {} {} leakydrv!DriverEntry+0x25\n\
             03 {} 00000000`00000000 nt!KiSystemStartup+0x2b\n\
             End: frame 03 returns to 0: the bottom of the thread's stack\n",
            va(p.rsp[0]),
            va(p.drv + LEAK_ONE_RECORD + 0x1a),
            va(p.rsp[1]),
            va(p.drv + DRIVER_ENTRY + 0x25),
            va(p.rsp[2]),
            va(p.nt + KI_SYSTEM_STARTUP + 0x2b),
            va(p.rsp[3]),
        );
        assert!(
            r.stdout.contains(&want),
            "{kind:?}:\n{}\nwanted:\n{want}",
            r.stdout
        );
    }

    // JSON: every field, the recovered registers among them.
    let (dump, syms) = write(&m, dir.path(), DumpKind::KernelBitmap);
    let r = pooldump(&[
        "stack",
        &dump,
        "--symbol-path",
        &syms,
        "--offline",
        "--json",
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let s = &j["stacks"][0];
    assert_eq!(s["source"], "dump-header");
    assert_eq!(s["end"]["reason"], "end-of-stack");
    let f = s["frames"].as_array().unwrap();
    assert_eq!(f.len(), 4);
    assert_eq!(f[1]["symbol"]["function"], "LeakOneRecord");
    assert_eq!(f[1]["symbol"]["origin"]["kind"], "pdb");
    assert_eq!(f[0]["nonvolatile"]["rsi"], 0xAB06);
    // DriverEntry pushed rsi: KiSystemStartup's frame sees the saved value.
    assert_eq!(f[3]["nonvolatile"]["rsi"], p.saved_rsi);
    assert_eq!(f[2]["nonvolatile"]["rsi"], 0xAB06);
    assert_eq!(f[3]["child_sp"], p.rsp[3]);
    assert_eq!(f[0]["unwound_by"]["kind"], "unwind-info");
    assert!(s["stack_reads"]["reads"].as_u64().unwrap() > 0);
}

#[test]
fn bug_check_0x7e_also_walks_the_exceptions_context() {
    let mut m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 12));
    let p = plant(&mut m, true);
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = write(&m, dir.path(), DumpKind::KernelBitmap);
    let r = pooldump(&["stack", &dump, "--symbol-path", &syms, "--offline"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let second = format!(
        "The exception's CONTEXT record at {} (bug check parameter 4, as !analyze shows it): rip={} rsp={}\n \
         # Child-SP          RetAddr           Call Site\n\
         00 {} {} leakydrv!LeakOneRecord+0x30\n\
         01 ",
        va(p.context_va),
        va(p.drv + LEAK_ONE_RECORD + 0x30),
        va(p.ctx_rsp),
        va(p.ctx_rsp),
        va(p.drv + DRIVER_ENTRY + 0x25),
    );
    assert!(
        r.stdout.contains(&second),
        "{}\nwanted:\n{second}",
        r.stdout
    );
    assert_eq!(
        r.stdout.matches("nt!KiSystemStartup+0x2b").count(),
        2,
        "{}",
        r.stdout
    );

    // `.cxr ADDR`: the same stack alone.
    let cxr = format!("{:#x}", p.context_va);
    let r = pooldump(&[
        "stack",
        &dump,
        "--symbol-path",
        &syms,
        "--offline",
        "--context",
        &cxr,
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("(.cxr)"), "{}", r.stdout);
    assert!(
        r.stdout.contains("leakydrv!LeakOneRecord+0x30"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("KeBugCheckEx"), "{}", r.stdout);
}

#[test]
fn without_pdbs_names_fall_back_and_say_so() {
    let mut m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 13));
    let p = plant(&mut m, false);
    let dir = tempfile::tempdir().unwrap();
    let (dump, _) = write(&m, dir.path(), DumpKind::KernelBitmap);
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = empty.display().to_string();
    let r = pooldump(&["stack", &dump, "--symbol-path", &e, "--offline"]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    // The drivers export nothing: module+offset; the walk is the same.
    assert!(r.stdout.contains("leakydrv+0x101a"), "{}", r.stdout);
    assert!(r.stdout.contains(&va(p.rsp[3])), "{}", r.stdout);
    assert!(r.stdout.contains("no PDB leakydrv.pdb"), "{}", r.stdout);
}

#[test]
fn bad_context_addresses_are_errors_that_say_what_to_do() {
    let mut m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 14));
    let p = plant(&mut m, false);
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = write(&m, dir.path(), DumpKind::KernelBitmap);
    // Unmapped, and mapped but not a CONTEXT (the stack's zeros).
    for addr in [
        "fffff900`00000000".to_string(),
        format!("{:#x}", p.rsp[0] - 0x600),
    ] {
        let r = pooldump(&[
            "stack",
            &dump,
            "--symbol-path",
            &syms,
            "--offline",
            "--context",
            &addr,
        ]);
        assert_eq!(r.code(), Some(1), "{addr}: {}", r.stdout);
        assert!(r.stderr.contains("--context"), "{}", r.stderr);
        assert!(r.stderr.contains("CONTEXT"), "{}", r.stderr);
        assert!(r.stderr.contains(&dump), "{}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    let r = pooldump(&["stack", &dump, "--context", "xyz"]);
    assert_eq!(r.code(), Some(2), "{}", r.stderr);
    let r = pooldump(&["stack", "/nonexistent/MEMORY.DMP"]);
    assert_eq!(r.code(), Some(1));
    assert!(r.stderr.contains("/nonexistent/MEMORY.DMP"), "{}", r.stderr);
}
