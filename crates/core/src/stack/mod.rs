//! x64 Windows kernel stack walking (WinDbg's `k`) and symbolization
//! (`module!function+0xoff`).
//!
//! A [`StackWalker`] holds the loaded modules and, per module, the image
//! bytes it has read (a page cache); a [`Symbolizer`] holds each module's
//! function names. Both are built once per session and serve every walk:
//! the first walk through a module reads its header page, the `.pdata`
//! pages a binary search touches and the unwind infos it uses; later walks
//! through the same functions read only the stack.
//!
//! ```no_run
//! # fn demo(target: &pooldump_core::Target<pooldump_core::CrashDump>) -> Result<(), Box<dyn std::error::Error>> {
//! use pooldump_core::stack::{Registers, StackWalker, Symbolizer, SymbolizerOptions};
//!
//! let mut walker = StackWalker::new(target.modules.as_ref().expect("module list"));
//! let regs = Registers::from_context(target.mem.context_record())?;
//! let trace = walker.walk(&target.mem, &regs);
//! let mut names = Symbolizer::new(SymbolizerOptions::default());
//! for f in &trace.frames {
//!     println!("{:02x} {} {}", f.number, f.child_sp, names.symbolize(&mut walker, &target.mem, f.pc));
//! }
//! println!("{}", trace.end);
//! # Ok(()) }
//! ```
//!
//! What it covers (docs/stack.md has the whole story): x64 images' unwind
//! data (UNWIND_INFO versions 1 and 2, every unwind code, chained infos,
//! machine frames, epilogs of the first frame), leaf functions (no
//! RUNTIME_FUNCTION: the return address at `[RSP]`), the nonvolatile
//! registers each frame recovers. What it does not: x86 or ARM64 images,
//! frames without unwind data that are not leaves (hand-written code that
//! moves RSP), exception handlers (never run), user-mode stacks past the
//! kernel's first trap frame.

mod context;
mod image;
mod stack_reader;
mod symbolize;
mod unwind;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::addr::KernelVa;
use crate::kernel::ModuleList;
use crate::memory::Memory;

pub use context::{CONTEXT_SIZE, ContextError, Nonvolatiles, Reg, Registers, flags};
pub use image::{
    ImageError, ImageFile, ImageLocator, ImageOrigin, ImageRequest, MAX_CACHED_PAGES, ReadStats,
    SectionHeader, StackModule,
};
pub use stack_reader::STACK_CHUNK;
pub use symbolize::{Symbol, SymbolOrigin, Symbolizer, SymbolizerOptions, count_pdb_functions};
pub use unwind::{
    EPILOG_BYTES, MAX_CHAIN, RuntimeFunction, SAFE_HIGH, SAFE_LOW, UnwindMethod, UnwindSummary,
};

use image::ModuleImage;

/// Bounds on one walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Frames at most (WinDbg's `k` shows 256 at most too).
    pub max_frames: usize,
    /// Bytes of stack read at most.
    pub max_stack_bytes: u64,
    /// A frame larger than this (RSP growth in one unwind) ends the walk:
    /// kernel stacks are 24-72 KiB, so anything near a MiB is a forgery.
    pub max_frame_size: u64,
}

impl Default for WalkLimits {
    fn default() -> Self {
        Self {
            max_frames: 256,
            max_stack_bytes: 256 * 1024,
            max_frame_size: 0x10_0000,
        }
    }
}

/// One frame of a walk, as WinDbg's `k` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// 0 for the frame the registers came from.
    pub number: usize,
    /// Where the frame's function is executing: the registers' RIP for
    /// frame 0, a return address (or an interrupted RIP) for the others.
    pub pc: KernelVa,
    /// RSP while this frame's function executes at `pc` (WinDbg's
    /// Child-SP): the callee's frame ends here, this frame's locals and the
    /// return address are above it.
    pub child_sp: KernelVa,
    /// Where this frame's function returns (the next frame's `pc`);
    /// `None` for the last frame when it could not be unwound.
    pub ret_addr: Option<KernelVa>,
    /// Index into [`StackWalker::modules`].
    pub module: Option<usize>,
    /// The module's short name (`nt`, `leakydrv`).
    pub module_name: Option<String>,
    /// How this frame was unwound to its caller (none for the last frame
    /// when it could not be).
    pub unwound_by: Option<UnwindMethod>,
    /// The callee-saved registers as they are in this frame: recovered
    /// from where the callees saved them, or carried from the frame below
    /// when no callee touched them.
    pub nonvolatile: Nonvolatiles,
    /// The PC is where the CPU stopped (frame 0, or a frame a machine
    /// frame interrupted), not a return address.
    pub exact_pc: bool,
}

