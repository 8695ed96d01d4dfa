//! The memory a small dump captures, readable at its addresses (the
//! crashing thread's stack, the KDBG copy, triage data blocks, the data
//! page), and the copies of the crashing processor's KPRCB and the
//! crashing thread's ETHREAD and EPROCESS, read through the offsets the
//! kernel publishes in its KDBG.

use crate::addr::KernelVa;
use crate::bytes::Le;
use crate::dump::header::HEADER_SIZE;

use super::format::{DATA_BLOCK_SIZE, Fields, MAX_CALL_STACK, toff};
use super::summary::{CapturedRange, CrashingThread, KdbgCopy, KdbgOffsets, TriageHeader};

/// The captured memory: the ranges by address, what the KDBG copy says,
/// and how much stack and data-block memory there is.
pub(super) struct Captured {
    pub ranges: Vec<CapturedRange>,
    pub kdbg: Option<KdbgCopy>,
    pub stack_bytes: u64,
    pub data_blocks: u64,
    pub data_block_bytes: u64,
}

/// Everything readable at a virtual address, sorted by address.
pub(super) fn captured(
    file: &[u8],
    th: &TriageHeader,
    kdbg_va: KernelVa,
    fields: &Fields,
    warnings: &mut Vec<String>,
) -> Captured {
    let len = file.len();
    let mut ranges = Vec::new();
    let stack_bytes = stack_range(th, len, fields, &mut ranges, warnings);
    let kdbg = kdbg_range(file, th, kdbg_va, fields, &mut ranges, warnings);
    let (data_blocks, data_block_bytes) =
        data_block_ranges(file, th, fields, &mut ranges, warnings);
    ranges.extend(data_page_range(th, len, fields));
    ranges.sort_by_key(|r| (r.va.0, r.file_offset));
    Captured {
        ranges,
        kdbg,
        stack_bytes,
        data_blocks,
        data_block_bytes,
    }
}

/// Where the KPRCB, EPROCESS and ETHREAD copies are (offset, length), and
/// the crashing thread they describe.
pub(super) type Copies = (
    Option<(usize, usize)>,
    Option<(usize, usize)>,
    Option<(usize, usize)>,
    CrashingThread,
);

/// The copies of the PRCB, process and thread, each running to the next
/// section and capped by the size KDBG gives.
pub(super) fn copies(
    file: &[u8],
    th: &TriageHeader,
    fields: &Fields,
    kdbg: Option<&KdbgCopy>,
) -> Copies {
    let len = file.len();
    let starts = section_starts(th, len);
    let section = |at, cap, bit| section(&starts, len, fields, at, cap, bit);
    let offs = kdbg.map(|k| k.offsets).unwrap_or_default();
    let prcb = section(th.prcb_offset, Some(offs.size_prcb), 0x4);
    let process = section(th.process_offset, Some(offs.size_eprocess), 0x8);
    let thread = section(th.thread_offset, Some(offs.size_ethread), 0x10);
    let crashing = crashing_thread(file, prcb, process, thread, &offs, kdbg.is_some());
    (prcb, process, thread, crashing)
}

/// Section boundaries: each section runs to the next one's start.
fn section_starts(th: &TriageHeader, len: usize) -> Vec<usize> {
    let mut v: Vec<usize> = [
        th.mm_offset,
        th.unloaded_drivers_offset,
        th.prcb_offset,
        th.process_offset,
        th.thread_offset,
        th.call_stack_offset,
        th.driver_list_offset,
        th.string_pool_offset,
        th.debugger_data_offset,
        th.data_blocks_offset,
        th.data_page_offset,
        th.size_of_dump,
    ]
    .iter()
    .map(|&o| o as usize)
    .filter(|&o| o >= HEADER_SIZE && o <= len)
    .collect();
    v.push(len);
    v.sort_unstable();
    v.dedup();
    v
}

/// The section at `at` (if the writer filled part `bit`): up to the next
/// section's start, and at most `cap` bytes when KDBG gives a size.
fn section(
    starts: &[usize],
    len: usize,
    fields: &Fields,
    at: u32,
    cap: Option<u16>,
    bit: u32,
) -> Option<(usize, usize)> {
    let at = at as usize;
    if at < HEADER_SIZE + toff::SIZE || at >= len || !fields.has(bit) {
        return None;
    }
    let next = *starts.iter().find(|&&s| s > at)?;
    let mut n = next - at;
    if let Some(c) = cap.filter(|&c| c > 0) {
        n = n.min(c as usize);
    }
    Some((at, n))
}

