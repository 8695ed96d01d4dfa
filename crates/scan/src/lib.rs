//! pooldump-scan: find Windows kernel pool headers carrying given tags in
//! byte slices, at memory bandwidth.
//!
//! The scanner knows nothing of dumps, page tables or symbols. The caller
//! hands it runs of whole 4 KiB pages (from a memory-mapped dump, in file
//! order, across as many threads as it likes: a [`Scanner`] is `Sync`),
//! the tags to look for ([`TagMask`]: exact tags, `?` and `*` patterns),
//! and the `_POOL_HEADER` layout it read from the kernel's symbols
//! ([`HeaderLayout`]). Each hit is a header that passed the page-local
//! rules of the build's allocator ([`Rules`], docs/pool-structures.md §4, §5); what
//! needs the heap metadata or a virtual address (segment-heap state, the
//! owning pool) is the caller's job.
//!
//! ```
//! use pooldump_scan::{Engine, HeaderLayout, HeaderState, Rules, Scanner, TagMask};
//!
//! // A legacy pool page: `Leak` allocated at +0, then a free chunk.
//! let mut page = vec![0u8; 0x1000];
//! page[..8].copy_from_slice(&[0, 0, 0x13, 0x03, b'L', b'e', b'a', b'k']);
//! page[0x130..0x138].copy_from_slice(&[0x13, 0, 0xED, 0, 0, 0, 0, 0]);
//!
//! let leak = TagMask::exact(u32::from_le_bytes(*b"Leak"));
//! let scanner = Scanner::new(&[leak], HeaderLayout::X64, Rules::Legacy, Engine::Auto)?;
//! let mut hits = Vec::new();
//! scanner.scan(&page, &mut hits);
//! assert_eq!(hits.len(), 1);
//! assert_eq!((hits[0].offset, hits[0].header.block_size), (0, 0x13));
//! assert_eq!(hits[0].state, HeaderState::Allocated);
//! # Ok::<(), pooldump_scan::ScanError>(())
//! ```

#![warn(missing_docs)]

pub mod header;
mod matcher;
pub mod tags;

pub use header::{
    BitField, HeaderLayout, HeaderRole, HeaderState, LayoutError, PoolHeader, Rules, check,
};
pub use matcher::Engine;
pub use tags::{PROTECTED_POOL, TagMask, TagSet};

use matcher::Matcher;

/// Pages are 4 KiB: chunks never cross them (docs/pool-structures.md §4).
pub const PAGE_SIZE: usize = 0x1000;

/// A header that passed the page-local rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageHit {
    /// Offset of the header from the start of the scanned slice.
    pub offset: usize,
    /// The header's fields, decoded with the scanner's [`HeaderLayout`].
    pub header: PoolHeader,
    /// What the header says about its allocation ([`HeaderState::Unknown`]
    /// under [`Rules::SegmentHeap`], where only the heap metadata can tell).
    pub state: HeaderState,
    /// Its place in a cache-aligned pair ([`HeaderRole::Single`] otherwise).
    pub role: HeaderRole,
}

/// Why a scanner cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The tag list was empty, or its patterns expanded to no mask.
    #[error("no tags to search for (a pattern that matches no four characters?)")]
    NoTags,
    /// The `_POOL_HEADER` layout failed [`HeaderLayout::validate`].
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(
        "the {engine} engine cannot search for these tags ({why}); use the stride or auto engine"
    )]
    /// An explicitly chosen engine cannot search for the tags given
    /// (memmem takes one exact tag, Aho-Corasick only exact tags).
    Engine {
        /// The engine's name as [`Engine::name`] spells it.
        engine: &'static str,
        /// What that engine needs and the tags lacked.
        why: &'static str,
    },
}

/// Tags, a header layout and an allocator's rules, ready to scan pages.
pub struct Scanner {
    set: TagSet,
    matcher: Matcher,
    engine: Engine,
    layout: HeaderLayout,
    rules: Rules,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("tags", &self.set.masks())
            .field("engine", &self.engine)
            .field("layout", &self.layout)
            .field("rules", &self.rules)
            .finish()
    }
}

