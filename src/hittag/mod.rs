//! `pooldump hittag`: who allocates a tag, the way kernel engineers find
//! out with WinDbg (`ed nt!PoolHitTag 'Tag'`, `g`, `kb` at each break,
//! dozens of times, then `ed nt!PoolHitTag 0`), done for them: break in,
//! write the tag into nt!PoolHitTag, resume, and at each break the target
//! takes walk the stack, find the caller of the pool, count it, resume;
//! at the end restore PoolHitTag and leave the target running.
//!
//! Restoring is not optional: a target left stopped, or still breaking on
//! every allocation of the tag, is the worst thing this tool could do to a
//! machine. A guard restores on every way out of the loop (the hit count,
//! the time limit, Ctrl-C, an error, a panic); a lost link is
//! re-established to restore.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pooldump_core::hittag::{DecidedBy, Hit, HitAnalyzer, HitKind, HitTable, SiteRow};
use pooldump_core::stack::{ReadStats, Registers, Symbolizer, SymbolizerOptions};
use pooldump_core::symbols::images::SymbolPathImages;
use pooldump_core::{KernelVa, Memory, PoolTag, Target};
use pooldump_kdnet::{ContinueStatus, KdnetSpec, LiveTarget, TargetEvent, TargetState};
use serde::Serialize;

use crate::common::{KdnetReport, SymbolArgs, connect_live};

mod render;
use render::render;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The live target, with WinDbg's `-k net:` settings:
    /// `port=50000,key=a.b.c.d`.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub kdnet: String,
    /// The tag to catch, as typed (`Leak`; `Abc` is `Abc `, as Windows pads
    /// short tags) or a value `0x…`. Written to nt!PoolHitTag as `ed` does.
    #[arg(long, value_name = "TAG")]
    pub tag: String,
    /// Stop after this many pool hits.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub hits: u64,
    /// Stop after this many seconds, whatever the hits.
    #[arg(long, default_value_t = 120, value_name = "S")]
    pub seconds: u64,
    /// Distinct stacks shown per call site (all are in --json).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub stacks: usize,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// The KDNET link's statistics on stderr at the end.
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub sym: SymbolArgs,
}

/// How long to wait for a lost target to offer again (it offers every 3 s).
const RECOVER_WAIT: Duration = Duration::from_secs(15);
/// Prints kept for the report.
const MAX_PRINTS: usize = 100;
/// After PoolHitTag is restored: how long the target must run without
/// stopping before pooldump leaves it (see [`Hits::settle`]).
const SETTLE: Duration = Duration::from_millis(500);

/// Why collection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Ended {
    Hits,
    Time,
    Interrupted,
    LinkLost,
}

/// Target reads the stack analysis made: the first hit (which reads the
/// modules' headers, unwind data, code and import tables) apart from the
/// others (which should read only the stack).
#[derive(Debug, Default, Serialize)]
struct AnalysisReads {
    first_hit_stack: ReadStats,
    first_hit_image: ReadStats,
    later_hits: u64,
    later_stack: ReadStats,
    later_image: ReadStats,
}

#[derive(Debug, Serialize)]
struct Report {
    target: String,
    build: u32,
    tag: String,
    tag_value: String,
    pool_hit_tag: KernelVa,
    /// PoolHitTag before (and after) the session.
    previous_value: String,
    restored: bool,
    ended: Ended,
    seconds: f64,
    hits: u64,
    allocs: u64,
    frees: u64,
    other_stops: u64,
    table: HitTable,
    analysis_reads: AnalysisReads,
    prints: Vec<String>,
    notes: Vec<String>,
    kdnet: KdnetReport,
}

/// Puts PoolHitTag back and leaves the target running, however the
/// session ends.
struct Restore<'t> {
    target: &'t LiveTarget,
    va: KernelVa,
    old: [u8; 4],
    done: Option<Result<(), String>>,
}

impl Restore<'_> {
    fn restore(&mut self) -> Result<(), String> {
        if let Some(r) = &self.done {
            return r.clone();
        }
        let r = restore_hit_tag(self.target, self.va, self.old);
        self.done = Some(r.clone());
        r
    }
}

