//! `pooldump callsites` on the kit's three drivers finds exactly the sites
//! planted in their C source, checked two ways that owe nothing to
//! pooldump: the source itself (every ExAllocatePool*/ExFreePoolWithTag
//! call and its tag literals, and the hand-written assembly), and an
//! independent disassembly (`llvm-objdump-19 -d`, with the import table and
//! the chained unwind entries from `llvm-readobj-19`), from which each
//! tag immediate's address and the pool routine of the first call after it
//! are read. `--patch` writes a copy whose checksum `pefile` (Python) agrees
//! with and whose code llvm-objdump shows relabelled.
//!
//! This file holds the tests; `source.rs` reads what the C source plants,
//! `disasm.rs` what the disassembly shows.

use crate::support;

mod disasm;
mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use pooldump_kit::{Machine, NtBuild, Scenario};
use serde_json::Value;
use support::{
    Finished, assert_contains, missing, pooldump, pooldump_offline, repo_root, require_tool,
};

use disasm::{Seen, objdump, seen_in_disassembly};
use source::{Planted, planted_in_source};

fn drivers_dir() -> PathBuf {
    repo_root().join("testdata/drivers")
}

fn drivers_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(drivers_dir().join("drivers.json")).unwrap())
        .unwrap()
}

/// pooldump's sites: (function from the site name, kind, tag, RVAs).
fn pooldump_sites(v: &Value, base: u64) -> Vec<Seen> {
    let mut out: Vec<Seen> = support::items(&v["sites"])
        .map(|s| {
            let site = s["site"].as_str().unwrap();
            let function = site
                .split('!')
                .nth(1)
                .unwrap_or_else(|| panic!("no function in {site}"))
                .split('+')
                .next()
                .unwrap()
                .to_string();
            Seen {
                function,
                kind: s["kind"].as_str().unwrap().to_string(),
                tag: s["tag"].as_str().unwrap().to_string(),
                immediate_rva: s["immediate_rva"].as_u64().unwrap(),
                call_rva: s["call"].as_u64().unwrap() - base,
            }
        })
        .collect();
    out.sort();
    out
}

/// A site of `callsites --json` as (site, tag, immediate RVA).
fn site_row(s: &Value) -> (String, String, u64) {
    (
        s["site"].as_str().unwrap().to_string(),
        s["tag"].as_str().unwrap().to_string(),
        s["immediate_rva"].as_u64().unwrap(),
    )
}

#[test]
fn finds_exactly_the_planted_sites_in_every_driver_file() {
    if require_tool("llvm-objdump-19").is_none() || require_tool("llvm-readobj-19").is_none() {
        return;
    }
    let dj = drivers_json();
    for d in dj["drivers"].as_array().unwrap() {
        let file = drivers_dir().join(d["file"].as_str().unwrap());
        let source =
            std::fs::read_to_string(drivers_dir().join(d["source"].as_str().unwrap())).unwrap();
        let base = d["image_base"].as_u64().unwrap();
        let functions: BTreeMap<String, u64> =
            serde_json::from_value(d["functions"].clone()).unwrap();
        let planted = planted_in_source(&source);
        // The generator's own record agrees on how many tag immediates
        // there are (each planted call passes one).
        let recorded: usize = support::items(&d["tags"])
            .map(|t| t["immediate_rvas"].as_array().unwrap().len())
            .sum();
        assert_eq!(planted.len(), recorded, "{}: {planted:#?}", file.display());
        let tags: BTreeSet<String> = planted.iter().map(|p| p.2.clone()).collect();
        let seen = seen_in_disassembly(&file, base, &functions, &tags);
        // The disassembly and the source agree on what is where.
        let mut from_code: Vec<Planted> = seen
            .iter()
            .map(|s| (s.function.clone(), s.kind.clone(), s.tag.clone()))
            .collect();
        from_code.sort();
        assert_eq!(
            from_code,
            planted,
            "{}: disassembly vs source",
            file.display()
        );
        // pooldump agrees with both, with the driver's PDB beside it.
        let v = image_sites(&file, &[]);
        assert_eq!(pooldump_sites(&v, base), seen, "{}", file.display());
        assert!(v["unresolved"].as_array().unwrap().is_empty(), "{v}");
        // And with --tag, only that tag's.
        for t in &tags {
            let v = image_sites(&file, &["--tag", t]);
            let want: Vec<Seen> = seen.iter().filter(|s| &s.tag == t).cloned().collect();
            assert_eq!(pooldump_sites(&v, base), want, "{} {t}", file.display());
        }
    }
}

