//! Header validation, hostile sizes and physical reads, on hand-built
//! dumps.

use super::header::{self, HeaderError};
use super::*;
use crate::testutil::{HeaderSpec, Machine, PAGE, measure, put32, put64};

/// A machine with recognisable page contents: byte i of PFN p is
/// `(p * 7 + i / 3) as u8`, in two runs plus the page tables.
fn machine() -> Machine {
    let mut m = Machine::new();
    for (base, n) in [(0x10u64, 4u64), (0x100, 3)] {
        for pfn in base..base + n {
            let page: Vec<u8> = (0..PAGE).map(|i| (pfn * 7 + i as u64 / 3) as u8).collect();
            m.pages.insert(pfn, page);
        }
    }
    m
}

fn expected(pa: u64, len: usize) -> Vec<u8> {
    (pa..pa + len as u64)
        .map(|a| ((a >> 12) * 7 + (a & 0xFFF) / 3) as u8)
        .collect()
}

fn open(bytes: Vec<u8>) -> Result<CrashDump, DumpError> {
    CrashDump::from_bytes("x.dmp", bytes)
}

fn header_err(bytes: &[u8]) -> HeaderError {
    header::parse(bytes).expect_err("header should be rejected")
}

fn full() -> Vec<u8> {
    machine().full_dump(&HeaderSpec::default())
}

// --- signatures and types -------------------------------------------------

#[test]
fn rejects_32_bit_dumps() {
    let mut b = full();
    b[4..8].copy_from_slice(b"DUMP");
    let e = open(b).unwrap_err();
    assert_eq!(
        e.to_string(),
        "x.dmp: not a 64-bit kernel dump (signature 'PAGEDUMP' is a 32-bit dump)"
    );
}

#[test]
fn rejects_minidumps_and_non_dumps() {
    assert_eq!(header_err(b"MDMP\x93\xa7\0\0"), HeaderError::UserMinidump);
    assert!(matches!(
        header_err(b"\x7fELF\x02\x01\x01\0\0\0"),
        HeaderError::BadSignature { found } if found == "\\x7fELF\\x02\\x01\\x01\\x00"
    ));
    assert_eq!(header_err(b"PAGE"), HeaderError::TooSmall { len: 4 });
    assert_eq!(header_err(b""), HeaderError::TooSmall { len: 0 });
    let mut short = full();
    short.truncate(0x1000);
    assert_eq!(header_err(&short), HeaderError::TooSmall { len: 0x1000 });
}

#[test]
fn rejects_triage_minidump_type() {
    let mut b = full();
    put32(&mut b, 0xF98, 4);
    let e = CrashDump::from_bytes("MEMORY.DMP", b).unwrap_err();
    assert_eq!(
        e.to_string(),
        "MEMORY.DMP: DumpType 4 (small memory dump) is not supported; full (1), kernel summary (2), bitmap (5 and 6) and RDMP (8, 9 and 10) dumps are"
    );
}

#[test]
fn rejects_arm64() {
    let b = machine().full_dump(&HeaderSpec {
        machine: 0xAA64,
        ..Default::default()
    });
    assert!(matches!(
        header_err(&b),
        HeaderError::UnsupportedMachine { value: 0xAA64, .. }
    ));
}

// --- full dumps: run list ---------------------------------------------------

#[test]
fn rejects_too_many_runs_without_allocating() {
    for count in [43u32, u32::MAX] {
        let mut b = full();
        put32(&mut b, 0x88, count);
        let (r, bytes) = measure(|| header::parse(&b));
        assert_eq!(r.unwrap_err(), HeaderError::TooManyRuns { count });
        assert!(bytes < 64 * 1024, "allocated {bytes} bytes");
    }
}

