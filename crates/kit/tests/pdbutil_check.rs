//! LLVM's own PDB and PE dumpers agree with the committed manifests.
//!
//! `llvm-pdbutil-19` lists the publics, globals and types of every
//! committed PDB (testdata/nt/*/ntkrnlmp.pdb, testdata/drivers/*.pdb) and
//! `llvm-readobj-19` the images' RSDS records; both are compared with
//! `layout.json` / `drivers.json`, parsed here with serde_json. So the
//! fixtures pooldump's symbol code is tested against are what their
//! manifests claim, by a reader nobody on this project wrote.
//!
//! Needs the Debian package `llvm-19` (CI installs it): with `CI=true` a
//! missing tool fails the tests, elsewhere they are skipped.

#[path = "../../../tests/support/prereq.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const PDBUTIL: &str = "llvm-pdbutil-19";
const READOBJ: &str = "llvm-readobj-19";

fn run(tool: &Path, args: &[&str], file: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "{} {args:?} {} failed: {}",
        tool.display(),
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn load_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text between the first pair of backticks.
fn quoted(line: &str) -> Option<&str> {
    let a = line.find('`')?;
    let b = line[a + 1..].find('`')?;
    Some(&line[a + 1..a + 1 + b])
}

/// The number after `key = ` (decimal, or hex with 0x), up to `,`/`]`.
fn number_after(line: &str, key: &str) -> Option<u64> {
    let at = line.find(key)? + key.len();
    let rest = line[at..].trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let s = &rest[..end];
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A symbol record of `dump -publics` / `dump -globals`: its kind, name,
/// and the `addr = SSSS:OOOO` line (both decimal, as llvm-pdbutil prints
/// them), plus whether the function flag is set.
#[derive(Debug, Clone)]
struct SymRecord {
    kind: String,
    name: String,
    addr: Option<(u64, u64)>,
    function: bool,
}

/// Parse the `Records` of a publics or globals dump.
fn symbol_records(text: &str) -> Vec<SymRecord> {
    let mut out: Vec<SymRecord> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some((_, rest)) = t.split_once(" | ")
            && t.split(" | ")
                .next()
                .is_some_and(|n| n.trim().parse::<u64>().is_ok())
        {
            let kind = rest.split_whitespace().next().unwrap_or("").to_string();
            let name = quoted(rest).unwrap_or("").to_string();
            out.push(SymRecord {
                kind,
                name,
                addr: None,
                function: false,
            });
        } else if let Some(last) = out.last_mut() {
            if let Some(at) = t.find("addr = ") {
                let a = &t[at + 7..];
                let a = a.split([',', ' ']).next().unwrap_or("");
                if let Some((s, o)) = a.split_once(':') {
                    last.addr = s.parse().ok().zip(o.parse().ok());
                }
            }
            if t.starts_with("flags = ") && t.contains("function") {
                last.function = true;
            }
        }
    }
    out
}

/// One record of `dump -types`.
#[derive(Debug, Default, Clone)]
struct TypeRecord {
    kind: String,
    name: String,
    forward_ref: bool,
    sizeof: Option<u64>,
    field_list: Option<u64>,
    /// LF_FIELDLIST: (name, type index, offset).
    members: Vec<(String, u64, u64)>,
    /// LF_BITFIELD: (bit offset, bits).
    bits: Option<(u64, u64)>,
}

fn type_records(text: &str) -> HashMap<u64, TypeRecord> {
    let mut out = HashMap::new();
    let mut cur: Option<(u64, TypeRecord)> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let head = t.split_once(" | ").and_then(|(idx, rest)| {
            let idx = u64::from_str_radix(idx.trim().strip_prefix("0x")?, 16).ok()?;
            rest.starts_with("LF_").then_some((idx, rest))
        });
        if let Some((idx, rest)) = head {
            if let Some((i, r)) = cur.take() {
                out.insert(i, r);
            }
            let kind = rest.split_whitespace().next().unwrap_or("").to_string();
            let name = quoted(rest).unwrap_or("").to_string();
            cur = Some((
                idx,
                TypeRecord {
                    kind,
                    name,
                    ..Default::default()
                },
            ));
            continue;
        }
        let Some((_, r)) = cur.as_mut() else { continue };
        if t.starts_with("- LF_MEMBER") {
            let name = quoted(t).unwrap_or("").to_string();
            let ty = number_after(t, "Type = ").unwrap_or(0);
            let off = number_after(t, "offset = ").unwrap_or(u64::MAX);
            r.members.push((name, ty, off));
        }
        if t.contains("field list: ") {
            r.field_list = number_after(t, "field list: ");
        }
        if t.starts_with("options: ") {
            r.forward_ref = t.contains("forward ref");
            r.sizeof = number_after(t, "sizeof ");
        }
        if r.kind == "LF_BITFIELD" && t.contains("bit offset = ") {
            r.bits = number_after(t, "bit offset = ").zip(number_after(t, "# bits = "));
        }
    }
    if let Some((i, r)) = cur {
        out.insert(i, r);
    }
    out
}

