//! `pooldump analyze`: PoolMon's view of a crash dump (per-tag Allocs,
//! Frees, Diff, Bytes, Per Alloc from the tracker, summed over every
//! processor), `!poolused`'s orders, and the big-page table.
//! [`collect`] builds a typed report; the text, JSON and CSV renderers only
//! format it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use pooldump_core::pool::{
    BigPoolOptions, BigPoolTable, PoolClass, PoolUsage, SortKey, TagPattern, TagUsage,
    TrackerOptions, UsageQuery,
};
use pooldump_core::symbols::SourceKind;
use serde::Serialize;

use crate::common::{KdnetReport, SourceArgs, SymbolArgs, kdnet_report, open_source, release};
use crate::relabel_rows;
use crate::render::{Align, Table};
use pooldump_core::relabel;

/// Per-tag pool usage (PoolMon, !poolused) and the big-page table.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub symbols: SymbolArgs,
    /// Sort by tag, allocs, frees, diff, bytes, per-alloc (PoolMon's T A F
    /// S B M), or nonpaged / paged (the tag's bytes in that pool, as
    /// !poolused 2 and 4 do).
    #[arg(short, long, default_value = "tag", value_parser = parse_sort)]
    pub sort: SortKey,
    /// Reverse the order.
    #[arg(long)]
    pub reverse: bool,
    /// Only this pool: paged, nonpaged or both (PoolMon's P key).
    #[arg(long, value_enum, default_value_t = PoolChoice::Both)]
    pub pool: PoolChoice,
    /// Show only tags matching PATTERN (PoolMon's /i: `?` one character,
    /// `*` any, case-sensitive, 0x... for a value); may be repeated.
    #[arg(short, long = "include", value_name = "PATTERN")]
    pub include: Vec<TagPattern>,
    /// Hide tags matching PATTERN (PoolMon's /x); may be repeated.
    #[arg(short = 'x', long = "exclude", value_name = "PATTERN")]
    pub exclude: Vec<TagPattern>,
    /// Show only the first N rows.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Add a totals line per pool (PoolMon's E).
    #[arg(short = 'e', long)]
    pub totals: bool,
    /// A pooltag.txt (WinDbg's triage\pooltag.txt) for the Mapped_Driver
    /// column.
    #[arg(long, value_name = "FILE")]
    pub pooltag: Option<PathBuf>,
    /// Do not search the loaded drivers' images for tags pooltag.txt lacks.
    #[arg(long)]
    pub no_image_search: bool,
    /// Include tags whose counters are all zero (seeded at boot).
    #[arg(long)]
    pub all: bool,
    /// List the big-page table's live allocations instead of the tag table.
    #[arg(long)]
    pub big_pool: bool,
    /// With --big-pool: also list freed entries (never counted as live).
    #[arg(long)]
    pub show_free: bool,
    /// Show session pool instead, one table per session (!poolused 8): each
    /// session's tracker read through its own processes' page tables.
    #[arg(long, conflicts_with = "big_pool")]
    pub session: bool,
    /// Rows per call site: the map `callsites --patch` or `relabel` wrote
    /// (each allocation site's fresh tag counted under its site's name),
    /// checked against this dump's or target's kernel and modules.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["big_pool", "session"])]
    pub relabel: Option<PathBuf>,
    /// Print JSON (schema pooldump.analyze/1, docs/analyze.md).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
}

fn parse_sort(s: &str) -> Result<SortKey, String> {
    SortKey::parse(s).ok_or_else(|| crate::common::unknown_sort(s, ", nonpaged, paged"))
}

/// PoolMon's P key cycles through these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PoolChoice {
    Both,
    #[value(alias = "p")]
    Paged,
    #[value(alias = "nonp", alias = "np")]
    Nonpaged,
}

impl PoolChoice {
    pub fn class(self) -> Option<PoolClass> {
        match self {
            PoolChoice::Both => None,
            PoolChoice::Paged => Some(PoolClass::Paged),
            PoolChoice::Nonpaged => Some(PoolClass::NonPaged),
        }
    }
}

