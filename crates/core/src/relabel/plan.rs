//! Making a map: which immediates to patch for a tag and with which fresh
//! tags ([`plan`]), and the whole step on a kernel pooldump has opened
//! ([`plan_on_target`]).

use std::collections::BTreeMap;

use crate::addr::KernelVa;
use crate::callsites::TagSite;
use crate::hittag::PoolCall;
use crate::memory::Memory;
use crate::tag::PoolTag;

use super::chooser::TagChooser;
use super::map::{MapModule, MapSite, RelabelError, RelabelMap, SCHEMA, TargetIdentity};

/// Make the map for relabelling `tag`: each immediate of `sites` that
/// carries it (compared without the PROTECTED_POOL bit) gets a fresh tag
/// from `chooser` if it feeds an allocation, 0 if it only feeds frees.
/// `modules` identifies every module a site is in; `target` the kernel
/// (none for a driver file).
pub fn plan(
    tag: PoolTag,
    target: Option<TargetIdentity>,
    modules: &[MapModule],
    sites: &[TagSite],
    chooser: &mut TagChooser<'_>,
) -> Result<RelabelMap, RelabelError> {
    let mine: Vec<&TagSite> = sites
        .iter()
        .filter(|s| s.tag.unprotected() == tag.unprotected())
        .collect();
    if mine.is_empty() {
        return Err(RelabelError::NoSites { tag });
    }
    if !mine.iter().any(|s| s.kind == PoolCall::Alloc) {
        return Err(RelabelError::NoAllocSites { tag });
    }
    if let Some(s) = mine.iter().find(|s| s.tag.is_protected()) {
        return Err(RelabelError::Protected {
            site: s.site.clone(),
            tag: s.tag,
        });
    }
    // One patch per immediate, in module and address order.
    let mut by_imm: BTreeMap<(String, KernelVa), Vec<&TagSite>> = BTreeMap::new();
    for s in &mine {
        by_imm
            .entry((s.module.clone(), s.immediate))
            .or_default()
            .push(s);
    }
    let mut used_modules: Vec<MapModule> = Vec::new();
    let mut out = Vec::new();
    for ((module, _), calls) in by_imm {
        let Some(m) = modules
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(&module))
        else {
            return Err(RelabelError::UnknownModule {
                site: calls[0].site.clone(),
                module,
            });
        };
        if !used_modules.iter().any(|u| u.name == m.name) {
            used_modules.push(m.clone());
        }
        out.push(map_site(tag, &calls, chooser)?);
    }
    Ok(RelabelMap {
        schema: SCHEMA.into(),
        tag: tag.unprotected(),
        target,
        modules: used_modules,
        sites: out,
    })
}

/// The patch of one immediate that `calls` (all the calls it feeds, in
/// address order) share: named after its allocation call if it feeds one,
/// which gets a fresh tag from `chooser`; a free-only immediate gets 0.
fn map_site(
    tag: PoolTag,
    calls: &[&TagSite],
    chooser: &mut TagChooser<'_>,
) -> Result<MapSite, RelabelError> {
    let first = calls[0];
    let alloc = calls.iter().find(|c| c.kind == PoolCall::Alloc);
    let (kind, named) = match alloc {
        Some(a) => (PoolCall::Alloc, *a),
        None => (PoolCall::Free, first),
    };
    let new_tag = match kind {
        PoolCall::Alloc => chooser.choose(tag).ok_or(RelabelError::NoFreeTag { tag })?,
        PoolCall::Free => PoolTag(0),
    };
    Ok(MapSite {
        kind,
        module: named.module.clone(),
        site: named.site.clone(),
        routine: named.routine.clone(),
        call: named.call,
        immediate: named.immediate,
        immediate_rva: named.immediate_rva,
        file_offset: named.file_offset,
        old_tag: named.tag,
        new_tag,
        old_bytes: named.tag.bytes(),
        new_bytes: new_tag.bytes(),
        also: calls
            .iter()
            .filter(|c| c.call != named.call)
            .map(|c| format!("{} ({})", c.site, c.kind.as_str()))
            .collect(),
    })
}

/// What [`plan_on_target`] found and made.
#[derive(Debug, Clone)]
pub struct TargetPlan {
    /// The map to write (`relabel.json`) and apply.
    pub map: RelabelMap,
    /// Every site of the tag (the map's sites come from these).
    pub sites: Vec<TagSite>,
    /// Pool calls whose tag could not be followed: they may pass the tag
    /// too and stay unpatched.
    pub unresolved: Vec<crate::callsites::UnresolvedCall>,
    /// Modules skipped, pages unreadable, names from exports...
    pub notes: Vec<String>,
}

/// The whole "which bytes to write" step of a relabel, on a kernel
/// pooldump has opened (a live target stopped by the debugger, or a dump):
/// disassemble the drivers (all but nt, or those `only` names), find the
/// sites of `tag`, take fresh tags unused in the tracker (and in
/// `pooltag`), and record the kernel's and modules' identity. The caller
/// writes [`RelabelMap::writes`], reads them back, and saves the map.
pub fn plan_on_target<M: Memory>(
    target: &crate::target::Target<M>,
    tag: PoolTag,
    only: &[String],
    pooltag: Option<&crate::pool::PoolTagDb>,
    symbolizer: &mut crate::stack::Symbolizer<'_>,
    build: Option<u32>,
) -> Result<TargetPlan, RelabelPlanError> {
    let found = target
        .call_sites(&[tag], only, symbolizer)
        .ok_or(RelabelPlanError::NoModuleList)?;
    let (sites, unresolved, notes) = (found.sites, found.unresolved, found.notes);
    let usage = target
        .pool_usage(&crate::pool::TrackerOptions {
            include_zero: true,
            ..Default::default()
        })
        .map_err(RelabelPlanError::Tracker)?;
    let mut chooser = TagChooser::new(usage.rows.iter().map(|r| r.tag), pooltag);
    let mut modules = Vec::new();
    for m in target.modules.iter().flat_map(|l| &l.modules) {
        if sites.iter().any(|s| s.module == m.name) {
            modules.push(MapModule::read(&target.mem, m)?);
        }
    }
    let identity = TargetIdentity::of(&target.kernel, build);
    let map = plan(tag, identity, &modules, &sites, &mut chooser)?;
    Ok(TargetPlan {
        map,
        sites,
        unresolved,
        notes,
    })
}

/// Why [`plan_on_target`] could not make a map.
#[derive(Debug, thiserror::Error)]
pub enum RelabelPlanError {
    /// The target has no module list.
    #[error("the loaded-module list could not be read: no driver to relabel")]
    NoModuleList,
    /// The tracker could not be read, so no unused tag can be chosen.
    #[error("reading the tracker (to choose unused tags): {0}")]
    Tracker(#[source] crate::pool::PoolError),
    /// The sites cannot be relabelled (none found, protected, no free tag).
    #[error(transparent)]
    Relabel(#[from] RelabelError),
}