impl Drop for Restore<'_> {
    /// Restores on a way out that did not (an error, a panic); a restore
    /// already tried was reported by its caller.
    fn drop(&mut self) {
        if self.done.is_some() {
            return;
        }
        if let Err(e) = self.restore() {
            eprintln!(
                "pooldump: {}",
                pooldump_core::text::escape_lines(&e.to_string())
            );
        }
    }
}

/// Let the kernel go on from `stop`: past the `int3` of a breakpoint
/// (WinDbg's Rip+1); any other stop as it would be without a debugger
/// (an exception not handled, so the kernel's own handling runs).
fn hand_back(
    live: &LiveTarget,
    stop: &pooldump_kdnet::StopInfo,
) -> Result<(), pooldump_kdnet::KdnetError> {
    if stop.is_breakpoint() {
        return live.resume();
    }
    match stop.event {
        pooldump_kdnet::api::Event::Exception { .. } => {
            live.continue_with(ContinueStatus::ExceptionNotHandled)
        }
        _ => live.continue_with(ContinueStatus::Continue),
    }
}

/// Stop the target (or get it back if the link was lost), write `old` into
/// PoolHitTag, check it, resume.
fn restore_hit_tag(t: &LiveTarget, va: KernelVa, old: [u8; 4]) -> Result<(), String> {
    let what = format!(
        "restoring nt!PoolHitTag at {} to {:08x} on {}",
        va,
        u32::from_le_bytes(old),
        t.peer()
    );
    let stop = || -> Result<bool, String> {
        match t.state() {
            TargetState::Stopped(_) => Ok(false),
            TargetState::Running => t.break_in().map(|_| false).map_err(|e| e.to_string()),
            TargetState::Dead(_) => {
                eprintln!(
                    "pooldump: the link to {} was lost; waiting up to {} s for the target to offer again, to restore nt!PoolHitTag",
                    t.peer(),
                    RECOVER_WAIT.as_secs()
                );
                let r = t.reconnect(RECOVER_WAIT).map_err(|e| e.to_string())?;
                Ok(r.rebooted)
            }
        }
    };
    let rebooted = stop().map_err(|e| format!("{what}: {e}"))?;
    if rebooted {
        // A new boot has PoolHitTag 0: nothing of ours is left.
        t.resume().map_err(|e| format!("{what}: resuming: {e}"))?;
        return Ok(());
    }
    let write = || -> Result<(), String> {
        t.write_virtual(va, &old).map_err(|e| e.to_string())?;
        let mut back = [0u8; 4];
        t.read_virtual(va, &mut back).map_err(|e| e.to_string())?;
        if back != old {
            return Err(format!("it reads back as {:08x}", u32::from_le_bytes(back)));
        }
        Ok(())
    };
    let w = write();
    // Resume whatever happened to the write.
    let r = t.resume().map_err(|e| e.to_string());
    w.map_err(|e| format!("{what}: {e}"))?;
    r.map_err(|e| format!("{what}: resuming: {e}"))
}

pub fn run(args: &Args) -> Result<String> {
    let tag = PoolTag::parse(&args.tag).with_context(|| format!("--tag {}", args.tag))?;
    if tag.value() == 0 || tag.bytes() == *b"    " {
        bail!(
            "--tag {:?}: PoolHitTag {} would match no allocation or every untagged one; name a real tag",
            args.tag,
            if tag.value() == 0 {
                "0"
            } else {
                "of four spaces"
            }
        );
    }
    if args.hits == 0 {
        bail!("--hits 0: there would be nothing to collect");
    }
    let spec: KdnetSpec = args
        .kdnet
        .parse()
        .with_context(|| format!("--kdnet {}", args.kdnet))?;
    let started = Instant::now();
    let target = connect_live(&spec, &args.sym)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let result = session(args, tag, &target, &interrupted, started);
    // Whatever happened, the target runs (session restored PoolHitTag).
    crate::common::leave_running(&target.mem);
    if args.verbose {
        let r = KdnetReport::new(
            &target.mem.peer().to_string(),
            &target.mem.stats(),
            started.elapsed(),
        );
        eprintln!("{}", r.summary());
    }
    let report = result?;
    Ok(crate::render::json_or_text(args.json, &report, |r| {
        render(r, args.stacks)
    })?)
}

