//! Finding candidate tag positions in a haystack.
//!
//! A pool header's tag sits at a fixed offset in a header that is aligned
//! to the allocation unit (x64: offset 4 of a 16-byte aligned header,
//! docs/pool-structures.md §4), so a candidate is a position `p` with
//! `p % align == tag_offset` whose four bytes match the [`TagSet`].
//! Three engines find them; all give the same candidates (tests check
//! that), they differ only in speed (docs/performance.md has the
//! measurements):
//!
//! * [`Engine::Memmem`]: `memchr::memmem` for the first three tag bytes
//!   (the fourth carries PROTECTED_POOL on Win7 object tags, so it is
//!   checked after), then the alignment. One exact tag only.
//! * [`Engine::Stride`]: read the u32 at every aligned tag position and
//!   probe the set: the memory is read once whatever the number of tags
//!   or wildcards, and alignment costs nothing.
//! * [`Engine::AhoCorasick`]: the `aho-corasick` crate over the distinct
//!   three-byte prefixes of an exact tag set.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use memchr::memmem;

use crate::tags::TagSet;

/// How candidates are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// Memmem for one exact tag, the stride probe otherwise. Aho-Corasick
    /// is as fast when the tags share a rare first byte, but falls to
    /// ~1 GB/s on tags spread over the alphabet (docs/performance.md).
    #[default]
    Auto,
    /// `memchr::memmem` on the tag's first three bytes: one exact tag only.
    Memmem,
    /// Probe the [`TagSet`] at every aligned tag position: any tags,
    /// wildcards included.
    Stride,
    /// The `aho-corasick` crate over the tags' three-byte prefixes: exact
    /// tags only.
    AhoCorasick,
}

impl Engine {
    /// The engine's name as `--engine` takes it and errors print it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::Memmem => "memmem",
            Engine::Stride => "stride",
            Engine::AhoCorasick => "aho-corasick",
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Engine::Auto,
            "memmem" => Engine::Memmem,
            "stride" => Engine::Stride,
            "aho-corasick" | "ac" => Engine::AhoCorasick,
            _ => {
                return Err(format!(
                    "unknown engine `{s}` (auto, memmem, stride, aho-corasick)"
                ));
            }
        })
    }
}

pub(crate) enum Matcher {
    Memmem(Box<memmem::Finder<'static>>),
    Stride,
    Aho(AhoCorasick),
}

impl Matcher {
    /// The engine for `set`; `None` if the engine cannot search it
    /// (memmem needs one exact tag, Aho-Corasick exact tags).
    pub fn new(set: &TagSet, engine: Engine) -> Option<(Self, Engine)> {
        let engine = match engine {
            Engine::Auto if set.single_exact().is_some() => Engine::Memmem,
            Engine::Auto => Engine::Stride,
            e => e,
        };
        let m = match engine {
            Engine::Memmem => {
                let v = set.single_exact()?;
                Matcher::Memmem(Box::new(
                    memmem::Finder::new(&v.to_le_bytes()[..3]).into_owned(),
                ))
            }
            Engine::AhoCorasick => {
                if !set.all_exact() || set.is_empty() {
                    return None;
                }
                let mut prefixes: Vec<[u8; 3]> = set
                    .masks()
                    .iter()
                    .map(|m| {
                        let b = m.value.to_le_bytes();
                        [b[0], b[1], b[2]]
                    })
                    .collect();
                prefixes.sort_unstable();
                prefixes.dedup();
                let ac = AhoCorasick::builder()
                    .kind(Some(AhoCorasickKind::DFA))
                    .match_kind(MatchKind::Standard)
                    .build(&prefixes)
                    .ok()?;
                Matcher::Aho(ac)
            }
            Engine::Stride | Engine::Auto => Matcher::Stride,
        };
        Some((m, engine))
    }

