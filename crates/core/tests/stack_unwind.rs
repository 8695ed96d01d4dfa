//! The stack walker's reading of unwind data, checked against an unwinder
//! nobody here wrote: `llvm-readobj-19 --unwind`.
//!
//! 1. For every function of the committed images (testdata/drivers/*.sys,
//!    built by clang-19 with -fasynchronous-unwind-tables, and every
//!    testdata/nt/*/ntoskrnl.exe), and of a forged image that uses every
//!    unwind code the committed ones do not (set-frame, save-nonvol and
//!    -far, save-xmm128 and -far, alloc-large both forms, machine frames,
//!    chained info with an odd code count), what the walker derives (frame
//!    register and offset, pushed registers, allocations, saves, machine
//!    frame, chain, frame size) equals what llvm-readobj prints.
//! 2. Stacks laid out as llvm-readobj's reading of the committed images
//!    says (return addresses, pushed registers, allocations) are walked
//!    back: every frame's PC, Child-SP and recovered registers.

#[path = "../../../tests/support/prereq.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use pooldump_core::stack::{
    ImageFile, ImageLocator, ImageRequest, Reg, Registers, StackModule, StackWalker, UnwindSummary,
    WhyWalkStopped,
};
use pooldump_core::{KernelVa, Memory, MemoryError, PhysAddr};
use support::{repo_root, require_tool};

/// One RuntimeFunction as llvm-readobj prints it.
#[derive(Debug, Default, Clone)]
struct RoFunction {
    start: u64,
    end: u64,
    unwind: u64,
    flags: u8,
    prolog: u8,
    frame_register: Option<String>,
    frame_offset: Option<u8>,
    /// (op, reg, value) in listed order.
    codes: Vec<(String, Option<String>, Option<u64>)>,
    chained: Option<(u64, u64, u64)>,
}

fn hex(s: &str) -> u64 {
    let s = s.trim().trim_start_matches('(').trim_end_matches(')');
    u64::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16)
        .unwrap_or_else(|_| panic!("not hex: {s}"))
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.trim().strip_prefix(key).map(str::trim)
}

fn readobj(tool: &Path, file: &Path) -> Vec<RoFunction> {
    let text = support::run_ok(Command::new(tool).arg("--unwind").arg(file));
    let mut fns = Vec::new();
    let mut cur: Option<RoFunction> = None;
    let mut in_chain = false;
    let mut chain = (0, 0, 0);
    for line in text.lines() {
        let t = line.trim();
        if t == "RuntimeFunction {" {
            if let Some(f) = cur.take() {
                fns.push(f);
            }
            cur = Some(RoFunction::default());
            continue;
        }
        let Some(f) = cur.as_mut() else { continue };
        if t == "Chained {" {
            in_chain = true;
            continue;
        }
        if in_chain {
            if let Some(v) = field(t, "StartAddress:") {
                chain.0 = hex(v);
            } else if let Some(v) = field(t, "EndAddress:") {
                chain.1 = hex(v);
            } else if let Some(v) = field(t, "UnwindInfoAddress:") {
                chain.2 = hex(v);
            } else if t == "}" {
                f.chained = Some(chain);
                in_chain = false;
            }
            continue;
        }
        if let Some(v) = field(t, "StartAddress:") {
            f.start = hex(v);
        } else if let Some(v) = field(t, "EndAddress:") {
            f.end = hex(v);
        } else if let Some(v) = field(t, "UnwindInfoAddress:") {
            f.unwind = hex(v);
        } else if let Some(v) = field(t, "Flags [") {
            f.flags = hex(v) as u8;
        } else if let Some(v) = field(t, "PrologSize:") {
            f.prolog = v.parse().unwrap();
        } else if let Some(v) = field(t, "FrameRegister:") {
            f.frame_register = (v != "-").then(|| v.split(' ').next().unwrap().to_string());
        } else if let Some(v) = field(t, "FrameOffset:") {
            f.frame_offset = (v != "-").then(|| hex(v) as u8);
        } else if t.starts_with("0x") && t.contains(": ") {
            // `0x0E: SAVE_NONVOL reg=RBX, offset=0x50`
            let (_, rest) = t.split_once(": ").unwrap();
            let (op, args) = rest.split_once(' ').unwrap_or((rest, ""));
            let mut reg = None;
            let mut value = None;
            for a in args.split(", ") {
                match a.split_once('=') {
                    Some(("reg", r)) => reg = Some(r.to_string()),
                    Some(("size", n)) => value = Some(n.parse().unwrap()),
                    Some(("offset", n)) => value = Some(hex(n)),
                    Some(("errcode", e)) => value = Some(u64::from(e == "yes")),
                    _ => {}
                }
            }
            f.codes.push((op.to_string(), reg, value));
        }
    }
    fns.extend(cur);
    fns
}

