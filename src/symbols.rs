//! `pooldump symbols`: which kernel a dump holds, where its symbols came
//! from, and every layout and global the pool analysis will use, so a user
//! can see what went wrong on an odd build. [`collect`] returns a typed
//! report; the renderers only format it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use pooldump_core::KernelVa;
use pooldump_core::dump::CrashDump;
use pooldump_core::kernel::{
    self, BootHints, KLDR_BOOTSTRAP, KernelIdentity, KldrLayout, ModuleIdentity, ScanLimits,
    WalkLimits,
};
use pooldump_core::symbols::{
    DownloadProgress, Field, KernelSymbols, SourceKind, SymbolPath, SymbolSource,
    check_builtin_fits, load_kernel_symbols, refine_kernel_identity,
};
use serde::Serialize;

use crate::common::{ProgressBar, SymbolArgs};
use crate::render::{ListTable, Section, hex, json_or_text, push_list};

/// Show the kernel's identity, where its symbols came from, and the
/// layouts and globals the pool analysis uses.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The crash dump (MEMORY.DMP).
    #[arg(value_name = "DUMP")]
    pub dump: PathBuf,
    #[command(flatten)]
    pub symbols: SymbolArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Everything `symbols` shows.
#[derive(Debug, Serialize)]
pub struct SymbolsReport {
    pub dump: PathBuf,
    pub build: u32,
    pub kernel: KernelIdentity,
    /// Where each layer of symbols came from, primary first.
    pub sources: Vec<SymbolSource>,
    /// The symbols come (partly) from the built-in table.
    pub builtin_used: bool,
    pub layouts: Vec<TypeReport>,
    pub globals: Vec<GlobalReport>,
    /// `ExPoolTagTables` entries: the array's bound and the processors.
    pub ex_pool_tag_tables_bound: Option<u64>,
    pub system_va_regions: Option<RegionsReport>,
    pub kldr: Option<KldrReport>,
    pub modules: Vec<ModuleIdentity>,
    /// Layouts or globals the pool analysis needs that these symbols lack.
    pub missing: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TypeReport {
    pub name: String,
    pub size: Option<u64>,
    pub fields: Vec<(String, Field)>,
    pub source: Option<SourceKind>,
}

#[derive(Debug, Serialize)]
pub struct GlobalReport {
    pub name: String,
    pub rva: u64,
    pub va: KernelVa,
    pub size: Option<u64>,
    pub source: SourceKind,
}

#[derive(Debug, Serialize)]
pub struct RegionsReport {
    /// `_MI_VISIBLE_STATE.SystemVaRegions`.
    pub field: Field,
    /// `_MI_ASSIGNED_REGION_TYPES` (index → name).
    pub region_types: Vec<(i64, String)>,
}

#[derive(Debug, Serialize)]
pub struct KldrReport {
    pub type_name: String,
    /// The offsets, as the symbols have them (JSON: one key per member).
    #[serde(flatten)]
    pub layout: KldrLayout,
    /// Differences from the bootstrap offsets the module walk starts with.
    pub bootstrap_mismatches: Vec<String>,
}

/// The layouts the pool analysis reads (docs/pool-structures.md §2, §6).
const POOL_TYPES: &[(&str, &[&str])] = &[
    ("_POOL_TRACKER_TABLE", &[]),
    ("_POOL_TRACKER_BIG_PAGES", &[]),
    ("_POOL_HEADER", &[]),
    ("_MI_SYSTEM_VA_ASSIGNMENT", &[]),
];

/// The globals the pool analysis reads (docs/pool-structures.md §1); absent ones are only
/// reported missing when every supported build has them.
const POOL_GLOBALS: &[(&str, bool)] = &[
    ("PoolTrackTable", true),
    ("PoolTrackTableSize", true),
    ("PoolTrackTableMask", true),
    ("ExPoolTagTables", true),
    ("PoolTrackTableExpansion", true),
    ("PoolTrackTableExpansionSize", true),
    ("PoolBigPageTable", true),
    ("PoolBigPageTableSize", true),
    ("ExpPoolBigEntriesInUse", true),
    ("PoolHitTag", true),
    ("KeNumberProcessors", true),
    ("KiProcessorBlock", true),
    ("PsLoadedModuleList", true),
    ("KdDebuggerDataBlock", true),
    ("KdpDataBlockEncoded", true),
    ("KiWaitNever", true),
    ("KiWaitAlways", true),
    ("MmSystemRangeStart", true),
    ("MiVisibleState", false),
    ("MiState", false),
    ("ExPoolState", false),
    ("RtlpHpHeapGlobals", false),
    ("ExpPoolQuotaCookie", false),
    ("ExpSessionPoolTrackTable", false),
    ("MmNonPagedPoolStart", false),
    ("MmPagedPoolEnd", false),
];

pub fn run(args: &Args) -> Result<String> {
    let report = collect(args)?;
    Ok(json_or_text(args.json, &report, render_text)?)
}

pub fn collect(args: &Args) -> Result<SymbolsReport> {
    let dump = CrashDump::open(&args.dump)?;
    let header = dump.header().clone();
    let build = header.build();
    let hints = BootHints {
        kd_debugger_data_block: header.kd_debugger_data_block,
        ps_loaded_module_list: header.ps_loaded_module_list,
    };
    let mut pages = dump.physical_pages();
    let mut kernel = kernel::identify(&dump, &hints, Some(&mut pages), &ScanLimits::default())
        .with_context(|| {
            format!(
                "{}: cannot find the kernel (build {build}), so its symbols cannot be chosen",
                args.dump.display()
            )
        })?;
    let bar = ProgressBar::new();
    let opts = args
        .symbols
        .options(bar.as_ref().map(|b| b as &dyn DownloadProgress));
    let syms = load_kernel_symbols(kernel.image.codeview.as_ref(), Some(build), &opts)
        .and_then(|mut s| check_builtin_fits(&mut s, &kernel).map(|()| s))
        .map_err(|e| {
            anyhow!(
                "{}: kernel of Windows build {build} ({}): {e}\n{}",
                args.dump.display(),
                kernel
                    .image
                    .codeview
                    .as_ref()
                    .map(|cv| format!("{} {}", cv.pdb_name, cv.store_key))
                    .unwrap_or_else(|| "no RSDS record".into()),
                hint(&opts.symbol_path, &args.symbols, &args.dump)
            )
        })?;
    let mut warnings = syms.warnings.clone();
    warnings.extend(refine_kernel_identity(&dump, &mut kernel, &syms));
    Ok(report(&dump, &args.dump, build, kernel, &syms, warnings))
}

/// What to do about missing symbols.
fn hint(sp: &SymbolPath, args: &SymbolArgs, dump: &Path) -> String {
    let mut s = args.hint_for_dump(dump);
    if !args.offline && sp.servers().next().is_none() {
        s.push_str("; the symbol path names no symbol server");
    }
    s
}

fn report(
    dump: &CrashDump,
    path: &Path,
    build: u32,
    kernel: KernelIdentity,
    syms: &KernelSymbols,
    mut warnings: Vec<String>,
) -> SymbolsReport {
    let (layouts, globals, mut missing) = pool_symbols(syms, build, kernel.kern_base);
    let ex_pool_tag_tables_bound = syms.array_bound("ExPoolTagTables", 8);
    let system_va_regions = syms
        .field("_MI_VISIBLE_STATE", "SystemVaRegions")
        .ok()
        .map(|field| {
            let mut region_types: Vec<(i64, String)> = syms
                .enum_values("_MI_ASSIGNED_REGION_TYPES")
                .map(|m| m.iter().map(|(k, v)| (*v, k.clone())).collect())
                .unwrap_or_default();
            region_types.sort();
            RegionsReport {
                field,
                region_types,
            }
        });
    if system_va_regions.is_none() && build >= 14393 {
        missing.push("_MI_VISIBLE_STATE.SystemVaRegions".into());
    }
    let kldr = kldr_report(syms, &mut missing, &mut warnings);
    // Walk the module list with the symbols' layout when they have one.
    let layout = syms.kldr_layout().map(|(l, _)| l).unwrap_or(KLDR_BOOTSTRAP);
    let modules = match kernel.ps_loaded_module_list {
        Some(head) => {
            let list = kernel::walk_loaded_modules(dump, head, &layout, &WalkLimits::default());
            warnings.extend(list.warnings.iter().cloned());
            kernel::identify_modules(dump, &list)
        }
        None => {
            warnings.push("PsLoadedModuleList is unknown; modules not listed".into());
            Vec::new()
        }
    };
    if syms.uses_builtin() && syms.source().kind() != SourceKind::BuiltIn {
        let used: Vec<&str> = layouts
            .iter()
            .filter(|t| t.source == Some(SourceKind::BuiltIn))
            .map(|t| t.name.as_str())
            .chain(
                globals
                    .iter()
                    .filter(|g| g.source == SourceKind::BuiltIn)
                    .map(|g| g.name.as_str()),
            )
            .collect();
        if !used.is_empty() {
            warnings.push(format!(
                "the primary symbols lack {}; taken from the BUILT-IN table",
                used.join(", ")
            ));
        }
    }
    SymbolsReport {
        dump: path.to_path_buf(),
        build,
        sources: syms.layers().iter().map(|l| l.source.clone()).collect(),
        builtin_used: syms.source().kind() == SourceKind::BuiltIn,
        kernel,
        layouts,
        globals,
        ex_pool_tag_tables_bound,
        system_va_regions,
        kldr,
        modules,
        missing,
        warnings,
    }
}

/// The pool types' layouts and the pool globals (at their addresses under
/// `base`) as the symbols give them, and what they lack that the analysis
/// needs (_MI_SYSTEM_VA_ASSIGNMENT only from 1607 on).
fn pool_symbols(
    syms: &KernelSymbols,
    build: u32,
    base: KernelVa,
) -> (Vec<TypeReport>, Vec<GlobalReport>, Vec<String>) {
    let mut missing = Vec::new();
    let mut layouts = Vec::new();
    for (ty, _) in POOL_TYPES {
        match syms.type_layout(ty) {
            Some((t, src)) => layouts.push(TypeReport {
                name: (*ty).into(),
                size: Some(t.size),
                fields: t
                    .fields
                    .iter()
                    .filter_map(|f| Some((f.name.clone(), syms.field(ty, &f.name).ok()?)))
                    .collect(),
                source: Some(src),
            }),
            None => {
                if *ty != "_MI_SYSTEM_VA_ASSIGNMENT" || build >= 14393 {
                    missing.push(format!("type {ty}"));
                }
            }
        }
    }
    let mut globals = Vec::new();
    for (name, always) in POOL_GLOBALS {
        match syms.symbol(name) {
            Some(s) => globals.push(GlobalReport {
                name: (*name).into(),
                rva: s.rva,
                va: base.checked_add(s.rva).unwrap_or_default(),
                size: s.size,
                source: s.source,
            }),
            None if *always => missing.push(format!("symbol {name}")),
            None => {}
        }
    }
    (layouts, globals, missing)
}

/// The loaded-module entry's layout, checked against the bootstrap
/// offsets (differences are warnings).
fn kldr_report(
    syms: &KernelSymbols,
    missing: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<KldrReport> {
    match syms.kldr_layout() {
        Ok((l, ty)) => {
            let mism = syms
                .check_kldr_bootstrap(&KLDR_BOOTSTRAP)
                .unwrap_or_default();
            warnings.extend(mism.iter().cloned());
            Some(KldrReport {
                type_name: ty.into(),
                layout: l,
                bootstrap_mismatches: mism,
            })
        }
        Err(e) => {
            missing.push(format!("loaded-module entry layout ({e})"));
            None
        }
    }
}

fn field_text(f: &Field) -> String {
    let mut s = f.type_name.clone();
    if let Some(e) = &f.enum_name {
        s = format!("{e} ({s})");
    }
    if let Some(p) = &f.pointee {
        s = format!("pointer to {p}");
    }
    if let (Some(c), Some(es)) = (f.count, f.element_size) {
        s = format!("{s}[{c}] (element {es:#x})");
    }
    if let (Some(p), Some(l)) = (f.bit_position, f.bit_length) {
        s = format!("{s}, bits {p}..{} of a {}-byte unit", p + l, f.size);
    }
    s
}

pub fn render_text(r: &SymbolsReport) -> String {
    let mut out = String::new();
    if r.builtin_used {
        out.push_str(
            "*** NO PDB: THESE LAYOUTS COME FROM POOLDUMP'S BUILT-IN TABLE (see Warnings) ***\n\n",
        );
    }
    kernel_section(r).render(&mut out);

    out.push('\n');
    let mut s = Section::new("Symbols from");
    for (i, src) in r.sources.iter().enumerate() {
        s.row(if i == 0 { "Primary" } else { "Then" }, src.to_string());
    }
    s.render(&mut out);
    render_layouts(r, &mut out);
    if let Some(kl) = &r.kldr {
        out.push('\n');
        kldr_section(kl).render(&mut out);
    }

    if !r.modules.is_empty() {
        out.push('\n');
        out.push_str(&format!("Loaded modules ({})\n", r.modules.len()));
        ListTable::new(&r.modules)
            .left("Base", |m| m.base)
            .right("Size", |m| hex(u64::from(m.size)))
            .left("Name", |m| &m.name)
            .left("PDB", |m| match (&m.pdb, &m.error) {
                (Some(cv), _) => cv.pdb_name.clone(),
                (None, Some(e)) => format!("? ({e})"),
                (None, None) => "?".into(),
            })
            .left("Key", |m| m.pdb.as_ref().map_or("", |cv| &cv.store_key))
            .render(&mut out, 2);
    }

    push_list(
        &mut out,
        "\nMissing (the pool analysis needs these)\n",
        &r.missing,
    );
    push_list(&mut out, "\nWarnings\n", &r.warnings);
    out
}

/// nt's identity: where it is, its PDB, its image, the KDBG.
fn kernel_section(r: &SymbolsReport) -> Section {
    let k = &r.kernel;
    let mut s = Section::new("Kernel");
    s.row("Dump", r.dump.display().to_string());
    s.row("Windows build", r.build.to_string());
    s.row(
        "KernBase",
        format!("{} (found by {})", k.kern_base, k.found_by),
    );
    match &k.image.codeview {
        Some(cv) => {
            s.row("PDB", cv.pdb_name.clone());
            s.row("GUID / age", format!("{} / {}", cv.guid, cv.age));
            s.row("Symbol store key", cv.store_key.clone());
        }
        None => {
            s.row("PDB", "unknown (no RSDS record)");
        }
    }
    s.row(
        "Image",
        format!(
            "TimeDateStamp {:#010x}, SizeOfImage {:#x}, Machine {:#x}",
            k.image.time_date_stamp, k.image.size_of_image, k.image.machine
        ),
    );
    if let Some(kd) = &k.kdbg {
        s.row(
            "KDBG",
            format!(
                "{} (Size {:#x}{})",
                kd.va.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
                kd.size,
                if kd.was_encoded { ", was encoded" } else { "" }
            ),
        );
    }
    if let Some(h) = k.ps_loaded_module_list {
        s.row("PsLoadedModuleList", h.to_string());
    }
    s
}

/// The pool types' layouts, the globals and the region table, as read.
fn render_layouts(r: &SymbolsReport, out: &mut String) {
    for t in &r.layouts {
        out.push('\n');
        out.push_str(&format!(
            "{} (size {}, from {})\n",
            t.name,
            t.size.map(hex).unwrap_or_else(|| "?".into()),
            t.source.map(|s| s.to_string()).unwrap_or_default()
        ));
        ListTable::new(&t.fields)
            .right("Offset", |(_, f)| hex(f.offset))
            .left("Field", |(name, _)| name)
            .left("Type", |(_, f)| field_text(f))
            .render(out, 2);
    }

    out.push('\n');
    out.push_str("Globals\n");
    ListTable::new(&r.globals)
        .left("Name", |g| &g.name)
        .right("RVA", |g| hex(g.rva))
        .left("VA", |g| g.va)
        .right("Size", |g| g.size.map(hex).unwrap_or_default())
        .left("From", |g| &g.source)
        .render(out, 2);
    if let Some(b) = r.ex_pool_tag_tables_bound {
        out.push_str(&format!(
            "  ExPoolTagTables holds at most {b} per-processor tables\n"
        ));
    }

    if let Some(reg) = &r.system_va_regions {
        out.push('\n');
        out.push_str(&format!(
            "_MI_VISIBLE_STATE.SystemVaRegions at {} ({}, from {})\n",
            hex(reg.field.offset),
            field_text(&reg.field),
            reg.field.source
        ));
        for (v, n) in &reg.region_types {
            out.push_str(&format!("  [{v:>2}] {n}\n"));
        }
    }
}

/// The loaded-module entry's layout the module walk uses.
fn kldr_section(kl: &KldrReport) -> Section {
    let mut s = Section::new(format!("{} (module list walk)", kl.type_name));
    s.row(
        "InLoadOrderLinks",
        hex(kl.layout.in_load_order_links as u64),
    );
    s.row("DllBase", hex(kl.layout.dll_base as u64));
    s.row("EntryPoint", hex(kl.layout.entry_point as u64));
    s.row("SizeOfImage", hex(kl.layout.size_of_image as u64));
    s.row("FullDllName", hex(kl.layout.full_dll_name as u64));
    s.row("BaseDllName", hex(kl.layout.base_dll_name as u64));
    s.row(
        "Bootstrap offsets",
        if kl.bootstrap_mismatches.is_empty() {
            "match".to_string()
        } else {
            format!("{} differ (see Warnings)", kl.bootstrap_mismatches.len())
        },
    );
    s
}
