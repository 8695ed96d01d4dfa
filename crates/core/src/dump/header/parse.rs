//! Reading DUMP_HEADER64 and the secondary header of its page layout
//! (run list, bitmap or RDMP range list), each size checked against the
//! file before anything is read or allocated by it.

use crate::addr::{KernelVa, PAGE_SIZE, PhysAddr};
use crate::bytes::{Le, escape_ascii};

use super::plan::{PagePlan, PlanExtent, bitmap_bytes, popcount, truncation};
use super::{
    BitmapKind, BugCheck, DumpHeader, DumpType, HEADER_SIZE, HeaderError, MAX_PROCESSORS, MAX_RUNS,
    PFN_LIMIT, PageLayout, PhysRun, Truncation, off,
};
use crate::dump::time::{FileTime, UpTime};

/// DUMP_FILE_ATTRIBUTES bits (the header's Attributes at 0x1050) that
/// change how the file is read.
const ATTR_INSUFFICIENT_DUMPFILE_SIZE: u32 = 1 << 2;
const ATTR_ENCRYPTED_DUMP_DATA: u32 = 1 << 8;
const ATTR_DECRYPTED_DUMP: u32 = 1 << 9;

/// Result of [`parse`]: the typed header and the page plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub header: DumpHeader,
    pub plan: PagePlan,
}

/// Parse and validate the header of the dump whose complete contents are
/// `file`.
pub(crate) fn parse(file: &[u8]) -> Result<Parsed, HeaderError> {
    let b = Le(file);
    let file_len = file.len() as u64;
    check_signature(file)?;
    if file.len() < HEADER_SIZE {
        return Err(HeaderError::TooSmall { len: file_len });
    }
    // The header is all there from here on: reads below cannot fail, but
    // go through the checked view anyway.
    let u32_at = |o: usize| b.u32(o).unwrap_or(0);
    let u64_at = |o: usize| b.u64(o).unwrap_or(0);

    let attributes = attributes(file);
    let type_value = u32_at(off::DUMP_TYPE);
    let dump_type = DumpType::from_value(type_value).ok_or(HeaderError::UnsupportedType {
        value: type_value,
        name: DumpType::unsupported_name(type_value),
    })?;
    let machine = u32_at(off::MACHINE_IMAGE_TYPE);
    if machine != 0x8664 {
        return Err(HeaderError::UnsupportedMachine {
            value: machine,
            name: machine_name(machine),
        });
    }

    let required_dump_space = u64_at(off::REQUIRED_DUMP_SPACE);
    // Page data may run past the end of the file only as far as the
    // header's own RequiredDumpSpace: a dump whose writer stopped early
    // still says how big it meant to be. Beyond that a size is corrupt.
    let limit = file_len.max(required_dump_space);
    let ctx = Ctx {
        file,
        file_len,
        limit,
        required: if required_dump_space > file_len {
            required_dump_space
        } else {
            0
        },
    };

    let mut warnings = Vec::new();
    let (layout, plan) = page_layout(&ctx, dump_type, attributes, &mut warnings)?;
    let (described_pages, truncation) = truncation(file, &plan, &mut warnings);
    let header = read_fields(
        file,
        dump_type,
        attributes,
        layout,
        described_pages,
        truncation,
        warnings,
    );
    Ok(Parsed { header, plan })
}

