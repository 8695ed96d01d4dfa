//! What every command that reads a kernel shares: the symbol options
//! (WinDbg's `_NT_SYMBOL_PATH` conventions) and opening a dump into a
//! [`Target`] with errors that say what to do.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use pooldump_core::dump::CrashDump;
use pooldump_core::memory::Translation;
use pooldump_core::symbols::{DownloadProgress, SymbolOptions, SymbolPath, default_cache_dir};
use pooldump_core::{KernelVa, Memory, MemoryError, OpenError, PhysAddr, Target};
use pooldump_kdnet::{KdnetSpec, LeftRunning, LinkStats, LiveTarget};

/// Where nt's symbols come from.
#[derive(Debug, Clone, clap::Args)]
pub struct SymbolArgs {
    /// Symbol path in _NT_SYMBOL_PATH syntax (overrides the environment): a
    /// directory or symbol store, or `srv*DIR*https://msdl.microsoft.com/download/symbols`
    /// to download into DIR; several separated by ';'.
    #[arg(long, value_name = "PATH")]
    pub symbol_path: Option<String>,
    /// Use this PDB for nt (it must match the kernel's GUID and age).
    #[arg(long, value_name = "FILE")]
    pub pdb: Option<PathBuf>,
    /// A Volatility ISF file (.json/.json.xz) or a directory of them; may be
    /// repeated.
    #[arg(long, value_name = "PATH")]
    pub isf: Vec<PathBuf>,
    /// Do not contact symbol servers.
    #[arg(long)]
    pub offline: bool,
    /// Do not fall back to the built-in layout table.
    #[arg(long)]
    pub no_builtin: bool,
    /// Do not read or write the layout cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl SymbolArgs {
    /// The symbol options these arguments and the environment give.
    pub fn options<'a>(&self, progress: Option<&'a dyn DownloadProgress>) -> SymbolOptions<'a> {
        let mut o = SymbolOptions::from_env();
        if let Some(sp) = &self.symbol_path {
            let store = default_cache_dir()
                .map(|c| c.join("symbols"))
                .unwrap_or_else(|| PathBuf::from("symbols"));
            o.symbol_path = SymbolPath::parse(sp, &store);
        }
        o.pdb_file = self.pdb.clone();
        o.isf = self.isf.clone();
        o.fetch.offline = self.offline;
        o.fetch.progress = progress;
        o.builtin = !self.no_builtin;
        o.builtin_supplement = !self.no_builtin;
        if self.no_cache {
            o.layout_cache = None;
        }
        o
    }

    /// Image files (binaries) along the symbol path, as WinDbg fetches
    /// them to unwind stacks (`<file>/<TimeDateStamp><SizeOfImage>/<file>`).
    /// Not for anything that must see the target's code as it is now
    /// (call sites, relabelled tags, import slots bound in memory): files
    /// hold the code as built.
    pub fn images(&self) -> std::sync::Arc<pooldump_core::symbols::images::SymbolPathImages> {
        let o = self.options(None);
        std::sync::Arc::new(pooldump_core::symbols::images::SymbolPathImages::new(
            o.symbol_path,
            &o.fetch,
        ))
    }

    /// [`Self::images`] from local stores and caches only (no server is
    /// asked): what the Mapped_Driver search of a live target reads
    /// instead of the target's code sections. Downloading every loaded
    /// driver's binary to save a few reads would cost more than it saves;
    /// images already fetched (by `stack`, `hittag`, WinDbg) are used.
    pub fn local_images(&self) -> std::sync::Arc<pooldump_core::symbols::images::SymbolPathImages> {
        let mut o = self.options(None);
        o.fetch.offline = true;
        std::sync::Arc::new(pooldump_core::symbols::images::SymbolPathImages::new(
            o.symbol_path,
            &o.fetch,
        ))
    }

    /// What to do about missing symbols, in this platform's terms. Never
    /// suggests an option the user already gave: after a bad `--pdb FILE`,
    /// "pass --pdb FILE" would send them round in a circle.
    pub fn hint(&self) -> String {
        if let Some(p) = &self.pdb {
            // Downloads and the built-in table play no part with --pdb.
            return format!(
                "fix: --pdb {} cannot serve this kernel; pass its own ntkrnlmp.pdb (the GUID and age the dump's kernel names: `pooldump info` shows them), or leave --pdb out so the symbol path is searched",
                p.display()
            );
        }
        let mut s = format!(
            "fix: {}",
            pooldump_core::symbols::symbol_path_hint(!self.isf.is_empty(),)
        );
        if self.offline {
            s.push_str("; --offline prevents downloads");
        }
        if self.no_builtin {
            s.push_str("; --no-builtin disables the built-in layout table");
        }
        s
    }

    /// [`Self::hint`], naming a `symbols` directory beside the dump when
    /// there is one and no symbol path was given (the layout the sample
    /// and `pooldump-kit` use).
    pub fn hint_for_dump(&self, dump: &Path) -> String {
        let beside = dump
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .map(|d| d.join("symbols"))
            .filter(|d| d.is_dir());
        match beside {
            Some(d) if self.symbol_path.is_none() && self.pdb.is_none() => format!(
                "fix: pass --symbol-path {} (the symbols directory beside the dump)\notherwise: {}",
                d.display(),
                self.hint().trim_start_matches("fix: ")
            ),
            _ => self.hint(),
        }
    }
}

