//! The drivers as an independent disassembly shows them: `llvm-objdump-19
//! -d` for the code, `llvm-readobj-19` for the import table and the
//! chained unwind entries; from these, each tag immediate's address and
//! the pool routine of the first call after it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// One instruction as llvm-objdump prints it.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub addr: u64,
    pub len: u64,
    pub mnemonic: String,
    pub operands: String,
    /// The `# 0x...` address llvm-objdump resolves a RIP-relative operand to.
    pub target: Option<u64>,
}

pub(crate) fn objdump(file: &Path) -> Vec<Line> {
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

/// What `llvm-readobj-19 FLAG FILE` prints.
fn readobj(flag: &str, file: &Path) -> String {
    let out = Command::new("llvm-readobj-19")
        .arg(flag)
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// IAT slot VA -> imported name, from `llvm-readobj-19 --coff-imports`.
fn imports(file: &Path, image_base: u64) -> BTreeMap<u64, String> {
    let text = readobj("--coff-imports", file);
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
    let text = readobj("--unwind", file);
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
pub(crate) struct Seen {
    pub function: String,
    pub kind: String,
    pub tag: String,
    pub immediate_rva: u64,
    pub call_rva: u64,
}

/// What the disassembly of one driver says: its code, its IAT slots by
/// name, the chained fragments and the functions' RVAs, and the thunks
/// (`jmpq *iat` that calls land on).
struct Disassembly<'a> {
    code: Vec<Line>,
    iat: BTreeMap<u64, String>,
    chains: Vec<(u64, u64, u64)>,
    thunks: BTreeMap<u64, u64>,
    functions: &'a BTreeMap<String, u64>,
    base: u64,
}

impl Disassembly<'_> {
    /// The function `va` is in (a chained fragment counts as its
    /// function's).
    fn func_of(&self, va: u64) -> String {
        let va = self
            .chains
            .iter()
            .find(|(s, e, _)| (*s..*e).contains(&va))
            .map_or(va, |c| c.2);
        self.functions
            .iter()
            .filter(|(_, r)| self.base + **r <= va)
            .max_by_key(|(_, r)| **r)
            .unwrap()
            .0
            .clone()
    }

    /// The first pool call after instruction `k`, in function `f`: its
    /// kind and address.
    fn pool_call_after(&self, k: usize, f: &str) -> Option<(String, u64)> {
        let code = &self.code;
        for c in &code[k + 1..] {
            if self.func_of(c.addr) != f {
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
                        .filter(|x| self.func_of(x.addr) == f && x.mnemonic == "movq")
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
                .and_then(|t| self.thunks.get(&t).copied()),
                _ => None,
            };
            if let Some(name) = slot.and_then(|s| self.iat.get(&s)) {
                let kind = if name.starts_with("ExFree") {
                    "free"
                } else {
                    "alloc"
                };
                return Some((kind.to_string(), c.addr));
            }
        }
        None
    }
}

/// Each immediate of one of `tags` and the first pool call after it in its
/// function: through the IAT, through a thunk, or through a register the
/// function loaded from the IAT; a tail `jmp` counts.
pub(crate) fn seen_in_disassembly(
    file: &Path,
    base: u64,
    functions: &BTreeMap<String, u64>,
    tags: &BTreeSet<String>,
) -> Vec<Seen> {
    let code = objdump(file);
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
    let d = Disassembly {
        iat: imports(file, base),
        chains: chained(file),
        code,
        thunks,
        functions,
        base,
    };
    let mut out = Vec::new();
    for (k, l) in d.code.iter().enumerate() {
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
        let f = d.func_of(l.addr);
        let (kind, call) = d
            .pool_call_after(k, &f)
            .unwrap_or_else(|| panic!("{}: no pool call after {l:?}", file.display()));
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
