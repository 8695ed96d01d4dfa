//! `pooldump callsites` on the kit's three drivers finds exactly the sites
//! planted in their C source, checked two ways that owe nothing to
//! pooldump: the source itself (every ExAllocatePool*/ExFreePoolWithTag
//! call and its tag literals, and the hand-written assembly), and an
//! independent disassembly (`llvm-objdump-19 -d`, with the import table and
//! the chained unwind entries from `llvm-readobj-19`), from which each
//! tag immediate's address and the pool routine of the first call after it
//! are read. `--patch` writes a copy whose checksum `pefile` (Python) agrees
//! with and whose code llvm-objdump shows relabelled.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
use serde_json::Value;
use support::{Finished, missing, repo_root, require_tool, run_bounded};

fn pooldump(args: &[&str]) -> Finished {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pooldump"));
    c.args(args)
        .env_remove("_NT_SYMBOL_PATH")
        .env_remove("_NT_ALT_SYMBOL_PATH")
        .current_dir(repo_root());
    run_bounded(&mut c, Duration::from_secs(120))
}

fn drivers_dir() -> PathBuf {
    repo_root().join("testdata/drivers")
}

/// (function, kind, tag): what a site is, independent of addresses.
type Planted = (String, String, String);

/// A tag written as a C multi-character literal (`'kaeL'` is `Leak`).
fn literal_tag(lit: &str) -> String {
    lit.chars().rev().collect()
}

/// The pool calls of a driver's C source: per function, each call to a
/// tagged pool routine with each tag literal among its arguments (a `?:`
/// gives two), and in the `__asm__` blocks each `mov r8d/edx, imm` followed
/// by a call through `__imp_` of a pool routine.
fn planted_in_source(c: &str) -> Vec<Planted> {
    // Comments out (the asm function's pseudo-C lives in one).
    let mut text = String::new();
    let mut rest = c;
    while let Some(i) = rest.find("/*") {
        text.push_str(&rest[..i]);
        let j = rest[i..].find("*/").map_or(rest.len(), |j| i + j + 2);
        rest = &rest[j..];
    }
    text.push_str(rest);
    let mut out = Vec::new();
    // C functions: a definition line at column 0 not ending in `;`, its
    // body up to the next `}` at column 0.
    let lines: Vec<&str> = text.lines().collect();
    let mut k = 0;
    while k < lines.len() {
        let l = lines[k];
        let is_def = !l.starts_with(' ')
            && !l.starts_with('\t')
            && l.contains('(')
            && !l.trim_end().ends_with(';')
            && !l.starts_with('#')
            && !l.starts_with("__asm__")
            && lines.get(k + 1).is_some_and(|n| n.starts_with('{'));
        if !is_def {
            k += 1;
            continue;
        }
        let l = l.replace("__attribute__((noinline))", "");
        let name = l[..l.find('(').unwrap()]
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .rfind(|w| !w.is_empty())
            .unwrap()
            .to_string();
        let mut body = String::new();
        k += 1;
        while k < lines.len() && !lines[k].starts_with('}') {
            body.push_str(lines[k]);
            body.push('\n');
            k += 1;
        }
        for routine in [
            "ExAllocatePoolWithQuotaTag",
            "ExAllocatePoolWithTag",
            "ExFreePoolWithTag",
        ] {
            let kind = if routine.starts_with("ExFree") {
                "free"
            } else {
                "alloc"
            };
            let mut from = 0;
            while let Some(i) = body[from..].find(&format!("{routine}(")) {
                let start = from + i + routine.len() + 1;
                let end = start + body[start..].find(");").unwrap();
                let args = &body[start..end];
                let mut lits: Vec<&str> = args.split('\'').skip(1).step_by(2).collect();
                if lits.is_empty() {
                    // The tag is a variable: the literals it is set from.
                    let var = args.rsplit(',').next().unwrap().trim();
                    let def = body
                        .find(&format!("{var} = "))
                        .unwrap_or_else(|| panic!("{name}: where is {var} set?"));
                    let stmt = &body[def..def + body[def..].find(';').unwrap()];
                    lits = stmt.split('\'').skip(1).step_by(2).collect();
                }
                for lit in lits {
                    out.push((name.clone(), kind.to_string(), literal_tag(lit)));
                }
                from = end;
            }
        }
    }
    // Hand-written assembly: labels name functions (`X$part` is X's).
    let mut func = String::new();
    let (mut r8, mut edx): (Option<String>, Option<String>) = (None, None);
    let tag_of = |v: &str| {
        let v = u32::from_str_radix(v, 16).unwrap();
        String::from_utf8_lossy(&v.to_le_bytes()).into_owned()
    };
    for raw in c.lines() {
        let l = raw.trim().trim_start_matches('"').trim_end_matches(',');
        let l = l.trim_end_matches('"').trim_end_matches("\\n").trim();
        if let Some(label) = l.strip_suffix(':')
            && !label.contains(' ')
            && !label.starts_with('.')
        {
            func = label.split('$').next().unwrap().to_string();
        }
        if let Some(v) = l.strip_prefix("mov r8d, 0x") {
            r8 = Some(tag_of(v));
        }
        if let Some(v) = l.strip_prefix("mov edx, 0x") {
            edx = Some(tag_of(v));
        }
        if let Some(imp) = l.split("__imp_").nth(1) {
            let r = imp.trim_end_matches(']');
            let (kind, tag) = if r.starts_with("ExFree") {
                ("free", edx.take())
            } else {
                ("alloc", r8.take())
            };
            if let Some(tag) = tag {
                out.push((func.clone(), kind.to_string(), tag));
            }
            (r8, edx) = (None, None);
        }
    }
    out.sort();
    out
}

