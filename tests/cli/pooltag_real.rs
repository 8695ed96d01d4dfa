//! Microsoft's own pooltag.txt (../shared/realworld/pooltag.txt, from the
//! Debugging Tools' triage folder) given to `analyze`: the Mapped_Driver
//! precedence it feeds (docs/analyze.md). crates/core/tests/pooltag_real.rs
//! reads the file itself, line by line.

use crate::support;

use std::path::PathBuf;
use std::process::Command;

fn real() -> Option<PathBuf> {
    support::shared_file("realworld/pooltag.txt")
}

/// The case: `NS?? - <unknown>` used to hide netsim.sys, which
/// the image search finds (the sample's NSbf tag). Now the image evidence
/// wins over the wildcard `<unknown>` and pooltag.txt's description is
/// shown beside it; an exact line naming a binary still wins over images.
#[test]
fn image_evidence_beats_a_wildcard_unknown_and_keeps_its_description() {
    let Some(p) = real() else { return };
    let root = support::repo_root().join("testdata/sample");
    let out = Command::new(env!("CARGO_BIN_EXE_pooldump"))
        .args(["analyze"])
        .arg(root.join("MEMORY.DMP"))
        .arg("--symbol-path")
        .arg(root.join("symbols"))
        .arg("--pooltag")
        .arg(&p)
        .args(["--offline", "--no-cache"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |tag: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(tag))
            .unwrap_or_else(|| panic!("no {tag} row in\n{text}"))
            .to_string()
    };
    assert!(
        row("NSbf").contains("netsim.sys - Netware server allocations"),
        "{}",
        row("NSbf")
    );
    // An exact line naming a binary: nt!cm for CM.
    assert!(
        row("CM ").contains("nt!cm - Configuration Manager"),
        "{}",
        row("CM ")
    );
    // Leak is not in pooltag.txt: the image search alone.
    assert!(row("Leak").contains("leakydrv.sys"), "{}", row("Leak"));
}
