//! `pooldump pool`: WinDbg's `!pool Addr [Flags]`. The allocation holding
//! an address and every other allocation in its page, one line each in
//! `find`'s columns with the one holding the address marked `*`; or, when
//! the address is in none, what it is (between allocations, not pool, not
//! mapped, not in the dump). The core's [`Target::pool_at`] does the work
//! with find's scan and the big-page table, so the segment heap's pages
//! (19H1+), where `!pool` fails, read like legacy ones. `!pool`'s flags
//! (or their named options) add each block's bytes
//! ([`Target::pool_contents`], rendered in [`contents`]), keep only the
//! block holding the address, or drop the description lines.

mod contents;

use std::path::PathBuf;

use anyhow::{Context, Result};
use pooldump_core::pool::find::{
    BlockContents, FoundAllocation, PageStatus, PoolAtOptions, PoolPage, PoolVerdict,
};
use pooldump_core::{KernelVa, Target, Warning};
use serde::Serialize;

use crate::common::{SourceArgs, SymbolArgs, UsageError, kdnet_report, open_source, release};
use crate::contents::AllocationWithContents;
use crate::find::{SourceInfo, allocation_cells, allocation_columns, family_name};
use crate::render::{hex, push_list};
use contents::View;

/// The JSON document's schema.
const SCHEMA: &str = "pooldump.pool/1";

/// Show the pool allocation holding an address and its page (!pool).
///
/// The positionals are read by hand: with `--kdnet` the first one given is
/// the address and the second the flags, which clap's optional-then-required
/// positionals cannot say once an option stands between them
/// (`DUMP --symbol-path X ADDR`).
#[derive(Debug, clap::Args)]
#[command(
    override_usage = "pooldump pool [OPTIONS] DUMP ADDR [FLAGS]\n       pooldump pool [OPTIONS] --kdnet SPEC ADDR [FLAGS]"
)]
pub struct Args {
    /// The crash dump (MEMORY.DMP: complete, kernel or automatic, or RDMP);
    /// with --kdnet, the address.
    #[arg(value_name = "DUMP", required_unless_present = "kdnet")]
    pub dump: Option<String>,
    /// The kernel address, as WinDbg prints it: `ffffa50c1b2c3d40`,
    /// `0xffffa50c1b2c3d40` or `ffffa50c`1b2c3d40`; with --kdnet, the
    /// flags.
    #[arg(value_name = "ADDR")]
    pub addr: Option<String>,
    /// !pool's flags, a number as WinDbg reads it (hex: `3`, `0x3`; `0n3`
    /// decimal, `0t3` octal, `0y11` binary): 0x1 the contents
    /// (--contents), 0x2 only the block holding the address
    /// (--only-containing), 0x80000000 no description lines
    /// (--no-description). Any other bit is an error.
    #[arg(value_name = "FLAGS")]
    pub flags: Option<String>,
    /// Show each block's bytes under its line, as DWORDs with their
    /// characters (flag 0x1): the holder's body up to 0x400 bytes, two
    /// lines of the others.
    #[arg(long)]
    pub contents: bool,
    /// List only the block holding the address (flag 0x2).
    #[arg(long)]
    pub only_containing: bool,
    /// Leave out the lines describing the address, its page and its pool
    /// (flag 0x80000000).
    #[arg(long)]
    pub no_description: bool,
    /// Show N bytes of every listed block's body (decimal, or hex with
    /// 0x; at most 0x10000); implies --contents.
    #[arg(long, value_name = "N", value_parser = crate::contents::parse_byte_count)]
    pub bytes: Option<u64>,
    /// Read the address through the page tables of a process of session N
    /// (`!session -s N`, then `!pool`): session space holds other frames in
    /// each session, and a dump's own tables are one process's.
    #[arg(long, value_name = "N")]
    pub session: Option<u32>,
    /// Read a live kernel over KDNET instead (`port=50000,key=a.b.c.d`);
    /// the target is broken into, read, and resumed.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub kdnet: Option<String>,
    /// With --kdnet: say on stderr what the link did.
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub symbols: SymbolArgs,
    /// Print JSON (schema pooldump.pool/1, docs/find.md).
    #[arg(long)]
    pub json: bool,
}

