//! `!pool`'s flags: what `pooldump pool` shows of a page, and which
//! blocks' bytes it reads (rendered by [`crate::contents`]).

use anyhow::Result;
use pooldump_core::pool::find::ContentsOptions;

use crate::common::UsageError;

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