/// The page layout the header describes, and where each page is; with
/// warnings for what the Attributes field says of the page data.
fn page_layout(
    ctx: &Ctx<'_>,
    dump_type: DumpType,
    attributes: u32,
    warnings: &mut Vec<String>,
) -> Result<(PageLayout, PagePlan), HeaderError> {
    // Tools other than Windows write this field too, so a set bit alone
    // refuses nothing: it explains a page layout that does not read, and
    // is a warning on one that does.
    let encrypted =
        attributes & ATTR_ENCRYPTED_DUMP_DATA != 0 && attributes & ATTR_DECRYPTED_DUMP == 0;
    let planned = match dump_type {
        DumpType::Full => parse_runs(ctx, warnings),
        DumpType::Summary => parse_summary(ctx, warnings),
        DumpType::Bitmap | DumpType::KernelBitmap => parse_bitmap(ctx, warnings),
        DumpType::RdmpKernel | DumpType::RdmpKernelAndUser | DumpType::RdmpComplete => {
            parse_rdmp(ctx, dump_type, warnings)
        }
    };
    let (layout, plan) = match planned {
        Ok(planned) => planned,
        Err(e) if encrypted => {
            return Err(HeaderError::Encrypted {
                attributes,
                layout: Box::new(e),
            });
        }
        Err(e) => return Err(e),
    };
    if encrypted {
        warnings.push(format!(
            "Attributes {attributes:#x} has EncryptedDumpData (bit 8) without DecryptedDump: if the page data is encrypted, nothing in it will read"
        ));
    }
    if attributes & ATTR_INSUFFICIENT_DUMPFILE_SIZE != 0 {
        warnings.push(format!(
            "Windows marked this dump InsufficientDumpfileSize (Attributes {attributes:#x}): the dump file was too small for all it meant to write, so pages may be missing"
        ));
    }
    Ok((layout, plan))
}

/// The header's fields as the file states them, around the checked
/// layout; a zero DirectoryTableBase or an implausible processor count is
/// a warning.
fn read_fields(
    file: &[u8],
    dump_type: DumpType,
    attributes: u32,
    layout: PageLayout,
    described_pages: u64,
    truncation: Option<Truncation>,
    mut warnings: Vec<String>,
) -> DumpHeader {
    let b = Le(file);
    let u32_at = |o: usize| b.u32(o).unwrap_or(0);
    let u64_at = |o: usize| b.u64(o).unwrap_or(0);
    let dtb = u64_at(off::DIRECTORY_TABLE_BASE);
    if dtb == 0 {
        warnings.push("the header's DirectoryTableBase is 0".into());
    }
    // Shown as is; anything that sizes per-processor work from it must
    // bound it (docs/pool-structures.md §2 caps the per-CPU tracker walk at 4096).
    let processors = u32_at(off::NUMBER_PROCESSORS);
    if processors == 0 || processors > MAX_PROCESSORS {
        warnings.push(format!(
            "the header's NumberProcessors {processors} is implausible (Windows runs 1 to {MAX_PROCESSORS} processors)"
        ));
    }

    DumpHeader {
        dump_type,
        major_version: u32_at(off::MAJOR_VERSION),
        minor_version: u32_at(off::MINOR_VERSION),
        directory_table_base: PhysAddr(dtb),
        pfn_database: KernelVa(u64_at(off::PFN_DATABASE)),
        ps_loaded_module_list: KernelVa(u64_at(off::PS_LOADED_MODULE_LIST)),
        ps_active_process_head: KernelVa(u64_at(off::PS_ACTIVE_PROCESS_HEAD)),
        machine_image_type: u32_at(off::MACHINE_IMAGE_TYPE),
        number_processors: processors,
        bug_check: BugCheck {
            code: u32_at(off::BUGCHECK_CODE),
            parameters: std::array::from_fn(|i| u64_at(off::BUGCHECK_PARAMETERS + 8 * i)),
        },
        kd_debugger_data_block: KernelVa(u64_at(off::KD_DEBUGGER_DATA_BLOCK)),
        context_rsp: u64_at(off::CONTEXT_RSP),
        context_rip: u64_at(off::CONTEXT_RIP),
        exception_code: u32_at(off::EXCEPTION_CODE),
        required_dump_space: u64_at(off::REQUIRED_DUMP_SPACE),
        system_time: FileTime(u64_at(off::SYSTEM_TIME)),
        system_up_time: UpTime(u64_at(off::SYSTEM_UP_TIME)),
        product_type: u32_at(off::PRODUCT_TYPE),
        suite_mask: u32_at(off::SUITE_MASK),
        attributes,
        comment: comment(b.bytes(off::COMMENT, off::COMMENT_LEN).unwrap_or(&[])),
        layout,
        described_pages,
        truncation,
        warnings,
    }
}

/// The header's Attributes; 0 where the field holds Windows' "PAGE" fill
/// (dumps written before the field existed), which is not a set of bits.
fn attributes(file: &[u8]) -> u32 {
    match Le(file).u32(off::ATTRIBUTES) {
        Some(v) if v.to_le_bytes() != *b"PAGE" => v,
        _ => 0,
    }
}

