//! Forged images and stacks over the test machine: every unwind code the
//! walker relies on, and every hostile stack it must survive with a note.

use super::*;
use crate::testutil::{Machine, put32, put64};

mod forge;

use forge::*;

#[test]
fn pushes_and_allocations_recover_the_chain_and_the_saved_registers() {
    let mut m = machine(&two_functions().finish());
    let s = STACK;
    m.write_u64(s + 0x28, 0x5151); // saved rsi
    m.write_u64(s + 0x30, 0xB0B0); // saved rbx
    m.write_u64(s + 0x38, va(TEXT + 0x150));
    m.write_u64(s + 0x40 + 0x100, 0);
    let r = regs(va(TEXT + 0x20), s);
    let mut w = walker();
    let t = w.walk(&m, &r);
    assert_eq!(t.end.reason, WhyWalkStopped::EndOfStack, "{}", t.end);
    assert_eq!(t.frames.len(), 2);
    let (f0, f1) = (&t.frames[0], &t.frames[1]);
    assert_eq!(f0.child_sp, KernelVa(s));
    assert_eq!(f0.ret_addr, Some(KernelVa(va(TEXT + 0x150))));
    assert_eq!(f1.pc, KernelVa(va(TEXT + 0x150)));
    assert_eq!(f1.child_sp, KernelVa(s + 0x40));
    assert_eq!(f1.ret_addr, Some(KernelVa(0)));
    assert_eq!(f0.nonvolatile.rbx, r.get(Reg::Rbx));
    assert_eq!(f1.nonvolatile.rbx, Some(0xB0B0));
    assert_eq!(f1.nonvolatile.rsi, Some(0x5151));
    // Untouched by F1's prolog: carried from frame 0.
    assert_eq!(f1.nonvolatile.rdi, r.get(Reg::Rdi));
    assert_eq!(f1.nonvolatile.r15, r.get(Reg::R15));
    assert_eq!(f1.module_name.as_deref(), Some("forge"));
    assert!(f0.exact_pc && !f1.exact_pc);
    assert!(matches!(
        f0.unwound_by,
        Some(UnwindMethod::UnwindInfo { function, chained: 0, in_epilog: false }) if function == TEXT
    ));

    // A second walk through the same functions reads only the stack.
    let t2 = w.walk(&m, &r);
    assert_eq!(t2.frames, t.frames);
    assert_eq!(t2.image_reads, ReadStats::default());
    assert!(t2.stack_reads.reads > 0);
    assert!(t.image_reads.reads > 0);
}

#[test]
fn in_the_prolog_only_executed_codes_are_undone() {
    let mut m = machine(&two_functions().finish());
    // At offset 2 of F1 (after `push rbx`, before `push rsi`): only the
    // push of rbx is undone.
    m.write_u64(STACK, 0xB0B0);
    m.write_u64(STACK + 8, 0);
    let t = walker().walk(&m, &regs(va(TEXT + 1), STACK));
    assert_eq!(t.frames.len(), 1);
    assert_eq!(t.end.reason, WhyWalkStopped::EndOfStack, "{}", t.end);
}

#[test]
fn a_return_address_at_a_functions_end_belongs_to_that_function() {
    // `call` is F1's last instruction: its return address is F2's first
    // byte, and must be unwound with F1's data (RVA - 1).
    let mut m = machine(&two_functions().finish());
    let s = STACK;
    // Frame 0 is a leaf in a module area without RUNTIME_FUNCTION.
    m.write_u64(s, va(TEXT + 0x100));
    m.write_u64(s + 8 + 0x38, 0);
    let t = walker().walk(&m, &regs(va(TEXT + 0x300), s));
    assert_eq!(t.frames[0].unwound_by, Some(UnwindMethod::Leaf));
    assert_eq!(t.end.reason, WhyWalkStopped::EndOfStack, "{}", t.end);
    assert_eq!(t.frames.len(), 2);
    assert!(matches!(
        t.frames[1].unwound_by,
        Some(UnwindMethod::UnwindInfo { function, .. }) if function == TEXT
    ));
}

