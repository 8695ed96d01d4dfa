//! `pooldump batch`: many dumps in parallel into two tables (tags: one row
//! per dump × tag; dumps: one row per file) as Parquet or NDJSON parts,
//! resumable. The work is pooldump-fleet's; this module wires arguments,
//! the progress bar and the summary.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pooldump_core::pool::PoolTagDb;
use pooldump_fleet::{
    AnalyzeOptions, BatchOptions, BatchProgress, DumpRecord, Format, ResultStore, Status,
};

/// Analyse many dumps in parallel into Parquet (or NDJSON) tables.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dump files, directories (searched for *.dmp, recursively) or glob
    /// patterns ('dumps/**/*.DMP').
    #[arg(value_name = "DIR|GLOB|FILE", required = true)]
    pub inputs: Vec<String>,
    /// The output directory: OUT/tags/ and OUT/dumps/ receive part files.
    /// Dumps already there (same content key and path) are skipped.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// parquet or ndjson.
    #[arg(long, value_enum, default_value_t = FormatArg::Parquet)]
    pub format: FormatArg,
    /// Dumps analysed at once (default: one per core).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Commit a part after N dumps (or 30 s after the oldest uncommitted
    /// one finished): what a killed batch can lose and redo.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub commit_every: usize,
    #[command(flatten)]
    pub read: ReadArgs,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Parquet,
    Ndjson,
}

pub fn run(args: &Args) -> Result<String> {
    let (inputs, warnings) = pooldump_fleet::inputs::expand(&args.inputs)?;
    for w in &warnings {
        // File names from the inputs: the one escaping rule.
        eprintln!("pooldump batch: {}", pooldump_core::text::escape_lines(w));
    }
    if inputs.is_empty() {
        bail!("{}: no *.dmp file found", args.inputs.join(" "));
    }
    let format = match args.format {
        FormatArg::Parquet => Format::Parquet,
        FormatArg::Ndjson => Format::Ndjson,
    };
    let mut store = ResultStore::open(&args.output, format)?;
    for p in &store.cleaned {
        eprintln!(
            "pooldump batch: removed {} (left by a batch that was stopped before committing it)",
            pooldump_core::text::escape(&p.display().to_string())
        );
    }
    let pooltag = match &args.read.pooltag {
        Some(p) => {
            let db = PoolTagDb::load(p)
                .with_context(|| format!("{}: cannot read the pooltag file", p.display()))?;
            if db.is_empty() {
                bail!(
                    "{}: no `Tag - binary - description` lines: not a pooltag.txt",
                    p.display()
                );
            }
            Some(db)
        }
        None => None,
    };
    let opts = BatchOptions {
        analyze: AnalyzeOptions {
            // No download bar: the batch's own bar is on screen.
            symbols: args.read.symbols.options(None),
            pooltag,
            search_images: !args.read.no_image_search,
        },
        jobs: args.jobs,
        commit_every: args.commit_every,
        commit_after: Duration::from_secs(30),
    };
    let bar = Progress::new(!args.no_progress && std::io::stderr().is_terminal());
    let s = pooldump_fleet::batch::run(&inputs, &mut store, &opts, &bar)?;
    bar.done();

    let out = args.output.display();
    let ext = format.extension();
    let mut text = format!(
        "{} input(s): {} analysed ({} failed), {} already in {out}, {} duplicate(s); {} part(s) written\n",
        s.inputs, s.analysed, s.failed, s.skipped, s.duplicates, s.parts
    );
    // Joined as paths, so Windows users see their own separator.
    let table = |t: &str| args.output.join(t).join(format!("*.{ext}"));
    text.push_str(&format!(
        "Tables: {} (one row per dump and tag), {} (one row per dump, with its status and error)\n",
        table("tags").display(),
        table("dumps").display()
    ));
    let failed = bar.failed.lock().map(|f| f.clone()).unwrap_or_default();
    if !failed.is_empty() {
        text.push_str("Failed (their rows say why):\n");
        for (p, e) in failed.iter().take(20) {
            // Errors name the file already, mostly.
            if e.starts_with(p.as_str()) {
                text.push_str(&format!("  {e}\n"));
            } else {
                text.push_str(&format!("  {p}: {e}\n"));
            }
        }
        if failed.len() > 20 {
            text.push_str(&format!("  ... and {} more\n", failed.len() - 20));
        }
    }
    Ok(text)
}

/// indicatif's bar over the bytes of the dumps to analyse (dumps differ in
/// size; bytes give the truer ETA), drawn on a terminal only; elsewhere a
/// line on stderr per committed part.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    dumps: AtomicU64,
    done: AtomicU64,
    failed: std::sync::Mutex<Vec<(String, String)>>,
}

impl Progress {
    fn new(draw: bool) -> Self {
        let bar = draw.then(|| {
            let b = indicatif::ProgressBar::new(0);
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {msg} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            b.set_style(style);
            b.enable_steady_tick(Duration::from_millis(250));
            b
        });
        Self {
            bar,
            dumps: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn message(&self) -> String {
        let failed = self.failed.lock().map_or(0, |f| f.len());
        format!(
            "{}/{} dumps{}",
            self.done.load(Ordering::Relaxed),
            self.dumps.load(Ordering::Relaxed),
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        )
    }

    fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl BatchProgress for Progress {
    fn planned(&self, dumps: u64, bytes: u64, skipped: u64) {
        self.dumps.store(dumps, Ordering::Relaxed);
        if skipped > 0 {
            eprintln!("pooldump batch: {skipped} dump(s) already done, skipped");
        }
        if let Some(b) = &self.bar {
            b.set_length(bytes);
            b.set_message(self.message());
        }
    }

    fn finished(&self, r: &DumpRecord) {
        if r.status == Status::Error
            && let Ok(mut f) = self.failed.lock()
        {
            f.push((r.path.clone(), r.error.clone().unwrap_or_default()));
        }
        if r.status != Status::Duplicate {
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(b) = &self.bar {
            b.inc(r.size);
            b.set_message(self.message());
        }
    }

    fn committed(&self, part: &Path, dumps: usize, done: usize) {
        if self.bar.is_none() {
            eprintln!(
                "pooldump batch: committed {} ({dumps} dump(s); {done} in the output; {})",
                part.display(),
                self.message()
            );
        }
    }
}
use crate::args::ReadArgs;