#[test]
fn the_loaded_drivers_of_a_dump_give_the_same_sites() {
    let m = Machine::build(&Scenario::small(NtBuild::Win11_22000, 3));
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = support::write_dump_and_symbols(&m, dir.path());
    let v = pooldump_offline(&["callsites", dump.to_str().unwrap(), "--json"], &syms).json();
    let dj = drivers_json();
    for d in dj["drivers"].as_array().unwrap() {
        let name = d["file"].as_str().unwrap();
        let loaded = m.truth.kernel.module(name).unwrap();
        let file = drivers_dir().join(name);
        let fv = image_sites(&file, &[]);
        let from_file: BTreeSet<(String, String, u64)> =
            support::items(&fv["sites"]).map(site_row).collect();
        let from_dump: BTreeSet<(String, String, u64)> = support::items(&v["sites"])
            .filter(|s| s["module"] == name)
            .map(|s| {
                assert_eq!(
                    s["immediate"].as_u64().unwrap(),
                    loaded.base + s["immediate_rva"].as_u64().unwrap()
                );
                site_row(s)
            })
            .collect();
        assert_eq!(from_dump, from_file, "{name}");
        assert!(!from_dump.is_empty());
    }
    text_rows_as_the_readme_shows(&dump, &syms);
}

/// `callsites` in text: the README's example row shape, and a module
/// that is not loaded named in the error.
fn text_rows_as_the_readme_shows(dump: &Path, syms: &Path) {
    let dump = dump.to_str().unwrap();
    let args = ["callsites", dump, "--tag", "Leak", "--module", "leakydrv"];
    support::assert_contains_all(
        "callsites --module leakydrv",
        pooldump_offline(&args, syms).ok(),
        &["5 site(s), 3 alloc, 2 free", "leakydrv!LeakOneRecord+0x1e"],
    );
    let t = pooldump_offline(&["callsites", dump, "--module", "nosuch"], syms);
    assert_ne!(t.code(), Some(0));
    assert_contains(&t.stderr, "no loaded module is named nosuch");
}

/// A Python that can `import pefile` (Debian's python3-pefile).
fn pefile_python() -> Option<String> {
    for p in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(p)
            .args(["-c", "import pefile"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(p.to_string());
        }
    }
    missing("a python3 with the pefile module (Debian: python3-pefile)")
}