/// A FLAGS operand, read as WinDbg reads a number in its default radix
/// (16): bare digits and `0x` are hex; `0n`, `0t` and `0y` are WinDbg's
/// decimal, octal and binary prefixes; a backtick between digits is
/// dropped, as in addresses.
fn parse_flags(s: &str) -> Result<u64, String> {
    let t: String = s.trim().chars().filter(|&c| c != '`').collect();
    let t = t.to_ascii_lowercase();
    let (radix, digits) = match t.get(..2) {
        Some("0x") => (16, &t[2..]),
        Some("0n") => (10, &t[2..]),
        Some("0t") => (8, &t[2..]),
        Some("0y") => (2, &t[2..]),
        _ => (16, &t[..]),
    };
    // from_str_radix takes a sign; WinDbg's numbers here have none.
    let unsigned = !digits.starts_with(['+', '-']);
    match u64::from_str_radix(digits, radix) {
        Ok(n) if unsigned => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number (!pool's flags, hex as WinDbg reads them: 1, 2, 3, \
             0x80000000; 0n for decimal)"
        )),
    }
}

/// The source, the address and the FLAGS operand, from `DUMP ADDR
/// [FLAGS]` or `--kdnet SPEC ADDR [FLAGS]`: the positionals arrive as
/// text and are read here by one set of parsers, whichever form was used.
fn operands(args: &Args) -> Result<(SourceArgs, KernelVa, Option<u64>)> {
    let usage = |m: String| anyhow::Error::new(UsageError(m));
    let given = (
        args.dump.as_deref(),
        args.addr.as_deref(),
        args.flags.as_deref(),
    );
    let (dump, addr, flags) = match (&args.kdnet, given) {
        (Some(_), (Some(a), f, None)) => (None, a, f),
        (Some(_), _) => {
            return Err(usage(
                "with --kdnet, give the address and, if any, the flags alone: \
                 pooldump pool --kdnet SPEC ADDR [FLAGS]"
                    .into(),
            ));
        }
        (None, (Some(d), Some(a), f)) => (Some(PathBuf::from(d)), a, f),
        (None, _) => {
            return Err(usage(
                "name the address to look at: pooldump pool DUMP ADDR [FLAGS]".into(),
            ));
        }
    };
    let addr = addr.parse::<KernelVa>().map_err(|e| {
        let form = match args.kdnet {
            Some(_) => "pooldump pool --kdnet SPEC ADDR [FLAGS]",
            None => "pooldump pool DUMP ADDR [FLAGS]",
        };
        usage(format!("ADDR: {e}\nusage: {form}"))
    })?;
    let flags = flags
        .map(parse_flags)
        .transpose()
        .map_err(|e| usage(format!("FLAGS: {e}")))?;
    let src = SourceArgs {
        dump,
        kdnet: args.kdnet.clone(),
        verbose: args.verbose,
    };
    Ok((src, addr, flags))
}

/// The session an address was read through.
#[derive(Serialize)]
struct SessionRead {
    session_id: u32,
    /// A process of the session's page tables.
    dtb: String,
    /// Its own segment heap (19H1+), when a block here named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    heap: Option<String>,
}

/// The report, also the JSON document.
#[derive(Serialize)]
struct Report<'a> {
    schema: &'static str,
    source: SourceInfo,
    va: String,
    page: String,
    /// resident, not-mapped or not-in-dump.
    page_status: &'static str,
    /// The address's physical address, when known.
    pa: Option<String>,
    /// not-mapped: the paging level whose entry is not present (PTE, PDE, ...).
    not_present: Option<String>,
    region: Option<&'a str>,
    regions_known: bool,
    /// --session: the session and the page tables read through.
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<SessionRead>,
    /// legacy or segment-heap.
    allocator: &'static str,
    verdict: PoolVerdict,
    containing: Option<AllocationWithContents<'a>>,
    /// The page's allocations, whatever the text lists (--only-containing
    /// trims the text alone); with the contents, those read.
    allocations: Vec<AllocationWithContents<'a>>,
    warnings: Vec<Warning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kdnet: Option<crate::common::KdnetReport>,
}

