//! `pooldump callsites`: every instruction of the loaded drivers (or of one
//! driver file) that passes a tag to a pool routine, named
//! `module!function+0xoff`, with the immediate's address, RVA and file
//! offset; `--patch` writes a relabelled copy of a driver file.
//! [`collect`] builds a typed report; the renderers only format it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pooldump_core::callsites::{
    DriverTagSite, ImageMemory, ModuleScan, TagSite, UnresolvedCall, driver_tag_sites, scan_module,
    tag_sites,
};
use pooldump_core::hittag::PoolCall;
use pooldump_core::relabel::{self, MapModule, RelabelMap, TagChooser};
use pooldump_core::stack::{StackWalker, Symbolizer, SymbolizerOptions};
use pooldump_core::symbols::{SymbolPath, SymbolPathElement};
use pooldump_core::{KernelVa, PoolTag};
use serde::Serialize;

use crate::common::{SourceArgs, SymbolArgs, open_source, release};
use crate::render::{ListTable, json_or_text, push_list};

/// List the instructions that pass a tag to a pool routine.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The crash dump (MEMORY.DMP): every loaded driver's code is read
    /// from it.
    #[arg(
        value_name = "DUMP",
        required_unless_present_any = ["kdnet", "image"],
        conflicts_with_all = ["kdnet", "image"]
    )]
    pub dump: Option<PathBuf>,
    /// A live target over KDNET (`port=50000,key=a.b.c.d`): broken into,
    /// read, resumed.
    #[arg(
        long,
        value_name = "SPEC",
        conflicts_with = "image",
        allow_hyphen_values = true
    )]
    pub kdnet: Option<String>,
    /// A driver file instead (its sections mapped as the loader maps them).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// The tag to look for (`Leak`, `0x6b61654c`); may be repeated. Without
    /// it, every tag passed to a pool routine is listed.
    #[arg(short, long = "tag", value_name = "TAG")]
    pub tags: Vec<PoolTag>,
    /// Only these modules (`leakydrv.sys` or `leakydrv`); may be repeated.
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// With --image and one --tag: write a copy of the driver with each
    /// allocation site's tag replaced by a fresh one (and each free site's
    /// by 0), its PE checksum recomputed, and the map beside it as
    /// OUT.relabel.json. The copy's Authenticode signature is broken.
    #[arg(long, value_name = "OUT", requires = "image")]
    pub patch: Option<PathBuf>,
    /// A pooltag.txt whose tags the fresh tags must avoid (with --patch).
    #[arg(long, value_name = "FILE")]
    pub pooltag: Option<PathBuf>,
    #[command(flatten)]
    pub symbols: SymbolArgs,
    /// Print JSON (schema pooldump.callsites/1, docs/relabel.md).
    #[arg(long)]
    pub json: bool,
}

/// The report, also the JSON document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    /// The dump, the KDNET peer or the image file.
    pub source: String,
    pub tags: Vec<PoolTag>,
    pub modules: Vec<ModuleRow>,
    pub sites: Vec<TagSite>,
    /// Pool calls whose tag could not be followed (they may pass the tag).
    pub unresolved: Vec<UnresolvedCall>,
    /// KMDF framework calls that pass PoolTag 0: the driver's own tag.
    pub driver_tag_sites: Vec<DriverTagSite>,
    pub patch: Option<PatchInfo>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ModuleRow {
    pub name: String,
    pub base: KernelVa,
    pub time_date_stamp: Option<u32>,
    pub size_of_image: Option<u32>,
    pub code_bytes: u64,
    pub unreadable_pages: u64,
    pub pool_calls: usize,
    /// A KMDF driver's `WdfDriverGlobals` and its own tag, where found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmdf_globals: Option<KernelVa>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_pool_tag: Option<PoolTag>,
}

#[derive(Debug, Serialize)]
pub struct PatchInfo {
    pub output: PathBuf,
    pub map: PathBuf,
    pub sites: usize,
    pub old_checksum: u32,
    pub new_checksum: u32,
    pub was_signed: bool,
    pub relabel: RelabelMap,
}

pub fn run(args: &Args) -> Result<String> {
    let r = collect(args)?;
    Ok(json_or_text(args.json, &r, render_text)?)
}

fn symbolizer<'a>(sym: &SymbolArgs, extra_dir: Option<&Path>) -> Symbolizer<'a> {
    let o = sym.options(None);
    let mut path: SymbolPath = o.symbol_path;
    if let Some(d) = extra_dir {
        // A driver's PDB usually sits beside it: look there first.
        path.elements
            .insert(0, SymbolPathElement::Directory(d.to_path_buf()));
    }
    Symbolizer::new(SymbolizerOptions {
        symbol_path: path,
        fetch: o.fetch,
        pdb_files: sym.pdb.iter().cloned().collect(),
    })
}

