//! The `pooldump` Python module: pooldump's per-dump work as pyarrow
//! tables, so an existing engine (Ray, Spark, Dask, a plain process pool)
//! can map dump paths to tables and a query engine (DuckDB, Polars,
//! pandas) can read them. docs/python.md shows it in use.
//!
//! ```python
//! import pooldump
//! d = pooldump.open("MEMORY.DMP", symbol_path="symbols")
//! d.analyze()            # pyarrow.Table: the tags table of `pooldump batch`
//! d.find(["Leak"])       # pyarrow.Table: one row per allocation (!poolfind)
//! tags, dumps = pooldump.analyze_files(paths, symbol_path="symbols")
//! ```
//!
//! The tables have the same columns as `pooldump batch`'s (both are built by
//! pooldump-fleet), so the outputs of a Ray job and of the CLI can be
//! queried together. The GIL is released while a dump is read.

use std::path::PathBuf;

use arrow_array::RecordBatch;
use arrow_pyarrow::{PyArrowType, Table};
use arrow_schema::SchemaRef;
use pooldump_core::Target;
use pooldump_core::dump::CrashDump;
use pooldump_core::pool::find::{self, FindOptions, FoundAllocation};
use pooldump_core::pool::{PoolTagDb, TagPattern};
use pooldump_core::symbols::{SymbolOptions, SymbolPath, default_cache_dir};
use pooldump_fleet::ContentKey;
use pooldump_fleet::record::{self, AnalyzeOptions, DumpRecord, Status};
use pooldump_fleet::table::{Columns, dumps_batch, dumps_schema, tags_batch, tags_schema};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

create_exception!(
    pooldump,
    PooldumpError,
    PyException,
    "A dump could not be opened or read (the message names the file and what is wrong)."
);

fn err(e: impl std::fmt::Display) -> PyErr {
    PooldumpError::new_err(e.to_string())
}

/// Symbol options as the CLI builds them: `_NT_SYMBOL_PATH` (or
/// `symbol_path`, in the same syntax), the layout cache (unless `cache` is
/// false: `--no-cache`), the built-in table (unless `builtin` is false:
/// `--no-builtin`); `offline` stops downloads.
fn symbol_options(
    symbol_path: Option<&str>,
    offline: bool,
    builtin: bool,
    cache: bool,
) -> SymbolOptions<'static> {
    let mut o = SymbolOptions::from_env();
    if let Some(sp) = symbol_path {
        let store = default_cache_dir()
            .map(|c| c.join("symbols"))
            .unwrap_or_else(|| PathBuf::from("symbols"));
        o.symbol_path = SymbolPath::parse(sp, &store);
    }
    o.fetch.offline = offline;
    o.builtin = builtin;
    o.builtin_supplement = builtin;
    if !cache {
        o.layout_cache = None;
    }
    o
}

fn load_pooltag(p: Option<PathBuf>) -> PyResult<Option<PoolTagDb>> {
    p.map(|p| {
        PoolTagDb::load(&p).map_err(|e| {
            err(format!(
                "{}: cannot read the pooltag file: {e}",
                p.display()
            ))
        })
    })
    .transpose()
}

