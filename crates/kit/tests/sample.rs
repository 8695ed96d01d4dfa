//! The bundled sample (testdata/sample/) is exactly what the kit generates
//! for `pooldump_kit::scenario::sample()`: if the kit changes, regenerate it
//! with `cargo run -p pooldump-kit-cli -- sample`.

#[path = "../../../tests/support/prereq.rs"]
mod support;

use pooldump_kit::{DumpKind, Machine, scenario};

#[test]
fn committed_sample_matches_the_kit() {
    let root = support::repo_root().join("testdata/sample");
    let m = Machine::build(&scenario::sample());
    let fresh = m.dump_bytes(DumpKind::KernelBitmap);
    let committed = std::fs::read(root.join("MEMORY.DMP")).expect("testdata/sample/MEMORY.DMP");
    assert!(
        fresh == committed,
        "testdata/sample/MEMORY.DMP is stale: run `cargo run -p pooldump-kit-cli -- sample`"
    );
    let truth = std::fs::read_to_string(root.join("truth.json")).unwrap();
    assert_eq!(
        truth,
        m.truth.to_json(),
        "testdata/sample/truth.json is stale"
    );
    let key = &m.truth.kernel.store_key;
    let pdb = root
        .join("symbols/ntkrnlmp.pdb")
        .join(key)
        .join("ntkrnlmp.pdb");
    assert!(pdb.is_file(), "{} is missing", pdb.display());
}