#[test]
fn frame_register_set_frame_and_save_nonvol() {
    // push rbp; sub rsp,40h; lea rbp,[rsp+20h]; mov [rsp+50h],rbx
    // (relative to the frame base: rbp - 20h), then an alloca moves RSP.
    // The function's image, with or without a movaps [rsp+30h],xmm6.
    let image = |save_xmm6: bool| {
        let mut codes = vec![code(14, SAVE_NONVOL, Reg::Rbx as u8), 0x50 / 8];
        if save_xmm6 {
            codes.extend([code(9, SAVE_XMM128, 6), 0x30 / 16]);
        }
        codes.extend([
            code(9, SET_FPREG, 0),
            code(5, ALLOC_SMALL, 0x40 / 8 - 1),
            code(1, PUSH_NONVOL, Reg::Rbp as u8),
        ]);
        let mut f = Forge::new();
        let i = f.info(&ui(0, 14, Reg::Rbp as u8 | (2 << 4), &codes, None));
        f.func(TEXT, TEXT + 0x100, i);
        f.finish()
    };
    let mut m = machine(&image(true));
    let fixed = STACK + 0x200; // RSP after the prolog
    let rsp = fixed - 0x180; // after an alloca
    m.write_u64(fixed + 0x50, 0xB0B0); // saved rbx
    m.write_u64(fixed + 0x40, 0xBBBB); // pushed rbp
    m.write_u64(fixed + 0x48, 0);
    let mut r = regs(va(TEXT + 0x40), rsp);
    r.set(Reg::Rbp, Some(fixed + 0x20));
    let t = walker().walk(&m, &r);
    assert_eq!(t.end.reason, WhyWalkStopped::EndOfStack, "{}", t.end);
    assert_eq!(t.frames.len(), 1);

    // The same with a caller frame, to see the recovered registers.
    let mut m = machine(&image(false));
    m.write_u64(fixed + 0x50, 0xB0B0);
    m.write_u64(fixed + 0x40, 0xBBBB);
    m.write_u64(fixed + 0x48, va(TEXT + 0x500)); // a leaf
    m.write_u64(fixed + 0x50, 0xB0B0);
    let t = walker().walk(&m, &r);
    assert_eq!(t.frames.len(), 2, "{}", t.end);
    assert_eq!(t.frames[1].child_sp, KernelVa(fixed + 0x50));
    assert_eq!(t.frames[1].nonvolatile.rbp, Some(0xBBBB));
    assert_eq!(t.frames[1].nonvolatile.rbx, Some(0xB0B0));

    // Without RBP (a CONTEXT without CONTEXT_INTEGER) the frame cannot be
    // found: a note, not a guess.
    let t = walker().walk(&m, &Registers::new(va(TEXT + 0x40), rsp));
    assert_eq!(
        t.end.reason,
        WhyWalkStopped::FrameRegisterUnknown,
        "{}",
        t.end
    );
    // RBP holding garbage.
    let mut bad = r;
    bad.set(Reg::Rbp, Some(5));
    let t = walker().walk(&m, &bad);
    assert_eq!(
        t.end.reason,
        WhyWalkStopped::FrameRegisterUnknown,
        "{}",
        t.end
    );
}

