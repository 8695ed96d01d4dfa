//! `pooldump info`: what the dump (or live KDNET target) is, which kernel
//! it holds, and the loaded modules. Analysis ([`collect`],
//! [`collect_live`]) returns a typed report; the text and JSON renderers
//! only format it. A dump and a live target share the kernel and module
//! code path ([`kernel_and_modules`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use pooldump_core::dump::{CrashDump, DumpHeader, FileTime, MapCheck, PageLayout};
use pooldump_core::kernel::{
    self, BootHints, KLDR_BOOTSTRAP, KernelIdentity, ModuleList, ScanLimits, WalkLimits,
};
use pooldump_core::{KernelVa, Memory, Pfn, PhysAddr};
use serde::Serialize;

use crate::common::SourceArgs;
use crate::render::{ListTable, Section, hex, json_or_text, push_list};
use header::{bug_check_parameters, clock_rows, windows_build};

mod header;
mod small;

/// Show a dump's header, its kernel's identity and its loaded modules.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Everything `info` shows.
#[derive(Debug, Serialize)]
pub struct InfoReport {
    /// The dump file (absent for a live target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<DumpHeader>,
    /// The live KDNET target (absent for a dump).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveInfo>,
    /// nt's identity, when it was found.
    pub kernel: Option<KernelIdentity>,
    /// Why nt was not found.
    pub kernel_error: Option<String>,
    /// The loaded-module list, when its head is known.
    pub modules: Option<ModuleList>,
    /// A live target: what the KDNET link did (docs/kdnet.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kdnet: Option<crate::common::KdnetReport>,
}

#[derive(Debug, Serialize)]
pub struct FileInfo {
    pub path: PathBuf,
    pub size: u64,
    /// Pages whose data is in the file.
    pub pages: u64,
    /// kdmp-parser's physical-memory map beside pooldump's.
    pub map_check: MapCheck,
}

/// A live target, as its GetVersion reply and stop describe it.
#[derive(Debug, Serialize)]
pub struct LiveInfo {
    pub peer: String,
    pub build: u16,
    pub major_version: u16,
    pub processors: u32,
    /// The CPU that reported the stop.
    pub stopped_processor: u16,
    pub program_counter: KernelVa,
    pub kern_base: KernelVa,
    pub ps_loaded_module_list: KernelVa,
    pub debugger_data_list: KernelVa,
    pub kd_debugger_data_block: Option<KernelVa>,
    pub directory_table_base: PhysAddr,
}

pub fn run(args: &Args) -> Result<String> {
    // A small memory dump (DumpType 4) has a report of its own.
    if let (Some(dump), None) = (&args.source.dump, &args.source.kdnet)
        && let Some(small) = crate::common::open_small_dump(dump)?
    {
        let r = small::collect(&small);
        return Ok(json_or_text(args.json, &r, small::render_text)?);
    }
    let report = match (&args.source.dump, &args.source.kdnet) {
        (_, Some(spec)) => collect_live(spec, args.source.verbose)?,
        (Some(dump), None) => collect(dump)?,
        (None, None) => anyhow::bail!("name a DUMP or --kdnet SPEC"),
    };
    Ok(json_or_text(args.json, &report, render_text)?)
}

/// Open the dump and gather the report. Only opening the dump can fail;
/// a kernel that cannot be found is part of the report.
pub fn collect(path: &std::path::Path) -> Result<InfoReport> {
    let dump = CrashDump::open(path)?;
    let header = dump.header().clone();
    let hints = BootHints {
        kd_debugger_data_block: header.kd_debugger_data_block,
        ps_loaded_module_list: header.ps_loaded_module_list,
    };
    let mut pages = dump.physical_pages();
    let (kernel, kernel_error, modules) = kernel_and_modules(&dump, &hints, Some(&mut pages));
    Ok(InfoReport {
        file: Some(FileInfo {
            path: dump.path().to_path_buf(),
            size: dump.file_size(),
            pages: dump.page_count(),
            map_check: dump.check_with_kdmp_parser(),
        }),
        header: Some(header),
        live: None,
        kernel,
        kernel_error,
        modules,
        kdnet: None,
    })
}