fn check_signature(file: &[u8]) -> Result<(), HeaderError> {
    let len = file.len() as u64;
    if file.starts_with(b"MDMP") {
        return Err(HeaderError::UserMinidump);
    }
    if file.starts_with(b"MSCF") {
        return Err(HeaderError::Cabinet);
    }
    if file.len() < 8 {
        if b"PAGEDU64".starts_with(file) || b"PAGEDUMP".starts_with(file) {
            return Err(HeaderError::TooSmall { len });
        }
        return Err(HeaderError::BadSignature {
            found: escape_ascii(file),
        });
    }
    match &file[..8] {
        b"PAGEDU64" => Ok(()),
        b"PAGEDUMP" => Err(HeaderError::Dump32),
        other => Err(HeaderError::BadSignature {
            found: escape_ascii(other),
        }),
    }
}

fn machine_name(m: u32) -> &'static str {
    match m {
        0x14C => "x86",
        0x1C4 => "ARM",
        0xAA64 => "ARM64",
        0x200 => "IA64",
        _ => "unknown",
    }
}

/// Windows fills unused header bytes with "PAGE"; a comment is only
/// present when the field holds something else.
fn comment(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    let text = &raw[..end];
    if text.is_empty() || text.chunks(4).all(|c| b"PAGE".starts_with(c)) {
        return None;
    }
    Some(escape_ascii(text))
}

struct Ctx<'a> {
    file: &'a [u8],
    file_len: u64,
    /// How far page data may extend: max(file length, RequiredDumpSpace).
    limit: u64,
    /// RequiredDumpSpace when it exceeds the file (for messages), else 0.
    required: u64,
}

impl Ctx<'_> {
    /// Check one run or range and return where its data ends in the file.
    fn check_extent(
        &self,
        what: impl Fn() -> String,
        pfn: u64,
        pages: u64,
        file_offset: u64,
    ) -> Result<u64, HeaderError> {
        if pfn.checked_add(pages).is_none_or(|end| end > PFN_LIMIT) {
            return Err(HeaderError::OutsidePhysicalSpace {
                what: what(),
                base: pfn,
                pages,
            });
        }
        match pages
            .checked_mul(PAGE_SIZE)
            .and_then(|n| file_offset.checked_add(n))
        {
            Some(end) if end <= self.limit => Ok(end),
            _ => Err(HeaderError::PastEndOfFile {
                what: what(),
                base: pfn,
                pages,
                file_len: self.file_len,
                required: self.required,
            }),
        }
    }
}

fn parse_runs(
    ctx: &Ctx,
    warnings: &mut Vec<String>,
) -> Result<(PageLayout, PagePlan), HeaderError> {
    let b = Le(ctx.file);
    let count = b.u32(off::RUN_COUNT).unwrap_or(0);
    if count > MAX_RUNS {
        return Err(HeaderError::TooManyRuns { count });
    }
    let declared_pages = b.u64(off::RUN_PAGES).unwrap_or(0);
    let mut runs = Vec::with_capacity(count as usize);
    let mut extents = Vec::with_capacity(count as usize);
    let mut offset = HEADER_SIZE as u64;
    for i in 0..count as usize {
        let base_page = b.u64(off::RUNS + 16 * i).unwrap_or(0);
        let page_count = b.u64(off::RUNS + 16 * i + 8).unwrap_or(0);
        let end = ctx.check_extent(|| format!("run {i}"), base_page, page_count, offset)?;
        runs.push(PhysRun {
            base_page,
            page_count,
        });
        extents.push(PlanExtent {
            index: i,
            pfn: base_page,
            pages: page_count,
            file_offset: offset,
        });
        offset = end;
    }
    check_overlaps(&extents, "run")?;
    let total: u64 = runs.iter().map(|r| r.page_count).sum();
    if total != declared_pages {
        warnings.push(format!(
            "the run list's NumberOfPages is {declared_pages} but its runs hold {total} pages"
        ));
    }
    if count == 0 {
        warnings.push("the run list is empty: the dump holds no pages".into());
    }
    Ok((
        PageLayout::Runs {
            runs,
            declared_pages,
        },
        PagePlan::Extents {
            extents,
            range_slots: 0,
        },
    ))
}