#[test]
fn rejects_a_run_past_the_end_of_the_file() {
    // 77824 bytes: the header and 17 pages, as in spec §2.7.
    let mut b = vec![0u8; 77_824];
    let h = HeaderSpec::default().build(1, 0x1AD000);
    b[..0x2000].copy_from_slice(&h);
    put32(&mut b, 0x88, 4);
    for (i, (base, n)) in [
        (0x1AD, 1u64),
        (0x200, 8),
        (0x300, 8),
        (0x1000, 0x1_0000_0000),
    ]
    .iter()
    .enumerate()
    {
        put64(&mut b, 0x98 + 16 * i, *base);
        put64(&mut b, 0xA0 + 16 * i, *n);
    }
    put64(&mut b, 0xFA0, 77_824);
    let (r, bytes) = measure(|| open(b));
    assert_eq!(
        r.unwrap_err().to_string(),
        "x.dmp: run 3 (PFN 0x1000, 0x100000000 pages) extends past the end of the file (file is 77824 bytes)"
    );
    assert!(bytes < 1 << 20, "allocated {bytes} bytes");
}

#[test]
fn rejects_runs_outside_physical_space_and_overlaps() {
    let mut b = full();
    put64(&mut b, 0x98, u64::MAX - 1);
    assert!(matches!(
        header_err(&b),
        HeaderError::OutsidePhysicalSpace { base, .. } if base == u64::MAX - 1
    ));

    let mut b = full();
    // Run 1 (PFN 0x100, 3 pages) moved onto run 0's PFNs.
    put64(&mut b, 0x98 + 16, 0x11);
    let e = header_err(&b);
    assert!(
        e.to_string().contains("both describe PFN"),
        "unexpected: {e}"
    );
}

#[test]
fn hostile_run_count_in_huge_required_space_is_still_bounded() {
    // RequiredDumpSpace may excuse a truncated file, but a run that needs
    // more than it says is still rejected, and no size is trusted for an
    // allocation either way.
    let mut b = full();
    put64(&mut b, 0xFA0, u64::MAX);
    put64(&mut b, 0xA0, 0xFF_FFFF_FFFF); // run 0: 2^40 - 1 pages from 0x10
    let (r, bytes) = measure(|| open(b));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("physical address space"), "{e}");
    assert!(bytes < 1 << 20, "allocated {bytes} bytes");

    let mut b = full();
    put64(&mut b, 0xFA0, 1 << 50);
    put64(&mut b, 0xA0 + 32, 1 << 30); // run 2 (PFN 0x1AD): 4 TiB, 'truncated'
    let (r, bytes) = measure(|| open(b));
    let dump = r.expect("a dump truncated within RequiredDumpSpace opens");
    assert!(bytes < 1 << 20, "allocated {bytes} bytes");
    assert_eq!(
        dump.header().truncation.unwrap().missing_pages,
        (1 << 30) - 1
    );
}

// --- bitmap dumps -------------------------------------------------------------

fn bitmap() -> Vec<u8> {
    machine().bitmap_dump(&HeaderSpec::default())
}

#[test]
fn rejects_a_bitmap_larger_than_the_file_without_allocating() {
    for bits in [1u64 << 40, u64::MAX] {
        let mut b = bitmap();
        put64(&mut b, 0x2030, bits);
        let (r, bytes) = measure(|| header::parse(&b));
        assert!(
            matches!(r, Err(HeaderError::BitmapPastEndOfFile { bits: b, .. }) if b == bits),
            "{r:?}"
        );
        assert!(bytes < 64 * 1024, "allocated {bytes} bytes");
    }
}

#[test]
fn rejects_bad_first_page_and_signature() {
    let mut b = bitmap();
    let len = b.len() as u64;
    put64(&mut b, 0x2020, len + 0x1000);
    assert!(
        header_err(&b)
            .to_string()
            .contains("past the end of the file")
    );

    let mut b = bitmap();
    put64(&mut b, 0x2020, 0x2038);
    assert!(header_err(&b).to_string().contains("inside the bitmap"));

    // The same signature check on a summary dump's header.
    for mut b in [bitmap(), summary()] {
        b[0x2000..0x2004].copy_from_slice(b"XDMP");
        assert!(matches!(
            header_err(&b),
            HeaderError::BadBitmapSignature { .. }
        ));
    }
}

