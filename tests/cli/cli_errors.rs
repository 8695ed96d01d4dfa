//! The binary's error contract: `error: <message>` on stderr, the cause
//! chain after it, exit code 1, and never a panic. (End-to-end tests on
//! synthetic dumps from pooldump-kit live beside this file.)

use std::process::{Command, Output};

fn pooldump(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pooldump"))
        .args(args)
        .output()
        .expect("run pooldump")
}

fn info(path: &std::path::Path) -> Output {
    pooldump(&["info".as_ref(), path.as_os_str()])
}

#[test]
fn missing_file_is_an_error_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let out = info(&dir.path().join("MEMORY.DMP"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("MEMORY.DMP: cannot open the file"), "{err}");
    assert!(err.contains("caused by: "), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn files_that_are_not_supported_dumps_are_named_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "text.dmp",
            b"hello, world".to_vec(),
            "not a kernel crash dump",
        ),
        (
            "MEMORY.cab",
            b"MSCF\0\0\0\0".repeat(64),
            "this is a cabinet (.cab) file (signature 'MSCF'), not a dump: extract the dump from it first",
        ),
        (
            "x86.dmp",
            {
                let mut b = vec![0u8; 0x2000];
                b[..8].copy_from_slice(b"PAGEDUMP");
                b
            },
            "not a 64-bit kernel dump (signature 'PAGEDUMP' is a 32-bit dump)",
        ),
        (
            "triage.dmp",
            {
                let mut b: Vec<u8> = b"PAGE".iter().copied().cycle().take(0x2000).collect();
                b[4..8].copy_from_slice(b"DU64");
                b[0xF98..0xF9C].copy_from_slice(&4u32.to_le_bytes());
                b
            },
            "DumpType 4 (small memory dump): the TRIAGE_DUMP64 header at 0x2000 is not valid",
        ),
    ];
    for (name, bytes, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let out = info(&p);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(name) && err.contains(want),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn help_and_version_say_what_the_tool_is_for() {
    let out = pooldump(&["--help".as_ref()]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("pool leaks"), "{help}");
    assert!(help.contains("info"), "{help}");
    let out = pooldump(&["--version".as_ref()]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pooldump "));
}

/// A Windows 7 kernel memory dump is DumpType 2 (a kernel summary dump):
/// `info` names it, says that kdmp-parser has no reader for it, and
/// `analyze` reads it as the bitmap dump of the same machine.
#[test]
fn a_windows_7_summary_dump_is_named_and_read() {
    use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
    let dir = tempfile::tempdir().unwrap();
    let m = Machine::build(&Scenario::small(NtBuild::Win7_7601, 3));
    let symbols = dir.path().join("symbols");
    m.write_symbol_store(&symbols).unwrap();
    let mut analyses = Vec::new();
    for (name, kind) in [
        ("summary.dmp", DumpKind::Summary),
        ("bitmap.dmp", DumpKind::KernelBitmap),
    ] {
        let dump = dir.path().join(name);
        m.write_dump_file(kind, &dump).unwrap();
        let out = pooldump(&["info".as_ref(), dump.as_os_str()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name}: {text}");
        if kind == DumpKind::Summary {
            assert!(
                text.contains("kernel summary dump (DumpType 2, 'SDMP' bitmap at 0x2028)"),
                "{text}"
            );
            assert!(text.contains("kdmp-parser does not read it"), "{text}");
        }
        let sympath = format!("srv*{}", symbols.display());
        let out = pooldump(&[
            "analyze".as_ref(),
            dump.as_os_str(),
            "--symbol-path".as_ref(),
            sympath.as_ref(),
            // Both runs read the PDB: with the cache, the second would say
            // it read the layout cache, and the Symbols lines would differ
            // (or not, as earlier tests left the user's cache).
            "--no-cache".as_ref(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).replace(name, "DUMP");
        analyses.push(text);
    }
    assert_eq!(analyses[0], analyses[1]);
    assert!(analyses[0].contains("Leak"), "{}", analyses[0]);
}
