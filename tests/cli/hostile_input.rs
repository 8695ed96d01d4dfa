//! Hostile input through the real binary: bounded memory while
//! decoding (the xz bomb, `/dev/zero` as pooltag.txt and as a tags file),
//! the one escaping rule in every renderer, and the five messages that
//! used to be unclear, each with its exact text.
//!
//! Memory is measured as the child's peak resident set (`wait4`'s
//! `ru_maxrss` on that child, `support::run_measured`), not by timing.

use crate::support;

use std::path::{Path, PathBuf};

use pooldump_core::text::is_unsafe;
use support::{CLI_LIMIT, Finished, pooldump_command, repo_root, run_measured, sample};

/// Every hostile input must be handled in less than this.
const PEAK_LIMIT: u64 = 300 << 20;

fn pooldump(args: &[&str]) -> (Finished, u64) {
    run_measured(&mut pooldump_command(args), CLI_LIMIT)
}

/// `analyze DUMP` offline with the pooltag file `pooltag`.
fn analyze_with_pooltag<'a>(dump: &'a str, syms: &'a str, pooltag: &'a str) -> [&'a str; 8] {
    [
        "analyze",
        dump,
        "--symbol-path",
        syms,
        "--offline",
        "--no-cache",
        "--pooltag",
        pooltag,
    ]
}

/// Run and check the peak; the peak is printed so `--nocapture` shows the
/// figures docs/security.md quotes.
fn measured(what: &str, args: &[&str]) -> Finished {
    let (f, peak) = pooldump(args);
    eprintln!("{what}: peak RSS {} MiB", peak >> 20);
    assert!(
        peak < PEAK_LIMIT,
        "{what}: peak RSS {peak} bytes (limit {PEAK_LIMIT})\n{}",
        f.stderr
    );
    f
}

fn no_raw_unsafe(what: &str, text: &str) {
    if let Some((i, c)) = text
        .char_indices()
        .find(|&(_, c)| c != '\n' && is_unsafe(c))
    {
        panic!(
            "{what}: raw {c:?} at byte {i}: {:?}",
            &text[i.saturating_sub(40)..(i + 40).min(text.len())]
        );
    }
}

// --- bounded memory -------------------------------------------------------

#[test]
fn an_isf_xz_bomb_is_refused_while_decoding() {
    let (dump, _) = sample();
    let bomb = repo_root().join("testdata/hostile/bomb-512MiB-of-spaces.json.xz");
    let f = measured(
        "xz bomb",
        &[
            "symbols",
            &dump,
            "--isf",
            &bomb.display().to_string(),
            "--offline",
            "--no-builtin",
            "--no-cache",
        ],
    );
    assert_eq!(f.code(), Some(1), "{}", f.stderr);
    let want = format!(
        "{} decompresses to more than 67108864 bytes; refusing it",
        bomb.display()
    );
    assert!(f.stderr.contains(&want), "{}", f.stderr);
    assert!(!f.stderr.contains("io error"), "{}", f.stderr);
    // The file is named once, and --isf, given already, is not suggested.
    let bomb = bomb.display().to_string();
    assert_eq!(f.stderr.matches(bomb.as_str()).count(), 1, "{}", f.stderr);
    assert!(!f.stderr.contains("--isf FILE"), "{}", f.stderr);
}

#[test]
fn dev_zero_and_urandom_as_pooltag_are_refused_at_the_cap() {
    let (dump, syms) = sample();
    for dev in ["/dev/zero", "/dev/urandom"] {
        let f = measured(
            &format!("--pooltag {dev}"),
            &analyze_with_pooltag(&dump, &syms, dev),
        );
        assert_eq!(f.code(), Some(1));
        assert_eq!(
            f.stderr,
            format!("error: {dev} is larger than 16777216 bytes: not a pooltag.txt\n")
        );
    }
}

#[test]
fn dev_zero_as_a_tags_file_is_refused_at_the_cap() {
    let (dump, syms) = sample();
    let f = measured(
        "--tags-from /dev/zero",
        &[
            "find",
            &dump,
            "--symbol-path",
            &syms,
            "--offline",
            "--no-cache",
            "--tags-from",
            "/dev/zero",
        ],
    );
    assert_eq!(f.code(), Some(1));
    assert_eq!(
        f.stderr,
        "error: /dev/zero is larger than 8388608 bytes: not a tags file\n"
    );
}

// --- escaping ---------------------------------------------------------------

/// Text a terminal would act on: colours, clear screen, an OSC title, BEL,
/// NUL, C1 CSI, a bidi override and isolate, a zero-width space; and
/// spreadsheet formulas.
const EVIL: &str =
    "\u{1b}[31mred\u{1b}[2J\u{1b}]0;pwned\u{7}\u{0}\u{9b}6n gpj.\u{202e}exe\u{2066}\u{200b}";