#[test]
fn patch_writes_a_relabelled_copy_with_a_correct_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("leakydrv.sys");
    std::fs::copy(drivers_dir().join("leakydrv.sys"), &input).unwrap();
    std::fs::copy(
        drivers_dir().join("leakydrv.pdb"),
        dir.path().join("leakydrv.pdb"),
    )
    .unwrap();
    let original = std::fs::read(&input).unwrap();
    let out = dir.path().join("leakydrv.relabel.sys");
    let r = patch(&input, "Leak", &out);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    assert_contains(&r.stdout, "WARNING");
    assert_eq!(
        std::fs::read(&input).unwrap(),
        original,
        "the original was changed"
    );
    let patched = std::fs::read(&out).unwrap();
    assert_eq!(patched.len(), original.len());
    let map_path = PathBuf::from(format!("{}.relabel.json", out.display()));
    let map: Value = serde_json::from_str(&std::fs::read_to_string(&map_path).unwrap()).unwrap();
    assert_eq!(map["schema"], "pooldump.relabel/1");
    let sites = map["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 5);
    // Only the sites' bytes and the checksum changed.
    let e = u32::from_le_bytes(original[0x3C..0x40].try_into().unwrap()) as usize;
    let csum = e + 24 + 64;
    let mut expected = original.clone();
    for s in sites {
        let off = s["file_offset"].as_u64().unwrap() as usize;
        let new = s["new_bytes"].as_str().unwrap();
        for i in 0..4 {
            expected[off + i] = u8::from_str_radix(&new[2 * i..2 * i + 2], 16).unwrap();
        }
    }
    expected[csum..csum + 4].copy_from_slice(&patched[csum..csum + 4]);
    assert_eq!(patched, expected);
    pefile_agrees(&out);
    objdump_shows_the_new_tags(&out, sites);
    // The patched file's own sites carry the new tags.
    let v = image_sites(&out, &["--tag", "Lea0"]);
    assert_eq!(v["sites"].as_array().unwrap().len(), 1, "{v}");
    patch_refusals(&input, &original, &out, dir.path());
}

/// `pooldump callsites --image IMAGE ARGS.. --offline`.
fn on_image(image: &Path, args: &[&str]) -> Finished {
    let mut a = vec!["callsites", "--image", image.to_str().unwrap()];
    a.extend_from_slice(args);
    a.push("--offline");
    pooldump(&a)
}

/// [`on_image`] with `--json`: the sites found, which must succeed.
fn image_sites(image: &Path, args: &[&str]) -> Value {
    on_image(image, &[args, &["--json"]].concat()).json()
}

/// `pooldump callsites --image IMAGE --tag TAG --patch OUT --offline`.
fn patch(image: &Path, tag: &str, out: &Path) -> Finished {
    on_image(image, &["--tag", tag, "--patch", out.to_str().unwrap()])
}