fn table(batch: RecordBatch, schema: SchemaRef) -> PyResult<PyArrowType<Table>> {
    Table::try_new(vec![batch], schema)
        .map(PyArrowType)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// An open crash dump with nt's symbols.
#[pyclass(frozen, module = "pooldump")]
struct Dump {
    target: Target<CrashDump>,
    path: PathBuf,
}

#[pymethods]
impl Dump {
    /// The dump's path.
    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// What the dump says about itself: build, processors, time, bug
    /// check, nt's PDB, KernBase, boot id (the dumps table's columns).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let f = record::facts(&self.target);
        let d = PyDict::new(py);
        d.set_item("path", self.path())?;
        d.set_item("build", f.build)?;
        d.set_item("processors", f.processors)?;
        d.set_item("dump_type", f.dump_type)?;
        d.set_item("system_time_us", f.system_time_us)?;
        d.set_item("uptime_secs", f.uptime_secs)?;
        d.set_item("boot_time_us", f.boot_time_us)?;
        d.set_item("boot_id", f.boot_id)?;
        d.set_item("bugcheck_code", f.bugcheck_code)?;
        d.set_item(
            "bugcheck_parameters",
            f.bugcheck_parameters.map(|p| p.to_vec()),
        )?;
        d.set_item("pdb_name", f.pdb_name)?;
        d.set_item("pdb_key", f.pdb_key)?;
        d.set_item("kern_base", f.kern_base)?;
        d.set_item("pfn_database", f.pfn_database)?;
        d.set_item("modules", f.modules)?;
        let warnings: Vec<std::collections::BTreeMap<&str, &str>> = self
            .target
            .warnings
            .iter()
            .map(|w| [("kind", w.kind.as_str()), ("message", w.message.as_str())].into())
            .collect();
        d.set_item("warnings", warnings)?;
        Ok(d)
    }

    /// PoolMon's table for this dump: one row per tag with the tags-table
    /// columns of `pooldump batch` (Allocs, Frees, Diff, Bytes, Per Alloc,
    /// Mapped_Driver, and the dump's identity).
    #[pyo3(signature = (pooltag=None, search_images=true))]
    fn analyze(
        &self,
        py: Python<'_>,
        pooltag: Option<PathBuf>,
        search_images: bool,
    ) -> PyResult<PyArrowType<Table>> {
        let db = load_pooltag(pooltag)?;
        let batch = py
            .detach(|| -> Result<RecordBatch, String> {
                let (rows, totals, warnings) =
                    record::tag_rows(&self.target, db.as_ref(), search_images).map_err(|e| {
                        format!("{}: {}", self.path.display(), record::error_chain(&e))
                    })?;
                let key = ContentKey::of_file(&self.path)
                    .map(|(k, _)| k.hex())
                    .unwrap_or_default();
                let r = DumpRecord {
                    path: self.path(),
                    dump_id: key,
                    size: self.target.mem.file_size(),
                    status: Status::Ok,
                    error: None,
                    facts: record::facts(&self.target),
                    rows,
                    totals: Some(totals),
                    warnings,
                    seconds: 0.0,
                };
                tags_batch(std::slice::from_ref(&r)).map_err(|e| e.to_string())
            })
            .map_err(err)?;
        table(batch, tags_schema())
    }

    /// Every allocation carrying one of `tags` (`!poolfind`): PoolMon
    /// patterns (`Ab?1`, `Ab*`) and `0x...` values are accepted. With
    /// `bytes=N`, each allocation's first N bytes after its pool header
    /// (at most 0x10000) as `contents`, and how many of them could not be
    /// read (zero-filled) as `contents_unreadable`; refused (before any is
    /// read) when all of them would pass 256 MiB.
    #[pyo3(signature = (tags, allocated_only=false, bytes=None))]
    fn find(
        &self,
        py: Python<'_>,
        tags: Vec<String>,
        allocated_only: bool,
        bytes: Option<u64>,
    ) -> PyResult<PyArrowType<Table>> {
        let patterns = tags
            .iter()
            .map(|t| TagPattern::parse(t).map_err(|e| PyValueError::new_err(format!("{t}: {e}"))))
            .collect::<PyResult<Vec<_>>>()?;
        if patterns.is_empty() {
            return Err(PyValueError::new_err("find() needs at least one tag"));
        }
        if bytes == Some(0) {
            return Err(PyValueError::new_err("bytes: ask for at least 1 byte"));
        }
        let (report, contents) = py
            .detach(|| {
                let mut r = self.target.find(&patterns, &FindOptions::default())?;
                if allocated_only {
                    r.allocations
                        .retain(|a| a.state == find::AllocationState::Allocated);
                }
                let contents = match bytes {
                    Some(n) => {
                        find::contents_fit(r.allocations.len(), n)?;
                        r.allocations
                            .iter()
                            .map(|a| self.target.allocation_contents(a, n))
                            .collect::<Result<Vec<_>, _>>()?
                    }
                    None => Vec::new(),
                };
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((r, contents))
            })
            .map_err(|e| err(format!("{}: {e}", self.path.display())))?;
        let rows: Vec<Row<'_>> = report
            .allocations
            .iter()
            .enumerate()
            .map(|(i, a)| (a, contents.get(i)))
            .collect();
        let columns = find_columns(&rows, bytes.is_some());
        let batch = columns
            .finish()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let schema = batch.schema();
        table(batch, schema)
    }

    fn __repr__(&self) -> String {
        format!(
            "<pooldump.Dump {} build {} KernBase {}>",
            self.path.display(),
            self.target.mem.header().build(),
            self.target.kern_base()
        )
    }
}

/// A row of `Dump.find()`: an allocation and, with `bytes=`, its contents.
type Row<'r> = (&'r FoundAllocation, Option<&'r find::BlockContents>);

