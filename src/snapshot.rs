//! `pooldump snapshot`: PoolMon's table at one moment, as a versioned JSON
//! document (pooldump.snapshot/2, docs/leak-hunting.md), and the snapshot
//! sources every leak-hunting command shares.
//!
//! A [`SnapshotSource`] is where snapshots come from: a crash dump (always
//! the same moment), a snapshot file written earlier, or a live KDNET
//! target (a new moment each time; the target is stopped only while it is
//! read). `watch`, `top`, `diff` and `trend` only see this trait.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pooldump_core::PoolTag;
use pooldump_core::Target;
use pooldump_core::dump::CrashDump;
use pooldump_core::kernel::{self, WalkLimits};
use pooldump_core::pool::{PoolClass, PoolTagDb};
use pooldump_core::snapshot::{CaptureContext, CaptureOptions, Snapshot, SourceInfo, SourceKind};
use pooldump_core::snapshot_text::{self, TextTime};
use pooldump_kdnet::{KdnetSpec, LiveTarget};

use crate::args::{FilterArgs, ReadArgs};
use crate::common::{connect_live, open_dump, write_atomically};

/// Take a snapshot of a dump or a live KDNET target.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The crash dump (MEMORY.DMP).
    #[arg(
        value_name = "DUMP",
        required_unless_present_any = ["kdnet", "from_text"],
        conflicts_with_all = ["kdnet", "from_text"]
    )]
    pub dump: Option<PathBuf>,
    #[command(flatten)]
    pub live: LiveArgs,
    /// Import a PoolMon display or /n log (poolsnap.log), or WinDbg
    /// `!poolused` output (any of its layouts), instead of reading a kernel.
    #[arg(long, value_name = "FILE", conflicts_with = "kdnet")]
    pub from_text: Option<PathBuf>,
    /// With --from-text: when the text was taken (RFC 3339, or
    /// `YYYY-MM-DD HH:MM:SS` in UTC). Default: the text's own `Debug
    /// session time:`, else the file's modification time.
    #[arg(long, value_name = "TIME", requires = "from_text")]
    pub time: Option<String>,
    /// With --from-text: which table of a file that holds several (1 =
    /// the first; default the last).
    #[arg(long, value_name = "N", requires = "from_text")]
    pub table: Option<usize>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Write the snapshot here instead of to standard output.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// A live target.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveArgs {
    /// Read a live kernel over KDNET, with WinDbg's `-k net:` settings:
    /// `port=50000,key=a.b.c.d`. The target is stopped while it is read
    /// and resumed at once.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub kdnet: Option<String>,
}

pub fn run(args: &Args) -> Result<String> {
    if let Some(text) = &args.from_text {
        let time = match &args.time {
            Some(t) => TextTime::Given(snapshot_text::parse_time_arg(t).with_context(|| {
                format!("--time {t}: not a time (use 2024-11-14T10:30:00Z or \"2024-11-14 10:30:00\", UTC)")
            })?),
            None => file_mtime(text),
        };
        let table = match args.table {
            Some(0) => bail!("--table counts from 1"),
            n => n.map(|n| n - 1),
        };
        let snap = import_text(text, table, time)?;
        return finish(args, &snap);
    }
    let db = args.read.pooltag_db()?;
    let mut source = match (&args.dump, &args.live.kdnet) {
        (_, Some(spec)) => Box::new(LiveSource::connect(spec, &args.read, db.as_ref())?)
            as Box<dyn SnapshotSource + '_>,
        (Some(dump), None) => Box::new(DumpSource::open(dump, &args.read, db.as_ref())?),
        (None, None) => bail!("name a DUMP or --kdnet SPEC"),
    };
    let snap = source.take()?;
    finish(args, &snap)
}

/// Write the snapshot where asked.
fn finish(args: &Args, snap: &Snapshot) -> Result<String> {
    for w in &snap.warnings {
        eprintln!("warning: {}", pooldump_core::text::escape_lines(&w.message));
    }
    let json = snap.to_json();
    match &args.out {
        Some(path) => {
            write_atomically(path, json.as_bytes())?;
            Ok(format!(
                "{}: {} tags, Nonp {} bytes, Paged {} bytes, {}\n",
                path.display(),
                snap.totals.tags,
                snap.totals.nonpaged.bytes,
                snap.totals.paged.bytes,
                snap.time
                    .system_time
                    .as_deref()
                    .unwrap_or("machine time unknown")
            ))
        }
        None => Ok(json),
    }
}

/// Where snapshots come from.
pub trait SnapshotSource {
    /// The dump's path, the snapshot file, or the KDNET peer.
    fn describe(&self) -> String;
    /// Does the machine run on between snapshots?
    fn is_live(&self) -> bool;
    /// Take one snapshot. A live target is stopped for the read and let
    /// run again before this returns, whether the read worked or not.
    fn take(&mut self) -> Result<Snapshot>;
}

