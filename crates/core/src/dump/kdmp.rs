//! Building the physical map with kdmp-parser, around its hazards
//! (docs/design.md, "kdmp-parser and pooldump's own header reader").
//!
//! kdmp-parser reads the file through [`GuardedReader`], which shows it a
//! slightly edited file:
//!
//! * PsLoadedModuleList (0x20) and KdDebuggerDataBlock (0x80) read as 0, so
//!   it does not walk the module list or the KDBG itself: its walks have no
//!   iteration cap and hang on a cyclic list. pooldump walks them with caps
//!   (`kernel::modules`).
//! * DirectoryTableBase (0x10) points at a physical page no dump can hold
//!   and NumberProcessors (0x34) reads as 0, so none of its virtual reads
//!   can succeed either.
//! * The run list, bitmap length or RDMP range list is clamped to the pages
//!   the file holds (`PlannedMap::clamp`), so it never allocates a map entry
//!   for a page past the end of a truncated file.
//! * Bytes past the end of the file read as zeros instead of failing, so a
//!   truncated file still opens.
//!
//! The parser is dropped as soon as its `physmem()` is copied: it is
//! `!Send`/`!Sync`, and its physical reader is wrong for unaligned reads
//! that span pages (§1.4).

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use kdmp_parser::gxa::Gxa;
use kdmp_parser::parse::KernelDumpParser;

use crate::addr::{PAGE_SIZE, Pfn};

use super::Backing;
use super::header::off;
use super::physmap::{PhysExtent, coalesce};

/// A physical page that no dump holds: above the 52-bit physical space.
const NO_SUCH_DTB: u64 = 0xFFFF_FFFF_FFFF_F000;

/// A `Read + Seek` view of the dump file with overlays and zero padding.
pub(crate) struct GuardedReader {
    data: Arc<Backing>,
    pos: u64,
    overlays: Vec<(u64, Vec<u8>)>,
}

impl GuardedReader {
    pub fn new(data: Arc<Backing>, clamp: &[(u64, Vec<u8>)]) -> Self {
        let mut overlays = vec![
            (
                off::DIRECTORY_TABLE_BASE as u64,
                NO_SUCH_DTB.to_le_bytes().to_vec(),
            ),
            (off::PS_LOADED_MODULE_LIST as u64, vec![0; 8]),
            (off::NUMBER_PROCESSORS as u64, vec![0; 4]),
            (off::KD_DEBUGGER_DATA_BLOCK as u64, vec![0; 8]),
        ];
        overlays.extend(clamp.iter().cloned());
        Self {
            data,
            pos: 0,
            overlays,
        }
    }
}

impl Read for GuardedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let file = self.data.bytes();
        let start = self.pos;
        let n = buf.len();
        let Some(end) = start.checked_add(n as u64) else {
            return Ok(0);
        };
        buf.fill(0);
        if let Ok(s) = usize::try_from(start)
            && s < file.len()
        {
            let m = n.min(file.len() - s);
            buf[..m].copy_from_slice(&file[s..s + m]);
        }
        for (at, bytes) in &self.overlays {
            let (lo, hi) = (*at, at + bytes.len() as u64);
            if hi <= start || lo >= end {
                continue;
            }
            for (i, &b) in bytes.iter().enumerate() {
                let p = lo + i as u64;
                if p >= start && p < end {
                    buf[(p - start) as usize] = b;
                }
            }
        }
        self.pos = end;
        Ok(n)
    }
}

impl Seek for GuardedReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let len = self.data.bytes().len() as u64;
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )),
        }
    }
}

/// Run kdmp-parser over the guarded view and return its map, coalesced and
/// sorted by PFN.
pub(crate) fn physmem(
    data: Arc<Backing>,
    clamp: &[(u64, Vec<u8>)],
) -> Result<Vec<PhysExtent>, kdmp_parser::error::Error> {
    let parser = KernelDumpParser::with_reader(GuardedReader::new(data, clamp))?;
    let pages = parser.physmem().map(|(gpa, off)| PhysExtent {
        pfn: Pfn(gpa.u64() / PAGE_SIZE),
        pages: 1,
        file_offset: off,
    });
    // physmem() iterates a BTreeMap: ascending GPA already.
    Ok(coalesce(pages))
}