fn session(
    args: &Args,
    tag: PoolTag,
    target: &Target<LiveTarget>,
    interrupted: &AtomicBool,
    started: Instant,
) -> Result<Report> {
    let live = &target.mem;
    let mut notes = Vec::new();
    let (va, old) = read_pool_hit_tag(target, tag, &mut notes)?;
    let (analyzer, images) = hit_analyzer(args, target)?;
    let hits = Hits {
        live,
        analyzer,
        table: HitTable::default(),
        prints: Vec::new(),
        reads: AnalysisReads::default(),
        notes,
    };
    let mut watch = watch(args, hits, va, old, tag, interrupted)?;
    if let Some(e) = &watch.restore_failed {
        bail!(
            "{e}; the target may still break on every {tag}: set nt!PoolHitTag back with WinDbg (ed nt!PoolHitTag {:08x})",
            u32::from_le_bytes(old)
        );
    }
    watch.notes.extend(images.notes());
    let table = watch.table;
    let (allocs, frees) = table
        .sites
        .iter()
        .fold((0, 0), |(a, f), s| (a + s.allocs, f + s.frees));
    Ok(Report {
        target: format!("KDNET {}", live.peer()),
        build: live.build(),
        tag: tag.to_string(),
        tag_value: format!("{:08x}", tag.value()),
        pool_hit_tag: va,
        previous_value: format!("{:08x}", u32::from_le_bytes(old)),
        restored: true,
        ended: watch.ended,
        seconds: started.elapsed().as_secs_f64(),
        hits: table.hits,
        allocs,
        frees,
        other_stops: table.other.iter().map(|o| o.count).sum(),
        table,
        analysis_reads: watch.reads,
        prints: watch.prints,
        notes: watch.notes,
        kdnet: KdnetReport::new(&live.peer().to_string(), &live.stats(), started.elapsed()),
    })
}

/// What a PoolHitTag session saw, once PoolHitTag is set back (or could
/// not be).
struct Watch {
    table: HitTable,
    prints: Vec<String>,
    reads: AnalysisReads,
    notes: Vec<String>,
    ended: Ended,
    /// Why PoolHitTag could not be set back.
    restore_failed: Option<String>,
}

/// Set PoolHitTag (at `va`, holding `old`) to `tag`, let the target run
/// and take its stops until [`Hits::collect`] ends, then set PoolHitTag
/// back: the guard restores it on every way out.
fn watch(
    args: &Args,
    mut hits: Hits<'_>,
    va: KernelVa,
    old: [u8; 4],
    tag: PoolTag,
    interrupted: &AtomicBool,
) -> Result<Watch> {
    let live = hits.live;
    let mut guard = Restore {
        target: live,
        va,
        old,
        done: None,
    };
    set_pool_hit_tag(live, va, tag)?;
    live.resume().context("resuming the target")?;
    let ended = hits.collect(args, interrupted);
    let restore_failed = match guard.restore() {
        Ok(()) => {
            hits.settle();
            None
        }
        Err(e) => Some(e),
    };
    let Hits {
        table,
        prints,
        reads,
        mut notes,
        ..
    } = hits;
    if table.pool_hits == 0 && ended == Ended::Time {
        notes.push(format!(
            "no allocation or free with tag {tag} in {} s",
            args.seconds
        ));
    }
    Ok(Watch {
        table: table.sorted(),
        prints,
        reads,
        notes,
        ended,
        restore_failed,
    })
}

/// The analyzer of PoolHitTag stops: a stack walker over the target's
/// modules and a symbolizer, both reading images from the symbol path
/// where they are there; and those images (their notes go in the report).
fn hit_analyzer<'t>(
    args: &Args,
    target: &'t Target<LiveTarget>,
) -> Result<(HitAnalyzer<'t>, Arc<SymbolPathImages>)> {
    let live = &target.mem;
    let Some(walker) = target.stack_walker() else {
        bail!(
            "{}: the loaded-module list could not be read, so stacks cannot be named",
            live.peer()
        );
    };
    let opts = args.sym.options(None);
    let symbolizer = Symbolizer::new(SymbolizerOptions {
        symbol_path: opts.symbol_path,
        fetch: opts.fetch,
        pdb_files: opts.pdb_file.into_iter().collect(),
    });
    // Unwind data and code from the image files on the symbol path where
    // they are there (`<file>/<TimeDateStamp><SizeOfImage>/<file>`): round
    // trips saved. Only unwind data, function bounds, code before a call
    // and import names are read this way, all as built; the tag
    // immediates a relabel may have patched are never read here.
    let images = args.sym.images();
    let analyzer = HitAnalyzer::with_walker(walker.with_image_locator(images.clone()), symbolizer);
    Ok((analyzer, images))
}

