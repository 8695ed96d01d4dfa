//! The data-flow on hand-assembled code.

use super::*;

fn run(bytes: &[u8]) -> (Vec<Insn>, Vec<CallPoint>) {
    let code = decode_linear(0x1000, bytes);
    let calls = analyze(&code);
    (code, calls)
}

fn imms(v: &Val) -> Vec<(u64, Option<u64>)> {
    match v {
        Val::Set(s) => s
            .iter()
            .filter_map(|x| match x {
                Src::Imm { value, imm, .. } => Some((*value, *imm)),
                _ => None,
            })
            .collect(),
        Val::Unknown => Vec::new(),
    }
}

#[test]
fn immediate_and_move_reach_the_call() {
    // mov ecx, 'kaeL'; mov r8d, ecx; call [rip+0x100]
    let (_, calls) = run(&[
        0xB9, 0x4C, 0x65, 0x61, 0x6B, 0x41, 0x89, 0xC8, 0xFF, 0x15, 0, 1, 0, 0,
    ]);
    assert_eq!(calls.len(), 1);
    assert_eq!(imms(&calls[0].state[8]), vec![(0x6B61_654C, Some(0x1001))]);
}

#[test]
fn cmov_joins_and_a_loop_keeps_the_value() {
    // 0: mov ecx, A; 5: mov r8d, B; b: test al,1 ; d: cmove r8d, ecx
    // 11: dec r9; 14: jnz 11; 16: call [rip]
    let code = [
        0xB9, 0x41, 0x41, 0x41, 0x41, // mov ecx, 'AAAA'
        0x41, 0xB8, 0x42, 0x42, 0x42, 0x42, // mov r8d, 'BBBB'
        0xA8, 0x01, // test al, 1
        0x44, 0x0F, 0x44, 0xC1, // cmove r8d, ecx
        0x49, 0xFF, 0xC9, // dec r9
        0x75, 0xFB, // jnz -5
        0xFF, 0x15, 0, 0, 0, 0, // call [rip]
    ];
    let (_, calls) = run(&code);
    let got = imms(&calls[0].state[8]);
    assert_eq!(
        got,
        vec![(0x4141_4141, Some(0x1001)), (0x4242_4242, Some(0x1007))]
    );
}

#[test]
fn a_call_forgets_volatile_registers_but_not_callee_saved() {
    // mov edx, X; mov rdi, [rip+0x40]; call rdi; call [rip]
    let code = [
        0xBA, 1, 2, 3, 4, // mov edx, 0x04030201
        0x48, 0x8B, 0x3D, 0x40, 0, 0, 0, // mov rdi, [rip+0x40]
        0xFF, 0xD7, // call rdi
        0xFF, 0x15, 0, 0, 0, 0, // call [rip]
    ];
    let (code, calls) = run(&code);
    assert_eq!(calls.len(), 2);
    assert_eq!(imms(&calls[0].state[2]), vec![(0x0403_0201, Some(0x1001))]);
    assert_eq!(
        calls[0].state[7],
        Val::one(Src::Load {
            slot: code[1].ins.next_ip() + 0x40
        })
    );
    assert_eq!(calls[1].state[2], Val::Unknown);
    assert_ne!(calls[1].state[7], Val::Unknown);
}

#[test]
fn a_partial_or_unmodelled_write_forgets() {
    // mov r8d, X; mov r8b, 1; call [rip]
    let (_, calls) = run(&[
        0x41, 0xB8, 1, 2, 3, 4, 0x41, 0xB0, 1, 0xFF, 0x15, 0, 0, 0, 0,
    ]);
    assert_eq!(calls[0].state[8], Val::Unknown);
    // mov r8d, X; add r8d, 1; call [rip]
    let (_, calls) = run(&[
        0x41, 0xB8, 1, 2, 3, 4, 0x41, 0x83, 0xC0, 1, 0xFF, 0x15, 0, 0, 0, 0,
    ]);
    assert_eq!(calls[0].state[8], Val::Unknown);
}

#[test]
fn paths_that_disagree_join_and_too_many_values_are_unknown() {
    // A value, then five branches each setting edx to another one.
    let mut code = vec![0xBA, 100, 0, 0, 0];
    for k in 0..5u8 {
        // test eax, eax; jz +5; mov edx, k
        code.extend_from_slice(&[0x85, 0xC0, 0x74, 0x05, 0xBA, k, 0, 0, 0]);
    }
    code.extend_from_slice(&[0xFF, 0x15, 0, 0, 0, 0]);
    let (_, calls) = run(&code);
    assert_eq!(calls[0].state[2], Val::Unknown);
    // Two: both reach.
    let mut code = vec![0xBA, 9, 0, 0, 0];
    code.extend_from_slice(&[0x85, 0xC0, 0x74, 0x05, 0xBA, 7, 0, 0, 0]);
    code.extend_from_slice(&[0xFF, 0x15, 0, 0, 0, 0]);
    let (_, calls) = run(&code);
    let v: Vec<u64> = imms(&calls[0].state[2]).into_iter().map(|x| x.0).collect();
    assert_eq!(v, vec![7, 9]);
}

