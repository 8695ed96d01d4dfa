//! Reading a small memory dump: the DUMP_HEADER64 fields it shares with
//! kernel dumps, the TRIAGE_DUMP64 header, and each section it points at
//! (`ranges.rs` the captured memory and the structure copies, `drivers.rs`
//! the lists), every count and offset checked against the file.

use crate::addr::{KernelVa, PhysAddr};
use crate::bytes::{Le, escape_ascii};
use crate::dump::HeaderError;
use crate::dump::bugcheck::bugcheck_name;
use crate::dump::header::{HEADER_SIZE, off};
use crate::dump::time::{FileTime, UpTime};

use super::drivers::{parse_blobs, parse_drivers, parse_unloaded};
use super::format::{DUMP_TYPE_TRIAGE, Fields, MACHINE_AMD64, MACHINE_ARM64, TRIAGE_VALID, toff};
use super::ranges::{Captured, captured, copies};
use super::summary::{
    CapturedRange, ExceptionRecord, Machine, NamedBugCheck, TriageContext, TriageHeader,
    TriageSummary,
};

/// What [`parse`] found: the summary, the readable ranges by address, and
/// where the PRCB, process and thread copies are in the file.
pub(super) struct Parsed {
    pub summary: TriageSummary,
    pub ranges: Vec<CapturedRange>,
    pub prcb: Option<(usize, usize)>,
    pub process: Option<(usize, usize)>,
    pub thread: Option<(usize, usize)>,
}

fn bad(msg: impl Into<String>) -> HeaderError {
    HeaderError::BadTriage(msg.into())
}

/// Parse a small memory dump whose complete contents are `file`.
pub(super) fn parse(file: &[u8]) -> Result<Parsed, HeaderError> {
    let (machine, th) = read_header(file)?;
    let b = Le(file);
    let u32_at = |o: usize| b.u32(o).unwrap_or(0);
    let u64_at = |o: usize| b.u64(o).unwrap_or(0);
    let fields = Fields::of(u32_at(off::MINIDUMP_FIELDS));
    let mut warnings = Vec::new();
    let complete = completeness(file, &th, &mut warnings);

    let bug_code = u32_at(off::BUGCHECK_CODE);
    let mut params = [0u64; 4];
    for (i, p) in params.iter_mut().enumerate() {
        *p = u64_at(off::BUGCHECK_PARAMETERS + 8 * i);
    }
    let exception = exception_record(file, &th, &fields);
    let context = crash_context(file, &th, machine, &fields, &mut warnings);
    let kdbg_va = KernelVa(u64_at(off::KD_DEBUGGER_DATA_BLOCK));
    let Captured {
        ranges,
        kdbg,
        stack_bytes,
        data_blocks,
        data_block_bytes,
    } = captured(file, &th, kdbg_va, &fields, &mut warnings);
    let (prcb, process, thread, crashing) = copies(file, &th, &fields, kdbg.as_ref());
    let drivers = if th.driver_list_offset != 0 && fields.has(0x40) {
        parse_drivers(file, &th, &mut warnings)
    } else {
        Vec::new()
    };
    let unloaded_drivers = match th.unloaded_drivers_offset {
        0 => Vec::new(),
        at => parse_unloaded(file, at as usize, &mut warnings),
    };
    let secondary_blobs = parse_blobs(file, th.size_of_dump as usize, &mut warnings);

    let summary = TriageSummary {
        machine,
        major_version: u32_at(off::MAJOR_VERSION),
        build: u32_at(off::MINOR_VERSION),
        processors: u32_at(off::NUMBER_PROCESSORS),
        bug_check: NamedBugCheck {
            code: bug_code,
            name: bugcheck_name(bug_code),
            parameters: params,
        },
        directory_table_base: PhysAddr(u64_at(off::DIRECTORY_TABLE_BASE)),
        pfn_database: KernelVa(u64_at(off::PFN_DATABASE)),
        ps_loaded_module_list: KernelVa(u64_at(off::PS_LOADED_MODULE_LIST)),
        ps_active_process_head: KernelVa(u64_at(off::PS_ACTIVE_PROCESS_HEAD)),
        kd_debugger_data_block: kdbg_va,
        system_time: FileTime(u64_at(off::SYSTEM_TIME)),
        system_up_time: UpTime(u64_at(off::SYSTEM_UP_TIME)),
        product_type: u32_at(off::PRODUCT_TYPE),
        suite_mask: u32_at(off::SUITE_MASK),
        required_dump_space: u64_at(off::REQUIRED_DUMP_SPACE),
        fields: fields.names(&th),
        fields_raw: fields.raw,
        complete,
        triage: th,
        exception,
        context,
        crashing,
        drivers,
        unloaded_drivers,
        kdbg,
        stack_bytes,
        data_blocks,
        data_block_bytes,
        secondary_blobs,
        warnings,
    };
    Ok(Parsed {
        summary,
        ranges,
        prcb,
        process,
        thread,
    })
}