fn bitmap_kind(file: &[u8]) -> Result<BitmapKind, HeaderError> {
    let sig = Le(file).bytes(off::BMP_SIGNATURE, 8).unwrap_or(&[]);
    match sig {
        b"SDMPDUMP" => Ok(BitmapKind::Sdmp),
        b"FDMPDUMP" => Ok(BitmapKind::Fdmp),
        _ => Err(HeaderError::BadBitmapSignature {
            found: escape_ascii(sig),
        }),
    }
}

/// The header of a bitmap dump (DumpType 5 and 6): 64-bit fields, the
/// bitmap at 0x2038.
fn parse_bitmap(
    ctx: &Ctx,
    warnings: &mut Vec<String>,
) -> Result<(PageLayout, PagePlan), HeaderError> {
    let b = Le(ctx.file);
    BitmapHeader::read(
        ctx,
        off::BMP_BITMAP,
        b.u64(off::BMP_FIRST_PAGE),
        b.u64(off::BMP_BITS),
        b.u64(off::BMP_PRESENT_PAGES),
    )?
    .plan(ctx, warnings)
}

/// The SUMMARY_DUMP64 of a kernel summary dump (DumpType 2, Windows 7 and
/// Server 2008 R2): the same signature as a bitmap dump, then 32-bit
/// HeaderSize, BitmapSize and Pages, and the bitmap at 0x2028. A DumpType 2
/// file whose summary header does not hold together but whose 64-bit
/// bitmap header does is read as the latter, with a warning.
fn parse_summary(
    ctx: &Ctx,
    warnings: &mut Vec<String>,
) -> Result<(PageLayout, PagePlan), HeaderError> {
    let b = Le(ctx.file);
    let u32_at = |o: usize| b.u32(o).map(u64::from);
    let summary = BitmapHeader::read(
        ctx,
        off::SUM_BITMAP,
        u32_at(off::SUM_HEADER_SIZE),
        u32_at(off::SUM_BITMAP_SIZE),
        u32_at(off::SUM_PAGES),
    )?;
    let bit_count = summary.bit_count;
    let size_of_bitmap = u32_at(off::SUM_SIZE_OF_BITMAP).unwrap_or(bit_count);
    let mut summary_warnings = Vec::new();
    match summary.plan(ctx, &mut summary_warnings) {
        Ok(planned) => {
            if size_of_bitmap != bit_count {
                summary_warnings.push(format!(
                    "the summary header's BitmapSize is {bit_count} bits but its bitmap's SizeOfBitMap is {size_of_bitmap}"
                ));
            }
            warnings.append(&mut summary_warnings);
            Ok(planned)
        }
        Err(summary_error) => {
            let mut bitmap_warnings = Vec::new();
            match parse_bitmap(ctx, &mut bitmap_warnings) {
                Ok(planned) => {
                    warnings.push(format!(
                        "DumpType 2 (kernel summary dump), but its summary header does not hold together ({summary_error}); the 64-bit bitmap header of DumpType 5 does, and is what pooldump read"
                    ));
                    warnings.append(&mut bitmap_warnings);
                    Ok(planned)
                }
                Err(_) => Err(summary_error),
            }
        }
    }
}

/// A bitmap of present pages and where their data starts, as a header
/// states them (not yet checked against the file).
struct BitmapHeader {
    kind: BitmapKind,
    /// File offset of the bitmap.
    offset: usize,
    bit_count: u64,
    /// File offset of the first present page's data.
    first_page: u64,
    /// The present-page count the header states.
    declared_pages: u64,
}

impl BitmapHeader {
    /// The header's signature and fields as read; `None` where the file
    /// ends inside the header.
    fn read(
        ctx: &Ctx,
        offset: usize,
        first_page: Option<u64>,
        bit_count: Option<u64>,
        declared_pages: Option<u64>,
    ) -> Result<Self, HeaderError> {
        let kind = bitmap_kind(ctx.file)?;
        match (first_page, bit_count, declared_pages) {
            (Some(first_page), Some(bit_count), Some(declared_pages)) => Ok(BitmapHeader {
                kind,
                offset,
                bit_count,
                first_page,
                declared_pages,
            }),
            _ => Err(HeaderError::BitmapPastEndOfFile {
                at: offset as u64,
                bits: 0,
                bytes: 0,
                file_len: ctx.file_len,
            }),
        }
    }

