//! The segment heap's key derivations: 24H2 (26100) signs page segments
//! without the static key and takes the LFH shift from the whole VA. No
//! 26100 layouts are here, so the kit states build 26100 on 22000.318's
//! layouts; `find` must read the derivations the memory shows, whatever
//! the build number says, and say so where the two disagree.

mod common;

use common::check::{SMALL_TAGS, check};
use pooldump_core::pool::find::Engine;
use pooldump_kit::{DumpKind, HeapKeyDerivation, Machine, NtBuild, Scenario};

fn machine(reported_build: Option<u32>, heap_keys: Option<HeapKeyDerivation>) -> Machine {
    let mut s = Scenario::small(NtBuild::Win11_22000_318, 11);
    s.reported_build = reported_build;
    s.heap_keys = heap_keys;
    Machine::build(&s)
}

/// `find` on `m` finds what the kit placed; its warnings are returned.
fn find_all(m: &Machine, what: &str) -> Vec<String> {
    let (_dir, t) = common::open(m, DumpKind::KernelBitmap);
    assert_eq!(t.build, Some(m.truth.build_number), "{what}: build");
    let r = common::run(&t, SMALL_TAGS, Engine::Auto);
    check(m, &m.truth.allocations, &r, SMALL_TAGS, what);
    r.warnings.into_iter().map(|w| w.message).collect()
}

#[test]
fn a_24h2_build_is_read_with_its_own_derivations() {
    let m = machine(Some(26100), None);
    let warnings = find_all(&m, "26100");
    assert!(
        warnings.iter().all(|w| !w.contains("segment heap")
            && !w.contains("LFH")
            && !w.contains("page segments")),
        "{warnings:?}"
    );
}

#[test]
fn derivations_the_build_number_does_not_imply_are_read_off_the_memory() {
    // Server 23H2 (25398) lies between the builds MemProcFS names; a dump
    // could carry either derivation, or a build number that is wrong.
    for (reported, keys, shown) in [
        (
            Some(25398),
            HeapKeyDerivation::Since24H2,
            "without a static key",
        ),
        (None, HeapKeyDerivation::Since24H2, "without a static key"),
        (
            Some(26100),
            HeapKeyDerivation::Before24H2,
            "with the static key 0xA2E64EADA2E64EAD",
        ),
    ] {
        let m = machine(reported, Some(keys));
        let what = format!("build {} with {keys:?}", m.truth.build_number);
        let warnings = find_all(&m, &what);
        let said = |start: &str, rest: &str| {
            warnings.iter().any(|w| {
                w.starts_with(&format!("build {}", m.truth.build_number))
                    && w.contains(start)
                    && w.contains(rest)
            })
        };
        assert!(
            said("page segments", &format!("those here are signed {shown}")),
            "{what}: {warnings:?}"
        );
        assert!(
            said("LFH subsegments", "but those here decode with"),
            "{what}: {warnings:?}"
        );
    }
}
