//! What to look for: tags as `(value, mask)` pairs over the four tag bytes
//! (docs/pool-structures.md §8). A plain tag fixes all four bytes; `?` leaves one byte
//! free; a `*` glob expands into the few fixed-position patterns it can
//! mean over exactly four characters (`Nt*` is `Nt??`, `*x*` is four
//! patterns). The PROTECTED_POOL bit is never part of a mask: a header
//! tag matches with or without it (docs/pool-structures.md §4).

/// The top bit of the fourth tag byte, set on Win7 object tags in headers
/// and stripped everywhere else.
pub const PROTECTED_POOL: u32 = 0x8000_0000;

/// Matches a raw tag `t` when `t & mask == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagMask {
    /// The tag bytes that must match, as a little-endian ULONG (zero
    /// where `mask` is zero).
    pub value: u32,
    /// 0xFF in each fixed byte, 0 in each `?` byte; PROTECTED_POOL always
    /// clear.
    pub mask: u32,
}

impl TagMask {
    /// One exact tag (`value` is the ULONG of the four bytes).
    pub const fn exact(value: u32) -> Self {
        Self::new(value, u32::MAX)
    }

    /// A tag with don't-care bits; PROTECTED_POOL is always don't-care.
    pub const fn new(value: u32, mask: u32) -> Self {
        let mask = mask & !PROTECTED_POOL;
        Self {
            value: value & mask,
            mask,
        }
    }

    /// Four bytes, `None` where any byte will do (a `?`).
    pub fn from_bytes(b: [Option<u8>; 4]) -> Self {
        let mut value = [0u8; 4];
        let mut mask = [0u8; 4];
        for (i, c) in b.iter().enumerate() {
            if let Some(c) = c {
                value[i] = *c;
                mask[i] = 0xFF;
            }
        }
        Self::new(u32::from_le_bytes(value), u32::from_le_bytes(mask))
    }

    /// `tag` (a raw header tag) agrees with every fixed byte. Callers pass
    /// tags with PROTECTED_POOL or without: the mask ignores it.
    pub const fn matches(self, tag: u32) -> bool {
        tag & self.mask == self.value
    }

    /// Every byte is fixed (apart from PROTECTED_POOL).
    pub const fn is_exact(self) -> bool {
        self.mask == !PROTECTED_POOL
    }

    /// Expand a PoolMon glob (`?` one character, `*` any run, compared
    /// against exactly four characters) into fixed-position masks. A
    /// pattern that cannot match four characters gives none. Runs of `*`
    /// collapse first, so the result stays small (at most a few dozen
    /// masks) whatever the input.
    pub fn expand_glob(pattern: &[u8]) -> Vec<TagMask> {
        let mut p: Vec<u8> = Vec::with_capacity(pattern.len());
        for &c in pattern {
            if c == b'*' && p.last() == Some(&b'*') {
                continue;
            }
            p.push(c);
        }
        if p.iter().filter(|&&c| c != b'*').count() > 4 {
            return Vec::new();
        }
        let mut out = Vec::new();
        expand(&p, [None; 4], 0, &mut out);
        out.sort();
        out.dedup();
        out
    }
}

/// Depth-first over the pattern; depth is bounded by its length, which the
/// caller capped at nine symbols (four fixed, five stars).
fn expand(p: &[u8], acc: [Option<u8>; 4], at: usize, out: &mut Vec<TagMask>) {
    let Some((&c, rest)) = p.split_first() else {
        if at == 4 {
            out.push(TagMask::from_bytes(acc));
        }
        return;
    };
    if c == b'*' {
        for n in 0..=(4 - at) {
            expand(rest, acc, at + n, out);
        }
    } else if at < 4 {
        let mut a = acc;
        a[at] = (c != b'?').then_some(c);
        expand(rest, a, at + 1, out);
    }
}

/// A set of tag masks with a cheap membership test for the scanner's
/// inner loop.
///
/// Masks are grouped by their mask; a group with one value is a compare,
/// a larger group a 64 Ki-bit filter (8 KiB, L1-resident) on a hash of the
/// masked value, confirmed against the sorted values. The cost per
/// candidate is one filter probe per distinct mask, whatever the number of
/// tags: 64 relabelled exact tags cost what one costs.
#[derive(Debug, Clone)]
pub struct TagSet {
    masks: Vec<TagMask>,
    groups: Vec<Group>,
}

#[derive(Debug, Clone)]
struct Group {
    mask: u32,
    /// Sorted, distinct.
    values: Vec<u32>,
    filter: Option<Box<[u64; FILTER_WORDS]>>,
}

const FILTER_BITS: u32 = 16;
pub(crate) const FILTER_WORDS: usize = (1 << FILTER_BITS) / 64;

#[inline(always)]
fn filter_hash(v: u32) -> usize {
    // Fibonacci hashing: the top bits of a multiply mix all four bytes.
    (v.wrapping_mul(0x9E37_79B1) >> (32 - FILTER_BITS)) as usize
}

