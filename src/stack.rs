//! `pooldump stack`: the crashing thread's stack from a dump's CONTEXT
//! (WinDbg's `kb` after opening the dump), a CONTEXT record in memory
//! (`.cxr ADDR` then `kb`), and, for bug checks whose parameters carry a
//! context record, that stack too, as `!analyze -v` shows it.
//!
//! [`collect`] returns a typed report; the renderers only format it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pooldump_core::dump::triage::{TriageContext, X64Context};
use pooldump_core::dump::{BugCheck, CrashDump, TriageDump};
use pooldump_core::kernel::{self, BootHints, KLDR_BOOTSTRAP, ModuleList, ScanLimits, WalkLimits};
use pooldump_core::stack::{
    Frame, ImageOrigin, Nonvolatiles, ReadStats, Reg, Registers, StackModule, StackTrace,
    StackWalker, Symbol, Symbolizer, SymbolizerOptions, UnwindMethod, WalkEnd, flags,
};
use pooldump_core::symbols::images::SymbolPathImages;
use pooldump_core::symbols::store::image_key;
use pooldump_core::symbols::{DownloadProgress, SymbolOptions};
use pooldump_core::{KernelVa, Memory};
use serde::Serialize;

use crate::common::{ProgressBar, SymbolArgs};

/// Show the crashing thread's stack (kb), or the stack of a CONTEXT record.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The crash dump (MEMORY.DMP: complete, kernel or automatic, or RDMP;
    /// or a small memory dump, whose images come from the symbol path).
    #[arg(value_name = "DUMP")]
    pub dump: PathBuf,
    /// Walk from the CONTEXT record at this address instead (WinDbg's
    /// `.cxr ADDR` then `kb`), e.g. a bug check parameter.
    #[arg(long, value_name = "ADDR")]
    pub context: Option<KernelVa>,
    #[command(flatten)]
    pub symbols: SymbolArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Everything `stack` shows.
#[derive(Debug, Serialize)]
pub struct StackReport {
    pub dump: PathBuf,
    pub bug_check: BugCheck,
    pub stacks: Vec<WalkedStack>,
    /// Modules whose PDB was not found, names from exports, images read
    /// from files.
    pub notes: Vec<String>,
}