/// GUID (as `{...}` prints it, without braces) and age from
/// `llvm-pdbutil dump -summary`.
fn pdb_identity(summary: &str) -> (String, u64) {
    let mut guid = String::new();
    let mut age = None;
    for line in summary.lines() {
        let t = line.trim();
        if let Some(g) = t.strip_prefix("GUID: ") {
            guid = g.trim_matches(['{', '}']).to_string();
        }
        if let Some(a) = t.strip_prefix("Age: ") {
            age = a.parse().ok();
        }
    }
    (guid, age.expect("summary has an Age"))
}

/// GUID, age and PDB name of the image's CodeView record, from
/// `llvm-readobj --coff-debug-directory`.
fn rsds_identity(readobj: &str) -> (String, u64, String) {
    let field = |key: &str| {
        readobj
            .lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {key} in:\n{readobj}"))
    };
    (
        field("PDBGUID:").trim_matches(['{', '}']).to_string(),
        field("PDBAge:").parse().expect("age"),
        field("PDBFileName:"),
    )
}

/// RVA of a section:offset address, from the manifest's section table
/// (sections are numbered from 1).
fn rva_of(sections: &[Value], (sec, off): (u64, u64)) -> Option<u64> {
    let s = sections.get(usize::try_from(sec).ok()?.checked_sub(1)?)?;
    Some(s["rva"].as_u64()? + off)
}

/// A committed nt build: its directory, its manifest (`layout.json`) and
/// the manifest's family name.
struct NtDir {
    dir: PathBuf,
    m: Value,
    family: String,
}

fn nt_builds() -> Vec<NtDir> {
    nt_dirs()
        .into_iter()
        .map(|dir| {
            let m = load_json(&dir.join("layout.json"));
            let family = m["family"].as_str().unwrap_or("?").to_string();
            NtDir { dir, m, family }
        })
        .collect()
}

fn nt_dirs() -> Vec<PathBuf> {
    let root = support::repo_root().join("testdata/nt");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("layout.json").is_file())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 10, "ten committed nt builds");
    dirs
}