fn image_base(file: &[u8]) -> u64 {
    let pe = u32::from_le_bytes(file[0x3C..0x40].try_into().unwrap()) as usize;
    u64::from_le_bytes(file[pe + 24 + 24..pe + 24 + 32].try_into().unwrap())
}

/// What llvm-readobj's listing says the summary of `f` must be.
fn expected(f: &RoFunction, all: &[RoFunction], base: u64) -> UnwindSummary {
    let mut s = UnwindSummary {
        version: 1,
        flags: f.flags,
        prolog_size: f.prolog,
        frame_register: f.frame_register.as_deref().map(reg),
        frame_offset: f.frame_offset.unwrap_or(0) * 16,
        ..UnwindSummary::empty(pooldump_core::stack::RuntimeFunction {
            begin: (f.start - base) as u32,
            end: (f.end - base) as u32,
            unwind_info: (f.unwind - base) as u32,
        })
    };
    let mut cur = f.clone();
    loop {
        let mut pushes = Vec::new();
        for (op, r, v) in &cur.codes {
            match op.as_str() {
                "PUSH_NONVOL" => pushes.insert(0, reg(r.as_deref().unwrap())),
                "ALLOC_SMALL" | "ALLOC_LARGE" => s.allocation += v.unwrap(),
                "SAVE_NONVOL" | "SAVE_NONVOL_FAR" => s
                    .saves
                    .push((reg(r.as_deref().unwrap()), v.unwrap() as u32)),
                "SAVE_XMM128" | "SAVE_XMM128_FAR" => {
                    let n = r
                        .as_deref()
                        .unwrap()
                        .trim_start_matches("XMM")
                        .parse()
                        .unwrap();
                    s.xmm_saves.push((n, v.unwrap() as u32))
                }
                "PUSH_MACHFRAME" => s.machine_frame = Some(v.unwrap() == 1),
                "SET_FPREG" => {}
                other => panic!("unexpected code {other}"),
            }
        }
        pushes.append(&mut s.pushes);
        s.pushes = pushes;
        let Some((st, en, un)) = cur.chained else {
            break;
        };
        s.chain.push(pooldump_core::stack::RuntimeFunction {
            begin: (st - base) as u32,
            end: (en - base) as u32,
            unwind_info: (un - base) as u32,
        });
        cur = all
            .iter()
            .find(|g| g.unwind == un)
            .unwrap_or_else(|| panic!("the chain target {un:#x} is listed"))
            .clone();
    }
    s.frame_size = 8 * s.pushes.len() as u64 + s.allocation;
    s
}

fn reg(name: &str) -> Reg {
    *Reg::ALL
        .iter()
        .find(|r| r.name().eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("register {name}"))
}

/// Sparse kernel memory: pages by VA, read directly (no page tables).
#[derive(Default)]
struct Sparse {
    pages: BTreeMap<u64, Vec<u8>>,
}

impl Sparse {
    fn write(&mut self, va: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let a = va + i as u64;
            self.pages
                .entry(a & !0xFFF)
                .or_insert_with(|| vec![0; 0x1000])[(a & 0xFFF) as usize] = *b;
        }
    }
    fn write_u64(&mut self, va: u64, v: u64) {
        self.write(va, &v.to_le_bytes());
    }
}

impl Memory for Sparse {
    fn describe(&self) -> String {
        "sparse test memory".into()
    }
    fn kernel_dtb(&self) -> PhysAddr {
        PhysAddr(0)
    }
    fn read_physical(&self, pa: PhysAddr, _buf: &mut [u8]) -> Result<(), MemoryError> {
        Err(MemoryError::not_in_source(pa))
    }
    fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), MemoryError> {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = va.0 + i as u64;
            let p = self
                .pages
                .get(&(a & !0xFFF))
                .ok_or(MemoryError::page_not_present(KernelVa(a)))?;
            *b = p[(a & 0xFFF) as usize];
        }
        Ok(())
    }
    fn read_virtual_partial(&self, va: KernelVa, buf: &mut [u8]) -> Result<usize, MemoryError> {
        self.read_virtual(va, buf).map(|()| buf.len())
    }
}