/// One walked stack.
#[derive(Debug, Serialize)]
pub struct WalkedStack {
    /// Where the registers came from.
    pub source: ContextSource,
    /// The CONTEXT record's address, for one read from memory.
    pub context_address: Option<KernelVa>,
    pub rip: KernelVa,
    pub rsp: KernelVa,
    pub frames: Vec<FrameRow>,
    pub end: WalkEnd,
    pub stack_reads: ReadStats,
    pub image_reads: ReadStats,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContextSource {
    /// The CONTEXT in the dump header (the thread that called KeBugCheckEx).
    DumpHeader,
    /// `--context ADDR`.
    Explicit,
    /// A bug check parameter (0x7E/0x1000007E: 4, 0x3B: 3).
    BugCheckParameter { parameter: u8 },
}

/// A frame as `kb` shows it, with every field the walk knows.
#[derive(Debug, Serialize)]
pub struct FrameRow {
    pub number: usize,
    pub child_sp: KernelVa,
    pub ret_addr: Option<KernelVa>,
    pub pc: KernelVa,
    /// `module!function+0xoff`.
    pub call_site: String,
    pub symbol: Symbol,
    pub unwound_by: Option<UnwindMethod>,
    pub nonvolatile: Nonvolatiles,
    pub exact_pc: bool,
}

pub fn run(args: &Args) -> Result<String> {
    let report = collect(args)?;
    Ok(crate::render::json_or_text(
        args.json,
        &report,
        render_text,
    )?)
}

/// The bug check parameter (1-based) holding a CONTEXT record's address,
/// for the codes whose parameters carry one.
pub fn context_parameter(code: u32) -> Option<u8> {
    match code {
        // SYSTEM_THREAD_EXCEPTION_NOT_HANDLED(_M): parameter 4.
        0x7E | 0x1000_007E => Some(4),
        // SYSTEM_SERVICE_EXCEPTION: parameter 3.
        0x3B => Some(3),
        _ => None,
    }
}

pub fn collect(args: &Args) -> Result<StackReport> {
    let path = &args.dump;
    if let Some(small) = crate::common::open_small_dump(path)? {
        return collect_small(args, &small);
    }
    let dump = CrashDump::open(path)?;
    let h = dump.header().clone();
    let (modules, notes) = loaded_modules(&dump, path)?;

    let bar = ProgressBar::new();
    let sym = args
        .symbols
        .options(bar.as_ref().map(|b| b as &dyn DownloadProgress));
    // Unwind data from the image files on the symbol path when they are
    // there (WinDbg does the same), else from the dump's image pages.
    let images = args.symbols.images();
    let walker = StackWalker::new(&modules).with_image_locator(images.clone());
    let mut w = Walks::new(&dump, walker, sym, notes);
    match args.context {
        Some(va) => {
            let regs = Registers::read_context(&dump, va).with_context(|| {
                format!(
                    "{}: --context {va}: give the address of an x64 CONTEXT record (a bug check parameter such as 0x7E's fourth)",
                    path.display()
                )
            })?;
            w.push(ContextSource::Explicit, Some(va), &regs);
        }
        None => {
            let regs = Registers::from_context(dump.context_record()).with_context(|| {
                format!(
                    "{}: the dump header's CONTEXT record; pass --context ADDR to walk from a CONTEXT record in memory",
                    path.display()
                )
            })?;
            w.push(ContextSource::DumpHeader, None, &regs);
            w.bug_check_context(&h.bug_check, "should be a CONTEXT record");
        }
    }
    let (stacks, notes) = w.finish(&images);
    Ok(StackReport {
        dump: path.to_path_buf(),
        bug_check: h.bug_check,
        stacks,
        notes,
    })
}

/// The dump's loaded modules, from nt's KDBG or else the header's
/// PsLoadedModuleList, with notes on what was missing. An error when there
/// are none: no frame could be unwound.
fn loaded_modules(dump: &CrashDump, path: &Path) -> Result<(ModuleList, Vec<String>)> {
    let h = dump.header();
    let hints = BootHints {
        kd_debugger_data_block: h.kd_debugger_data_block,
        ps_loaded_module_list: h.ps_loaded_module_list,
    };
    let mut notes = Vec::new();
    // The module list is all the walk needs of the kernel: its bootstrap
    // layout has not changed since Vista, so nt's type information is not
    // required (a dump whose nt PDB is missing still gets its stack).
    let kernel = {
        let mut pages = dump.physical_pages();
        let pages: &mut dyn Iterator<Item = (pooldump_core::Pfn, &[u8])> = &mut pages;
        kernel::identify(&dump, &hints, Some(pages), &ScanLimits::default())
    };
    let head = match &kernel {
        Ok(k) => k.ps_loaded_module_list,
        Err(e) => {
            notes.push(format!(
                "nt was not found ({e}); using the header's PsLoadedModuleList"
            ));
            None
        }
    }
    .or(Some(h.ps_loaded_module_list).filter(|v| v.0 != 0));
    let Some(head) = head else {
        bail!(
            "{}: the dump names no PsLoadedModuleList and nt's KDBG was not found, so the loaded modules (and their unwind data) are unknown",
            path.display()
        );
    };
    let modules = kernel::walk_loaded_modules(&dump, head, &KLDR_BOOTSTRAP, &WalkLimits::default());
    notes.extend(modules.warnings.iter().map(|w| format!("module list: {w}")));
    if modules.modules.is_empty() {
        // Say why: a truncated file or an unreadable list head is in the
        // notes, and the user needs it more than the symptom.
        let why = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        };
        bail!(
            "{}: the loaded-module list at {head} is empty or unreadable{why}, so no frame can be unwound",
            path.display()
        );
    }
    Ok((modules, notes))
}