#[test]
fn nt_pdbs_have_the_manifest_symbols() {
    let Some(pdbutil) = support::require_tool(PDBUTIL) else {
        return;
    };
    for NtDir { dir, m, family } in nt_builds() {
        let pdb = dir.join("ntkrnlmp.pdb");
        let sections = m["image"]["sections"].as_array().expect("sections");
        let publics = symbol_records(&run(&pdbutil, &["dump", "-publics"], &pdb));
        let globals = symbol_records(&run(&pdbutil, &["dump", "-globals"], &pdb));
        let pubs: BTreeMap<&str, &SymRecord> = publics
            .iter()
            .filter(|r| r.kind == "S_PUB32")
            .map(|r| (r.name.as_str(), r))
            .collect();
        let gdata: BTreeMap<&str, &SymRecord> = globals
            .iter()
            .filter(|r| r.kind == "S_GDATA32")
            .map(|r| (r.name.as_str(), r))
            .collect();
        let has_gdata = m["pdb"]["has_global_data_records"]
            .as_bool()
            .expect("has_global_data_records");
        let symbols = m["symbols"].as_object().expect("symbols");
        assert!(symbols.len() > 30, "{family}: {} symbols", symbols.len());
        for (name, s) in symbols {
            let rva = s["rva"].as_u64().expect("rva");
            let function = s["kind"] == "function";
            let p = pubs
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{family}: no S_PUB32 for {name}"));
            assert_eq!(
                p.addr.and_then(|a| rva_of(sections, a)),
                Some(rva),
                "{family}: S_PUB32 {name} address"
            );
            assert_eq!(p.function, function, "{family}: {name} function flag");
            if function {
                continue;
            }
            match (has_gdata, gdata.get(name.as_str())) {
                (true, Some(g)) => assert_eq!(
                    g.addr.and_then(|a| rva_of(sections, a)),
                    Some(rva),
                    "{family}: S_GDATA32 {name} address"
                ),
                (true, None) => panic!("{family}: no S_GDATA32 for {name}"),
                (false, _) => {}
            }
        }
        if !has_gdata {
            assert!(
                gdata.is_empty(),
                "{family}: a publics-only PDB has S_GDATA32 records: {:?}",
                gdata.keys().take(5).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn nt_pdbs_have_the_manifest_layouts() {
    let Some(pdbutil) = support::require_tool(PDBUTIL) else {
        return;
    };
    for NtDir { dir, m, family } in nt_builds() {
        let types = type_records(&run(
            &pdbutil,
            &["dump", "-types"],
            &dir.join("ntkrnlmp.pdb"),
        ));
        let ldr = if m["types"].get("_KLDR_DATA_TABLE_ENTRY").is_some() {
            "_KLDR_DATA_TABLE_ENTRY"
        } else {
            "_LDR_DATA_TABLE_ENTRY"
        };
        for name in [
            "_POOL_TRACKER_TABLE",
            "_POOL_TRACKER_BIG_PAGES",
            "_POOL_HEADER",
            ldr,
        ] {
            let want = &m["types"][name];
            let defs: Vec<&TypeRecord> = types
                .values()
                .filter(|r| r.kind == "LF_STRUCTURE" && r.name == name && !r.forward_ref)
                .collect();
            assert_eq!(defs.len(), 1, "{family}: definitions of {name}");
            let def = defs[0];
            assert_eq!(def.sizeof, want["size"].as_u64(), "{family}: sizeof {name}");
            let list = def
                .field_list
                .and_then(|i| types.get(&i))
                .unwrap_or_else(|| panic!("{family}: {name} has no field list"));
            let members: BTreeMap<&str, (u64, u64)> = list
                .members
                .iter()
                .map(|(n, t, o)| (n.as_str(), (*t, *o)))
                .collect();
            let fields = want["fields"].as_object().expect("fields");
            for (fname, f) in fields {
                let (ty, off) = *members
                    .get(fname.as_str())
                    .unwrap_or_else(|| panic!("{family}: {name} has no member {fname}"));
                assert_eq!(
                    Some(off),
                    f["offset"].as_u64(),
                    "{family}: {name}.{fname} offset"
                );
                if let Some(pos) = f["bit_position"].as_u64() {
                    let bits = types.get(&ty).and_then(|r| r.bits);
                    assert_eq!(
                        bits,
                        Some((pos, f["bit_length"].as_u64().expect("bit_length"))),
                        "{family}: {name}.{fname} bitfield"
                    );
                }
            }
            // Layout helpers aside, the PDB has no member the manifest lacks.
            for n in members.keys() {
                assert!(
                    n.starts_with("__") || fields.contains_key(*n),
                    "{family}: {name}.{n} is not in the manifest"
                );
            }
        }
    }
}

#[test]
fn images_and_pdbs_share_their_identity() {
    let (Some(pdbutil), Some(readobj)) = (
        support::require_tool(PDBUTIL),
        support::require_tool(READOBJ),
    ) else {
        return;
    };
    let guid_of = |v: &Value| v.as_str().expect("guid").to_string();
    for NtDir { dir, m, family } in nt_builds() {
        let want = (
            guid_of(&m["pdb"]["guid"]),
            m["pdb"]["age"].as_u64().expect("age"),
        );
        let pdb = pdb_identity(&run(
            &pdbutil,
            &["dump", "-summary"],
            &dir.join("ntkrnlmp.pdb"),
        ));
        let (guid, age, name) = rsds_identity(&run(
            &readobj,
            &["--coff-debug-directory"],
            &dir.join("ntoskrnl.exe"),
        ));
        assert_eq!(pdb, want, "{family}: PDB GUID/age vs the manifest");
        assert_eq!((guid, age), want, "{family}: RSDS GUID/age vs the manifest");
        assert_eq!(name, "ntkrnlmp.pdb", "{family}: RSDS PDB name");
    }
    let drivers = support::repo_root().join("testdata/drivers");
    let manifest = load_json(&drivers.join("drivers.json"));
    let list = manifest["drivers"].as_array().expect("drivers");
    assert_eq!(list.len(), 3, "three committed drivers");
    for d in list {
        let file = d["file"].as_str().expect("file");
        let pdb_name = d["pdb"]["name"].as_str().expect("pdb name");
        let want = (
            guid_of(&d["pdb"]["guid"]),
            d["pdb"]["age"].as_u64().expect("age"),
        );
        let pdb_path = drivers.join(d["pdb"]["file"].as_str().expect("pdb file"));
        let pdb = pdb_identity(&run(&pdbutil, &["dump", "-summary"], &pdb_path));
        let (guid, age, name) = rsds_identity(&run(
            &readobj,
            &["--coff-debug-directory"],
            &drivers.join(file),
        ));
        assert_eq!(pdb, want, "{file}: PDB GUID/age vs drivers.json");
        assert_eq!((guid, age), want, "{file}: RSDS GUID/age vs drivers.json");
        assert_eq!(name, pdb_name, "{file}: RSDS PDB name");
        // The entry point is a public function at the manifest's RVA.
        let publics = symbol_records(&run(&pdbutil, &["dump", "-publics"], &pdb_path));
        let sections = d["sections"].as_array().expect("sections");
        let entry = publics
            .iter()
            .find(|r| r.kind == "S_PUB32" && r.name == "DriverEntry")
            .unwrap_or_else(|| panic!("{file}: no S_PUB32 DriverEntry"));
        assert!(entry.function, "{file}: DriverEntry is a function");
        assert_eq!(
            entry.addr.and_then(|a| rva_of(sections, a)),
            d["entry_rva"].as_u64(),
            "{file}: DriverEntry RVA"
        );
    }
}