    /// Call `f(p, raw_tag)` for every aligned position `p` (tag offset
    /// `off` in `align`-byte units) whose tag is in `set`, in increasing
    /// order. `f` is called through a pointer: hits are rare, and one
    /// compiled copy of each loop keeps its speed independent of what the
    /// caller does with them.
    pub fn candidates(
        &self,
        hay: &[u8],
        set: &TagSet,
        off: usize,
        align: usize,
        f: &mut dyn FnMut(usize, u32),
    ) {
        let read = |p: usize| u32::from_le_bytes([hay[p], hay[p + 1], hay[p + 2], hay[p + 3]]);
        match self {
            Matcher::Memmem(finder) => {
                let mut at = 0;
                // Restart one byte after each match rather than using
                // find_iter: its matches never overlap, and a
                // self-overlapping needle (`AAA`) would hide an aligned
                // match under an unaligned one.
                while let Some(i) = finder.find(&hay[at..]) {
                    let p = at + i;
                    if p % align == off && p + 4 <= hay.len() {
                        let t = read(p);
                        if set.contains(t) {
                            f(p, t);
                        }
                    }
                    at = p + 1;
                }
            }
            Matcher::Aho(ac) => {
                // As for memmem: restart one byte after each match, so an
                // unaligned match never hides an overlapping aligned one
                // (the needles all have one length, so the first match to
                // end is also the first to start).
                let mut at = 0;
                while let Some(m) = ac.find(aho_corasick::Input::new(hay).range(at..)) {
                    let p = m.start();
                    if p % align == off && p + 4 <= hay.len() {
                        let t = read(p);
                        if set.contains(t) {
                            f(p, t);
                        }
                    }
                    at = p + 1;
                }
            }
            Matcher::Stride => stride(hay, set, off, align, f),
        }
    }
}

/// The stride probe. Four slots per step with one branch on their
/// combined result, so the loop is a run of loads, ands and compares
/// that keeps up with memory. The x64 layout (tag at +4 of 16-byte
/// headers) gets a copy with constant offsets: no bounds checks, loads the
/// compiler can schedule freely.
fn stride(hay: &[u8], set: &TagSet, off: usize, align: usize, f: &mut dyn FnMut(usize, u32)) {
    if off == 4 && align == 16 {
        stride_x64(hay, set, f);
    } else {
        stride_any(hay, set, off, align, f);
    }
}

fn stride_x64(hay: &[u8], set: &TagSet, f: &mut dyn FnMut(usize, u32)) {
    const OFF: usize = 4;
    const ALIGN: usize = 16;
    let (blocks, tail) = hay.as_chunks::<64>();
    let tag = |b: &[u8; 64], k: usize| {
        let p = k * ALIGN + OFF;
        u32::from_le_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]])
    };
    let mut report = |base: usize, b: &[u8; 64], hit: u32| {
        for k in 0..4 {
            if hit & (1 << k) != 0 {
                let t = tag(b, k);
                if set.contains(t) {
                    f(base + k * ALIGN + OFF, t);
                }
            }
        }
    };
    if let Some(v) = set.single_exact() {
        let mask = !crate::tags::PROTECTED_POOL;
        for (i, b) in blocks.iter().enumerate() {
            let eq = |k| ((tag(b, k) & mask) == v) as u32;
            let hit = eq(0) | eq(1) << 1 | eq(2) << 2 | eq(3) << 3;
            if hit != 0 {
                report(i * 64, b, hit);
            }
        }
    } else if let Some((mask, filter)) = set.single_filter() {
        for (i, b) in blocks.iter().enumerate() {
            let hit = (0..4).fold(0u32, |h, k| {
                h | (TagSet::probe(mask, filter, tag(b, k)) << k)
            });
            if hit != 0 {
                report(i * 64, b, hit);
            }
        }
    } else {
        for (i, b) in blocks.iter().enumerate() {
            report(i * 64, b, 0xF);
        }
    }
    let base = blocks.len() * 64;
    stride_any(tail, set, OFF, ALIGN, &mut |p, t| f(base + p, t));
}

/// Any layout, one slot at a time.
fn stride_any(hay: &[u8], set: &TagSet, off: usize, align: usize, f: &mut dyn FnMut(usize, u32)) {
    let mut p = off;
    while p + 4 <= hay.len() {
        let t = u32::from_le_bytes([hay[p], hay[p + 1], hay[p + 2], hay[p + 3]]);
        if set.contains(t) {
            f(p, t);
        }
        p += align;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::TagMask;

    fn all(engine: Engine, set: &TagSet, hay: &[u8]) -> Vec<(usize, u32)> {
        let (m, _) = Matcher::new(set, engine).expect("engine fits the set");
        let mut v = Vec::new();
        m.candidates(hay, set, 4, 16, &mut |p, t| v.push((p, t)));
        v
    }

    #[test]
    fn engines_agree_on_aligned_protected_and_overlapping_tags() {
        let tag = u32::from_le_bytes(*b"AAAx");
        let mut hay = vec![0u8; 0x3000];
        // Unaligned copy just before an aligned one: memmem's first match
        // overlaps the real one.
        hay[0x103..0x107].copy_from_slice(b"AAAA");
        hay[0x104..0x108].copy_from_slice(b"AAAx");
        hay[0x214..0x218].copy_from_slice(b"AAA\xf8"); // protected
        hay[0x225..0x229].copy_from_slice(b"AAAx"); // unaligned
        hay[0x2FF4..0x2FF8].copy_from_slice(b"AAAx"); // last slot
        let set = TagSet::new(&[TagMask::exact(tag)]);
        let want = vec![
            (0x104, tag),
            (0x214, u32::from_le_bytes(*b"AAA\xf8")),
            (0x2FF4, tag),
        ];
        for e in [
            Engine::Memmem,
            Engine::Stride,
            Engine::AhoCorasick,
            Engine::Auto,
        ] {
            assert_eq!(all(e, &set, &hay), want, "{e:?}");
        }
    }

    #[test]
    fn many_tags_and_masks() {
        let mut hay = vec![0u8; 0x2000];
        let tags: Vec<TagMask> = (0..64u8)
            .map(|i| {
                TagMask::exact(u32::from_le_bytes([
                    b'L',
                    b'k',
                    b'a' + i / 26,
                    b'a' + i % 26,
                ]))
            })
            .collect();
        for (i, t) in tags.iter().enumerate() {
            let p = 0x40 + i * 0x50;
            let p = p - p % 16 + 4;
            hay[p..p + 4].copy_from_slice(&t.value.to_le_bytes());
        }
        let set = TagSet::new(&tags);
        let a = all(Engine::Stride, &set, &hay);
        assert_eq!(a.len(), 64);
        assert_eq!(a, all(Engine::AhoCorasick, &set, &hay));
        let glob = TagSet::new(&TagMask::expand_glob(b"Lk*"));
        assert_eq!(all(Engine::Stride, &glob, &hay), a);
        assert!(Matcher::new(&glob, Engine::Memmem).is_none());
        assert!(Matcher::new(&glob, Engine::AhoCorasick).is_none());
    }
}