    /// Check the bitmap and the pages it marks against the file, and plan
    /// the reads.
    fn plan(
        &self,
        ctx: &Ctx,
        warnings: &mut Vec<String>,
    ) -> Result<(PageLayout, PagePlan), HeaderError> {
        let &BitmapHeader {
            kind,
            offset,
            bit_count,
            first_page,
            declared_pages,
        } = self;
        check_bitmap_bounds(ctx, offset, bit_count, first_page)?;
        let bitmap = bitmap_bytes(ctx.file, offset, bit_count);
        let present = popcount(bitmap, bit_count);
        match present
            .checked_mul(PAGE_SIZE)
            .and_then(|n| first_page.checked_add(n))
        {
            Some(end) if end <= ctx.limit => {}
            end => {
                return Err(HeaderError::BitmapPagesPastEndOfFile {
                    present,
                    first_page,
                    end: end.map_or_else(|| "beyond 2^64".into(), |e| format!("{e:#x}")),
                    file_len: ctx.file_len,
                    required: ctx.required,
                });
            }
        }
        if present != declared_pages {
            warnings.push(format!(
                "the bitmap header says {declared_pages} pages are present but the bitmap marks {present}"
            ));
        }
        Ok((
            PageLayout::Bitmap {
                kind,
                bitmap_offset: offset as u64,
                first_page,
                bit_count,
                declared_pages,
            },
            PagePlan::Bitmap {
                bitmap_offset: offset,
                bit_count,
                first_page,
            },
        ))
    }
}

/// The bitmap must lie inside the file (this bounds every later loop over
/// it by the file's length), and FirstPage after it and inside the file.
fn check_bitmap_bounds(
    ctx: &Ctx,
    offset: usize,
    bit_count: u64,
    first_page: u64,
) -> Result<(), HeaderError> {
    let bytes = bit_count.div_ceil(8);
    let bitmap_end = (offset as u64).checked_add(bytes);
    if bitmap_end.is_none_or(|e| e > ctx.file_len) {
        return Err(HeaderError::BitmapPastEndOfFile {
            at: offset as u64,
            bits: bit_count,
            bytes,
            file_len: ctx.file_len,
        });
    }
    let bitmap_end = bitmap_end.unwrap_or(u64::MAX);
    if first_page < bitmap_end {
        return Err(HeaderError::BadFirstPage {
            first_page,
            problem: format!("lies inside the bitmap, which ends at {bitmap_end:#x}"),
        });
    }
    if first_page > ctx.file_len {
        return Err(HeaderError::BadFirstPage {
            first_page,
            problem: format!(
                "is past the end of the file (file is {} bytes)",
                ctx.file_len
            ),
        });
    }
    Ok(())
}

