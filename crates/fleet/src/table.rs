//! The two fleet tables as Arrow record batches: **tags** (one row per
//! dump × tag, PoolMon's columns with the dump's identity) and **dumps**
//! (one row per input file, analysed or not). docs/batch.md lists the
//! columns; [`tags_schema`] and [`dumps_schema`] are the definition.

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array, UInt64Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::record::DumpRecord;

/// UTC as an offset: arrow-json formats offsets without a time-zone
/// database (chrono-tz), and Parquet and DuckDB read it as UTC.
const UTC: &str = "+00:00";

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

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

/// The tags table's columns.
pub fn tags_schema() -> SchemaRef {
    use DataType::*;
    let f = Field::new;
    Arc::new(Schema::new(vec![
        f("dump_id", Utf8, false),
        f("path", Utf8, false),
        f("build", UInt32, true),
        f("boot_id", Utf8, true),
        f("pdb_key", Utf8, true),
        f("kern_base", UInt64, true),
        f("system_time", utc(), true),
        f("uptime_secs", Float64, true),
        f("bugcheck_code", UInt32, true),
        f("tag", Utf8, false),
        f("tag_value", UInt32, false),
        f("type", Utf8, false),
        f("allocs", UInt64, false),
        f("frees", UInt64, false),
        f("diff", UInt64, false),
        f("bytes", UInt64, false),
        f("per_alloc", UInt64, false),
        f("mapped_driver", Utf8, true),
        f("description", Utf8, true),
        f("slot", Utf8, false),
        f("clamped", Boolean, false),
    ]))
}

/// The dumps table's columns.
pub fn dumps_schema() -> SchemaRef {
    use DataType::*;
    let f = Field::new;
    Arc::new(Schema::new(vec![
        f("dump_id", Utf8, false),
        f("path", Utf8, false),
        f("status", Utf8, false),
        f("error", Utf8, true),
        f("size", UInt64, false),
        f("build", UInt32, true),
        f("processors", UInt32, true),
        f("dump_type", Utf8, true),
        f("system_time", utc(), true),
        f("uptime_secs", Float64, true),
        f("boot_time", utc(), true),
        f("boot_id", Utf8, true),
        f("bugcheck_code", UInt32, true),
        f("bugcheck_p1", UInt64, true),
        f("bugcheck_p2", UInt64, true),
        f("bugcheck_p3", UInt64, true),
        f("bugcheck_p4", UInt64, true),
        f("pdb_name", Utf8, true),
        f("pdb_key", Utf8, true),
        f("kern_base", UInt64, true),
        f("pfn_database", UInt64, true),
        f("modules", UInt32, true),
        f("tags", UInt64, false),
        f("paged_allocs", UInt64, true),
        f("paged_frees", UInt64, true),
        f("paged_bytes", UInt64, true),
        f("nonpaged_allocs", UInt64, true),
        f("nonpaged_frees", UInt64, true),
        f("nonpaged_bytes", UInt64, true),
        f("warnings", List(Arc::new(warning_item())), false),
        f("seconds", Float64, false),
    ]))
}