/// Why a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhyWalkStopped {
    /// A return address of 0: the thread's first frame (the normal end).
    EndOfStack,
    /// The next frame returns to user mode (a system call's or an
    /// interrupt's trap frame): the kernel stack is done.
    UserMode,
    /// The return address is a kernel address in no loaded module.
    OutsideModules,
    /// A return address or a stack pointer is not canonical.
    NotCanonical,
    /// RSP did not grow, or a frame repeated: a loop.
    Loop,
    /// One frame would be larger than [`WalkLimits::max_frame_size`].
    FrameTooLarge,
    /// RSP left the range a kernel stack can be in.
    BadStackPointer,
    /// A function that addresses its frame through a frame register whose
    /// value is not known.
    FrameRegisterUnknown,
    /// A stack page could not be read.
    StackUnreadable,
    /// A module's image (headers, exception directory) could not be read.
    ImageUnavailable,
    /// Unwind data outside the image, of an unknown version, unparseable,
    /// or a chain that loops or does not end.
    BadUnwindInfo,
    /// [`WalkLimits::max_frames`] frames.
    FrameLimit,
    /// [`WalkLimits::max_stack_bytes`] bytes of stack read.
    ReadLimit,
}

impl WhyWalkStopped {
    /// The walk reached the real bottom of the kernel stack.
    pub fn is_normal(self) -> bool {
        matches!(self, WhyWalkStopped::EndOfStack | WhyWalkStopped::UserMode)
    }
}

/// The end of a walk: why, and the details (addresses, module, cause).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalkEnd {
    /// Why the walk stopped.
    pub reason: WhyWalkStopped,
    /// One sentence naming the address, module or cause (what the CLI
    /// prints under the frames).
    pub detail: String,
}

impl fmt::Display for WalkEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A walked stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackTrace {
    /// The frames, innermost (the registers' frame, number 0) first.
    pub frames: Vec<Frame>,
    /// Why and where the walk stopped.
    pub end: WalkEnd,
    /// Target reads of this walk's stack.
    pub stack_reads: ReadStats,
    /// Target reads of module images (headers, `.pdata`, unwind infos,
    /// code) not already cached by an earlier walk.
    pub image_reads: ReadStats,
}

/// The data directories [`StackWalker::data_directory`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirectory {
    /// IMAGE_DIRECTORY_ENTRY_IMPORT: the import descriptors.
    Import,
    /// IMAGE_DIRECTORY_ENTRY_LOAD_CONFIG: the load configuration (CFG's
    /// dispatch pointer).
    LoadConfig,
}

/// Walks x64 kernel stacks over a fixed set of modules, caching what it
/// reads of their images.
pub struct StackWalker {
    modules: Vec<StackModule>,
    /// Indices into `modules` sorted by base, for lookups.
    by_base: Vec<usize>,
    images: Vec<Option<Result<ModuleImage, ImageError>>>,
    locator: Option<Arc<dyn ImageLocator>>,
    limits: WalkLimits,
    notes: Vec<String>,
}

