//! `pooldump info --kdnet`: the live kernel's identity through the same
//! code path as a dump, against the simulated target on loopback.

use crate::support;

use pooldump_kdnet_sim::{Faults, SimTarget};
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
use support::pooldump;

const KEY: &str = "1.2.3.4";

#[test]
fn info_kdnet_shows_the_same_kernel_as_the_dump() {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 21));
    let truth = m.truth.clone();
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("MEMORY.DMP");
    m.write_dump_file(DumpKind::KernelBitmap, &dump).unwrap();

    let (mut cfg, port) = support::loopback_sim(KEY);
    cfg.faults = Faults::lossy(0.02);
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let spec = format!("port={port},key={KEY},bind=127.0.0.1");
    let live = pooldump(&["info", "--kdnet", &spec, "--json"]).json();
    // The target was resumed when done.
    assert!(sim.stats().continues >= 1);

    let from_dump = pooldump(&["info", dump.to_str().unwrap(), "--json"]).json();

    assert_eq!(live["live"]["build"], truth.build_number);
    assert_eq!(live["live"]["kern_base"], truth.kernel.kern_base);
    assert_eq!(live["kernel"]["kern_base"], truth.kernel.kern_base);
    assert_eq!(
        live["kernel"]["image"]["codeview"]["store_key"],
        truth.kernel.store_key.as_str()
    );
    // Same identity and the same module list as `info` on the dump.
    assert_eq!(live["kernel"]["image"], from_dump["kernel"]["image"]);
    assert_eq!(live["modules"]["modules"], from_dump["modules"]["modules"]);
    let names = support::field_strs(&live["modules"]["modules"], "name");
    let want: Vec<&str> = truth
        .kernel
        .modules
        .iter()
        .map(|m| m.base_name.as_str())
        .collect();
    assert_eq!(names, want);

    // A second session with the same (running) target, as text.
    let out = pooldump(&["info", "--kdnet", &format!("net:{spec}")]);
    let text = out.ok();
    assert!(text.contains("Live target (KDNET)"), "{text}");
    assert!(text.contains(&sim.local_addr().to_string()), "{text}");
    assert!(sim.stats().continues >= 2);
}

#[test]
fn info_kdnet_rejects_a_bad_spec_clearly() {
    let out = pooldump(&["info", "--kdnet", "port=50000,key=1.2.3"]);
    assert!(!out.status.success());
    let err = &out.stderr;
    assert!(err.contains("four dot-separated parts"), "{err}");
    let out = pooldump(&["info", "--kdnet", "port=50000,key=1.2.3.4", "MEMORY.DMP"]);
    assert!(!out.status.success());
}
