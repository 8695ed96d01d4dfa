//! The relabel hunt offline, on a machine that runs: the sites of 'Leak'
//! are found in a dump of the kit's machine (pooldump's library, as the
//! live `relabel` command computes them), the map's writes go into the
//! machine's memory as a debugger would write them, the machine runs ten
//! simulated minutes of the leak workload with the patched code (the CPU
//! takes each allocation's tag from the code bytes), and `analyze
//! --relabel` and `find --relabel` on a dump taken then attribute the
//! usage to each call site with the counts the runtime itself recorded.
//! The machine never bug-checks (frees pass 0 for relabelled blocks).

use crate::support;

use std::path::Path;

use pooldump_core::hittag::PoolCall;
use pooldump_core::relabel::{self, RelabelMap};
use pooldump_core::stack::{Symbolizer, SymbolizerOptions};
use pooldump_core::symbols::{SymbolOptions, SymbolPath};
use pooldump_core::{PoolTag, Target};
use pooldump_kit::run::{PoolOp, Runtime, Workload};
use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
use support::{Finished, pooldump_offline};

const MINUTES: u64 = 10;

/// `pooldump CMD DUMP --relabel MAP EXTRA.. --offline --no-cache
/// --symbol-path SYMS`.
fn relabelled(cmd: &str, dump: &Path, map: &Path, syms: &Path, extra: &[&str]) -> Finished {
    let mut args = vec![
        cmd,
        dump.to_str().unwrap(),
        "--relabel",
        map.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push("--no-cache");
    pooldump_offline(&args, syms)
}

/// The map for 'Leak' as `relabel` computes it (the library call the live
/// command makes): sites from the code in the dump, identity from its
/// kernel and modules, fresh tags unused in its tracker.
fn make_map(dump: &Path, syms: &Path, build: u32) -> RelabelMap {
    let t = Target::open_dump(dump, &SymbolOptions::local_store(syms)).unwrap();
    let mut names = Symbolizer::new(SymbolizerOptions {
        symbol_path: SymbolPath::parse(&syms.display().to_string(), syms),
        ..SymbolizerOptions::default()
    });
    let leak = PoolTag::parse("Leak").unwrap();
    let p = relabel::plan_on_target(&t, leak, &[], None, &mut names, Some(build)).unwrap();
    assert!(p.unresolved.is_empty(), "{:?}", p.unresolved);
    assert_eq!(p.sites.len(), 5);
    p.map
}

#[test]
fn each_site_counts_what_the_machine_allocated_there() {
    for build in [NtBuild::Win10_19041, NtBuild::Win7_7601] {
        let mut m = Machine::build(&Scenario::small(build, 12));
        let dir = tempfile::tempdir().unwrap();
        let syms = dir.path().join("symbols");
        m.write_symbol_store(&syms).unwrap();
        let mut rt = Runtime::new(&mut m, Workload::leak());
        let before = dir.path().join("before.dmp");
        m.write_dump_file(DumpKind::KernelBitmap, &before).unwrap();
        let map = make_map(&before, &syms, build.number());
        let map_path = dir.path().join("relabel.json");
        std::fs::write(&map_path, map.to_json()).unwrap();
        assert_eq!(map.sites.len(), 5, "{build:?}: {:#?}", map.sites);
        assert_eq!(map.alloc_sites().count(), 3);

        // `callsites` on the same dump lists the same immediates.
        let cs = pooldump_offline(
            &[
                "callsites",
                before.to_str().unwrap(),
                "--tag",
                "Leak",
                "--json",
            ],
            &syms,
        )
        .json();
        let mut listed = support::field_strs(&cs["sites"], "site");
        let mut mapped: Vec<&str> = map.sites.iter().map(|s| s.site.as_str()).collect();
        listed.sort();
        mapped.sort();
        assert_eq!(listed, mapped, "{build:?}");

        // Relabel: write each immediate as a debugger would (code pages are
        // read-only to the CPU, not to the debugger), checking the old bytes.
        for w in map.writes() {
            let mut cur = [0u8; 4];
            m.asp.read(&m.mem, w.va.0, &mut cur);
            assert_eq!(cur, w.expect, "{build:?}: {:?}", map.sites[w.site]);
            m.asp.write(&mut m.mem, w.va.0, &w.write);
        }
        rt.memory_written();

        let stop = rt.advance(&mut m, MINUTES * 60 * 1_000_000_000);
        assert!(stop.is_none(), "{build:?}: the machine stopped: {stop:?}");
        assert!(!rt.is_dead(), "{build:?}: {:?}", rt.truth.bugcheck);
        assert!(rt.truth.invalid.is_empty());
        let after = dir.path().join("after.dmp");
        m.write_dump_file(DumpKind::KernelBitmap, &after).unwrap();

        // Nothing allocated 'Leak' once the code was patched.
        let leak = PoolTag::parse("Leak").unwrap().0;
        assert_eq!(
            rt.truth.tags.get(&(leak, false)).map_or(0, |c| c.0),
            0,
            "{build:?}"
        );

        let a = relabelled(
            "analyze",
            &after,
            &map_path,
            &syms,
            &["-s", "bytes", "--json"],
        )
        .json();
        let rows = a["relabel"]["rows"].as_array().unwrap();
        let f = relabelled(
            "find",
            &after,
            &map_path,
            &syms,
            &["--json", "--no-progress"],
        )
        .json();
        let frows = f["sites"].as_array().unwrap();
        let base = m.truth.kernel.module("leakydrv.sys").unwrap().base;
        for s in map.alloc_sites() {
            let t = s.new_tag.0;
            let (allocs, frees, bytes) = rt.truth.tags[&(t, false)];
            assert!(allocs > 0, "{build:?}: {} allocated nothing", s.site);
            // The CPU's own record: every allocation of the new tag came
            // from this site's call.
            let from: Vec<_> = rt
                .truth
                .sites
                .iter()
                .filter(|((_, tag, op), _)| *tag == t && *op == PoolOp::Alloc)
                .collect();
            assert_eq!(from.len(), 1, "{build:?}: {from:?}");
            let ((site, _, _), count) = from[0];
            let ret = site.as_ref().unwrap().rva;
            let call = s.call.0 - base;
            assert!(ret > call && ret - call <= 15, "{build:?}: {site:?} {s:?}");
            assert_eq!(count.calls, allocs);

            let row = rows
                .iter()
                .find(|r| r["tag"] == s.new_tag.to_string())
                .unwrap_or_else(|| panic!("{build:?}: no row for {}: {rows:#?}", s.site));
            assert_eq!(row["site"], s.site, "{build:?}");
            assert_eq!(row["allocs"], allocs, "{build:?} {}", s.site);
            assert_eq!(row["frees"], frees, "{build:?} {}", s.site);
            assert_eq!(row["bytes"], bytes, "{build:?} {}", s.site);
            assert_eq!(row["code"]["state"], "relabelled");

            let fr = frows
                .iter()
                .find(|r| r["tag"] == s.new_tag.to_string())
                .unwrap();
            assert_eq!(fr["site"], s.site);
            assert_eq!(fr["allocated"], allocs - frees, "{build:?} {}", s.site);
            assert_eq!(fr["tracker_diff"], allocs - frees, "{build:?} {}", s.site);
        }
        // Frees reached the relabelled blocks through the patched free
        // sites (LkCompleteWork, LkTrimCache) without a bug check.
        let freed: u64 = map
            .alloc_sites()
            .map(|s| rt.truth.tags[&(s.new_tag.0, false)].1)
            .sum();
        assert!(freed > 100, "{build:?}: {freed} frees");
        let free_tags: Vec<u32> = rt
            .truth
            .sites
            .keys()
            .filter(|(_, _, op)| *op == PoolOp::Free)
            .map(|(_, t, _)| *t)
            .collect();
        assert!(!free_tags.contains(&leak), "{build:?}");
        // Rows are PoolMon-sorted by bytes (the old tag's row included).
        let b: Vec<u64> = rows.iter().map(|r| r["bytes"].as_u64().unwrap()).collect();
        assert!(b.windows(2).all(|w| w[0] >= w[1]), "{b:?}");
        assert_eq!(
            a["relabel"]["free_sites"].as_array().unwrap().len(),
            2,
            "{build:?}"
        );
        // Every map kind is named in the text too.
        let text = relabelled("analyze", &after, &map_path, &syms, &["-s", "bytes"]);
        assert_eq!(text.code(), Some(0), "{}", text.stderr);
        for s in map.sites.iter().filter(|s| s.kind == PoolCall::Alloc) {
            assert!(text.stdout.contains(&s.site), "{}", text.stdout);
        }

        // The dump from before the relabel: the map fits, but its code
        // still has the old bytes, which analyze says.
        let old = relabelled("analyze", &before, &map_path, &syms, &["--json"]).json();
        let warnings = old["warnings"].to_string();
        assert!(warnings.contains("original bytes"), "{warnings}");
    }
}

#[test]
fn a_map_for_another_boot_or_driver_build_is_refused() {
    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 5));
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = support::write_dump_and_symbols(&m, dir.path());
    let map = make_map(&dump, &syms, 19041);
    let run = |map: &RelabelMap, cmd: &str| {
        let p = dir.path().join("m.json");
        std::fs::write(&p, map.to_json()).unwrap();
        relabelled(cmd, &dump, &p, &syms, &[])
    };
    assert_eq!(run(&map, "analyze").code(), Some(0));
    let mut other = map.clone();
    other.modules[0].time_date_stamp ^= 1;
    for cmd in ["analyze", "find"] {
        let r = run(&other, cmd);
        assert_ne!(r.code(), Some(0));
        assert!(
            r.stderr.contains("another build of the driver"),
            "{}",
            r.stderr
        );
    }
    let mut other = map.clone();
    other.target.as_mut().unwrap().kern_base.0 += 0x20_0000;
    let r = run(&other, "analyze");
    assert!(r.stderr.contains("another boot"), "{}", r.stderr);
    let mut other = map.clone();
    other.modules[0].base = Some(pooldump_core::KernelVa(0xFFFF_F800_0000_0000));
    let r = run(&other, "find");
    assert!(r.stderr.contains("another load"), "{}", r.stderr);
    let mut other = map.clone();
    other.target.as_mut().unwrap().nt_age += 1;
    let r = run(&other, "analyze");
    assert!(r.stderr.contains("made for nt"), "{}", r.stderr);
    let mut other = map.clone();
    other.modules[0].name = "gone.sys".into();
    let r = run(&other, "analyze");
    assert!(r.stderr.contains("gone.sys is not loaded"), "{}", r.stderr);
    // Not a map at all.
    let p = dir.path().join("bad.json");
    std::fs::write(&p, "{\"schema\": \"pooldump.snapshot/1\"}").unwrap();
    let r = relabelled("analyze", &dump, &p, &syms, &[]);
    assert!(
        r.stderr.contains("not one this pooldump reads"),
        "{}",
        r.stderr
    );
}
