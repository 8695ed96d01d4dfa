//! `pooldump stack` end to end on kit dumps of machines that really
//! crashed: the kit runs leakydrv's LkTouch on its simulated CPU with a bad
//! pointer, the fault goes through nt!KiPageFault (a machine frame) to a
//! bug check, and the dump header gets the registers at KeBugCheckEx. The
//! expected stacks are the CPU's own record of every call and trap (its
//! shadow stack), never anything a stack walker computed.

use crate::support;

use std::path::Path;

use pooldump_kit::run::{BugCheck, TruthFrame, WorkItem};
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario, drivers};
use support::pooldump;

/// A machine crashed by a NULL (0x7E) or unmapped system (0x50) pointer.
fn crashed(build: NtBuild, seed: u64, null: bool) -> (Machine, BugCheck) {
    let mut m = Machine::build(&Scenario::small(build, seed));
    let ctx = if null { 0 } else { 0xFFFF_8000_0000_1000 };
    let bc = m
        .crash_with(WorkItem::touch(ctx), 10_000_000_000)
        .expect("LkTouch bug-checks");
    (m, bc)
}

fn va(v: u64) -> String {
    format!("{:08x}`{:08x}", v >> 32, v & 0xFFFF_FFFF)
}

/// `module!function+0xoff` for `pc`, from the kit's own records of where
/// nt's and the drivers' functions start (layout.json, drivers.json).
fn call_site(m: &Machine, pc: u64) -> String {
    let mut candidates: Vec<(String, u64)> = Vec::new();
    if (m.kern_base..m.kern_base + m.truth.kernel.size_of_image).contains(&pc) {
        for (name, s) in &m.m.symbols {
            if s.kind == "function" {
                candidates.push((format!("nt!{name}"), m.kern_base + s.rva));
            }
        }
    }
    for d in drivers::all() {
        let md = m.truth.kernel.module(&d.info.file).expect("loaded");
        if (md.base..md.base + md.size).contains(&pc) {
            let module = d.info.file.trim_end_matches(".sys");
            for (name, rva) in &d.info.functions {
                candidates.push((format!("{module}!{name}"), md.base + rva));
            }
        }
    }
    let (name, start) = candidates
        .into_iter()
        .filter(|(_, start)| *start <= pc)
        .max_by_key(|(_, start)| *start)
        .expect("a known function");
    if pc == start {
        name
    } else {
        format!("{name}+{:#x}", pc - start)
    }
}

/// The `kb` lines WinDbg would print for `frames`.
fn kb(m: &Machine, frames: &[TruthFrame]) -> String {
    let mut s = String::from(" # Child-SP          RetAddr           Call Site\n");
    for (i, f) in frames.iter().enumerate() {
        s.push_str(&format!(
            "{i:02} {} {} {}\n",
            va(f.child_sp),
            va(f.ret_addr),
            call_site(m, f.pc)
        ));
    }
    s
}

fn write(m: &Machine, dir: &Path, kind: DumpKind) -> (String, String) {
    let dump = dir.join("MEMORY.DMP");
    m.write_dump_file(kind, &dump).unwrap();
    let syms = dir.join("symbols");
    m.write_symbol_store(&syms).unwrap();
    (dump.display().to_string(), syms.display().to_string())
}

/// `pooldump stack DUMP --symbol-path SYMS --offline ARGS..`'s text, which
/// must succeed (`what` names the case in a failure).
fn stack(dump: &str, syms: &str, args: &[&str], what: &str) -> String {
    let mut a = vec!["stack", dump, "--symbol-path", syms, "--offline"];
    a.extend_from_slice(args);
    let r = pooldump(&a);
    assert_eq!(r.code(), Some(0), "{what}: {}", r.stderr);
    r.stdout
}

/// `text` lists the stack the CPU built, as `kb` would.
fn assert_shows_the_cpus_stack(text: &str, m: &Machine, bc: &BugCheck, what: &str) {
    let want = kb(m, &bc.frames);
    assert!(text.contains(&want), "{what}:\n{text}\nwanted:\n{want}");
}

