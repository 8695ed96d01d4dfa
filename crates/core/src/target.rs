//! A kernel ready for analysis: its memory, nt's identity, nt's symbols
//! and the loaded modules. The one entry point for a crash dump, a live
//! session or any other [`Memory`].
//!
//! ```
//! use pooldump_core::pool::{PoolClass, PoolMonColumn, TrackerOptions, UsageQuery};
//! use pooldump_core::symbols::SymbolOptions;
//! use pooldump_core::Target;
//!
//! // The bundled sample and its symbol store (a plain directory: no network).
//! let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/sample");
//! let opts = SymbolOptions::local_store(&root.join("symbols"));
//! let target = Target::open_dump(&root.join("MEMORY.DMP"), &opts)?;
//!
//! let usage = target.pool_usage(&TrackerOptions::default())?;
//! let query = UsageQuery { sort: PoolMonColumn::Bytes.into(), pool: Some(PoolClass::NonPaged), top: Some(3), ..Default::default() };
//! for row in query.apply(&usage.rows) {
//!     println!("{} {:>8} {:>8} {:>10}", row.tag, row.allocs, row.frees, row.bytes);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;
use std::sync::Arc;

use crate::addr::{KernelVa, Pfn};
use crate::callsites::{self, CallSites};
use crate::dump::{CrashDump, DumpError};
use crate::kernel::{
    self, BootHints, KLDR_BOOTSTRAP, KernelError, KernelIdentity, ModuleList, ScanLimits,
    WalkLimits,
};
use crate::memory::Memory;
use crate::pool::attribution::{ImageCache, ImageFiles};
use crate::pool::{
    self, BigPoolOptions, BigPoolTable, PoolError, PoolTagDb, PoolUsage, SessionPool, TagUsage,
    TrackerOptions,
};
use crate::processes;
use crate::stack::{StackWalker, Symbolizer};
use crate::symbols::{self, KernelSymbols, LoadError, SymbolOptions};
use crate::tag::PoolTag;
use crate::warning::{Warning, WarningKind};

/// Why a target could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The dump file could not be opened or its header read.
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// ntoskrnl could not be found in the source.
    #[error("{input}: {kernel}")]
    Kernel {
        /// The source ([`Memory::describe`]).
        input: String,
        /// Why nt was not found.
        kernel: KernelError,
    },
    /// nt's symbols could not be had (no PDB, ISF or built-in table fits).
    #[error("{input}: build {build}: {load}")]
    Symbols {
        /// The source ([`Memory::describe`]).
        input: String,
        /// The build number, or `unknown`.
        build: String,
        /// Why the symbols did not load.
        load: LoadError,
    },
}

/// A kernel with its symbols.
pub struct Target<M: Memory> {
    /// The memory source (a dump, a live session, a raw image).
    pub mem: M,
    /// Where nt is and which build it is (its PDB identity).
    pub kernel: KernelIdentity,
    /// The build number (the dump header's, the live target's GetVersion),
    /// when the source states it: it picks layout fallbacks and the
    /// segment heap's key derivations.
    pub build: Option<u32>,
    /// nt's symbols and type layouts (PDB, ISF, or the built-in table).
    pub symbols: KernelSymbols,
    /// PsLoadedModuleList, walked once at open; None when its head is not
    /// known.
    pub modules: Option<ModuleList>,
    /// What looked wrong while opening: the dump's header, finding nt, its
    /// symbols, the module list.
    pub warnings: Vec<Warning>,
    /// Module sections searched for tags, read once per target (session).
    pub images: ImageCache,
    /// Where image files come from instead of memory (a symbol store's
    /// binaries), if anywhere: see [`ImageFiles`].
    pub image_files: Option<Arc<dyn ImageFiles>>,
}