/// One instruction as llvm-objdump prints it.
#[derive(Debug, Clone)]
struct Line {
    addr: u64,
    len: u64,
    mnemonic: String,
    operands: String,
    /// The `# 0x...` address llvm-objdump resolves a RIP-relative operand to.
    target: Option<u64>,
}

fn objdump(file: &Path) -> Vec<Line> {
    let tool = "llvm-objdump-19";
    let out = Command::new(tool).arg("-d").arg(file).output().unwrap();
    assert!(out.status.success());
    let mut v = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((addr, rest)) = l.split_once(':') else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr.trim(), 16) else {
            continue;
        };
        let mut parts = rest.split('\t').filter(|p| !p.trim().is_empty());
        let (Some(bytes), Some(mnemonic)) = (parts.next(), parts.next()) else {
            continue;
        };
        let operands = parts.next().unwrap_or("").to_string();
        let len = bytes.split_whitespace().count() as u64;
        let target = operands
            .split_once("# 0x")
            .and_then(|(_, t)| u64::from_str_radix(t.trim(), 16).ok());
        v.push(Line {
            addr,
            len,
            mnemonic: mnemonic.trim().to_string(),
            operands,
            target,
        });
    }
    v
}

/// IAT slot VA -> imported name, from `llvm-readobj-19 --coff-imports`.
fn imports(file: &Path, image_base: u64) -> BTreeMap<u64, String> {
    let out = Command::new("llvm-readobj-19")
        .arg("--coff-imports")
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut m = BTreeMap::new();
    let mut iat = 0u64;
    let mut i = 0u64;
    for l in text.lines().map(str::trim) {
        if let Some(v) = l.strip_prefix("ImportAddressTableRVA: 0x") {
            iat = u64::from_str_radix(v, 16).unwrap();
            i = 0;
        }
        if let Some(s) = l.strip_prefix("Symbol: ") {
            let name = s.split(' ').next().unwrap().to_string();
            m.insert(image_base + iat + 8 * i, name);
            i += 1;
        }
    }
    m
}

/// Chained RUNTIME_FUNCTIONs: fragment start -> its function's start,
/// from `llvm-readobj-19 --unwind`.
fn chained(file: &Path) -> Vec<(u64, u64, u64)> {
    let out = Command::new("llvm-readobj-19")
        .arg("--unwind")
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = |l: &str| {
        let v = l.split("(0x").nth(1).unwrap().trim_end_matches(')');
        u64::from_str_radix(v, 16).unwrap()
    };
    let mut v = Vec::new();
    let (mut start, mut end) = (0, 0);
    let mut in_chain = false;
    for l in text.lines().map(str::trim) {
        if l.starts_with("RuntimeFunction") {
            in_chain = false;
        }
        if l.starts_with("Chained {") {
            in_chain = true;
        }
        if l.starts_with("StartAddress:") {
            if in_chain {
                v.push((start, end, hex(l)));
            } else {
                start = hex(l);
            }
        }
        if l.starts_with("EndAddress:") && !in_chain {
            end = hex(l);
        }
    }
    v
}

/// A site as the independent disassembly shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    function: String,
    kind: String,
    tag: String,
    immediate_rva: u64,
    call_rva: u64,
}

