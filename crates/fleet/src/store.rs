//! Where a batch writes: `OUT/tags/` and `OUT/dumps/`, each a directory of
//! part files (`part-<run>-<seq>.parquet` or `.ndjson`), the layout Spark,
//! DuckDB and pyarrow read as one table (`read_parquet('OUT/tags/*.parquet')`).
//!
//! A part is committed atomically: both files are written under temporary
//! names, synced, then renamed, the tags part first and the dumps part last.
//! A dumps part therefore exists only when its tags part does, and a dump
//! is done exactly when its row is in a dumps part. A batch killed at any
//! moment leaves complete parts and, at worst, a tags part whose dumps part
//! never came (deleted on the next open, its dumps done again) and
//! temporary files (deleted too).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::{Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::FleetError;
use crate::record::{DumpRecord, Status};
use crate::table::{dumps_batch, tags_batch};

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Apache Parquet, snappy-compressed.
    Parquet,
    /// One JSON object per line, the same columns (timestamps as RFC 3339
    /// strings, nulls written as `null`).
    Ndjson,
}

impl Format {
    /// The part files' extension and the `--format` name: `parquet` or
    /// `ndjson`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Ndjson => "ndjson",
        }
    }
}

/// A dump already in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneDump {
    /// The path as the dumps table recorded it.
    pub path: String,
    /// The dumps table's `status` column ([`Status::as_str`]: `ok`,
    /// `error` or `duplicate`).
    ///
    /// [`Status::as_str`]: crate::Status::as_str
    pub status: String,
}

/// The output directory of a batch, with what it already holds.
pub struct ResultStore {
    dir: PathBuf,
    format: Format,
    /// Done dumps by dump_id (several paths when some were duplicates).
    done: HashMap<String, Vec<DoneDump>>,
    /// Paths done without a key (the file could not be read).
    done_unkeyed: HashMap<String, DoneDump>,
    run: String,
    seq: u32,
    /// Orphaned or temporary files removed on open.
    pub cleaned: Vec<PathBuf>,
}

impl ResultStore {
    /// Open (creating) `dir`, tidy what a killed batch left, and read which
    /// dumps are done.
    pub fn open(dir: &Path, format: Format) -> Result<Self, FleetError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FleetError::Io { path, source }
        };
        let tags = dir.join("tags");
        let dumps = dir.join("dumps");
        std::fs::create_dir_all(&tags).map_err(io(&tags))?;
        std::fs::create_dir_all(&dumps).map_err(io(&dumps))?;
        let ext = format.extension();
        let mut cleaned = Vec::new();
        let list = |d: &Path| -> Result<Vec<PathBuf>, FleetError> {
            let mut v = Vec::new();
            for e in std::fs::read_dir(d).map_err(io(d))? {
                v.push(e.map_err(io(d))?.path());
            }
            v.sort();
            Ok(v)
        };
        let dump_parts = list(&dumps)?;
        for p in list(&tags)?.iter().chain(&dump_parts) {
            let name = file_name(p);
            let other = match format {
                Format::Parquet => Format::Ndjson,
                Format::Ndjson => Format::Parquet,
            };
            if name.starts_with("part-") && name.ends_with(&format!(".{}", other.extension())) {
                return Err(FleetError::OtherFormat {
                    dir: dir.to_path_buf(),
                    found: other.extension(),
                    wanted: ext,
                });
            }
            if name.starts_with(".part-") && name.ends_with(".tmp") {
                std::fs::remove_file(p).map_err(io(p))?;
                cleaned.push(p.clone());
            }
        }
        // A tags part without its dumps part was never committed.
        for p in list(&tags)? {
            let name = file_name(&p);
            if name.starts_with("part-") && name.ends_with(ext) && !dumps.join(&name).exists() {
                std::fs::remove_file(&p).map_err(io(&p))?;
                cleaned.push(p);
            }
        }
        let mut store = Self {
            dir: dir.to_path_buf(),
            format,
            done: HashMap::new(),
            done_unkeyed: HashMap::new(),
            run: run_id(),
            seq: 0,
            cleaned,
        };
        for p in dump_parts {
            let name = file_name(&p);
            if name.starts_with("part-") && name.ends_with(ext) {
                for (id, d) in read_done(&p, format)? {
                    store.note_done(id, d);
                }
            }
        }
        Ok(store)
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The format parts are written in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Dumps done so far (rows of the dumps table).
    pub fn done_count(&self) -> usize {
        self.done.values().map(Vec::len).sum::<usize>() + self.done_unkeyed.len()
    }

    /// The rows already written for this content key.
    pub fn done_with_key(&self, dump_id: &str) -> &[DoneDump] {
        self.done.get(dump_id).map_or(&[], Vec::as_slice)
    }

    /// A file that could not be read, already recorded under its path.
    pub fn done_without_key(&self, path: &str) -> bool {
        self.done_unkeyed.contains_key(path)
    }

    fn note_done(&mut self, dump_id: String, d: DoneDump) {
        if dump_id.is_empty() {
            self.done_unkeyed.insert(d.path.clone(), d);
        } else {
            self.done.entry(dump_id).or_default().push(d);
        }
    }

    /// Write `records` as one part of each table, atomically (see the
    /// module docs), and count them as done. Returns the dumps part.
    pub fn commit(&mut self, records: &[DumpRecord]) -> Result<PathBuf, FleetError> {
        self.seq += 1;
        let name = format!(
            "part-{}-{:05}.{}",
            self.run,
            self.seq,
            self.format.extension()
        );
        let tags = tags_batch(records)?;
        let dumps = dumps_batch(records)?;
        let tags_path = self.dir.join("tags").join(&name);
        let dumps_path = self.dir.join("dumps").join(&name);
        self.write_atomically(&tags_path, &tags)?;
        self.write_atomically(&dumps_path, &dumps)?;
        for r in records {
            self.note_done(
                r.dump_id.clone(),
                DoneDump {
                    path: r.path.clone(),
                    status: r.status.as_str().into(),
                },
            );
        }
        Ok(dumps_path)
    }

    fn write_atomically(&self, path: &Path, batch: &RecordBatch) -> Result<(), FleetError> {
        let tmp = path.with_file_name(format!(".{}.tmp", file_name(path)));
        let io = |source| FleetError::Io {
            path: tmp.clone(),
            source,
        };
        let file = File::create(&tmp).map_err(io)?;
        let file = match self.format {
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_created_by(format!("pooldump {}", env!("CARGO_PKG_VERSION")))
                    .build();
                let mut w =
                    ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|source| {
                        FleetError::Parquet {
                            path: tmp.clone(),
                            source,
                        }
                    })?;
                w.write(batch).map_err(|source| FleetError::Parquet {
                    path: tmp.clone(),
                    source,
                })?;
                w.into_inner().map_err(|source| FleetError::Parquet {
                    path: tmp.clone(),
                    source,
                })?
            }
            Format::Ndjson => {
                let mut w = arrow_json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow_json::writer::LineDelimited>(BufWriter::new(file));
                w.write(batch)?;
                w.finish()?;
                let mut b = w.into_inner();
                b.flush().map_err(io)?;
                b.into_inner().map_err(|e| io(e.into_error()))?
            }
        };
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|source| FleetError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Names this process's parts apart from earlier runs' (seconds since the
/// epoch and the process id).
fn run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{secs}-{}", std::process::id())
}

