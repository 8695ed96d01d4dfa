//! `analyze`'s text: PoolMon's columns, the big-page list, the sessions'
//! and call sites' tables, notes and warnings.

use super::report::{BigPool, PoolCounters, RelabelReport, Row, Session};
use super::{Args, Report};
use crate::render::{Align, ListTable, poolmon_table, push_list};

pub(super) fn render_text(r: &Report, args: &Args) -> String {
    let mut out = String::new();
    let s = &r.source;
    out.push_str(&format!(
        "{}: Windows build {}, {} processor(s), {}\n",
        s.name,
        s.build,
        s.processors,
        s.system_time.as_deref().unwrap_or("live target")
    ));
    out.push_str(&format!("Symbols: {}: {}{}\n", r.symbols.pdb, r.symbols.from, if r.symbols.builtin { "\nWARNING: no PDB or ISF was found; layouts come from pooldump's built-in table for this build" } else { "" }));
    out.push_str(&format!(
        "Pool  Nonp {} bytes in {} allocations   Paged {} bytes in {} allocations   Tags {}\n\n",
        r.totals.nonpaged.bytes,
        r.totals.nonpaged.diff,
        r.totals.paged.bytes,
        r.totals.paged.diff,
        r.totals.tags
    ));
    if let Some(b) = &r.big_pool {
        big_pool_table(&mut out, b, args);
    } else if let Some(sessions) = &r.sessions {
        session_tables(&mut out, sessions, args);
    } else if let Some(x) = &r.relabel {
        site_table(&mut out, x);
    } else {
        let totals = args
            .totals
            .then_some([("Nonp", &r.totals.nonpaged), ("Paged", &r.totals.paged)]);
        tag_table(&mut out, &r.rows, totals, args);
    }
    for n in &r.notes {
        out.push_str(&format!("\nNote: {n}\n"));
    }
    push_list(&mut out, "\nWarnings:\n", &r.warnings);
    out
}

/// The big-page table's header and its entries.
fn big_pool_table(out: &mut String, b: &BigPool, args: &Args) {
    out.push_str(&format!(
        "Big-page table {}: {} entries of {:#x} bytes, {} live ({} bytes){}, {} freed{}\n\n",
        b.table,
        b.size,
        b.entry_size,
        b.live,
        b.live_bytes,
        b.in_use
            .map(|n| format!(", ExpPoolBigEntriesInUse {n}"))
            .unwrap_or_default(),
        b.freed,
        if args.show_free {
            ""
        } else {
            " (--show-free lists them)"
        }
    ));
    big_entries(out, b);
}

/// A big-page list's entries.
fn big_entries(out: &mut String, b: &BigPool) {
    ListTable::new(&b.entries)
        .left("Address", |e| &e.va)
        .left("Tag", |e| &e.tag)
        .left("Type", |e| e.pool)
        .right("PoolType", |e| &e.pool_type)
        .right("Bytes", |e| e.bytes)
        .left("Status", |e| if e.freed { "Free" } else { "Allocated" })
        .left("Mapped_Driver", |e| e.driver.as_deref().unwrap_or_default())
        .render(out, 1);
}

/// Each session's header and PoolMon table.
fn session_tables(out: &mut String, sessions: &[Session], args: &Args) {
    if sessions.is_empty() {
        out.push_str("No session pool: no process on PsActiveProcessHead has a session.\n");
    }
    for (i, x) in sessions.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let procs: Vec<String> = x
            .processes
            .iter()
            .map(|p| format!("{} ({})", p.name, p.pid))
            .collect();
        out.push_str(&format!(
            "Session {}: _MM_SESSION_SPACE {}, tracker {} ({} entries{}), read through DTB {}\n  {} bytes in {} allocations, {} tags; processes: {}\n",
            x.id.map_or_else(|| "?".to_string(), |i| i.to_string()),
            x.session_space,
            x.table,
            x.size,
            if x.expansion_used > 0 {
                format!(", {} in the expansion table", x.expansion_used)
            } else {
                String::new()
            },
            x.dtb,
            x.totals.bytes,
            x.totals.diff,
            x.tags,
            procs.join(", ")
        ));
        match &x.big_pages {
            Some(b) => out.push_str(&format!(
                "  Big-page table {}: {} entries, {} live ({} bytes){}, {} freed\n",
                b.table,
                b.size,
                b.live,
                b.live_bytes,
                b.in_use
                    .map(|n| format!(", PoolBigEntriesInUse {n}"))
                    .unwrap_or_default(),
                b.freed,
            )),
            None => out.push_str("  No big-page table read (see the warnings)\n"),
        }
        match &x.big_pages {
            Some(b) if args.big_pool => big_entries(out, b),
            _ if args.big_pool => {}
            _ => tag_table(out, &x.rows, None, args),
        }
    }
}

/// PoolMon's table, with the totals lines when asked.
fn tag_table(
    out: &mut String,
    rows: &[Row],
    totals: Option<[(&str, &PoolCounters); 2]>,
    args: &Args,
) {
    let mut t = poolmon_table(&[], &[("Mapped_Driver", Align::Left)]);
    for x in rows {
        let driver = match (&x.driver, &x.description) {
            (Some(d), Some(desc)) => format!("{d} - {desc}"),
            (Some(d), None) => d.clone(),
            _ => String::new(),
        };
        let mut cells = x.poolmon_cells().to_vec();
        cells.push(driver);
        t.push(cells);
    }
    for (name, p) in totals.into_iter().flatten() {
        if args
            .filter
            .pool
            .class()
            .is_some_and(|c| c.poolmon() != name)
        {
            continue;
        }
        t.push(vec![
            "TOTAL".into(),
            name.into(),
            p.allocs.to_string(),
            p.frees.to_string(),
            p.diff.to_string(),
            p.bytes.to_string(),
            p.bytes.checked_div(p.diff).unwrap_or(0).to_string(),
            String::new(),
        ]);
    }
    t.render(out, 1);
}

/// `--relabel`: PoolMon's columns per call site.
fn site_table(out: &mut String, x: &RelabelReport) {
    out.push_str(&format!("Per call site of {} (map {}):\n", x.tag, x.map));
    let mut t = poolmon_table(&[("Site", Align::Left)], &[]);
    for s in &x.rows {
        t.push([vec![s.site.clone()], s.row.poolmon_cells().to_vec()].concat());
    }
    if x.rows.is_empty() {
        out.push_str(" Nothing is counted under the map's tags.\n");
    } else {
        t.render(out, 1);
    }
    if !x.quiet_sites.is_empty() {
        out.push_str(&format!(
            "\nNothing counted yet under: {}\n",
            x.quiet_sites.join(", ")
        ));
    }
    if !x.free_sites.is_empty() {
        out.push_str(&format!(
            "\nFree sites (patched to pass 0, as ExFreePool does; their frees count under each block's own tag): {}\n",
            x.free_sites.join(", ")
        ));
    }
}