#[test]
fn rejects_a_bitmap_whose_pages_cannot_fit() {
    let mut b = bitmap();
    let first = u64::from_le_bytes(b[0x2020..0x2028].try_into().unwrap()) as usize;
    // Every bit set: far more pages than the file holds, and more than
    // RequiredDumpSpace (the file size) allows.
    b[0x2038..first].fill(0xFF);
    let bits = ((first - 0x2038) * 8) as u64;
    put64(&mut b, 0x2030, bits);
    assert!(matches!(
        header_err(&b),
        HeaderError::BitmapPagesPastEndOfFile { .. }
    ));
}

#[test]
fn bitmap_truncated_within_required_space_opens_with_bounded_memory() {
    // A 1 MiB bitmap with every bit set: 8M pages described, a handful in
    // the file. kdmp-parser must only see (and allocate for) those.
    let mut b = HeaderSpec::default().build(5, 0x1AD000);
    let bitmap_len: usize = 1 << 20;
    let first = (0x2038 + bitmap_len).div_ceil(PAGE) * PAGE;
    b.resize(first + 3 * PAGE + 100, 0xAB);
    b[0x2000..0x2008].copy_from_slice(b"FDMPDUMP");
    put64(&mut b, 0x2020, first as u64);
    put64(&mut b, 0x2028, (bitmap_len * 8) as u64);
    put64(&mut b, 0x2030, (bitmap_len * 8) as u64);
    b[0x2038..0x2038 + bitmap_len].fill(0xFF);
    put64(&mut b, 0xFA0, (first + bitmap_len * 8 * PAGE) as u64);
    let (r, bytes) = measure(|| open(b));
    let dump = r.unwrap();
    assert!(bytes < 512 * 1024, "allocated {bytes} bytes");
    assert_eq!(dump.page_count(), 3);
    assert_eq!(dump.physical_pages().count(), 3);
    let t = dump.header().truncation.unwrap();
    assert_eq!(t.missing_pages, (bitmap_len * 8 - 3) as u64);
    // PFN 2 is in the file; PFN 3 is partly there, PFN 5000 not at all.
    assert!(dump.page(Pfn(2)).is_ok());
    assert_eq!(
        dump.page(Pfn(3)).unwrap_err(),
        MemoryError::Truncated {
            pa: PhysAddr(0x3000)
        }
    );
    assert!(matches!(
        dump.page(Pfn(5000)),
        Err(MemoryError::Truncated { .. })
    ));
    assert!(matches!(
        dump.page(Pfn((bitmap_len * 8) as u64)),
        Err(MemoryError::NotInSource { .. })
    ));
}

// --- kernel summary dumps (DumpType 2) -----------------------------------------

fn summary() -> Vec<u8> {
    machine().summary_dump(&HeaderSpec::default())
}

#[test]
fn a_summary_dump_reads_its_32_bit_header() {
    let dump = open(summary()).unwrap();
    let h = dump.header();
    assert_eq!(h.dump_type, DumpType::Summary);
    assert!(
        matches!(h.layout, PageLayout::Bitmap { kind: BitmapKind::Sdmp, bitmap_offset: 0x2028, declared_pages, .. } if declared_pages == machine().pages.len() as u64),
        "{:?}",
        h.layout
    );
    // SizeOfBitMap disagreeing with BitmapSize is worth a warning only.
    let mut b = summary();
    put32(&mut b, 0x2018, 5);
    let dump = open(b).unwrap();
    let PageLayout::Bitmap { bit_count, .. } = dump.header().layout else {
        panic!("{:?}", dump.header().layout)
    };
    assert_eq!(
        dump.header().warnings,
        [format!(
            "the summary header's BitmapSize is {bit_count} bits but its bitmap's SizeOfBitMap is 5"
        )]
    );
}

#[test]
fn a_type_2_dump_with_the_64_bit_bitmap_header_reads_with_a_warning() {
    let mut b = bitmap();
    put32(&mut b, 0xF98, 2);
    let dump = open(b).unwrap();
    let h = dump.header();
    assert_eq!(h.dump_type, DumpType::Summary);
    assert!(matches!(
        h.layout,
        PageLayout::Bitmap {
            bitmap_offset: 0x2038,
            ..
        }
    ));
    assert_eq!(h.warnings.len(), 1, "{:?}", h.warnings);
    assert!(
        h.warnings[0].starts_with("DumpType 2 (kernel summary dump), but its summary header does not hold together (the bitmap header's FirstPage 0x0 lies inside the bitmap"),
        "{}",
        h.warnings[0]
    );
    check_reads(&dump);
}

