//! Crash-dump source: a Windows x64 kernel dump file as [`Memory`].
//!
//! [`CrashDump::open`] maps the file, parses and validates the
//! DUMP_HEADER64 itself ([`header`]), has kdmp-parser build the
//! physical-memory map around its known hazards (`kdmp.rs`), cross-checks
//! that map against its own reading of the header, and keeps a compact copy
//! ([`physmap`]). Reads then go straight to the memory map.
//!
//! ```no_run
//! use pooldump_core::dump::CrashDump;
//! use pooldump_core::{Memory, PhysAddr};
//!
//! let dump = CrashDump::open("MEMORY.DMP")?;
//! println!("{} (build {})", dump.header().dump_type, dump.header().build());
//! let mut buf = [0u8; 16];
//! dump.read_physical(PhysAddr(0x1AD000), &mut buf)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bugcheck;
mod context;
pub mod header;
mod kdmp;
pub mod physmap;
pub mod time;
pub mod triage;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::addr::{PAGE_SIZE, Pfn, PhysAddr};
use crate::memory::{Memory, MemoryError};

pub use header::{
    BitmapKind, BugCheck, DumpHeader, DumpType, HeaderError, PageLayout, PhysRun, Truncation,
};
pub use physmap::PhysExtent;
pub use time::{FileTime, UpTime, UtcDateTime};

use physmap::{Lookup, PhysMap};
pub use triage::TriageDump;

/// A dump file of either kind pooldump reads: a kernel dump with physical
/// memory, or a small memory dump (DumpType 4) without.
#[derive(Debug)]
pub enum AnyDump {
    /// A kernel, complete or RDMP dump: physical memory, pool included.
    Kernel(Box<CrashDump>),
    /// A small memory dump: the crash's context and a few captured ranges,
    /// no pool.
    Small(Box<TriageDump>),
}

/// Open a dump file, telling a small memory dump (DumpType 4) from a
/// kernel dump by its header.
pub fn open_any(path: impl AsRef<Path>) -> Result<AnyDump, DumpError> {
    use std::io::Read;
    let path = path.as_ref();
    let mut head = Vec::with_capacity(0x1000);
    if let Ok(f) = File::open(path) {
        let _ = f.take(0x1000).read_to_end(&mut head);
    }
    if triage::is_small_memory_dump(&head) {
        Ok(AnyDump::Small(Box::new(TriageDump::open(path)?)))
    } else {
        Ok(AnyDump::Kernel(Box::new(CrashDump::open(path)?)))
    }
}

/// An opened kernel crash dump.
///
/// `Send + Sync`: the file is memory-mapped and the page map is plain data,
/// so rayon workers can read it concurrently.
pub struct CrashDump {
    path: PathBuf,
    data: Arc<Backing>,
    header: DumpHeader,
    map: PhysMap,
    /// The pages the file holds, as pooldump planned them from the header,
    /// and the header edits kdmp-parser reads the file through: for
    /// [`CrashDump::check_with_kdmp_parser`].
    backed: Vec<PhysExtent>,
    clamp: Vec<(u64, Vec<u8>)>,
}

/// What kdmp-parser makes of the dump's physical-memory map, beside
/// pooldump's own reading of the header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "kebab-case")]
pub enum MapCheck {
    /// The same runs of pages at the same file offsets.
    Same {
        /// How many extents (pages contiguous in memory and in the file) both found.
        runs: usize,
    },
    /// Different maps: the first difference.
    Differs(String),
    /// kdmp-parser refused the file.
    Rejected(String),
}