/// nt!PoolHitTag's address and the value it holds now (said in `notes`
/// when it is some other tag, which is put back at the end).
fn read_pool_hit_tag(
    target: &Target<LiveTarget>,
    tag: PoolTag,
    notes: &mut Vec<String>,
) -> Result<(KernelVa, [u8; 4])> {
    let rva = target
        .symbols
        .require_symbol_rva("PoolHitTag")
        .context("finding nt!PoolHitTag")?;
    let va = KernelVa(target.kernel.image.base.0 + rva);
    let mut old = [0u8; 4];
    target
        .mem
        .read_virtual(va, &mut old)
        .with_context(|| format!("reading nt!PoolHitTag at {va}"))?;
    // 0xffffff0f is the kernel's own initial value (WRK pool.c), no tag.
    if old != [0; 4] && u32::from_le_bytes(old) != 0xFFFF_FF0F && old != tag.bytes() {
        notes.push(format!(
            "nt!PoolHitTag held {} ({:08x}) before; it is restored to that",
            PoolTag(u32::from_le_bytes(old)),
            u32::from_le_bytes(old)
        ));
    }
    Ok((va, old))
}

/// Write `tag` to nt!PoolHitTag and read it back.
fn set_pool_hit_tag(live: &LiveTarget, va: KernelVa, tag: PoolTag) -> Result<()> {
    live.write_virtual(va, &tag.bytes())
        .with_context(|| format!("writing {tag} to nt!PoolHitTag at {va}"))?;
    let mut back = [0u8; 4];
    live.read_virtual(va, &mut back)
        .with_context(|| format!("reading back nt!PoolHitTag at {va}"))?;
    if back != tag.bytes() {
        bail!(
            "nt!PoolHitTag at {va} reads back as {:08x} after writing {tag}",
            u32::from_le_bytes(back)
        );
    }
    Ok(())
}

/// What the running target reports while PoolHitTag is set.
struct Hits<'t> {
    live: &'t LiveTarget,
    analyzer: HitAnalyzer<'t>,
    table: HitTable,
    prints: Vec<String>,
    reads: AnalysisReads,
    notes: Vec<String>,
}