impl Target<CrashDump> {
    /// Open a crash dump, find nt, load its symbols and walk the modules.
    pub fn open_dump(path: &Path, opts: &SymbolOptions<'_>) -> Result<Self, OpenError> {
        let dump = CrashDump::open(path)?;
        let h = dump.header();
        let hints = BootHints {
            kd_debugger_data_block: h.kd_debugger_data_block,
            ps_loaded_module_list: h.ps_loaded_module_list,
        };
        let build = Some(h.build());
        let kernel = {
            let mut pages = dump.physical_pages();
            let pages: &mut dyn Iterator<Item = (Pfn, &[u8])> = &mut pages;
            kernel::identify(&dump, &hints, Some(pages), &ScanLimits::default())
        };
        let kernel = kernel.map_err(|kernel| OpenError::Kernel {
            input: path.display().to_string(),
            kernel,
        })?;
        let dump_warnings = Warning::all(WarningKind::Dump, &dump.header().warnings);
        let mut t = Self::with_kernel(dump, kernel, build, opts)?;
        // What the header said about the file comes first.
        t.warnings.splice(0..0, dump_warnings);
        Ok(t)
    }
}

impl<M: Memory> Target<M> {
    /// Find nt in `mem` from the source's hints, then as [`Self::with_kernel`].
    pub fn new(
        mem: M,
        hints: &BootHints,
        build: Option<u32>,
        opts: &SymbolOptions<'_>,
    ) -> Result<Self, OpenError> {
        let kernel =
            kernel::identify(&mem, hints, None, &ScanLimits::default()).map_err(|kernel| {
                OpenError::Kernel {
                    input: mem.describe(),
                    kernel,
                }
            })?;
        Self::with_kernel(mem, kernel, build, opts)
    }

    /// Load the symbols of a kernel already found, complete its identity
    /// (decoding an encoded KDBG), and walk the loaded-module list with the
    /// symbols' layout.
    pub fn with_kernel(
        mem: M,
        mut kernel: KernelIdentity,
        build: Option<u32>,
        opts: &SymbolOptions<'_>,
    ) -> Result<Self, OpenError> {
        let symbols_error = |load| OpenError::Symbols {
            input: mem.describe(),
            build: build.map_or_else(|| "unknown".into(), |b| b.to_string()),
            load,
        };
        let mut syms = symbols::load_kernel_symbols(kernel.image.codeview.as_ref(), build, opts)
            .map_err(symbols_error)?;
        // The built-in table, matched by GUID, is trusted only if its
        // addresses fit this image.
        symbols::check_builtin_fits(&mut syms, &kernel).map_err(symbols_error)?;
        let mut warnings = Warning::all(
            WarningKind::Kernel,
            symbols::refine_kernel_identity(&mem, &mut kernel, &syms),
        );
        warnings.extend(Warning::all(WarningKind::Symbols, &syms.warnings));
        let layout = match syms.kldr_layout() {
            Ok((l, _)) => l,
            Err(e) => {
                warnings.push(Warning::new(
                    WarningKind::Modules,
                    format!("walking the module list with the bootstrap layout: {e}"),
                ));
                KLDR_BOOTSTRAP
            }
        };
        let modules = kernel
            .ps_loaded_module_list
            .map(|head| kernel::walk_loaded_modules(&mem, head, &layout, &WalkLimits::default()));
        Ok(Self {
            mem,
            kernel,
            build,
            symbols: syms,
            modules,
            warnings,
            images: ImageCache::default(),
            image_files: None,
        })
    }

    /// The same target over another handle to the same memory (a wrapper
    /// enum, a box).
    pub fn map_mem<N: Memory>(self, f: impl FnOnce(M) -> N) -> Target<N> {
        Target {
            mem: f(self.mem),
            kernel: self.kernel,
            build: self.build,
            symbols: self.symbols,
            modules: self.modules,
            warnings: self.warnings,
            images: self.images,
            image_files: self.image_files,
        }
    }

    /// Where ntoskrnl is loaded (`self.kernel.kern_base`).
    pub fn kern_base(&self) -> KernelVa {
        self.kernel.kern_base
    }

    /// Per-tag usage from the tracker tables.
    pub fn pool_usage(&self, opts: &TrackerOptions) -> Result<PoolUsage, PoolError> {
        pool::read_pool_usage(&self.mem, &self.symbols, self.kern_base(), opts)
    }