fn hostile_pooltag(dir: &Path) -> PathBuf {
    let p = dir.join("pooltag.txt");
    let text = format!(
        "Leak - evil{EVIL}.sys - leaks {EVIL}\r\nLkBf - =HYPERLINK(\"http://x\",\"y\") - @SUM(1+1)\r\nMmSt - +cmd|' /C calc'!A0 - -2+3\r\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// The sample dump with leakydrv.sys's module name and its image's PDB
/// name replaced, byte for byte, by hostile ones of the same length.
fn hostile_dump(dir: &Path) -> PathBuf {
    let (dump, _) = sample();
    let mut d = std::fs::read(dump).unwrap();
    let swap = |d: &mut Vec<u8>, from: &[u8], to: &[u8]| {
        assert_eq!(from.len(), to.len());
        let at = d
            .windows(from.len())
            .position(|w| w == from)
            .expect("the sample holds the name");
        d[at..at + from.len()].copy_from_slice(to);
    };
    let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    // BaseDllName: 12 UTF-16 units.
    swap(
        &mut d,
        &utf16("leakydrv.sys"),
        &utf16("lk\u{1b}]0;\u{7}\u{202e}.sys"),
    );
    // The RSDS record's name: 12 bytes (ESC, CSI 2J, U+202E in UTF-8, BEL).
    swap(&mut d, b"leakydrv.pdb", b"\x1b[2J\xe2\x80\xae\x07.pdb");
    let p = dir.join("MEMORY.DMP");
    std::fs::write(&p, d).unwrap();
    p
}

#[test]
fn hostile_text_is_escaped_in_every_renderer() {
    let dir = tempfile::tempdir().unwrap();
    let (_, syms) = sample();
    let db = hostile_pooltag(dir.path());
    let dump = hostile_dump(dir.path());
    let dump = dump.display().to_string();
    let db = db.display().to_string();
    let common = ["--symbol-path", &syms, "--offline", "--no-cache"];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(common.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |what: &str, args: Vec<String>| -> Finished {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let f = measured(what, &a);
        no_raw_unsafe(&format!("{what} stdout"), &f.stdout);
        no_raw_unsafe(&format!("{what} stderr"), &f.stderr);
        f
    };

    // analyze: pooltag descriptions and drivers, the module name in the
    // Mapped_Driver search, in text, CSV and JSON.
    let text = run(
        "analyze",
        with(&["analyze", &dump, "--pooltag", &db, "--top", "100"]),
    );
    support::assert_contains(
        text.ok(),
        "evil\\u001b[31mred\\u001b[2J\\u001b]0;pwned\\u0007\\u0000\\u009b6n gpj.\\u202eexe\\u2066\\u200b.sys",
    );
    let csv = run(
        "analyze --csv",
        with(&["analyze", &dump, "--pooltag", &db, "--csv", "--top", "100"]),
    );
    assert_eq!(csv.code(), Some(0), "{}", csv.stderr);
    let lines: Vec<&str> = csv.stdout.lines().collect();
    let lkbf = lines.iter().find(|l| l.starts_with("LkBf,")).unwrap();
    assert!(
        lkbf.contains(",\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",'@SUM(1+1),"),
        "{lkbf}"
    );
    for line in &lines {
        for cell in line.split(',') {
            let c = cell.trim_start_matches('"');
            let formula = c.starts_with(['=', '+', '@', '\t', '\r'])
                || (c.starts_with('-') && c.parse::<f64>().is_err());
            assert!(!formula, "formula cell {cell:?} in {line}");
        }
    }
    let json = run(
        "analyze --json",
        with(&["analyze", &dump, "--pooltag", &db, "--json"]),
    );
    assert_eq!(json.code(), Some(0), "{}", json.stderr);
    // JSON keeps the data: the escapes decode to the original text.
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(json.stdout.contains("\\u202e"), "bidi escaped in JSON too");
    assert!(v.to_string().contains('\u{202e}'));

    // info: the module list and the drivers' names.
    let info = run("info", vec!["info".into(), dump.clone()]);
    support::assert_contains(info.ok(), "lk\\u001b]0;\\u0007\\u202e.sys");

    // find streams its output rather than returning it to main: the dump's
    // own name, hostile here, heads the text and is in the JSON.
    let named = dir.path().join("dump\u{1b}]0;pwned\u{7}\u{202e}.dmp");
    std::os::unix::fs::symlink(&dump, &named).unwrap();
    let named = named.display().to_string();
    let find = run("find", with(&["find", &named, "--tag", "Leak"]));
    support::assert_contains(
        find.ok(),
        "dump\\u001b]0;pwned\\u0007\\u202e.dmp: Windows build",
    );
    let find_csv = run(
        "find --csv",
        with(&["find", &named, "--tag", "Leak", "--csv"]),
    );
    assert_eq!(find_csv.code(), Some(0), "{}", find_csv.stderr);
    let find_json = run(
        "find --json",
        with(&["find", &named, "--tag", "Leak", "--json"]),
    );
    assert_eq!(find_json.code(), Some(0), "{}", find_json.stderr);
    let v: serde_json::Value = serde_json::from_str(&find_json.stdout).unwrap();
    assert_eq!(v["source"]["name"], named.as_str(), "the escapes decode");

    // callsites: module!function+off over the dump's drivers.
    let cs = run("callsites", with(&["callsites", &dump, "--tag", "Leak"]));
    no_raw_unsafe("callsites", &cs.stdout);

    // stack: module names and the driver's PDB name in the notes.
    let st = run("stack", with(&["stack", &dump]));
    no_raw_unsafe("stack", &st.stdout);

    // symbols: module and PDB names.
    let sy = run("symbols", with(&["symbols", &dump]));
    assert_eq!(sy.code(), Some(0), "{}", sy.stderr);

    // Snapshots carry the driver field: diff, trend and top read them back.
    let a = dir.path().join("a.json");
    let snap = run(
        "snapshot",
        with(&[
            "snapshot",
            &dump,
            "--pooltag",
            &db,
            "-o",
            &a.display().to_string(),
        ]),
    );
    assert_eq!(snap.code(), Some(0), "{}", snap.stderr);
    // A second, hand-edited snapshot: hostile tag text, more bytes, later.
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&a).unwrap()).unwrap();
    for row in doc["rows"].as_array_mut().unwrap() {
        if row["tag"] == "Leak" {
            row["bytes"] = serde_json::json!(row["bytes"].as_u64().unwrap() * 2);
            row["driver"] = serde_json::json!(format!("drv{EVIL}"));
        }
    }
    let b = dir.path().join("b.json");
    std::fs::write(&b, serde_json::to_string(&doc).unwrap()).unwrap();
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let diff = run("diff", vec!["diff".into(), a.clone(), b.clone()]);
    assert_eq!(diff.code(), Some(0), "{}", diff.stderr);
    assert!(diff.stdout.contains("\\u202e"), "{}", diff.stdout);
    let trend = run(
        "trend",
        vec![
            "trend".into(),
            a.clone(),
            b.clone(),
            "--svg".into(),
            dir.path().join("t.svg").display().to_string(),
        ],
    );
    no_raw_unsafe(
        "trend svg",
        &std::fs::read_to_string(dir.path().join("t.svg")).unwrap_or_default(),
    );
    assert!(trend.code().is_some());
    let top = run(
        "top --once",
        vec![
            "top".into(),
            b.clone(),
            "--once".into(),
            "--since".into(),
            a,
        ],
    );
    assert_eq!(top.code(), Some(0), "{}", top.stderr);
    assert!(top.stdout.contains("drv\\u001b[31mred"), "{}", top.stdout);
}

// --- the five unclear messages ----------------------------------------------

/// A copy of the sample's PDB whose PDB-information stream is cut to 8
/// bytes in the MSF directory: pdb2 reads past its end (UnexpectedEof).
fn damaged_pdb(dir: &Path) -> PathBuf {
    let src = repo_root().join(
        "testdata/sample/symbols/ntkrnlmp.pdb/06564D3477822C7D97F04852CBD5AFD61/ntkrnlmp.pdb",
    );
    let mut d = std::fs::read(src).unwrap();
    let u32_at =
        |d: &[u8], at: usize| u32::from_le_bytes(d[at..at + 4].try_into().unwrap()) as usize;
    let block = u32_at(&d, 32);
    let map = u32_at(&d, 52);
    let directory = u32_at(&d, map * block) * block;
    d[directory + 8..directory + 12].copy_from_slice(&8u32.to_le_bytes());
    let p = dir.join("ntkrnlmp.pdb");
    std::fs::write(&p, d).unwrap();
    p
}

#[test]
fn a_damaged_pdb_names_the_file_once_and_never_suggests_pdb_again() {
    let dir = tempfile::tempdir().unwrap();
    let pdb = damaged_pdb(dir.path()).display().to_string();
    let (dump, _) = sample();
    let (f, _) = pooldump(&["analyze", &dump, "--pdb", &pdb, "--offline", "--no-cache"]);
    assert_eq!(f.code(), Some(1));
    assert_eq!(
        f.stderr,
        format!(
            "error: {dump}: build 19041: {pdb} is not a readable PDB: a record runs past the end of its stream: the file is truncated or damaged\n\
             fix: --pdb {pdb} cannot serve this kernel; pass its own ntkrnlmp.pdb (the GUID and age the dump's kernel names: `pooldump info` shows them), or leave --pdb out so the symbol path is searched\n"
        )
    );
}

#[test]
fn a_snapshot_with_a_utf8_bom_is_read_as_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = sample();
    let a = dir.path().join("a.json").display().to_string();
    let (f, _) = pooldump(&[
        "snapshot",
        &dump,
        "--symbol-path",
        &syms,
        "--offline",
        "--no-cache",
        "-o",
        &a,
    ]);
    assert_eq!(f.code(), Some(0), "{}", f.stderr);
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(std::fs::read(&a).unwrap());
    let b = dir.path().join("bom.json").display().to_string();
    std::fs::write(&b, bom).unwrap();
    let (plain, _) = pooldump(&["diff", &a, &a]);
    let (with_bom, _) = pooldump(&["diff", &a, &b]);
    assert_eq!(with_bom.code(), Some(0), "{}", with_bom.stderr);
    assert_eq!(with_bom.stderr, "");
    // The same report, but for the second file's name.
    assert_eq!(with_bom.stdout.replace(&b, &a), plain.stdout);
}

#[test]
fn a_pooltag_txt_in_utf16_without_a_bom_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = sample();
    let text =
        "rem saved as Unicode, no byte-order mark\r\nLeak - leakydrv.sys - the leaking driver\r\n";
    let u8p = dir.path().join("utf8.txt");
    let u16p = dir.path().join("utf16.txt");
    std::fs::write(&u8p, text).unwrap();
    std::fs::write(
        &u16p,
        text.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let run = |p: &Path| {
        pooldump(&analyze_with_pooltag(
            &dump,
            &syms,
            &p.display().to_string(),
        ))
        .0
    };
    let (a, b) = (run(&u8p), run(&u16p));
    assert_eq!(b.code(), Some(0), "{}", b.stderr);
    assert_eq!(a.stdout, b.stdout);
    assert!(b.stdout.contains("leakydrv.sys"));
    // A file that is no pooltag.txt at all says what it starts with.
    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "hello\u{1b}[2J world\n").unwrap();
    let f = run(&junk);
    assert_eq!(
        f.stderr,
        format!(
            "error: {}: not a pooltag.txt: no line reads `Tag - binary - description` (the file starts `hello\\u001b[2J world`)\n",
            junk.display()
        )
    );
}