/// The bytes of the dump file.
pub(crate) enum Backing {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    /// The file at `path`, memory-mapped (an empty file is an empty
    /// buffer: there is nothing to map).
    pub fn open(path: &Path) -> Result<Self, DumpError> {
        let err = |kind| DumpError {
            path: path.to_path_buf(),
            kind,
        };
        let io = |what| move |source| err(DumpErrorKind::Io { what, source });
        let file = File::open(path).map_err(io("open the file"))?;
        let meta = file.metadata().map_err(io("read the file's size"))?;
        if meta.is_dir() {
            return Err(err(DumpErrorKind::IsDirectory));
        }
        if meta.len() == 0 {
            return Ok(Backing::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only. If another process truncates or
        // rewrites the file while it is mapped, reads may fault or see
        // the new bytes; that is the accepted contract of every
        // memory-mapped dump reader (WinDbg and kdmp-parser included).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io("memory-map the file"))?;
        Ok(Backing::Mapped(map))
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

impl CrashDump {
    /// Open and validate a dump file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DumpError> {
        let path = path.as_ref();
        Self::from_backing(path.to_path_buf(), Backing::open(path)?)
    }

    /// Open a dump held in memory; `name` is used in messages. Tests and
    /// tools that generate dumps use this to skip the file system.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, DumpError> {
        Self::from_backing(name.into(), Backing::Owned(bytes))
    }

    fn from_backing(path: PathBuf, data: Backing) -> Result<Self, DumpError> {
        let err = |kind| DumpError {
            path: path.clone(),
            kind,
        };
        let file = data.bytes();
        let parsed = header::parse(file).map_err(|e| err(DumpErrorKind::Header(e)))?;
        let planned = physmap::plan_map(
            file,
            &parsed.plan,
            parsed.header.dump_type == DumpType::RdmpComplete,
        );
        let data = Arc::new(data);
        let mut header = parsed.header;
        let backed = planned.backed;
        let file_len = data.bytes().len() as u64;
        let mut extents = backed.clone();
        extents.extend(planned.truncated);
        let map = PhysMap::new(extents, planned.tail, file_len);
        // Without the PML4 no virtual address can be read: say so once, up
        // front, rather than only through every later read's error.
        let dtb = header.directory_table_base;
        if dtb.0 != 0 {
            let problem = match map.lookup(data.bytes(), dtb.0 / PAGE_SIZE) {
                Lookup::Backed(_) => None,
                Lookup::Truncated => Some("lies past the end of the file"),
                Lookup::Absent => Some("is not in the dump"),
            };
            if let Some(problem) = problem {
                header.warnings.push(format!(
                    "the page of DirectoryTableBase {dtb} {problem}: no virtual address can be read"
                ));
            }
        }
        Ok(Self {
            path,
            data,
            header,
            map,
            backed,
            clamp: planned.clamp,
        })
    }

    /// Build the physical-memory map again with kdmp-parser and compare it
    /// with pooldump's: an independent reading of the same header (what
    /// `pooldump info` shows). Not done on every open: kdmp-parser keeps a
    /// map entry per page, which costs a fifth of a whole `find` on a
    /// 4 GiB dump, and the tests hold the two equal on every dump form.
    pub fn check_with_kdmp_parser(&self) -> MapCheck {
        if self.header.dump_type == DumpType::Summary {
            return MapCheck::Rejected(
                "kdmp-parser does not read DumpType 2 (kernel summary dumps), so pooldump's reading of the summary header is not checked by a second reader".into(),
            );
        }
        match kdmp::physmem(Arc::clone(&self.data), &self.clamp) {
            Err(e) => MapCheck::Rejected(format!("kdmp-parser rejected the dump: {e}")),
            Ok(from_kdmp) => match reconcile(from_kdmp, self.backed.clone()) {
                (_, Some(why)) => MapCheck::Differs(why),
                (runs, None) => MapCheck::Same { runs: runs.len() },
            },
        }
    }

    /// The dump's header, as parsed and validated.
    pub fn header(&self) -> &DumpHeader {
        &self.header
    }

    /// The path the dump was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn file_size(&self) -> u64 {
        self.data.bytes().len() as u64
    }

    /// Pages whose data is in the file.
    pub fn page_count(&self) -> u64 {
        self.map.backed_pages()
    }

    /// Runs of pages in file order, including parts past the end of a
    /// truncated file (bitmap pages past the end are not listed). A
    /// parallel scanner can split the work by extent.
    pub fn extents(&self) -> impl Iterator<Item = PhysExtent> + '_ {
        self.map.extents_in_file_order()
    }