/// Serves image files by module name.
struct Files(Vec<(String, Vec<u8>)>);

impl ImageLocator for Files {
    fn locate(&self, req: &ImageRequest<'_>) -> Result<Option<ImageFile>, String> {
        Ok(self
            .0
            .iter()
            .find(|(n, _)| n == req.name)
            .map(|(n, b)| ImageFile::parse(n.clone(), b.clone()).unwrap()))
    }
}

fn committed_images() -> Vec<PathBuf> {
    let root = repo_root().join("testdata");
    let mut v: Vec<PathBuf> = ["leakydrv", "netsim", "fsfilt"]
        .iter()
        .map(|d| root.join("drivers").join(format!("{d}.sys")))
        .collect();
    for e in std::fs::read_dir(root.join("nt")).unwrap() {
        let p = e.unwrap().path().join("ntoskrnl.exe");
        if p.is_file() {
            v.push(p);
        }
    }
    v.sort();
    v
}

/// The walker's summaries of every function of `file`, read from the file
/// through an image locator (nothing from memory).
fn summaries(file: &Path) -> Vec<UnwindSummary> {
    let bytes = std::fs::read(file).unwrap();
    let f = ImageFile::parse(file.display().to_string(), bytes.clone()).unwrap();
    let mut m = StackModule::new(
        "image.bin",
        KernelVa(0xFFFF_F800_0000_0000),
        f.size_of_image(),
        false,
    );
    m.time_date_stamp = Some(f.time_date_stamp());
    let mut w = StackWalker::from_modules(vec![m])
        .with_image_locator(Arc::new(Files(vec![("image.bin".into(), bytes)])));
    let mem = Sparse::default();
    w.unwind_summaries(&mem, 0)
        .unwrap()
        .into_iter()
        .map(|s| s.unwrap())
        .collect()
}

fn compare(tool: &Path, file: &Path) -> usize {
    let ro = readobj(tool, file);
    let base = image_base(&std::fs::read(file).unwrap());
    let ours = summaries(file);
    assert_eq!(ours.len(), ro.len(), "{}: function count", file.display());
    for (o, r) in ours.iter().zip(&ro) {
        assert_eq!(o, &expected(r, &ro, base), "{}", file.display());
    }
    ro.len()
}

#[test]
fn unwind_data_of_the_committed_images_reads_as_llvm_reads_it() {
    let Some(tool) = require_tool("llvm-readobj-19") else {
        return;
    };
    let mut n = 0;
    for f in committed_images() {
        n += compare(&tool, &f);
    }
    // 3 drivers and 9 nt builds: a vacuous pass would compare nothing.
    assert!(n >= 80, "only {n} functions compared");
}

#[test]
fn every_unwind_code_reads_as_llvm_reads_it() {
    let Some(tool) = require_tool("llvm-readobj-19") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("forged.exe");
    std::fs::write(&p, forged_image()).unwrap();
    assert_eq!(compare(&tool, &p), 4);
    let s = summaries(&p);
    // The forgery is what it claims: each code is there.
    assert_eq!(s[0].frame_register, Some(Reg::Rbp));
    assert_eq!(s[1].machine_frame, Some(true));
    assert!(!s[2].saves.is_empty() && !s[2].xmm_saves.is_empty());
    assert_eq!(s[3].chain.len(), 1);
}