#[test]
fn a_bad_address_from_an_isf_names_the_isf() {
    let Some(shared) = support::shared_dir() else {
        return;
    };
    // The real 19041 ISF: its layouts fit the sample's kernel, its RVAs
    // are Microsoft's build's, not the kit's.
    let isf = shared.join("isf/06564D3477822C7D97F04852CBD5AFD6-1.json.xz");
    let isf = isf.display().to_string();
    let (dump, _) = sample();
    let (f, _) = pooldump(&[
        "analyze",
        &dump,
        "--isf",
        &isf,
        "--offline",
        "--no-builtin",
        "--no-cache",
    ]);
    assert_eq!(f.code(), Some(1));
    assert_eq!(
        f.stderr,
        format!(
            "error: {dump}: build 19041: reading the pool tag tracker\n  \
             caused by: cannot read nt!PoolTrackTable (RVA 0xc169b8 from ISF {isf}) at fffff802`b52169b8\n  \
             caused by: fffff802`b52169b8 is not mapped (PDE not present)\n"
        )
    );
}

#[test]
fn a_codeview_name_that_climbs_is_not_clean_and_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (dump, syms) = sample();
    let mut d = std::fs::read(&dump).unwrap();
    let at = d
        .windows(12)
        .position(|w| w == b"ntkrnlmp.pdb")
        .expect("nt's RSDS name");
    d[at..at + 12].copy_from_slice(b"..\\..\\evil\0\0");
    let p = dir.path().join("MEMORY.DMP");
    std::fs::write(&p, d).unwrap();
    let p = p.display().to_string();
    let (info, _) = pooldump(&["info", &p, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    let cv = &v["kernel"]["image"]["codeview"];
    assert_eq!(cv["pdb_name"], "..\\..\\evil", "{cv}");
    assert_eq!(cv["name_is_clean"], false);
    let (f, _) = pooldump(&[
        "analyze",
        &p,
        "--symbol-path",
        &syms,
        "--offline",
        "--no-cache",
        "--no-builtin",
    ]);
    assert_eq!(f.code(), Some(1));
    assert_eq!(
        f.stderr.lines().next().unwrap(),
        format!(
            "error: {p}: build 19041: the PDB name '..\\..\\evil' is not safe to use as a file name: it climbs directories with '..' (no linker records that)"
        )
    );
}