/// (dump_id, path, status) of every row of a dumps part.
fn read_done(path: &Path, format: Format) -> Result<Vec<(String, DoneDump)>, FleetError> {
    let io = |source| FleetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut out = Vec::new();
    match format {
        Format::Parquet => {
            let pq = |source| FleetError::Parquet {
                path: path.to_path_buf(),
                source,
            };
            let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
            let wanted = ["dump_id", "path", "status"];
            let schema = b.parquet_schema();
            let indices: Vec<usize> = wanted
                .iter()
                .map(|w| {
                    (0..schema.num_columns())
                        .find(|&i| schema.column(i).name() == *w)
                        .ok_or_else(|| FleetError::NotADumpsPart {
                            path: path.to_path_buf(),
                            why: format!("no column `{w}`"),
                        })
                })
                .collect::<Result<_, _>>()?;
            let mask = ProjectionMask::leaves(schema, indices);
            for batch in b.with_projection(mask).build().map_err(pq)? {
                let batch = batch?;
                let col = |name: &str| -> Result<&StringArray, FleetError> {
                    batch
                        .column_by_name(name)
                        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                        .ok_or_else(|| FleetError::NotADumpsPart {
                            path: path.to_path_buf(),
                            why: format!("column `{name}` is not text"),
                        })
                };
                let (id, p, st) = (col("dump_id")?, col("path")?, col("status")?);
                for i in 0..batch.num_rows() {
                    let get = |a: &StringArray| {
                        if a.is_null(i) {
                            String::new()
                        } else {
                            a.value(i).to_string()
                        }
                    };
                    out.push((
                        get(id),
                        DoneDump {
                            path: get(p),
                            status: get(st),
                        },
                    ));
                }
            }
        }
        Format::Ndjson => {
            #[derive(serde::Deserialize)]
            struct Row {
                dump_id: String,
                path: String,
                status: String,
            }
            for (n, line) in BufReader::new(file).lines().enumerate() {
                let line = line.map_err(io)?;
                if line.trim().is_empty() {
                    continue;
                }
                let r: Row =
                    serde_json::from_str(&line).map_err(|e| FleetError::NotADumpsPart {
                        path: path.to_path_buf(),
                        why: format!("line {}: {e}", n + 1),
                    })?;
                out.push((
                    r.dump_id,
                    DoneDump {
                        path: r.path,
                        status: r.status,
                    },
                ));
            }
        }
    }
    Ok(out)
}

/// Whether `status` (a dumps row's) counts a dump as analysed.
pub fn is_analysed(status: &str) -> bool {
    status == Status::Ok.as_str()
}