    /// Every page the file holds, in file order, with its PFN.
    pub fn physical_pages(&self) -> impl Iterator<Item = (Pfn, &[u8])> + '_ {
        let file = self.data.bytes();
        self.map.extents_in_file_order().flat_map(move |e| {
            (0..e.pages).map_while(move |i| {
                let off = usize::try_from(e.file_offset + i * PAGE_SIZE).ok()?;
                let page = file.get(off..off.checked_add(PAGE_SIZE as usize)?)?;
                Some((Pfn(e.pfn.0 + i), page))
            })
        })
    }

    /// The dump file's bytes (the read-only memory map, or the buffer
    /// given to [`Self::from_bytes`]). With [`Self::extents`] a scanner
    /// reads long runs of pages in file order without copying them
    /// (`pool::find`).
    pub fn file_bytes(&self) -> &[u8] {
        self.data.bytes()
    }

    /// The scanner is done with `len` bytes of the file from `offset`: a
    /// memory-mapped dump drops those pages from the process (they stay in
    /// the page cache, or Windows' standby list, and are read back on the
    /// next access), so one pass over a multi-GiB dump keeps a small
    /// resident set. A no-op for an in-memory dump.
    pub fn release_file_range(&self, offset: usize, len: usize) {
        let Backing::Mapped(m) = &*self.data else {
            return;
        };
        // Both calls want page-aligned bounds: release only whole pages.
        let page = PAGE_SIZE as usize;
        let start = offset.div_ceil(page) * page;
        let end = offset.saturating_add(len).min(m.len()) / page * page;
        if start >= end {
            return;
        }
        #[cfg(unix)]
        {
            // SAFETY: the map is read-only and shared (Mmap::map):
            // MADV_DONTNEED drops this process's page-table entries and the
            // next access reads the same bytes back from the file, the
            // contract `open` already accepts for the map.
            let _ = unsafe {
                m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
        #[cfg(windows)]
        {
            // VirtualUnlock on pages that were never locked takes them out
            // of the working set (its documented effect; it then returns
            // FALSE with ERROR_NOT_LOCKED, which is the expected answer).
            // The pages stay mapped and read back from the file.
            // SAFETY: [start, end) lies inside the live map (end <= m.len()),
            // and the call changes no page's contents or protection.
            let _ = unsafe {
                windows_sys::Win32::System::Memory::VirtualUnlock(
                    m.as_ptr().add(start).cast(),
                    end - start,
                )
            };
        }
    }

    /// The 4 KiB of one physical page.
    pub fn page(&self, pfn: Pfn) -> Result<&[u8], MemoryError> {
        let file = self.data.bytes();
        let pa = PhysAddr(pfn.0.saturating_mul(PAGE_SIZE));
        match self.map.lookup(file, pfn.0) {
            Lookup::Backed(off) => {
                let off = off as usize;
                Ok(&file[off..off + PAGE_SIZE as usize])
            }
            Lookup::Truncated => Err(MemoryError::Truncated { pa }),
            Lookup::Absent => Err(MemoryError::not_in_source(pa)),
        }
    }
}

impl fmt::Debug for CrashDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashDump")
            .field("path", &self.path)
            .field("file_size", &self.file_size())
            .field("dump_type", &self.header.dump_type)
            .finish_non_exhaustive()
    }
}

impl crate::memory::PageFile for CrashDump {
    fn page_runs(&self) -> Vec<PhysExtent> {
        self.extents().collect()
    }
    fn file_bytes(&self) -> &[u8] {
        self.data.bytes()
    }
    /// The header knows every described page past the end, bitmap pages
    /// included (the runs list only extents).
    fn pages_past_end(&self) -> Option<u64> {
        self.header.truncation.map(|t| t.missing_pages)
    }
    fn release_file_range(&self, offset: usize, len: usize) {
        CrashDump::release_file_range(self, offset, len);
    }
}

