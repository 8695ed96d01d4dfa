//! How the build mixes the heap's keys into two of its checks, and which
//! way this memory shows it (docs/pool-structures.md §5).
//!
//! 24H2 (26100) changed two derivations: a page segment's signature no
//! longer carries the static key 0xA2E64EADA2E64EAD, and an LFH
//! subsegment's encoded offsets are XORed with `(u32)(va >> 12)` instead of
//! `(u32)va >> 12` (MemProcFS decodes them so). Which builds between 22631
//! and 26100 (Server 23H2 is 25398; Insider builds) do which is not known
//! here, and a build number can be missing or wrong. So each derivation is
//! read off the heap's own metadata: the first segments on the contexts'
//! lists must name their context, and the LFH subsegments in them must
//! decode to block sizes and offsets that fit. The build decides only when
//! the memory cannot tell.

use super::*;

/// The static key of a page segment's signature before 24H2.
const SEGMENT_KEY: u64 = 0xA2E6_4EAD_A2E6_4EAD;
/// Segments read from each context's list and in all, and LFH
/// subsegments decoded in all, at the most: a handful answers (over KDNET
/// each segment is a read of its descriptors), and hostile lists stay
/// short.
const SEGMENTS_PER_CONTEXT: usize = 2;
const PROBE_SEGMENTS: usize = 16;
const PROBE_SUBSEGMENTS: usize = 16;
/// Votes that settle a derivation.
const ENOUGH: u32 = 4;

/// The two derivations, each decided on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Derivation {
    /// XORed into `_HEAP_PAGE_SEGMENT.Signature` with the heap key and the
    /// segment's address.
    pub(super) signature_key: u64,
    /// The LFH shift is `(u32)(va >> 12)` (24H2), not `(u32)va >> 12`.
    pub(super) lfh_shift_full: bool,
}

impl Derivation {
    /// What Windows does at `build` (before 24H2 when unknown).
    pub(super) fn of_build(build: Option<u32>) -> Self {
        let new = build.is_some_and(|b| b >= 26100);
        Self {
            signature_key: if new { 0 } else { SEGMENT_KEY },
            lfh_shift_full: new,
        }
    }

    /// The shift XORed into the encoded offsets of the LFH subsegment at
    /// `sub`.
    pub(super) fn lfh_shift(self, sub: u64) -> u32 {
        lfh_shift(self.lfh_shift_full, sub)
    }
}

fn lfh_shift(full: bool, sub: u64) -> u32 {
    if full {
        (sub >> 12) as u32
    } else {
        (sub as u32) >> 12
    }
}

/// An LFH subsegment's encoded offsets decoded: (block size, first block's
/// offset).
pub(super) fn decode_lfh(encoded: u32, lfh_key: u64, shift: u32) -> (u64, u64) {
    let dec = encoded ^ lfh_key as u32 ^ shift;
    ((dec & 0xFFFF) as u64, (dec >> 16) as u64)
}

/// What the probe saw: the derivation to use, and for each one the memory
/// contradicts the build on, a sentence for the report.
pub(super) struct Probed {
    pub(super) derivation: Derivation,
    pub(super) warnings: Vec<String>,
}

/// The heap's keys and layouts, and the contexts to start from.
pub(super) struct ProbeInput<'a> {
    pub(super) heap_key: u64,
    pub(super) lfh_key: u64,
    pub(super) contexts: &'a HashMap<u64, SegCtx>,
    pub(super) l: &'a HeapLayout,
    /// `_HEAP_SEG_CONTEXT.SegmentListHead` and
    /// `_HEAP_PAGE_SEGMENT.ListEntry`, when the symbols have them.
    pub(super) list_head: Option<u64>,
    pub(super) list_entry: Option<u64>,
}

/// Decide each derivation from the memory; the build's where it is silent.
pub(super) fn probe<M: Memory + ?Sized>(mem: &M, build: Option<u32>, p: &ProbeInput<'_>) -> Probed {
    let expected = Derivation::of_build(build);
    let segments = first_segments(mem, p);
    let mut votes = Votes::default();
    for &(ctx, seg, c) in &segments {
        if votes.settled() {
            break;
        }
        let Ok(sig) = mem.read_u64(KernelVa(seg.wrapping_add(p.l.seg_signature))) else {
            continue;
        };
        let owner = sig ^ p.heap_key ^ seg;
        votes.old_key += u32::from(owner ^ SEGMENT_KEY == ctx);
        votes.new_key += u32::from(owner == ctx);
        if votes.lfh_old + votes.lfh_new < ENOUGH {
            votes.lfh(mem, p, seg, c);
        }
    }
    let build_name = build.map_or_else(|| "an unknown build".to_string(), |b| format!("build {b}"));
    let mut out = Probed {
        derivation: expected,
        warnings: Vec::new(),
    };
    let shown_key =
        newer(votes.old_key, votes.new_key).map(|new| if new { 0 } else { SEGMENT_KEY });
    if let Some(k) = shown_key.filter(|&k| k != expected.signature_key) {
        out.derivation.signature_key = k;
        out.warnings.push(format!(
            "{build_name} signs the segment heap's page segments {}, but those here are signed {}: read as the memory shows",
            key_words(expected.signature_key),
            key_words(k)
        ));
    }
    if let Some(full) =
        newer(votes.lfh_old, votes.lfh_new).filter(|&f| f != expected.lfh_shift_full)
    {
        out.derivation.lfh_shift_full = full;
        out.warnings.push(format!(
            "{build_name} encodes LFH subsegments' block offsets with {}, but those here decode with {}: read as the memory shows",
            shift_words(expected.lfh_shift_full),
            shift_words(full)
        ));
    }
    out
}