#[test]
fn prints_the_crashing_stack_the_cpu_built() {
    for build in [
        NtBuild::Win10_19041,
        NtBuild::Win7_7601,
        NtBuild::Win11_22000,
    ] {
        let (m, bc) = crashed(build, 11, false);
        assert_eq!(bc.code, 0x50);
        let dir = tempfile::tempdir().unwrap();
        for kind in [DumpKind::KernelBitmap, DumpKind::Full] {
            let (dump, syms) = write(&m, dir.path(), kind);
            let what = format!("{build:?} {kind:?}");
            let text = stack(&dump, &syms, &[], &what);
            assert_shows_the_cpus_stack(&text, &m, &bc, &what);
            // Through KiPageFault's machine frame to the driver.
            for want in [
                "nt!KiPageFault+",
                "leakydrv!LkTouch+",
                "returns to 0: the bottom of the thread's stack",
            ] {
                assert!(text.contains(want), "{want}: {text}");
            }
        }
    }

    // JSON: every field, the recovered registers among them.
    let (m, bc) = crashed(NtBuild::Win10_19041, 12, false);
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = write(&m, dir.path(), DumpKind::KernelBitmap);
    let text = stack(&dump, &syms, &["--json"], "JSON");
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let s = &j["stacks"][0];
    assert_eq!(s["source"], "dump-header");
    assert_eq!(s["end"]["reason"], "end-of-stack");
    let f = s["frames"].as_array().unwrap();
    assert_eq!(f.len(), bc.frames.len());
    for (got, want) in f.iter().zip(&bc.frames) {
        assert_eq!(got["child_sp"], want.child_sp);
        assert_eq!(got["pc"], want.pc);
    }
    let frame = |name: &str| {
        f.iter()
            .find(|x| x["symbol"]["function"] == name)
            .unwrap_or_else(|| panic!("{name}'s frame in {text}"))
    };
    // LkTouch has no prolog and no unwind info: a leaf.
    assert_eq!(frame("LkTouch")["symbol"]["origin"]["kind"], "pdb");
    assert_eq!(frame("LkTouch")["unwound_by"]["kind"], "leaf");
    assert_eq!(
        frame("LkWorkerRoutine")["unwound_by"]["kind"],
        "unwind-info"
    );
    assert!(
        f.iter().any(|x| x["unwound_by"]["kind"] == "machine-frame"),
        "{text}"
    );
    assert!(s["stack_reads"]["reads"].as_u64().unwrap() > 0);
}

#[test]
fn bug_check_0x7e_also_walks_the_exceptions_context() {
    let (m, bc) = crashed(NtBuild::Win10_19041, 12, true);
    assert_eq!(bc.code, 0x7E);
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = write(&m, dir.path(), DumpKind::KernelBitmap);
    let text = stack(&dump, &syms, &[], "0x7E");
    // The exception's stack is the crashing stack from the faulting frame on.
    let rip = bc.parameters[1];
    let at = bc.frames.iter().position(|f| f.pc == rip).unwrap();
    let second = format!(
        "The exception's CONTEXT record at {} (bug check parameter 4, as !analyze shows it): rip={} rsp={}\n{}",
        va(bc.parameters[3]),
        va(rip),
        va(bc.frames[at].child_sp),
        kb(&m, &bc.frames[at..]),
    );
    assert_shows_the_cpus_stack(&text, &m, &bc, "0x7E");
    assert!(text.contains(&second), "{text}\nwanted:\n{second}");

    // `.cxr ADDR`: the same stack alone.
    let cxr = format!("{:#x}", bc.parameters[3]);
    let text = stack(&dump, &syms, &["--context", &cxr], ".cxr");
    assert!(text.contains("(.cxr)"), "{text}");
    assert!(text.contains(&kb(&m, &bc.frames[at..])), "{text}");
    assert!(!text.contains("KeBugCheckEx"), "{text}");
}

