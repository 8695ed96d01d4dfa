//! `analyze --csv`: one table (tag rows, per session, per call site, or
//! the big-page list), the warnings and notes on stderr.

use anyhow::Result;

use super::report::{BigEntry, Row};
use super::{Args, Report};
use crate::render::csv_table;

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

/// The CSV columns of the big-page list.
const BIG_POOL_COLUMNS: [&str; 7] = [
    "va",
    "tag",
    "type",
    "pool_type",
    "bytes",
    "status",
    "driver",
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

/// A big-page entry's CSV fields, in [`BIG_POOL_COLUMNS`] order.
fn big_fields(e: &BigEntry) -> [String; 7] {
    [
        e.va.as_str(),
        &e.tag,
        e.pool,
        &e.pool_type,
        &e.bytes.to_string(),
        if e.freed { "free" } else { "allocated" },
        e.driver.as_deref().unwrap_or(""),
    ]
    .map(String::from)
}

pub(super) fn render_csv(r: &Report, args: &Args) -> Result<String> {
    // CSV is for a program: the warnings and notes go to the person, on
    // stderr.
    crate::render::tell_on_stderr("warning", r.warnings.iter().map(|w| &w.message));
    crate::render::tell_on_stderr("note", &r.notes);
    let mut w = csv::Writer::from_writer(Vec::new());
    if let (Some(sessions), true) = (&r.sessions, args.big_pool) {
        let rows = sessions.iter().flat_map(|s| {
            let id = s.id.map(|i| i.to_string()).unwrap_or_default();
            let entries = s.big_pages.iter().flat_map(|b| &b.entries);
            entries.map(move |e| std::iter::once(id.clone()).chain(big_fields(e)))
        });
        csv_table(
            &mut w,
            std::iter::once("session").chain(BIG_POOL_COLUMNS),
            rows,
        )?;
    } else if let Some(sessions) = &r.sessions {
        let rows = sessions.iter().flat_map(|s| {
            let id = s.id.map(|i| i.to_string()).unwrap_or_default();
            s.rows
                .iter()
                .map(move |x| std::iter::once(id.clone()).chain(row_fields(x)))
        });
        csv_table(&mut w, std::iter::once("session").chain(ROW_COLUMNS), rows)?;
    } else if let Some(x) = &r.relabel {
        let rows = x
            .rows
            .iter()
            .map(|s| std::iter::once(s.site.clone()).chain(row_fields(&s.row)));
        csv_table(&mut w, std::iter::once("site").chain(ROW_COLUMNS), rows)?;
    } else if let (Some(b), true) = (&r.big_pool, args.big_pool) {
        csv_table(&mut w, BIG_POOL_COLUMNS, b.entries.iter().map(big_fields))?;
    } else {
        csv_table(&mut w, ROW_COLUMNS, r.rows.iter().map(row_fields))?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}