impl fmt::Debug for StackWalker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackWalker")
            .field("modules", &self.modules.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl StackWalker {
    /// Over the loaded-module list (the first module is nt).
    pub fn new(list: &ModuleList) -> Self {
        let mods = list
            .modules
            .iter()
            .enumerate()
            .map(|(i, m)| StackModule::new(&m.name, m.base, m.size, i == 0))
            .collect();
        Self::from_modules(mods)
    }

    /// Over any modules (a small dump's list, a test's). Modules of size 0
    /// or that overlap an earlier one are kept for names but never used to
    /// unwind an address the earlier one covers.
    pub fn from_modules(modules: Vec<StackModule>) -> Self {
        let mut by_base: Vec<usize> = (0..modules.len()).collect();
        by_base.sort_by_key(|&i| (modules[i].base, i));
        let images = (0..modules.len()).map(|_| None).collect();
        Self {
            modules,
            by_base,
            images,
            locator: None,
            limits: WalkLimits::default(),
            notes: Vec::new(),
        }
    }

    /// Walk within `limits` instead of [`WalkLimits::default`].
    pub fn with_limits(mut self, limits: WalkLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Let module images come from image files where the locator has them.
    pub fn with_image_locator(mut self, locator: Arc<dyn ImageLocator>) -> Self {
        self.locator = Some(locator);
        self
    }

    /// The modules, in the order given ([`Frame::module`] indexes them).
    pub fn modules(&self) -> &[StackModule] {
        &self.modules
    }

    /// What was noted about the modules' images (files that did not
    /// match, lookups that failed).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The module containing `va`.
    pub fn module_at(&self, va: KernelVa) -> Option<usize> {
        // The last module whose base is <= va, then earlier ones (a module
        // nested in a bigger one is rare but must not hide it).
        let n = self
            .by_base
            .partition_point(|&i| self.modules[i].base <= va);
        self.by_base[..n]
            .iter()
            .rev()
            .take(8)
            .copied()
            .find(|&i| self.modules[i].contains(va))
    }

    /// Where module `i`'s image bytes come from, once it has been opened.
    pub fn image_origin(&self, i: usize) -> Option<ImageOrigin> {
        match self.images.get(i)? {
            Some(Ok(img)) => Some(img.origin()),
            _ => None,
        }
    }

    pub(crate) fn image<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        i: usize,
        stats: &mut ReadStats,
    ) -> Result<&mut ModuleImage, ImageError> {
        if self.images[i].is_none() {
            let loc = self.locator.as_deref();
            let r = ModuleImage::open(mem, &self.modules[i], loc, stats, &mut self.notes);
            self.images[i] = Some(r);
        }
        match self.images[i].as_mut() {
            Some(Ok(img)) => Ok(img),
            Some(Err(e)) => Err(e.clone()),
            None => unreachable!("the image was opened above"),
        }
    }

    /// `len` bytes at `rva` of module `i`'s image, through the walker's
    /// page cache (an image file where the locator gave one).
    pub fn read_image<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        i: usize,
        rva: u32,
        len: u32,
        stats: &mut ReadStats,
    ) -> Result<Vec<u8>, ImageError> {
        let img = self.image(mem, i, stats)?;
        img.read(mem, rva, len, stats)
    }

    /// The RUNTIME_FUNCTION of module `i` that covers `rva`.
    pub fn function_at<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        i: usize,
        rva: u32,
        stats: &mut ReadStats,
    ) -> Result<Option<RuntimeFunction>, ImageError> {
        let img = self.image(mem, i, stats)?;
        img.lookup_function(mem, rva, stats)
    }

    /// The start RVA of the function whose chained fragment covers `rva`
    /// in module `i` (None if `rva` is not in a chained fragment).
    pub fn chain_root<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        i: usize,
        rva: u32,
        stats: &mut ReadStats,
    ) -> Option<u32> {
        let img = self.image(mem, i, stats).ok()?;
        unwind::chain_root(img, mem, rva, stats).map(|f| f.begin)
    }

    /// One of module `i`'s data directories (RVA, size), from its headers.
    pub fn data_directory<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        i: usize,
        which: DataDirectory,
        stats: &mut ReadStats,
    ) -> Result<Option<(u32, u32)>, ImageError> {
        let h = &self.image(mem, i, stats)?.headers;
        Ok(match which {
            DataDirectory::Import => h.import,
            DataDirectory::LoadConfig => h.load_config,
        })
    }

    /// Module `i`'s section table.
    pub fn sections<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        i: usize,
        stats: &mut ReadStats,
    ) -> Result<Vec<SectionHeader>, ImageError> {
        let img = self.image(mem, i, stats)?;
        img.sections(mem, stats)
    }

    /// Module `i`'s TimeDateStamp and SizeOfImage, from its headers.
    pub fn image_identity<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        i: usize,
        stats: &mut ReadStats,
    ) -> Result<(u32, u32), ImageError> {
        let img = self.image(mem, i, stats)?;
        Ok((img.headers.time_date_stamp, img.headers.size_of_image))
    }

    /// Every RUNTIME_FUNCTION of module `i` (its exception directory, in
    /// table order).
    pub fn runtime_functions<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        i: usize,
        stats: &mut ReadStats,
    ) -> Result<Vec<RuntimeFunction>, ImageError> {
        let img = self.image(mem, i, stats)?;
        img.functions(mem, stats)
    }

    /// The unwind data of every function of module `i` (its exception
    /// directory, in table order), summed up.
    pub fn unwind_summaries<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        i: usize,
    ) -> Result<Vec<Result<UnwindSummary, WalkEnd>>, ImageError> {
        let mut stats = ReadStats::default();
        let img = self.image(mem, i, &mut stats)?;
        let fns = img.functions(mem, &mut stats)?;
        Ok(fns
            .into_iter()
            .map(|f| unwind::summarize(img, mem, f, &mut stats))
            .collect())
    }

    /// Walk the stack whose top frame `regs` describe.
    pub fn walk<M: Memory + ?Sized>(&mut self, mem: &M, regs: &Registers) -> StackTrace {
        let mut stack = stack_reader::StackReader::new(mem, self.limits.max_stack_bytes);
        let mut image_reads = ReadStats::default();
        let mut frames: Vec<Frame> = Vec::new();
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let mut regs = *regs;
        let mut exact = true;
        let end = loop {
            let pc = regs.rip;
            let rsp = regs.rsp();
            if frames.len() >= self.limits.max_frames {
                break end(
                    WhyWalkStopped::FrameLimit,
                    format!("stopped after {} frames (the frame limit)", frames.len()),
                );
            }
            // A return address is attributed to the function of its call
            // instruction (a `call` can end a function).
            let lookup = if exact { pc } else { pc.wrapping_sub(1) };
            let module = self.module_at(KernelVa(lookup));
            frames.push(Frame {
                number: frames.len(),
                pc: KernelVa(pc),
                child_sp: KernelVa(rsp),
                ret_addr: None,
                module,
                module_name: module.map(|i| self.modules[i].short_name.clone()),
                unwound_by: None,
                nonvolatile: regs.nonvolatiles(),
                exact_pc: exact,
            });
            if !KernelVa(rsp).is_canonical() {
                break end(
                    WhyWalkStopped::NotCanonical,
                    format!(
                        "frame {:02x}: RSP {rsp:#x} is not canonical",
                        frames.len() - 1
                    ),
                );
            }
            let Some(mi) = module else {
                break end(
                    WhyWalkStopped::OutsideModules,
                    format!(
                        "frame {:02x}: {} is in no loaded module, so its function's unwind data is unknown",
                        frames.len() - 1,
                        KernelVa(pc)
                    ),
                );
            };
            let step = match self.unwind_one(
                mem,
                mi,
                &mut stack,
                &regs,
                lookup,
                exact,
                &mut image_reads,
            ) {
                Ok(s) => s,
                Err(mut e) => {
                    e.detail = format!("frame {:02x}: {}", frames.len() - 1, e.detail);
                    break e;
                }
            };
            let last = frames.last_mut().expect("a frame was pushed");
            last.ret_addr = Some(KernelVa(step.ret));
            last.unwound_by = Some(step.method);
            let ret = step.ret;
            let machine = matches!(step.method, UnwindMethod::MachineFrame { .. });
            if let Some(e) = self.check_caller(frames.len() - 1, rsp, &step, &mut seen) {
                break e;
            }
            regs = step.caller.volatiles_forgotten();
            regs.rip = ret;
            exact = machine;
        };
        StackTrace {
            frames,
            end,
            stack_reads: stack.stats,
            image_reads,
        }
    }

    /// Unwind the frame at `regs` (in module `mi`) to its caller; `lookup`
    /// is the address whose function's unwind data applies.
    #[allow(clippy::too_many_arguments)]
    fn unwind_one<M: Memory + ?Sized>(
        &mut self,
        mem: &M,
        mi: usize,
        stack: &mut stack_reader::StackReader<'_, M>,
        regs: &Registers,
        lookup: u64,
        exact: bool,
        image_reads: &mut ReadStats,
    ) -> Result<unwind::Step, WalkEnd> {
        let base = self.modules[mi].base.0;
        let rva = (regs.rip - base) as u32;
        let lookup_rva = (lookup - base) as u32;
        let max_frame = self.limits.max_frame_size;
        match self.image(mem, mi, image_reads) {
            Ok(img) => unwind::unwind_frame(
                img,
                mem,
                stack,
                regs,
                rva,
                lookup_rva,
                exact,
                max_frame,
                image_reads,
            ),
            // The caller adds the frame number.
            Err(e) => Err(WalkEnd {
                reason: WhyWalkStopped::ImageUnavailable,
                detail: e.to_string(),
            }),
        }
    }

    /// Why the walk stops at frame `n` (at `rsp`) given its unwound
    /// caller, if it does: the stack's end, a caller outside the kernel or
    /// not canonical, a frame that does not grow the stack or is too
    /// large, or a caller already walked (`seen` records every caller).
    fn check_caller(
        &self,
        n: usize,
        rsp: u64,
        step: &unwind::Step,
        seen: &mut HashSet<(u64, u64)>,
    ) -> Option<WalkEnd> {
        let ret = step.ret;
        let new_rsp = step.caller.rsp();
        let machine = matches!(step.method, UnwindMethod::MachineFrame { .. });
        let (ret_va, rsp_va, new_rsp_va) = (KernelVa(ret), KernelVa(rsp), KernelVa(new_rsp));
        let max = self.limits.max_frame_size;
        // Stacks grow down: a caller's frame is above its callee's. A
        // machine frame may switch stacks (an interrupt or DPC stack
        // returning to the thread's), so only it may go down. In order;
        // the first that holds stops the walk.
        type Detail<'a> = &'a dyn Fn() -> String;
        let checks: [(bool, WhyWalkStopped, Detail); 7] = [
            (ret == 0, WhyWalkStopped::EndOfStack, &|| {
                format!("frame {n:02x} returns to 0: the bottom of the thread's stack")
            }),
            (
                !ret_va.is_canonical(),
                WhyWalkStopped::NotCanonical,
                &|| format!("frame {n:02x} returns to {ret:#018x}, not a canonical address"),
            ),
            (
                !new_rsp_va.is_canonical(),
                WhyWalkStopped::NotCanonical,
                &|| format!("frame {n:02x}: the caller's RSP {new_rsp:#018x} is not canonical"),
            ),
            (!ret_va.is_kernel(), WhyWalkStopped::UserMode, &|| {
                format!("frame {n:02x} returns to user mode ({ret_va}, RSP {new_rsp_va})")
            }),
            (!machine && new_rsp <= rsp, WhyWalkStopped::Loop, &|| {
                format!(
                    "frame {n:02x}: the caller's RSP {new_rsp_va} is not above this frame's {rsp_va}"
                )
            }),
            (
                !machine && new_rsp > rsp && new_rsp - rsp > max,
                WhyWalkStopped::FrameTooLarge,
                &|| {
                    format!(
                        "frame {n:02x} would be {:#x} bytes (RSP {rsp_va} to {new_rsp_va}), more than {max:#x}",
                        new_rsp - rsp
                    )
                },
            ),
            (!seen.insert((ret, new_rsp)), WhyWalkStopped::Loop, &|| {
                format!(
                    "frame {n:02x}: the caller ({ret_va} at RSP {new_rsp_va}) was already walked"
                )
            }),
        ];
        checks
            .into_iter()
            .find(|c| c.0)
            .map(|(_, reason, detail)| end(reason, detail()))
    }
}

fn end(reason: WhyWalkStopped, detail: String) -> WalkEnd {
    WalkEnd { reason, detail }
}