/// Set once a command's kernel symbols came from the built-in table, so an
/// error later in the command can say so (see [`fallback_note`]).
static FALLBACK_NOTE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Remember that `t`'s symbols are the built-in table's, and what to do.
fn remember_fallback<M: Memory>(t: &Target<M>, sym: &SymbolArgs, dump: Option<&Path>) {
    if t.symbols.source().kind() != pooldump_core::symbols::SourceKind::BuiltIn {
        return;
    }
    let fix = match dump {
        Some(d) => sym.hint_for_dump(d),
        None => sym.hint(),
    };
    let _ = FALLBACK_NOTE.set(format!(
        "note: nt's symbols came from pooldump's built-in layout table ({}), the fallback used when no PDB or ISF is found; an error about the kernel's structures or globals may be the table's, not the {}'s\n{fix}",
        t.symbols.source(),
        if dump.is_some() { "dump" } else { "target" }
    ));
}

/// A command line the user must change: its operands are wrong (too many,
/// too few, not a number). The binary exits 2 for it, as clap does for
/// the options it checks itself.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// What `main` adds to an error when the command ran on the built-in
/// table's symbols.
pub fn fallback_note() -> Option<&'static str> {
    FALLBACK_NOTE.get().map(String::as_str)
}

/// A duration argument (`--interval`): humantime's syntax, with an error
/// that lists the units it accepts (humantime's own says only "time unit
/// needed").
pub fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| {
        format!(
            "{e}; give a number and a unit, such as 90s, 30m, 1h or 1h30m (units: ms, s or sec, m or min, h or hr, d or days)"
        )
    })
}

/// indicatif, drawn only on a terminal and only while downloading.
pub struct ProgressBar {
    bar: indicatif::ProgressBar,
}

impl ProgressBar {
    pub fn new() -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        Some(Self {
            bar: indicatif::ProgressBar::hidden(),
        })
    }
}

impl DownloadProgress for ProgressBar {
    fn start(&self, url: &str, total: Option<u64>) {
        self.bar
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.bar.set_length(total.unwrap_or(0));
        self.bar.set_position(0);
        let style = indicatif::ProgressStyle::with_template(
            "{msg}\n{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        self.bar.set_style(style);
        self.bar.set_message(format!("downloading {url}"));
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Where the kernel comes from: a crash dump or a live KDNET target.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// The crash dump (MEMORY.DMP: complete, kernel or automatic, or RDMP).
    #[arg(
        value_name = "DUMP",
        required_unless_present = "kdnet",
        conflicts_with = "kdnet"
    )]
    pub dump: Option<PathBuf>,
    /// Read a live kernel over KDNET instead, with WinDbg's `-k net:`
    /// settings: `port=50000,key=a.b.c.d` (`net:` prefix accepted). The
    /// target is broken into, read, and resumed.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub kdnet: Option<String>,
    /// With --kdnet: say on stderr what the link did (round trips, reads,
    /// bytes, retransmissions, RESETs, the measured round-trip time).
    #[arg(short, long)]
    pub verbose: bool,
}