#[test]
fn machine_frames_give_the_interrupted_rip_and_rsp() {
    // An interrupt handler: PUSH_MACHFRAME with error code, then 0x20
    // bytes. The interrupted code runs on another stack (lower), at the
    // first byte of F1 (prolog offset 0: nothing to undo).
    let mut f = two_functions();
    let i = f.info(&ui(
        0,
        4,
        0,
        &[
            code(4, ALLOC_SMALL, 0x20 / 8 - 1),
            code(0, PUSH_MACHFRAME, 1),
        ],
        None,
    ));
    f.func(TEXT + 0x200, TEXT + 0x300, i);
    let mut m = machine(&f.finish());
    let s = STACK + 0x1000;
    let interrupted_sp = STACK + 0x100;
    m.write_u64(s + 0x20, 0xE); // error code
    m.write_u64(s + 0x28, va(TEXT)); // RIP
    m.write_u64(s + 0x30, 0x10); // CS
    m.write_u64(s + 0x38, 0x282); // EFLAGS
    m.write_u64(s + 0x40, interrupted_sp); // RSP
    m.write_u64(s + 0x48, 0x18); // SS
    m.write_u64(interrupted_sp, 0);
    let t = walker().walk(&m, &regs(va(TEXT + 0x280), s));
    assert_eq!(t.end.reason, WhyWalkStopped::EndOfStack, "{}", t.end);
    assert_eq!(t.frames.len(), 2);
    assert_eq!(
        t.frames[0].unwound_by,
        Some(UnwindMethod::MachineFrame {
            function: TEXT + 0x200,
            frame: s + 0x28
        })
    );
    assert_eq!(t.frames[1].pc, KernelVa(va(TEXT)));
    assert_eq!(t.frames[1].child_sp, KernelVa(interrupted_sp));
    assert!(t.frames[1].exact_pc);
    // Volatile registers are lost across the frame, nonvolatile ones kept.
    assert_eq!(t.frames[1].nonvolatile.r12, Some(0x1000 + 12));
}

#[test]
fn chained_infos_are_followed_and_odd_code_counts_padded() {
    // The primary info of F: push rbx; sub rsp,20h. A second part
    // (shrink-wrapped code further on) whose info allocates 10h more and
    // chains to F's entry; one code, so the chain lies after a pad slot.
    let mut f = Forge::new();
    let primary = f.info(&push_then_sub(Reg::Rbx, 0x20));
    let chained = f.info(&ui(
        4,
        4,
        0,
        &[code(4, ALLOC_SMALL, 0x10 / 8 - 1)],
        Some([TEXT, TEXT + 0x100, primary]),
    ));
    f.func(TEXT, TEXT + 0x100, primary)
        .func(TEXT + 0x100, TEXT + 0x180, chained);
    let mut m = machine(&f.finish());
    let s = STACK;
    m.write_u64(s + 0x30, 0xB0B0);
    m.write_u64(s + 0x38, 0);
    let t = walker().walk(&m, &regs(va(TEXT + 0x140), s));
    assert_eq!(t.end.reason, WhyWalkStopped::EndOfStack, "{}", t.end);
    assert!(matches!(
        t.frames[0].unwound_by,
        Some(UnwindMethod::UnwindInfo { chained: 1, .. })
    ));

    let mut w = walker();
    let sums = w.unwind_summaries(&m, 0).unwrap();
    let s1 = sums[1].as_ref().unwrap();
    assert_eq!(s1.pushes, vec![Reg::Rbx]);
    assert_eq!(s1.allocation, 0x30);
    assert_eq!(s1.frame_size, 0x38);
    assert_eq!(s1.chain.len(), 1);
}