/// The call stack: TopOfStack up, SizeOfCallStack bytes. Returns its size.
fn stack_range(
    th: &TriageHeader,
    len: usize,
    fields: &Fields,
    ranges: &mut Vec<CapturedRange>,
    warnings: &mut Vec<String>,
) -> u64 {
    let mut stack_bytes = 0;
    if th.call_stack_offset != 0 && th.size_of_call_stack != 0 && fields.has(0x20) {
        let at = th.call_stack_offset as usize;
        let n = th.size_of_call_stack;
        if n > MAX_CALL_STACK || at.checked_add(n as usize).is_none_or(|e| e > len) {
            warnings.push(format!(
                "the call stack ({n:#x} bytes at {at:#x}) does not fit in the file; it is ignored"
            ));
        } else {
            stack_bytes = u64::from(n);
            ranges.push(CapturedRange {
                va: th.top_of_stack,
                len: u64::from(n),
                file_offset: at,
                what: "crashing thread's stack".into(),
            });
        }
    }
    stack_bytes
}

/// The KDBG copy, readable at KdDebuggerDataBlock (`kdbg_va`), when it is
/// one.
fn kdbg_range(
    file: &[u8],
    th: &TriageHeader,
    kdbg_va: KernelVa,
    fields: &Fields,
    ranges: &mut Vec<CapturedRange>,
    warnings: &mut Vec<String>,
) -> Option<KdbgCopy> {
    let mut kdbg = None;
    if th.debugger_data_offset != 0 && th.debugger_data_size != 0 && fields.has(0x400) {
        let at = th.debugger_data_offset as usize;
        let n = th.debugger_data_size as usize;
        match file.get(at..at.saturating_add(n)) {
            Some(k) if n >= 0x340 => {
                kdbg = parse_kdbg(Le(k), kdbg_va, warnings);
                if kdbg_va.0 != 0 {
                    ranges.push(CapturedRange {
                        va: kdbg_va,
                        len: n as u64,
                        file_offset: at,
                        what: "KDBG copy".into(),
                    });
                }
            }
            Some(_) => warnings.push(format!(
                "the debugger data copy is {n:#x} bytes, too small for KDDEBUGGER_DATA64"
            )),
            None => warnings.push(format!(
                "the debugger data copy ({n:#x} bytes at {at:#x}) does not fit in the file"
            )),
        }
    }
    kdbg
}

/// Data blocks: a table of (VA, offset, size), bounded by the file.
/// Returns how many were taken, and their bytes.
fn data_block_ranges(
    file: &[u8],
    th: &TriageHeader,
    fields: &Fields,
    ranges: &mut Vec<CapturedRange>,
    warnings: &mut Vec<String>,
) -> (u64, u64) {
    let b = Le(file);
    let len = file.len();
    let u32_at = |o: usize| b.u32(o).unwrap_or(0);
    let u64_at = |o: usize| b.u64(o).unwrap_or(0);
    let (mut data_blocks, mut data_block_bytes) = (0u64, 0u64);
    if th.data_blocks_offset != 0 && th.data_blocks_count != 0 && fields.has(0x800) {
        let at = th.data_blocks_offset as usize;
        let count = th.data_blocks_count as usize;
        match count
            .checked_mul(DATA_BLOCK_SIZE)
            .and_then(|n| at.checked_add(n))
        {
            Some(end) if end <= len => {
                let mut bad_blocks = 0;
                for i in 0..count {
                    let e = at + DATA_BLOCK_SIZE * i;
                    let va = u64_at(e);
                    let offset = u32_at(e + 8) as usize;
                    let size = u32_at(e + 12) as usize;
                    if size == 0 {
                        continue;
                    }
                    if offset.checked_add(size).is_none_or(|x| x > len) || offset < end {
                        bad_blocks += 1;
                        continue;
                    }
                    data_blocks += 1;
                    data_block_bytes += size as u64;
                    ranges.push(CapturedRange {
                        va: KernelVa(va),
                        len: size as u64,
                        file_offset: offset,
                        what: format!("triage data block {i}"),
                    });
                }
                if bad_blocks > 0 {
                    warnings.push(format!(
                        "{bad_blocks} triage data blocks point outside the file; they are ignored"
                    ));
                }
            }
            _ => warnings.push(format!(
                "DataBlocksCount {count} at {at:#x} runs past the end of the file; the data blocks are ignored"
            )),
        }
    }
    (data_blocks, data_block_bytes)
}

