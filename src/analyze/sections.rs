//! The parts of `analyze`'s report beside the tag table, each read only
//! when its option asks: the big-page list (`--big-pool`), each session's
//! tags (`--session`) and the rows per call site (`--relabel`).

use std::path::Path;

use anyhow::{Context, Result};
use pooldump_core::pool::{
    BigPoolTable, PoolTagDb, PoolUsage, TagUsage, TrackerOptions, UsageQuery,
};
use pooldump_core::relabel;
use pooldump_core::symbols::SourceKind;
use pooldump_core::{Target, Warning, WarningKind};

use super::report::{
    BigPool, RelabelReport, Session, SiteRow, SourceInfo, SymbolsInfo, Totals, TrackerSummary,
    big_pool_report, row,
};
use super::{Args, Report, empty_filter_note};
use crate::common::{Source, SourceMeta, kdnet_report};
use crate::relabel_rows;

/// What every part reads from: the opened target, the tracker's rows and
/// the user's filters.
pub(super) struct View<'a> {
    pub target: &'a Target<Source>,
    pub meta: &'a SourceMeta,
    pub args: &'a Args,
    pub query: &'a UsageQuery,
    pub pooltag: Option<&'a PoolTagDb>,
    pub usage: &'a PoolUsage,
}

impl View<'_> {
    /// The tracker's rows `q` keeps, with their drivers.
    pub fn rows(&self, q: &UsageQuery) -> Vec<TagUsage> {
        self.attributed(q.apply(&self.usage.rows))
    }

    fn attributed(&self, mut rows: Vec<TagUsage>) -> Vec<TagUsage> {
        let search_images = !self.args.read.no_image_search;
        self.target
            .attribute(&mut rows, self.pooltag, search_images);
        rows
    }

    /// "build N: reading X", for errors.
    fn reading(&self, what: &str) -> String {
        format!(
            "{}: build {}: reading {what}",
            self.meta.name, self.meta.build
        )
    }

    /// The big-page list, with the drivers of its tags (`rows`, the tag
    /// table's, unless --top cut some of them).
    pub fn big_pool(
        &self,
        rows: &[TagUsage],
        warnings: &mut Vec<Warning>,
        notes: &mut Vec<String>,
    ) -> Result<BigPool> {
        let opts = pooldump_core::pool::BigPoolOptions {
            include_freed: self.args.show_free,
            ..Default::default()
        };
        let t =
            (self.target.big_pool(&opts)).with_context(|| self.reading("the big-page table"))?;
        warnings.extend(t.warnings.iter().cloned());
        // --top cuts the tag rows, not the tags the big-page list shows.
        let all;
        let with_drivers = match self.query.top {
            Some(_) => {
                all = self.rows(&UsageQuery {
                    top: None,
                    ..self.query.clone()
                });
                &all[..]
            }
            None => rows,
        };
        let b = big_pool_report(&t, with_drivers, self.query);
        if b.entries.is_empty() && !t.entries.is_empty() {
            notes.extend(empty_filter_note(
                self.query,
                "big-page entries",
                t.entries.iter().map(|e| (e.tag, e.pool)),
            ));
        }
        Ok(b)
    }

    /// Each session's rows, filtered and sorted as the tag table.
    pub fn sessions(
        &self,
        opts: &TrackerOptions,
        warnings: &mut Vec<Warning>,
    ) -> Result<Vec<Session>> {
        let p = (self.target.session_pool(opts)).with_context(|| self.reading("session pool"))?;
        warnings.extend(p.warnings.iter().cloned());
        let mut out = Vec::new();
        for u in &p.sessions {
            let label = u.session_id.map_or_else(
                || format!("session at {}", u.session_space),
                |i| format!("session {i}"),
            );
            warnings.extend(
                u.warnings
                    .iter()
                    .map(|w| Warning::new(w.kind, format!("{label}: {w}"))),
            );
            let rows = self.attributed(self.query.apply(&u.rows));
            let big_pages = u
                .big_pages
                .as_ref()
                .map(|t| self.session_big_pages(t, &u.rows));
            out.push(Session {
                id: u.session_id,
                session_space: u.session_space.to_string(),
                processes: u.processes.clone(),
                dtb: u.dtb.to_string(),
                table: u.table.to_string(),
                size: u.size,
                expansion_used: u.expansion_used,
                totals: u.totals.both_pools().into(),
                tags: u.totals.tags,
                rows: rows.iter().map(row).collect(),
                big_pages,
            });
        }
        Ok(out)
    }

    /// A session's big-page list, filtered and sorted as the global one,
    /// with the drivers of its tags (its tracker's `rows`); freed entries
    /// only with --show-free.
    fn session_big_pages(&self, t: &BigPoolTable, rows: &[TagUsage]) -> BigPool {
        let t = BigPoolTable {
            entries: (t.entries.iter())
                .filter(|e| self.args.show_free || !e.freed)
                .cloned()
                .collect(),
            warnings: Vec::new(),
            ..t.clone()
        };
        let tags: Vec<TagUsage> = (rows.iter())
            .filter(|r| t.entries.iter().any(|e| e.tag == r.tag))
            .cloned()
            .collect();
        big_pool_report(&t, &self.attributed(tags), self.query)
    }

    /// The rows of the map's tags per call site (`--relabel`).
    pub fn relabel(&self, path: &Path, warnings: &mut Vec<Warning>) -> Result<RelabelReport> {
        let checked = relabel_rows::load_and_check(path, self.target)?;
        warnings.extend(Warning::all(WarningKind::Relabel, &checked.warnings));
        let map = &checked.map;
        // The map's tags, filtered and sorted as the tag table is.
        let q = UsageQuery {
            include: (relabel_rows::map_tags(map).into_iter())
                .map(relabel_rows::pattern)
                .collect(),
            exclude: self.args.filter.exclude.clone(),
            ..self.query.clone()
        };
        let rows = q.apply(&self.usage.rows);
        Ok(RelabelReport {
            map: path.display().to_string(),
            tag: map.tag.to_string(),
            rows: (relabel::site_usage(map, &rows).iter())
                .map(|u| SiteRow {
                    site: u.site.clone(),
                    map_site: u.map_site,
                    code: u.map_site.and_then(|i| checked.states.get(i).cloned()),
                    row: row(&u.usage),
                })
                .collect(),
            free_sites: relabel_rows::free_sites(map),
            quiet_sites: (relabel::quiet_sites(map, &self.usage.rows).iter())
                .map(|s| format!("{} ({})", s.site, s.new_tag))
                .collect(),
        })
    }

    /// The report of the tag table; the other parts are set by the caller.
    pub fn report(&self, rows: &[TagUsage], warnings: Vec<Warning>, notes: Vec<String>) -> Report {
        let (target, meta, usage) = (self.target, self.meta, self.usage);
        let cv = target.kernel.image.codeview.as_ref();
        let processors = match usage.tracker.processors {
            0 => meta.processors,
            n => n,
        };
        Report {
            schema: "pooldump.analyze/2",
            source: SourceInfo {
                name: meta.name.clone(),
                live: meta.live,
                build: meta.build,
                processors,
                system_time: meta.system_time.clone(),
                kern_base: target.kern_base().to_string(),
            },
            symbols: SymbolsInfo {
                pdb: cv
                    .map(|c| format!("{} {}", c.pdb_name, c.store_key))
                    .unwrap_or_default(),
                from: target.symbols.source().to_string(),
                builtin: target.symbols.source().kind() == SourceKind::BuiltIn,
            },
            totals: Totals {
                paged: usage.totals.paged.into(),
                nonpaged: usage.totals.nonpaged.into(),
                tags: usage.totals.tags,
            },
            rows: rows.iter().map(row).collect(),
            big_pool: None,
            sessions: None,
            relabel: None,
            tracker: TrackerSummary {
                table: usage.tracker.table.to_string(),
                size: usage.tracker.size,
                entry_size: usage.tracker.entry_size,
                counter_bits: usage.tracker.counter_bits,
                per_cpu_tables: usage.tracker.per_cpu_tables.len(),
                expansion_used: usage.tracker.expansion_used,
            },
            warnings,
            notes,
            kdnet: kdnet_report(meta),
        }
    }
}
