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
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "text.dmp",
            b"hello, world".to_vec(),
            "not a kernel crash dump",
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
