//! `analyze --csv`: one table (tag rows, per session, per call site, or
//! the big-page list), the notes on stderr.

use anyhow::Result;

use super::report::Row;
use super::{Args, Report};

/// The CSV columns of a tag row.
const ROW_COLUMNS: [&str; 10] = [
    "tag",
    "type",
    "allocs",
    "frees",
    "diff",
    "bytes",
    "per_alloc",
    "driver",
    "description",
    "slot",
];

/// A tag row's CSV fields, in [`ROW_COLUMNS`] order.
fn row_fields(x: &Row) -> Vec<String> {
    let mut f = x.poolmon_cells().to_vec();
    f.extend([
        x.driver.clone().unwrap_or_default(),
        x.description.clone().unwrap_or_default(),
        x.slot.into(),
    ]);
    f
}

pub(super) fn render_csv(r: &Report, args: &Args) -> Result<String> {
    // CSV is for a program: the notes go to the person, on stderr.
    for n in &r.notes {
        eprintln!("pooldump: note: {}", pooldump_core::text::escape_lines(n));
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    if let Some(sessions) = &r.sessions {
        crate::render::csv_record(&mut w, std::iter::once("session").chain(ROW_COLUMNS))?;
        for s in sessions {
            let id = s.id.map(|i| i.to_string()).unwrap_or_default();
            for x in &s.rows {
                crate::render::csv_record(
                    &mut w,
                    std::iter::once(id.clone()).chain(row_fields(x)),
                )?;
            }
        }
        return Ok(String::from_utf8(w.into_inner()?)?);
    }
    if let Some(x) = &r.relabel {
        crate::render::csv_record(&mut w, std::iter::once("site").chain(ROW_COLUMNS))?;
        for s in &x.rows {
            crate::render::csv_record(
                &mut w,
                std::iter::once(s.site.clone()).chain(row_fields(&s.row)),
            )?;
        }
        return Ok(String::from_utf8(w.into_inner()?)?);
    }
    match &r.big_pool {
        Some(b) if args.big_pool => {
            crate::render::csv_record(
                &mut w,
                [
                    "va",
                    "tag",
                    "type",
                    "pool_type",
                    "bytes",
                    "status",
                    "driver",
                ],
            )?;
            for e in &b.entries {
                crate::render::csv_record(
                    &mut w,
                    [
                        e.va.as_str(),
                        &e.tag,
                        e.pool,
                        &e.pool_type,
                        &e.bytes.to_string(),
                        if e.freed { "free" } else { "allocated" },
                        e.driver.as_deref().unwrap_or(""),
                    ],
                )?;
            }
        }
        _ => {
            crate::render::csv_record(&mut w, ROW_COLUMNS)?;
            for x in &r.rows {
                crate::render::csv_record(&mut w, row_fields(x))?;
            }
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}
