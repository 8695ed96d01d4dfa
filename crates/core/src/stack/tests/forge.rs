//! The forge the stack tests build on: a mapped x64 image with `.pdata`,
//! unwind infos and code at fixed RVAs, written into the test machine, and
//! the unwind-code and UNWIND_INFO encoders.

use crate::stack::*;
use crate::testutil::{Machine, put_pe_headers, put32};

pub(super) const BASE: u64 = 0xFFFF_F800_1000_0000;
pub(super) const SIZE: u32 = 0x8000;
pub(super) const PDATA: u32 = 0x1000;
pub(super) const XDATA: u32 = 0x2000;
pub(super) const TEXT: u32 = 0x4000;
pub(super) const STACK: u64 = 0xFFFF_D000_0001_0000;

// Unwind operation codes.
pub(super) const PUSH_NONVOL: u8 = 0;
pub(super) const ALLOC_LARGE: u8 = 1;
pub(super) const ALLOC_SMALL: u8 = 2;
pub(super) const SET_FPREG: u8 = 3;
pub(super) const SAVE_NONVOL: u8 = 4;
pub(super) const SAVE_XMM128: u8 = 8;
pub(super) const PUSH_MACHFRAME: u8 = 10;

/// One unwind-code slot.
pub(super) fn code(prolog_offset: u8, op: u8, info: u8) -> u16 {
    u16::from(prolog_offset) | (u16::from(op | (info << 4)) << 8)
}

/// The UNWIND_INFO of the 5-byte prolog `push REG; sub rsp, SIZE`.
pub(super) fn push_then_sub(reg: Reg, size: u8) -> Vec<u8> {
    let codes = [
        code(5, ALLOC_SMALL, size / 8 - 1),
        code(1, PUSH_NONVOL, reg as u8),
    ];
    ui(0, 5, 0, &codes, None)
}

