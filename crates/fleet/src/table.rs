//! The two fleet tables as Arrow record batches: **tags** (one row per
//! dump × tag, PoolMon's columns with the dump's identity) and **dumps**
//! (one row per input file, analysed or not). docs/batch.md lists the
//! columns; `tag_columns` and `dump_columns` are the definition, each column
//! named, typed (by its values: [`ColumnValue`]) and filled in one place ([`Columns`]).

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use crate::record::{DumpRecord, TagRow};

/// UTC as an offset: arrow-json formats offsets without a time-zone
/// database (chrono-tz), and Parquet and DuckDB read it as UTC.
const UTC: &str = "+00:00";

/// A warning as a list item: `{kind, message}` (`pooldump_core::Warning`).
fn warning_fields() -> Vec<Field> {
    vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
    ]
}

fn warning_item() -> Field {
    Field::new("item", DataType::Struct(warning_fields().into()), true)
}

/// A Rust value a column holds, and the Arrow array of such values:
/// `String` → Utf8, `u32` → UInt32, `u64` → UInt64, `f64` → Float64,
/// `bool` → Boolean, `Vec<u8>` → Binary.
pub trait ColumnValue: Sized {
    /// The array a column of these values is.
    type Array: FromIterator<Option<Self>> + arrow_array::Array + 'static;
}

impl ColumnValue for String {
    type Array = StringArray;
}
impl ColumnValue for u32 {
    type Array = UInt32Array;
}
impl ColumnValue for u64 {
    type Array = UInt64Array;
}
impl ColumnValue for f64 {
    type Array = Float64Array;
}
impl ColumnValue for bool {
    type Array = BooleanArray;
}
impl ColumnValue for Vec<u8> {
    type Array = BinaryArray;
}

/// A record batch built column by column: each column's name, type,
/// nullability and values stand together, so a table's schema and its
/// arrays cannot drift apart (two columns of one type swapped in one list
/// and not in the other would pass `RecordBatch::try_new`). The tables of
/// `pooldump batch` and of the Python bindings are built with it.
pub struct Columns<'r, R> {
    rows: &'r [R],
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl<'r, R> Columns<'r, R> {
    /// A table of `rows`, no column yet.
    pub fn new(rows: &'r [R]) -> Self {
        Self {
            rows,
            fields: Vec::new(),
            arrays: Vec::new(),
        }
    }

    /// A column of its own making (a list, a struct): its type is the
    /// array's.
    pub fn array(mut self, name: &str, nullable: bool, array: ArrayRef) -> Self {
        self.fields
            .push(Field::new(name, array.data_type().clone(), nullable));
        self.arrays.push(array);
        self
    }

    /// A column never null, typed by its values ([`ColumnValue`]).
    pub fn column<T: ColumnValue>(self, name: &str, value: impl Fn(&R) -> T) -> Self {
        let a: T::Array = self.rows.iter().map(|r| Some(value(r))).collect();
        self.array(name, false, Arc::new(a))
    }
    /// A column that may be null, typed by its values ([`ColumnValue`]).
    pub fn column_or_null<T: ColumnValue>(
        self,
        name: &str,
        value: impl Fn(&R) -> Option<T>,
    ) -> Self {
        let a: T::Array = self.rows.iter().map(value).collect();
        self.array(name, true, Arc::new(a))
    }
    /// A UTC time in microseconds since the Unix epoch, or null.
    pub fn time_or_null(self, name: &str, value: impl Fn(&R) -> Option<i64>) -> Self {
        let a: TimestampMicrosecondArray = self.rows.iter().map(value).collect();
        self.array(name, true, Arc::new(a.with_timezone(UTC)))
    }

    /// The columns so far.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.fields.clone()))
    }

    /// The batch.
    pub fn finish(self) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(self.schema(), self.arrays)
    }
}

/// A tag row with its dump.
type TagOfDump<'a> = (&'a DumpRecord, &'a TagRow);

/// The tags table: the dump's identity, then PoolMon's columns.
fn tag_columns<'r>(rows: &'r [TagOfDump<'_>]) -> Columns<'r, TagOfDump<'r>> {
    Columns::new(rows)
        .column("dump_id", |(d, _)| d.dump_id.clone())
        .column("path", |(d, _)| d.path.clone())
        .column_or_null("build", |(d, _)| d.facts.build)
        .column_or_null("boot_id", |(d, _)| d.facts.boot_id.clone())
        .column_or_null("pdb_key", |(d, _)| d.facts.pdb_key.clone())
        .column_or_null("kern_base", |(d, _)| d.facts.kern_base)
        .time_or_null("system_time", |(d, _)| d.facts.system_time_us)
        .column_or_null("uptime_secs", |(d, _)| d.facts.uptime_secs)
        .column_or_null("bugcheck_code", |(d, _)| d.facts.bugcheck_code)
        .column("tag", |(_, r)| r.tag.clone())
        .column("tag_value", |(_, r)| r.value)
        .column("type", |(_, r)| r.pool.to_string())
        .column("allocs", |(_, r)| r.allocs)
        .column("frees", |(_, r)| r.frees)
        .column("diff", |(_, r)| r.diff)
        .column("bytes", |(_, r)| r.bytes)
        .column("per_alloc", |(_, r)| r.per_alloc)
        .column_or_null("mapped_driver", |(_, r)| r.driver.clone())
        .column_or_null("description", |(_, r)| r.description.clone())
        .column("slot", |(_, r)| r.slot.to_string())
        .column("clamped", |(_, r)| r.clamped)
}