/// Connect to a KDNET target, gather the report as for a dump, and let the
/// target run again.
pub fn collect_live(spec: &str, verbose: bool) -> Result<InfoReport> {
    let spec: pooldump_kdnet::KdnetSpec =
        spec.parse().with_context(|| format!("--kdnet {spec}"))?;
    let port = spec.port;
    let started = std::time::Instant::now();
    let live = pooldump_kdnet::Session::connect(spec.into())
        .with_context(|| format!("KDNET session on UDP port {port}"))?;
    let live = crate::common::LiveSource::new(live, verbose, started);
    let (kernel, kernel_error, modules) = kernel_and_modules(&*live, &live.boot_hints(), None);
    let v = live.version();
    let stop = live.stop_info()?;
    let info = LiveInfo {
        peer: live.peer().to_string(),
        build: v.minor,
        major_version: v.major,
        processors: stop.number_processors,
        stopped_processor: stop.processor,
        program_counter: KernelVa(stop.pc),
        kern_base: live.kern_base(),
        ps_loaded_module_list: live.ps_loaded_module_list(),
        debugger_data_list: KernelVa(v.debugger_data_list),
        kd_debugger_data_block: live.kdbg_va(),
        directory_table_base: live.kernel_dtb(),
    };
    live.resume().context("resuming the target")?;
    Ok(InfoReport {
        file: None,
        header: None,
        live: Some(info),
        kernel,
        kernel_error,
        modules,
        kdnet: Some(live.report()),
    })
}