pub fn collect(args: &Args) -> Result<Report> {
    if args.patch.is_some() && args.tags.len() != 1 {
        bail!("--patch relabels one tag: name it with --tag");
    }
    if let Some(path) = &args.image {
        let img = ImageMemory::open(path)?;
        let mut walker = StackWalker::from_modules(vec![img.module()]);
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let mut names = symbolizer(&args.symbols, Some(dir.unwrap_or(Path::new("."))));
        let scan = scan_module(&mut walker, &img, 0)
            .with_context(|| format!("{}: reading its headers", path.display()))?;
        let scans = vec![scan];
        let (sites, unresolved) = tag_sites(&scans, &args.tags, &mut walker, &mut names, &img);
        let driver_sites = driver_tag_sites(&scans, &args.tags, &mut walker, &mut names, &img);
        let mut notes: Vec<String> = scans.iter().flat_map(|s| s.notes.clone()).collect();
        notes.extend(names.notes().iter().cloned());
        let patch = match &args.patch {
            Some(out) => Some(write_patch(args, path, out, &img, &scans, &sites)?),
            None => None,
        };
        return Ok(report(
            path.display().to_string(),
            args,
            &scans,
            Found {
                sites,
                unresolved,
                driver_tag_sites: driver_sites,
            },
            patch,
            notes,
        ));
    }
    let src = SourceArgs {
        dump: args.dump.clone(),
        kdnet: args.kdnet.clone(),
        verbose: false,
    };
    let (target, meta) = open_source(&src, &args.symbols)?;
    let result = (|| {
        let mut names = symbolizer(&args.symbols, None);
        let Some(found) = target.call_sites(&args.tags, &args.modules, &mut names) else {
            bail!(
                "{}: the loaded-module list could not be read, so there are no drivers to disassemble",
                meta.name
            );
        };
        if found.scans.is_empty() && !args.modules.is_empty() {
            bail!(
                "{}: no loaded module is named {}",
                meta.name,
                args.modules.join(", ")
            );
        }
        let mut notes: Vec<String> = target.warnings.iter().map(|w| w.to_string()).collect();
        notes.extend(found.notes);
        Ok(report(
            meta.name.clone(),
            args,
            &found.scans,
            Found {
                sites: found.sites,
                unresolved: found.unresolved,
                driver_tag_sites: found.driver_tag_sites,
            },
            None,
            notes,
        ))
    })();
    // Everything is read: let a live target run again, whatever happened.
    release(&meta)?;
    result
}

/// What the scans found for the tags asked for.
struct Found {
    sites: Vec<TagSite>,
    unresolved: Vec<UnresolvedCall>,
    driver_tag_sites: Vec<DriverTagSite>,
}

fn report(
    source: String,
    args: &Args,
    scans: &[ModuleScan],
    found: Found,
    patch: Option<PatchInfo>,
    notes: Vec<String>,
) -> Report {
    Report {
        schema: "pooldump.callsites/1",
        source,
        tags: args.tags.clone(),
        modules: scans
            .iter()
            .map(|s| ModuleRow {
                name: s.module.clone(),
                base: s.base,
                time_date_stamp: s.time_date_stamp,
                size_of_image: s.size_of_image,
                code_bytes: s.code_bytes,
                unreadable_pages: s.unreadable_pages,
                pool_calls: s.calls.len(),
                kmdf_globals: s.kmdf_globals,
                driver_pool_tag: s.driver_pool_tag,
            })
            .collect(),
        sites: found.sites,
        unresolved: found.unresolved,
        driver_tag_sites: found.driver_tag_sites,
        patch,
        notes,
    }
}

/// `--patch OUT`: the relabelled copy and its map.
fn write_patch(
    args: &Args,
    input: &Path,
    out: &Path,
    img: &ImageMemory,
    scans: &[ModuleScan],
    sites: &[TagSite],
) -> Result<PatchInfo> {
    // Never the original: not the same path, not another name for it.
    let same = out == input
        || matches!(
            (std::fs::canonicalize(out), std::fs::canonicalize(input)),
            (Ok(a), Ok(b)) if a == b
        );
    if same {
        bail!(
            "--patch {} is the input file: pooldump never modifies the original driver; name another output",
            out.display()
        );
    }
    let tag = args.tags[0];
    let db = match &args.pooltag {
        Some(p) => Some(crate::common::load_pooltag(p)?),
        None => None,
    };
    // The fresh tags avoid every tag the driver already uses.
    let taken: Vec<PoolTag> = scans
        .iter()
        .flat_map(|s| s.calls.iter())
        .flat_map(|c| c.tags.iter().flatten().map(|v| v.tag))
        .collect();
    let mut chooser = TagChooser::new(taken, db.as_ref());
    let module = MapModule {
        name: img.name().to_string(),
        base: None,
        time_date_stamp: img.image().time_date_stamp(),
        size_of_image: img.image().size_of_image(),
    };
    let map = relabel::plan(tag, None, &[module], sites, &mut chooser)
        .with_context(|| format!("{}: relabelling {tag}", input.display()))?;
    let p = relabel::patch_image(img.file_bytes(), &map)
        .with_context(|| format!("{}: patching", input.display()))?;
    std::fs::write(out, &p.bytes).with_context(|| format!("{}: writing", out.display()))?;
    let map_path = PathBuf::from(format!("{}.relabel.json", out.display()));
    std::fs::write(&map_path, map.to_json())
        .with_context(|| format!("{}: writing the map", map_path.display()))?;
    Ok(PatchInfo {
        output: out.to_path_buf(),
        map: map_path,
        sites: p.patched,
        old_checksum: p.old_checksum,
        new_checksum: p.new_checksum,
        was_signed: p.was_signed,
        relabel: map,
    })
}