/// A small memory dump (Minidump, DumpType 4): the crashing thread's
/// stack from the CONTEXT in its header, over the stack bytes it saved,
/// with each module's unwind data from its image file on the symbol path
/// (the file holds no image), located by the TimeDateStamp and size in
/// its driver list, as WinDbg does.
fn collect_small(args: &Args, small: &TriageDump) -> Result<StackReport> {
    let path = &args.dump;
    let s = small.summary();
    let ctx = small_x64_context(path, small)?;
    if s.drivers.is_empty() {
        bail!(
            "{}: the small memory dump's driver list is empty, so no frame can be unwound",
            path.display()
        );
    }
    let notes = vec![format!(
        "a small memory dump: {} bytes of the crashing thread's stack and no module images; unwind data and code come from the image files on the symbol path",
        s.stack_bytes
    )];
    let kern_base = s.kdbg.as_ref().map(|k| k.kern_base);
    let modules = s
        .drivers
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let is_kernel = kern_base.map_or(i == 0, |k| k == d.base);
            let mut m = StackModule::new(d.base_name(), d.base, d.size, is_kernel);
            m.time_date_stamp = Some(d.time_date_stamp);
            m
        })
        .collect();
    let images = args.symbols.images();
    let walker = StackWalker::from_modules(modules).with_image_locator(images.clone());
    let bar = ProgressBar::new();
    let sym = args
        .symbols
        .options(bar.as_ref().map(|b| b as &dyn DownloadProgress));
    let mut w = Walks::new(small, walker, sym, notes);
    match args.context {
        Some(va) => {
            let regs = Registers::read_context(small, va).with_context(|| {
                format!(
                    "{}: --context {va}: a small memory dump holds only the stack and a few data blocks; the CONTEXT record must be among them",
                    path.display()
                )
            })?;
            w.push(ContextSource::Explicit, Some(va), &regs);
        }
        None => {
            w.push(ContextSource::DumpHeader, None, &header_registers(ctx));
            let bug_check = BugCheck {
                code: s.bug_check.code,
                parameters: s.bug_check.parameters,
            };
            w.bug_check_context(
                &bug_check,
                "is a CONTEXT record the small dump did not save",
            );
        }
    }
    note_missing_images(&mut w);
    let (stacks, notes) = w.finish(&images);
    Ok(StackReport {
        dump: path.to_path_buf(),
        bug_check: BugCheck {
            code: s.bug_check.code,
            parameters: s.bug_check.parameters,
        },
        stacks,
        notes,
    })
}

/// The small dump's x64 CONTEXT (the crashing thread's registers); an
/// error that says why there is no x64 stack to walk otherwise.
fn small_x64_context<'d>(path: &Path, small: &'d TriageDump) -> Result<&'d X64Context> {
    let s = small.summary();
    match small.context() {
        Some(TriageContext::X64(c)) => Ok(c),
        Some(TriageContext::Arm64(_)) => bail!(
            "{}: an ARM64 small memory dump; `stack` unwinds x64 stacks only (ARM64 unwind codes are not implemented). `pooldump info` shows its bug check, CONTEXT and modules",
            path.display()
        ),
        None => bail!(
            "{}: the small memory dump holds no CONTEXT record (MiniDumpFields {:#x}), so there is no stack to walk",
            path.display(),
            s.fields_raw
        ),
    }
}

/// The registers the header's CONTEXT gives (the integer registers when its
/// flags say they were saved).
fn header_registers(ctx: &X64Context) -> Registers {
    let mut regs = Registers::new(ctx.rip, ctx.gpr[Reg::Rsp as usize]);
    if ctx.context_flags & flags::CONTEXT_INTEGER == flags::CONTEXT_INTEGER {
        for (i, v) in ctx.gpr.iter().enumerate() {
            if let Some(r) = Reg::from_number(i as u8) {
                regs.set(r, Some(*v));
            }
        }
    }
    regs
}

/// Say which modules a frame is in whose image did not come from a file on
/// the symbol path (a small memory dump holds none).
fn note_missing_images<M: Memory>(w: &mut Walks<'_, M>) {
    // Every module a frame is in should have come from its file.
    let mut missing: Vec<usize> = Vec::new();
    for f in w.stacks.iter().flat_map(|s| &s.frames) {
        if let Some(i) = w.walker.module_at(f.pc)
            && !matches!(w.walker.image_origin(i), Some(ImageOrigin::File(_)))
            && !missing.contains(&i)
        {
            missing.push(i);
        }
    }
    for i in missing {
        let m = &w.walker.modules()[i];
        w.notes.push(format!(
            "{}: no image file {}/{}/{} on the symbol path; a small memory dump holds no image, so its unwind data and PDB identity must come from there (copy the binary of that build from the crashed machine into the symbol store, or name a symbol server)",
            m.name,
            m.name,
            image_key(m.time_date_stamp.unwrap_or(0), m.size),
            m.name
        ));
    }
}

/// The stacks of one dump, walked with one walker and one symbolizer,
/// and the notes gathered on the way.
struct Walks<'m, M: Memory> {
    mem: &'m M,
    walker: StackWalker,
    names: Symbolizer<'m>,
    stacks: Vec<WalkedStack>,
    notes: Vec<String>,
}

impl<'m, M: Memory> Walks<'m, M> {
    fn new(mem: &'m M, walker: StackWalker, sym: SymbolOptions<'m>, notes: Vec<String>) -> Self {
        let names = Symbolizer::new(SymbolizerOptions {
            symbol_path: sym.symbol_path,
            fetch: sym.fetch,
            pdb_files: sym.pdb_file.into_iter().collect(),
        });
        Self {
            mem,
            walker,
            names,
            stacks: Vec::new(),
            notes,
        }
    }