/// The memory of a dump or of a live target, behind one [`Memory`].
pub type Source = Box<dyn Memory>;

/// How long a command waits for a target that stopped answering to offer
/// again, so it can be resumed rather than left frozen (targets offer
/// every 3 s).
pub const RECOVER_WAIT: Duration = Duration::from_secs(7);

/// A live target as a command holds it: however the command ends
/// (success, error, Ctrl-C unwinding), the target is left running, and
/// with `-v` the link's statistics are printed.
pub struct LiveSource {
    target: LiveTarget,
    verbose: bool,
    started: Instant,
}

impl LiveSource {
    pub fn new(target: LiveTarget, verbose: bool, started: Instant) -> Self {
        Self {
            target,
            verbose,
            started,
        }
    }

    /// The link's statistics for `--json`.
    pub fn report(&self) -> KdnetReport {
        KdnetReport::new(
            &self.target.peer().to_string(),
            &self.target.stats(),
            self.started.elapsed(),
        )
    }
}

impl std::ops::Deref for LiveSource {
    type Target = LiveTarget;
    fn deref(&self) -> &LiveTarget {
        &self.target
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        leave_running(&self.target);
        if self.verbose {
            eprintln!("{}", self.report().summary());
        }
    }
}

/// Resume the target, or if the link was lost, wait for it to offer again
/// and resume it; say on stderr what happened when it was not simple.
pub fn leave_running(t: &LiveTarget) {
    if t.link_lost() {
        eprintln!(
            "pooldump: the link to {} was lost; waiting up to {} s for the target to offer again, to resume it",
            t.peer(),
            RECOVER_WAIT.as_secs()
        );
    }
    match t.leave_running(RECOVER_WAIT) {
        Ok(LeftRunning::Reconnected { rebooted }) => eprintln!(
            "pooldump: reconnected to {} and resumed it{}",
            t.peer(),
            if rebooted { " (it had rebooted)" } else { "" }
        ),
        Ok(_) => {}
        Err(e) => eprintln!(
            "pooldump: could not leave the target running: {}",
            pooldump_core::text::escape_lines(&e.to_string())
        ),
    }
}

/// What the KDNET link did, for `--json` (`kdnet`) and `-v`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KdnetReport {
    pub peer: String,
    /// Requests made: one round trip each when nothing is lost.
    pub round_trips: u64,
    /// Of which memory reads, and the bytes they returned.
    pub reads: u64,
    pub read_bytes: u64,
    /// Retransmission timers that expired, packets sent again, RESETs.
    pub timeouts: u64,
    pub retransmissions: u64,
    pub resets: u64,
    /// Target packets received twice (ACKed again, used once).
    pub duplicates: u64,
    /// Datagrams dropped: not from the target, malformed, failed HMAC, bad
    /// KD packet.
    pub dropped: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub handshakes: u64,
    /// The measured round-trip time and the retransmission timeout it
    /// gives (RFC 6298), in milliseconds.
    pub srtt_ms: Option<f64>,
    pub rttvar_ms: f64,
    pub rto_ms: f64,
    /// From the start of the connection to now.
    pub seconds: f64,
}

impl KdnetReport {
    pub fn new(peer: &str, s: &LinkStats, elapsed: Duration) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Self {
            peer: peer.to_string(),
            round_trips: s.requests,
            reads: s.reads,
            read_bytes: s.read_bytes,
            timeouts: s.timeouts,
            retransmissions: s.retransmits,
            resets: s.resets_sent,
            duplicates: s.duplicates,
            dropped: s.dropped_foreign
                + s.dropped_malformed
                + s.dropped_bad_tag
                + s.dropped_bad_packet,
            datagrams_in: s.datagrams_in,
            datagrams_out: s.datagrams_out,
            handshakes: s.handshakes,
            srtt_ms: s.srtt.map(ms),
            rttvar_ms: ms(s.rttvar),
            rto_ms: ms(s.rto),
            seconds: elapsed.as_secs_f64(),
        }
    }

    /// The `-v` line.
    pub fn summary(&self) -> String {
        format!(
            "KDNET {}: {} round trips ({} reads, {} bytes) in {:.2} s; {} timeouts, {} retransmissions, {} RESETs, {} duplicates, {} dropped; RTT {} (var {:.2} ms), timeout {:.1} ms; {} datagrams out, {} in",
            self.peer,
            self.round_trips,
            self.reads,
            self.read_bytes,
            self.seconds,
            self.timeouts,
            self.retransmissions,
            self.resets,
            self.duplicates,
            self.dropped,
            self.srtt_ms
                .map_or_else(|| "not measured".to_string(), |v| format!("{v:.2} ms")),
            self.rttvar_ms,
            self.rto_ms,
            self.datagrams_out,
            self.datagrams_in,
        )
    }
}