    /// Every allocation whose tag matches one of `patterns`
    /// (`!poolfind`): pool headers scanned in physical memory (in bulk
    /// from a dump's file), the big-page table, and the tracker's counts
    /// beside them.
    pub fn find(
        &self,
        patterns: &[pool::TagPattern],
        opts: &pool::find::FindOptions<'_>,
    ) -> Result<pool::find::FindReport, pool::find::FindError> {
        self.search(patterns, opts, None)
    }

    /// [`Self::find`], handing the allocations to `sink` a batch at a time
    /// as the scan threads find them, unsorted, instead of collecting and
    /// sorting them: memory does not grow with the number of results. The
    /// report's `allocations` stay empty; its per-tag totals count what
    /// the sink received ([`pool::find::FindSink`]).
    pub fn find_with(
        &self,
        patterns: &[pool::TagPattern],
        opts: &pool::find::FindOptions<'_>,
        sink: &dyn pool::find::FindSink,
    ) -> Result<pool::find::FindReport, pool::find::FindError> {
        self.search(patterns, opts, Some(sink))
    }

    fn search(
        &self,
        patterns: &[pool::TagPattern],
        opts: &pool::find::FindOptions<'_>,
        sink: Option<&dyn pool::find::FindSink>,
    ) -> Result<pool::find::FindReport, pool::find::FindError> {
        let (mem, syms, base) = (&self.mem, &self.symbols, self.kern_base());
        pool::find::find_allocations(mem, syms, base, self.build, patterns, opts, sink)
    }

    /// The pool allocation holding `va` and the others in its page
    /// (`!pool Addr`), by [`Self::find`]'s scan of that page (and the one
    /// before it) for every tag, and the big-page table; when `va` is in no
    /// allocation, what it is instead ([`pool::find::PoolVerdict`]).
    pub fn pool_at(&self, va: KernelVa) -> Result<pool::find::PoolPage, pool::find::PoolAtError> {
        self.pool_at_with(va, &pool::find::PoolAtOptions::default())
    }

    /// [`Self::pool_at`] with options: a session whose page tables to read
    /// session space through (`!session -s N`), the big-page table's bound.
    pub fn pool_at_with(
        &self,
        va: KernelVa,
        opts: &pool::find::PoolAtOptions,
    ) -> Result<pool::find::PoolPage, pool::find::PoolAtError> {
        pool::find::pool_at(
            &self.mem,
            &self.symbols,
            self.kern_base(),
            self.build,
            va,
            opts,
        )
    }

    /// The bytes of `page`'s blocks (`!pool Addr 1`), one entry per
    /// [`pool::find::PoolPage::allocations`], read from each block's first
    /// byte after its header and bounded whatever a size field says
    /// ([`pool::find::page_contents`]); a page that cannot be read is a
    /// range of the answer, not an error.
    pub fn pool_contents(
        &self,
        page: &pool::find::PoolPage,
        opts: &pool::find::ContentsOptions,
    ) -> Result<Vec<Option<pool::find::BlockContents>>, pool::find::PoolAtError> {
        pool::find::page_contents(&self.mem, page, opts)
    }

    /// Up to `bytes` of the body of an allocation [`Self::find`] listed
    /// (`dc` on each `!poolfind` result), bounded by
    /// [`pool::find::MAX_BLOCK_BYTES`] whatever its size field says;
    /// unreadable pages are ranges of the answer
    /// ([`pool::find::allocation_contents`]).
    pub fn allocation_contents(
        &self,
        a: &pool::find::FoundAllocation,
        bytes: u64,
    ) -> Result<pool::find::BlockContents, pool::find::PoolAtError> {
        pool::find::allocation_contents(&self.mem, a, bytes)
    }

    /// The big-page table.
    pub fn big_pool(&self, opts: &BigPoolOptions) -> Result<BigPoolTable, PoolError> {
        pool::read_big_pool(&self.mem, &self.symbols, self.kern_base(), opts)
    }

    /// PsActiveProcessHead's processes.
    pub fn processes(&self) -> Result<processes::ProcessList, PoolError> {
        Ok(processes::walk_processes(
            &self.mem,
            &self.symbols,
            self.kern_base(),
            &processes::ProcessWalkLimits::default(),
        )?)
    }

