//! `pooldump pool`: WinDbg's `!pool Addr`. The allocation holding an
//! address and every other allocation in its page, one line each in
//! `find`'s columns with the one holding the address marked `*`; or, when
//! the address is in none, what it is (between allocations, not pool, not
//! mapped, not in the dump). The core's [`Target::pool_at`] does the work
//! with find's scan and the big-page table, so the segment heap's pages
//! (19H1+), where `!pool` fails, read like legacy ones.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use pooldump_core::pool::find::{FoundAllocation, PageStatus, PoolPage, PoolVerdict};
use pooldump_core::{KernelVa, Target, Warning};
use serde::Serialize;

use crate::common::{SourceArgs, SymbolArgs, kdnet_report, open_source, release};
use crate::find::{AllocationJson, SourceInfo, allocation_cells, allocation_columns, family_name};
use crate::render::{hex, push_list};

/// The JSON document's schema.
const SCHEMA: &str = "pooldump.pool/1";

/// Show the pool allocation holding an address and its page (!pool).
///
/// The positionals are read by hand: with `--kdnet` the one given is the
/// address, which clap's optional-then-required positionals cannot say
/// once an option stands between them (`DUMP --symbol-path X ADDR`).
#[derive(Debug, clap::Args)]
#[command(
    override_usage = "pooldump pool [OPTIONS] DUMP ADDR\n       pooldump pool [OPTIONS] --kdnet SPEC ADDR"
)]
pub struct Args {
    /// The crash dump (MEMORY.DMP: complete, kernel or automatic, or RDMP);
    /// with --kdnet, the address.
    #[arg(value_name = "DUMP", required_unless_present = "kdnet")]
    pub dump: Option<String>,
    /// The kernel address, as WinDbg prints it: `ffffa50c1b2c3d40`,
    /// `0xffffa50c1b2c3d40` or `ffffa50c`1b2c3d40`.
    #[arg(value_name = "ADDR")]
    pub addr: Option<KernelVa>,
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

/// The source and the address, from `DUMP ADDR` or `--kdnet SPEC ADDR`.
fn operands(args: &Args) -> Result<(SourceArgs, KernelVa)> {
    let (dump, addr) = match (&args.kdnet, &args.dump, args.addr) {
        (Some(_), Some(a), None) => (None, a.parse::<KernelVa>()?),
        (Some(_), _, _) => {
            bail!("with --kdnet, give the address alone: pooldump pool --kdnet SPEC ADDR")
        }
        (None, Some(d), Some(a)) => (Some(PathBuf::from(d)), a),
        (None, _, _) => bail!("name the address to look at: pooldump pool DUMP ADDR"),
    };
    let src = SourceArgs {
        dump,
        kdnet: args.kdnet.clone(),
        verbose: args.verbose,
    };
    Ok((src, addr))
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
    /// legacy or segment-heap.
    allocator: &'static str,
    verdict: PoolVerdict,
    containing: Option<AllocationJson<'a>>,
    allocations: Vec<AllocationJson<'a>>,
    warnings: Vec<Warning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kdnet: Option<crate::common::KdnetReport>,
}

pub fn run(args: &Args) -> Result<String> {
    let (src, addr) = operands(args)?;
    let (target, meta) = open_source(&src, &args.symbols)?;
    let found = target.pool_at(addr);
    release(&meta)?;
    let p = found.with_context(|| format!("{}: build {}", meta.name, meta.build))?;
    let source = SourceInfo {
        name: meta.name.clone(),
        build: meta.build,
        live: meta.live,
    };
    let r = report(&target, &p, source, kdnet_report(&meta));
    if args.json {
        return Ok(crate::render::json(&r)? + "\n");
    }
    Ok(text(&r, &p))
}

fn report<'a, M: pooldump_core::Memory>(
    t: &Target<M>,
    p: &'a PoolPage,
    source: SourceInfo,
    kdnet: Option<crate::common::KdnetReport>,
) -> Report<'a> {
    let mut warnings = t.warnings.clone();
    warnings.extend(p.warnings.iter().cloned());
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
        allocator: family_name(p.allocator),
        verdict: p.verdict,
        containing: p.containing.as_ref().map(AllocationJson),
        allocations: p.allocations.iter().map(AllocationJson).collect(),
        warnings,
        kdnet,
    }
}

/// `!pool`'s listing: what the address is, its page, the page's
/// allocations (the one holding the address marked `*`), the warnings.
fn text(r: &Report<'_>, p: &PoolPage) -> String {
    let mut out = format!(
        "{}: Windows build {}, {} pool\n{}\n{}\n\n",
        r.source.name,
        r.source.build,
        r.allocator,
        verdict_line(p),
        page_line(p)
    );
    if p.allocations.is_empty() {
        out.push_str(" No allocation overlaps the page.\n");
    } else {
        push_allocations(&p.allocations, p.containing.as_ref(), &mut out);
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
    format!("Page {}: {status}; {region}", p.page)
}

/// find's allocation rows, `*` before the one holding the address.
fn push_allocations(
    list: &[FoundAllocation],
    containing: Option<&FoundAllocation>,
    out: &mut String,
) {
    let mut t = allocation_columns();
    let mut row = Default::default();
    for a in list {
        allocation_cells(a, &mut row);
        t.measure(&row);
    }
    let mut header = Vec::new();
    let _ = t.write_header(&mut header, 1);
    out.push_str(&String::from_utf8_lossy(&header));
    for a in list {
        allocation_cells(a, &mut row);
        let mut line = String::new();
        t.push_line(&mut line, &row, 1);
        if Some(a) == containing {
            line.replace_range(0..1, "*");
        }
        out.push_str(&line);
    }
}