/// pefile (Python) computes the checksum the patched file `out` holds.
fn pefile_agrees(out: &Path) {
    let Some(py) = pefile_python() else { return };
    let o = Command::new(py)
        .args([
            "-c",
            "import pefile,sys; p=pefile.PE(sys.argv[1]); print(p.OPTIONAL_HEADER.CheckSum, p.generate_checksum())",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(v[0], v[1], "pefile: header {} computed {}", v[0], v[1]);
    assert_ne!(v[0], 0);
}

/// llvm-objdump sees the new tags at the allocation sites of `out`, 0 at
/// the frees.
fn objdump_shows_the_new_tags(out: &Path, sites: &[Value]) {
    if require_tool("llvm-objdump-19").is_none() {
        return;
    }
    let code = objdump(out);
    for s in sites {
        let imm = 0x1_4000_0000 + s["immediate_rva"].as_u64().unwrap();
        let l = code.iter().find(|l| l.addr + l.len - 4 == imm).unwrap();
        let v = u32::from_str_radix(
            l.operands
                .strip_prefix("$0x")
                .unwrap()
                .split(',')
                .next()
                .unwrap(),
            16,
        )
        .unwrap();
        let want = match s["kind"].as_str().unwrap() {
            "free" => 0,
            _ => u32::from_le_bytes(
                s["new_tag"]
                    .as_str()
                    .unwrap()
                    .as_bytes()
                    .try_into()
                    .unwrap(),
            ),
        };
        assert_eq!(v, want, "{l:?}");
    }
}

/// `--patch` never writes over the `original` `input`, by any name, needs
/// one tag, and finds no 'Leak' left in the patched copy `out`.
fn patch_refusals(input: &Path, original: &[u8], out: &Path, dir: &Path) {
    // Never the original, by any name; --patch needs one tag.
    for target in [input.to_path_buf(), dir.join(".").join("leakydrv.sys")] {
        let r = patch(input, "Leak", &target);
        assert_ne!(r.code(), Some(0));
        assert_contains(&r.stderr, "never modifies the original");
    }
    assert_eq!(std::fs::read(input).unwrap(), original);
    let r = pooldump(&[
        "callsites",
        "--image",
        input.to_str().unwrap(),
        "--patch",
        "x.sys",
    ]);
    assert_ne!(r.code(), Some(0));
    // Patching the patched copy again finds no 'Leak' to relabel.
    let r = patch(out, "Leak", &dir.join("again.sys"));
    assert_ne!(r.code(), Some(0));
    assert_contains(&r.stderr, "nothing to relabel");
}

#[test]
fn a_file_that_is_not_a_driver_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.sys");
    std::fs::write(&p, b"MZ not really").unwrap();
    let r = pooldump(&["callsites", "--image", p.to_str().unwrap()]);
    assert_ne!(r.code(), Some(0));
    assert_contains(&r.stderr, "x.sys");
    let r = pooldump(&[
        "callsites",
        "--image",
        dir.path().join("none.sys").to_str().unwrap(),
    ]);
    assert_ne!(r.code(), Some(0));
    assert_contains(&r.stderr, "none.sys");
}

/// Over KDNET (10% loss): the same sites as from a dump of the same
/// machine, the same `analyze --relabel` rows, and the target resumed after
/// each command.
#[test]
fn a_live_target_gives_the_same_sites_and_runs_again() {
    use pooldump_kdnet_sim::{Faults, SimTarget};

    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 44));
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = support::write_dump_and_symbols(&m, dir.path());
    let map = dir.path().join("relabel.json");
    write_leak_relabel_map(&dump, &syms, &map);

    let key = "9.8.7.6";
    let (mut cfg, port) = support::loopback_sim(key);
    cfg.faults = Faults::lossy(0.10);
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let spec = format!("port={port},key={key},bind=127.0.0.1,retry=50");
    let syms = syms.to_str().unwrap();
    // `pooldump CMD SOURCE ARGS.. --json --offline --symbol-path SYMS`'s
    // JSON, from the live target and from the dump.
    let live_and_dump = |cmd: &str, args: &[&str]| {
        let run = |source: &[&str]| {
            let common = ["--json", "--offline", "--symbol-path", syms];
            pooldump(&[&[cmd], source, args, &common[..]].concat()).json()
        };
        (run(&["--kdnet", &spec]), run(&[dump.to_str().unwrap()]))
    };

    let (lv, dv) = live_and_dump("callsites", &["--tag", "Leak"]);
    assert_eq!(lv["sites"], dv["sites"]);
    assert_eq!(lv["sites"].as_array().unwrap().len(), 5);
    let resumed = sim.stats().continues;
    assert!(resumed >= 1, "the target was resumed");

    let (lv, dv) = live_and_dump(
        "analyze",
        &["--relabel", map.to_str().unwrap(), "--no-cache"],
    );
    assert_eq!(lv["relabel"]["rows"], dv["relabel"]["rows"]);
    assert!(sim.stats().continues > resumed, "resumed after analyze");
    // The live code was never patched: said, not hidden.
    assert!(lv["warnings"].to_string().contains("original bytes"));
}

/// The relabel map of 'Leak' for the machine in `dump` (symbols in
/// `syms`), made through the library, written to `map`.
fn write_leak_relabel_map(dump: &Path, syms: &Path, map: &Path) {
    use pooldump_core::relabel;
    use pooldump_core::stack::{Symbolizer, SymbolizerOptions};
    use pooldump_core::symbols::{SymbolOptions, SymbolPath};

    let t = pooldump_core::Target::open_dump(dump, &SymbolOptions::local_store(syms)).unwrap();
    let mut names = Symbolizer::new(SymbolizerOptions {
        symbol_path: SymbolPath::parse(&syms.display().to_string(), syms),
        ..SymbolizerOptions::default()
    });
    let leak = pooldump_core::PoolTag::parse("Leak").unwrap();
    let plan = relabel::plan_on_target(&t, leak, &[], None, &mut names, Some(19041)).unwrap();
    std::fs::write(map, plan.map.to_json()).unwrap();
}

