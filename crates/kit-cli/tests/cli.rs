//! `pooldump-kit` as a user meets it: what it says it writes, and what it
//! says when a setting is wrong. (Having integration tests also makes
//! `cargo test --workspace` build the `pooldump-kit` binary, which the
//! root's tests/cli/readme.rs runs.)

use std::process::Command;

fn kit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pooldump-kit"))
        .args(args)
        .output()
        .expect("run pooldump-kit")
}

#[test]
fn generate_says_how_large_a_full_dump_is() {
    let out = kit(&["generate", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(
            "full (DumpType 1: every page of the machine's RAM, 2 GiB for the default scenario)"
        ),
        "{help}"
    );
}

#[test]
fn serve_names_a_bad_spec() {
    let out = kit(&["serve", "--kdnet", "port=50000,key=1.2"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: --kdnet port=50000,key=1.2: the KDNET spec's key: a KDNET key has four dot-separated parts (w.x.y.z), this one has 2\n"
    );
}

#[test]
fn crash_writes_what_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("crash");
    let r = kit(&["crash", "--pointer", "null", "--out", out.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for f in ["MEMORY.DMP", "Mini.dmp", "crash-truth.json", "symbols"] {
        assert!(out.join(f).exists(), "{f}");
    }
    // The README says 5 MB in crash/.
    let size: u64 = walk(&out);
    assert!((3 << 20..8 << 20).contains(&size), "{size}");
}

fn walk(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() { walk(&e.path()) } else { m.len() }
        })
        .sum()
}