#[test]
fn rejects_hostile_summary_headers_without_allocating() {
    // A bitmap of 2^32 - 1 bits, far larger than the file: the summary
    // header's error is the one reported (the 64-bit layout fails too).
    let mut b = summary();
    put32(&mut b, 0x2010, u32::MAX);
    let (r, bytes) = measure(|| header::parse(&b));
    assert!(
        matches!(r, Err(HeaderError::BitmapPastEndOfFile { at: 0x2028, bits, .. }) if bits == u64::from(u32::MAX)),
        "{r:?}"
    );
    assert!(bytes < 64 * 1024, "allocated {bytes} bytes");
    // A HeaderSize past the end of the file.
    let mut b = summary();
    let len = b.len() as u32;
    put32(&mut b, 0x200C, len + 0x1000);
    assert!(matches!(header_err(&b), HeaderError::BadFirstPage { .. }));
}

// --- Attributes and cabinets ------------------------------------------------------

#[test]
fn attributes_explain_encrypted_dumps_and_warn_of_missing_space() {
    // HeaderSpec leaves Attributes as the "PAGE" fill: not a set of bits.
    assert_eq!(open(full()).unwrap().header().attributes, 0);
    // EncryptedDumpData with a page layout that reads: a warning (other
    // tools write this field too).
    let mut b = bitmap();
    put32(&mut b, 0x1050, 1 << 8);
    let dump = open(b.clone()).unwrap();
    assert_eq!(dump.header().attributes, 0x100);
    assert_eq!(dump.header().warnings.len(), 1);
    assert!(dump.header().warnings[0].contains("EncryptedDumpData"));
    // With a layout that does not read, the error says why that may be.
    b[0x2000..0x2008].copy_from_slice(&[0x5A; 8]);
    let e = header_err(&b);
    assert!(
        matches!(&e, HeaderError::Encrypted { attributes: 0x100, layout } if matches!(**layout, HeaderError::BadBitmapSignature { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("is encrypted"), "{e}");
    // A decrypted dump keeps both bits and reads without a warning.
    let mut b = full();
    put32(&mut b, 0x1050, (1 << 8) | (1 << 9));
    let dump = open(b).unwrap();
    assert_eq!(dump.header().attributes, 0x300);
    assert!(dump.header().warnings.is_empty());
    let mut b = full();
    put32(&mut b, 0x1050, 1 << 2);
    let dump = open(b).unwrap();
    assert_eq!(dump.header().warnings.len(), 1);
    assert!(dump.header().warnings[0].contains("InsufficientDumpfileSize"));
}

#[test]
fn a_cabinet_is_named_with_how_to_extract_it() {
    let mut cab = b"MSCF\0\0\0\0".to_vec();
    cab.resize(0x3000, 0);
    let e = open(cab).unwrap_err().to_string();
    assert!(e.starts_with("x.dmp: this is a cabinet (.cab) file"), "{e}");
    assert!(e.contains("expand -F:*") && e.contains("cabextract"), "{e}");
}

// --- RDMP ---------------------------------------------------------------------

fn rdmp(t: u32) -> Vec<u8> {
    machine().rdmp_dump(&HeaderSpec::default(), t)
}

#[test]
fn rejects_bad_rdmp_metadata() {
    for (meta, first) in [
        (0x10u64, 0x2030u64),
        (0, 0x2020),
        (0x1FE8, 0x4008),
        (0x1FE0, 0x5000),
        (u64::MAX - 0xF, 0x4000),
    ] {
        let mut b = rdmp(8);
        put64(&mut b, 0x2010, meta);
        put64(&mut b, 0x2018, first);
        let (r, bytes) = measure(|| header::parse(&b));
        assert!(
            matches!(r, Err(HeaderError::BadRdmp(_))),
            "{meta:#x}: {r:?}"
        );
        assert!(bytes < 64 * 1024);
    }
    let mut b = rdmp(8);
    b[0x2004..0x2008].copy_from_slice(b"XXXX");
    assert!(matches!(header_err(&b), HeaderError::BadRdmp(_)));
    // A range list reaching past the end of the file.
    let mut b = rdmp(8);
    b.truncate(0x3000);
    assert!(header_err(&b).to_string().contains("range list"));
}

#[test]
fn rejects_hostile_rdmp_ranges() {
    let mut b = rdmp(8);
    put64(&mut b, 0x2038, 0x1_0000_0000);
    let (r, bytes) = measure(|| open(b));
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("RDMP range 0") && e.contains("past the end of the file"),
        "{e}"
    );
    assert!(bytes < 1 << 20);

    let mut b = rdmp(8);
    put64(&mut b, 0x2030 + 16, 0x11); // range 1 onto range 0's PFNs
    assert!(matches!(header_err(&b), HeaderError::Overlap { .. }));
}

// --- physical reads -------------------------------------------------------------

fn check_reads(dump: &CrashDump) {
    // Unaligned, spanning three pages of one run.
    let mut buf = vec![0u8; 0x2000];
    dump.read_physical(PhysAddr(0x10_800), &mut buf).unwrap();
    assert_eq!(buf, expected(0x10_800, 0x2000));
    // Spanning a whole run, both ends unaligned.
    let mut buf = vec![0u8; 0x2FFE];
    dump.read_physical(PhysAddr(0x10_0001), &mut buf).unwrap();
    assert_eq!(buf, expected(0x10_0001, 0x2FFE));
    // Running off the end of a run names the first missing byte.
    let mut buf = vec![0u8; 0x20];
    assert_eq!(
        dump.read_physical(PhysAddr(0x13_FF0), &mut buf),
        Err(MemoryError::not_in_source(PhysAddr(0x14_000)))
    );
    // Unaligned single-byte and page-sized reads.
    let mut one = [0u8; 1];
    dump.read_physical(PhysAddr(0x102_ABC), &mut one).unwrap();
    assert_eq!(one[..], expected(0x102_ABC, 1)[..]);
    let pfns: Vec<u64> = dump.physical_pages().map(|(p, _)| p.0).collect();
    assert!(pfns.contains(&0x10) && pfns.contains(&0x102));
    for (pfn, page) in dump.physical_pages() {
        assert_eq!(page, dump.page(pfn).unwrap());
    }
}

#[test]
fn reads_full_bitmap_and_rdmp_dumps_exactly() {
    for (name, b) in [
        ("full", full()),
        ("bitmap", bitmap()),
        ("summary", summary()),
        ("rdmp8", rdmp(8)),
        ("rdmpA", rdmp(0xA)),
    ] {
        let dump = open(b).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(dump.page_count(), machine().pages.len() as u64, "{name}");
        assert!(
            dump.header().warnings.is_empty(),
            "{name}: {:?}",
            dump.header().warnings
        );
        assert!(dump.header().truncation.is_none());
        check_reads(&dump);
    }
}

#[test]
fn truncated_full_dump_reads_missing_pages_as_truncated() {
    let mut b = full();
    let len = b.len();
    // Cut the last page in half: it and nothing else is missing.
    b.truncate(len - PAGE / 2);
    let dump = open(b).unwrap();
    assert_eq!(dump.header().truncation.unwrap().missing_pages, 1);
    let last = *machine().pages.keys().last().unwrap();
    assert_eq!(
        dump.page(Pfn(last)).unwrap_err(),
        MemoryError::Truncated {
            pa: PhysAddr(last << 12)
        }
    );
    let mut buf = [0u8; 16];
    assert_eq!(
        dump.read_physical(PhysAddr((last << 12) + 0x10), &mut buf),
        Err(MemoryError::Truncated {
            pa: PhysAddr((last << 12) + 0x10)
        })
    );
    assert_eq!(dump.physical_pages().count(), machine().pages.len() - 1);
    check_reads(&dump);

    // Cut in the middle of the second run: the rest of it and every later
    // run is described but missing.
    let mut b = full();
    b.truncate(0x2000 + 5 * PAGE);
    let dump = open(b).unwrap();
    assert_eq!(dump.page_count(), 5);
    assert!(matches!(
        dump.page(Pfn(0x101)),
        Err(MemoryError::Truncated { .. })
    ));
}

#[test]
fn truncated_rdmp_and_bitmap_dumps_open() {
    for b in [rdmp(8), rdmp(0xA), bitmap()] {
        let mut b = b;
        let len = b.len();
        b.truncate(len - 3 * PAGE - 7);
        let dump = open(b).unwrap();
        assert_eq!(dump.header().truncation.unwrap().missing_pages, 4);
        assert_eq!(dump.page_count(), machine().pages.len() as u64 - 4);
    }
}

#[test]
fn opens_files_and_names_them_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("MEMORY.DMP");
    std::fs::write(&p, full()).unwrap();
    let dump = CrashDump::open(&p).unwrap();
    assert_eq!(dump.path(), p);
    assert_eq!(dump.file_size(), full().len() as u64);
    check_reads(&dump);

    let missing = dir.path().join("nope.dmp");
    let e = CrashDump::open(&missing).unwrap_err();
    assert!(e.to_string().ends_with("nope.dmp: cannot open the file"));
    assert!(std::error::Error::source(&e).is_some());

    let empty = dir.path().join("empty.dmp");
    std::fs::write(&empty, b"").unwrap();
    let e = CrashDump::open(&empty).unwrap_err().to_string();
    assert!(
        e.contains("empty.dmp: the file is 0 bytes, too small"),
        "{e}"
    );

    let e = CrashDump::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("is a directory") || e.contains("cannot"), "{e}");
}