pub fn run(args: &Args) -> Result<String> {
    let (src, addr, flags) = operands(args)?;
    let view = View::new(args, flags)?;
    let (target, meta) = open_source(&src, &args.symbols)?;
    // Both reads before a live target is resumed.
    let opts = PoolAtOptions {
        session: args.session,
        ..PoolAtOptions::default()
    };
    let found = target.pool_at_with(addr, &opts).and_then(|p| {
        let bytes = match view.contents {
            Some(opts) => target.pool_contents(&p, &opts)?,
            None => Vec::new(),
        };
        Ok((p, bytes))
    });
    release(&meta)?;
    let (p, bytes) = found.with_context(|| format!("{}: build {}", meta.name, meta.build))?;
    let source = SourceInfo {
        name: meta.name.clone(),
        build: meta.build,
        live: meta.live,
    };
    let r = report(&target, &p, &bytes, source, kdnet_report(&meta));
    if args.json {
        return Ok(crate::render::json(&r)? + "\n");
    }
    Ok(text(&r, &p, &bytes, &view))
}

/// The contents read for `p.allocations[i]`, if any.
fn contents_of(bytes: &[Option<BlockContents>], i: usize) -> Option<&BlockContents> {
    bytes.get(i).and_then(Option::as_ref)
}

fn report<'a, M: pooldump_core::Memory>(
    t: &Target<M>,
    p: &'a PoolPage,
    bytes: &'a [Option<BlockContents>],
    source: SourceInfo,
    kdnet: Option<crate::common::KdnetReport>,
) -> Report<'a> {
    let mut warnings = t.warnings.clone();
    warnings.extend(p.warnings.iter().cloned());
    let allocations: Vec<AllocationWithContents<'a>> = p
        .allocations
        .iter()
        .enumerate()
        .map(|(i, a)| AllocationWithContents::new(a, contents_of(bytes, i)))
        .collect();
    let containing = holder_index(p).map(|i| allocations[i].clone());
    Report {
        schema: SCHEMA,
        source,
        va: p.va.to_string(),
        page: p.page.to_string(),
        page_status: match p.status {
            PageStatus::Resident { .. } => "resident",
            PageStatus::NotMapped { .. } => "not-mapped",
            PageStatus::NotInDump { .. } => "not-in-dump",
        },
        pa: match p.status {
            PageStatus::Resident { pa } | PageStatus::NotInDump { pa: Some(pa) } => Some(hex(pa.0)),
            _ => None,
        },
        not_present: match p.status {
            PageStatus::NotMapped { level } => Some(level.to_string()),
            _ => None,
        },
        region: p.region.as_deref(),
        regions_known: p.regions_known,
        session: p.session.as_ref().map(|s| SessionRead {
            session_id: s.session_id,
            dtb: hex(s.dtb.0),
            heap: s.heap.map(|h| h.to_string()),
        }),
        allocator: family_name(p.allocator),
        verdict: p.verdict,
        containing,
        allocations,
        warnings,
        kdnet,
    }
}

/// Where the block holding the address is in the page's list.
fn holder_index(p: &PoolPage) -> Option<usize> {
    let c = p.containing.as_ref()?;
    p.allocations.iter().position(|a| a == c)
}