impl Memory for CrashDump {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn page_file(&self) -> Option<&dyn crate::memory::PageFile> {
        Some(self)
    }

    fn kernel_dtb(&self) -> PhysAddr {
        self.header.directory_table_base
    }

    /// Page by page through the memory map, so reads of any alignment and
    /// length are exact (kdmp-parser's own physical reader is not, §1.4).
    fn read_physical(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        let mut done = 0usize;
        while done < buf.len() {
            let cur =
                pa.0.checked_add(done as u64)
                    .ok_or(MemoryError::not_in_source(pa))?;
            let in_page = (PAGE_SIZE - cur % PAGE_SIZE) as usize;
            let n = in_page.min(buf.len() - done);
            let page = self.page(Pfn(cur / PAGE_SIZE)).map_err(|e| match e {
                // Name the byte that failed, not the page.
                MemoryError::NotInSource { va, level, .. } => MemoryError::NotInSource {
                    pa: PhysAddr(cur),
                    va,
                    level,
                },
                MemoryError::Truncated { .. } => MemoryError::Truncated { pa: PhysAddr(cur) },
                e => e,
            })?;
            let at = (cur % PAGE_SIZE) as usize;
            buf[done..done + n].copy_from_slice(&page[at..at + n]);
            done += n;
        }
        Ok(())
    }
}

/// The backed extents to use, from kdmp-parser's map and pooldump's own
/// plan of the same header, and a warning when they differ.
///
/// Two readers of one header disagreeing means one of them misreads it.
/// Refusing the dump would leave a user with nothing, so pooldump's plan
/// stays in use (the one the truncation and bitmap-tail handling is
/// consistent with) and the warning names the first difference, so the
/// file can be reported.
fn reconcile(
    from_kdmp: Vec<PhysExtent>,
    planned: Vec<PhysExtent>,
) -> (Vec<PhysExtent>, Option<String>) {
    if from_kdmp == planned {
        return (from_kdmp, None);
    }
    let why = format!(
        "kdmp-parser's physical-memory map differs from pooldump's reading of the header ({}); pooldump's is used. Please report this dump: one of the two readers misreads it",
        describe_mismatch(&from_kdmp, &planned)
    );
    (planned, Some(why))
}

fn describe_mismatch(kdmp: &[PhysExtent], ours: &[PhysExtent]) -> String {
    let first = kdmp
        .iter()
        .zip(ours)
        .position(|(a, b)| a != b)
        .unwrap_or(kdmp.len().min(ours.len()));
    let show = |v: &[PhysExtent]| {
        v.get(first).map_or("nothing".to_string(), |e| {
            format!(
                "PFN {} +{} pages at file offset {:#x}",
                e.pfn, e.pages, e.file_offset
            )
        })
    };
    format!(
        "kdmp-parser has {}, the header describes {}",
        show(kdmp),
        show(ours)
    )
}

/// Why a dump could not be opened. Always names the file:
/// `MEMORY.DMP: DumpType 4 (small memory dump) is not supported; ...`.
#[derive(Debug)]
pub struct DumpError {
    path: PathBuf,
    kind: DumpErrorKind,
}

impl DumpError {
    /// The dump file the error is about.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// What is wrong with it.
    pub fn kind(&self) -> &DumpErrorKind {
        &self.kind
    }
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

/// The cause chain continues with the kind's own cause (an I/O error,
/// kdmp-parser's error), so `anyhow` prints each once.
impl std::error::Error for DumpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// What is wrong, without the file name.
#[derive(Debug, thiserror::Error)]
pub enum DumpErrorKind {
    /// The file could not be opened, mapped or read.
    #[error("cannot {what}")]
    Io {
        /// The step that failed (`open the file`, `memory-map the file`).
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The path names a directory.
    #[error("is a directory, not a dump file")]
    IsDirectory,
    /// The header is not one pooldump reads, or does not fit the file.
    #[error(transparent)]
    Header(HeaderError),
}

#[cfg(test)]
mod tests;