impl Memory for LiveSource {
    fn describe(&self) -> String {
        self.target.describe()
    }
    fn kernel_dtb(&self) -> PhysAddr {
        self.target.kernel_dtb()
    }
    fn read_physical(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.target.read_physical(pa, buf)
    }
    fn translate(&self, va: KernelVa) -> Result<Translation, MemoryError> {
        self.target.translate(va)
    }
    fn read_virtual(&self, va: KernelVa, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.target.read_virtual(va, buf)
    }
    fn read_virtual_partial(&self, va: KernelVa, buf: &mut [u8]) -> Result<usize, MemoryError> {
        self.target.read_virtual_partial(va, buf)
    }
}

/// The live session behind a [`Source`], kept beside it so a command can
/// resume the target and report the link.
#[derive(Clone)]
pub struct LiveHandle(Arc<LiveSource>);

impl std::fmt::Debug for LiveHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveHandle({})", self.0.peer())
    }
}

/// What the source says about itself, beyond memory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceMeta {
    /// The dump's path or the KDNET peer.
    pub name: String,
    pub build: u32,
    pub processors: u64,
    /// The dump's SystemTime (UTC); none for a live target.
    pub system_time: Option<String>,
    pub live: bool,
    /// The session, for a live target.
    #[serde(skip)]
    pub link: Option<LiveHandle>,
}

/// Open a dump or connect to a live target, find nt, load its symbols.
pub fn open_source(src: &SourceArgs, sym: &SymbolArgs) -> Result<(Target<Source>, SourceMeta)> {
    match (&src.dump, &src.kdnet) {
        (_, Some(spec)) => {
            let parsed: KdnetSpec = spec.parse().with_context(|| format!("--kdnet {spec}"))?;
            let started = Instant::now();
            let t = connect_live(&parsed, sym)?;
            let meta = SourceMeta {
                name: format!("KDNET {}", t.mem.peer()),
                build: t.mem.build(),
                processors: t
                    .mem
                    .stop_info()
                    .map(|s| s.number_processors as u64)
                    .unwrap_or(0),
                system_time: None,
                live: true,
                link: None,
            };
            let verbose = src.verbose;
            let mut link = None;
            let t = t.map_mem(|m| {
                let live = Arc::new(LiveSource::new(m, verbose, started));
                link = Some(LiveHandle(Arc::clone(&live)));
                Box::new(live) as Source
            });
            Ok((t, SourceMeta { link, ..meta }))
        }
        (Some(path), None) => {
            let t = open_dump(path, sym)?;
            let h = t.mem.header();
            let meta = SourceMeta {
                name: path.display().to_string(),
                build: h.build(),
                processors: h.number_processors as u64,
                system_time: Some(h.system_time.to_string()),
                live: false,
                link: None,
            };
            Ok((t.map_mem(|m| Box::new(m) as Source), meta))
        }
        (None, None) => bail!("name a DUMP or --kdnet SPEC"),
    }
}

/// Open a crash dump with its symbols (a progress bar on a terminal while a
/// PDB downloads).
pub fn open_dump(path: &Path, sym: &SymbolArgs) -> Result<Target<CrashDump>> {
    if let Some(small) = open_small_dump(path)? {
        bail!("{}", small.no_pool_explanation());
    }
    let bar = ProgressBar::new();
    let opts = sym.options(bar.as_ref().map(|b| b as &dyn DownloadProgress));
    let t = Target::open_dump(path, &opts).map_err(|e| match e {
        OpenError::Symbols { .. } => anyhow!("{e}\n{}", sym.hint_for_dump(path)),
        e => anyhow::Error::new(e),
    })?;
    remember_fallback(&t, sym, Some(path));
    Ok(t)
}