/// `!pool`'s listing: what the address is, its page (unless
/// --no-description), the page's allocations (the one holding the address
/// marked `*`; only it with --only-containing) with their bytes when
/// asked, the warnings.
fn text(r: &Report<'_>, p: &PoolPage, bytes: &[Option<BlockContents>], view: &View) -> String {
    let mut out = format!(
        "{}: Windows build {}, {} pool\n",
        r.source.name, r.source.build, r.allocator,
    );
    if !view.no_description {
        out.push_str(&format!("{}\n{}\n", verdict_line(p), page_line(p)));
    }
    out.push('\n');
    let holder = holder_index(p);
    if p.allocations.is_empty() {
        out.push_str(" No allocation overlaps the page.\n");
    } else if view.only_containing && holder.is_none() {
        out.push_str(&format!(
            " No allocation holds the address; flag 0x2 leaves out the page's {} allocations.\n",
            p.allocations.len()
        ));
    } else {
        let shown: Vec<usize> = (0..p.allocations.len())
            .filter(|&i| !view.only_containing || Some(i) == holder)
            .collect();
        push_allocations(&p.allocations, &shown, holder, bytes, &mut out);
    }
    push_list(
        &mut out,
        "\nWarnings:\n",
        r.warnings.iter().map(|w| &w.message),
    );
    out
}

fn verdict_line(p: &PoolPage) -> String {
    let va = p.va;
    match (p.verdict, &p.containing) {
        (PoolVerdict::InAllocation, Some(a)) => format!(
            "{va} is inside the block at {} (marked *): {}, {:#x} bytes, {}, {}",
            a.header.unwrap_or(a.va),
            a.tag.to_string().trim_end(),
            a.bytes,
            a.state,
            a.allocator
        ),
        (PoolVerdict::BetweenAllocations, _) => {
            format!("{va} is in a pool page but in none of its allocations")
        }
        (PoolVerdict::NotPool, _) => {
            format!("{va} is not in a pool region, and no allocation covers it")
        }
        (PoolVerdict::NotMapped, _) => {
            format!("{va} is not mapped, and no big-page entry covers it")
        }
        (PoolVerdict::NotInDump, _) => {
            format!("{va}'s page is not in the dump, and no big-page entry covers it")
        }
        _ => format!("{va} is in no allocation (where pool lies is not known)"),
    }
}

fn page_line(p: &PoolPage) -> String {
    let status = match p.status {
        PageStatus::Resident { pa } => format!("physical {:#x}", pa.0 & !0xFFF),
        PageStatus::NotMapped { level } => format!("not mapped ({level} not present)"),
        PageStatus::NotInDump { pa: Some(pa) } => {
            format!("physical {:#x}, not in the dump", pa.0 & !0xFFF)
        }
        PageStatus::NotInDump { pa: None } => "a page table on the way is not in the dump".into(),
    };
    let region = match (&p.region, p.regions_known) {
        (Some(r), _) => r.as_str(),
        (None, true) => "no pool region",
        (None, false) => "pool regions unknown",
    };
    let session = match &p.session {
        Some(s) => format!(
            "; read through session {}'s page tables ({:#x})",
            s.session_id, s.dtb.0
        ),
        None => String::new(),
    };
    format!("Page {}: {status}; {region}{session}", p.page)
}

/// find's allocation rows (those at `shown`), `*` before the one holding
/// the address, each followed by its bytes when they were read.
fn push_allocations(
    list: &[FoundAllocation],
    shown: &[usize],
    holder: Option<usize>,
    bytes: &[Option<BlockContents>],
    out: &mut String,
) {
    let mut t = allocation_columns();
    let mut row = Default::default();
    for &i in shown {
        allocation_cells(&list[i], &mut row);
        t.measure(&row);
    }
    let mut header = Vec::new();
    let _ = t.write_header(&mut header, 1);
    out.push_str(&String::from_utf8_lossy(&header));
    for &i in shown {
        allocation_cells(&list[i], &mut row);
        let mut line = String::new();
        t.push_line(&mut line, &row, 1);
        if Some(i) == holder {
            line.replace_range(0..1, "*");
        }
        out.push_str(&line);
        if let Some(c) = contents_of(bytes, i) {
            crate::contents::push_dwords(c, out);
        }
    }
}