/// A network driver's and a minifilter's allocators (NDIS's, the filter
/// manager's) and lookaside lists, whose tag is a stack argument:
/// `testdata/callsite-fixtures/poolapis.sys` (clang-19, by its build.py)
/// passes each tag to the routines `poolapis.json` names, at the
/// immediates llvm-objdump-19 found when it was built. Every site is
/// found, with its routine, and `--patch` relabels a stack argument's
/// immediate like a register's.
#[test]
fn ndis_filter_manager_and_lookaside_sites_are_found_and_patched() {
    let dir = repo_root().join("testdata/callsite-fixtures");
    let rec: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("poolapis.json")).unwrap()).unwrap();
    let file = dir.join("poolapis.sys");
    let v = image_sites(&file, &[]);
    assert!(v["unresolved"].as_array().unwrap().is_empty(), "{v}");
    let tags = rec["tags"].as_object().unwrap();
    assert_eq!(v["sites"].as_array().unwrap().len(), 11);
    for (tag, t) in tags {
        let sites: Vec<&Value> = support::items(&v["sites"])
            .filter(|s| s["tag"] == tag.as_str())
            .collect();
        let mut routines: Vec<&str> = sites
            .iter()
            .map(|s| s["routine"].as_str().unwrap())
            .collect();
        let mut want: Vec<&str> = support::items(&t["routines"])
            .map(|r| r.as_str().unwrap())
            .collect();
        routines.sort_unstable();
        want.sort_unstable();
        assert_eq!(routines, want, "{tag}");
        let rvas: BTreeSet<u64> = sites
            .iter()
            .map(|s| s["immediate_rva"].as_u64().unwrap())
            .collect();
        let want: BTreeSet<u64> = support::items(&t["immediate_rvas"])
            .map(|r| r.as_u64().unwrap())
            .collect();
        assert_eq!(rvas, want, "{tag}");
    }

    // The seventh argument's immediate, relabelled.
    relabel_one_fixture("poolapis.sys", "LkEx", "ExInitializeLookasideListEx");
}

/// `--patch` of the one site of `tag` in the fixture `image`
/// (testdata/callsite-fixtures): only its four bytes change, to the new
/// tag the map names; `pefile` and llvm-objdump agree; the patched file's
/// one site of the new tag calls `routine`.
fn relabel_one_fixture(image: &str, tag: &str, routine: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join(image);
    std::fs::copy(
        repo_root().join("testdata/callsite-fixtures").join(image),
        &input,
    )
    .unwrap();
    let original = std::fs::read(&input).unwrap();
    let out = tmp.path().join(format!("{image}.relabel"));
    let r = patch(&input, tag, &out);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let map: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.relabel.json", out.display())).unwrap(),
    )
    .unwrap();
    let sites = map["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 1, "{map}");
    let new_tag = sites[0]["new_tag"].as_str().unwrap().to_string();
    let off = sites[0]["file_offset"].as_u64().unwrap() as usize;
    let patched = std::fs::read(&out).unwrap();
    assert_eq!(&original[off..off + 4], tag.as_bytes());
    assert_eq!(&patched[off..off + 4], new_tag.as_bytes());
    pefile_agrees(&out);
    objdump_shows_the_new_tags(&out, sites);
    let v = image_sites(&out, &["--tag", &new_tag]);
    let s = v["sites"].as_array().unwrap();
    assert_eq!(s.len(), 1, "{v}");
    assert_eq!(s[0]["routine"], routine);
}