/// The columns of `Dump.find()`; `contents` and `contents_unreadable` when
/// the bytes were read (every row then has them).
fn find_columns<'r>(rows: &'r [Row<'r>], contents: bool) -> Columns<'r, Row<'r>> {
    let c = Columns::new(rows)
        .column("tag", |(x, _)| x.tag.to_string())
        .column("tag_value", |(x, _)| x.tag.value())
        .column("va", |(x, _)| x.va.u64())
        .column_or_null("header", |(x, _)| x.header.map(|h| h.u64()))
        .column_or_null("pa", |(x, _)| x.pa.map(|p| p.0))
        .column("bytes", |(x, _)| x.bytes)
        .column("pool", |(x, _)| x.pool.name().to_string())
        .column("session", |(x, _)| x.session)
        .column("pool_type", |(x, _)| x.pool_type)
        .column("state", |(x, _)| x.state.to_string())
        .column("allocator", |(x, _)| x.allocator.to_string())
        .column("protected", |(x, _)| x.protected)
        .column("in_dump", |(x, _)| x.in_dump)
        .column_or_null("session_id", |(x, _)| x.session_id);
    if !contents {
        return c;
    }
    c.column_or_null("contents", |(_, b)| b.map(|b| b.bytes.clone()))
        .column_or_null("contents_unreadable", |(_, b)| {
            b.map(|b| b.unreadable.iter().map(|r| r.bytes).sum::<u64>())
        })
}

/// Open a kernel crash dump and load nt's symbols. `symbol_path` is in
/// `_NT_SYMBOL_PATH` syntax (a directory, `srv*cache*server`, ...);
/// without it the environment's, as the CLI does. `builtin=False` refuses
/// the built-in layout table (the CLI's `--no-builtin`), `cache=False`
/// the layout cache (`--no-cache`).
#[pyfunction]
#[pyo3(signature = (path, symbol_path=None, offline=false, builtin=true, cache=true))]
fn open(
    py: Python<'_>,
    path: PathBuf,
    symbol_path: Option<String>,
    offline: bool,
    builtin: bool,
    cache: bool,
) -> PyResult<Dump> {
    let opts = symbol_options(symbol_path.as_deref(), offline, builtin, cache);
    let target = py
        .detach(|| record::open(&path, &opts).map_err(|e| record::error_chain(&e)))
        .map_err(err)?;
    Ok(Dump { target, path })
}

/// The tags and dumps tables of `paths`, as `pooldump batch` writes them:
/// each dump analysed in turn (run one call per task to spread dumps over
/// an engine's workers), a dump that fails being a dumps row with its
/// error rather than an exception.
#[pyfunction]
#[pyo3(signature = (paths, symbol_path=None, offline=false, pooltag=None, search_images=true, builtin=true, cache=true))]
#[allow(clippy::too_many_arguments)] // Python keyword arguments
fn analyze_files(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    symbol_path: Option<String>,
    offline: bool,
    pooltag: Option<PathBuf>,
    search_images: bool,
    builtin: bool,
    cache: bool,
) -> PyResult<(PyArrowType<Table>, PyArrowType<Table>)> {
    let opts = AnalyzeOptions {
        symbols: symbol_options(symbol_path.as_deref(), offline, builtin, cache),
        pooltag: load_pooltag(pooltag)?,
        search_images,
    };
    let (tags, dumps) = py
        .detach(|| {
            let records: Vec<DumpRecord> = paths
                .iter()
                .map(|p| match ContentKey::of_file(p) {
                    Ok((key, size)) => record::analyze_file(p, &key, size, &opts),
                    Err(e) => DumpRecord::failed(
                        p,
                        None,
                        0,
                        format!("{}: cannot read the file: {e}", p.display()),
                    ),
                })
                .collect();
            Ok::<_, arrow_schema::ArrowError>((tags_batch(&records)?, dumps_batch(&records)?))
        })
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((table(tags, tags_schema())?, table(dumps, dumps_schema())?))
}

/// The (empty) schema of the tags table, and of the dumps table.
#[pyfunction]
fn schemas(py: Python<'_>) -> PyResult<(Bound<'_, PyAny>, Bound<'_, PyAny>)> {
    use arrow_pyarrow::ToPyArrow;
    Ok((
        tags_schema().to_pyarrow(py)?,
        dumps_schema().to_pyarrow(py)?,
    ))
}

#[pymodule]
fn pooldump(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PooldumpError", m.py().get_type::<PooldumpError>())?;
    m.add_class::<Dump>()?;
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_function(wrap_pyfunction!(analyze_files, m)?)?;
    m.add_function(wrap_pyfunction!(schemas, m)?)?;
    Ok(())
}