#[test]
fn chains_that_loop_or_never_end_are_refused() {
    // A chains to B chains to A.
    let mut f = Forge::new();
    let a_at = f.xnext;
    let b_at = a_at + 12 + 4; // A is 4 + 0 codes + 12
    let a = f.info(&ui(4, 0, 0, &[], Some([TEXT + 0x100, TEXT + 0x200, b_at])));
    let b = f.info(&ui(4, 0, 0, &[], Some([TEXT, TEXT + 0x100, a_at])));
    assert_eq!((a, b), (a_at, b_at));
    f.func(TEXT, TEXT + 0x100, a)
        .func(TEXT + 0x100, TEXT + 0x200, b);
    // A self-chain.
    let c_at = f.xnext;
    f.info(&ui(4, 0, 0, &[], Some([TEXT + 0x200, TEXT + 0x300, c_at])));
    f.func(TEXT + 0x200, TEXT + 0x300, c_at);
    // A chain of 40 distinct infos.
    let first = f.xnext;
    for k in 0..40u32 {
        let next = first + 16 * (k + 1);
        f.info(&ui(4, 0, 0, &[], Some([TEXT + 0x400, TEXT + 0x500, next])));
    }
    f.info(&ui(0, 0, 0, &[], None));
    f.func(TEXT + 0x300, TEXT + 0x400, first);
    let m = machine(&f.finish());
    for pc in [TEXT + 0x10, TEXT + 0x210, TEXT + 0x310] {
        let t = walker().walk(&m, &regs(va(pc), STACK));
        assert_eq!(t.end.reason, WhyWalkStopped::BadUnwindInfo, "{}", t.end);
        assert!(
            t.end.detail.contains("loops") || t.end.detail.contains("chained"),
            "{}",
            t.end
        );
    }
    // Summing the unwind data up refuses the same chains, and says so.
    let sums = walker().unwind_summaries(&m, 0).unwrap();
    let ends: Vec<&str> = sums
        .iter()
        .map(|s| match s {
            Err(e) if e.reason == WhyWalkStopped::BadUnwindInfo => e.detail.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ends.len(), 4);
    for (e, begin) in ends[..3].iter().zip([TEXT, TEXT + 0x100, TEXT + 0x200]) {
        assert!(
            e.contains(&format!(
                "function at RVA {begin:#x}: the chain of unwind infos loops back"
            )),
            "{e}"
        );
    }
    assert!(
        ends[3].contains("more than 32 chained unwind infos"),
        "{}",
        ends[3]
    );
}

#[test]
fn the_first_frames_epilog_is_simulated() {
    // push rsi; sub rsp,28h ... add rsp,28h; pop rsi; ret
    let mut f = Forge::new();
    let i = f.info(&push_then_sub(Reg::Rsi, 0x28));
    f.func(TEXT, TEXT + 0x20, i);
    f.code(TEXT + 0x18, &[0x48, 0x83, 0xC4, 0x28, 0x5E, 0xC3]);
    let mut m = machine(&f.finish());
    // At `add rsp,28h`: the whole frame is still there.
    m.write_u64(STACK + 0x28, 0x5151);
    m.write_u64(STACK + 0x30, 0);
    let t = walker().walk(&m, &regs(va(TEXT + 0x18), STACK));
    assert_eq!(t.end.reason, WhyWalkStopped::EndOfStack, "{}", t.end);
    assert!(matches!(
        t.frames[0].unwound_by,
        Some(UnwindMethod::UnwindInfo {
            in_epilog: true,
            ..
        })
    ));
    // At `pop rsi`: the allocation is gone; the unwind codes alone would
    // read the return address 0x28 bytes too high.
    let s = STACK + 0x100;
    m.write_u64(s, 0x5151);
    m.write_u64(s + 8, va(TEXT + 0x600));
    m.write_u64(s + 16, 0);
    m.write_u64(s + 0x30, 0xDEAD_0000_0000_0000);
    let t = walker().walk(&m, &regs(va(TEXT + 0x1C), s));
    assert_eq!(t.frames[0].ret_addr, Some(KernelVa(va(TEXT + 0x600))));
    assert_eq!(t.frames[1].nonvolatile.rsi, Some(0x5151));
    // At `ret`.
    let t = walker().walk(&m, &regs(va(TEXT + 0x1D), s + 8));
    assert_eq!(t.frames[0].ret_addr, Some(KernelVa(va(TEXT + 0x600))));
}

#[test]
fn hostile_return_addresses_end_the_walk_with_a_note() {
    let cases: [(u64, WhyWalkStopped); 3] = [
        (0x0000_8000_0000_0000, WhyWalkStopped::NotCanonical),
        (0x0000_7FF6_1234_0000, WhyWalkStopped::UserMode),
        (0xFFFF_F802_0000_0000, WhyWalkStopped::OutsideModules),
    ];
    for (ret, why) in cases {
        let mut m = machine(&two_functions().finish());
        m.write_u64(STACK, ret);
        let t = walker().walk(&m, &regs(va(TEXT + 0x300), STACK));
        assert_eq!(t.end.reason, why, "{ret:#x}: {}", t.end);
        if why == WhyWalkStopped::OutsideModules {
            // The frame is shown, without a module, as WinDbg shows it.
            assert_eq!(t.frames.len(), 2);
            assert_eq!(t.frames[1].module, None);
            assert_eq!(t.frames[1].ret_addr, None);
        }
    }
}

#[test]
fn hostile_stack_pointers_end_the_walk() {
    let m = machine(&two_functions().finish());
    // Unmapped stack.
    let t = walker().walk(&m, &regs(va(TEXT + 0x20), 0xFFFF_D000_7000_0000));
    assert_eq!(t.end.reason, WhyWalkStopped::StackUnreadable, "{}", t.end);
    // Non-canonical.
    let t = walker().walk(&m, &regs(va(TEXT + 0x20), 0x0000_8000_0000_0000));
    assert_eq!(t.end.reason, WhyWalkStopped::NotCanonical, "{}", t.end);
    // At the very top of the address space: no arithmetic may overflow.
    for rsp in [u64::MAX, u64::MAX - 7, u64::MAX - 0x40, SAFE_HIGH] {
        let t = walker().walk(&m, &regs(va(TEXT + 0x20), rsp));
        assert!(!t.end.reason.is_normal(), "{rsp:#x}: {}", t.end);
        let t = walker().walk(&m, &regs(va(TEXT + 0x300), rsp));
        assert!(!t.end.reason.is_normal(), "{rsp:#x}: {}", t.end);
    }
}

#[test]
fn loops_and_endless_stacks_are_bounded() {
    // A machine frame that says it interrupted itself.
    let mut f = two_functions();
    let i = f.info(&ui(0, 0, 0, &[code(0, PUSH_MACHFRAME, 0)], None));
    f.func(TEXT + 0x200, TEXT + 0x300, i);
    let mut m = machine(&f.finish());
    let s = STACK;
    m.write_u64(s, va(TEXT + 0x210));
    m.write_u64(s + 24, s);
    let t = walker().walk(&m, &regs(va(TEXT + 0x210), s));
    assert_eq!(t.end.reason, WhyWalkStopped::Loop, "{}", t.end);

    // A stack full of one leaf's return address: each frame 8 bytes up.
    let mut m = machine(&two_functions().finish());
    for k in 0..512u64 {
        m.write_u64(STACK + 8 * k, va(TEXT + 0x301));
    }
    let t = walker().walk(&m, &regs(va(TEXT + 0x300), STACK));
    assert_eq!(t.end.reason, WhyWalkStopped::FrameLimit, "{}", t.end);
    assert_eq!(t.frames.len(), WalkLimits::default().max_frames);

    // The same under a small byte budget.
    let mut w = walker().with_limits(WalkLimits {
        max_stack_bytes: 0x400,
        ..WalkLimits::default()
    });
    let t = w.walk(&m, &regs(va(TEXT + 0x300), STACK));
    assert_eq!(t.end.reason, WhyWalkStopped::ReadLimit, "{}", t.end);
    assert!(t.stack_reads.bytes <= 0x400);
}

#[test]
fn absurd_frames_and_bad_unwind_data_end_the_walk() {
    let mut f = Forge::new();
    // ALLOC_LARGE of 2 GiB.
    let huge = f.info(&ui(0, 0, 0, &[code(0, ALLOC_LARGE, 1), 0, 0x8000], None));
    // Unwind info past the end of the image.
    f.func(TEXT, TEXT + 0x100, huge)
        .func(TEXT + 0x100, TEXT + 0x200, SIZE - 2)
        // Version 3.
        .func(TEXT + 0x200, TEXT + 0x300, XDATA + 0x800)
        // End before begin, and an indirect entry pointing at itself.
        .func(TEXT + 0x300, TEXT + 0x280, XDATA + 0x800)
        .func(TEXT + 0x400, TEXT + 0x500, PDATA + 4 * 12 + 1);
    f.code(XDATA + 0x800, &[3, 0, 0, 0]);
    let mut m = machine(&f.finish());
    m.write_u64(STACK, 0);
    let expect = [
        (TEXT + 0x10, WhyWalkStopped::FrameTooLarge),
        (TEXT + 0x110, WhyWalkStopped::BadUnwindInfo),
        (TEXT + 0x210, WhyWalkStopped::BadUnwindInfo),
        (TEXT + 0x410, WhyWalkStopped::BadUnwindInfo),
    ];
    for (pc, why) in expect {
        let t = walker().walk(&m, &regs(va(pc), STACK));
        assert_eq!(t.end.reason, why, "{pc:#x}: {}", t.end);
    }
    // The inverted entry is never found (a leaf): no panic.
    let t = walker().walk(&m, &regs(va(TEXT + 0x2F0), STACK));
    assert!(t.frames.len() == 1);

    // An exception directory that claims 4 GiB: lookups stay bounded.
    let mut f = two_functions();
    f.pdata_size = Some(u32::MAX);
    let m = machine(&f.finish());
    let (t, bytes) = crate::testutil::measure(|| walker().walk(&m, &regs(va(TEXT + 0x20), STACK)));
    assert!(!t.end.reason.is_normal());
    assert!(bytes < 4 << 20, "{bytes} bytes allocated");
}

#[test]
fn a_module_whose_image_cannot_be_read_ends_the_walk() {
    let m = Machine::new();
    let t = walker().walk(&m, &regs(va(TEXT + 0x20), STACK));
    assert_eq!(t.end.reason, WhyWalkStopped::ImageUnavailable, "{}", t.end);
    // Garbage headers.
    let mut m = Machine::new();
    m.write_virt(BASE, &[0x4D, 0x5A, 0, 0, 0, 0]);
    let t = walker().walk(&m, &regs(va(TEXT + 0x20), STACK));
    assert_eq!(t.end.reason, WhyWalkStopped::ImageUnavailable, "{}", t.end);
    // A PC in no module.
    let t = walker().walk(&m, &regs(0xFFFF_F802_0000_0000, STACK));
    assert_eq!(t.end.reason, WhyWalkStopped::OutsideModules, "{}", t.end);
    assert_eq!(t.frames.len(), 1);
}

#[test]
fn context_records_are_checked() {
    let r = regs(va(TEXT), STACK);
    let c = r.to_context();
    assert_eq!(Registers::from_context(&c).unwrap(), r);
    assert!(matches!(
        Registers::from_context(&c[..0x100]),
        Err(ContextError::TooShort { .. })
    ));
    let mut no_control = c.clone();
    put32(&mut no_control, 0x30, 0x0010_0002);
    assert!(matches!(
        Registers::from_context(&no_control),
        Err(ContextError::NoControl { .. })
    ));
    let mut control_only = c.clone();
    put32(&mut control_only, 0x30, flags::CONTEXT_CONTROL);
    let p = Registers::from_context(&control_only).unwrap();
    assert_eq!((p.rip, p.rsp()), (r.rip, r.rsp()));
    assert_eq!(p.get(Reg::Rbx), None);
    let mut bad_rsp = c.clone();
    put64(&mut bad_rsp, 0x98, 0x0000_8000_0000_0000);
    assert!(matches!(
        Registers::from_context(&bad_rsp),
        Err(ContextError::NotCanonical { what: "Rsp", .. })
    ));
    let mut m = Machine::new();
    m.write_virt(STACK, &c);
    assert_eq!(Registers::read_context(&m, KernelVa(STACK)).unwrap(), r);
    assert!(matches!(
        Registers::read_context(&m, KernelVa(STACK + 0x10_0000)),
        Err(ContextError::Unreadable { .. })
    ));
}

#[test]
fn module_lookup_and_names() {
    let w = StackWalker::from_modules(vec![
        StackModule::new(
            "ntoskrnl.exe",
            KernelVa(0xFFFF_F800_0000_0000),
            0x10_0000,
            true,
        ),
        StackModule::new(
            "leakydrv.sys",
            KernelVa(0xFFFF_F800_0020_0000),
            0x6000,
            false,
        ),
        StackModule::new(
            "Wdf01000.sys",
            KernelVa(0xFFFF_F800_0010_0000),
            0x1000,
            false,
        ),
        StackModule::new(
            "odd name.v2.sys",
            KernelVa(0xFFFF_F800_0030_0000),
            0x1000,
            false,
        ),
    ]);
    let names: Vec<&str> = w.modules().iter().map(|m| m.short_name.as_str()).collect();
    assert_eq!(names, ["nt", "leakydrv", "Wdf01000", "odd_name_v2"]);
    assert_eq!(w.module_at(KernelVa(0xFFFF_F800_0020_5FFF)), Some(1));
    assert_eq!(w.module_at(KernelVa(0xFFFF_F800_0020_6000)), None);
    assert_eq!(w.module_at(KernelVa(0xFFFF_F800_0010_0000)), Some(2));
    assert_eq!(w.module_at(KernelVa(0xFFFF_F7FF_FFFF_FFFF)), None);
}

#[test]
fn symbols_from_exports_else_module_offsets() {
    let m = machine(&with_exports());
    let mut w = walker();
    let mut s = Symbolizer::new(SymbolizerOptions::default());
    let name = |s: &mut Symbolizer, w: &mut StackWalker, rva: u32| {
        s.symbolize(w, &m, KernelVa(va(rva))).to_string()
    };
    assert_eq!(name(&mut s, &mut w, TEXT), "forge!FirstOne");
    assert_eq!(name(&mut s, &mut w, TEXT + 0x2c), "forge!FirstOne+0x2c");
    assert_eq!(name(&mut s, &mut w, TEXT + 0x180), "forge!SecondOne+0x80");
    assert_eq!(name(&mut s, &mut w, 0x100), "forge+0x100");
    assert_eq!(
        s.symbolize(&mut w, &m, KernelVa(0xFFFF_F802_0000_1234))
            .to_string(),
        "0xfffff802`00001234"
    );
    assert!(
        s.notes().iter().any(|n| n.contains("export table")),
        "{:?}",
        s.notes()
    );

    // No exports at all: module+offset, and a note.
    let m = machine(&two_functions().finish());
    let mut w = walker();
    let mut s = Symbolizer::new(SymbolizerOptions::default());
    assert_eq!(
        s.symbolize(&mut w, &m, KernelVa(va(TEXT + 4))).to_string(),
        "forge+0x4004"
    );
    assert!(s.notes().iter().any(|n| n.contains("forge+0xoffset")));
}

#[test]
fn symbols_from_the_modules_pdb_on_the_symbol_path() {
    // The committed leakydrv.sys mapped as the loader maps it, its PDB in
    // testdata/drivers (a plain directory of the symbol path).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/drivers");
    let file = std::fs::read(root.join("leakydrv.sys")).unwrap();
    let f = ImageFile::parse("leakydrv.sys", file).unwrap();
    let mut mapped = vec![0u8; f.size_of_image() as usize];
    f.read_rva(0, &mut mapped).unwrap();
    let base = 0xFFFF_F800_5000_0000u64;
    let mut m = Machine::new();
    m.write_virt(base, &mapped);
    let mut w = StackWalker::from_modules(vec![StackModule::new(
        "leakydrv.sys",
        KernelVa(base),
        f.size_of_image(),
        false,
    )]);
    let mut s = Symbolizer::new(SymbolizerOptions {
        symbol_path: crate::symbols::SymbolPath::parse(&root.display().to_string(), &root),
        ..SymbolizerOptions::default()
    });
    // Function starts from drivers.json (the linker's map, not the PDB).
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("drivers.json")).unwrap()).unwrap();
    let funcs = &json["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "leakydrv")
        .unwrap()["functions"];
    let rva = |name: &str| funcs[name].as_u64().unwrap();
    let sym = s.symbolize(&mut w, &m, KernelVa(base + rva("LeakOneRecord") + 0x1a));
    assert_eq!(sym.to_string(), "leakydrv!LeakOneRecord+0x1a");
    assert_eq!(sym.origin, SymbolOrigin::Pdb);
    assert_eq!(
        s.symbolize(&mut w, &m, KernelVa(base + rva("DriverEntry") + 0x25))
            .to_string(),
        "leakydrv!DriverEntry+0x25"
    );
    // An import thunk (a public with no procedure record).
    let thunk = rva("ExAllocatePoolWithTag");
    assert_eq!(
        s.symbolize(&mut w, &m, KernelVa(base + thunk + 4))
            .to_string(),
        "leakydrv!ExAllocatePoolWithTag+0x4"
    );

    // A symbol path without it: a note, exports (none) then module+offset.
    let mut s = Symbolizer::new(SymbolizerOptions::default());
    let mut w = StackWalker::from_modules(vec![StackModule::new(
        "leakydrv.sys",
        KernelVa(base),
        f.size_of_image(),
        false,
    )]);
    let at = rva("LeakOneRecord") + 0x1a;
    assert_eq!(
        s.symbolize(&mut w, &m, KernelVa(base + at)).to_string(),
        format!("leakydrv+{at:#x}")
    );
    assert!(
        s.notes().iter().any(|n| n.contains("no PDB leakydrv.pdb")),
        "{:?}",
        s.notes()
    );
}