/// A crash dump: every snapshot is the same moment.
pub struct DumpSource<'a> {
    path: PathBuf,
    target: Target<CrashDump>,
    opts: CaptureOptions<'a>,
}

impl<'a> DumpSource<'a> {
    pub fn open(path: &Path, read: &ReadArgs, db: Option<&'a PoolTagDb>) -> Result<Self> {
        let target = open_dump(path, &read.symbols)?;
        Ok(Self {
            path: path.to_path_buf(),
            target,
            opts: capture_options(read, db),
        })
    }
}

impl SnapshotSource for DumpSource<'_> {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
    fn is_live(&self) -> bool {
        false
    }
    fn take(&mut self) -> Result<Snapshot> {
        let h = self.target.mem.header();
        let ctx = CaptureContext {
            source: SourceInfo {
                kind: SourceKind::Dump,
                name: self.describe(),
            },
            build: h.build(),
            header_clock: Some((h.system_time, h.system_up_time)),
        };
        let mut snap = self.target.snapshot(&ctx, &self.opts)?;
        let mut notes = self.target.warnings.clone();
        notes.append(&mut snap.warnings);
        snap.warnings = notes;
        Ok(snap)
    }
}

/// A snapshot file written earlier.
pub struct StoredSource {
    path: PathBuf,
    snap: Snapshot,
}

impl SnapshotSource for StoredSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
    fn is_live(&self) -> bool {
        false
    }
    fn take(&mut self) -> Result<Snapshot> {
        Ok(self.snap.clone())
    }
}

/// A live kernel over KDNET. If the session dies (the target rebooted, the
/// network went away), the next snapshot connects again.
pub struct LiveSource<'a> {
    spec: KdnetSpec,
    text: String,
    read: ReadArgs,
    target: Option<Target<LiveTarget>>,
    opts: CaptureOptions<'a>,
}

impl<'a> LiveSource<'a> {
    /// Parse the spec and connect (waiting for the target's offer).
    pub fn connect(spec: &str, read: &ReadArgs, db: Option<&'a PoolTagDb>) -> Result<Self> {
        let parsed: KdnetSpec = spec.parse().with_context(|| format!("--kdnet {spec}"))?;
        let mut s = Self {
            spec: parsed,
            text: spec.to_string(),
            read: read.clone(),
            target: None,
            opts: capture_options(read, db),
        };
        s.target = Some(s.open()?);
        Ok(s)
    }

    fn open(&self) -> Result<Target<LiveTarget>> {
        connect_live(&self.spec, &self.read.symbols)
    }

    fn take_stopped(&mut self) -> Result<Snapshot> {
        if self.target.is_none() {
            self.target = Some(self.open()?);
        }
        let t = self.target.as_mut().expect("connected above");
        t.mem.break_in().context("breaking into the target")?;
        // Drivers load and unload while the machine runs.
        if let Some(head) = t.kernel.ps_loaded_module_list
            && let Ok((layout, _)) = t.symbols.kldr_layout()
        {
            t.modules = Some(kernel::walk_loaded_modules(
                &t.mem,
                head,
                &layout,
                &WalkLimits::default(),
            ));
        }
        let ctx = CaptureContext {
            source: SourceInfo {
                kind: SourceKind::Kdnet,
                name: format!("kdnet:{}", t.mem.peer()),
            },
            build: t.mem.build(),
            header_clock: None,
        };
        Ok(t.snapshot(&ctx, &self.opts)?)
    }
}

impl SnapshotSource for LiveSource<'_> {
    fn describe(&self) -> String {
        match &self.target {
            Some(t) => format!("KDNET target {}", t.mem.peer()),
            None => format!("KDNET {}", self.text),
        }
    }
    fn is_live(&self) -> bool {
        true
    }
    fn take(&mut self) -> Result<Snapshot> {
        let r = self.take_stopped();
        let resumed = match &self.target {
            Some(t) => t.mem.resume().context("resuming the target"),
            None => Ok(()),
        };
        if r.is_err() || resumed.is_err() {
            // Start over with a new session next time.
            self.target = None;
        }
        let snap = r?;
        resumed?;
        Ok(snap)
    }
}

fn capture_options<'a>(read: &ReadArgs, db: Option<&'a PoolTagDb>) -> CaptureOptions<'a> {
    CaptureOptions {
        pooltag: db,
        search_images: !read.no_image_search,
        ..Default::default()
    }
}

/// The largest snapshot file read: a real machine has a few thousand tags
/// (a few hundred KiB of JSON); this bounds what a wrong file costs.
/// A snapshot larger than this is refused (one with every tag of a busy
/// server is under a megabyte).
const MAX_SNAPSHOT_FILE: u64 = 64 << 20;