/// An UNWIND_INFO (version 1): header, code slots padded to even, then the
/// trailer (a chained RUNTIME_FUNCTION).
pub(super) fn ui(
    flags: u8,
    prolog: u8,
    frame: u8,
    codes: &[u16],
    chain: Option<[u32; 3]>,
) -> Vec<u8> {
    let mut v = vec![1 | (flags << 3), prolog, codes.len() as u8, frame];
    for c in codes {
        v.extend_from_slice(&c.to_le_bytes());
    }
    if codes.len() % 2 == 1 {
        v.extend_from_slice(&[0, 0]);
    }
    if let Some(c) = chain {
        for x in c {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    v
}

/// A mapped x64 image: headers, `.pdata` at PDATA, unwind infos from
/// XDATA, code at TEXT.
pub(super) struct Forge {
    pub img: Vec<u8>,
    pub funcs: Vec<[u32; 3]>,
    pub xnext: u32,
    pub pdata_size: Option<u32>,
}

impl Forge {
    pub(super) fn new() -> Self {
        let mut img = vec![0u8; SIZE as usize];
        let opt = put_pe_headers(&mut img, 1, 0x1234_5678, BASE, SIZE);
        let sec = opt + 0xF0;
        img[sec..sec + 5].copy_from_slice(b".text");
        put32(&mut img, sec + 8, SIZE - 0x1000);
        put32(&mut img, sec + 12, 0x1000);
        Self {
            img,
            funcs: Vec::new(),
            xnext: XDATA,
            pdata_size: None,
        }
    }

    /// Add an UNWIND_INFO; returns its RVA.
    pub(super) fn info(&mut self, bytes: &[u8]) -> u32 {
        let at = self.xnext;
        self.img[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        self.xnext = (at + bytes.len() as u32).next_multiple_of(4);
        at
    }

    pub(super) fn func(&mut self, begin: u32, end: u32, unwind: u32) -> &mut Self {
        self.funcs.push([begin, end, unwind]);
        self
    }

    pub(super) fn code(&mut self, rva: u32, bytes: &[u8]) -> &mut Self {
        self.img[rva as usize..rva as usize + bytes.len()].copy_from_slice(bytes);
        self
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        for (i, f) in self.funcs.iter().enumerate() {
            for (j, x) in f.iter().enumerate() {
                put32(&mut self.img, PDATA as usize + 12 * i + 4 * j, *x);
            }
        }
        let dd = 0x84 + 20 + 112 + 3 * 8;
        put32(&mut self.img, dd, PDATA);
        let size = self.pdata_size.unwrap_or(12 * self.funcs.len() as u32);
        put32(&mut self.img, dd + 4, size);
        self.img
    }
}

pub(super) fn machine(img: &[u8]) -> Machine {
    let mut m = Machine::new();
    m.write_virt(BASE, img);
    m
}

pub(super) fn walker() -> StackWalker {
    StackWalker::from_modules(vec![StackModule::new(
        "forge.sys",
        KernelVa(BASE),
        SIZE,
        false,
    )])
}

pub(super) fn va(rva: u32) -> u64 {
    BASE + u64::from(rva)
}

pub(super) fn regs(rip: u64, rsp: u64) -> Registers {
    let mut r = Registers::new(rip, rsp);
    for (i, reg) in Reg::ALL.iter().enumerate() {
        if *reg != Reg::Rsp {
            r.set(*reg, Some(0x1000 + i as u64));
        }
    }
    r
}

/// F1 (push rbx; push rsi; sub rsp,28h) at TEXT, F2 (sub rsp,100h as
/// ALLOC_LARGE) at TEXT+0x100.
pub(super) fn two_functions() -> Forge {
    let mut f = Forge::new();
    let i1 = f.info(&ui(
        0,
        6,
        0,
        &[
            code(6, ALLOC_SMALL, 0x28 / 8 - 1),
            code(2, PUSH_NONVOL, Reg::Rsi as u8),
            code(1, PUSH_NONVOL, Reg::Rbx as u8),
        ],
        None,
    ));
    let i2 = f.info(&ui(0, 7, 0, &[code(7, ALLOC_LARGE, 0), 0x100 / 8], None));
    f.func(TEXT, TEXT + 0x100, i1)
        .func(TEXT + 0x100, TEXT + 0x200, i2);
    f
}

/// An export directory naming two functions, one forwarder.
pub(super) fn with_exports() -> Vec<u8> {
    let mut f = two_functions();
    let dir = 0x6000u32;
    let img = &mut f.img;
    put32(img, dir as usize + 0x14, 3); // NumberOfFunctions
    put32(img, dir as usize + 0x18, 3); // NumberOfNames
    put32(img, dir as usize + 0x1C, dir + 0x40);
    put32(img, dir as usize + 0x20, dir + 0x60);
    put32(img, dir as usize + 0x24, dir + 0x80);
    put32(img, dir as usize + 0x40, TEXT);
    put32(img, dir as usize + 0x44, TEXT + 0x100);
    put32(img, dir as usize + 0x48, dir + 0xC0); // forwarder
    put32(img, dir as usize + 0x60, dir + 0xA0);
    put32(img, dir as usize + 0x64, dir + 0xB0);
    put32(img, dir as usize + 0x68, dir + 0xC0);
    for (k, o) in [0u16, 1, 2].iter().enumerate() {
        img[dir as usize + 0x80 + 2 * k..][..2].copy_from_slice(&o.to_le_bytes());
    }
    img[dir as usize + 0xA0..][..9].copy_from_slice(b"FirstOne\0");
    img[dir as usize + 0xB0..][..10].copy_from_slice(b"SecondOne\0");
    img[dir as usize + 0xC0..][..12].copy_from_slice(b"NTOSKRNL.Xy\0");
    let dd = 0x84 + 20 + 112;
    put32(img, dd, dir);
    put32(img, dd + 4, 0x100);
    f.finish()
}

/// Serves one image file for one request.
pub(super) struct OneFile(pub Vec<u8>, pub std::sync::atomic::AtomicUsize);

impl ImageLocator for OneFile {
    fn locate(&self, req: &ImageRequest<'_>) -> Result<Option<ImageFile>, String> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if req.name == "forge.sys" && req.store_key() == format!("12345678{SIZE:X}") {
            Ok(Some(
                ImageFile::parse("store/forge.sys", self.0.clone()).unwrap(),
            ))
        } else {
            Ok(None)
        }
    }
}
