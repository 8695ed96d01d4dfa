//! The image's unwind data: its RUNTIME_FUNCTIONs (the exception
//! directory, `.pdata`), looked up a page at a time through the module's
//! page cache, and the UNWIND_INFOs they point at, with the chained entry
//! each may end with. Errors here end a walk ([`WalkEnd`]).

use pe_unwind_info::x86_64::{Register, UnwindInfo};
use serde::Serialize;

use crate::bytes::Le;
use crate::memory::Memory;
use crate::stack::context::Reg;
use crate::stack::image::{ImageError, ModuleImage, ReadStats};
use crate::stack::{WalkEnd, WhyWalkStopped};

/// Chained unwind infos followed at most (real images chain once or twice).
pub const MAX_CHAIN: usize = 32;
/// RUNTIME_FUNCTION entries considered at most (nt has about 40,000).
pub const MAX_FUNCTIONS: u32 = 1 << 20;

const RUNTIME_FUNCTION_SIZE: u32 = 12;
const UNW_FLAG_CHAININFO: u8 = 0x4;

/// A RUNTIME_FUNCTION entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuntimeFunction {
    /// BeginAddress: the function's first byte, as an RVA.
    pub begin: u32,
    /// EndAddress: one past its last byte, as an RVA.
    pub end: u32,
    /// UnwindInfoAddress (UnwindData): the RVA of its UNWIND_INFO.
    pub unwind_info: u32,
}

pub(super) fn stop(reason: WhyWalkStopped, detail: impl Into<String>) -> WalkEnd {
    WalkEnd {
        reason,
        detail: detail.into(),
    }
}

pub(super) fn image_stop(e: ImageError) -> WalkEnd {
    let reason = match &e {
        ImageError::OutsideImage { .. } => WhyWalkStopped::BadUnwindInfo,
        _ => WhyWalkStopped::ImageUnavailable,
    };
    stop(reason, e.to_string())
}

impl ModuleImage {
    fn function_count(&self) -> Option<(u32, u32)> {
        let (rva, size) = self.headers.exception?;
        Some((rva, (size / RUNTIME_FUNCTION_SIZE).min(MAX_FUNCTIONS)))
    }

    fn function_at<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        table: u32,
        i: u32,
        stats: &mut ReadStats,
    ) -> Result<RuntimeFunction, ImageError> {
        let at = table.saturating_add(i * RUNTIME_FUNCTION_SIZE);
        self.runtime_function(mem, at, stats)
    }

    pub(super) fn runtime_function<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        at: u32,
        stats: &mut ReadStats,
    ) -> Result<RuntimeFunction, ImageError> {
        let b = self.read(mem, at, RUNTIME_FUNCTION_SIZE, stats)?;
        let b = Le(&b);
        Ok(RuntimeFunction {
            begin: b.u32(0).unwrap_or(0),
            end: b.u32(4).unwrap_or(0),
            unwind_info: b.u32(8).unwrap_or(0),
        })
    }

    /// Every entry of the exception directory, in table order.
    pub fn functions<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        stats: &mut ReadStats,
    ) -> Result<Vec<RuntimeFunction>, ImageError> {
        let Some((table, n)) = self.function_count() else {
            return Ok(Vec::new());
        };
        // Read the table in one go (through the page cache).
        let bytes = self.read(mem, table, n * RUNTIME_FUNCTION_SIZE, stats)?;
        Ok(bytes
            .chunks_exact(RUNTIME_FUNCTION_SIZE as usize)
            .map(|c| {
                let b = Le(c);
                RuntimeFunction {
                    begin: b.u32(0).unwrap_or(0),
                    end: b.u32(4).unwrap_or(0),
                    unwind_info: b.u32(8).unwrap_or(0),
                }
            })
            .collect())
    }

    /// The RUNTIME_FUNCTION covering `rva`, by binary search of the sorted
    /// table (log2(n) entries read, each through the page cache).
    pub fn lookup_function<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        rva: u32,
        stats: &mut ReadStats,
    ) -> Result<Option<RuntimeFunction>, ImageError> {
        let Some((table, n)) = self.function_count() else {
            return Ok(None);
        };
        let (mut lo, mut hi) = (0u32, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.function_at(mem, table, mid, stats)?.begin <= rva {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Ok(None);
        }
        let f = self.function_at(mem, table, lo - 1, stats)?;
        if !(f.begin <= rva && rva < f.end) {
            return Ok(None);
        }
        Ok(Some(f))
    }
}