/// The small memory dump at `path`, if that is what the file is (a
/// DumpType 4 header); `None` for anything else, which the kernel-dump
/// reader then judges.
pub fn open_small_dump(path: &Path) -> Result<Option<pooldump_core::dump::TriageDump>> {
    use std::io::Read;
    let mut head = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(0x1000).read_to_end(&mut head);
    }
    if !pooldump_core::dump::triage::is_small_memory_dump(&head) {
        return Ok(None);
    }
    Ok(Some(pooldump_core::dump::TriageDump::open(path)?))
}

/// Connect to a KDNET target (waiting for its offer), break in, find nt and
/// load its symbols. The target stays stopped until resumed.
pub fn connect_live(spec: &KdnetSpec, sym: &SymbolArgs) -> Result<Target<LiveTarget>> {
    let port = spec.port;
    let live = pooldump_kdnet::Session::connect(spec.clone().into())
        .with_context(|| format!("KDNET session on UDP port {port}"))?;
    let hints = live.boot_hints();
    let build = Some(live.build());
    let bar = ProgressBar::new();
    let opts = sym.options(bar.as_ref().map(|b| b as &dyn DownloadProgress));
    let mut t = Target::new(live, &hints, build, &opts).map_err(|e| symbols_error(e, sym))?;
    remember_fallback(&t, sym, None);
    // The Mapped_Driver search reads code and read-only data from image
    // files the symbol path already holds (checked against the headers in
    // memory) instead of over the wire. A tag written into a driver's code
    // on this boot (`relabel`) is in memory only: `--relabel MAP` names
    // those tags' sites.
    t.image_files = Some(sym.local_images());
    Ok(t)
}

/// A symbol failure says how to give pooldump the symbols.
pub fn symbols_error(e: OpenError, sym: &SymbolArgs) -> anyhow::Error {
    match e {
        OpenError::Symbols { .. } => anyhow!("{e}\n{}", sym.hint()),
        e => anyhow::Error::new(e),
    }
}

/// Let a live target run again (a dump needs nothing).
pub fn release(meta: &SourceMeta) -> Result<()> {
    if let Some(l) = &meta.link {
        l.0.resume().context("resuming the target")?;
    }
    Ok(())
}

/// The link's statistics of a live source, for `--json`.
pub fn kdnet_report(meta: &SourceMeta) -> Option<KdnetReport> {
    meta.link.as_ref().map(|l| l.0.report())
}

/// Read `--pooltag FILE` (capped at [`pooldump_core::pool::pooltag::MAX_POOLTAG_FILE`]
/// bytes); a file with no pooltag.txt line is refused with what it starts
/// with.
pub fn load_pooltag(path: &Path) -> Result<pooldump_core::pool::PoolTagDb> {
    let db = pooldump_core::pool::PoolTagDb::load(path)?;
    if db.is_empty() {
        let bytes =
            pooldump_core::input::read_capped(path, 4096, "a pooltag.txt").unwrap_or_default();
        let text = pooldump_core::pool::pooltag::decode_text(&bytes);
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let first: String = first.chars().take(60).collect();
        bail!(
            "{}: not a pooltag.txt: no line reads `Tag - binary - description` (the file starts `{}`)",
            path.display(),
            pooldump_core::text::escape(&first)
        );
    }
    Ok(db)
}

/// The message for a `--sort` value no table knows; `extra` lists what
/// one command accepts beyond PoolMon's columns.
pub fn unknown_sort(s: &str, extra: &str) -> String {
    use pooldump_core::pool::PoolMonColumn as C;
    format!(
        "unknown sort key `{s}` ({}{extra}, or PoolMon's letters {})",
        C::NAMES,
        C::LETTERS
    )
}

/// Write through a temporary file in the same directory, so a reader (or
/// a `watch` stopped mid-write) never sees half a snapshot.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(pooldump_core::fsio::without_temp_path)
        .with_context(|| {
            format!(
                "{}: cannot write (a file is made in {} first)",
                path.display(),
                dir.display()
            )
        })?;
    std::io::Write::write_all(&mut tmp, bytes)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}