#[test]
fn without_pdbs_names_fall_back_and_say_so() {
    let (m, bc) = crashed(NtBuild::Win10_19041, 13, false);
    let dir = tempfile::tempdir().unwrap();
    let (dump, _) = write(&m, dir.path(), DumpKind::KernelBitmap);
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = empty.display().to_string();
    let text = stack(&dump, &e, &[], "no PDBs");
    // The drivers export nothing: module+offset; the walk is the same.
    let drv = m.truth.kernel.module("leakydrv.sys").unwrap().base;
    let fault = bc.parameters[2];
    assert!(
        text.contains(&format!("leakydrv+{:#x}", fault - drv)),
        "{text}"
    );
    for f in &bc.frames {
        assert!(text.contains(&va(f.child_sp)), "{text}");
    }
    assert!(text.contains("no PDB leakydrv.pdb"), "{text}");
}

#[test]
fn bad_context_addresses_are_errors_that_say_what_to_do() {
    let (m, bc) = crashed(NtBuild::Win10_19041, 14, false);
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = write(&m, dir.path(), DumpKind::KernelBitmap);
    // Unmapped, and mapped but not a CONTEXT (the stack's zeros).
    for addr in [
        "fffff900`00000000".to_string(),
        format!("{:#x}", bc.frames[0].child_sp - 0x600),
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

/// A full dump cut short after its first pages (a real one, a DumpIt full
/// dump kept as its header and two pages, showed it): `stack` cannot read
/// the module list and says why, naming the truncation, not only that the
/// list is empty.
#[test]
fn a_truncated_full_dump_says_why_the_module_list_is_unreadable() {
    let (m, _) = crashed(NtBuild::Win10_19041, 15, false);
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = write(&m, dir.path(), DumpKind::Full);
    let mut bytes = std::fs::read(&dump).unwrap();
    pooldump_kit::corrupt::corrupt_file(
        &mut bytes,
        pooldump_kit::corrupt::FileCorruption::Truncate(0x4000),
    );
    std::fs::write(&dump, &bytes).unwrap();
    let r = pooldump(&["stack", &dump, "--symbol-path", &syms, "--offline"]);
    assert_eq!(r.code(), Some(1), "{}", r.stdout);
    assert!(r.stderr.contains(&dump), "{}", r.stderr);
    assert!(r.stderr.contains("module list"), "{}", r.stderr);
    assert!(r.stderr.contains("truncated"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// A small memory dump holds the stack bytes and the driver list, no
/// image: `stack` finds each module's image file in the symbol store by
/// its TimeDateStamp and SizeOfImage, as WinDbg does, and prints the stack
/// the CPU built. Without the image files it says what is missing.
#[test]
fn a_small_memory_dump_unwinds_with_image_files_from_the_symbol_path() {
    use pooldump_kit::triage::SmallDumpOptions;
    for build in [NtBuild::Win10_19041, NtBuild::Win7_7601] {
        let (m, bc) = crashed(build, 13, false);
        let dir = tempfile::tempdir().unwrap();
        let mini = dir.path().join("Mini120626-01.dmp");
        std::fs::write(&mini, m.small_dump(&SmallDumpOptions::default()).0).unwrap();
        let mini = mini.display().to_string();
        let pdbs = dir.path().join("pdbs");
        m.write_symbol_store(&pdbs).unwrap();
        let full = dir.path().join("store");
        m.write_symbol_store(&full).unwrap();
        let files = m.write_image_files(&full).unwrap();
        // <file>/<TimeDateStamp><SizeOfImage>/<file>, as symstore lays it.
        assert!(
            files.iter().any(|p| {
                let parts: Vec<_> = p.iter().rev().take(3).collect();
                parts[0] == "leakydrv.sys"
                    && parts[2] == "leakydrv.sys"
                    && parts[1].len() > 8
                    && parts[1]
                        .to_str()
                        .unwrap()
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit())
            }),
            "{files:?}"
        );

        let full = full.display().to_string();
        let what = format!("{build:?}");
        let text = stack(&mini, &full, &[], &what);
        assert_shows_the_cpus_stack(&text, &m, &bc, &what);
        assert!(text.contains("bug check 0x50"), "{text}");
        assert!(text.contains("a small memory dump"), "{text}");

        // PDBs but no binaries: the walk cannot go past the first frame
        // whose unwind data it lacks, and says why.
        let pdbs = pdbs.display().to_string();
        let text = stack(&mini, &pdbs, &[], &what);
        assert!(!text.contains(&kb(&m, &bc.frames)), "{text}");
        assert!(text.contains("Walk stopped"), "{text}");
    }
}