    fn push(&mut self, source: ContextSource, context_address: Option<KernelVa>, regs: &Registers) {
        let w = walk(
            &mut self.walker,
            &mut self.names,
            self.mem,
            source,
            context_address,
            regs,
        );
        self.stacks.push(w);
    }

    /// Also walk from the CONTEXT record a bug check's parameter points at,
    /// for the codes that have one; `unread` says what a failed read means.
    fn bug_check_context(&mut self, bug_check: &BugCheck, unread: &str) {
        let Some(p) = context_parameter(bug_check.code) else {
            return;
        };
        let va = KernelVa(bug_check.parameters[usize::from(p) - 1]);
        match Registers::read_context(self.mem, va) {
            Ok(regs) => self.push(
                ContextSource::BugCheckParameter { parameter: p },
                Some(va),
                &regs,
            ),
            Err(e) => self.notes.push(format!(
                "bug check {:#x} parameter {p} ({va}) {unread}: {e}",
                bug_check.code
            )),
        }
    }

    /// The stacks and every note: the walker's, the symbolizer's and the
    /// image files'.
    fn finish(mut self, images: &SymbolPathImages) -> (Vec<WalkedStack>, Vec<String>) {
        self.notes.extend(self.walker.notes().iter().cloned());
        self.notes.extend(self.names.notes().iter().cloned());
        self.notes.extend(images.notes());
        (self.stacks, self.notes)
    }
}

fn walk<M: Memory>(
    walker: &mut StackWalker,
    names: &mut Symbolizer<'_>,
    mem: &M,
    source: ContextSource,
    context_address: Option<KernelVa>,
    regs: &Registers,
) -> WalkedStack {
    let trace: StackTrace = walker.walk(mem, regs);
    let frames = trace
        .frames
        .iter()
        .map(|f: &Frame| {
            let symbol = names.symbolize(walker, mem, f.pc);
            FrameRow {
                number: f.number,
                child_sp: f.child_sp,
                ret_addr: f.ret_addr,
                pc: f.pc,
                call_site: symbol.to_string(),
                symbol,
                unwound_by: f.unwound_by,
                nonvolatile: f.nonvolatile,
                exact_pc: f.exact_pc,
            }
        })
        .collect();
    WalkedStack {
        source,
        context_address,
        rip: KernelVa(regs.rip),
        rsp: KernelVa(regs.rsp()),
        frames,
        end: trace.end,
        stack_reads: trace.stack_reads,
        image_reads: trace.image_reads,
    }
}

pub fn render_text(r: &StackReport) -> String {
    let mut out = String::new();
    let b = &r.bug_check;
    let _ = writeln!(
        out,
        "{}: bug check {:#x} ({:#x}, {:#x}, {:#x}, {:#x})",
        r.dump.display(),
        b.code,
        b.parameters[0],
        b.parameters[1],
        b.parameters[2],
        b.parameters[3]
    );
    for s in &r.stacks {
        out.push('\n');
        let title = match s.source {
            ContextSource::DumpHeader => {
                "The crashing thread (the CONTEXT in the dump header)".to_string()
            }
            ContextSource::Explicit => format!(
                "The CONTEXT record at {} (.cxr)",
                s.context_address.unwrap_or_default()
            ),
            ContextSource::BugCheckParameter { parameter } => format!(
                "The exception's CONTEXT record at {} (bug check parameter {parameter}, as !analyze shows it)",
                s.context_address.unwrap_or_default()
            ),
        };
        let _ = writeln!(out, "{title}: rip={} rsp={}", s.rip, s.rsp);
        render_frames(&s.frames, &mut out);
        let tag = if s.end.reason.is_normal() {
            "End"
        } else {
            "Walk stopped"
        };
        let _ = writeln!(out, "{tag}: {}", s.end.detail);
    }
    if !r.notes.is_empty() {
        out.push_str("\nNotes:\n");
        for n in &r.notes {
            let _ = writeln!(out, "  {n}");
        }
    }
    out
}

/// WinDbg's `kb` columns (without the argument columns, which x64 frames
/// do not keep reliably): ` # Child-SP          RetAddr           Call Site`.
pub fn render_frames(frames: &[FrameRow], out: &mut String) {
    out.push_str(" # Child-SP          RetAddr           Call Site\n");
    for f in frames {
        let ret = f
            .ret_addr
            .map_or_else(|| "????????`????????".to_string(), |r| r.to_string());
        let _ = writeln!(
            out,
            "{:02x} {} {} {}",
            f.number, f.child_sp, ret, f.call_site
        );
    }
}