/// The machine and the TRIAGE_DUMP64 header, once the DUMP_HEADER64 says
/// this is a small memory dump and the header's size fields fit together.
fn read_header(file: &[u8]) -> Result<(Machine, TriageHeader), HeaderError> {
    let machine = check_header(file)?;
    let th = triage_header(file);
    // Every writer seen (the WRK's and Windows 11's) puts the 'TRGD'
    // marker in the last 4 bytes of SizeOfDump: a header that breaks this
    // is not a TRIAGE_DUMP64 (a kernel dump whose DumpType was damaged).
    if th.valid_offset.checked_add(4) != Some(th.size_of_dump)
        || (th.size_of_dump as usize) < HEADER_SIZE + toff::SIZE
    {
        return Err(bad(format!(
            "SizeOfDump {:#x} and ValidOffset {:#x} do not fit together (ValidOffset is SizeOfDump - 4)",
            th.size_of_dump, th.valid_offset
        )));
    }
    Ok((machine, th))
}

/// Whether the writer finished ('TRGD' at ValidOffset); a missing marker
/// or a file shorter than SizeOfDump is a warning.
fn completeness(file: &[u8], th: &TriageHeader, warnings: &mut Vec<String>) -> bool {
    let len = file.len();
    if (th.size_of_dump as usize) > len {
        warnings.push(format!(
            "SizeOfDump is {} bytes but the file is {len}: the dump was cut short",
            th.size_of_dump
        ));
    }
    let complete = Le(file).u32(th.valid_offset as usize) == Some(TRIAGE_VALID);
    if !complete {
        warnings.push(format!(
            "no 'TRGD' marker at ValidOffset {:#x}: the writer may not have finished",
            th.valid_offset
        ));
    }
    complete
}

/// The DUMP_HEADER64 of a small memory dump: the signature, room for the
/// TRIAGE_DUMP64 header, DumpType 4 and an x64 or ARM64 machine.
fn check_header(file: &[u8]) -> Result<Machine, HeaderError> {
    let b = Le(file);
    let len = file.len();
    if !file.starts_with(b"PAGEDU64") {
        return Err(HeaderError::BadSignature {
            found: escape_ascii(file.get(..8).unwrap_or(file)),
        });
    }
    if len < HEADER_SIZE + toff::SIZE {
        return Err(bad(format!(
            "the file is {len} bytes and ends before its TRIAGE_DUMP64 header (0x2000-0x2080)"
        )));
    }
    let u32_at = |o: usize| b.u32(o).unwrap_or(0);
    let dump_type = u32_at(off::DUMP_TYPE);
    if dump_type != DUMP_TYPE_TRIAGE {
        return Err(bad(format!("DumpType is {dump_type}, not 4")));
    }
    match u32_at(off::MACHINE_IMAGE_TYPE) {
        MACHINE_AMD64 => Ok(Machine::X64),
        MACHINE_ARM64 => Ok(Machine::Arm64),
        m => Err(HeaderError::UnsupportedMachine {
            value: m,
            name: "neither x64 nor ARM64",
        }),
    }
}