/// The report, also the JSON document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub source: SourceInfo,
    pub symbols: SymbolsInfo,
    pub totals: Totals,
    /// The rows after filtering, sorting and --top.
    pub rows: Vec<Row>,
    pub big_pool: Option<BigPool>,
    /// With --session: each session's rows (filtered and sorted like
    /// `rows`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<Session>>,
    /// With --relabel: the rows per call site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relabel: Option<RelabelReport>,
    pub tracker: TrackerSummary,
    pub warnings: Vec<String>,
    /// Options that changed nothing, and filters that left no row: said
    /// rather than answered with silence or an empty table.
    pub notes: Vec<String>,
    /// A live target: what the KDNET link did (docs/kdnet.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kdnet: Option<KdnetReport>,
}

#[derive(Debug, Serialize)]
pub struct Session {
    /// `_MM_SESSION_SPACE.SessionId` (null when unreadable).
    pub id: Option<u32>,
    /// `EPROCESS.Session` of its processes.
    pub session_space: String,
    /// `pid name` of each process.
    pub processes: Vec<SessionProcess>,
    /// The DirectoryTableBase the table was read through.
    pub dtb: String,
    pub table: String,
    pub size: u64,
    pub expansion_used: u64,
    pub totals: PoolTotals,
    pub tags: u64,
    pub rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
pub struct RelabelReport {
    /// The map file.
    pub map: String,
    /// The tag the map split.
    pub tag: String,
    /// One row per (site, pool), sorted and filtered like the tag table;
    /// the old tag's row says what was counted before the relabel.
    pub rows: Vec<SiteRow>,
    /// Free sites (patched to pass 0: their frees count under the freed
    /// block's own tag).
    pub free_sites: Vec<String>,
    /// Allocation sites whose tag the tracker has no row for.
    pub quiet_sites: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SiteRow {
    /// `module!function+0xoff`, or the old tag's note.
    pub site: String,
    /// Index into the map's sites (none for the old tag).
    pub map_site: Option<usize>,
    /// What the site's code holds in this memory (relabelled, original...).
    pub code: Option<pooldump_core::relabel::SiteState>,
    #[serde(flatten)]
    pub row: Row,
}

#[derive(Debug, Serialize)]
pub struct SessionProcess {
    pub pid: u64,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct SourceInfo {
    /// The dump's path or the KDNET peer.
    pub name: String,
    pub live: bool,
    pub build: u32,
    pub processors: u64,
    /// The dump's SystemTime; none for a live target.
    pub system_time: Option<String>,
    pub kern_base: String,
}

#[derive(Debug, Serialize)]
pub struct SymbolsInfo {
    pub pdb: String,
    pub from: String,
    pub builtin: bool,
}

#[derive(Debug, Serialize)]
pub struct PoolTotals {
    pub allocs: u64,
    pub frees: u64,
    pub diff: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    pub paged: PoolTotals,
    pub nonpaged: PoolTotals,
    pub tags: u64,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub tag: String,
    /// The tag's ULONG value (little-endian bytes), e.g. 0x6b61654c.
    pub value: String,
    #[serde(rename = "type")]
    pub pool: &'static str,
    pub allocs: u64,
    pub frees: u64,
    pub diff: u64,
    pub bytes: u64,
    pub per_alloc: u64,
    pub driver: Option<String>,
    pub description: Option<String>,
    /// hashed, expansion or overflow.
    pub slot: &'static str,
    pub clamped: bool,
}

#[derive(Debug, Serialize)]
pub struct BigPool {
    pub table: String,
    pub size: u64,
    pub entry_size: u64,
    pub in_use: Option<u64>,
    pub live: u64,
    pub freed: u64,
    pub live_bytes: u64,
    pub entries: Vec<BigEntry>,
}

#[derive(Debug, Serialize)]
pub struct BigEntry {
    pub va: String,
    pub tag: String,
    pub pool_type: String,
    #[serde(rename = "type")]
    pub pool: &'static str,
    pub bytes: u64,
    pub freed: bool,
    pub driver: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TrackerSummary {
    pub table: String,
    pub size: u64,
    pub entry_size: u64,
    pub counter_bits: u32,
    pub per_cpu_tables: usize,
    pub expansion_used: u64,
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

pub fn run(args: &Args) -> Result<String> {
    let r = collect(args)?;
    Ok(if args.json {
        let mut s = serde_json::to_string_pretty(&r)?;
        s.push('\n');
        s
    } else if args.csv {
        render_csv(&r, args)?
    } else {
        render_text(&r, args)
    })
}

pub fn collect(args: &Args) -> Result<Report> {
    let (target, meta) = open_source(&args.source, &args.symbols)?;
    let name = meta.name.clone();
    let tracker_opts = TrackerOptions {
        include_zero: args.all,
        ..TrackerOptions::default()
    };
    let mut warnings = target.notes.clone();
    // The big-page table does not depend on the tracker: with --big-pool a
    // broken tracker is a warning, not the end.
    let usage = match target.pool_usage(&tracker_opts) {
        Ok(u) => u,
        Err(e) if args.big_pool => {
            warnings.push(format!("the tag tracker could not be read: {e}"));
            PoolUsage::default()
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)).with_context(|| {
                format!("{name}: build {}: reading the pool tag tracker", meta.build)
            });
        }
    };
    warnings.extend(usage.warnings.iter().cloned());

