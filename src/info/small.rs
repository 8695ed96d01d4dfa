//! `pooldump info` on a small memory dump (DumpType 4, C:\Windows\Minidump):
//! what the triage dump holds, as a typed report and its text. Kept apart
//! from info.rs, which reads kernel dumps and live targets.

use std::path::PathBuf;

use pooldump_core::KernelVa;
use pooldump_core::dump::triage::{Machine, TriageContext, TriageDump, TriageSummary};
use pooldump_core::symbols::{SymbolOptions, load_kernel_symbols};
use serde::Serialize;

use super::header::{bug_check_parameters, clock_rows, windows_build};
use crate::render::{ListTable, Section, hex, push_list};

/// What `info` shows for a small memory dump.
#[derive(Debug, Serialize)]
pub struct SmallDumpReport {
    pub path: PathBuf,
    pub size: u64,
    /// "small memory dump": says at once what kind of file this is.
    pub kind: &'static str,
    #[serde(flatten)]
    pub summary: TriageSummary,
    /// The crashing process's image name and id, read from the EPROCESS
    /// copy with nt's layout when pooldump has it for this build and
    /// machine (the built-in table covers x64 builds).
    pub process_name: Option<String>,
    pub process_id: Option<u64>,
    /// Why the name is not shown.
    pub process_name_note: Option<String>,
    /// The answer `analyze` and `find` give.
    pub pool: String,
}

pub fn collect(dump: &TriageDump) -> SmallDumpReport {
    let s = dump.summary().clone();
    let (process_name, process_id, process_name_note) = process_identity(dump, &s);
    SmallDumpReport {
        path: dump.path().to_path_buf(),
        size: dump.file_size(),
        kind: "small memory dump",
        pool: dump.no_pool_explanation(),
        summary: s,
        process_name,
        process_id,
        process_name_note,
    }
}

/// EPROCESS.ImageFileName and UniqueProcessId from the process copy. The
/// layout comes from nt's symbols: here the built-in table (matched by
/// build number), which holds x64 builds only. An ARM64 EPROCESS differs,
/// so no x64 layout is ever applied to it.
fn process_identity(
    dump: &TriageDump,
    s: &TriageSummary,
) -> (Option<String>, Option<u64>, Option<String>) {
    let Some(copy) = dump.process_copy() else {
        return (None, None, Some("the file holds no EPROCESS copy".into()));
    };
    if s.machine != Machine::X64 {
        return (
            None,
            None,
            Some(format!(
                "reading the EPROCESS copy needs nt's {} layout, which pooldump's built-in table does not have",
                s.machine
            )),
        );
    }
    let mut opts = SymbolOptions::local_store(std::path::Path::new(""));
    opts.symbol_path.elements.clear();
    opts.builtin = true;
    let Ok(syms) = load_kernel_symbols(None, Some(s.build), &opts) else {
        return (
            None,
            None,
            Some(format!(
                "pooldump's built-in table has no layout for build {}",
                s.build
            )),
        );
    };
    let name = syms.field("_EPROCESS", "ImageFileName").ok().and_then(|f| {
        let at = usize::try_from(f.offset).ok()?;
        let raw = copy.get(at..at.checked_add(15)?)?;
        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        Some(pooldump_core::bytes::escape_ascii(&raw[..end]))
    });
    let pid = syms
        .field("_EPROCESS", "UniqueProcessId")
        .ok()
        .and_then(|f| f.read_u64(copy));
    let note = Some(format!(
        "read with pooldump's built-in layout for build {} (matched by build number)",
        s.build
    ));
    (name, pid, note)
}

pub fn render_text(r: &SmallDumpReport) -> String {
    let s = &r.summary;
    let mut out = String::new();
    dump_section(r).render(&mut out);
    out.push('\n');
    thread_section(r).render(&mut out);
    out.push('\n');
    kernel_section(s).render(&mut out);
    out.push('\n');
    memory_section(s).render(&mut out);
    render_drivers(s, &mut out);
    push_list(&mut out, "\nWarnings\n", &s.warnings);
    out
}

/// The file, its header's facts, the bug check and the crash's context.
fn dump_section(r: &SmallDumpReport) -> Section {
    let s = &r.summary;
    let mut d = Section::new("Dump");
    d.row("File", format!("{} ({} bytes)", r.path.display(), r.size));
    d.row(
        "Type",
        format!(
            "small memory dump (DumpType 4, TRIAGE_DUMP64){}",
            if s.complete {
                ""
            } else {
                "; INCOMPLETE (no 'TRGD' marker)"
            }
        ),
    );
    d.row("Machine", s.machine.to_string());
    d.row("Windows build", windows_build(s.build, s.major_version));
    clock_rows(&mut d, s.processors, &s.system_time, &s.system_up_time);
    d.row(
        "Bug check",
        format!(
            "{:#010X} {} {}",
            s.bug_check.code,
            s.bug_check.name.unwrap_or("(unknown code)"),
            bug_check_parameters(s.bug_check.parameters)
        ),
    );
    if let Some(e) = &s.exception {
        d.row(
            "Exception",
            format!("{:#010X} at {} (flags {:#x})", e.code, e.address, e.flags),
        );
    }
    if let Some(c) = &s.context {
        d.row("Context", context_text(c));
    }
    if !s.fields.is_empty() {
        d.row("Parts", s.fields.join(", "));
    }
    d
}

