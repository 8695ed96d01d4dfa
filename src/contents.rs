//! A block's bytes as `pooldump pool` and `pooldump find --bytes` show
//! them: as `dc` lays them out (the address, four DWORDs, the sixteen
//! bytes as characters), `????????` where a page could not be read; in
//! JSON as hex with the unreadable ranges named; in CSV as hex.

use pooldump_core::pool::find::{
    BlockContents, ContentsCut, FoundAllocation, MAX_BLOCK_BYTES, MAX_PAGE_BYTES,
};
use serde::Serialize;

use crate::find::AllocationJson;

/// `--bytes N`: decimal, or hexadecimal after `0x`; at least 1.
pub(crate) fn parse_byte_count(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let n = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse::<u64>(),
    };
    match n {
        Ok(0) => Err("show at least 1 byte".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a byte count (256, 0x100)")),
    }
}

/// Bytes on one line of the listing: four DWORDs.
const LINE: usize = 16;

/// `c`'s bytes under its block's line: the address, four DWORDs as `dd`
/// shows them (`????????` where unreadable) and the bytes as `dc`'s
/// characters; then what was not shown and what could not be read.
pub(crate) fn push_dwords(c: &BlockContents, out: &mut String) {
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

/// An allocation as JSON: `find`'s fields, and `contents` when its bytes
/// were read.
#[derive(Clone, Serialize)]
pub(crate) struct AllocationWithContents<'a> {
    #[serde(flatten)]
    allocation: AllocationJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contents: Option<ContentsJson>,
}

impl<'a> AllocationWithContents<'a> {
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

/// `c`'s bytes as two hex digits each, `??` for one not read (JSON's
/// `contents.hex`, CSV's `contents`).
pub(crate) fn hex_bytes(c: &BlockContents) -> String {
    c.bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if c.readable(i) {
                format!("{b:02x}")
            } else {
                "??".into()
            }
        })
        .collect()
}

impl ContentsJson {
    fn new(c: &BlockContents) -> Self {
        let hex = hex_bytes(c);
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