/// The tags table's columns.
pub fn tags_schema() -> SchemaRef {
    tag_columns(&[]).schema()
}

/// The tags rows of `records` (records without rows add none).
pub fn tags_batch(records: &[DumpRecord]) -> Result<RecordBatch, ArrowError> {
    let rows: Vec<TagOfDump<'_>> = records
        .iter()
        .flat_map(|d| d.rows.iter().map(move |r| (d, r)))
        .collect();
    tag_columns(&rows).finish()
}

/// Each dump's warnings as a list of `{kind, message}`.
fn warnings_column(records: &[DumpRecord]) -> ArrayRef {
    let mut warnings = ListBuilder::new(StructBuilder::from_fields(warning_fields(), 0))
        .with_field(Arc::new(warning_item()));
    for d in records {
        for w in &d.warnings {
            let item = warnings.values();
            for (i, text) in [w.kind.as_str(), w.message.as_str()]
                .into_iter()
                .enumerate()
            {
                if let Some(b) = item.field_builder::<StringBuilder>(i) {
                    b.append_value(text);
                }
            }
            item.append(true);
        }
        warnings.append(true);
    }
    Arc::new(warnings.finish())
}

/// The dumps table: one row per input file, analysed or not.
fn dump_columns(records: &[DumpRecord]) -> Columns<'_, DumpRecord> {
    let param = |i: usize| move |d: &DumpRecord| d.facts.bugcheck_parameters.map(|p| p[i]);
    Columns::new(records)
        .column("dump_id", |d| d.dump_id.clone())
        .column("path", |d| d.path.clone())
        .column("status", |d| d.status.as_str().to_string())
        .column_or_null("error", |d| d.error.clone())
        .column("size", |d| d.size)
        .column_or_null("build", |d| d.facts.build)
        .column_or_null("processors", |d| d.facts.processors)
        .column_or_null("dump_type", |d| d.facts.dump_type.clone())
        .time_or_null("system_time", |d| d.facts.system_time_us)
        .column_or_null("uptime_secs", |d| d.facts.uptime_secs)
        .time_or_null("boot_time", |d| d.facts.boot_time_us)
        .column_or_null("boot_id", |d| d.facts.boot_id.clone())
        .column_or_null("bugcheck_code", |d| d.facts.bugcheck_code)
        .column_or_null("bugcheck_p1", param(0))
        .column_or_null("bugcheck_p2", param(1))
        .column_or_null("bugcheck_p3", param(2))
        .column_or_null("bugcheck_p4", param(3))
        .column_or_null("pdb_name", |d| d.facts.pdb_name.clone())
        .column_or_null("pdb_key", |d| d.facts.pdb_key.clone())
        .column_or_null("kern_base", |d| d.facts.kern_base)
        .column_or_null("pfn_database", |d| d.facts.pfn_database)
        .column_or_null("modules", |d| d.facts.modules)
        .column("tags", |d| d.rows.len() as u64)
        .column_or_null("paged_allocs", |d| d.totals.map(|t| t.paged.allocs))
        .column_or_null("paged_frees", |d| d.totals.map(|t| t.paged.frees))
        .column_or_null("paged_bytes", |d| d.totals.map(|t| t.paged.bytes))
        .column_or_null("nonpaged_allocs", |d| d.totals.map(|t| t.nonpaged.allocs))
        .column_or_null("nonpaged_frees", |d| d.totals.map(|t| t.nonpaged.frees))
        .column_or_null("nonpaged_bytes", |d| d.totals.map(|t| t.nonpaged.bytes))
        .array("warnings", false, warnings_column(records))
        .column("seconds", |d| d.seconds)
}

/// The dumps table's columns.
pub fn dumps_schema() -> SchemaRef {
    dump_columns(&[]).schema()
}

/// One dumps row per record.
pub fn dumps_batch(records: &[DumpRecord]) -> Result<RecordBatch, ArrowError> {
    dump_columns(records).finish()
}