/// A KMDF driver (testdata/callsite-fixtures/kmdfapis*.sys, built by
/// build_kmdf.py): its WdfMemoryCreate and WdfLookasideListCreate calls go
/// through the framework's function table, with Control Flow Guard's
/// dispatch and without; both are listed with their tags, and a
/// relabelled WdfMemoryCreate passes the new tag.
#[test]
fn kmdf_function_table_sites_are_found_and_patched() {
    let dir = repo_root().join("testdata/callsite-fixtures");
    let rec: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("kmdfapis.json")).unwrap()).unwrap();
    for (image, want) in rec["images"].as_object().unwrap() {
        let v = image_sites(&dir.join(image), &[]);
        let sites = v["sites"].as_array().unwrap();
        assert_eq!(sites.len(), 2, "{image}: {v}");
        for s in sites {
            let tag = s["tag"].as_str().unwrap();
            let t = &rec["tags"][tag];
            assert_eq!(s["routine"], t["routine"], "{image}");
            assert_eq!(s["via"]["kind"], "wdf", "{image}");
            assert_eq!(s["via"]["index"], t["index"], "{image}");
            assert_eq!(s["immediate_rva"], want[tag]["immediate_rva"], "{image}");
            let base = s["module_base"].as_u64().unwrap();
            assert_eq!(
                s["call"].as_u64().unwrap() - base,
                want[tag]["call_rva"].as_u64().unwrap(),
                "{image}"
            );
        }
    }

    relabel_one_fixture("kmdfapis.sys", "Wdfm", "WdfMemoryCreate");
}

/// A KMDF driver's `WdfMemoryCreate` that passes PoolTag 0 allocates with
/// the driver's own tag: in a dump of the kit's KMDF machine, `callsites
/// --tag KmDr` lists kmdfdrv's call in `KmEvtIoRead` as such a site, with
/// the `WdfDriverGlobals` its tag was read through (the variable the
/// kit's binding filled, per kmdf.json), and no relabelable site; the
/// driver's 'KmBf' immediate stays an ordinary site.
#[test]
fn a_kmdf_drivers_own_tag_is_found_through_its_globals() {
    let mut s = Scenario::small(NtBuild::Win10_19041, 7);
    s.kmdf = true;
    let m = Machine::build(&s);
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = support::write_dump_and_symbols(&m, dir.path());
    let dump = dump.to_str().unwrap();
    let d = &pooldump_kit::drivers::kmdf_pair()[1];
    let base = m.truth.kernel.module(&d.info.file).unwrap().base;
    let v = pooldump_offline(&["callsites", dump, "--tag", "KmDr", "--json"], &syms).json();
    assert!(support::items(&v["sites"]).next().is_none(), "{v}");
    let own: Vec<&Value> = support::items(&v["driver_tag_sites"]).collect();
    assert_eq!(own.len(), 1, "{v}");
    let site = own[0]["site"].as_str().unwrap();
    assert!(site.starts_with("kmdfdrv!KmEvtIoRead+"), "{site}");
    assert_eq!(own[0]["routine"], "WdfMemoryCreate");
    assert_eq!(
        own[0]["globals"].as_u64().unwrap(),
        base + d.info.data["WdfDriverGlobals"]
    );
    let module = support::items(&v["modules"])
        .find(|md| md["name"] == "kmdfdrv.sys")
        .unwrap();
    assert_eq!(module["kmdf_globals"], own[0]["globals"]);
    assert_eq!(module["driver_pool_tag"], own[0]["tag"]);
    let out = pooldump_offline(&["callsites", dump, "--tag", "KmDr"], &syms);
    let text = out.ok();
    assert_contains(text, "1 KMDF framework call(s) pass PoolTag 0");
    assert_contains(text, site);
    let v = pooldump_offline(&["callsites", dump, "--tag", "KmBf", "--json"], &syms).json();
    let sites: Vec<&Value> = support::items(&v["sites"]).collect();
    assert_eq!(sites.len(), 1, "{v}");
    assert!(support::items(&v["driver_tag_sites"]).next().is_none());
}