/// Find nt and walk the loaded modules: the same for a dump and a live
/// target.
fn kernel_and_modules<M: Memory>(
    mem: &M,
    hints: &BootHints,
    pages: Option<&mut dyn Iterator<Item = (Pfn, &[u8])>>,
) -> (Option<KernelIdentity>, Option<String>, Option<ModuleList>) {
    let (kernel, kernel_error) = match kernel::identify(mem, hints, pages, &ScanLimits::default()) {
        Ok(k) => (Some(k), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let head = kernel
        .as_ref()
        .and_then(|k| k.ps_loaded_module_list)
        .or(Some(hints.ps_loaded_module_list).filter(|v| v.0 != 0));
    let modules =
        head.map(|h| kernel::walk_loaded_modules(mem, h, &KLDR_BOOTSTRAP, &WalkLimits::default()));
    (kernel, kernel_error, modules)
}

pub fn render_text(r: &InfoReport) -> String {
    let mut out = String::new();
    if let (Some(file), Some(h)) = (&r.file, &r.header) {
        render_dump(file, h, &mut out);
    }
    if let Some(l) = &r.live {
        render_live(l, &mut out);
    }
    render_kernel(r, &mut out);
    out
}

fn render_live(l: &LiveInfo, out: &mut String) {
    let mut s = Section::new("Live target (KDNET)");
    s.row("Peer", l.peer.clone());
    s.row(
        "Windows build",
        format!("{} (MajorVersion {:#x})", l.build, l.major_version),
    );
    s.row(
        "Processors",
        format!("{} (stopped on CPU {})", l.processors, l.stopped_processor),
    );
    s.rows(&[
        ("Stopped at", &l.program_counter),
        ("DirectoryTableBase", &l.directory_table_base),
        ("KernBase", &l.kern_base),
        ("PsLoadedModuleList", &l.ps_loaded_module_list),
        ("DebuggerDataList", &l.debugger_data_list),
    ]);
    s.row(
        "KdDebuggerDataBlock",
        l.kd_debugger_data_block
            .map_or_else(|| "unknown".to_string(), |v| v.to_string()),
    );
    s.render(out);
    out.push('\n');
}

fn render_dump(file: &FileInfo, h: &DumpHeader, out: &mut String) {
    let mut s = Section::new("Dump");
    s.row(
        "File",
        format!("{} ({} bytes)", file.path.display(), file.size),
    );
    let kind = match &h.layout {
        PageLayout::Runs { runs, .. } => format!("{} runs", runs.len()),
        PageLayout::Bitmap {
            kind,
            bitmap_offset,
            ..
        } => {
            format!(
                "'{}' bitmap at {bitmap_offset:#x}",
                format!("{kind:?}").to_uppercase()
            )
        }
        PageLayout::Rdmp { ranges, .. } => format!("{ranges} RDMP ranges"),
    };
    s.row(
        "Type",
        format!("{} (DumpType {}, {kind})", h.dump_type, h.dump_type.value()),
    );
    s.row("Windows build", windows_build(h.build(), h.major_version));
    s.row(
        "Page map",
        match &file.map_check {
            MapCheck::Same { runs } => {
                format!("{runs} runs; kdmp-parser reads the header the same way")
            }
            MapCheck::Differs(_) => {
                "kdmp-parser reads it differently (see the warnings)".to_string()
            }
            MapCheck::Rejected(_) => "kdmp-parser does not read it (see the warnings)".to_string(),
        },
    );
    clock_rows(
        &mut s,
        h.number_processors,
        &h.system_time,
        &h.system_up_time,
    );
    s.row(
        "Bugcheck",
        format!(
            "{:#010X} {}",
            h.bug_check.code,
            bug_check_parameters(h.bug_check.parameters)
        ),
    );
    s.rows(&[
        ("DirectoryTableBase", &h.directory_table_base),
        ("PfnDatabase", &h.pfn_database),
        ("PsLoadedModuleList", &h.ps_loaded_module_list),
        ("PsActiveProcessHead", &h.ps_active_process_head),
        ("KdDebuggerDataBlock", &h.kd_debugger_data_block),
    ]);
    s.row(
        "Context",
        format!(
            "Rip {}  Rsp {}",
            KernelVa(h.context_rip),
            KernelVa(h.context_rsp)
        ),
    );
    let missing = h.truncation.map_or(0, |t| t.missing_pages);
    s.row(
        "Pages",
        if missing == 0 {
            format!("{} in the file", file.pages)
        } else {
            format!("{} in the file, {missing} missing (truncated)", file.pages)
        },
    );
    if let Some(c) = &h.comment {
        s.row("Comment", c.clone());
    }
    if h.attributes != 0 {
        s.row("Attributes", dump_attributes(h.attributes));
    }
    s.render(out);
    out.push('\n');
}

/// DUMP_FILE_ATTRIBUTES with the names of its known bits, as WinDbg's
/// `DUMP_FILE_ATTRIBUTES` line shows them.
fn dump_attributes(v: u32) -> String {
    const NAMES: [&str; 10] = [
        "HiberCrash",
        "DumpDevicePowerOff",
        "InsufficientDumpfileSize",
        "KernelGeneratedTriageDump",
        "LiveDumpGeneratedDump",
        "DumpIsGeneratedOffline",
        "FilterDumpFile",
        "EarlyBootCrash",
        "EncryptedDumpData",
        "DecryptedDump",
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .enumerate()
        .filter(|&(bit, _)| v & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect();
    if names.is_empty() {
        format!("{v:#x}")
    } else {
        format!("{v:#x} {}", names.join(" "))
    }
}

fn render_kernel(r: &InfoReport, out: &mut String) {
    let mut s = Section::new("Kernel");
    match (&r.kernel, &r.kernel_error) {
        (Some(k), _) => {
            s.row(
                "KernBase",
                format!("{} (found by {})", k.kern_base, k.found_by),
            );
            let img = &k.image;
            s.row(
                "Image",
                format!(
                    "SizeOfImage {:#x}, Machine {:#x}",
                    img.size_of_image, img.machine
                ),
            );
            let ts = FileTime::from_unix_seconds(u64::from(img.time_date_stamp));
            s.row(
                "TimeDateStamp",
                format!("{:#010x} ({ts})", img.time_date_stamp),
            );
            match &img.codeview {
                Some(cv) => {
                    s.row("PDB", cv.pdb_name.clone());
                    s.row("GUID", cv.guid.to_string());
                    s.row("Age", cv.age.to_string());
                    s.row("Symbol store key", cv.store_key.clone());
                }
                None => {
                    s.row("PDB", "unknown (no RSDS record)");
                }
            }
            if let Some(kd) = &k.kdbg {
                let at = kd
                    .va
                    .map(|v| v.to_string())
                    .or(kd.pa.map(|p| format!("physical {p}")))
                    .unwrap_or_else(|| "?".into());
                s.row("KDBG", format!("{at} (Size {:#x})", kd.size));
            }
        }
        (None, Some(e)) => {
            s.row("Not found", e.clone());
        }
        (None, None) => {}
    }
    s.render(out);
    if let Some(list) = &r.modules {
        render_modules(list, out);
    }
    render_warnings(r, out);
}

/// The loaded-module list, as `lm` lists it.
fn render_modules(list: &ModuleList, out: &mut String) {
    out.push('\n');
    let state = if list.complete { "" } else { ", incomplete" };
    out.push_str(&format!(
        "Loaded modules ({}{state}; list head {})\n",
        list.modules.len(),
        list.head
    ));
    if list.modules.is_empty() {
        out.push_str("  none could be read\n");
    } else {
        ListTable::new(&list.modules)
            .left("Base", |m| m.base)
            .left("End", |m| m.base.wrapping_add(u64::from(m.size)))
            .right("Size", |m| hex(u64::from(m.size)))
            .left("Name", |m| &m.name)
            .left("Path", |m| m.full_name.as_deref().unwrap_or_default())
            .render(out, 2);
    }
}

/// Every warning of the header, the page map, the kernel and the module
/// list.
fn render_warnings(r: &InfoReport, out: &mut String) {
    let map_check = r.file.iter().filter_map(|f| match &f.map_check {
        MapCheck::Same { .. } => None,
        MapCheck::Differs(w) | MapCheck::Rejected(w) => Some(w),
    });
    let warnings: Vec<&String> = r
        .header
        .iter()
        .flat_map(|h| &h.warnings)
        .chain(map_check)
        .chain(
            r.kernel
                .iter()
                .flat_map(|k| k.warnings.iter().chain(&k.image.warnings)),
        )
        .chain(r.modules.iter().flat_map(|m| &m.warnings))
        .collect();
    push_list(out, "\nWarnings\n", warnings);
}