/// Which derivation the votes for the older and the newer (24H2's) one
/// show: `Some(true)` for the newer; `None` on a tie.
fn newer(old: u32, new: u32) -> Option<bool> {
    (old != new).then_some(new > old)
}

fn key_words(k: u64) -> String {
    if k == 0 {
        "without a static key (as 24H2 does)".into()
    } else {
        format!("with the static key {k:#X} (as builds before 24H2 do)")
    }
}

fn shift_words(full: bool) -> &'static str {
    if full {
        "(u32)(va >> 12) (as 24H2 does)"
    } else {
        "(u32)va >> 12 (as builds before 24H2 do)"
    }
}

#[derive(Default)]
struct Votes {
    old_key: u32,
    new_key: u32,
    lfh_old: u32,
    lfh_new: u32,
    subsegments: usize,
}

impl Votes {
    fn settled(&self) -> bool {
        self.old_key + self.new_key >= ENOUGH
            && (self.lfh_old + self.lfh_new >= ENOUGH || self.subsegments >= PROBE_SUBSEGMENTS)
    }

    /// Decode the LFH subsegments of the segment at `seg` both ways; a
    /// subsegment whose two shifts agree tells nothing.
    fn lfh<M: Memory + ?Sized>(&mut self, mem: &M, p: &ProbeInput<'_>, seg: u64, c: SegCtx) {
        let Some(ranges) = read_ranges(mem, p.l, seg, c.first_desc) else {
            return;
        };
        let mut i = 0;
        while i < ranges.len() && self.subsegments < PROBE_SUBSEGMENTS {
            let Some((first, flags)) = ranges[i] else {
                i += 1;
                continue;
            };
            let units = ranges[i..]
                .iter()
                .take_while(|r| r.map(|r| r.0) == Some(first))
                .count();
            let start = i;
            i += units;
            if u64::from(flags) != RANGE_LFH || start != first as usize {
                continue;
            }
            let sub = seg + ((start as u64) << c.unit_shift);
            let bytes = (units as u64) << c.unit_shift;
            let (old, new) = (lfh_shift(false, sub), lfh_shift(true, sub));
            if old == new {
                continue;
            }
            // The header up to its bitmap holds both fields.
            let mut hdr = vec![0u8; (p.l.lfh_bitmap.max(p.l.lfh_encoded + 4) as usize).min(0x400)];
            if mem.read_virtual(KernelVa(sub), &mut hdr).is_err() {
                continue;
            }
            let Some(encoded) = hdr
                .get(p.l.lfh_encoded as usize..p.l.lfh_encoded as usize + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            else {
                continue;
            };
            let count = p.l.lfh_block_count.read_u64(&hdr).unwrap_or(0);
            self.subsegments += 1;
            let fits = |shift| {
                let (block, first) = decode_lfh(encoded, p.lfh_key, shift);
                block >= 16
                    && block.is_multiple_of(16)
                    && first >= p.l.lfh_bitmap
                    && count > 0
                    && first.saturating_add(count.saturating_mul(block)) <= bytes
            };
            self.lfh_old += u32::from(fits(old));
            self.lfh_new += u32::from(fits(new));
        }
    }
}

/// The first few segments on each context's list, as (context, segment,
/// its context's shape), contexts in address order.
fn first_segments<M: Memory + ?Sized>(mem: &M, p: &ProbeInput<'_>) -> Vec<(u64, u64, SegCtx)> {
    let (Some(head_off), Some(entry_off)) = (p.list_head, p.list_entry) else {
        return Vec::new();
    };
    let mut ctxs: Vec<(u64, SegCtx)> = p.contexts.iter().map(|(a, c)| (*a, *c)).collect();
    ctxs.sort_unstable_by_key(|c| c.0);
    let mut out = Vec::new();
    for (ctx, c) in ctxs {
        let head = ctx.wrapping_add(head_off);
        let mut link = head;
        for _ in 0..SEGMENTS_PER_CONTEXT {
            let Ok(next) = mem.read_u64(KernelVa(link)) else {
                break;
            };
            if next == head || !KernelVa(next).is_kernel() {
                break;
            }
            out.push((ctx, next.wrapping_sub(entry_off), c));
            if out.len() == PROBE_SEGMENTS {
                return out;
            }
            link = next;
        }
    }
    out
}

/// Per unit of the segment at `seg`: (first unit of its range, range
/// flags); `None` before the first descriptor.
pub(super) fn read_ranges<M: Memory + ?Sized>(
    mem: &M,
    l: &HeapLayout,
    seg: u64,
    first_desc: u64,
) -> Option<Vec<Option<(u16, u8)>>> {
    let mut d = vec![0u8; (l.desc_count * l.desc_size) as usize];
    mem.read_virtual(KernelVa(seg.wrapping_add(l.desc_array)), &mut d)
        .ok()?;
    let n = l.desc_count;
    let mut ranges = vec![None; n as usize];
    let mut i = first_desc;
    while i < n {
        let e = &d[(i * l.desc_size) as usize..((i + 1) * l.desc_size) as usize];
        let flags = l.range_flags.read_u64(e).unwrap_or(0);
        let units = l.unit_size.read_u64(e).unwrap_or(0).max(1);
        let end = (i + units).min(n);
        for k in i..end {
            ranges[k as usize] = Some((i as u16, flags as u8));
        }
        i = end;
    }
    Some(ranges)
}