impl TagSet {
    /// The set of `masks`, normalised (PROTECTED_POOL cleared), sorted and
    /// deduplicated.
    pub fn new(masks: &[TagMask]) -> Self {
        let mut masks: Vec<TagMask> = masks
            .iter()
            .map(|m| TagMask::new(m.value, m.mask))
            .collect();
        masks.sort();
        masks.dedup();
        let mut groups: Vec<Group> = Vec::new();
        for m in &masks {
            match groups.iter_mut().find(|g| g.mask == m.mask) {
                Some(g) => g.values.push(m.value),
                None => groups.push(Group {
                    mask: m.mask,
                    values: vec![m.value],
                    filter: None,
                }),
            }
        }
        for g in &mut groups {
            g.values.sort_unstable();
            g.values.dedup();
            if g.values.len() > 1 {
                let mut f = Box::new([0u64; FILTER_WORDS]);
                for &v in &g.values {
                    let h = filter_hash(v);
                    f[h / 64] |= 1 << (h % 64);
                }
                g.filter = Some(f);
            }
        }
        Self { masks, groups }
    }

    /// The distinct masks, sorted.
    pub fn masks(&self) -> &[TagMask] {
        &self.masks
    }

    /// The set holds no mask (and so matches nothing).
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    /// The single exact tag, when that is all the set holds.
    pub fn single_exact(&self) -> Option<u32> {
        match self.masks.as_slice() {
            [m] if m.is_exact() => Some(m.value),
            _ => None,
        }
    }

    /// Every mask is exact.
    pub fn all_exact(&self) -> bool {
        self.masks.iter().all(|m| m.is_exact())
    }

    /// The filter of a set whose masks are all one mask (many exact tags):
    /// the stride loop probes it branch-free, four slots at a time.
    pub(crate) fn single_filter(&self) -> Option<(u32, &[u64; FILTER_WORDS])> {
        match self.groups.as_slice() {
            [g] => g.filter.as_deref().map(|f| (g.mask, f)),
            _ => None,
        }
    }

    /// May `t` be in a set with this mask and filter? (No false negatives.)
    #[inline(always)]
    pub(crate) fn probe(mask: u32, filter: &[u64; FILTER_WORDS], t: u32) -> u32 {
        let h = filter_hash(t & mask);
        ((filter[h / 64] >> (h % 64)) & 1) as u32
    }

    /// Does the raw header tag `t` match (PROTECTED_POOL ignored)?
    #[inline(always)]
    pub fn contains(&self, t: u32) -> bool {
        for g in &self.groups {
            let v = t & g.mask;
            match &g.filter {
                None => {
                    if v == g.values[0] {
                        return true;
                    }
                }
                Some(f) => {
                    let h = filter_hash(v);
                    if f[h / 64] & (1 << (h % 64)) != 0 && g.values.binary_search(&v).is_ok() {
                        return true;
                    }
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &[u8; 4]) -> u32 {
        u32::from_le_bytes(*s)
    }

    #[test]
    fn globs_expand_to_fixed_positions() {
        let m = TagMask::expand_glob(b"Nt*");
        assert_eq!(
            m,
            vec![TagMask::from_bytes([Some(b'N'), Some(b't'), None, None])]
        );
        let m = TagMask::expand_glob(b"*x*");
        assert_eq!(m.len(), 4);
        let set = TagSet::new(&m);
        for t in [b"xabc", b"axbc", b"abxc", b"abcx"] {
            assert!(set.contains(tag(t)), "{t:?}");
        }
        assert!(!set.contains(tag(b"abcd")));
        assert!(TagMask::expand_glob(b"abcde*").is_empty());
        assert_eq!(TagMask::expand_glob(b"a?c*").len(), 1);
        // Hostile star runs collapse.
        let long = [b'*'; 10_000];
        assert_eq!(TagMask::expand_glob(&long).len(), 1);
    }

    #[test]
    fn protected_bit_never_matters() {
        let set = TagSet::new(&[TagMask::exact(tag(b"Proc"))]);
        assert!(set.contains(tag(b"Proc")));
        assert!(set.contains(tag(b"Pro\xe3")));
        assert!(!set.contains(tag(b"Prod")));
        assert_eq!(set.single_exact(), Some(tag(b"Proc")));
    }

    #[test]
    fn many_tags_use_the_filter_and_stay_exact() {
        let tags: Vec<TagMask> = (0..64u32)
            .map(|i| {
                TagMask::exact(u32::from_le_bytes([
                    b'L',
                    b'k',
                    b'0' + (i / 10) as u8,
                    b'0' + (i % 10) as u8,
                ]))
            })
            .collect();
        let set = TagSet::new(&tags);
        for t in &tags {
            assert!(set.contains(t.value));
        }
        let mut false_hits = 0;
        for i in 0..100_000u32 {
            let t = i.wrapping_mul(2_654_435_761);
            if set.contains(t) {
                false_hits += !tags.iter().any(|m| m.matches(t)) as u32;
            }
        }
        assert_eq!(false_hits, 0);
    }
}
