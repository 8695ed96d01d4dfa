//! CodeView's base types as pooldump names and sizes them, and enumerator
//! values as numbers.

use pdb2::{Indirection, PrimitiveKind};

/// An enumerator's value, whatever width the PDB stored it in.
pub(super) fn variant(v: &pdb2::Variant) -> i64 {
    use pdb2::Variant::*;
    match *v {
        U8(x) => i64::from(x),
        U16(x) => i64::from(x),
        U32(x) => i64::from(x),
        U64(x) => x as i64,
        I8(x) => i64::from(x),
        I16(x) => i64::from(x),
        I32(x) => i64::from(x),
        I64(x) => x,
    }
}

/// Base type names as Volatility's ISF spells them.
pub(super) fn primitive_name(k: PrimitiveKind) -> &'static str {
    use PrimitiveKind::*;
    match k {
        NoType | Void => "void",
        Char | RChar | I8 => "char",
        UChar | U8 | Char8 => "unsigned char",
        WChar | RChar16 => "wchar",
        RChar32 => "unsigned long",
        Short | I16 => "short",
        UShort | U16 => "unsigned short",
        Long | HRESULT => "long",
        ULong => "unsigned long",
        I32 => "int",
        U32 => "unsigned int",
        Quad | I64 => "long long",
        UQuad | U64 => "unsigned long long",
        F32 | F32PP => "float",
        F64 => "double",
        Bool8 => "bool",
        _ => "unknown",
    }
}

pub(super) fn primitive_size(k: PrimitiveKind) -> u64 {
    use PrimitiveKind::*;
    match k {
        NoType | Void => 0,
        Char | RChar | I8 | UChar | U8 | Char8 | Bool8 => 1,
        WChar | RChar16 | Short | I16 | UShort | U16 | Bool16 | F16 => 2,
        RChar32 | Long | HRESULT | ULong | I32 | U32 | F32 | F32PP | Bool32 => 4,
        F48 => 6,
        Quad | I64 | UQuad | U64 | F64 | Bool64 | Complex32 => 8,
        F80 => 10,
        Octa | UOcta | I128 | U128 | F128 | Complex64 => 16,
        Complex80 => 20,
        Complex128 => 32,
        _ => 0,
    }
}

/// The size of a pointer to a base type, from the mode bits of its type
/// index (cvinfo.h's CV_prmode_e): `void *` is T_32PVOID (4 bytes) in an
/// x86 PDB and T_64PVOID (8) in an x64 one.
pub(super) fn pointer_size(mode: Indirection) -> u64 {
    match mode {
        Indirection::Near16 => 2,
        Indirection::Far16 | Indirection::Huge16 | Indirection::Near32 => 4,
        Indirection::Far32 => 6,
        Indirection::Near64 => 8,
        Indirection::Near128 => 16,
    }
}