impl Scanner {
    /// A scanner for `tags` (duplicates and overlaps are fine) in headers of
    /// `layout`, accepted under `rules`, with candidates found by `engine`
    /// ([`Engine::Auto`] picks one). Fails on an empty tag set, a layout
    /// that does not validate, or an engine that cannot take these tags.
    pub fn new(
        tags: &[TagMask],
        layout: HeaderLayout,
        rules: Rules,
        engine: Engine,
    ) -> Result<Self, ScanError> {
        layout.validate()?;
        let set = TagSet::new(tags);
        if set.is_empty() {
            return Err(ScanError::NoTags);
        }
        let (matcher, engine) = Matcher::new(&set, engine).ok_or(match engine {
            Engine::Memmem => ScanError::Engine {
                engine: "memmem",
                why: "it takes exactly one tag without wildcards",
            },
            _ => ScanError::Engine {
                engine: "aho-corasick",
                why: "it takes tags without wildcards",
            },
        })?;
        Ok(Self {
            set,
            matcher,
            engine,
            layout,
            rules,
        })
    }

    /// The engine chosen (never [`Engine::Auto`]).
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The tags searched for, normalised (sorted, deduplicated,
    /// PROTECTED_POOL cleared from every mask).
    pub fn tags(&self) -> &TagSet {
        &self.set
    }

    /// The `_POOL_HEADER` layout the scanner was built with.
    pub fn layout(&self) -> &HeaderLayout {
        &self.layout
    }

    /// The allocator rules headers must satisfy.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// Append the headers in `hay` to `out`, in increasing offset order.
    /// `hay` must start at a page boundary; a partial page at its end is
    /// not scanned (a header's checks need its whole page).
    pub fn scan(&self, hay: &[u8], out: &mut Vec<PageHit>) {
        let hay = &hay[..hay.len() - hay.len() % PAGE_SIZE];
        let off = self.layout.pool_tag.offset;
        let align = self.layout.size;
        self.matcher
            .candidates(hay, &self.set, off, align, &mut |p, _tag| {
                let h = p - off;
                let page_start = h - h % PAGE_SIZE;
                let page = &hay[page_start..page_start + PAGE_SIZE];
                if let Some((header, state, role)) =
                    header::check(&self.layout, self.rules, page, h - page_start)
                {
                    out.push(PageHit {
                        offset: h,
                        header,
                        state,
                        role,
                    });
                }
            });
    }

    /// Candidates only (tag and alignment, no header rules): what the
    /// engine costs on its own, for benchmarks.
    pub fn count_candidates(&self, hay: &[u8]) -> usize {
        let mut n = 0;
        self.matcher.candidates(
            hay,
            &self.set,
            self.layout.pool_tag.offset,
            self.layout.size,
            &mut |_, _| n += 1,
        );
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_in_later_pages_carry_slice_offsets() {
        let mut hay = vec![0u8; 3 * PAGE_SIZE];
        let base = 2 * PAGE_SIZE;
        hay[base..base + 8].copy_from_slice(&[0, 0, 0x20, 0x02, b'A', b'b', b'c', b'd']);
        let s = Scanner::new(
            &[TagMask::exact(u32::from_le_bytes(*b"Abcd"))],
            HeaderLayout::X64,
            Rules::SegmentHeap,
            Engine::Stride,
        )
        .unwrap();
        let mut out = Vec::new();
        s.scan(&hay, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].offset, base);
        assert_eq!(out[0].state, HeaderState::Unknown);
        // A partial last page is left alone.
        out.clear();
        s.scan(&hay[..base + 0x800], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let l = HeaderLayout::X64;
        assert_eq!(
            Scanner::new(&[], l, Rules::Legacy, Engine::Auto).unwrap_err(),
            ScanError::NoTags
        );
        let glob = TagMask::expand_glob(b"Ab*");
        assert!(matches!(
            Scanner::new(&glob, l, Rules::Legacy, Engine::Memmem),
            Err(ScanError::Engine { .. })
        ));
        let mut bad = l;
        bad.block_size.offset = 0x20;
        assert!(Scanner::new(&glob, bad, Rules::Legacy, Engine::Auto).is_err());
    }
}