fn parse_rdmp(
    ctx: &Ctx,
    dump_type: DumpType,
    warnings: &mut Vec<String>,
) -> Result<(PageLayout, PagePlan), HeaderError> {
    let b = Le(ctx.file);
    let bad = |m: String| Err(HeaderError::BadRdmp(m));
    let marker = b.u32(off::RDMP_MARKER).unwrap_or(0);
    let sig = b.bytes(off::RDMP_SIGNATURE, 8).unwrap_or(&[]);
    if marker != 0x40 || sig != b"RDMPDUMP" {
        return bad(format!(
            "expected marker 0x40 and 'RDMPDUMP', found {marker:#x} and '{}'",
            escape_ascii(sig)
        ));
    }
    let metadata_size = b.u64(off::RDMP_METADATA_SIZE).unwrap_or(0);
    let first_page_offset = b.u64(off::RDMP_FIRST_PAGE).unwrap_or(0);
    // kdmp-parser computes `metadata_size - 0x20` and
    // `first_page_offset - 0x2040` unchecked (spec §1.10.4): these checks
    // must come first.
    if metadata_size < 0x20 || metadata_size % 16 != 0 {
        return bad(format!(
            "MetadataSize {metadata_size:#x} must be a non-zero multiple of 16 and at least 0x20"
        ));
    }
    if metadata_size.checked_add(0x2020) != Some(first_page_offset) {
        return bad(format!(
            "FirstPageOffset {first_page_offset:#x} must equal MetadataSize {metadata_size:#x} + 0x2020"
        ));
    }
    if first_page_offset > ctx.file_len {
        return bad(format!(
            "its range list (up to FirstPageOffset {first_page_offset:#x}) extends past the end of the file (file is {} bytes)",
            ctx.file_len
        ));
    }
    let complete = dump_type == DumpType::RdmpComplete;
    let total_pages = complete.then(|| b.u64(off::RDMP_TOTAL_PAGES).unwrap_or(0));

    let range_slots = metadata_size / 16;
    let (extents, page_count) = rdmp_ranges(ctx, range_slots, first_page_offset, total_pages)?;
    check_overlaps(&extents, "RDMP range")?;
    if let Some(total) = total_pages
        && page_count != total
    {
        warnings.push(format!(
            "the RDMP header's TotalNumberOfPages is {total} but its ranges hold {page_count} pages"
        ));
    }
    if complete {
        let declared = b.u32(off::RDMP_RANGE_COUNT).unwrap_or(0);
        if u64::from(declared) != extents.len() as u64 {
            warnings.push(format!(
                "the RDMP header's NumberOfRanges is {declared} but its list holds {}",
                extents.len()
            ));
        }
    }
    Ok((
        PageLayout::Rdmp {
            metadata_size,
            first_page_offset,
            ranges: extents.len() as u64,
            total_pages,
        },
        PagePlan::Extents {
            extents,
            range_slots,
        },
    ))
}

/// The RDMP range list, walked as kdmp-parser walks it (its map is
/// cross-checked against this plan): up to MetadataSize/16 slots from
/// 0x2030, ending at the first PFN 0, and for complete dumps when
/// TotalNumberOfPages is reached. The slot count is bounded by the file
/// (checked by the caller); a slot read past the end reads as zero, as
/// the reader pads it. Returns the ranges as extents, and the pages they
/// hold.
fn rdmp_ranges(
    ctx: &Ctx,
    range_slots: u64,
    first_page_offset: u64,
    total_pages: Option<u64>,
) -> Result<(Vec<PlanExtent>, u64), HeaderError> {
    let b = Le(ctx.file);
    let mut extents = Vec::new();
    let mut offset = first_page_offset;
    let mut page_count = 0u64;
    for i in 0..range_slots {
        if let Some(total) = total_pages {
            if page_count == total {
                break;
            }
            if page_count > total {
                return Err(HeaderError::BadRdmp(format!(
                    "its ranges hold more than TotalNumberOfPages ({total}) pages"
                )));
            }
        }
        let at = off::RDMP_RANGES as u64 + 16 * i;
        let read = |o: u64| usize::try_from(o).ok().and_then(|o| b.u64(o)).unwrap_or(0);
        let pfn = read(at);
        let pages = read(at + 8);
        if pfn == 0 {
            break;
        }
        let end = ctx.check_extent(|| format!("RDMP range {i}"), pfn, pages, offset)?;
        extents.push(PlanExtent {
            index: i as usize,
            pfn,
            pages,
            file_offset: offset,
        });
        offset = end;
        page_count = page_count.saturating_add(pages);
    }
    Ok((extents, page_count))
}

/// Two runs or ranges that describe the same PFN make the map ambiguous
/// (kdmp-parser rejects duplicate runs, and asserts on duplicate ranges).
fn check_overlaps(extents: &[PlanExtent], noun: &str) -> Result<(), HeaderError> {
    let mut sorted: Vec<&PlanExtent> = extents.iter().filter(|e| e.pages > 0).collect();
    sorted.sort_by_key(|e| e.pfn);
    for w in sorted.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.pfn + a.pages > b.pfn {
            let (first, second) = if a.index < b.index { (a, b) } else { (b, a) };
            return Err(HeaderError::Overlap {
                a: format!("{noun} {}", first.index),
                b: format!("{noun} {}", second.index),
                pfn: b.pfn,
            });
        }
    }
    Ok(())
}
