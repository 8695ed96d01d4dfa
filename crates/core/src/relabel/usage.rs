//! The tracker's view of a relabel: each allocation site's own row
//! (`analyze --relabel`), and the sites nothing was allocated at since.

use serde::Serialize;

use crate::hittag::PoolCall;
use crate::pool::TagUsage;

use super::map::{MapSite, RelabelMap};

/// One row of `analyze --relabel`: a call site's own tag, as the tracker
/// counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteUsage {
    /// `module!function+0xoff`; for the old tag, what it still counts.
    pub site: String,
    /// Index into the map's sites; none for the old tag's row.
    pub map_site: Option<usize>,
    /// The tracker's row for the site's tag in one pool.
    pub usage: TagUsage,
}

/// The tracker rows of the map's tags, one per site and pool, in the order
/// of `rows` (sort them first, as PoolMon does): each allocation site's
/// fresh tag, and the old tag (what was allocated before the relabel, or
/// by code the map did not patch). Sites whose tag the tracker has no row
/// for (nothing allocated since) are left out; see [`quiet_sites`].
pub fn site_usage(map: &RelabelMap, rows: &[TagUsage]) -> Vec<SiteUsage> {
    rows.iter()
        .filter_map(|r| {
            if r.tag.unprotected() == map.tag.unprotected() {
                return Some(SiteUsage {
                    site: format!(
                        "(old tag {}: before the relabel, or unpatched code)",
                        map.tag
                    ),
                    map_site: None,
                    usage: r.clone(),
                });
            }
            let i = map.sites.iter().position(|s| {
                s.kind == PoolCall::Alloc && s.new_tag.unprotected() == r.tag.unprotected()
            })?;
            Some(SiteUsage {
                site: map.sites[i].site.clone(),
                map_site: Some(i),
                usage: r.clone(),
            })
        })
        .collect()
}

/// Allocation sites with no tracker row: nothing allocated there since
/// the relabel.
pub fn quiet_sites<'a>(map: &'a RelabelMap, rows: &[TagUsage]) -> Vec<&'a MapSite> {
    map.alloc_sites()
        .filter(|s| {
            !rows
                .iter()
                .any(|r| r.tag.unprotected() == s.new_tag.unprotected())
        })
        .collect()
}