/// The data page (old writers): one page of memory near the fault.
fn data_page_range(th: &TriageHeader, len: usize, fields: &Fields) -> Option<CapturedRange> {
    if th.data_page_offset != 0 && th.data_page_size != 0 && fields.has(0x200) {
        let at = th.data_page_offset as usize;
        let n = th.data_page_size as usize;
        if at.checked_add(n).is_some_and(|e| e <= len) && n <= 0x10000 {
            return Some(CapturedRange {
                va: th.data_page_address,
                len: n as u64,
                file_offset: at,
                what: "data page".into(),
            });
        }
    }
    None
}

/// KDDEBUGGER_DATA64 (wdbgexts.h): header, KernBase and the fields `info`
/// shows. A copy whose OwnerTag is not 'KDBG' is reported and not used.
fn parse_kdbg(k: Le<'_>, va: KernelVa, warnings: &mut Vec<String>) -> Option<KdbgCopy> {
    if k.bytes(0x10, 4) != Some(b"KDBG") {
        warnings.push("the debugger data copy's OwnerTag is not 'KDBG'; it is ignored".into());
        return None;
    }
    let size = k.u32(0x14)?;
    let ptr = |o: usize| KernelVa(k.u64(o).unwrap_or(0));
    let h = |o: usize| k.u16(o).unwrap_or(0);
    let has = |end: usize| (size as usize) >= end && k.0.len() >= end;
    Some(KdbgCopy {
        va,
        size,
        kern_base: ptr(0x18),
        ps_loaded_module_list: ptr(0x48),
        ps_active_process_head: ptr(0x50),
        pool_track_table: ptr(0x1B8),
        ki_processor_block: ptr(0x218),
        mm_unloaded_drivers: ptr(0x220),
        offsets: KdbgOffsets {
            kthread_kernel_stack: h(0x29C),
            kthread_initial_stack: h(0x29E),
            kthread_apc_process: h(0x2A0),
            kthread_state: h(0x2A2),
            size_eprocess: h(0x2A8),
            eprocess_peb: h(0x2AA),
            eprocess_directory_table_base: h(0x2AE),
            size_prcb: h(0x2B0),
            prcb_current_thread: h(0x2B4),
            prcb_number: h(0x2BE),
            size_ethread: h(0x2C0),
            kthread_stack_limit: has(0x348).then(|| k.u32(0x340)).flatten(),
            kthread_stack_base: has(0x348).then(|| k.u32(0x344)).flatten(),
        },
    })
}

/// The crashing thread, through the offsets the kernel published in KDBG.
fn crashing_thread(
    file: &[u8],
    prcb: Option<(usize, usize)>,
    process: Option<(usize, usize)>,
    thread: Option<(usize, usize)>,
    o: &KdbgOffsets,
    have_kdbg: bool,
) -> CrashingThread {
    let field = |s: Option<(usize, usize)>, at: u64, n: usize| -> Option<&[u8]> {
        let (base, len) = s?;
        let at = usize::try_from(at).ok()?;
        if !have_kdbg || at.checked_add(n)? > len {
            return None;
        }
        file.get(base + at..base + at + n)
    };
    let u64f =
        |s, at: u64| field(s, at, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let va = |v: Option<u64>| v.filter(|&x| x != 0).map(KernelVa);
    CrashingThread {
        processor: field(prcb, u64::from(o.prcb_number), 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))),
        thread: va(
            u64f(prcb, u64::from(o.prcb_current_thread)).filter(|_| o.prcb_current_thread != 0)
        ),
        process: va(
            u64f(thread, u64::from(o.kthread_apc_process)).filter(|_| o.kthread_apc_process != 0)
        ),
        thread_state: field(thread, u64::from(o.kthread_state), 1)
            .filter(|_| o.kthread_state != 0)
            .map(|b| b[0]),
        stack_base: o
            .kthread_stack_base
            .and_then(|at| va(u64f(thread, u64::from(at)))),
        stack_limit: o
            .kthread_stack_limit
            .and_then(|at| va(u64f(thread, u64::from(at)))),
        process_directory_table_base: u64f(process, u64::from(o.eprocess_directory_table_base))
            .filter(|_| o.eprocess_directory_table_base != 0),
    }
}