/// The tags rows of `records` (records without rows add none).
pub fn tags_batch(records: &[DumpRecord]) -> Result<RecordBatch, ArrowError> {
    // Each tag row with its dump.
    let rows: Vec<_> = records
        .iter()
        .flat_map(|d| d.rows.iter().map(move |r| (d, r)))
        .collect();
    let s = |f: &dyn Fn(&(&DumpRecord, &crate::record::TagRow)) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let u64s = |f: &dyn Fn(&(&DumpRecord, &crate::record::TagRow)) -> Option<u64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<UInt64Array>())
    };
    let u32s = |f: &dyn Fn(&(&DumpRecord, &crate::record::TagRow)) -> Option<u32>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<UInt32Array>())
    };
    let columns: Vec<ArrayRef> = vec![
        s(&|(d, _)| Some(d.dump_id.clone())),
        s(&|(d, _)| Some(d.path.clone())),
        u32s(&|(d, _)| d.facts.build),
        s(&|(d, _)| d.facts.boot_id.clone()),
        s(&|(d, _)| d.facts.pdb_key.clone()),
        u64s(&|(d, _)| d.facts.kern_base),
        Arc::new(
            rows.iter()
                .map(|(d, _)| d.facts.system_time_us)
                .collect::<TimestampMicrosecondArray>()
                .with_timezone(UTC),
        ),
        Arc::new(
            rows.iter()
                .map(|(d, _)| d.facts.uptime_secs)
                .collect::<Float64Array>(),
        ),
        u32s(&|(d, _)| d.facts.bugcheck_code),
        s(&|(_, r)| Some(r.tag.clone())),
        u32s(&|(_, r)| Some(r.value)),
        s(&|(_, r)| Some(r.pool.to_string())),
        u64s(&|(_, r)| Some(r.allocs)),
        u64s(&|(_, r)| Some(r.frees)),
        u64s(&|(_, r)| Some(r.diff)),
        u64s(&|(_, r)| Some(r.bytes)),
        u64s(&|(_, r)| Some(r.per_alloc)),
        s(&|(_, r)| r.driver.clone()),
        s(&|(_, r)| r.description.clone()),
        s(&|(_, r)| Some(r.slot.to_string())),
        Arc::new(
            rows.iter()
                .map(|(_, r)| Some(r.clamped))
                .collect::<BooleanArray>(),
        ),
    ];
    RecordBatch::try_new(tags_schema(), columns)
}

/// One dumps row per record.
pub fn dumps_batch(records: &[DumpRecord]) -> Result<RecordBatch, ArrowError> {
    let s = |f: &dyn Fn(&DumpRecord) -> Option<String>| -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<StringArray>())
    };
    let u64s = |f: &dyn Fn(&DumpRecord) -> Option<u64>| -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<UInt64Array>())
    };
    let u32s = |f: &dyn Fn(&DumpRecord) -> Option<u32>| -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<UInt32Array>())
    };
    let time = |f: &dyn Fn(&DumpRecord) -> Option<i64>| -> ArrayRef {
        Arc::new(
            records
                .iter()
                .map(f)
                .collect::<TimestampMicrosecondArray>()
                .with_timezone(UTC),
        )
    };
    let param = |i: usize| u64s(&move |d: &DumpRecord| d.facts.bugcheck_parameters.map(|p| p[i]));
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
    let columns: Vec<ArrayRef> = vec![
        s(&|d| Some(d.dump_id.clone())),
        s(&|d| Some(d.path.clone())),
        s(&|d| Some(d.status.as_str().to_string())),
        s(&|d| d.error.clone()),
        u64s(&|d| Some(d.size)),
        u32s(&|d| d.facts.build),
        u32s(&|d| d.facts.processors),
        s(&|d| d.facts.dump_type.clone()),
        time(&|d| d.facts.system_time_us),
        Arc::new(
            records
                .iter()
                .map(|d| d.facts.uptime_secs)
                .collect::<Float64Array>(),
        ),
        time(&|d| d.facts.boot_time_us),
        s(&|d| d.facts.boot_id.clone()),
        u32s(&|d| d.facts.bugcheck_code),
        param(0),
        param(1),
        param(2),
        param(3),
        s(&|d| d.facts.pdb_name.clone()),
        s(&|d| d.facts.pdb_key.clone()),
        u64s(&|d| d.facts.kern_base),
        u64s(&|d| d.facts.pfn_database),
        u32s(&|d| d.facts.modules),
        u64s(&|d| Some(d.rows.len() as u64)),
        u64s(&|d| d.totals.map(|t| t.paged.allocs)),
        u64s(&|d| d.totals.map(|t| t.paged.frees)),
        u64s(&|d| d.totals.map(|t| t.paged.bytes)),
        u64s(&|d| d.totals.map(|t| t.nonpaged.allocs)),
        u64s(&|d| d.totals.map(|t| t.nonpaged.frees)),
        u64s(&|d| d.totals.map(|t| t.nonpaged.bytes)),
        Arc::new(warnings.finish()),
        Arc::new(
            records
                .iter()
                .map(|d| Some(d.seconds))
                .collect::<Float64Array>(),
        ),
    ];
    RecordBatch::try_new(dumps_schema(), columns)
}