/// A file offset as the tables show it: hex, or `-` where there is none.
fn file_offset(o: Option<u32>) -> String {
    o.map_or_else(|| "-".into(), |o| format!("{o:#x}"))
}

/// What `--patch` wrote: the copy, the sites relabelled, and what Windows
/// needs before it loads the copy.
fn render_patch(p: &PatchInfo, out: &mut String) {
    out.push_str(&format!(
        "\nWrote {} ({} site(s) patched, PE checksum {:#010x} -> {:#010x}) and its map {}:\n",
        p.output.display(),
        p.sites,
        p.old_checksum,
        p.new_checksum,
        p.map.display()
    ));
    ListTable::new(&p.relabel.sites)
        .left("Kind", |s| s.kind.as_str())
        .left("Site", |s| &s.site)
        .left("Old", |s| s.old_tag)
        .left("New", |s| {
            if s.kind == PoolCall::Free {
                "0 (as ExFreePool passes)".into()
            } else {
                s.new_tag.to_string()
            }
        })
        .right("File", |s| file_offset(s.file_offset))
        .render(out, 1);
    if p.was_signed {
        out.push_str(
            "\n*** WARNING: the original is Authenticode-signed; the copy's signature is now BROKEN. ***\n*** Windows will not load it until you re-sign it (signtool with a test certificate) and enable test signing (bcdedit /set testsigning on). ***\n",
        );
    } else {
        out.push_str(
            "\n*** WARNING: the copy is not signed (nor was the original): Windows x64 loads it only with test signing on (bcdedit /set testsigning on) after you sign it with a test certificate. ***\n",
        );
    }
}

fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let tags = if r.tags.is_empty() {
        "every tag".to_string()
    } else {
        r.tags
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let code: u64 = r.modules.iter().map(|m| m.code_bytes).sum();
    let (a, f) = (
        r.sites.iter().filter(|s| s.kind == PoolCall::Alloc).count(),
        r.sites.iter().filter(|s| s.kind == PoolCall::Free).count(),
    );
    out.push_str(&format!(
        "{}: {} module(s), {} bytes of code disassembled; {tags}: {} site(s), {a} alloc, {f} free\n\n",
        r.source,
        r.modules.len(),
        code,
        r.sites.len()
    ));
    if r.sites.is_empty() {
        out.push_str(" No instruction passes these tags to a pool routine as an immediate.\n");
    } else {
        let via = |s: &TagSite| {
            let tail = if s.tail_call { " (tail jmp)" } else { "" };
            format!("{}{tail}", s.via)
        };
        let tag = |s: &TagSite| {
            let mut tag = s.tag.to_string();
            if !s.alternatives.is_empty() {
                let alt: Vec<String> = s.alternatives.iter().map(|t| t.to_string()).collect();
                tag.push_str(&format!(" (or {})", alt.join(", ")));
            }
            tag
        };
        ListTable::new(&r.sites)
            .left("Kind", |s| s.kind.as_str())
            .left("Site", |s| &s.site)
            .left("Tag", tag)
            .left("Routine", |s| &s.routine)
            .left("Via", via)
            .left("Immediate", |s| s.immediate)
            .right("RVA", |s| format!("{:#x}", s.immediate_rva))
            .right("File", |s| file_offset(s.file_offset))
            .left("Call", |s| s.call)
            .render(&mut out, 1);
    }
    if !r.unresolved.is_empty() {
        out.push_str(&format!(
            "\n{} pool call(s) pass a tag the analysis could not follow (loaded from memory, or from too many places); they may pass {tags}:\n",
            r.unresolved.len()
        ));
        ListTable::new(&r.unresolved)
            .left("Kind", |u| u.kind.as_str())
            .left("Site", |u| &u.site)
            .left("Routine", |u| &u.routine)
            .left("Call", |u| u.call)
            .render(&mut out, 1);
    }
    if !r.driver_tag_sites.is_empty() {
        out.push_str(&format!(
            "\n{} KMDF framework call(s) pass PoolTag 0, so the framework allocates with the driver's own tag (WDF_DRIVER_GLOBALS.DriverTag, read through the driver's WdfDriverGlobals); no immediate holds it, so --patch and relabel cannot change it (hittag counts what these calls allocate):\n",
            r.driver_tag_sites.len()
        ));
        ListTable::new(&r.driver_tag_sites)
            .left("Kind", |s| s.call.kind.as_str())
            .left("Site", |s| &s.site)
            .left("Tag", |s| s.tag)
            .left("Routine", |s| &s.call.routine)
            .left("Via", |s| &s.call.via)
            .left("Call", |s| s.call.call)
            .left("WdfDriverGlobals", |s| s.globals)
            .render(&mut out, 1);
    }
    if let Some(p) = &r.patch {
        render_patch(p, &mut out);
    }
    push_list(&mut out, "\nNotes:\n", &r.notes);
    out
}