#[test]
fn images_can_come_from_a_locator() {
    // The image file has the unwind data; memory has only the stack (and
    // not even the headers, since the TimeDateStamp is known).
    let file = two_functions().finish();
    let mut m = Machine::new();
    m.write_u64(STACK + 0x28, 0x5151);
    m.write_u64(STACK + 0x30, 0xB0B0);
    m.write_u64(STACK + 0x38, 0);
    let mut module = StackModule::new("forge.sys", KernelVa(BASE), SIZE, false);
    module.time_date_stamp = Some(0x1234_5678);
    let loc = std::sync::Arc::new(OneFile(file, Default::default()));
    let mut w = StackWalker::from_modules(vec![module]).with_image_locator(loc.clone());
    let t = w.walk(&m, &regs(va(TEXT + 0x20), STACK));
    assert_eq!(t.end.reason, WhyWalkStopped::EndOfStack, "{}", t.end);
    assert_eq!(t.image_reads, ReadStats::default());
    assert!(matches!(w.image_origin(0), Some(ImageOrigin::File(p)) if p == "store/forge.sys"));

    // A file that does not match the module is refused (noted), and
    // memory is used.
    let mut other = two_functions();
    put32(&mut other.img, 0x84 + 4, 0x0BAD_0000);
    let m = machine(&two_functions().finish());
    let loc = std::sync::Arc::new(OneFile(other.finish(), Default::default()));
    let mut module = StackModule::new("forge.sys", KernelVa(BASE), SIZE, false);
    module.time_date_stamp = Some(0x1234_5678);
    let mut w = StackWalker::from_modules(vec![module]).with_image_locator(loc);
    let _ = w.walk(&m, &regs(va(TEXT + 0x20), STACK));
    assert!(matches!(w.image_origin(0), Some(ImageOrigin::Memory)));
    assert!(
        w.notes().iter().any(|n| n.contains("not 0x12345678")),
        "{:?}",
        w.notes()
    );
}