#[test]
fn header_fields_come_back_typed() {
    let spec = HeaderSpec {
        ps_loaded_module_list: 0xFFFF_F802_1A0F_0000,
        kd_debugger_data_block: 0xFFFF_F802_1A0E_0000,
        ..Default::default()
    };
    let dump = open(machine().bitmap_dump(&spec)).unwrap();
    let h = dump.header();
    assert_eq!(h.dump_type, DumpType::Bitmap);
    assert_eq!(h.build(), 19041);
    assert_eq!(h.directory_table_base, PhysAddr(0x1AD000));
    assert_eq!(h.ps_loaded_module_list.0, 0xFFFF_F802_1A0F_0000);
    assert_eq!(h.kd_debugger_data_block.0, 0xFFFF_F802_1A0E_0000);
    assert_eq!(h.bug_check.code, 0xD1);
    assert_eq!(h.bug_check.parameters[3], 0x1003);
    assert_eq!(h.context_rip, 0xFFFF_F800_0000_2000);
    assert_eq!(h.comment, None);
    assert!(matches!(
        h.layout,
        PageLayout::Bitmap {
            kind: BitmapKind::Sdmp,
            ..
        }
    ));
    assert_eq!(dump.kernel_dtb(), PhysAddr(0x1AD000));
    // The kernel page walk works through the dump.
    assert!(
        dump.translate(crate::KernelVa(0xFFFF_F802_1A00_0000))
            .is_err()
    );
}

#[test]
fn dump_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CrashDump>();
}

#[test]
fn a_map_the_two_readers_disagree_on_opens_with_pooldumps_and_a_warning() {
    let e = |pfn: u64, pages: u64, off: u64| PhysExtent {
        pfn: Pfn(pfn),
        pages,
        file_offset: off,
    };
    let same = vec![e(0, 4, 0x2000), e(16, 2, 0x6000)];
    let (used, warning) = reconcile(same.clone(), same.clone());
    assert_eq!((used, warning), (same.clone(), None));

    let kdmp = vec![e(0, 4, 0x2000), e(16, 3, 0x6000)];
    let (used, warning) = reconcile(kdmp, same.clone());
    assert_eq!(used, same);
    let w = warning.expect("a warning");
    assert!(
        w.contains("kdmp-parser has PFN 0x10 +3 pages at file offset 0x6000"),
        "{w}"
    );
    assert!(w.contains("the header describes PFN 0x10 +2 pages"), "{w}");
    assert!(w.contains("pooldump's is used"), "{w}");
}