    let pooltag = match &args.pooltag {
        Some(p) => Some(crate::common::load_pooltag(p)?),
        None => None,
    };
    let query = UsageQuery {
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        pool: args.pool.class(),
        sort: args.sort,
        reverse: args.reverse,
        top: args.top,
    };
    let mut rows = query.apply(&usage.rows);
    target.attribute(&mut rows, pooltag.as_ref(), !args.no_image_search);
    let mut notes = option_notes(args);
    // The tag table is the view (not the big-page list, the sessions' or
    // the call sites' tables).
    if rows.is_empty() && !args.big_pool && !args.session && args.relabel.is_none() {
        notes.extend(empty_filter_note(
            &query,
            "tag rows",
            usage.rows.iter().map(|r| (r.tag, r.pool)),
        ));
    }

    let big_pool = if args.big_pool {
        let opts = BigPoolOptions {
            include_freed: args.show_free,
            ..Default::default()
        };
        let t: BigPoolTable = target
            .big_pool(&opts)
            .with_context(|| format!("{name}: build {}: reading the big-page table", meta.build))?;
        warnings.extend(t.warnings.iter().cloned());
        // The drivers of the tags in the list: --top cuts the tag rows,
        // not the tags the big-page list shows.
        let with_drivers = match query.top {
            Some(_) => {
                let mut all = UsageQuery {
                    top: None,
                    ..query.clone()
                }
                .apply(&usage.rows);
                target.attribute(&mut all, pooltag.as_ref(), !args.no_image_search);
                all
            }
            None => rows.clone(),
        };
        let b = big_pool_report(&t, &with_drivers, &query);
        if b.entries.is_empty() && !t.entries.is_empty() {
            notes.extend(empty_filter_note(
                &query,
                "big-page entries",
                t.entries.iter().map(|e| (e.tag, e.pool)),
            ));
        }
        Some(b)
    } else {
        None
    };
    let sessions = if args.session {
        let p = target
            .session_pool(&tracker_opts)
            .with_context(|| format!("{name}: build {}: reading session pool", meta.build))?;
        warnings.extend(p.warnings.iter().cloned());
        let mut out = Vec::new();
        for u in &p.sessions {
            let label = u.session_id.map_or_else(
                || format!("session at {}", u.session_space),
                |i| format!("session {i}"),
            );
            warnings.extend(u.warnings.iter().map(|w| format!("{label}: {w}")));
            let mut rows = query.apply(&u.rows);
            target.attribute(&mut rows, pooltag.as_ref(), !args.no_image_search);
            let paged = &u.totals.paged;
            out.push(Session {
                id: u.session_id,
                session_space: u.session_space.to_string(),
                processes: u
                    .processes
                    .iter()
                    .map(|p| SessionProcess {
                        pid: p.pid,
                        name: p.name.clone(),
                    })
                    .collect(),
                dtb: u.dtb.to_string(),
                table: u.table.to_string(),
                size: u.size,
                expansion_used: u.expansion_used,
                totals: PoolTotals {
                    allocs: paged.allocs + u.totals.nonpaged.allocs,
                    frees: paged.frees + u.totals.nonpaged.frees,
                    diff: (paged.allocs + u.totals.nonpaged.allocs)
                        .saturating_sub(paged.frees + u.totals.nonpaged.frees),
                    bytes: paged.bytes.wrapping_add(u.totals.nonpaged.bytes),
                },
                tags: u.totals.tags,
                rows: rows.iter().map(row).collect(),
            });
        }
        Some(out)
    } else {
        None
    };
    let relabel = match &args.relabel {
        Some(path) => {
            let checked = relabel_rows::load_and_check(path, &target);
            let checked = match checked {
                Ok(c) => c,
                Err(e) => {
                    release(&meta)?;
                    return Err(e);
                }
            };
            warnings.extend(checked.warnings.iter().cloned());
            let map = &checked.map;
            // The map's tags, filtered and sorted as the tag table is.
            let q = UsageQuery {
                include: relabel_rows::map_tags(map)
                    .into_iter()
                    .map(relabel_rows::pattern)
                    .collect(),
                exclude: args.exclude.clone(),
                ..query.clone()
            };
            let rows = q.apply(&usage.rows);
            Some(RelabelReport {
                map: path.display().to_string(),
                tag: map.tag.to_string(),
                rows: relabel::site_usage(map, &rows)
                    .iter()
                    .map(|u| SiteRow {
                        site: u.site.clone(),
                        map_site: u.map_site,
                        code: u.map_site.and_then(|i| checked.states.get(i).cloned()),
                        row: row(&u.usage),
                    })
                    .collect(),
                free_sites: relabel_rows::free_sites(map),
                quiet_sites: relabel::quiet_sites(map, &usage.rows)
                    .iter()
                    .map(|s| format!("{} ({})", s.site, s.new_tag))
                    .collect(),
            })
        }
        None => None,
    };
    // Everything is read: let a live target run again.
    release(&meta)?;
    let kdnet = kdnet_report(&meta);
    let cv = target.kernel.image.codeview.as_ref();
    let tot = |c: &pooldump_core::pool::Counters| PoolTotals {
        allocs: c.allocs,
        frees: c.frees,
        diff: c.allocs.saturating_sub(c.frees),
        bytes: c.bytes,
    };
    Ok(Report {
        schema: "pooldump.analyze/1",
        source: SourceInfo {
            name: meta.name.clone(),
            live: meta.live,
            build: meta.build,
            processors: if usage.tracker.processors > 0 {
                usage.tracker.processors
            } else {
                meta.processors
            },
            system_time: meta.system_time.clone(),
            kern_base: target.kern_base().to_string(),
        },
        symbols: SymbolsInfo {
            pdb: cv
                .map(|c| format!("{} {}", c.pdb_name, c.store_key))
                .unwrap_or_default(),
            from: target.symbols.source().to_string(),
            builtin: target.symbols.source().kind() == SourceKind::BuiltIn,
        },
        totals: Totals {
            paged: tot(&usage.totals.paged),
            nonpaged: tot(&usage.totals.nonpaged),
            tags: usage.totals.tags,
        },
        rows: rows.iter().map(row).collect(),
        big_pool,
        sessions,
        relabel,
        tracker: TrackerSummary {
            table: usage.tracker.table.to_string(),
            size: usage.tracker.size,
            entry_size: usage.tracker.entry_size,
            counter_bits: usage.tracker.counter_bits,
            per_cpu_tables: usage.tracker.per_cpu_tables.len(),
            expansion_used: usage.tracker.expansion_used,
        },
        warnings,
        notes,
        kdnet,
    })
}

/// What the options given cannot do here.
fn option_notes(args: &Args) -> Vec<String> {
    let mut v = Vec::new();
    if args.show_free && !args.big_pool {
        v.push("--show-free lists the big-page table's freed entries and applies only with --big-pool: it changed nothing here".into());
    }
    if args.big_pool {
        if !matches!(args.sort, SortKey::Tag | SortKey::Bytes) {
            v.push("--sort: the big-page list has one row per allocation (no Allocs, Frees or Diff), so only -s tag and -s bytes apply; it is sorted by tag".into());
        }
        if args.totals {
            v.push("-e/--totals adds totals to the tag table, not to the big-page list (its header gives the live count and bytes)".into());
        }
        if args.all {
            v.push(
                "--all adds the tag table's zero rows; it changes nothing in the big-page list"
                    .into(),
            );
        }
    }
    v
}

/// Why a filter left no row, when the table had rows: which of -i, -x and
/// --pool did it. `rows` are the table's (tag, pool) pairs before any
/// filter.
fn empty_filter_note(
    q: &UsageQuery,
    what: &str,
    rows: impl Iterator<Item = (pooldump_core::PoolTag, PoolClass)> + Clone,
) -> Option<String> {
    let total = rows.clone().count();
    if total == 0 || (q.include.is_empty() && q.exclude.is_empty() && q.pool.is_none()) {
        return None;
    }
    let mut steps = Vec::new();
    let mut left: Vec<(pooldump_core::PoolTag, PoolClass)> = rows.collect();
    if let Some(p) = q.pool {
        left.retain(|r| r.1 == p);
        let name = match p {
            PoolClass::Paged => "paged",
            PoolClass::NonPaged => "nonpaged",
        };
        steps.push(format!("--pool {name} kept {}", left.len()));
    }
    if !q.include.is_empty() {
        left.retain(|r| q.include.iter().any(|p| p.matches(r.0)));
        let mut tags: Vec<String> = left
            .iter()
            .map(|r| r.0.to_string().trim_end().to_string())
            .collect();
        tags.dedup();
        let shown = if tags.is_empty() {
            String::new()
        } else {
            format!(" ({})", tags.join(", "))
        };
        let pats: Vec<String> = q.include.iter().map(|p| format!("-i {p}")).collect();
        steps.push(format!("{} kept {}{shown}", pats.join(" "), left.len()));
    }
    if !q.exclude.is_empty() && !left.is_empty() {
        let pats: Vec<String> = q.exclude.iter().map(|p| format!("-x {p}")).collect();
        steps.push(format!("{} hid the rest", pats.join(" ")));
    }
    Some(format!(
        "no row is left: of the {total} {what}, {}; patterns are case-sensitive, `?` is one character and `*` any",
        steps.join(", ")
    ))
}

fn row(r: &TagUsage) -> Row {
    Row {
        tag: r.tag_text(),
        value: hex(r.tag.value() as u64),
        pool: r.pool.poolmon(),
        allocs: r.allocs,
        frees: r.frees,
        diff: r.diff,
        bytes: r.bytes,
        per_alloc: r.per_alloc,
        driver: r.driver.clone(),
        description: r.description.clone(),
        slot: r.slot.kind(),
        clamped: r.clamped,
    }
}

/// The big-page entries the tag filters keep, with the drivers the tag
/// rows found.
fn big_pool_report(t: &BigPoolTable, rows: &[TagUsage], q: &UsageQuery) -> BigPool {
    let keep = |e: &pooldump_core::pool::BigPoolEntry| {
        q.pool.is_none_or(|p| p == e.pool)
            && (q.include.is_empty() || q.include.iter().any(|p| p.matches(e.tag)))
            && !q.exclude.iter().any(|p| p.matches(e.tag))
    };
    let driver = |tag| {
        rows.iter()
            .find(|r| r.tag == tag)
            .and_then(|r| r.driver.clone())
    };
    // One row per allocation: by tag (then address), or by size with
    // -s bytes; --reverse and --top as for the tag table.
    let mut kept: Vec<&pooldump_core::pool::BigPoolEntry> =
        t.entries.iter().filter(|e| keep(e)).collect();
    match q.sort {
        SortKey::Bytes => kept.sort_by_key(|e| (std::cmp::Reverse(e.bytes), e.tag.bytes(), e.va)),
        _ => kept.sort_by_key(|e| (e.tag.bytes(), e.va)),
    }
    if q.reverse {
        kept.reverse();
    }
    if let Some(n) = q.top {
        kept.truncate(n);
    }
    BigPool {
        table: t.table.to_string(),
        size: t.size,
        entry_size: t.entry_size,
        in_use: t.in_use,
        live: t.live_count,
        freed: t.freed_count,
        live_bytes: t.live_bytes,
        entries: kept
            .into_iter()
            .map(|e| BigEntry {
                va: e.va.to_string(),
                tag: e.tag.to_string(),
                pool_type: hex(e.pool_type as u64),
                pool: e.pool.poolmon(),
                bytes: e.bytes,
                freed: e.freed,
                driver: driver(e.tag),
            })
            .collect(),
    }
}

fn render_text(r: &Report, args: &Args) -> String {
    let mut out = String::new();
    let s = &r.source;
    out.push_str(&format!(
        "{}: Windows build {}, {} processor(s), {}\n",
        s.name,
        s.build,
        s.processors,
        s.system_time.as_deref().unwrap_or("live target")
    ));
    out.push_str(&format!("Symbols: {}: {}{}\n", r.symbols.pdb, r.symbols.from, if r.symbols.builtin { "\nWARNING: no PDB or ISF was found; layouts come from pooldump's built-in table for this build" } else { "" }));
    out.push_str(&format!(
        "Pool  Nonp {} bytes in {} allocations   Paged {} bytes in {} allocations   Tags {}\n\n",
        r.totals.nonpaged.bytes,
        r.totals.nonpaged.diff,
        r.totals.paged.bytes,
        r.totals.paged.diff,
        r.totals.tags
    ));
    if let Some(b) = &r.big_pool {
        out.push_str(&format!(
            "Big-page table {}: {} entries of {:#x} bytes, {} live ({} bytes){}, {} freed{}\n\n",
            b.table,
            b.size,
            b.entry_size,
            b.live,
            b.live_bytes,
            b.in_use
                .map(|n| format!(", ExpPoolBigEntriesInUse {n}"))
                .unwrap_or_default(),
            b.freed,
            if args.show_free {
                ""
            } else {
                " (--show-free lists them)"
            }
        ));
        let mut t = Table::new(&[
            ("Address", Align::Left),
            ("Tag", Align::Left),
            ("Type", Align::Left),
            ("PoolType", Align::Right),
            ("Bytes", Align::Right),
            ("Status", Align::Left),
            ("Mapped_Driver", Align::Left),
        ]);
        for e in &b.entries {
            t.push(vec![
                e.va.clone(),
                e.tag.clone(),
                e.pool.into(),
                e.pool_type.clone(),
                e.bytes.to_string(),
                if e.freed {
                    "Free".into()
                } else {
                    "Allocated".into()
                },
                e.driver.clone().unwrap_or_default(),
            ]);
        }
        t.render(&mut out, 1);
    } else if let Some(sessions) = &r.sessions {
        if sessions.is_empty() {
            out.push_str("No session pool: no process on PsActiveProcessHead has a session.\n");
        }
        for (i, x) in sessions.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let procs: Vec<String> = x
                .processes
                .iter()
                .map(|p| format!("{} ({})", p.name, p.pid))
                .collect();
            out.push_str(&format!(
                "Session {}: _MM_SESSION_SPACE {}, tracker {} ({} entries{}), read through DTB {}\n  {} bytes in {} allocations, {} tags; processes: {}\n",
                x.id.map_or_else(|| "?".to_string(), |i| i.to_string()),
                x.session_space,
                x.table,
                x.size,
                if x.expansion_used > 0 {
                    format!(", {} in the expansion table", x.expansion_used)
                } else {
                    String::new()
                },
                x.dtb,
                x.totals.bytes,
                x.totals.diff,
                x.tags,
                procs.join(", ")
            ));
            tag_table(&mut out, &x.rows, None, args);
        }
    } else if let Some(x) = &r.relabel {
        site_table(&mut out, x);
    } else {
        let totals = args
            .totals
            .then_some([("Nonp", &r.totals.nonpaged), ("Paged", &r.totals.paged)]);
        tag_table(&mut out, &r.rows, totals, args);
    }
    for n in &r.notes {
        out.push_str(&format!("\nNote: {n}\n"));
    }
    if !r.warnings.is_empty() {
        out.push_str("\nWarnings:\n");
        for w in &r.warnings {
            out.push_str(&format!("  - {w}\n"));
        }
    }
    out
}

/// PoolMon's table, with the totals lines when asked.
fn tag_table(
    out: &mut String,
    rows: &[Row],
    totals: Option<[(&str, &PoolTotals); 2]>,
    args: &Args,
) {
    let mut t = Table::new(&[
        ("Tag", Align::Left),
        ("Type", Align::Left),
        ("Allocs", Align::Right),
        ("Frees", Align::Right),
        ("Diff", Align::Right),
        ("Bytes", Align::Right),
        ("Per Alloc", Align::Right),
        ("Mapped_Driver", Align::Left),
    ]);
    for x in rows {
        let driver = match (&x.driver, &x.description) {
            (Some(d), Some(desc)) => format!("{d} - {desc}"),
            (Some(d), None) => d.clone(),
            _ => String::new(),
        };
        t.push(vec![
            x.tag.clone(),
            x.pool.into(),
            x.allocs.to_string(),
            x.frees.to_string(),
            x.diff.to_string(),
            x.bytes.to_string(),
            x.per_alloc.to_string(),
            driver,
        ]);
    }
    for (name, p) in totals.into_iter().flatten() {
        if args.pool.class().is_some_and(|c| c.poolmon() != name) {
            continue;
        }
        t.push(vec![
            "TOTAL".into(),
            name.into(),
            p.allocs.to_string(),
            p.frees.to_string(),
            p.diff.to_string(),
            p.bytes.to_string(),
            p.bytes.checked_div(p.diff).unwrap_or(0).to_string(),
            String::new(),
        ]);
    }
    t.render(out, 1);
}

/// `--relabel`: PoolMon's columns per call site.
fn site_table(out: &mut String, x: &RelabelReport) {
    out.push_str(&format!("Per call site of {} (map {}):\n", x.tag, x.map));
    let mut t = Table::new(&[
        ("Site", Align::Left),
        ("Tag", Align::Left),
        ("Type", Align::Left),
        ("Allocs", Align::Right),
        ("Frees", Align::Right),
        ("Diff", Align::Right),
        ("Bytes", Align::Right),
        ("Per Alloc", Align::Right),
    ]);
    for s in &x.rows {
        t.push(vec![
            s.site.clone(),
            s.row.tag.clone(),
            s.row.pool.into(),
            s.row.allocs.to_string(),
            s.row.frees.to_string(),
            s.row.diff.to_string(),
            s.row.bytes.to_string(),
            s.row.per_alloc.to_string(),
        ]);
    }
    if x.rows.is_empty() {
        out.push_str(" Nothing is counted under the map's tags.\n");
    } else {
        t.render(out, 1);
    }
    if !x.quiet_sites.is_empty() {
        out.push_str(&format!(
            "\nNothing counted yet under: {}\n",
            x.quiet_sites.join(", ")
        ));
    }
    if !x.free_sites.is_empty() {
        out.push_str(&format!(
            "\nFree sites (patched to pass 0, as ExFreePool does; their frees count under each block's own tag): {}\n",
            x.free_sites.join(", ")
        ));
    }
}

/// The CSV columns of a tag row.
const ROW_COLUMNS: [&str; 10] = [
    "tag",
    "type",
    "allocs",
    "frees",
    "diff",
    "bytes",
    "per_alloc",
    "driver",
    "description",
    "slot",
];

/// A tag row's CSV fields, in [`ROW_COLUMNS`] order.
fn row_fields(x: &Row) -> [String; 10] {
    [
        x.tag.clone(),
        x.pool.into(),
        x.allocs.to_string(),
        x.frees.to_string(),
        x.diff.to_string(),
        x.bytes.to_string(),
        x.per_alloc.to_string(),
        x.driver.clone().unwrap_or_default(),
        x.description.clone().unwrap_or_default(),
        x.slot.into(),
    ]
}

fn render_csv(r: &Report, args: &Args) -> Result<String> {
    // CSV is for a program: the notes go to the person, on stderr.
    for n in &r.notes {
        eprintln!("pooldump: note: {}", pooldump_core::text::escape_lines(n));
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    if let Some(sessions) = &r.sessions {
        crate::render::csv_record(&mut w, std::iter::once("session").chain(ROW_COLUMNS))?;
        for s in sessions {
            let id = s.id.map(|i| i.to_string()).unwrap_or_default();
            for x in &s.rows {
                crate::render::csv_record(
                    &mut w,
                    std::iter::once(id.clone()).chain(row_fields(x)),
                )?;
            }
        }
        return Ok(String::from_utf8(w.into_inner()?)?);
    }
    if let Some(x) = &r.relabel {
        crate::render::csv_record(&mut w, std::iter::once("site").chain(ROW_COLUMNS))?;
        for s in &x.rows {
            crate::render::csv_record(
                &mut w,
                std::iter::once(s.site.clone()).chain(row_fields(&s.row)),
            )?;
        }
        return Ok(String::from_utf8(w.into_inner()?)?);
    }
    match &r.big_pool {
        Some(b) if args.big_pool => {
            crate::render::csv_record(
                &mut w,
                [
                    "va",
                    "tag",
                    "type",
                    "pool_type",
                    "bytes",
                    "status",
                    "driver",
                ],
            )?;
            for e in &b.entries {
                crate::render::csv_record(
                    &mut w,
                    [
                        e.va.as_str(),
                        &e.tag,
                        e.pool,
                        &e.pool_type,
                        &e.bytes.to_string(),
                        if e.freed { "free" } else { "allocated" },
                        e.driver.as_deref().unwrap_or(""),
                    ],
                )?;
            }
        }
        _ => {
            crate::render::csv_record(&mut w, ROW_COLUMNS)?;
            for x in &r.rows {
                crate::render::csv_record(&mut w, row_fields(x))?;
            }
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}
