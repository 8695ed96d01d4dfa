//! The x64 CONTEXT record a debugger reads and writes: built from a
//! processor's registers, and applied back to them.

use super::cpu::Regs;

/// The x64 CONTEXT record (kdnet.md section 5).
pub const CONTEXT_LEN: usize = 0x4D0;

/// A CONTEXT record (x64) of `regs`: control, integer, segments and
/// floating point.
pub fn context_bytes(regs: &Regs) -> Vec<u8> {
    let mut c = vec![0u8; CONTEXT_LEN];
    let put = |c: &mut Vec<u8>, off: usize, v: &[u8]| c[off..off + v.len()].copy_from_slice(v);
    // CONTEXT_AMD64 | CONTROL | INTEGER | SEGMENTS | FLOATING_POINT
    put(&mut c, 0x30, &0x0010_000Fu32.to_le_bytes());
    put(&mut c, 0x34, &0x1F80u32.to_le_bytes());
    put(&mut c, 0x38, &0x10u16.to_le_bytes());
    for off in [0x3A, 0x3C, 0x40] {
        put(&mut c, off, &0x2Bu16.to_le_bytes());
    }
    put(&mut c, 0x3E, &0x53u16.to_le_bytes());
    put(&mut c, 0x42, &0x18u16.to_le_bytes());
    put(&mut c, 0x44, &(regs.rflags as u32).to_le_bytes());
    for (i, v) in regs.gpr.iter().enumerate() {
        put(&mut c, 0x78 + 8 * i, &v.to_le_bytes());
    }
    put(&mut c, 0xF8, &regs.rip.to_le_bytes());
    for (i, x) in regs.xmm.iter().enumerate() {
        put(&mut c, 0x1A0 + 16 * i, &x.to_le_bytes());
    }
    c
}

/// Set `regs` from the CONTEXT record `c`; false if it is too short.
pub(super) fn apply_context(regs: &mut Regs, c: &[u8]) -> bool {
    if c.len() < CONTEXT_LEN {
        return false;
    }
    let q = |off: usize| u64::from_le_bytes(c[off..off + 8].try_into().expect("8 bytes"));
    for i in 0..16 {
        regs.gpr[i] = q(0x78 + 8 * i);
    }
    regs.rip = q(0xF8);
    regs.rflags = u32::from_le_bytes(c[0x44..0x48].try_into().expect("4 bytes")) as u64 | 2;
    for i in 0..16 {
        regs.xmm[i] =
            u128::from_le_bytes(c[0x1A0 + 16 * i..0x1B0 + 16 * i].try_into().expect("16"));
    }
    true
}
