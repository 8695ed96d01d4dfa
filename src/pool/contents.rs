//! `!pool`'s flags and the blocks' bytes as `pooldump pool` shows them: a
//! block's contents as `dc` lays them out (the address, four DWORDs, the
//! sixteen bytes as characters), `????????` where a page could not be
//! read, and in JSON as hex with the unreadable ranges named.

use anyhow::Result;
use pooldump_core::pool::find::{
    BlockContents, ContentsCut, ContentsOptions, FoundAllocation, MAX_BLOCK_BYTES, MAX_PAGE_BYTES,
};
use serde::Serialize;

use crate::common::UsageError;
use crate::find::AllocationJson;

/// Flag 0x1: the blocks' contents.
const CONTENTS: u64 = 0x1;
/// Flag 0x2: only the block holding the address.
const ONLY_CONTAINING: u64 = 0x2;
/// Flag 0x80000000: no description of the pool and the tag.
const NO_DESCRIPTION: u64 = 0x8000_0000;

/// What to show: the FLAGS operand and the named options together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct View {
    /// The bytes to read, when the contents are shown.
    pub contents: Option<ContentsOptions>,
    pub only_containing: bool,
    pub no_description: bool,
}

impl View {
    /// The view of `flags` (`!pool`'s FLAGS operand) and the options; a
    /// bit `!pool` does not define is an error naming it.
    pub fn new(args: &super::Args, flags: Option<u64>) -> Result<View> {
        let flags = flags.unwrap_or(0);
        let unknown = flags & !(CONTENTS | ONLY_CONTAINING | NO_DESCRIPTION);
        if unknown != 0 {
            let (what, be) = if unknown.count_ones() == 1 {
                ("bit", "is")
            } else {
                ("bits", "are")
            };
            return Err(UsageError(format!(
                "FLAGS {flags:#x}: {what} {unknown:#x} {be} not !pool's (0x1 contents, \
                 0x2 only the block holding the address, 0x80000000 no description)"
            ))
            .into());
        }
        let only_containing = args.only_containing || flags & ONLY_CONTAINING != 0;
        let shown = args.contents || args.bytes.is_some() || flags & CONTENTS != 0;
        Ok(View {
            contents: shown.then_some(ContentsOptions {
                bytes: args.bytes,
                holder_only: only_containing,
            }),
            only_containing,
            no_description: args.no_description || flags & NO_DESCRIPTION != 0,
        })
    }
}

/// Bytes on one line of the listing: four DWORDs.
const LINE: usize = 16;

/// `c`'s bytes under its block's line: the address, four DWORDs as `dd`
/// shows them (`????????` where unreadable) and the bytes as `dc`'s
/// characters; then what was not shown and what could not be read.
pub(super) fn push_dwords(c: &BlockContents, out: &mut String) {
    for (n, line) in c.bytes.chunks(LINE).enumerate() {
        let at = n * LINE;
        let mut words = String::new();
        let mut chars = String::new();
        for (k, word) in line.chunks(4).enumerate() {
            let first = at + 4 * k;
            let readable = (first..first + word.len()).all(|i| c.readable(i));
            let digits: String = if readable {
                word.iter().rev().map(|b| format!("{b:02x}")).collect()
            } else {
                "??".repeat(word.len())
            };
            words.push_str(&format!(" {digits:>8}"));
            for (j, b) in word.iter().enumerate() {
                chars.push(match *b {
                    _ if !c.readable(first + j) => '?',
                    0x20..=0x7e => char::from(*b),
                    _ => '.',
                });
            }
        }
        let va = c.va.wrapping_add(at as u64);
        out.push_str(&format!("    {va} {words:<36}  {chars}\n"));
    }
    for r in &c.unreadable {
        out.push_str(&format!(
            "    ({:#x} bytes from {} not read: {})\n",
            r.bytes, r.va, r.reason
        ));
    }
    if let Some(cut) = c.cut {
        out.push_str(&format!("    {}\n", cut_note(c, cut)));
    }
}

/// What the listing leaves out of the body, and why or how to see it.
fn cut_note(c: &BlockContents, cut: ContentsCut) -> String {
    let rest = c.body_bytes - c.bytes.len() as u64;
    let why = match cut {
        ContentsCut::Length => format!(
            "--bytes {:#x} shows them",
            c.body_bytes.min(MAX_BLOCK_BYTES)
        ),
        ContentsCut::BlockLimit => {
            format!("pooldump shows at most {MAX_BLOCK_BYTES:#x} of a block")
        }
        ContentsCut::PageLimit => {
            format!("pooldump reads at most {MAX_PAGE_BYTES:#x} for one page's blocks")
        }
    };
    format!("... {rest:#x} more bytes ({why})")
}

/// An allocation of the JSON document: `find`'s fields, and `contents`
/// when its bytes were read.
#[derive(Clone, Serialize)]
pub(super) struct PoolAllocationJson<'a> {
    #[serde(flatten)]
    allocation: AllocationJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contents: Option<ContentsJson>,
}

impl<'a> PoolAllocationJson<'a> {
    pub fn new(a: &'a FoundAllocation, c: Option<&BlockContents>) -> Self {
        Self {
            allocation: AllocationJson(a),
            contents: c.map(ContentsJson::new),
        }
    }
}

/// A block's bytes in JSON.
#[derive(Clone, Serialize)]
struct ContentsJson {
    /// The first byte's address (the block's `va`).
    va: String,
    /// From `va` to the block's end.
    body_bytes: u64,
    /// How many bytes `hex` holds.
    shown_bytes: u64,
    /// Two hex digits a byte, `??` for one not read.
    hex: String,
    unreadable: Vec<UnreadableJson>,
    /// Why `hex` stops before the body's end: length, block-limit,
    /// page-limit; null when it does not.
    cut: Option<ContentsCut>,
}

#[derive(Clone, Serialize)]
struct UnreadableJson {
    va: String,
    bytes: u64,
    reason: String,
}

impl ContentsJson {
    fn new(c: &BlockContents) -> Self {
        let hex = c
            .bytes
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if c.readable(i) {
                    format!("{b:02x}")
                } else {
                    "??".into()
                }
            })
            .collect();
        Self {
            va: c.va.to_string(),
            body_bytes: c.body_bytes,
            shown_bytes: c.bytes.len() as u64,
            hex,
            unreadable: c
                .unreadable
                .iter()
                .map(|r| UnreadableJson {
                    va: r.va.to_string(),
                    bytes: r.bytes,
                    reason: r.reason.clone(),
                })
                .collect(),
            cut: c.cut,
        }
    }
}