/// The TRIAGE_DUMP64 header at 0x2000, as the file states it.
fn triage_header(file: &[u8]) -> TriageHeader {
    let b = Le(file);
    let t = HEADER_SIZE;
    let tu32 = |o: usize| b.u32(t + o).unwrap_or(0);
    let tu64 = |o: usize| b.u64(t + o).unwrap_or(0);
    TriageHeader {
        service_pack_build: tu32(toff::SERVICE_PACK_BUILD),
        size_of_dump: tu32(toff::SIZE_OF_DUMP),
        valid_offset: tu32(toff::VALID_OFFSET),
        context_offset: tu32(toff::CONTEXT_OFFSET),
        exception_offset: tu32(toff::EXCEPTION_OFFSET),
        mm_offset: tu32(toff::MM_OFFSET),
        unloaded_drivers_offset: tu32(toff::UNLOADED_DRIVERS_OFFSET),
        prcb_offset: tu32(toff::PRCB_OFFSET),
        process_offset: tu32(toff::PROCESS_OFFSET),
        thread_offset: tu32(toff::THREAD_OFFSET),
        call_stack_offset: tu32(toff::CALL_STACK_OFFSET),
        size_of_call_stack: tu32(toff::SIZE_OF_CALL_STACK),
        driver_list_offset: tu32(toff::DRIVER_LIST_OFFSET),
        driver_count: tu32(toff::DRIVER_COUNT),
        string_pool_offset: tu32(toff::STRING_POOL_OFFSET),
        string_pool_size: tu32(toff::STRING_POOL_SIZE),
        broken_driver_offset: tu32(toff::BROKEN_DRIVER_OFFSET),
        triage_options: tu32(toff::TRIAGE_OPTIONS),
        top_of_stack: KernelVa(tu64(toff::TOP_OF_STACK)),
        data_page_address: KernelVa(tu64(toff::DATA_PAGE_ADDRESS)),
        data_page_offset: tu32(toff::DATA_PAGE_OFFSET),
        data_page_size: tu32(toff::DATA_PAGE_SIZE),
        debugger_data_offset: tu32(toff::DEBUGGER_DATA_OFFSET),
        debugger_data_size: tu32(toff::DEBUGGER_DATA_SIZE),
        data_blocks_offset: tu32(toff::DATA_BLOCKS_OFFSET),
        data_blocks_count: tu32(toff::DATA_BLOCKS_COUNT),
    }
}

/// The exception record: in the header on every writer seen.
fn exception_record(file: &[u8], th: &TriageHeader, fields: &Fields) -> Option<ExceptionRecord> {
    (th.exception_offset != 0 && fields.has(0x2))
        .then(|| {
            let e = Le(file.get(th.exception_offset as usize..)?);
            let n = e.u32(0x18)?.min(15) as usize;
            Some(ExceptionRecord {
                code: e.u32(0)?,
                flags: e.u32(4)?,
                address: KernelVa(e.u64(0x10)?),
                parameters: (0..n).filter_map(|i| e.u64(0x20 + 8 * i)).collect(),
            })
        })
        .flatten()
}

/// The crash CONTEXT: in the header on every writer seen.
fn crash_context(
    file: &[u8],
    th: &TriageHeader,
    machine: Machine,
    fields: &Fields,
    warnings: &mut Vec<String>,
) -> Option<TriageContext> {
    let context = (th.context_offset != 0 && fields.has(0x1))
        .then(|| {
            let at = th.context_offset as usize;
            let c = file.get(at..at.checked_add(TriageContext::size(machine))?)?;
            TriageContext::parse(machine, Le(c))
        })
        .flatten();
    if th.context_offset != 0 && fields.has(0x1) && context.is_none() {
        warnings.push(format!(
            "ContextOffset {:#x} does not leave room for a CONTEXT record",
            th.context_offset
        ));
    }
    context
}
