//! RFLAGS: the bits this interpreter maintains, and the flags an
//! arithmetic or logic result sets, at each operand size.

/// Flag bits of RFLAGS this interpreter maintains.
pub const CF: u64 = 1 << 0;
pub const PF: u64 = 1 << 2;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const IF: u64 = 1 << 9;
pub const DF: u64 = 1 << 10;
pub const OF: u64 = 1 << 11;
const AF: u64 = 1 << 4;
pub(super) const ARITH: u64 = CF | PF | ZF | SF | OF | AF;

pub(super) fn mask(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

pub(super) fn sign_bit(size: u32) -> u64 {
    1u64 << (size * 8 - 1)
}

pub(super) fn sext(v: u64, size: u32) -> i64 {
    let bits = size * 8;
    if bits >= 64 {
        v as i64
    } else {
        ((v << (64 - bits)) as i64) >> (64 - bits)
    }
}

pub(super) fn parity(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

/// Result flags of a logic operation (CF = OF = 0).
pub(super) fn logic_flags(r: u64, size: u32) -> u64 {
    let r = r & mask(size);
    let mut f = 0;
    if r == 0 {
        f |= ZF;
    }
    if r & sign_bit(size) != 0 {
        f |= SF;
    }
    if parity(r) {
        f |= PF;
    }
    f
}

pub(super) fn add_flags(a: u64, b: u64, carry: u64, size: u32) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let wide = a as u128 + b as u128 + carry as u128;
    let r = (wide as u64) & m;
    let overflow = (a ^ r) & (b ^ r) & sign_bit(size) != 0;
    (r, arith_flags(a, b, r, size, wide > m as u128, overflow))
}

pub(super) fn sub_flags(a: u64, b: u64, borrow: u64, size: u32) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let r = a.wrapping_sub(b).wrapping_sub(borrow) & m;
    let overflow = (a ^ b) & (a ^ r) & sign_bit(size) != 0;
    (
        r,
        arith_flags(
            a,
            b,
            r,
            size,
            (b as u128 + borrow as u128) > a as u128,
            overflow,
        ),
    )
}

/// The flags of an add or subtract of `a` and `b` giving `r`: those of the
/// result, CF and OF as the operation found them, and AF (the carry out of
/// bit 3).
fn arith_flags(a: u64, b: u64, r: u64, size: u32, carry: bool, overflow: bool) -> u64 {
    let mut f = logic_flags(r, size);
    if carry {
        f |= CF;
    }
    if overflow {
        f |= OF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    f
}