/// An UNWIND_INFO read from the image: where it is, its bytes and the
/// chained RUNTIME_FUNCTION, if any.
pub(super) struct InfoBytes {
    rva: u32,
    bytes: Vec<u8>,
    pub chained: Option<RuntimeFunction>,
}

impl InfoBytes {
    /// The UNWIND_INFO parsed; `where_` names the function in the error.
    pub(super) fn parsed(&self, where_: &dyn Fn() -> String) -> Result<UnwindInfo<'_>, WalkEnd> {
        UnwindInfo::parse(&self.bytes).ok_or_else(|| {
            stop(
                WhyWalkStopped::BadUnwindInfo,
                format!(
                    "{}: the UNWIND_INFO at RVA {:#x} cannot be parsed",
                    where_(),
                    self.rva
                ),
            )
        })
    }
}

/// Follow a chain of unwind infos to `next`, after those `seen`: it must
/// not come back to one it has seen, nor be longer than [`MAX_CHAIN`];
/// `where_` names the chain's function in the error.
pub(super) fn follow_chain(
    seen: &mut Vec<u32>,
    next: u32,
    where_: &dyn Fn() -> String,
) -> Result<(), WalkEnd> {
    if seen.contains(&next) {
        return Err(stop(
            WhyWalkStopped::BadUnwindInfo,
            format!(
                "{}: the chain of unwind infos loops back to RVA {next:#x}",
                where_()
            ),
        ));
    }
    if seen.len() > MAX_CHAIN {
        return Err(stop(
            WhyWalkStopped::BadUnwindInfo,
            format!("{}: more than {MAX_CHAIN} chained unwind infos", where_()),
        ));
    }
    seen.push(next);
    Ok(())
}

pub(super) fn read_info<M: Memory + ?Sized>(
    img: &mut ModuleImage,
    mem: &M,
    rva: u32,
    stats: &mut ReadStats,
) -> Result<InfoBytes, WalkEnd> {
    let head = img.read(mem, rva, 4, stats).map_err(image_stop)?;
    let version = head[0] & 7;
    if !(1..=2).contains(&version) {
        return Err(stop(
            WhyWalkStopped::BadUnwindInfo,
            format!(
                "{}: the UNWIND_INFO at RVA {rva:#x} has version {version}, not 1 or 2",
                img.describe()
            ),
        ));
    }
    let count = u32::from(head[2]);
    // The code array is padded to an even count before any trailer.
    let codes = 2 * count.next_multiple_of(2);
    let chained = (head[0] >> 3) & UNW_FLAG_CHAININFO != 0;
    let len = 4 + codes + if chained { RUNTIME_FUNCTION_SIZE } else { 0 };
    let bytes = img.read(mem, rva, len, stats).map_err(image_stop)?;
    let chained = chained.then(|| {
        let b = Le(&bytes[(4 + codes) as usize..]);
        RuntimeFunction {
            begin: b.u32(0).unwrap_or(0),
            end: b.u32(4).unwrap_or(0),
            unwind_info: b.u32(8).unwrap_or(0),
        }
    });
    Ok(InfoBytes {
        rva,
        bytes,
        chained,
    })
}

/// The function a chained fragment belongs to: follow UNW_FLAG_CHAININFO
/// from the RUNTIME_FUNCTION covering `rva` to the first one that is not
/// chained (at most [`MAX_CHAIN`] steps). None when `rva` is in no
/// function or its info is not chained.
pub(crate) fn chain_root<M: Memory + ?Sized>(
    img: &mut ModuleImage,
    mem: &M,
    rva: u32,
    stats: &mut ReadStats,
) -> Option<RuntimeFunction> {
    let f = img.lookup_function(mem, rva, stats).ok()??;
    let mut cur = read_info(img, mem, f.unwind_info, stats).ok()?;
    let mut root = None;
    for _ in 0..MAX_CHAIN {
        let Some(next) = cur.chained else {
            return root;
        };
        root = Some(next);
        cur = read_info(img, mem, next.unwind_info, stats).ok()?;
    }
    None
}

pub(super) fn reg_of(r: Register) -> Reg {
    Reg::from_number(r as u8).unwrap_or(Reg::Rax)
}
