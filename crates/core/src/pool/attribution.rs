//! Which driver owns a tag, without pooltag.txt: the `findstr /m /l <tag>
//! *.sys` method of the Microsoft docs, done on the driver images mapped in
//! the dump. A tag's bytes passed to ExAllocatePoolWithTag are usually an
//! immediate operand (`mov r8d, 'kaeL'`), so hits right after an opcode
//! that takes a 32-bit immediate count far more than stray bytes.

use std::collections::BTreeMap;

use aho_corasick::AhoCorasick;
use serde::Serialize;

use crate::addr::{KernelVa, PAGE_SIZE};
use crate::kernel::LoadedModule;
use crate::memory::Memory;
use crate::tag::PoolTag;

/// The likely owner of a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attribution {
    /// BaseDllName of the module with the best evidence.
    pub module: String,
    /// Hits that are immediate operands of an instruction.
    pub immediate_hits: u32,
    /// Other occurrences of the four bytes in the image.
    pub other_hits: u32,
    /// Other modules that also contain the tag, best first.
    pub also_in: Vec<String>,
}

/// Images larger than this are searched only up to it.
pub const MAX_IMAGE: u64 = 64 << 20;

/// Search every module's image for the tags. Unreadable pages are skipped.
pub fn attribute_tags<M: Memory + ?Sized>(
    mem: &M,
    modules: &[LoadedModule],
    tags: &[PoolTag],
) -> BTreeMap<PoolTag, Attribution> {
    let tags: Vec<PoolTag> = {
        let mut t: Vec<PoolTag> = tags
            .iter()
            .map(|t| t.unprotected())
            .filter(|t| t.0 != 0)
            .collect();
        t.sort();
        t.dedup();
        t
    };
    if tags.is_empty() {
        return BTreeMap::new();
    }
    let needles: Vec<[u8; 4]> = tags.iter().map(|t| t.bytes()).collect();
    let Ok(ac) = AhoCorasick::new(&needles) else {
        return BTreeMap::new();
    };
    // (tag index) -> per module (name, immediate, other)
    let mut evidence: Vec<Vec<(String, u32, u32)>> = vec![Vec::new(); tags.len()];
    for m in modules {
        let size = (m.size as u64).min(MAX_IMAGE);
        if size == 0 || !m.base.is_kernel() {
            continue;
        }
        let img = read_image(mem, m.base, size);
        let mut counts: BTreeMap<usize, (u32, u32)> = BTreeMap::new();
        for hit in ac.find_overlapping_iter(&img) {
            let c = counts.entry(hit.pattern().as_usize()).or_default();
            if is_immediate(&img, hit.start()) {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
        let name = if m.name.is_empty() {
            format!("module at {}", m.base)
        } else {
            m.name.clone()
        };
        for (i, (imm, other)) in counts {
            evidence[i].push((name.clone(), imm, other));
        }
    }
    let mut out = BTreeMap::new();
    for (i, mut ev) in evidence.into_iter().enumerate() {
        if ev.is_empty() {
            continue;
        }
        ev.sort_by_key(|(n, imm, other)| {
            (
                std::cmp::Reverse(*imm),
                std::cmp::Reverse(*other),
                n.clone(),
            )
        });
        let (module, immediate_hits, other_hits) = ev[0].clone();
        out.insert(
            tags[i],
            Attribution {
                module,
                immediate_hits,
                other_hits,
                also_in: ev[1..].iter().map(|e| e.0.clone()).collect(),
            },
        );
    }
    out
}

fn read_image<M: Memory + ?Sized>(mem: &M, base: KernelVa, size: u64) -> Vec<u8> {
    let mut img = vec![0u8; size as usize];
    let mut off = 0u64;
    while off < size {
        let n = PAGE_SIZE.min(size - off) as usize;
        let o = off as usize;
        if let Some(va) = base.checked_add(off) {
            let _ = mem.read_virtual(va, &mut img[o..o + n]);
        }
        off += n as u64;
    }
    img
}

/// Is the 4-byte value at `at` the imm32 of a common instruction?
fn is_immediate(img: &[u8], at: usize) -> bool {
    let b = |back: usize| at.checked_sub(back).map(|i| img[i]);
    // mov r32, imm32 (B8+r), optionally with a REX prefix (41 B8 = mov r8d).
    if matches!(b(1), Some(0xB8..=0xBF)) {
        return true;
    }
    // push imm32
    if b(1) == Some(0x68) {
        return true;
    }
    // mov r/m32, imm32 (C7 /0) and the 81 /x group (cmp, and, or ...):
    // the opcode, a ModRM byte, maybe a SIB byte and a displacement, then
    // the immediate.
    (2..=7).any(|k| {
        let (Some(op), Some(modrm)) = (b(k), b(k - 1)) else {
            return false;
        };
        if op != 0xC7 && op != 0x81 {
            return false;
        }
        let (md, rm) = (modrm >> 6, modrm & 7);
        let sib = (md != 3 && rm == 4).then(|| b(k - 2)).flatten();
        let mut len = 1 + usize::from(sib.is_some());
        len += match md {
            1 => 1,
            2 => 4,
            0 if rm == 5 => 4,
            0 if sib.is_some_and(|s| s & 7 == 5) => 4,
            _ => 0,
        };
        1 + len == k
    })
}

#[cfg(test)]
mod tests {
    use super::is_immediate;

    #[test]
    fn recognises_immediate_operands() {
        // mov r8d, 'kaeL'
        let code = [0x41, 0xB8, b'L', b'e', b'a', b'k'];
        assert!(is_immediate(&code, 2));
        // mov dword ptr [rsp+20h], imm32
        let code = [0xC7, 0x44, 0x24, 0x20, b'L', b'e', b'a', b'k'];
        assert!(is_immediate(&code, 4));
        // mov dword ptr [rip+disp32], imm32
        let code = [0xC7, 0x05, 1, 2, 3, 4, b'L', b'e', b'a', b'k'];
        assert!(is_immediate(&code, 6));
        // cmp ecx, imm32
        let code = [0x81, 0xF9, b'L', b'e', b'a', b'k'];
        assert!(is_immediate(&code, 2));
        // a string in data
        let data = [b'x', b'y', b'L', b'e', b'a', b'k'];
        assert!(!is_immediate(&data, 2));
    }
}
