use super::*;

/// Flat memory from `base`, plus nothing: reads or writes outside fault.
struct Flat {
    base: u64,
    bytes: Vec<u8>,
}

impl Flat {
    /// The bytes at `va..va + len`, or the fault an access there takes.
    fn at(&mut self, va: u64, len: usize, write: bool, fetch: bool) -> Result<&mut [u8], Fault> {
        let off = va.wrapping_sub(self.base) as usize;
        self.bytes
            .get_mut(off..off + len)
            .ok_or(Fault { va, write, fetch })
    }
}

impl Bus for Flat {
    fn read(&mut self, va: u64, out: &mut [u8], fetch: bool) -> Result<(), Fault> {
        out.copy_from_slice(self.at(va, out.len(), false, fetch)?);
        Ok(())
    }
    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), Fault> {
        self.at(va, data.len(), true, false)?.copy_from_slice(data);
        Ok(())
    }
}

const BASE: u64 = 0xFFFF_F800_0000_0000;

/// Run `code` (machine code at BASE) until it stops; the stack is the top
/// of a 64 KiB region.
fn run(code: &[u8], setup: impl FnOnce(&mut Cpu)) -> (Cpu, Flat, Exit) {
    let mut mem = Flat {
        base: BASE,
        bytes: vec![0; 0x10000],
    };
    mem.bytes[..code.len()].copy_from_slice(code);
    let mut cpu = Cpu::new();
    cpu.regs.rip = BASE;
    cpu.regs.gpr[RSP] = BASE + 0xFF00;
    setup(&mut cpu);
    let exit = loop {
        if let Err(e) = cpu.step(&mut mem) {
            break e;
        }
    };
    (cpu, mem, exit)
}

#[test]
fn arithmetic_sets_the_flags_conditions_read() {
    // mov eax, 5; sub eax, 7; setb cl; sets dl; seto bl; int3
    let (cpu, _, exit) = run(
        &[
            0xB8, 5, 0, 0, 0, 0x83, 0xE8, 7, 0x0F, 0x92, 0xC1, 0x0F, 0x98, 0xC2, 0x0F, 0x90, 0xC3,
            0xCC,
        ],
        |_| {},
    );
    assert_eq!(exit, Exit::Breakpoint);
    assert_eq!(
        cpu.regs.gpr[RAX], 0xFFFF_FFFE,
        "a 32-bit result zero-extends"
    );
    assert_eq!(cpu.regs.gpr[RCX] & 0xFF, 1, "borrow");
    assert_eq!(cpu.regs.gpr[RDX] & 0xFF, 1, "negative");
    assert_eq!(cpu.regs.gpr[RBX] & 0xFF, 0, "no signed overflow");
    // mov al, 0x7f; add al, 1 -> OF, SF; seto bl
    let (cpu, _, _) = run(&[0xB0, 0x7F, 0x04, 1, 0x0F, 0x90, 0xC3, 0xCC], |_| {});
    assert_eq!(cpu.regs.gpr[RBX] & 0xFF, 1);
    assert!(cpu.flag(SF) && !cpu.flag(CF));
}

#[test]
fn cmov_imul_shifts_and_division() {
    // mov ecx, 3; mov edx, 9; cmp ecx, edx; cmovb ecx, edx (ecx = 9)
    // imul rax, rcx, 7 (63); shl rax, 2 (252); sar rax, 1 (126)
    // xor edx, edx; mov ebx, 10; div rbx (rax 12, rdx 6); int3
    let code = [
        0xB9, 3, 0, 0, 0, 0xBA, 9, 0, 0, 0, 0x39, 0xD1, 0x0F, 0x42, 0xCA, 0x48, 0x6B, 0xC1, 7,
        0x48, 0xC1, 0xE0, 2, 0x48, 0xD1, 0xF8, 0x31, 0xD2, 0xBB, 10, 0, 0, 0, 0x48, 0xF7, 0xF3,
        0xCC,
    ];
    let (cpu, _, exit) = run(&code, |_| {});
    assert_eq!(exit, Exit::Breakpoint);
    assert_eq!(cpu.regs.gpr[RCX], 9);
    assert_eq!(cpu.regs.gpr[RAX], 12);
    assert_eq!(cpu.regs.gpr[RDX], 6);
}

#[test]
fn calls_and_returns_keep_the_shadow_stack() {
    // 0: call +5 (to 0xA); 5: int3; ... 0xA: push rbx; int3
    let mut code = vec![0xE8, 5, 0, 0, 0, 0xCC, 0x90, 0x90, 0x90, 0x90, 0x53, 0xCC];
    code.extend([0x5B, 0xC3]); // pop rbx; ret
    let (mut cpu, mut mem, exit) = run(&code, |_| {});
    assert_eq!(exit, Exit::Breakpoint);
    assert_eq!(cpu.regs.rip, BASE + 0xB, "the int3 leaves RIP on itself");
    assert_eq!(cpu.shadow.len(), 1);
    let f = cpu.shadow[0];
    assert_eq!(
        (f.site, f.resume, f.slot),
        (BASE, BASE + 5, BASE + 0xFF00 - 8)
    );
    // Step over the int3, pop, ret: the shadow frame goes with the return.
    cpu.regs.rip += 1;
    let exit = loop {
        if let Err(e) = cpu.step(&mut mem) {
            break e;
        }
    };
    assert_eq!(exit, Exit::Breakpoint);
    assert_eq!(cpu.regs.rip, BASE + 5);
    assert!(cpu.shadow.is_empty());
}

#[test]
fn a_faulting_instruction_has_no_effect() {
    // push rax; mov rax, [0]  (faults: outside the flat memory)
    let code = [0x50, 0x48, 0x8B, 0x04, 0x25, 0, 0, 0, 0];
    let (cpu, _, exit) = run(&code, |c| c.regs.gpr[RAX] = 0x1234);
    assert_eq!(
        exit,
        Exit::PageFault(Fault {
            va: 0,
            write: false,
            fetch: false
        })
    );
    assert_eq!(
        cpu.regs.rip,
        BASE + 1,
        "reported at the faulting instruction"
    );
    assert_eq!(cpu.regs.gpr[RAX], 0x1234);
}

#[test]
fn unknown_instructions_stop_with_their_text() {
    // cpuid
    let (_, _, exit) = run(&[0x0F, 0xA2], |_| {});
    match exit {
        Exit::Invalid { rip, text } => {
            assert_eq!(rip, BASE);
            assert!(text.contains("cpuid"), "{text}");
        }
        e => panic!("{e:?}"),
    }
}