impl Hits<'_> {
    /// Take the target's events until enough hits, the time limit, Ctrl-C
    /// or a lost link; why it ended.
    fn collect(&mut self, args: &Args, interrupted: &AtomicBool) -> Ended {
        let bar = progress(args);
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let ended = loop {
            if self.table.pool_hits >= args.hits {
                break Ended::Hits;
            }
            if interrupted.load(Ordering::SeqCst) {
                break Ended::Interrupted;
            }
            let now = Instant::now();
            if now >= deadline {
                break Ended::Time;
            }
            let until = deadline.min(now + Duration::from_millis(250));
            match self.live.wait_event(until) {
                Ok(None) => {}
                Ok(Some(ev)) => {
                    if let Err(ended) = self.event(ev) {
                        break ended;
                    }
                    if let Some(b) = &bar {
                        b.set_position(self.table.pool_hits.min(args.hits));
                    }
                }
                Err(e) => {
                    self.notes
                        .push(format!("the link failed while waiting for hits: {e}"));
                    break Ended::LinkLost;
                }
            }
        };
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        ended
    }

    /// One event: a print is kept, a breakpoint stop is a hit (analysed,
    /// then stepped over), any other stop is handed back to the kernel.
    fn event(&mut self, ev: TargetEvent) -> Result<(), Ended> {
        let live = self.live;
        let stop = match ev {
            TargetEvent::Print { text, .. } | TargetEvent::Prompt { text, .. } => {
                if self.prints.len() < MAX_PRINTS {
                    self.prints.push(text.trim_end().to_string());
                }
                return Ok(());
            }
            TargetEvent::Stopped(stop) => stop,
        };
        if stop.is_breakpoint() {
            self.hit(stop.processor, KernelVa(stop.pc));
        } else {
            self.table
                .add_other(KernelVa(stop.pc), format!("{:?}", stop.event));
        }
        hand_back(live, &stop).map_err(|e| {
            self.notes
                .push(format!("resuming after a stop failed: {e}"));
            Ended::LinkLost
        })
    }

    /// After PoolHitTag is restored and the target resumed. A processor
    /// that had compared an allocation's tag with PoolHitTag, and matched,
    /// when the break-in froze it still executes its breakpoint once it
    /// runs again; with no debugger to answer, the kernel would wait for
    /// one, stopped. So such pool hits are taken and handed back,
    /// uncounted (the table holds the hits taken while the tag was set),
    /// until the target has run for [`SETTLE`] without one. Any other stop
    /// is handed back as during the session, and ends the wait: it is not
    /// pooldump's, and may come again after pooldump has left, as it
    /// would with no debugger attached.
    fn settle(&mut self) {
        // One a processor at the most; the bound is against a target that
        // never stops stopping.
        const MOST: usize = 256;
        let mut handed_back = 0;
        let mut until = Instant::now() + SETTLE;
        while handed_back < MOST && Instant::now() < until {
            match self.live.wait_event(until) {
                Ok(Some(TargetEvent::Stopped(stop))) => {
                    let pc = KernelVa(stop.pc);
                    let ours = stop.is_breakpoint()
                        && self
                            .analyze(stop.processor, pc)
                            .is_some_and(|h| matches!(h.kind, HitKind::Pool { .. }));
                    if let Err(e) = hand_back(self.live, &stop) {
                        self.notes.push(format!(
                            "resuming a stop at {pc} after nt!PoolHitTag was restored failed: {e}"
                        ));
                        return;
                    }
                    if !ours {
                        self.notes.push(format!(
                            "a stop at {pc} right after nt!PoolHitTag was restored, not a pool hit, was resumed as during the session"
                        ));
                        break;
                    }
                    handed_back += 1;
                    until = Instant::now() + SETTLE;
                }
                Ok(Some(print)) => {
                    // Kept as during the session (a print is never an
                    // error).
                    let _ = self.event(print);
                }
                Ok(None) => {}
                Err(e) => {
                    self.notes.push(format!(
                        "the link failed while letting the target run on after nt!PoolHitTag was restored: {e}"
                    ));
                    return;
                }
            }
        }
        if handed_back > 0 {
            self.notes.push(format!(
                "{handed_back} pool hit(s) already under way when nt!PoolHitTag was restored (a processor past its tag check when the target was frozen) were resumed and are not in the table"
            ));
        }
    }

    /// A breakpoint on `processor` at `pc`, its stack analysed; `None`
    /// (with a note) when its registers cannot be read.
    fn analyze(&mut self, processor: u16, pc: KernelVa) -> Option<Hit> {
        let regs = self
            .live
            .get_context_of(processor)
            .map_err(anyhow::Error::new)
            .and_then(|c| Registers::from_context(&c).map_err(anyhow::Error::new));
        match regs {
            Ok(regs) => Some(self.analyzer.analyze(self.live, &regs)),
            Err(e) => {
                self.notes
                    .push(format!("a stop at {pc} could not be read: {e}"));
                None
            }
        }
    }

    /// A PoolHitTag breakpoint on `processor` at `pc`: its stack analysed
    /// into the table.
    fn hit(&mut self, processor: u16, pc: KernelVa) {
        let Some(hit) = self.analyze(processor, pc) else {
            return;
        };
        let reads = &mut self.reads;
        if self.table.hits == 0 {
            reads.first_hit_stack = hit.stack_reads;
            reads.first_hit_image = hit.image_reads;
        } else {
            reads.later_hits += 1;
            reads.later_stack.add(&hit.stack_reads);
            reads.later_image.add(&hit.image_reads);
        }
        self.table.add(&hit);
    }
}

fn progress(args: &Args) -> Option<indicatif::ProgressBar> {
    if args.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(args.hits);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "waiting for hits {bar:30} {pos}/{len} {elapsed} (Ctrl-C to stop, restore and resume)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.enable_steady_tick(Duration::from_millis(250));
    Some(b)
}