/// A PE with `.pdata`, `.rdata` (unwind infos) and `.text`, whose four
/// functions use set-frame with save-nonvol, save-xmm128 and alloc-large
/// (16-bit); a machine frame with an error code; alloc-large (32-bit),
/// save-nonvol-far and save-xmm128-far; a chained info with one code.
fn forged_image() -> Vec<u8> {
    const SIZE: usize = 0x8000;
    let mut img = vec![0u8; SIZE];
    let p32 =
        |img: &mut Vec<u8>, at: usize, v: u32| img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    img[0..2].copy_from_slice(b"MZ");
    p32(&mut img, 0x3C, 0x80);
    img[0x80..0x84].copy_from_slice(b"PE\0\0");
    let coff = 0x84;
    img[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
    img[coff + 2..coff + 4].copy_from_slice(&3u16.to_le_bytes());
    p32(&mut img, coff + 4, 0x1234_5678);
    img[coff + 16..coff + 18].copy_from_slice(&0xF0u16.to_le_bytes());
    img[coff + 18..coff + 20].copy_from_slice(&0x22u16.to_le_bytes());
    let opt = coff + 20;
    img[opt..opt + 2].copy_from_slice(&0x20Bu16.to_le_bytes());
    img[opt + 24..opt + 32].copy_from_slice(&0x1_4000_0000u64.to_le_bytes());
    p32(&mut img, opt + 32, 0x1000);
    p32(&mut img, opt + 36, 0x200);
    p32(&mut img, opt + 56, SIZE as u32);
    p32(&mut img, opt + 60, 0x400);
    p32(&mut img, opt + 108, 16);
    let code = |o: u8, op: u8, info: u8| u16::from(o) | (u16::from(op | (info << 4)) << 8);
    let ui = |flags: u8, prolog: u8, frame: u8, codes: &[u16], chain: Option<[u32; 3]>| {
        let mut v = vec![1 | (flags << 3), prolog, codes.len() as u8, frame];
        for c in codes {
            v.extend_from_slice(&c.to_le_bytes());
        }
        if codes.len() % 2 == 1 {
            v.extend_from_slice(&[0, 0]);
        }
        for x in chain.into_iter().flatten() {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    };
    let mut x = 0x2000usize;
    let mut info = |img: &mut Vec<u8>, b: Vec<u8>| {
        let at = x;
        img[at..at + b.len()].copy_from_slice(&b);
        x = (at + b.len()).next_multiple_of(4);
        at as u32
    };
    let a = info(
        &mut img,
        ui(
            0,
            14,
            5 | (2 << 4),
            &[
                code(14, 4, 3),
                10,
                code(12, 8, 6),
                3,
                code(9, 3, 0),
                code(5, 1, 0),
                0x20,
                code(1, 0, 5),
            ],
            None,
        ),
    );
    let b = info(
        &mut img,
        ui(0, 4, 0, &[code(4, 2, 3), code(0, 10, 1)], None),
    );
    let c = info(
        &mut img,
        ui(
            0,
            4,
            0,
            &[
                code(4, 1, 1),
                0,
                1,
                code(2, 5, 12),
                0x100,
                1,
                code(1, 9, 7),
                0x200,
                0,
            ],
            None,
        ),
    );
    let d = info(
        &mut img,
        ui(4, 4, 0, &[code(4, 2, 1)], Some([0x4000, 0x4100, a])),
    );
    let funcs = [
        [0x4000, 0x4100, a],
        [0x4100, 0x4200, b],
        [0x4200, 0x4300, c],
        [0x4300, 0x4400, d],
    ];
    for (i, f) in funcs.iter().enumerate() {
        for (j, v) in f.iter().enumerate() {
            p32(&mut img, 0x1000 + 12 * i + 4 * j, *v);
        }
    }
    let pdata_size = 12 * funcs.len() as u32;
    let dd = opt + 112 + 3 * 8;
    p32(&mut img, dd, 0x1000);
    p32(&mut img, dd + 4, pdata_size);
    let sec = opt + 0xF0;
    for (i, (name, rva, vsize, ch)) in [
        (&b".pdata"[..], 0x1000u32, pdata_size, 0x4000_0040u32),
        (b".rdata", 0x2000, 0x2000, 0x4000_0040),
        (b".text", 0x4000, 0x4000, 0x6000_0020),
    ]
    .into_iter()
    .enumerate()
    {
        let s = sec + 40 * i;
        img[s..s + name.len()].copy_from_slice(name);
        p32(&mut img, s + 8, vsize);
        p32(&mut img, s + 12, rva);
        p32(&mut img, s + 16, vsize.next_multiple_of(0x200));
        p32(&mut img, s + 20, rva);
        p32(&mut img, s + 36, ch);
    }
    img
}

/// A small deterministic generator (no dependency for it).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn stacks_laid_out_as_llvm_reads_the_images_are_walked_back() {
    let Some(tool) = require_tool("llvm-readobj-19") else {
        return;
    };
    // Map every committed image (ten nt builds, three drivers) as the kit
    // maps them, each at its own base.
    let images = committed_images();
    assert_eq!(images.len(), 13);
    let mut mem = Sparse::default();
    let mut modules = Vec::new();
    // (module index, readobj function, base)
    let mut fns: Vec<(usize, RoFunction, u64)> = Vec::new();
    for (i, p) in images.iter().enumerate() {
        let file = std::fs::read(p).unwrap();
        let pe = pooldump_kit::pe::PeImage::parse(&file);
        let base = 0xFFFF_F800_4000_0000 + 0x100_0000 * i as u64;
        mem.write(base, &pe.mapped(base));
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        modules.push(StackModule::new(
            &name,
            KernelVa(base),
            pe.size_of_image as u32,
            name == "ntoskrnl.exe",
        ));
        let ib = image_base(&file);
        for f in readobj(&tool, p) {
            // This generator lays out pushes and allocations only: frames
            // with a frame register, a machine frame or chained info are
            // checked by the walker's summary test above and by real
            // executed stacks (tests/cli/stack_cli.rs).
            if f.frame_register.is_some()
                || f.chained.is_some()
                || f.codes.iter().any(|c| c.0 == "PUSH_MACHFRAME")
            {
                continue;
            }
            // Rebased to where the image is mapped.
            let mut g = f.clone();
            g.start = f.start - ib + base;
            g.end = f.end - ib + base;
            fns.push((i, g, base));
        }
    }
    assert!(fns.len() >= 80);
    let nt = images
        .iter()
        .position(|p| p.ends_with("ntoskrnl.exe"))
        .unwrap();
    // nt's first bytes (0x1000..0x1040) are a leaf without RUNTIME_FUNCTION.
    let leaf_pc = modules[nt].base.0 + 0x1004;
    let mut walker = StackWalker::from_modules(modules.clone());
    let mut rng = Lcg(0x5EED);
    let mut walked = 0;
    for round in 0..200u64 {
        let depth = 1 + rng.next(8) as usize;
        let stack = 0xFFFF_D000_0100_0000 + round * 0x1_0000;
        let mut regs = Registers::new(leaf_pc, stack);
        for r in Reg::ALL {
            if r != Reg::Rsp {
                regs.set(r, Some(0xC000 + r as u64));
            }
        }
        // Frame 0 (the leaf): its return address at [stack].
        let mut expect = vec![(leaf_pc, stack, regs.nonvolatiles())];
        let mut sp = stack;
        let mut nonvol = regs;
        let mut ret_slot = sp;
        for k in 0..depth {
            let (_, f, _) = &fns[rng.next(fns.len() as u64) as usize];
            let body = f.end - f.start - u64::from(f.prolog);
            let ret = f.start + u64::from(f.prolog) + 1 + rng.next(body.max(2) - 1);
            mem.write_u64(ret_slot, ret);
            sp = ret_slot + 8; // the caller's Child-SP
            expect.push((ret, sp, nonvol.nonvolatiles()));
            // The caller's frame as its unwind data lays it out.
            let alloc: u64 = f
                .codes
                .iter()
                .filter(|c| c.0.starts_with("ALLOC"))
                .map(|c| c.2.unwrap())
                .sum();
            let pushes: Vec<Reg> = f
                .codes
                .iter()
                .filter(|c| c.0 == "PUSH_NONVOL")
                .map(|c| reg(c.1.as_deref().unwrap()))
                .collect();
            let mut at = sp + alloc;
            // Listed in reverse prolog order: the last push is lowest.
            for (j, r) in pushes.iter().enumerate() {
                let v = 0xF000_0000 + (round << 16) + ((k as u64) << 8) + j as u64;
                mem.write_u64(at, v);
                nonvol.set(*r, Some(v));
                at += 8;
            }
            ret_slot = at;
        }
        mem.write_u64(ret_slot, 0);
        let t = walker.walk(&mem, &regs);
        assert_eq!(
            t.end.reason,
            WhyWalkStopped::EndOfStack,
            "round {round}: {}",
            t.end
        );
        let got: Vec<_> = t
            .frames
            .iter()
            .map(|f| (f.pc.0, f.child_sp.0, f.nonvolatile))
            .collect();
        assert_eq!(got, expect, "round {round}");
        walked += t.frames.len();
    }
    assert!(walked > 400);
}