    /// Session pool, per session (`!poolused 8`): each session's tracker
    /// read through one of its processes' page tables.
    pub fn session_pool(&self, opts: &TrackerOptions) -> Result<SessionPool, PoolError> {
        let procs = self.processes()?;
        let mut s =
            pool::read_session_pool(&self.mem, &self.symbols, self.kern_base(), &procs, opts)?;
        let mut w = Warning::all(
            WarningKind::Processes,
            procs.warnings.iter().map(|w| format!("process list: {w}")),
        );
        w.append(&mut s.warnings);
        s.warnings = w;
        Ok(s)
    }

    /// A stack walker over the loaded modules (their unwind data read from
    /// this memory, or from image files given to
    /// [`StackWalker::with_image_locator`]); None without a module list.
    pub fn stack_walker(&self) -> Option<StackWalker> {
        self.modules.as_ref().map(StackWalker::new)
    }

    /// Every instruction of the loaded drivers (those `modules` names, all
    /// but nt when it is empty) that passes one of `tags` (any tag when
    /// empty) to a pool routine, each named through `symbolizer`; None
    /// without a module list.
    pub fn call_sites(
        &self,
        tags: &[PoolTag],
        modules: &[String],
        symbolizer: &mut Symbolizer<'_>,
    ) -> Option<CallSites> {
        let list = self.modules.as_ref()?;
        Some(callsites::call_sites(
            &self.mem, list, tags, modules, symbolizer,
        ))
    }

    /// Fill in each row's driver (Mapped_Driver) and description, in this
    /// order of precedence (docs/analyze.md):
    /// 1. an exact pooltag.txt line that names a binary (`Leak -
    ///    leakydrv.sys`);
    /// 2. the loaded images: the driver whose code passes the tag to a pool
    ///    routine (a trailing `?` when the bytes were found only as data),
    ///    searched in their code and read-only data (from [`Self::image_files`]
    ///    where they match, else memory; once per target) and only for `rows`:
    ///    pass the rows the user will see;
    /// 3. a pooltag.txt pattern line that names a binary (`Afd? - afd.sys`);
    /// 4. what pooltag.txt says without naming one (`<unknown>`,
    ///    `<multiple>`), exact line before pattern.
    ///
    /// The description is the exact line's, else the pattern's, whichever
    /// of the above found the driver: a driver found in the images is shown
    /// with what pooltag.txt says about the tag.
    pub fn attribute(
        &self,
        rows: &mut [TagUsage],
        pooltag: Option<&PoolTagDb>,
        search_images: bool,
    ) {
        let matched: Vec<pool::PoolTagMatch<'_>> = rows
            .iter()
            .map(|r| pooltag.map(|db| db.matches(r.tag)).unwrap_or_default())
            .collect();
        for (r, m) in rows.iter_mut().zip(&matched) {
            r.description = m
                .exact
                .or(m.pattern)
                .map(|e| e.description.clone())
                .filter(|d| !d.is_empty());
            if let Some(e) = m.exact.filter(|e| e.names_binary()) {
                r.driver = Some(e.binary.clone());
            }
        }
        if search_images && let Some(mods) = &self.modules {
            let wanted: Vec<_> = rows
                .iter()
                .filter(|r| r.driver.is_none())
                .map(|r| r.tag)
                .collect();
            let found = pool::attribution::attribute_tags_with(
                &self.mem,
                &mods.modules,
                &wanted,
                &self.images,
                self.image_files.as_deref(),
            );
            for r in rows.iter_mut().filter(|r| r.driver.is_none()) {
                if let Some(a) = found.get(&r.tag.unprotected()) {
                    let how = if a.immediate_hits > 0 { "" } else { "?" };
                    r.driver = Some(format!("{}{how}", a.module));
                }
            }
        }
        for (r, m) in rows.iter_mut().zip(&matched) {
            if r.driver.is_some() {
                continue;
            }
            let fallback = m
                .pattern
                .filter(|e| e.names_binary())
                .or(m.exact.filter(|e| !e.binary.is_empty()))
                .or(m.pattern.filter(|e| !e.binary.is_empty()));
            r.driver = fallback.map(|e| e.binary.clone());
        }
    }
}
