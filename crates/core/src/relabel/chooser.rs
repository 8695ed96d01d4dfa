//! Fresh tags for relabelled sites: unused, readable, and recognisably
//! the old tag's (`Leak` -> `Lea0`, `Lea1`, ...), so a PoolMon screen of
//! them still says whose they are.

use std::collections::{HashMap, HashSet};

use crate::pool::PoolTagDb;
use crate::tag::PoolTag;

/// The characters a fresh tag ends with, in the order they are tried.
const SUFFIX: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Hands out tags that no tracker row has, pooltag.txt does not describe,
/// and that were not handed out before.
pub struct TagChooser<'a> {
    taken: HashSet<u32>,
    pooltag: Option<&'a PoolTagDb>,
    /// Per old tag, the candidate to try next.
    cursor: HashMap<u32, usize>,
}

impl<'a> TagChooser<'a> {
    /// `taken`: every tag in use (the tracker's rows, zero counters
    /// included: a tag seen once may come back). Compared without the
    /// PROTECTED_POOL bit.
    pub fn new(taken: impl IntoIterator<Item = PoolTag>, pooltag: Option<&'a PoolTagDb>) -> Self {
        Self {
            taken: taken.into_iter().map(|t| t.unprotected().0).collect(),
            pooltag,
            cursor: HashMap::new(),
        }
    }

    /// The next fresh tag for a site of `old`: its first three characters
    /// and a digit or letter; then its first two and two more; then `Rl`
    /// and two more (when `old` has unprintable bytes). None when every
    /// candidate is taken.
    pub fn choose(&mut self, old: PoolTag) -> Option<PoolTag> {
        let old = old.unprotected();
        self.taken.insert(old.0);
        let b = old.bytes();
        let printable = |c: u8| (0x21..0x7F).contains(&c) && c != b'\\' && c != b'"';
        let mut prefixes: Vec<Vec<u8>> = Vec::new();
        if printable(b[0]) && b[1..3].iter().all(|&c| printable(c) || c == b' ') {
            prefixes.push(b[..3].to_vec());
        }
        if printable(b[0]) && (printable(b[1]) || b[1] == b' ') {
            prefixes.push(b[..2].to_vec());
        }
        prefixes.push(b"Rl".to_vec());
        let n = SUFFIX.len();
        let candidate = |mut i: usize| -> Option<[u8; 4]> {
            for p in &prefixes {
                let count = if p.len() == 3 { n } else { n * n };
                if i < count {
                    return Some(if p.len() == 3 {
                        [p[0], p[1], p[2], SUFFIX[i]]
                    } else {
                        [p[0], p[1], SUFFIX[i / n], SUFFIX[i % n]]
                    });
                }
                i -= count;
            }
            None
        };
        // Resume where the last call for this tag stopped.
        let mut i = self.cursor.get(&old.0).copied().unwrap_or(0);
        while let Some(t) = candidate(i) {
            i += 1;
            if self.free(t) {
                let tag = PoolTag::from_bytes(t);
                self.taken.insert(tag.0);
                self.cursor.insert(old.0, i);
                return Some(tag);
            }
        }
        self.cursor.insert(old.0, i);
        None
    }

    fn free(&self, t: [u8; 4]) -> bool {
        let tag = PoolTag::from_bytes(t);
        !self.taken.contains(&tag.0) && self.pooltag.is_none_or(|db| db.lookup(tag).is_none())
    }
}