/// Each immediate of one of `tags` and the first pool call after it in its
/// function: through the IAT, through a thunk, or through a register the
/// function loaded from the IAT; a tail `jmp` counts.
fn seen_in_disassembly(
    file: &Path,
    base: u64,
    functions: &BTreeMap<String, u64>,
    tags: &BTreeSet<String>,
) -> Vec<Seen> {
    let code = objdump(file);
    let iat = imports(file, base);
    let chains = chained(file);
    let func_of = |va: u64| -> String {
        let va = chains
            .iter()
            .find(|(s, e, _)| (*s..*e).contains(&va))
            .map_or(va, |c| c.2);
        functions
            .iter()
            .filter(|(_, r)| base + **r <= va)
            .max_by_key(|(_, r)| **r)
            .unwrap()
            .0
            .clone()
    };
    let calls_target: BTreeSet<u64> = code
        .iter()
        .filter(|l| l.mnemonic == "callq" && !l.operands.starts_with('*'))
        .filter_map(|l| {
            u64::from_str_radix(
                l.operands
                    .split_whitespace()
                    .next()?
                    .trim_start_matches("0x"),
                16,
            )
            .ok()
        })
        .collect();
    let thunks: BTreeMap<u64, u64> = code
        .iter()
        .filter(|l| l.mnemonic == "jmpq" && calls_target.contains(&l.addr))
        .filter_map(|l| Some((l.addr, l.target?)))
        .collect();
    let mut out = Vec::new();
    for (k, l) in code.iter().enumerate() {
        let Some(imm) = l.operands.strip_prefix("$0x") else {
            continue;
        };
        let Ok(v) = u32::from_str_radix(imm.split(',').next().unwrap(), 16) else {
            continue;
        };
        let tag = String::from_utf8_lossy(&v.to_le_bytes()).into_owned();
        if !tags.contains(&tag) {
            continue;
        }
        let f = func_of(l.addr);
        let mut found = None;
        for c in &code[k + 1..] {
            if func_of(c.addr) != f {
                break;
            }
            let slot = match c.mnemonic.as_str() {
                "callq" | "jmpq"
                    if c.operands.starts_with("*0x") || c.operands.starts_with("*-0x") =>
                {
                    c.target
                }
                "callq" if c.operands.starts_with("*%") => {
                    // The register's load from the IAT in this function.
                    let reg = c.operands.trim_start_matches('*').trim().to_string();
                    code.iter()
                        .filter(|x| func_of(x.addr) == f && x.mnemonic == "movq")
                        .find(|x| x.operands.contains(&format!("(%rip), {reg}")))
                        .and_then(|x| x.target)
                }
                "callq" => u64::from_str_radix(
                    c.operands
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .trim_start_matches("0x"),
                    16,
                )
                .ok()
                .and_then(|t| thunks.get(&t).copied()),
                _ => None,
            };
            if let Some(name) = slot.and_then(|s| iat.get(&s)) {
                let kind = if name.starts_with("ExFree") {
                    "free"
                } else {
                    "alloc"
                };
                found = Some((kind.to_string(), c.addr));
                break;
            }
        }
        let (kind, call) =
            found.unwrap_or_else(|| panic!("{}: no pool call after {l:?}", file.display()));
        out.push(Seen {
            function: f,
            kind,
            tag,
            immediate_rva: l.addr + l.len - 4 - base,
            call_rva: call - base,
        });
    }
    out.sort();
    out
}

fn drivers_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(drivers_dir().join("drivers.json")).unwrap())
        .unwrap()
}

/// pooldump's sites: (function from the site name, kind, tag, RVAs).
fn pooldump_sites(v: &Value, base: u64) -> Vec<Seen> {
    let mut out: Vec<Seen> = v["sites"]
        .as_array()
        .unwrap()
        .iter()
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
        let recorded: usize = d["tags"]
            .as_array()
            .unwrap()
            .iter()
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
        let r = pooldump(&[
            "callsites",
            "--image",
            file.to_str().unwrap(),
            "--json",
            "--offline",
        ]);
        assert_eq!(r.code(), Some(0), "{}", r.stderr);
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(pooldump_sites(&v, base), seen, "{}", file.display());
        assert!(
            v["unresolved"].as_array().unwrap().is_empty(),
            "{}",
            r.stdout
        );
        // And with --tag, only that tag's.
        for t in &tags {
            let r = pooldump(&[
                "callsites",
                "--image",
                file.to_str().unwrap(),
                "--tag",
                t,
                "--json",
                "--offline",
            ]);
            let v: Value = serde_json::from_str(&r.stdout).unwrap();
            let want: Vec<Seen> = seen.iter().filter(|s| &s.tag == t).cloned().collect();
            assert_eq!(pooldump_sites(&v, base), want, "{} {t}", file.display());
        }
    }
}