#[test]
fn stores_to_stack_argument_slots_reach_the_call() {
    let six = stack_arg(6).unwrap();
    let seven = stack_arg(7).unwrap();
    // mov dword ptr [rsp+28h], 'kaeL'; mov eax, 'BBBB';
    // mov [rsp+30h], eax; mov qword ptr [rsp+20h], 100h; call [rip]
    let code = [
        0xC7, 0x44, 0x24, 0x28, 0x4C, 0x65, 0x61, 0x6B, // mov [rsp+28h], imm32
        0xB8, 0x42, 0x42, 0x42, 0x42, // mov eax, 'BBBB'
        0x89, 0x44, 0x24, 0x30, // mov [rsp+30h], eax
        0x48, 0xC7, 0x44, 0x24, 0x20, 0, 1, 0, 0, // mov qword [rsp+20h], 100h
        0xFF, 0x15, 0, 0, 0, 0, // call [rip]
        0xFF, 0x15, 0, 0, 0, 0, // call [rip]
    ];
    let (_, calls) = run(&code);
    assert_eq!(
        imms(&calls[0].state[six]),
        vec![(0x6B61_654C, Some(0x1004))]
    );
    assert_eq!(
        imms(&calls[0].state[seven]),
        vec![(0x4242_4242, Some(0x1009))]
    );
    assert_eq!(
        imms(&calls[0].state[stack_arg(5).unwrap()]),
        vec![(0x100, Some(0x1016))]
    );
    // The callee owns its arguments: after a call they are unknown.
    assert_eq!(calls[1].state[six], Val::Unknown);
    assert_eq!(stack_arg(4), None);
    assert_eq!(stack_arg(9), None);
}

#[test]
fn a_moved_rsp_or_another_store_forgets_the_stack_arguments() {
    let six = stack_arg(6).unwrap();
    let store = [0xC7, 0x44, 0x24, 0x28, 0x4C, 0x65, 0x61, 0x6B];
    let call = [0xFF, 0x15, 0, 0, 0, 0];
    for (what, between) in [
        ("sub rsp, 8", &[0x48, 0x83, 0xEC, 0x08][..]),
        ("push rbx", &[0x53][..]),
        ("mov [rcx], eax", &[0x89, 0x01][..]),
        ("mov byte [rsp+29h], 0", &[0xC6, 0x44, 0x24, 0x29, 0x00][..]),
        ("mov [rsp+2Ch], eax", &[0x89, 0x44, 0x24, 0x2C][..]),
    ] {
        let code: Vec<u8> = [&store[..], between, &call[..]].concat();
        let (_, calls) = run(&code);
        assert_eq!(calls[0].state[six], Val::Unknown, "{what}");
    }
    // A store to another slot, or below them, keeps it.
    for (what, between) in [
        ("mov [rsp+30h], eax", &[0x89, 0x44, 0x24, 0x30][..]),
        ("mov [rsp+40h], eax", &[0x89, 0x44, 0x24, 0x40][..]),
        ("mov [rsp+1Ch], eax", &[0x89, 0x44, 0x24, 0x1C][..]),
    ] {
        let code: Vec<u8> = [&store[..], between, &call[..]].concat();
        let (_, calls) = run(&code);
        assert_ne!(calls[0].state[six], Val::Unknown, "{what}");
    }
}

#[test]
fn an_entry_loaded_through_a_global_is_a_field_of_it() {
    // 0: mov rax, [rip+0x100] (the global at 0x1107)
    // 7: mov rax, [rax+0x600]; e: mov rcx, [rax+rdx*8+8] (indexed: unknown)
    // 13: mov rsi, [rsp+0x600] (through RSP: unknown); 1b: call [rip]
    let code = [
        0x48, 0x8B, 0x05, 0x00, 0x01, 0, 0, // mov rax, [rip+0x100]
        0x48, 0x8B, 0x80, 0x00, 0x06, 0, 0, // mov rax, [rax+0x600]
        0x48, 0x8B, 0x4C, 0xD0, 0x08, // mov rcx, [rax+rdx*8+8]
        0x48, 0x8B, 0xB4, 0x24, 0x00, 0x06, 0, 0, // mov rsi, [rsp+0x600]
        0xFF, 0x15, 0, 0, 0, 0, // call [rip]
    ];
    let (_, calls) = run(&code);
    let st = &calls[0].state;
    assert_eq!(
        st[0],
        Val::Set(vec![Src::Field {
            slot: 0x1107,
            offset: 0x600
        }])
    );
    assert_eq!(st[1], Val::Unknown);
    assert_eq!(st[6], Val::Unknown);
    // An entry's entry is not followed, and a 32-bit load loses it.
    let code = [
        0x48, 0x8B, 0x05, 0x00, 0x01, 0, 0, // mov rax, [rip+0x100]
        0x48, 0x8B, 0x40, 0x08, // mov rax, [rax+8]
        0x48, 0x8B, 0x48, 0x08, // mov rcx, [rax+8]
        0x8B, 0x05, 0x00, 0x01, 0, 0, // mov eax, [rip+0x100]
        0xFF, 0x15, 0, 0, 0, 0, // call [rip]
    ];
    let (_, calls) = run(&code);
    assert_eq!(calls[0].state[1], Val::Unknown);
    assert_eq!(calls[0].state[0], Val::Unknown);
}