/// What a file on the command line is.
enum FileKind {
    Dump,
    Snapshot,
    /// PoolMon or `!poolused` text.
    Text,
}

/// A text file's modification time as a FILETIME.
fn file_mtime(path: &Path) -> TextTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(TextTime::Unknown, |d| {
            TextTime::FileModified(pooldump_core::dump::FileTime::from_unix_seconds(d.as_secs()).0)
        })
}

/// Read PoolMon or `!poolused` text as a snapshot (the last table unless
/// `table` says which). Lines it could not read are in the snapshot's
/// warnings, with their numbers.
pub fn import_text(path: &Path, table: Option<usize>, time: TextTime) -> Result<Snapshot> {
    let bytes = pooldump_core::input::read_capped(
        path,
        snapshot_text::MAX_TEXT_FILE,
        "PoolMon or !poolused text",
    )?;
    let import = snapshot_text::parse_text(&bytes, &path.display().to_string())?;
    if let Some(t) = table
        && t >= import.tables.len()
    {
        bail!(
            "{}: --table {}: the file holds {} table(s)",
            path.display(),
            t + 1,
            import.tables.len()
        );
    }
    Ok(snapshot_text::to_snapshot(&import, table, path, time))
}

fn sniff(path: &Path) -> Result<FileKind> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut head = [0u8; 64];
    let n = f
        .read(&mut head)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let head = &head[..n];
    if head.starts_with(b"PAGE") {
        return Ok(FileKind::Dump);
    }
    // A snapshot saved by an editor on Windows starts with a UTF-8 BOM.
    let json = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    if json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Ok(FileKind::Snapshot);
    }
    // Anything else is tried as PoolMon or !poolused text, whose error
    // lists the formats tried.
    Ok(FileKind::Text)
}

/// Read a snapshot file.
pub fn read_snapshot(path: &Path) -> Result<Snapshot> {
    let bytes = pooldump_core::input::read_capped(path, MAX_SNAPSHOT_FILE, "a snapshot")?;
    Ok(Snapshot::from_json(&bytes, &path.display().to_string())?)
}

/// Open a dump or a snapshot file as a source.
pub fn open_file<'a>(
    path: &Path,
    read: &ReadArgs,
    db: Option<&'a PoolTagDb>,
) -> Result<Box<dyn SnapshotSource + 'a>> {
    Ok(match sniff(path)? {
        FileKind::Dump => Box::new(DumpSource::open(path, read, db)?),
        FileKind::Snapshot => Box::new(StoredSource {
            path: path.to_path_buf(),
            snap: read_snapshot(path)?,
        }),
        FileKind::Text => Box::new(StoredSource {
            path: path.to_path_buf(),
            snap: import_text(path, None, file_mtime(path)).map_err(|e| {
                e.context(format!(
                    "{}: neither a crash dump (no PAGE signature), a snapshot (JSON), nor PoolMon or !poolused text",
                    path.display()
                ))
            })?,
        }),
    })
}

/// A snapshot of a dump or a snapshot file.
pub fn load(path: &Path, read: &ReadArgs, db: Option<&PoolTagDb>) -> Result<Snapshot> {
    open_file(path, read, db)?.take()
}

impl FilterArgs {
    pub fn keeps(&self, tag: PoolTag, pool: PoolClass) -> bool {
        self.pool.class().is_none_or(|p| p == pool)
            && (self.include.is_empty() || self.include.iter().any(|p| p.matches(tag)))
            && !self.exclude.iter().any(|p| p.matches(tag))
    }
}

/// PoolMon's change column: `value (change)`, with the values and the
/// changes of one column each right-aligned, so the parentheses line up
/// as PoolMon's do.
pub fn change_cells(pairs: &[(u64, i64)]) -> Vec<String> {
    let vw = pairs
        .iter()
        .map(|(v, _)| v.to_string().len())
        .max()
        .unwrap_or(1);
    let dw = pairs
        .iter()
        .map(|(_, d)| signed(*d).len())
        .max()
        .unwrap_or(1);
    pairs
        .iter()
        .map(|(v, d)| format!("{v:>vw$} ({:>dw$})", signed(*d)))
        .collect()
}

/// `+5`, `-3`, `0`.
pub fn signed(d: i64) -> String {
    if d > 0 {
        format!("+{d}")
    } else {
        d.to_string()
    }
}

/// `12.3 KiB`.
pub fn human_bytes(b: f64) -> String {
    let a = b.abs();
    let (v, unit) = if a >= (1u64 << 30) as f64 {
        (b / (1u64 << 30) as f64, "GiB")
    } else if a >= (1u64 << 20) as f64 {
        (b / (1u64 << 20) as f64, "MiB")
    } else if a >= 1024.0 {
        (b / 1024.0, "KiB")
    } else {
        return format!("{b:.0} B");
    };
    format!("{v:.1} {unit}")
}