#[test]
fn the_loaded_drivers_of_a_dump_give_the_same_sites() {
    let m = Machine::build(&Scenario::small(NtBuild::Win11_22000, 3));
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("MEMORY.DMP");
    let syms = dir.path().join("symbols");
    m.write_dump_file(DumpKind::KernelBitmap, &dump).unwrap();
    m.write_symbol_store(&syms).unwrap();
    let r = pooldump(&[
        "callsites",
        dump.to_str().unwrap(),
        "--json",
        "--offline",
        "--symbol-path",
        syms.to_str().unwrap(),
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let dj = drivers_json();
    for d in dj["drivers"].as_array().unwrap() {
        let name = d["file"].as_str().unwrap();
        let loaded = m
            .truth
            .kernel
            .modules
            .iter()
            .find(|x| x.base_name == name)
            .unwrap();
        let file = drivers_dir().join(name);
        let f = pooldump(&[
            "callsites",
            "--image",
            file.to_str().unwrap(),
            "--json",
            "--offline",
        ]);
        let fv: Value = serde_json::from_str(&f.stdout).unwrap();
        let from_file: BTreeSet<(String, String, u64)> = fv["sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["site"].as_str().unwrap().to_string(),
                    s["tag"].as_str().unwrap().to_string(),
                    s["immediate_rva"].as_u64().unwrap(),
                )
            })
            .collect();
        let from_dump: BTreeSet<(String, String, u64)> = v["sites"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["module"] == name)
            .map(|s| {
                assert_eq!(
                    s["immediate"].as_u64().unwrap(),
                    loaded.base + s["immediate_rva"].as_u64().unwrap()
                );
                (
                    s["site"].as_str().unwrap().to_string(),
                    s["tag"].as_str().unwrap().to_string(),
                    s["immediate_rva"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(from_dump, from_file, "{name}");
        assert!(!from_dump.is_empty());
    }
    // Text: the README's example row shape.
    let t = pooldump(&[
        "callsites",
        dump.to_str().unwrap(),
        "--tag",
        "Leak",
        "--module",
        "leakydrv",
        "--offline",
        "--symbol-path",
        syms.to_str().unwrap(),
    ]);
    assert_eq!(t.code(), Some(0), "{}", t.stderr);
    assert!(
        t.stdout.contains("5 site(s), 3 alloc, 2 free"),
        "{}",
        t.stdout
    );
    assert!(
        t.stdout.contains("leakydrv!LeakOneRecord+0x1e"),
        "{}",
        t.stdout
    );
    let t = pooldump(&[
        "callsites",
        dump.to_str().unwrap(),
        "--module",
        "nosuch",
        "--offline",
        "--symbol-path",
        syms.to_str().unwrap(),
    ]);
    assert_ne!(t.code(), Some(0));
    assert!(
        t.stderr.contains("no loaded module is named nosuch"),
        "{}",
        t.stderr
    );
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
    let r = pooldump(&[
        "callsites",
        "--image",
        input.to_str().unwrap(),
        "--tag",
        "Leak",
        "--patch",
        out.to_str().unwrap(),
        "--offline",
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("WARNING"), "{}", r.stdout);
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
    // pefile computes the same checksum.
    if let Some(py) = pefile_python() {
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
    // llvm-objdump sees the new tags at the allocation sites, 0 at the frees.
    if require_tool("llvm-objdump-19").is_some() {
        let code = objdump(&out);
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
    // The patched file's own sites carry the new tags.
    let r = pooldump(&[
        "callsites",
        "--image",
        out.to_str().unwrap(),
        "--tag",
        "Lea0",
        "--json",
        "--offline",
    ]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["sites"].as_array().unwrap().len(), 1, "{}", r.stdout);
    // Never the original, by any name; --patch needs one tag.
    for target in [input.clone(), dir.path().join(".").join("leakydrv.sys")] {
        let r = pooldump(&[
            "callsites",
            "--image",
            input.to_str().unwrap(),
            "--tag",
            "Leak",
            "--patch",
            target.to_str().unwrap(),
            "--offline",
        ]);
        assert_ne!(r.code(), Some(0));
        assert!(
            r.stderr.contains("never modifies the original"),
            "{}",
            r.stderr
        );
    }
    assert_eq!(std::fs::read(&input).unwrap(), original);
    let r = pooldump(&[
        "callsites",
        "--image",
        input.to_str().unwrap(),
        "--patch",
        "x.sys",
    ]);
    assert_ne!(r.code(), Some(0));
    // Patching the patched copy again finds no 'Leak' to relabel.
    let r = pooldump(&[
        "callsites",
        "--image",
        out.to_str().unwrap(),
        "--tag",
        "Leak",
        "--patch",
        dir.path().join("again.sys").to_str().unwrap(),
        "--offline",
    ]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("nothing to relabel"), "{}", r.stderr);
}

#[test]
fn a_file_that_is_not_a_driver_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.sys");
    std::fs::write(&p, b"MZ not really").unwrap();
    let r = pooldump(&["callsites", "--image", p.to_str().unwrap()]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("x.sys"), "{}", r.stderr);
    let r = pooldump(&[
        "callsites",
        "--image",
        dir.path().join("none.sys").to_str().unwrap(),
    ]);
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr.contains("none.sys"), "{}", r.stderr);
}

/// Over KDNET (10% loss): the same sites as from a dump of the same
/// machine, the same `analyze --relabel` rows, and the target resumed after
/// each command.
#[test]
fn a_live_target_gives_the_same_sites_and_runs_again() {
    use pooldump_core::relabel;
    use pooldump_core::stack::{Symbolizer, SymbolizerOptions};
    use pooldump_core::symbols::{SymbolOptions, SymbolPath};
    use pooldump_kdnet_sim::{Faults, SimConfig, SimTarget};
    use std::net::{Ipv4Addr, UdpSocket};

    let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 44));
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("MEMORY.DMP");
    let syms = dir.path().join("symbols");
    m.write_dump_file(DumpKind::KernelBitmap, &dump).unwrap();
    m.write_symbol_store(&syms).unwrap();
    let t = pooldump_core::Target::open_dump(&dump, &SymbolOptions::local_store(&syms)).unwrap();
    let mut names = Symbolizer::new(SymbolizerOptions {
        symbol_path: SymbolPath::parse(&syms.display().to_string(), &syms),
        ..SymbolizerOptions::default()
    });
    let leak = pooldump_core::PoolTag::parse("Leak").unwrap();
    let plan = relabel::plan_on_target(&t, leak, &[], None, &mut names, Some(19041)).unwrap();
    let map = dir.path().join("relabel.json");
    std::fs::write(&map, plan.map.to_json()).unwrap();

    let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = "9.8.7.6";
    let mut cfg = SimConfig::new(key.parse().unwrap(), (Ipv4Addr::LOCALHOST, port).into());
    cfg.faults = Faults::lossy(0.10);
    let sim = SimTarget::spawn(m, cfg).unwrap();
    let spec = format!("port={port},key={key},bind=127.0.0.1,retry=50");
    let syms = syms.to_str().unwrap();
    let common = ["--json", "--offline", "--symbol-path", syms];

    let sites = |v: &Value| v["sites"].clone();
    let live = pooldump(
        &[
            &["callsites", "--kdnet", &spec, "--tag", "Leak"][..],
            &common[..],
        ]
        .concat(),
    );
    assert_eq!(live.code(), Some(0), "{}", live.stderr);
    let from_dump = pooldump(
        &[
            &["callsites", dump.to_str().unwrap(), "--tag", "Leak"][..],
            &common[..],
        ]
        .concat(),
    );
    let (lv, dv): (Value, Value) = (
        serde_json::from_str(&live.stdout).unwrap(),
        serde_json::from_str(&from_dump.stdout).unwrap(),
    );
    assert_eq!(sites(&lv), sites(&dv));
    assert_eq!(lv["sites"].as_array().unwrap().len(), 5);
    let resumed = sim.stats().continues;
    assert!(resumed >= 1, "the target was resumed");

    let rel = ["--relabel", map.to_str().unwrap(), "--no-cache"];
    let live = pooldump(&[&["analyze", "--kdnet", &spec][..], &rel[..], &common[..]].concat());
    assert_eq!(live.code(), Some(0), "{}", live.stderr);
    let from_dump = pooldump(
        &[
            &["analyze", dump.to_str().unwrap()][..],
            &rel[..],
            &common[..],
        ]
        .concat(),
    );
    let (lv, dv): (Value, Value) = (
        serde_json::from_str(&live.stdout).unwrap(),
        serde_json::from_str(&from_dump.stdout).unwrap(),
    );
    assert_eq!(lv["relabel"]["rows"], dv["relabel"]["rows"]);
    assert!(sim.stats().continues > resumed, "resumed after analyze");
    // The live code was never patched: said, not hidden.
    assert!(lv["warnings"].to_string().contains("original bytes"));
}