/// The crashing thread and its process.
fn thread_section(r: &SmallDumpReport) -> Section {
    let s = &r.summary;
    let c = &s.crashing;
    let mut t = Section::new("Crashing thread");
    let opt = |v: Option<KernelVa>| v.map_or_else(|| "unknown".to_string(), |v| v.to_string());
    if let Some(n) = c.processor {
        t.row("Processor", n.to_string());
    }
    let state = match c.thread_state {
        Some(2) => " (Running)".to_string(),
        Some(x) => format!(" (state {x})"),
        None => String::new(),
    };
    t.row("Thread", format!("{}{state}", opt(c.thread)));
    let name = match (&r.process_name, r.process_id) {
        (Some(n), Some(pid)) => format!(" {n} (PID {pid})"),
        (Some(n), None) => format!(" {n}"),
        _ => String::new(),
    };
    t.row("Process", format!("{}{name}", opt(c.process)));
    if let Some(note) = &r.process_name_note {
        t.row("", note.clone());
    }
    if let (Some(l), Some(b)) = (c.stack_limit, c.stack_base) {
        t.row("Kernel stack", format!("{l} - {b}"));
    }
    if s.stack_bytes > 0 {
        t.row(
            "Stack captured",
            format!(
                "{} bytes from {} (TopOfStack)",
                s.stack_bytes, s.triage.top_of_stack
            ),
        );
    }
    t
}

/// nt as the KDBG copy and the driver list give it.
fn kernel_section(s: &TriageSummary) -> Section {
    let mut k = Section::new("Kernel (from the KDBG copy and the driver list)");
    match &s.kdbg {
        Some(kd) => {
            k.row("KernBase", kd.kern_base.to_string());
            k.row("KDBG", format!("{} (Size {:#x})", kd.va, kd.size));
            k.rows(&[
                ("PsLoadedModuleList", &kd.ps_loaded_module_list),
                ("PsActiveProcessHead", &kd.ps_active_process_head),
            ]);
            k.row(
                "PoolTrackTable",
                format!(
                    "{} (the table is not in a small memory dump)",
                    kd.pool_track_table
                ),
            );
            k.row("KiProcessorBlock", kd.ki_processor_block.to_string());
        }
        None => {
            k.row("KDBG", "no copy in the file");
        }
    }
    if let Some(nt) = s.drivers.first() {
        // Recent images carry a build hash in TimeDateStamp, not a date:
        // shown as the symbol-store key's first half, as WinDbg does.
        k.row(
            "nt image",
            format!(
                "{} TimeDateStamp {:#010x}, SizeOfImage {:#x}",
                nt.base_name(),
                nt.time_date_stamp,
                nt.size
            ),
        );
    }
    k.row("DirectoryTableBase", s.directory_table_base.to_string());
    k
}

/// What memory the file holds.
fn memory_section(s: &TriageSummary) -> Section {
    let mut m = Section::new("Memory in the file");
    m.row(
        "Captured",
        format!(
            "{} bytes of stack, {} triage data blocks ({} bytes){}",
            s.stack_bytes,
            s.data_blocks,
            s.data_block_bytes,
            if s.kdbg.is_some() {
                ", the KDBG copy"
            } else {
                ""
            }
        ),
    );
    m.row(
        "Pool",
        "none: a small memory dump holds no pool pages (see `pooldump analyze`)",
    );
    if !s.secondary_blobs.is_empty() {
        let bytes: u64 = s.secondary_blobs.iter().map(|b| u64::from(b.size)).sum();
        m.row(
            "Secondary data",
            format!(
                "{} blobs from bug check callbacks ({bytes} bytes)",
                s.secondary_blobs.len()
            ),
        );
    }
    m
}

/// The loaded and unloaded drivers' tables.
fn render_drivers(s: &TriageSummary, out: &mut String) {
    out.push_str(&format!("\nLoaded drivers ({})\n", s.drivers.len()));
    if s.drivers.is_empty() {
        out.push_str("  none in the file\n");
    } else {
        ListTable::new(&s.drivers)
            .left("Base", |dr| dr.base)
            .right("Size", |dr| hex(u64::from(dr.size)))
            .left("TimeDateStamp", |dr| format!("{:08x}", dr.time_date_stamp))
            .left("Name", |dr| dr.base_name())
            .left("Path", |dr| &dr.name)
            .render(out, 2);
    }

    out.push_str(&format!(
        "\nUnloaded drivers ({})\n",
        s.unloaded_drivers.len()
    ));
    if !s.unloaded_drivers.is_empty() {
        ListTable::new(&s.unloaded_drivers)
            .left("Start", |dr| dr.start)
            .left("End", |dr| dr.end)
            .left("Name", |dr| &dr.name)
            .render(out, 2);
    }
}

fn context_text(c: &TriageContext) -> String {
    match c {
        TriageContext::X64(x) => format!(
            "x64: Rip {}  Rsp {}  Rbp {}",
            KernelVa(x.rip),
            KernelVa(x.gpr[4]),
            KernelVa(x.gpr[5])
        ),
        TriageContext::Arm64(a) => format!(
            "ARM64: Pc {}  Sp {}  Fp {}  Lr {}",
            KernelVa(a.pc),
            KernelVa(a.sp),
            KernelVa(a.fp),
            KernelVa(a.lr)
        ),
    }
}
